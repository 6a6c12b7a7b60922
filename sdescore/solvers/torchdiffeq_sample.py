"""The probability-flow ODE solved by torchdiffeq's methods, through `solvers.torchdiffeq`.

This module does not import torchdiffeq: the adapter `odeint_drift` owns the conversion (decreasing
time, the end-time clamp that keeps dopri5 from "underflow in dt"). Here the PF ODE velocity
$f - \\tfrac12 g^2 s$ is built from a counted score and fixed-step methods get a uniform grid.
"""

from __future__ import annotations

import torch

from .._shapes import append_dims
from ..sdes.base import SDE
from ._common import NonFiniteError, checked_drift
from .torchdiffeq import odeint_drift

__all__ = ["ODE_ADAPTIVE", "ODE_FIXED", "solve_torchdiffeq"]

ODE_ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
ODE_FIXED = ("euler", "midpoint", "heun2", "heun3", "rk4")
_TRAJECTORY_POINTS = 101


class _Velocity:
    """PF ODE velocity $f(x, t) - \\tfrac12 g(t)^2 s(x, t)$ (Song et al. 2021, eq. (13))."""

    def __init__(self, sde: SDE, score):
        self.sde, self.score = sde, score

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g2 = append_dims(self.sde.diffusion(t).square(), x.ndim)
        return checked_drift(self.sde, x, t) - 0.5 * g2 * self.score(x, t)


class _UniformGrid:
    """torchdiffeq `grid_constructor`: exactly `steps` equal steps, whatever the rounding."""

    def __init__(self, steps: int):
        self.steps = steps

    def __call__(self, func, y0, t: torch.Tensor) -> torch.Tensor:
        return torch.linspace(t[0], t[-1], self.steps + 1, device=t.device, dtype=t.dtype)


def solve_torchdiffeq(
    sde: SDE,
    score,
    x: torch.Tensor,
    *,
    t0: float,
    t1: float,
    method: str,
    steps: int | None,
    rtol: float,
    atol: float,
    max_steps: int,
    record,
) -> torch.Tensor:
    """Integrate the PF ODE from `t0` to `t1`; `x: (B, *D)` at `t0`.

    Fixed-step methods (`ODE_FIXED`) take `steps` equal steps; adaptive ones (`ODE_ADAPTIVE`)
    use `rtol`/`atol`. With a trajectory requested, states are saved at the fixed-step grid, or
    at 101 evenly spaced times for adaptive methods (dense output, no extra score calls).
    Adaptive methods stop after `max_steps` steps (`MaxStepsError`); a NaN/Inf raises
    `NonFiniteError` naming the first score call that returned it, if the score did.
    """
    n = steps if steps is not None else _TRAJECTORY_POINTS - 1
    save_at = None
    if record.enabled:
        save_at = torch.linspace(t0, t1, n + 1, dtype=torch.float64)[1:-1]
    options = None if steps is None else {"grid_constructor": _UniformGrid(steps)}
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
            options=options,
            max_steps=max_steps,
        )
    except NonFiniteError as err:
        if score.watch.first_bad() is None:  # not the score's doing: keep the drift's account
            raise
        raise NonFiniteError(score.watch.explain(method, x.dtype)) from err
    if sol.xs is not None:
        for t, xt in zip(sol.times, sol.xs, strict=True):
            record(t, xt)
    return sol.x
