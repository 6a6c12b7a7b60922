"""The probability-flow ODE solved by torchdiffeq's methods, through `solvers.torchdiffeq`.

This module does not import torchdiffeq: the adapter `odeint_drift` owns the conversion (decreasing
time, the end-time clamp that keeps dopri5 from "underflow in dt"). Here the PF ODE velocity
$f - \\tfrac12 g^2 s$ is built from a counted score and fixed-step methods get a uniform grid.
"""

from __future__ import annotations

from typing import ClassVar, final

import torch

from .._checks import check_choice, check_int
from .._shapes import append_dims
from ..sdes.base import SDE
from ._common import (
    DEFAULT_MAX_EVALS,
    DEFAULT_MAX_STEPS,
    NonFiniteError,
    check_adaptive,
    checked_drift,
)
from .base import Problem, Solver
from .grid import Grid, TimeUniform, as_grid
from .torchdiffeq import STEP_CONTROLS, check_options, odeint_drift

__all__ = ["ODE_ADAPTIVE", "ODE_FIXED", "Dopri5", "TorchDiffEq", "solve_torchdiffeq"]

ODE_ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
ODE_FIXED = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")
_TRAJECTORY_POINTS = 101


class _Velocity:
    """PF ODE velocity $f(x, t) - \\tfrac12 g(t)^2 s(x, t)$ (Song et al. 2021, eq. (13))."""

    def __init__(self, sde: SDE, score):
        self.sde, self.score = sde, score

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g2 = append_dims(self.sde.diffusion(t).square(), x.ndim)
        return checked_drift(self.sde, x, t) - 0.5 * g2 * self.score(x, t)


class _GridConstructor:
    """torchdiffeq `grid_constructor`: the solver's boundaries, exactly `steps` steps.

    torchdiffeq hands over its own time variable (negated when integrating to smaller times),
    so the boundaries are mapped affinely onto its end points: each step keeps its share of
    the interval.
    """

    def __init__(self, times: torch.Tensor):
        self.u = (times - times[0]) / (times[-1] - times[0])  # 0 ... 1, float64

    def __call__(self, func, y0, t: torch.Tensor) -> torch.Tensor:
        u = self.u.to(device=t.device, dtype=t.dtype)
        out = t[0] + u * (t[-1] - t[0])
        out[0], out[-1] = t[0], t[-1]
        return out


def solve_torchdiffeq(
    p: Problem,
    method: str,
    rtol: float,
    atol: float,
    max_steps: int,
    grid: Grid | None = None,
    max_evals: int = DEFAULT_MAX_EVALS,
    options: dict | None = None,
    step_control: str = "all",
) -> torch.Tensor:
    """Integrate the PF ODE of `p` from `p.t0` to `p.t1` with torchdiffeq's `method`.

    Fixed-step methods (`ODE_FIXED`) take `p.steps` steps on `grid` (uniform in t by default);
    adaptive ones (`ODE_ADAPTIVE`) use `rtol`/`atol`. With a trajectory requested, states are
    saved at the fixed-step grid, or at 101 evenly spaced times for adaptive methods (dense
    output, no extra score calls). `options` are torchdiffeq's; `step_control` as for
    `odeint_drift` (on the state alone here, so `"all"` and `"x"` agree).
    Adaptive methods stop after `max_evals` score calls or `max_steps` steps, or when their step
    size collapses (`MaxStepsError`); a NaN/Inf raises
    `NonFiniteError` naming the first score call that returned it, if the score did.
    """
    sde, score, x, t0, t1, steps, record = p.sde, p.score, p.x, p.t0, p.t1, p.steps, p.record
    n = steps if steps is not None else _TRAJECTORY_POINTS - 1
    options = dict(options or {})
    ts = torch.linspace(t0, t1, n + 1, dtype=torch.float64)
    if steps is not None:
        like = torch.empty(0, dtype=torch.float64)  # boundaries in float64, as torchdiffeq's t
        ts = (TimeUniform() if grid is None else grid).times(sde, t0, t1, steps, like)
        options["grid_constructor"] = _GridConstructor(ts)
    save_at = ts[1:-1] if record.enabled else None
    try:
        sol = odeint_drift(
            _Velocity(sde, score),
            x,
            t0,
            t1,
            method=method,
            rtol=rtol,
            atol=atol,
            save_at=save_at,
            options=options or None,
            step_control=step_control,
            max_steps=max_steps,
            max_evals=max_evals,
        )
    except NonFiniteError as err:
        if score.watch.first_bad() is None:  # not the score's doing: keep the drift's account
            raise
        raise NonFiniteError(score.watch.explain(method, x.dtype)) from err
    if sol.xs is not None:
        for t, xt in zip(sol.times, sol.xs, strict=True):
            record(t, xt)
    return sol.x


_ADAPTIVE_ONLY = ("rtol", "atol", "max_steps", "max_evals", "step_control")


