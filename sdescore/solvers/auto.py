r"""`Auto`: the probability-flow ODE's default sampler, which picks its algorithm by budget.

Measured on eight Gaussians, VPSDE(0.1, 20), exact score (docs/sampling.md, "choosing a
sampler"; `benchmarks/peers.py`): multistep DPM-Solver++(2M) (Lu et al. 2022b) below 6 score
calls, UniPC with predictor order 2 (Zhao et al. 2023) from 6 to 15 calls and order 3 from 16.
The object says what it ran: `Auto().plan(steps)` is the solver object used, and
`SampleResult.solver` names the algorithm, order and grid.
"""

from __future__ import annotations

from typing import ClassVar, final

import torch

from .._checks import check_int
from ._common import require_gaussian
from .base import Problem, Solver
from .dpm_solver import DEFAULT_GRID, DPMSolver
from .grid import as_grid
from .unipc import UniPC

__all__ = ["Auto"]

# The budgets (score calls) from which Auto switches: UniPC-2 from 6, UniPC-3 from 16.
_UNIPC_FROM, _UNIPC3_FROM = 6, 16


@final
class Auto(Solver):
    r"""The best measured solver for the budget: DPM-Solver++(2M) below 6 calls, UniPC-2 from 6
    to 15, UniPC-3 from 16 (see the module docstring); needs a `GaussianSDE`.

    `steps` on `sample` is the number of score evaluations (default 20).

    Args:
        steps: the budget when `sample` gets no `steps=` (score calls for the exponential
            integrators, time steps otherwise; default: the class's `default_steps`).
        grid: the step boundaries of whichever solver runs: a `Grid` (default
            `TimeQuadratic()`), its name, or explicit times (one score call per interval;
            `sdescore.solvers.grid`).

    Raises:
        ValueError, TypeError: a bad grid, named in the message.
    """

    process: ClassVar[str] = "ode"
    default_steps: ClassVar[int] = 20

    def __init__(self, *, steps: int | None = None, grid=DEFAULT_GRID):
        self.steps = check_int("steps", steps, allow_none=True)
        self.grid = as_grid(grid)

    def plan(self, steps: int) -> Solver:
        """The solver object that runs for a budget of `steps` score calls."""
        if steps < _UNIPC_FROM:
            return DPMSolver(order=2, multistep=True, grid=self.grid)
        return UniPC(order=2 if steps < _UNIPC3_FROM else 3, grid=self.grid)

    def describe(self, steps: int | None) -> str:
        if steps is None:
            return (
                f"Auto: DPM-Solver++(2M) below {_UNIPC_FROM} score calls, UniPC-2 up to "
                f"{_UNIPC3_FROM - 1}, UniPC-3 from {_UNIPC3_FROM}, on {self.grid!r}"
            )
        return f"Auto: {self.plan(steps).describe(steps)}"

    def integrate(self, p: Problem) -> torch.Tensor:
        require_gaussian(  # named as the user asked for it, not as the solver it runs
            p.sde, "method 'auto' (Auto(): DPM-Solver and UniPC by budget)",
            instead="use a torchdiffeq method such as 'dopri5'",
        )  # fmt: skip
        return self.plan(p.steps).integrate(p)
