r"""Adapter to torchsde: solve the reverse-time SDE with torchsde's solvers.

The only module that imports torchsde. It converts our problem once, at the boundary
(STYLE.md §3): time is flipped to $u = T - t$ so that it increases, states are flattened to
`(batch, d)`, and since $g$ depends on $t$ only the noise is declared *additive* with a
`g_prod` (no `(batch, d, d)` diffusion matrix is ever built). With additive noise the Itô and
Stratonovich integrals agree, so torchsde's Stratonovich methods (midpoint, heun, ...) solve the
same SDE. The Brownian motion is a `BrownianInterval` seeded with an integer drawn once from
`generator`, and is given a `dt` hint: without it torchsde 0.2.6 was ~10x slower at 100 fixed
steps on 4096 x 2 states (measured here: 1.24 s against 0.12 s).
"""

from __future__ import annotations

from typing import ClassVar, final

import torch
import torchsde

from .._checks import check_bool, check_choice, check_int
from ..sdes.base import SDE
from ..sdes.gaussian import GaussianSDE
from ._common import (
    DEFAULT_MAX_EVALS,
    DEFAULT_MAX_STEPS,
    MaxStepsError,
    NonFiniteError,
    budget_exceeded,
    check_positive,
    checked_drift,
    grid_dtype,
    time_grid,
)
from .base import Problem, Solver

__all__ = ["TORCHSDE_METHODS", "TorchSDE"]

_ITO = ("euler", "milstein", "srk")
_STRATONOVICH = ("midpoint", "heun", "euler_heun", "log_ode")
TORCHSDE_METHODS = _ITO + _STRATONOVICH
_LEVY_AREA = {"srk": "space-time", "log_ode": "foster"}
# Drift evaluations per step (measured with torchsde 0.2.6, additive noise); an adaptive step
# solves three times (one full step and two half steps) to estimate its error.
_CALLS_PER_STEP = {
    "euler": 1,
    "milstein": 1,
    "srk": 3,
    "midpoint": 2,
    "heun": 2,
    "euler_heun": 1,
    "log_ode": 2,
}


