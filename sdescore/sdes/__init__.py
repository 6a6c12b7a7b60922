"""Forward SDEs: the abstract base, the Gaussian-kernel layer and its leaves."""

from .alpha_sigma import AlphaSigmaSDE
from .base import SDE
from .discrete import DiscreteVPSDE
from .flow import RectifiedFlowSDE
from .gaussian import GaussianSDE
from .linear import LinearSDE
from .ve import VESDE
from .vp import VPSDE, SubVPSDE

__all__ = [
    "SDE",
    "AlphaSigmaSDE",
    "DiscreteVPSDE",
    "GaussianSDE",
    "LinearSDE",
    "RectifiedFlowSDE",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
]
