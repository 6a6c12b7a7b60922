"""ODE and SDE solvers: the torchsde and torchdiffeq adapters and native samplers.

Users reach them through `ReverseSDE.sample` and `ProbabilityFlowODE.sample/encode/decode`;
`SDE_METHODS` and `ODE_METHODS` list the method names those accept, each a shorthand for a
default-configured solver object (`DPMSolver()`, `PC()`, ...; a user's own is a `Solver`).
"""

from ._common import MaxStepsError, NonFiniteError, SampleResult
from .base import Problem, Solver
from .ode_methods import Dopri5, DPMSolver, TorchDiffEq
from .projection import Inpainting
from .sample_ode import ODE_METHODS
from .sample_sde import SDE_METHODS
from .sde_methods import (
    PC,
    Ancestral,
    AnnealedLangevin,
    EulerMaruyama,
    GottaGoFast,
    Langevin,
    ReverseDiffusion,
    SDEDPMSolver,
    TorchSDE,
)
from .unipc import UniPC

__all__ = [
    "PC",
    "Ancestral",
    "AnnealedLangevin",
    "DPMSolver",
    "Dopri5",
    "EulerMaruyama",
    "SDEDPMSolver",
    "GottaGoFast",
    "Inpainting",
    "Langevin",
    "Problem",
    "ReverseDiffusion",
    "Solver",
    "TorchDiffEq",
    "TorchSDE",
    "UniPC",
    "ODE_METHODS",
    "SDE_METHODS",
    "MaxStepsError",
    "NonFiniteError",
    "SampleResult",
]
