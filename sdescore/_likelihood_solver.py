"""How `likelihood` chooses and checks its ODE solver: the default by dimension, each method's
options, the fixed grids. Split from `likelihood.py`; the public entry point is there."""

from __future__ import annotations

import warnings

import torch

from ._checks import check_bool, check_int, check_real
from .sdes.base import SDE
from .sdes.gaussian import GaussianSDE
from .solvers.torchdiffeq import ADAPTIVE_RK_METHODS, TORCHDIFFEQ_METHODS

# torchdiffeq's fixed-grid methods: they need a step count, or they take a single step.
FIXED_GRID_METHODS = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")

# The log-SNR exponential predictor-corrector (sdescore.solvers.exp_abm) is the default for every
# Gaussian-kernel SDE, at this tolerance. Measured by benchmarks/likelihood.py on image-like
# mixtures (d = 16, 64, 1x8x8; VP, sub-VP, VE): 0.30-0.47 times the evaluations of plain dopri5
# at 1e-5, mean error <= 5.5e-4 bits/dim, worst point <= 1.4e-3; on eight Gaussians in 2-D 66
# evaluations against dopri5's 86 at errors of the same size (mean 4.8e-5 vs 2.7e-5 nats, worst
# 3.8e-4 vs 4.9e-4); exact for isotropic Gaussian data at any tolerance.
EXP_ABM = "exp_abm"
EXP_ABM_TOL = 2e-3
DOPRI5_TOL = 1e-5
# Tolerances above this get a warning: the answer is no longer a likelihood to report.
LOOSE_TOL = 0.05

_EXP_ABM_OPTIONS = ("order", "first_step")


def choose_solver(
    sde: SDE, *, method, estimator, steps, step_control, options: dict, rtol, atol,
    max_steps, resample_probes,
) -> tuple[str, bool, dict]:  # fmt: skip
    """The method (the default when `None`: exp_abm for a Gaussian-kernel SDE unless an option
    only torchdiffeq has is given, else dopri5), whether probes are resampled, and the solver
    keywords, all checked; `options` gains torchdiffeq's `ifactor` default. See
    `likelihood` for the rules and the measurements behind them."""
    if method is None:  # the default: see the docstring
        exp_abm = (
            isinstance(sde, GaussianSDE)
            and steps is None
            and step_control == "all"
            and set(options) <= set(_EXP_ABM_OPTIONS)  # torchdiffeq options keep dopri5
        )
        # exp_abm's own options ask for it: mixed with torchdiffeq's they get an error naming
        # the mix below, not a silent switch to dopri5 that ignores them.
        method = EXP_ABM if exp_abm or set(options) & set(_EXP_ABM_OPTIONS) else "dopri5"
    if resample_probes is None:
        resample_probes = method == EXP_ABM and estimator == "hutchinson"
    check_bool("resample_probes", resample_probes)
    if resample_probes and estimator != "hutchinson":
        raise ValueError(
            "resample_probes=True resamples Hutchinson probes: it needs "
            f"estimator='hutchinson', got estimator={estimator!r} (the exact trace has no probes)"
        )
    if resample_probes and method != EXP_ABM:
        raise ValueError(
            "resample_probes=True needs method='exp_abm' (the torchdiffeq methods' error "
            f"control needs probes held fixed through the solve), got method={method!r}"
        )
    if method == EXP_ABM:
        _check_exp_abm(sde, steps, step_control, options)
    else:
        if not isinstance(method, str) or method not in TORCHDIFFEQ_METHODS:
            valid = [EXP_ABM, *sorted(TORCHDIFFEQ_METHODS)]
            raise ValueError(f"method must be one of {valid}, got {method!r}")
        _check_method_steps(method, steps, options)
    default_tol = EXP_ABM_TOL if method == EXP_ABM else DOPRI5_TOL
    rtol = check_real("rtol", default_tol if rtol is None else rtol, positive=True)
    atol = check_real("atol", default_tol if atol is None else atol, positive=True)
    if max(rtol, atol) > LOOSE_TOL:
        warnings.warn(
            f"rtol={rtol}, atol={atol}: above {LOOSE_TOL} the log-density can be off by more "
            f"than 0.1 bits/dim (exp_abm at 1.0 was 0.58 bits/dim off on a sharp mixture); the "
            f"defaults are {EXP_ABM_TOL} for exp_abm and {DOPRI5_TOL} for the torchdiffeq methods",
            stacklevel=3,
        )
    if method in ADAPTIVE_RK_METHODS:
        # Step growth capped at 4x per step (torchdiffeq: 10x): fewer rejected steps after a
        # growth spurt. A heuristic: it saved 0-12% of the evaluations on the test and
        # benchmark problems (never cost any there); not a general guarantee.
        options.setdefault("ifactor", 4.0)
    solver_kw = dict(
        method=method, rtol=rtol, atol=atol, step_control=step_control, options=options,
        max_steps=check_int("max_steps", max_steps),
    )  # fmt: skip
    return method, resample_probes, solver_kw


