r"""`ExpABM`'s solves with one step for the batch: adaptive (`adaptive_steps`, the worst
example's error test) and on fixed nodes (`fixed_steps`, no step control). The scheme:
`sdescore.solvers.exp_abm`."""

from __future__ import annotations

import math
import warnings
from functools import partial

import torch

from ..._checks import external_stacklevel
from .._common import COLLAPSE, MaxStepsError, budget_exceeded, step_collapsed
from .multistep import March, Trial, predict_correct
from .step_control import STEP_CONTROL, AdaptiveOptions, StepControl
from .system import LikelihoodSystem, log_density_tolerance, with_outlier_hint
from .weights import moments, node_weights, node_weights_on_device

__all__ = ["adaptive_steps", "fixed_steps"]


def adaptive_steps(
    system: LikelihoodSystem,
    march: March,
    options: AdaptiveOptions,
    control: StepControl = STEP_CONTROL,
) -> None:
    """Advance `march` from `lam0` to `lam1` (T) under step control: a step is accepted when
    `_error_ratio` is at most 1; the next is sized by `control` and at most `control.max_step`
    long."""
    lam0, lam1 = system.lam0, system.lam1
    log_c = system.log_shape_constant(float(system.noise_fraction(march.history[0].h)), lam0)
    lam, step = lam0, -abs(options.first_step)
    r_prev = None  # the previous accepted error ratio, for the PI control
    last_eps = None  # the last step's noise prediction, to name outliers if the solve fails
    while lam > lam1:
        try:
            _check_limits(system, options, march.nfe, lam, step)
        except MaxStepsError as e:
            raise with_outlier_hint(e, last_eps, range(system.batch), system.d) from None
        step = max(step, -control.max_step)
        if lam + step <= lam1 or (lam + step - lam1) < 1e-3 * abs(step):
            step = lam1 - lam  # land exactly on T
        lam_t = lam + step
        k = min(options.order, len(march.history))
        # One set of moments per step: the predictor's are the corrector's first k rows.
        step_moments = moments(step, lam, log_c, k + 1)
        weigh = partial(node_weights, moments=step_moments, lam=lam, log_c=log_c)
        trial = predict_correct(system, march, lam, step, lam_t, k, weigh)
        r, phi = _error_ratio(system, march, trial, options)
        last_eps = trial.eps_t
        if r <= 1.0:
            local = system.local_error(trial.gap, trial.eps_t, trial.dx, trial.sigma_t)
            march.error = march.error + local
            march.accept(trial, options.order)
            lam = lam_t
            log_c = system.log_shape_constant(phi, lam_t)
            step *= control.grow(r, r_prev, k)
            r_prev = max(r, 1e-4)
        else:
            step *= control.shrink(r, k)


def _error_ratio(
    system: LikelihoodSystem, march: March, trial: Trial, options: AdaptiveOptions
) -> tuple[float, float]:
    """The worst example's error ratio (at most 1: accept) over the three tests of the module
    and the batch's noise fraction at the new point, read back in the one sync per step."""
    rtol_s, atol_s = options.internal
    batch, d, x, dx = system.batch, system.d, march.x, trial.dx
    err_x = (dx / (atol_s + rtol_s * torch.maximum(x.abs(), trial.x_corr.abs()))).reshape(batch, -1)
    err_x = err_x.square().mean(1).sqrt()
    # The log-density's errors are absolute (nats), atol per dimension, but for points far
    # outside the data (`log_density_tolerance`). Its own quadrature's, and x's as it reaches
    # log p: grad log p . dx = -eps . dx / sigma.
    phi = system.noise_fraction(trial.h_t)
    tol, far = log_density_tolerance(trial.eps_t, phi, d, options.rtol, atol_s)
    err_q = (trial.gap.abs() / tol).reshape(-1, batch).amax(0)
    reach = (trial.eps_t * dx).reshape(batch, -1).sum(1).abs()
    # (sigma * atol) * d as before for every other example: the same numbers, bit for bit
    err_s = reach / torch.where(far, trial.sigma_t * tol, trial.sigma_t * atol_s * d)
    err = torch.maximum(torch.maximum(err_x, err_q), err_s)
    # The one sync per step: accept or not, and the shape's constant for the next step.
    phi = phi.to(err.dtype)
    r, phi = torch.stack([err.max(), phi]).tolist()
    if not math.isfinite(r):
        raise system.nonfinite(~torch.isfinite(err), trial.lam_t, march.nfe)
    return max(r, 1e-10), phi