class _FlippedReverseSDE(torch.nn.Module):
    r"""The reverse SDE in increasing time $u = T - t$ on flattened states `(batch, d)`.

    $dx = [g^2 s(x, t) - f(x, t)]\,du + g(t)\,dW_u$ (Song et al. 2021, eq. (6), with $dt = -du$).
    """

    noise_type = "additive"

    def __init__(
        self, sde: SDE, score, T: float, shape: tuple[int, ...], sde_type: str, max_calls=None
    ):
        super().__init__()
        self.forward_sde, self.score, self.T, self.shape = sde, score, T, shape
        self.sde_type = sde_type
        self.linear = isinstance(sde, GaussianSDE)
        self.calls, self.max_calls = 0, max_calls
        self.t_stop = T

    def _t(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # 0-d forward time, clamped: an adaptive step may probe marginally past the end time.
        # At least float32 (the coefficients g, f are computed from it), whatever y's dtype.
        return (self.T - u).clamp(0.0, self.T).to(grid_dtype(y))

    def _g(self, t: torch.Tensor) -> torch.Tensor:
        # The time is already valid here (clamped to [0, T]); a GaussianSDE's `_g` skips the
        # public entry point's range check, which cost more than the step itself at 4096 x 2.
        return self.forward_sde._g(t) if self.linear else self.forward_sde.diffusion(t)

    def f(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        t = self._t(u, y)
        if self.max_calls is not None and self.calls > self.max_calls:
            self.t_stop = float(t)  # a failure path: one sync for the message
            raise MaxStepsError(f"more than {self.max_calls} drift evaluations")
        x = y.reshape(self.shape)
        tb = t.to(x.dtype).expand(x.shape[0])
        s = self.score(x, tb)
        if self.linear:  # f(t) x: one scalar coefficient instead of a validated drift call
            return (self._g(t).square() * s - self.forward_sde._f(t) * x).reshape(y.shape)
        return (self._g(t).square() * s - checked_drift(self.forward_sde, x, tb)).reshape(y.shape)

    def g_prod(self, u: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._g(self._t(u, y)) * v


def _gen_device(generator) -> torch.device | str:
    return "cpu" if generator is None else generator.device


@final
class TorchSDE(Solver):
    """A torchsde method on the reverse SDE (`"euler"`, `"milstein"`, `"srk"`, `"midpoint"`,
    `"heun"`, `"euler_heun"`, `"log_ode"`), Brownian motion seeded from the caller's generator.

    `steps` on `sample` sets `dt = (T - eps) / steps` (default 1000) unless `dt` is given.

    Args:
        steps: the budget when `sample` gets no `steps=` (score calls for the exponential
            integrators, time steps otherwise; default: the class's `default_steps`).
        method: the torchsde method (default `"euler"`).
        dt: the step (or the initial step when `adaptive`).
        adaptive: torchsde's adaptive step-size control (default `False`).
        rtol: relative tolerance of adaptive stepping (default 1e-5).
        atol: absolute tolerance of adaptive stepping (default 1e-4).
        max_steps: with `adaptive=True`, the most steps before a `MaxStepsError` (default
            10 000); torchsde does not expose its step count, so drift evaluations are bounded
            at `max_steps` times those of one adaptive step. Setting it without
            `adaptive=True` is an error.
        max_evals: with `adaptive=True`, the most score calls before a `MaxStepsError`
            (default `DEFAULT_MAX_EVALS`, 10 000: docs/sampling.md, "No end"); likewise only
            with `adaptive=True`. (torchsde's own `dt_min`, 1e-5, keeps its step from
            collapsing: a stiff problem crawls at that step into this budget.)

    Raises:
        TypeError: (from `sample`) `adaptive` with a float16/bfloat16 state.
        NonFiniteError: (from `sample`) torchsde's error estimate met NaN (the message names
            the first score call that returned NaN/Inf, if one did).
        MaxStepsError: (from `sample`) `adaptive` stepping exceeded `max_steps` or
            `max_evals`; the message says what to do.
    """

    process: ClassVar[str] = "sde"
    default_steps: ClassVar[int] = 1000

    def __init__(
        self,
        method: str = "euler",
        *,
        steps: int | None = None,
        dt: float | None = None,
        adaptive: bool = False,
        rtol: float = 1e-5,
        atol: float = 1e-4,
        max_steps: int | None = None,
        max_evals: int | None = None,
    ):
        self.steps = check_int("steps", steps, allow_none=True)
        self.method = check_choice("method", method, TORCHSDE_METHODS)
        self.dt = None if dt is None else check_positive("dt", dt)
        self.adaptive = check_bool("adaptive", adaptive)
        self.rtol, self.atol = check_positive("rtol", rtol), check_positive("atol", atol)
        for name, value in (("max_steps", max_steps), ("max_evals", max_evals)):
            if value is not None and not self.adaptive:
                raise ValueError(
                    f"{name} bounds adaptive stepping; with method {method!r} it needs "
                    f"adaptive=True, got {name}={value!r} with adaptive=False"
                )
        self.max_steps = check_int(
            "max_steps", DEFAULT_MAX_STEPS if max_steps is None else max_steps
        )
        self.max_evals = check_int(
            "max_evals", DEFAULT_MAX_EVALS if max_evals is None else max_evals
        )

    def score_calls(self, steps: int | None) -> int | None:
        return None

    def integrate(self, p: Problem) -> torch.Tensor:
        sde, score, x, generator, record = p.sde, p.score, p.x, p.generator, p.record
        ts = time_grid(p.t0, p.t1, p.steps, x)
        ts = ts if record.enabled else ts[[0, -1]]  # the output times: states at all go to record
        dt = (p.t0 - p.t1) / p.steps if self.dt is None else self.dt
        T = float(sde.T)
        sde_type = "ito" if self.method in _ITO else "stratonovich"
        max_calls = None
        if self.adaptive:
            if x.dtype in (torch.float16, torch.bfloat16):
                raise TypeError(
                    f"adaptive=True needs a float32 or float64 state, got {x.dtype}: the error "
                    "estimate cannot resolve rtol/atol in half precision. Cast to float32, or use "
                    "fixed steps (adaptive=False)."
                )
            # + 1: torchsde's contract probe
            by_steps = 3 * _CALLS_PER_STEP[self.method] * self.max_steps + 1
            max_calls = min(by_steps, self.max_evals)
        problem = _FlippedReverseSDE(sde, score, T, tuple(x.shape), sde_type, max_calls)
        y0 = x.reshape(x.shape[0], -1)
        # Times in float64 whatever the state's dtype, and dt a hair above the nominal step:
        # torchsde steps `while t < t_end` with `min(t + dt, t_end)`, so accumulated rounding
        # would otherwise add a spurious tiny last step (and a score call).
        us = T - ts.to(torch.float64)
        dt = dt * (1 + 1e-9)
        # One draw from the generator seeds the whole Brownian motion: a fixed seed reproduces it.
        entropy = int(
            torch.randint(0, 2**62, (1,), generator=generator, device=_gen_device(generator))
        )
        # torchsde's Brownian interval draws its increments from torch's global RNG after seeding
        # it from `entropy`; fork the global RNG so the caller's stream neither matters nor
        # advances.
        cuda = [y0.device] if y0.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda):
                bm = torchsde.BrownianInterval(
                    t0=us[0],
                    t1=us[-1],
                    size=tuple(y0.shape),
                    dtype=y0.dtype,
                    device=y0.device,
                    entropy=entropy,
                    dt=dt,
                    levy_area_approximation=_LEVY_AREA.get(self.method, "none"),
                )
                ys = torchsde.sdeint(
                    problem, y0, us, bm=bm, method=self.method, dt=dt, adaptive=self.adaptive,
                    rtol=self.rtol, atol=self.atol,
                )  # fmt: skip
        except MaxStepsError as err:
            if self.max_evals < by_steps:
                raise budget_exceeded(
                    f"torchsde {self.method!r} (adaptive, rtol={self.rtol}, atol={self.atol})",
                    max_evals=self.max_evals, nfe=problem.calls - 1, t=problem.t_stop,
                    t0=p.t0, t1=p.t1, dtype=x.dtype,
                ) from err  # fmt: skip
            raise MaxStepsError(
                f"torchsde {self.method!r} (adaptive): max steps exceeded, loosen rtol/atol or "
                f"raise max_steps (max_steps={self.max_steps}: {err}; rtol={self.rtol}, "
                f"atol={self.atol})"
            ) from err
        except AssertionError as err:  # torchsde: "Found nans in the error estimate"
            if score.watch.first_bad() is None:
                raise
            raise NonFiniteError(score.watch.explain(self.method, x.dtype)) from err
        for t, y in zip(ts, ys, strict=True):
            record(t, y.reshape(x.shape))
        return ys[-1].reshape(x.shape)
