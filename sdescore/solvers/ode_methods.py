"""Solver objects for the probability-flow ODE: `DPMSolver`, `TorchDiffEq` and `Dopri5`.

Each holds its validated options and hands the solve to the algorithm module
(`dpm_solver.py`, `torchdiffeq_sample.py`); see `base.Solver` for the interface.
"""

from __future__ import annotations

from typing import ClassVar, final

import torch

from .._checks import check_bool, check_choice, check_int
from ._common import DEFAULT_MAX_STEPS, require_gaussian
from .base import Problem, Solver
from .dpm_solver import (
    ALLOCATIONS,
    DEFAULT_SCHEDULE,
    PREDICTIONS,
    SCHEDULES,
    dpm_solver,
    dpm_solver_multistep,
)
from .options import check_positive
from .torchdiffeq_sample import ODE_ADAPTIVE, ODE_FIXED, solve_torchdiffeq
from .unipc import UniPC

__all__ = ["DPMSolver", "Dopri5", "TorchDiffEq"]


@final
class DPMSolver(Solver):
    r"""DPM-Solver / DPM-Solver++ (Lu et al. 2022; 2022b) for a `GaussianSDE`.

    `steps` on `sample` is the number of score evaluations (default 20).

    Args:
        order: 1, 2 or 3 (default: chosen by budget, see `plan`, with UniPC's corrector from 6
            calls; 3 when `multistep` is set).
        multistep: `False`: singlestep, `order` calls per step; `True`: multistep
            DPM-Solver++ with one call per step (default: chosen by budget, see `plan`).
        schedule: step boundaries `"time_quadratic"` (default, uniform in $\sqrt t$),
            `"logsnr"` (uniform in $\lambda$), `"time_uniform"` or `"karras"` (Karras et al.
            2022, eq. (5), $\rho = 7$ in $\tilde\sigma = \sigma/\alpha$).
        prediction: Taylor-expand the data prediction `"data"` (DPM-Solver++, default) or the
            noise prediction `"noise"` (singlestep only).
        damped: multistep order 3 only: `True` halves the second-derivative term, as the 3M of
            Lu et al.'s code, diffusers and k-diffusion do (order 2 in practice, more accurate
            below about 40 calls on a time-quadratic grid); `False` is the exact order-3 update.
            Default: chosen by budget.
        allocation: singlestep only: `"equal"` (default) steps of equal length on the
            schedule; `"order"` as Lu et al.'s code: each step's length proportional to its
            order, and a budget divisible by 3 ending in orders 2, 1 (measured less accurate
            here at 8-20 calls on the time-quadratic grid; docs/sampling.md).

    Raises:
        ValueError, TypeError: a bad option, named in the message.
    """

    process: ClassVar[str] = "ode"
    default_steps: ClassVar[int] = 20

    def __init__(
        self,
        *,
        order: int | None = None,
        multistep: bool | None = None,
        schedule: str = DEFAULT_SCHEDULE,
        prediction: str = "data",
        damped: bool | None = None,
        allocation: str = "equal",
    ):
        if order is not None and (isinstance(order, bool) or order not in (1, 2, 3)):
            raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
        self.order = order
        self.multistep = None if multistep is None else check_bool("multistep", multistep)
        self.schedule = check_choice("schedule", schedule, SCHEDULES)
        self.prediction = check_choice("prediction", prediction, PREDICTIONS)
        self.damped = None if damped is None else check_bool("damped", damped)
        self.allocation = check_choice("allocation", allocation, ALLOCATIONS)
        if self.multistep and self.prediction != "data":
            raise ValueError(
                "multistep=True supports prediction='data' only (DPM-Solver++), got "
                f"prediction={prediction!r}"
            )
        if self.damped is not None and self.multistep is False:
            raise ValueError(f"damped applies to multistep=True only, got damped={damped!r}")

    def plan(self, steps: int) -> tuple[int, bool, bool, bool]:
        """`(order, multistep, damped, corrector)` for a budget of `steps` score calls.

        Options left unset are chosen by budget from measurements (docs/sampling.md, "choosing
        a sampler"; eight Gaussians, VPSDE(0.1, 20), exact score): with neither `order` nor
        `multistep` set, multistep DPM-Solver++(2M) below 6 calls, then UniPC (`UniPC`, Zhao
        et al. 2023: the 2M/3M predictor with the UniC corrector, `corrector=True`): order 2
        from 6 to 15 calls, order 3 from 16. With only `damped` set, the multistep solver
        without corrector: 2M below 13 calls, 3M from 13. Otherwise the singlestep solver is the
        default, order 3.
        """
        if self.order is None and self.multistep is None and self.prediction == "data":
            if self.damped is None and steps >= 6:
                return (2 if steps < 16 else 3), True, False, True
            if steps < 13 or self.damped is None:
                return 2, True, False, False
            return 3, True, self.damped, False
        multistep = bool(self.multistep)
        return (3 if self.order is None else self.order), multistep, bool(self.damped), False

    def integrate(self, p: Problem) -> torch.Tensor:
        require_gaussian(
            p.sde, "method 'dpm_solver'", instead="use a torchdiffeq method such as 'dopri5'"
        )
        order, multistep, damped, corrector = self.plan(p.steps)
        if corrector:
            return UniPC(order=order, schedule=self.schedule).integrate(p)
        common = dict(
            t0=p.t0,
            t1=p.t1,
            steps=p.steps,
            order=order,
            schedule=self.schedule,
            prediction=self.prediction,
            record=p.record,
        )
        if multistep:
            return dpm_solver_multistep(p.sde, p.score, p.x, damped=damped, **common)
        reference = self.allocation == "order"
        return dpm_solver(p.sde, p.score, p.x, proportional=reference, end_low=reference, **common)


