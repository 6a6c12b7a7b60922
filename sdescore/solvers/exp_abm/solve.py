r"""`exp_abm_likelihood`: integrate the likelihood's $(x, \Delta\log p)$ system with `ExpABM`'s
scheme (`sdescore.solvers.exp_abm`), choosing between its step-control modes."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...sdes.gaussian import GaussianSDE
from .._common import DEFAULT_MAX_EVALS
from .multistep import March
from .per_example import per_example_solve
from .shared_step import adaptive_steps, fixed_steps
from .solution import ExpABMSolution, solution_from_state
from .step_control import AdaptiveOptions
from .system import LikelihoodSystem

__all__ = ["exp_abm_likelihood"]


def exp_abm_likelihood(
    score,
    sde: GaussianSDE,
    x: torch.Tensor,
    *,
    eps: float,
    probes: torch.Tensor | None,
    rtol: float,
    atol: float,
    order: int = 4,
    max_steps: int = 10_000,
    first_step: float = 0.05,
    exact_chunk: int | None = None,
    fresh_probes: Callable[[], torch.Tensor] | None = None,
    max_evals: int = DEFAULT_MAX_EVALS,
    grid: list[float] | None = None,
    per_example: bool = False,
) -> ExpABMSolution:
    r"""Integrate $(x, \Delta\log p)$ of the PF ODE from `eps` to `sde.T` (see the package).

    The public entry of the scheme; its keywords mirror `ExpABM`'s options, which `likelihood`
    passes on. It builds the batch's `LikelihoodSystem` and the `AdaptiveOptions`, then runs
    the per-example solve, the fixed-step loop or the adaptive one.

    Args:
        score: the score function `(x, t) -> (B, *D)`, `t: (B,)`.
        sde: a `GaussianSDE` (it supplies $\alpha, \sigma, \lambda$ and $t(\lambda)$).
        x: the data `(B, *D)` at time `eps`.
        eps: start time in `(0, T)`.
        probes: `(k, B, *D)` Hutchinson probes held fixed through the solve, or `None` for the
            exact trace.
        rtol, atol: tolerances on dopri5's scale (the same values give at least its accuracy
            on the benchmark's eight Gaussians; see `internal_tolerances`). With
            `rtol', atol'` their scaled values, a step is accepted when, for every example, the
            RMS over its coordinates of the predictor-corrector difference of $x$ is within
            `atol' + rtol' * |x|`, and that of the step's $\int h\,d\lambda$ (every control
            probe) and the log-density error of $x$'s ($\hat\epsilon\cdot\delta/\sigma$) are
            each within `atol' * d` nats.
        order: predictor order k (1 to 4); the corrector has order k + 1.
        max_steps: the most step attempts; beyond it `MaxStepsError`.
        max_evals: the most network passes (score calls); beyond it `MaxStepsError`.
        first_step: the first step in $\lambda$.
        exact_chunk: basis vectors per backward call for the exact trace.
        fresh_probes: a callable returning new `(k, B, *D)` probes; when given, every
            evaluation draws its own and `delta` is their quadrature (its variance falls
            with the number of steps, not only with k), while `probes` (held fixed) serve the
            step control alone. The steps depend on $x$ and the fixed probes only, never on
            the fresh ones, so the estimate stays unbiased for the steps taken.
        grid: fixed nodes in $\lambda$, from $\lambda(\varepsilon)$ down to $\lambda(T)$
            (strictly decreasing, ends exact); when given, no step control: one step per
            interval, `len(grid)` network passes, no host synchronisation in the loop, and
            the tolerances and limits are not used.
        per_example: a step size, clock and error test per example instead of one for the
            batch (`solvers.exp_abm.per_example`); a pass evaluates only the examples not
            yet at T. Adaptive only (not with `grid`).

    Returns:
        An `ExpABMSolution`; its `error` combines, over the accepted steps, each example's
        predictor-corrector gaps of the step's $\int h\,d\lambda$ and of $x$ as it reaches the
        log-density ($\hat\epsilon\cdot\delta/\sigma$): see `ERROR_FLOOR`.

    Raises:
        NonFiniteError: the score or its divergence became NaN/Inf (the message gives the time).
        MaxStepsError: more than `max_steps` step attempts or `max_evals` network passes, or
            a step below `COLLAPSE` (1e-10) of the log-SNR interval (a collapsed step size).
    """
    system = LikelihoodSystem(
        score, sde, x, eps=eps, probes=probes, fresh_probes=fresh_probes, exact_chunk=exact_chunk
    )
    options = AdaptiveOptions(rtol, atol, order, first_step, max_steps, max_evals)
    x = x.to(system.work)
    if per_example and grid is None:
        x, delta, nfe, error = per_example_solve(system, x, options)
        return solution_from_state(system, x, delta, error, nfe)
    march = March(system, x)
    if grid is not None:
        fixed_steps(system, march, grid, order)
    else:
        adaptive_steps(system, march, options)
    return solution_from_state(system, march.x, march.delta, march.error, march.nfe)
