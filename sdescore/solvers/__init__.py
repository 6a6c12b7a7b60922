"""ODE and SDE solvers: the torchsde and torchdiffeq adapters and native samplers.

Users reach them through `ReverseSDE.sample` and `ProbabilityFlowODE.sample/encode/decode`;
`SDE_METHODS` and `ODE_METHODS` list the method names those accept.
"""

from ._common import MaxStepsError, NonFiniteError, SampleResult
from .projection import Inpainting
from .sample_ode import ODE_METHODS
from .sample_sde import SDE_METHODS

__all__ = [
    "Inpainting",
    "ODE_METHODS",
    "SDE_METHODS",
    "MaxStepsError",
    "NonFiniteError",
    "SampleResult",
]
