"""How `likelihood` (and `elbo`, `evaluate` through it) resolves its ODE solver object.

A solver is a solver object that can integrate the $(x, \\Delta\\log p)$ system
(`supports_likelihood`: `ExpABM`, `TorchDiffEq`, `Dopri5`) or its name; `method`, `rtol` and
`atol` are the 2021 code's shorthands that configure the default one. Split from
`likelihood.py`; the public entry point is there.
"""

from __future__ import annotations

import warnings

import torch

from .sdes.base import SDE
from .sdes.gaussian import GaussianSDE
from .solvers.base import Solver
from .solvers.exp_abm import DEFAULT_TOLERANCE, ExpABM
from .solvers.grid import LogSNR, TimeUniform
from .solvers.torchdiffeq import ADAPTIVE_RK_METHODS
from .solvers.torchdiffeq_sample import ODE_ADAPTIVE, ODE_FIXED, Dopri5, TorchDiffEq

__all__ = ["LIKELIHOOD_METHODS", "fixed_grid", "likelihood_solver", "torchdiffeq_options"]

LIKELIHOOD_METHODS = ("exp_abm", *ODE_ADAPTIVE, *ODE_FIXED)
# Tolerances above these get a warning: the answer is no longer a likelihood to report
# (ExpABM at 2e-3, i.e. 0.2 on its internal scale, was 0.09 bits/dim off at its worst point).
LOOSE_TOL = {"exp_abm": 2e-3, "torchdiffeq": 0.05}


def likelihood_solver(sde: SDE, solver, *, method, rtol, atol) -> Solver:
    """The solver object for `likelihood`: `solver` (an object or a name), or the default
    configured by the shorthands `method`, `rtol`, `atol`.

    The default is `ExpABM()` for a Gaussian-kernel SDE, else `TorchDiffEq("dopri5")`.

    Raises:
        TypeError: a solver object together with `method`/`rtol`/`atol`, or not a solver.
        ValueError: an unknown name, a solver that cannot integrate the likelihood, `ExpABM`
            with an SDE that is not a `GaussianSDE`.
    """
    if solver is not None and method is not None:
        raise TypeError(
            f"give the solver as solver= or its name as method=, not both (got solver={solver!r}, "
            f"method={method!r})"
        )
    if isinstance(solver, Solver) and (rtol is not None or atol is not None):
        raise TypeError(
            f"rtol/atol configure the default solver or a named one; set them on the object "
            f"instead: got solver={solver!r} with rtol={rtol}, atol={atol}"
        )
    if solver is None or isinstance(solver, str):
        name = solver if isinstance(solver, str) else method
        if name is None:
            name = "exp_abm" if isinstance(sde, GaussianSDE) else "dopri5"
        if not isinstance(name, str) or name not in LIKELIHOOD_METHODS:
            what = "solver" if isinstance(solver, str) else "method"
            raise ValueError(
                f"{what} must be one of {list(LIKELIHOOD_METHODS)} or a solver object, got {name!r}"
            )
        tol = {k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None}
        solver = ExpABM(**tol) if name == "exp_abm" else TorchDiffEq(name, **tol)
    elif isinstance(solver, Dopri5):
        solver = TorchDiffEq(
            "dopri5",
            rtol=solver.rtol,
            atol=solver.atol,
            max_steps=solver.max_steps,
            max_evals=solver.max_evals,
        )
    elif not isinstance(solver, Solver):
        raise TypeError(
            "solver must be a solver object (sdescore.ExpABM(), sdescore.TorchDiffEq(...)) or "
            f"one of {list(LIKELIHOOD_METHODS)}, got {type(solver).__name__}"
        )
    elif not solver.supports_likelihood:
        raise ValueError(
            f"solver {solver!r} samples but cannot integrate the likelihood's (x, log p) "
            "system; use sdescore.ExpABM() (the default for Gaussian-kernel SDEs), "
            "sdescore.TorchDiffEq('dopri5') or a fixed-step TorchDiffEq('rk4', steps=...)"
        )
    if isinstance(solver, ExpABM) and not isinstance(sde, GaussianSDE):
        raise ValueError(
            f"ExpABM integrates in log-SNR and needs a Gaussian-kernel SDE (VP, sub-VP, VE, "
            f"LinearSDE, ...), got {type(sde).__name__}; use solver=sdescore.TorchDiffEq('dopri5')"
        )
    if isinstance(solver, TorchDiffEq) and solver.method in ODE_FIXED:
        if solver.steps is None and solver.grid_steps() is None:
            raise ValueError(
                f"{solver.method!r} is a fixed-step method and needs a step count: "
                f"solver=sdescore.TorchDiffEq({solver.method!r}, steps=100) (the grid is fine "
                "near the data), or an adaptive solver such as the default"
            )
    loose = LOOSE_TOL["exp_abm" if isinstance(solver, ExpABM) else "torchdiffeq"]
    if max(solver.rtol, solver.atol) > loose:
        warnings.warn(
            f"rtol={solver.rtol}, atol={solver.atol}: above {loose} for {type(solver).__name__} "
            "the log-density can be off by more than 0.1 bits/dim; the defaults are "
            f"{DEFAULT_TOLERANCE} for ExpABM and 1e-5 for TorchDiffEq (the same meaning in "
            "both: docs/likelihood.md)",
            stacklevel=4,
        )
    return solver


def torchdiffeq_options(solver: TorchDiffEq, sde: SDE, eps: float, like: torch.Tensor) -> dict:
    """torchdiffeq's options for a likelihood solve from `eps` to T: the user's, the step
    growth cap of adaptive Runge-Kutta methods, the grid of fixed-step ones."""
    from .solvers.torchdiffeq_sample import _GridConstructor

    options = dict(solver.options or {})
    if solver.method in ADAPTIVE_RK_METHODS:
        # Step growth capped at 4x per step (torchdiffeq: 10x): fewer rejected steps after a
        # growth spurt. A heuristic: it saved 0-12% of the evaluations on the test and
        # benchmark problems (never cost any there); not a general guarantee.
        options.setdefault("ifactor", 4.0)
    if solver.method in ODE_FIXED and "grid_constructor" not in options:
        options["grid_constructor"] = _GridConstructor(fixed_grid(solver, sde, eps, like))
    return options


def fixed_grid(solver: TorchDiffEq, sde: SDE, eps: float, like: torch.Tensor) -> torch.Tensor:
    """The fixed-step solver's boundaries from `eps` to T in float64 on `like`'s device: its own
    grid, or uniform in log-SNR for a `GaussianSDE` (fine near the data), else uniform in t."""
    grid = solver.grid
    if grid is None:
        grid = LogSNR() if isinstance(sde, GaussianSDE) else TimeUniform()
    n = solver.grid_steps() or solver.steps
    return grid.times(sde, eps, sde.T, n, torch.empty(0, dtype=torch.float64, device=like.device))
