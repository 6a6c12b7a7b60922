"""sdescore: score-based generative modeling with stochastic differential equations."""

from importlib.metadata import PackageNotFoundError, version

from . import toy
from .models import ScoreModel
from .reverse import ProbabilityFlowODE, ReverseSDE
from .sdes import SDE, VESDE, VPSDE, GaussianSDE, LinearSDE, SubVPSDE

try:
    __version__ = version("sdescore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "GaussianSDE",
    "LinearSDE",
    "ProbabilityFlowODE",
    "ReverseSDE",
    "ScoreModel",
    "SubVPSDE",
    "__version__",
    "toy",
]