def _tolerances(rtol, atol, max_steps) -> tuple[float, float, int]:
    return (
        check_positive("rtol", rtol),
        check_positive("atol", atol),
        check_int("max_steps", max_steps),
    )


@final
class TorchDiffEq(Solver):
    """A torchdiffeq method on the probability-flow ODE.

    Adaptive methods (`"dopri5"`, `"dopri8"`, `"bosh3"`, `"fehlberg2"`, `"adaptive_heun"`) use
    `rtol`/`atol` and take no `steps`; fixed-step methods (`"euler"`, `"midpoint"`, `"heun2"`,
    `"heun3"`, `"rk4"`) take `steps` on `sample` (default 100) and ignore the tolerances.

    Args:
        method: the torchdiffeq method name.
        rtol: relative tolerance (default 1e-5).
        atol: absolute tolerance (default 1e-5).
        max_steps: adaptive methods: the most steps before a `MaxStepsError` (default 10 000).

    Raises:
        ValueError, TypeError: a bad option, named in the message.
    """

    process: ClassVar[str] = "ode"

    def __init__(
        self,
        method: str = "dopri5",
        *,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        max_steps: int = DEFAULT_MAX_STEPS,
    ):
        self.method = check_choice("method", method, (*ODE_ADAPTIVE, *ODE_FIXED))
        self.rtol, self.atol, self.max_steps = _tolerances(rtol, atol, max_steps)

    @property
    def default_steps(self) -> int | None:  # type: ignore[override]
        return 100 if self.method in ODE_FIXED else None

    def score_calls(self, steps: int | None) -> int | None:
        return None

    def integrate(self, p: Problem) -> torch.Tensor:
        return _torchdiffeq(self.method, self.rtol, self.atol, self.max_steps, p)


@final
class Dopri5(Solver):
    """Dormand–Prince 5(4) with adaptive steps (torchdiffeq's `"dopri5"`); no `steps`.

    Args:
        rtol: relative tolerance (default 1e-5).
        atol: absolute tolerance (default 1e-5).
        max_steps: the most steps before a `MaxStepsError` (default 10 000).
    """

    process: ClassVar[str] = "ode"

    def __init__(
        self, *, rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = DEFAULT_MAX_STEPS
    ):
        self.rtol, self.atol, self.max_steps = _tolerances(rtol, atol, max_steps)

    def score_calls(self, steps: int | None) -> int | None:
        return None

    def integrate(self, p: Problem) -> torch.Tensor:
        return _torchdiffeq("dopri5", self.rtol, self.atol, self.max_steps, p)


def _torchdiffeq(method: str, rtol: float, atol: float, max_steps: int, p: Problem):
    return solve_torchdiffeq(
        p.sde,
        p.score,
        p.x,
        t0=p.t0,
        t1=p.t1,
        method=method,
        steps=p.steps,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        record=p.record,
    )