def _check_limits(
    system: LikelihoodSystem, options: AdaptiveOptions, nfe: int, lam: float, step: float
) -> None:
    """`MaxStepsError` past `max_steps` step attempts or `max_evals` passes, or for a step
    below `COLLAPSE` of the log-SNR interval."""
    rtol, atol, span = options.rtol, options.atol, system.span
    if nfe > options.max_steps:
        raise MaxStepsError(
            f"likelihood (exp_abm): more than max_steps={options.max_steps} steps between "
            f"lambda = {system.lam0:.3g} and {system.lam1:.3g} (now at {lam:.3g}, rtol={rtol}, "
            f"atol={atol}); loosen the tolerances or raise max_steps"
        )
    if nfe >= options.max_evals or abs(step) < COLLAPSE * span:
        where = f"likelihood (exp_abm, rtol={rtol}, atol={atol}, in log-SNR lambda)"
        t = system.coefficients(lam)[0]
        at = dict(nfe=nfe, t=t, t0=system.eps, t1=system.sde.T, dtype=system.in_dtype)
        if nfe >= options.max_evals:
            raise budget_exceeded(where, max_evals=options.max_evals, **at)
        raise step_collapsed(
            where, moved=abs(step), over=f"one step in lambda (of {span:.3g})", **at
        )


def fixed_steps(system: LikelihoodSystem, march: March, grid: list[float], order: int) -> None:
    r"""Advance `march` over the fixed nodes `grid` (log-SNR, decreasing, ends exact), one step
    per interval, without step control: the shape constant stays on the device
    (`node_weights_on_device`), so the loop never synchronises with it; one check for NaN/Inf
    after the loop."""
    _warn_few_steps(grid)
    log_c = _device_log_shape_constant(system.noise_fraction(march.history[0].h), grid[0])
    for lam, lam_t in zip(grid[:-1], grid[1:], strict=True):
        step = lam_t - lam
        k = min(order, len(march.history))
        weigh = partial(node_weights_on_device, step=step, lam=lam, log_c=log_c, n_moments=k + 1)
        trial = predict_correct(system, march, lam, step, lam_t, k, weigh)
        march.error = march.error + system.local_error(
            trial.gap, trial.eps_t, trial.dx, trial.sigma_t
        )
        march.accept(trial, order)
        log_c = _device_log_shape_constant(system.noise_fraction(trial.h_t), lam_t)
    delta_ok = torch.isfinite(march.delta.reshape(-1, system.batch)).all(0)
    bad = ~torch.isfinite(march.error) | ~delta_ok
    if bool(bad.any()):  # after the loop: one sync
        raise system.nonfinite(bad, system.lam1, march.nfe)


# Below this many score calls a fixed budget's error estimate is not to be trusted: on eight
# Gaussians (256 points, VP, sub-VP, VE, time-quadratic and log-SNR grids) it covered the true
# error of only 3-49 % of the examples in 13 of the 42 solves at 2-10 calls, and at least 95 %
# in each of the 18 at 12, 16 and 20 calls (docs/likelihood.md, "A fixed budget").
MIN_ESTIMATE_STEPS = 12


def _warn_few_steps(grid: list[float]) -> None:
    """Warn that the error estimate of a solve on fewer than `MIN_ESTIMATE_STEPS` nodes can
    miss the error."""
    if len(grid) < MIN_ESTIMATE_STEPS:
        warnings.warn(
            f"ExpABM(steps={len(grid)}): below {MIN_ESTIMATE_STEPS} score calls the error "
            "estimate (log_prob_error) can miss the error: the predictor-corrector gaps of so "
            "few, long steps need not reflect it (measured: it covered as few as 3 % of the "
            "examples; docs/likelihood.md, 'A fixed budget'). Give more steps to trust it",
            stacklevel=external_stacklevel(),
        )


def _device_log_shape_constant(phi: torch.Tensor, lam: float) -> torch.Tensor:
    """`LikelihoodSystem.log_shape_constant` for a noise fraction held on the device."""
    phi = phi.to(torch.float64).clamp(1e-12, 1.0 - 1e-12)
    return torch.log1p(-phi) - torch.log(phi) - 2.0 * lam
