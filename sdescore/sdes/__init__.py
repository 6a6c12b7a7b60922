"""Forward SDEs: the abstract base, the Gaussian-kernel layer and its leaves."""

from .base import SDE
from .discrete import DiscreteVPSDE
from .gaussian import GaussianSDE
from .linear import LinearSDE
from .ve import VESDE
from .vp import VPSDE, SubVPSDE

__all__ = ["SDE", "DiscreteVPSDE", "GaussianSDE", "LinearSDE", "SubVPSDE", "VESDE", "VPSDE"]