# Above this many coordinates the exact trace (prod(D) vector-Jacobian products per evaluation)
# is far slower than Hutchinson: measured with the UNet at d = 64, 23x slower than 4 probes.
EXACT_TRACE_WARN_DIM = 128


def check_combination(estimator: str, probes: int, samples: int, d: int) -> None:
    if estimator == "hutchinson" and samples > 1 and probes < 2:
        raise ValueError(
            f"dequantization_samples={samples} with estimator='hutchinson' needs probes >= 2: "
            "the importance-weighted bound log-mean-exps the draws, which turns the Hutchinson "
            "noise into an upward bias of about half its variance; with >= 2 probes per draw "
            "it is estimated and removed. Pass probes=2 or more, or estimator='exact'"
        )
    if estimator == "exact" and d > EXACT_TRACE_WARN_DIM:
        warnings.warn(
            f"estimator='exact' computes prod(D) = {d} vector-Jacobian products per ODE "
            f"evaluation ({d}/k times the cost of Hutchinson with k probes); at this size "
            "estimator='hutchinson' with a few probes is usually the better use of time",
            stacklevel=3,
        )


def _check_exp_abm(sde: SDE, steps: int | None, step_control: str, options: dict) -> None:
    if not isinstance(sde, GaussianSDE):
        raise ValueError(
            f"method='exp_abm' integrates in log-SNR and needs a Gaussian-kernel SDE (VP, sub-VP, "
            f"VE, LinearSDE, ...), got {type(sde).__name__}; use method='dopri5'"
        )
    if steps is not None:
        raise ValueError(
            f"method='exp_abm' chooses its own steps (control them with rtol/atol), got "
            f"steps={steps}; pass a fixed-grid method such as 'rk4' for a step count"
        )
    if step_control != "all":
        raise ValueError(
            "method='exp_abm' controls the error of x and of the log-density together "
            f"(step_control='all'), got step_control={step_control!r}; step_control applies to "
            "the torchdiffeq methods"
        )
    unknown = sorted(set(options) - set(_EXP_ABM_OPTIONS))
    if unknown:
        raise ValueError(
            f"options for method='exp_abm' may be {list(_EXP_ABM_OPTIONS)}, got {unknown}"
        )
    order = options.get("order", 4)
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 4:
        raise ValueError(
            f"options['order'] for method='exp_abm' must be 1, 2, 3 or 4, got {order!r}"
        )
    first = options.get("first_step", 0.05)
    if isinstance(first, bool) or not isinstance(first, (int, float)) or not 1e-6 <= first <= 1:
        raise ValueError(
            f"options['first_step'] for method='exp_abm' must be a step in log-SNR between 1e-6 "
            f"and 1 (the longest step; default 0.05), got {first!r}"
        )


def _check_method_steps(method: str, steps: int | None, options: dict) -> None:
    if method in FIXED_GRID_METHODS:
        if steps is None and "step_size" not in options and "grid_constructor" not in options:
            raise ValueError(
                f"method={method!r} is a fixed-grid method and needs a step count: pass "
                "steps=N (e.g. 100; the grid is fine near the data), or use an adaptive method "
                "such as 'dopri5' (the default)"
            )
    elif steps is not None:
        raise ValueError(
            f"steps is for the fixed-grid methods {FIXED_GRID_METHODS}; method={method!r} "
            f"chooses its own steps (control them with rtol/atol), got steps={steps}"
        )


def fixed_grid(sde: SDE, eps: float, steps: int, like: torch.Tensor) -> torch.Tensor:
    """`steps + 1` times from `eps` to `T` (float64, on `like`'s device)."""
    dev = like.device
    ends = torch.tensor([eps, sde.T], dtype=torch.float64, device=dev)
    if isinstance(sde, GaussianSDE):
        lam = sde.log_snr(ends)
        grid = sde.t_from_log_snr(torch.linspace(lam[0], lam[1], steps + 1, device=dev))
        grid = grid.to(torch.float64)
        grid[0], grid[-1] = eps, sde.T  # exact end points despite the inversion's rounding
        return grid
    return torch.linspace(eps, sde.T, steps + 1, dtype=torch.float64, device=dev)
