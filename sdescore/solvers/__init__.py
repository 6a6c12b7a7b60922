"""ODE and SDE solvers: one solver model for every integration.

A solver is a small object holding its own validated options (`sdescore.solvers.base.Solver`);
`ReverseSDE.sample` and `ProbabilityFlowODE.sample/encode/decode` take one as `method=`, or its
name: `METHODS` is the one table of shorthands (`ODE_METHODS`, `SDE_METHODS` list the names),
each for a default-configured object. Fixed-step solvers take a time grid (`grid.py`).
"""

from ._common import MaxStepsError, NonFiniteError, SampleResult
from .adaptive import GottaGoFast
from .auto import Auto
from .base import Problem, Solver
from .dpm_solver import DPMSolver
from .exp_abm import ExpABM
from .grid import GRIDS, Grid, Karras, LogSNR, TimeQuadratic, Times, TimeUniform, grid_from_dict
from .ipndm import IPNDM
from .langevin import PC, AnnealedLangevin, Langevin
from .native import Ancestral, EulerMaruyama, ReverseDiffusion
from .projection import Inpainting
from .sde_dpm_solver import SDEDPMSolver
from .table import METHODS, ODE_METHODS, SDE_METHODS, get_solver, solver_from_dict
from .torchdiffeq_sample import Dopri5, TorchDiffEq
from .torchsde import TorchSDE
from .unipc import UniPC

__all__ = [
    "PC",
    "Ancestral",
    "AnnealedLangevin",
    "Auto",
    "DPMSolver",
    "Dopri5",
    "EulerMaruyama",
    "ExpABM",
    "GRIDS",
    "GottaGoFast",
    "Grid",
    "IPNDM",
    "Inpainting",
    "Karras",
    "Langevin",
    "LogSNR",
    "METHODS",
    "MaxStepsError",
    "NonFiniteError",
    "ODE_METHODS",
    "Problem",
    "ReverseDiffusion",
    "SDEDPMSolver",
    "SDE_METHODS",
    "SampleResult",
    "Solver",
    "TimeQuadratic",
    "TimeUniform",
    "Times",
    "TorchDiffEq",
    "TorchSDE",
    "UniPC",
    "get_solver",
    "grid_from_dict",
    "solver_from_dict",
]