@final
class TorchDiffEq(Solver):
    r"""A torchdiffeq method on the probability-flow ODE, for sampling and for `likelihood`.

    Adaptive methods (`"dopri5"`, `"dopri8"`, `"bosh3"`, `"fehlberg2"`, `"adaptive_heun"`) use
    `rtol`/`atol` and take no `steps`; fixed-step methods (`ODE_FIXED`: `"euler"`,
    `"midpoint"`, `"heun2"`, `"heun3"`, `"rk4"`, `"explicit_adams"`, `"implicit_adams"`) take
    `steps` (default 100) on `grid`.

    Args:
        method: the torchdiffeq method name (default `"dopri5"`).
        rtol: adaptive methods: relative tolerance (default 1e-5; refused for fixed-step ones).
        atol: adaptive methods: absolute tolerance (default 1e-5; likewise).
        max_steps: adaptive methods: the most steps before a `MaxStepsError` (default 10 000;
            likewise).
        max_evals: adaptive methods: the most score calls before a `MaxStepsError` (default
            `DEFAULT_MAX_EVALS`, 10 000: docs/sampling.md, "No end"; likewise). A step size that
            collapses (below 1e-10 of the interval) stops the solve sooner.
        steps: fixed-step methods: the number of steps when `sample` gets no `steps=` (default
            100; `likelihood` takes it from here).
        grid: fixed-step methods: the step boundaries, a `Grid`, its name, or explicit times
            (one step per interval; `sdescore.solvers.grid`). Default: `TimeUniform()` for
            sampling; for `likelihood`, `LogSNR()` on a `GaussianSDE` (fine steps near the
            data, where the density is sharp), else `TimeUniform()`.
        step_control: adaptive methods: what the error control measures: `"all"` (default;
            in `likelihood` $x$ and $\Delta\log p$, right on sharp data; in sampling the
            state), `"x"` (the state only, RMS over the batch: fewer evaluations in
            `likelihood`, biased on sharp data) or `"x_per_example"` (the worst example's error
            on the state); see `sdescore.solvers.torchdiffeq.odeint_drift`. Another value than
            the default is refused for fixed-step methods, which control no step.
        options: extra torchdiffeq options (e.g. `{"first_step": 1e-3}`), for sampling and
            `likelihood`; for adaptive Runge-Kutta methods in `likelihood`, `ifactor` (the
            largest step growth) defaults to 4 instead of torchdiffeq's 10.

    Raises:
        ValueError, TypeError: a bad option, named in the message.
    """

    process: ClassVar[str] = "ode"
    supports_likelihood: ClassVar[bool] = True

    def __init__(
        self,
        method: str = "dopri5",
        *,
        rtol: float | None = None,
        atol: float | None = None,
        max_steps: int | None = None,
        max_evals: int | None = None,
        steps: int | None = None,
        grid=None,
        step_control: str = "all",
        options: dict | None = None,
    ):
        self.method = check_choice("method", method, (*ODE_ADAPTIVE, *ODE_FIXED))
        adaptive = self.method in ODE_ADAPTIVE
        for name, value in (("steps", steps), ("grid", grid)):
            if value is not None and adaptive:
                raise ValueError(
                    f"{name} applies to the fixed-step methods {list(ODE_FIXED)}; adaptive "
                    f"method {self.method!r} chooses its own steps (got {name}={value!r})"
                )
        adaptive_only = (
            ("rtol", rtol), ("atol", atol), ("max_steps", max_steps), ("max_evals", max_evals),
            ("step_control", None if step_control == "all" else step_control),
        )  # fmt: skip
        for name, value in adaptive_only:
            if value is not None and not adaptive:
                raise ValueError(
                    f"{name} applies to the adaptive methods {list(ODE_ADAPTIVE)}; fixed-step "
                    f"method {self.method!r} takes steps and a grid (got {name}={value!r})"
                )
        self.rtol, self.atol, self.max_steps, self.max_evals = check_adaptive(
            1e-5 if rtol is None else rtol,
            1e-5 if atol is None else atol,
            DEFAULT_MAX_STEPS if max_steps is None else max_steps,
            DEFAULT_MAX_EVALS if max_evals is None else max_evals,
        )
        self.steps = check_int("steps", steps, allow_none=True)
        self.grid = None if grid is None else as_grid(grid)
        self.step_control = check_choice("step_control", step_control, STEP_CONTROLS)
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
        if options is not None:
            check_options(self.method, options)
        self.options = None if options is None else dict(options)

    @property
    def default_steps(self) -> int | None:  # type: ignore[override]
        return 100 if self.method in ODE_FIXED else None

    def _shown(self) -> dict:
        """The options that mean something for this method: a fixed-step method's tolerances,
        limits and step control are unused defaults (refused if given)."""
        shown = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        if self.method in ODE_FIXED:
            for name in _ADAPTIVE_ONLY:
                del shown[name]
        return shown

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["options"] = {k: v for k, v in d["options"].items() if k in self._shown()}
        return d

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._shown().items())
        return f"{type(self).__name__}({opts})"

    def score_calls(self, steps: int | None) -> int | None:
        return None

    def integrate(self, p: Problem) -> torch.Tensor:
        return solve_torchdiffeq(
            p, self.method, self.rtol, self.atol, self.max_steps, self.grid, self.max_evals,
            options=self.options, step_control=self.step_control,
        )  # fmt: skip


@final
class Dopri5(Solver):
    """Dormand–Prince 5(4) with adaptive steps (torchdiffeq's `"dopri5"`); no `steps`.

    Args:
        rtol: relative tolerance (default 1e-5).
        atol: absolute tolerance (default 1e-5).
        max_steps: the most steps before a `MaxStepsError` (default 10 000).
        max_evals: the most score calls before a `MaxStepsError` (default 10 000).
    """

    process: ClassVar[str] = "ode"
    supports_likelihood: ClassVar[bool] = True

    def __init__(
        self,
        *,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        max_steps: int = DEFAULT_MAX_STEPS,
        max_evals: int = DEFAULT_MAX_EVALS,
    ):
        self.rtol, self.atol, self.max_steps, self.max_evals = check_adaptive(
            rtol, atol, max_steps, max_evals
        )

    def score_calls(self, steps: int | None) -> int | None:
        return None

    def integrate(self, p: Problem) -> torch.Tensor:
        return solve_torchdiffeq(
            p, "dopri5", self.rtol, self.atol, self.max_steps, max_evals=self.max_evals
        )
