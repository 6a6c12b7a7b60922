r"""Adaptive exponential Adams predictor-corrector in log-SNR for the likelihood ODE.

For a Gaussian-kernel SDE ($x_t = \alpha_t x_0 + \sigma_t \epsilon$, half log-SNR
$\lambda_t = \log(\alpha_t/\sigma_t)$) the probability-flow ODE in noise prediction
$\hat\epsilon = -\sigma_t s(x, t)$ has the exact variation-of-constants form (Lu et al. 2022,
DPM-Solver, eq. (3.4))

$$x_t = \frac{\alpha_t}{\alpha_s} x_s - \alpha_t \int_{\lambda_s}^{\lambda_t} e^{-\lambda}
\hat\epsilon(x_\lambda, \lambda)\,d\lambda ,$$

and the log-density change splits the same way (Song et al. 2021, eq. (39); $g^2 = -2\sigma^2
\,d\lambda/dt$ for these SDEs):

$$\Delta\log p = \int_\varepsilon^T \nabla\cdot v\,dt = d \log\frac{\alpha_T}{\alpha_\varepsilon}
+ \int_{\lambda_T}^{\lambda_\varepsilon} h(\lambda)\,d\lambda, \qquad
h = -\sigma^2\,\nabla\cdot s \in [0, d] \text{ (for a log-concave kernel part)} .$$

The linear part is exact; only $\hat\epsilon$ and $h$ are approximated. Each is written as a
known shape times a polynomial in $\lambda$ through the last values, and the product is
integrated exactly over the step. The shape is the one a Gaussian gives: for data
$N(\mu, c^2 I)$, with $g(\lambda) = 1/(1 + c^2 e^{2\lambda})$,

$$h = d\,g(\lambda), \qquad e^{-\lambda}\hat\epsilon \propto e^{-\lambda}\sqrt{g(\lambda)}
\text{ along the path},$$

so the polynomial factors are constant and any step is exact. For other data $c^2$ is
re-estimated at every step from the latest $h$ (the fraction $\varphi = h/d$ gives
$C = (1/\varphi - 1)e^{-2\lambda}$) and the polynomials carry the departure from the shape.
Where the noise dominates ($\varphi \to 1$) the shape is flat and the scheme is the plain
exponential Adams method in noise prediction (as DPM-Solver's multistep form); near the data
($\varphi \to 0$) it follows $h \propto e^{-2\lambda}$ and $\hat\epsilon \propto e^{-\lambda}$,
which polynomials in $\lambda$ fit poorly (they cost the plain method a dozen steps from
$\sigma(\varepsilon) \approx 10^{-6}$ under sub-VP). The weights stay linear in the values of
$h$ and depend on the step-control channel only, so resampled Hutchinson probes stay unbiased.

Each step is one network pass: an Adams-Bashforth-type predictor of order $k$ gives $x^P_t$;
the score and divergence are evaluated there; an Adams-Moulton-type corrector of order $k + 1$,
through the new value, gives the accepted $x_t$ and the step's share of $\Delta\log p$ (the
evaluation at $x^P_t$ is reused, as in UniPC, Zhao et al. 2023). The difference between
predictor and corrector estimates the local error. A step is accepted when, for the worst
example, (i) $x$ is within `atol' + rtol' * |x|`, (ii) the step's $\int h\,d\lambda$ is within
`atol' * d` nats, and (iii) so is the error of $x$ *as it reaches the log-density*: a path moved
by $\delta$ at time $t$ yields $\log p_t(x_t + \delta)$ instead of $\log p_t(x_t)$, an error of
$\nabla\log p_t \cdot \delta = -\hat\epsilon\cdot\delta/\sigma_t$ nats, which near the data
(score $\sim 1/\sigma$) is far larger than (i) suggests. The next step is sized by a PI
controller on the error ratios (Gustafsson 1991; Hairer & Wanner, Sec. IV.2) and never exceeds
one unit of $\lambda$, so that no feature of the path as wide as that falls between two nodes
unseen (a narrower one can, as with any solver that samples the path: a bump 0.1 wide in
$\lambda$ was missed at some tolerances, as by dopri5).

The user's `rtol`, `atol` are on dopri5's scale: `rtol' = TOLERANCE_SCALE * rtol` (and so for
atol) are what the tests above compare with (`internal_tolerances`). Both controllers bound an
estimate of the local error, but not the same estimate of the same error (dopri5 the RMS over
the batch of its embedded pair's difference; here the worst example's predictor-corrector gap
on three channels), so the same numbers gave different accuracies. The scale is measured
(`benchmarks/likelihood.py --tolerances`, docs/likelihood.md): with it the user's rtol = atol =
1e-5 gives at least dopri5's accuracy at 1e-5, mean and worst point, in no more score calls
on eight Gaussians (the 2021 code's setting) and on a trained MLP; on image-like mixtures it
takes fewer calls than dopri5 at every tolerance but is at the same value often less accurate
(up to 10x under VE): no one constant serves both.

Why this and not dopri5 in $t$: on data as sharp as 8-bit images the divergence varies on a time
scale $\sigma_{data}^2/\beta$ near the data and in short bursts where a path leaves its mode;
dopri5 spends 6 network passes per step there and needs a tight tolerance on both channels.
Here a step costs one pass, the linear part is exact and the error of the log-density channel
is controlled directly (measured in `benchmarks/likelihood.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, final

import numpy as np
import torch

from .._divergence import value_and_divergence
from ..sdes.gaussian import GaussianSDE
from ._common import (
    COLLAPSE,
    DEFAULT_MAX_EVALS,
    DEFAULT_MAX_STEPS,
    MaxStepsError,
    NonFiniteError,
    budget_exceeded,
    check_adaptive,
    check_order,
    step_collapsed,
)
from ._exp_abm_examples import per_example_solve
from .base import Solver
from .grid import Grid, TimeQuadratic, as_grid

__all__ = [
    "DEFAULT_TOLERANCE",
    "ERROR_FLOOR",
    "ExpABM",
    "ExpABMSolution",
    "TARGET_TOLERANCE",
    "exp_abm_likelihood",
    "internal_tolerances",
]

# Growth of the step after an accepted step is capped (multistep methods lose stability and
# accuracy on strongly varying step ratios); shrinking after a rejection is floored.
_MAX_GROWTH, _MIN_SHRINK, _SAFETY = 2.0, 0.2, 0.9
# PI step-size control (Gustafsson 1991; Hairer & Wanner, Sec. IV.2): exponents on the current
# and the previous accepted error ratio, over k + 1. Against the plain rule it cut the rejected
# steps by half and, at a looser tolerance for the same errors, the evaluations by 5-10 %.
_PI_CURRENT, _PI_PREVIOUS = 0.7, 0.4
# The longest step in lambda: the error estimate sees only the nodes, so a feature of the path
# (where it switches modes) between two far-apart nodes can pass unnoticed. Without the cap
# sub-VP crossed a sharp 16-D mixture in 11 evaluations at the default tolerance, 0.19
# bits/dim off; with it, looser tolerances degrade gracefully (1e-2: 2e-3 bits/dim at most on
# average; tests/test_likelihood_exp_abm.py).
_MAX_STEP = 1.0
# What a user's tolerance means: rtol' = TOLERANCE_SCALE * rtol on the tests of the module
# docstring. 100 is the one constant at which the 2021 code's rtol = atol = 1e-5 on eight
# Gaussians (4096 points, exact score) is at least as accurate as dopri5 at 1e-5 (mean and worst
# point against the oracle) in no more score calls (85 against 86; 200 took 77 calls for a mean
# error 1.5x dopri5's, 50 took 95): see docs/likelihood.md for the table at 1e-3..1e-6.
TOLERANCE_SCALE = 100.0
# The default rtol = atol on that scale: rtol' = 2e-3, the tolerance the solver was tuned at.
DEFAULT_TOLERANCE = 2e-5
# The error estimate (`ExpABMSolution.error`, `LikelihoodResult.log_prob_error`), per example:
# |S| + ERROR_FLOOR * A, with S the signed sum over the accepted steps of the predictor-corrector
# gaps that reach log p (the quadrature's and x's, in nats) and A the sum of their magnitudes.
# S follows the error's systematic part (near the data it has one sign); A alone overestimates
# 10-140x (the gap is the lower-order predictor's error, and magnitudes ignore cancellation);
# the floor covers the examples where S cancels by chance. 0.1 is the smallest of 0.05, 0.1,
# 0.2 at which the estimate covered the true error of >= 95 % of the examples of every
# workload of benchmarks/likelihood.py --error-estimate (docs/likelihood.md, "Error estimate").
ERROR_FLOOR = 0.1
# ExpABM(target=tau): step control per example at rtol = atol = TARGET_TOLERANCE * tau. Per
# example, the worst error came out near 100x the tolerance and the mean 25-50x (exact trace or
# fixed probes: eight Gaussians and the sharp mixtures under VP, sub-VP, VE at 2e-5, a digits
# U-Net at 1e-4 and 2e-4); 1/200 leaves a factor 2 (docs/likelihood.md has what it gave).
TARGET_TOLERANCE = 1.0 / 200.0
# Gauss-Legendre nodes for the moments of the shape-times-polynomial products over a step.
_GAUSS_LEGENDRE = np.polynomial.legendre.leggauss(24)
# The step-control constants, as the per-example solve (`_exp_abm_examples`) takes them.
_CONSTS = dict(
    gauss=_GAUSS_LEGENDRE,
    max_step=_MAX_STEP,
    max_growth=_MAX_GROWTH,
    min_shrink=_MIN_SHRINK,
    floor=ERROR_FLOOR,
    safety=_SAFETY,
    pi=(_PI_CURRENT, _PI_PREVIOUS),
)


@dataclass(frozen=True)
class ExpABMSolution:
    """Result of `exp_abm_likelihood`: latent `(B, *D)`, `delta` (Delta log p, `(B,)` or
    `(k, B)` per probe), the network passes `nfe` (one per step attempt, plus the first) and
    `error` `(B,)`, the estimated size of each example's error in `delta` (nats; see
    `ERROR_FLOOR`)."""

    latent: torch.Tensor
    delta: torch.Tensor
    nfe: int
    error: torch.Tensor


def internal_tolerances(rtol: float, atol: float) -> tuple[float, float]:
    r"""The solver's own `(rtol', atol')` for a user's `rtol`, `atol` on dopri5's scale.

    The step tests (module docstring) bound the worst example's predictor-corrector gap by
    `atol' + rtol' |x|` on $x$ and `atol' * d` nats on the log-density; dopri5 bounds the batch
    RMS of its embedded error by `atol + rtol |y|`. The two estimates relate differently to the
    error that results, so the user's values are scaled by `TOLERANCE_SCALE`, measured so that
    the same numbers give at least dopri5's accuracy on the 2021 setting (docs/likelihood.md).

    Args:
        rtol, atol: positive tolerances on dopri5's scale.

    Returns:
        `(TOLERANCE_SCALE * rtol, TOLERANCE_SCALE * atol)`.
    """
    return TOLERANCE_SCALE * rtol, TOLERANCE_SCALE * atol


def _log_shape(lam: np.ndarray, log_c: float) -> np.ndarray:
    r"""$\log g(\lambda) = -\log(1 + C e^{2\lambda})$, without overflow."""
    return -np.logaddexp(0.0, log_c + 2.0 * lam)


def _moments(h: float, lam: float, log_c: float, n: int) -> np.ndarray:
    r"""`(n, 2)`: $\int_0^h w(u)\,u^k du$ for k < n of the two weight functions over the step
    `[lam, lam + h]`, $e^{-u}\sqrt g$ (noise prediction) and $g$ (for $h$); see the module."""
    xg, wg = _GAUSS_LEGENDRE
    u = 0.5 * h * (xg + 1.0)
    log_g = _log_shape(lam + u, log_c)
    powers = u[None, :] ** np.arange(n)[:, None]  # (n, quadrature nodes)
    w_x = 0.5 * h * wg * np.exp(-u + 0.5 * log_g)
    w_h = 0.5 * h * wg * np.exp(log_g)
    return np.stack([powers @ w_x, powers @ w_h], axis=1)


def _weights(
    nodes: list[float], moments: np.ndarray, lam: float, log_c: float
) -> tuple[list[float], list[float]]:
    r"""Weights over the step for the noise prediction and for $h$, each fitted as the shape
    ($\sqrt g$ and $g$) times the polynomial through `nodes` (offsets from `lam`), from the
    first `len(nodes)` rows of `_moments`.

    With $V$ the Vandermonde matrix of the nodes, $V^T w = m$; the node values are divided by
    the shape, so the weights are scaled by its reciprocal at each node. Both channels in one
    solve."""
    n = len(nodes)
    v = np.vander(np.asarray(nodes, dtype=np.float64), n, increasing=True)
    w = np.linalg.solve(v.T, moments[:n])
    log_g_nodes = _log_shape(lam + np.asarray(nodes, dtype=np.float64), log_c)
    w_eps = w[:, 0] * np.exp(-0.5 * log_g_nodes)
    w_h = w[:, 1] * np.exp(-log_g_nodes)
    return w_eps.tolist(), w_h.tolist()


def _combine(weights: list[float], values: list[torch.Tensor]) -> torch.Tensor:
    out = values[0] * weights[0]
    for w, v in zip(weights[1:], values[1:], strict=True):
        out = out + v * w
    return out


class _Node:
    """An accepted point: its log-SNR and the network's noise prediction and $h$ there."""

    __slots__ = ("lam", "eps", "h")

    def __init__(self, lam: float, eps: torch.Tensor, h: torch.Tensor):
        self.lam, self.eps, self.h = lam, eps, h


def _weights_on_device(
    nodes: list[float], step: float, lam: float, log_c: torch.Tensor, n_moments: int
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""`_moments` and `_weights` for a shape constant `log_c` held on the device (a 0-d
    float64 tensor), so that a fixed-step solve never reads it back: the quadrature and the
    Vandermonde inverse (host numbers, the nodes are known) are applied to device tensors.
    Returns the weights `(n,)` for the noise prediction and for $h$."""
    xg, wg = _GAUSS_LEGENDRE
    n = len(nodes)
    opts = {"dtype": log_c.dtype, "device": log_c.device}
    u = 0.5 * step * (xg + 1.0)
    log_g = -torch.logaddexp(
        torch.zeros((), **opts), log_c + 2.0 * (lam + torch.as_tensor(u, **opts))
    )
    powers = torch.as_tensor(u[None, :] ** np.arange(n_moments)[:, None], **opts)
    w_x = torch.as_tensor(0.5 * step * wg, **opts) * torch.exp(
        -torch.as_tensor(u, **opts) + 0.5 * log_g
    )
    w_h = torch.as_tensor(0.5 * step * wg, **opts) * torch.exp(log_g)
    moments = torch.stack([powers @ w_x, powers @ w_h], dim=1)[:n]  # (n, 2)
    inv_vt = np.linalg.inv(np.vander(np.asarray(nodes, dtype=np.float64), n, increasing=True).T)
    w = torch.as_tensor(inv_vt, **opts) @ moments
    log_g_nodes = -torch.logaddexp(
        torch.zeros((), **opts), log_c + 2.0 * (lam + torch.as_tensor(nodes, **opts))
    )
    return w[:, 0] * torch.exp(-0.5 * log_g_nodes), w[:, 1] * torch.exp(-log_g_nodes)


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
    r"""Integrate $(x, \Delta\log p)$ of the PF ODE from `eps` to `sde.T` (see the module).

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
            batch (`solvers._exp_abm_examples`); a pass evaluates only the examples not yet
            at T. Adaptive only (not with `grid`).

    Returns:
        An `ExpABMSolution`; its `error` combines, over the accepted steps, each example's
        predictor-corrector gaps of the step's $\int h\,d\lambda$ and of $x$ as it reaches the
        log-density ($\hat\epsilon\cdot\delta/\sigma$): see `ERROR_FLOOR`.

    Raises:
        NonFiniteError: the score or its divergence became NaN/Inf (the message gives the time).
        MaxStepsError: more than `max_steps` step attempts or `max_evals` network passes, or
            a step below `COLLAPSE` (1e-10) of the log-SNR interval (a collapsed step size).
    """
    d = x[0].numel()
    batch = x.shape[0]
    rtol_s, atol_s = internal_tolerances(rtol, atol)
    f64 = torch.float64
    # The state, the nodes and the log-density accumulate in float64 (where the device has it);
    # the score sees x's own dtype. A float32 state rounds x by ~6e-8 at every step, which
    # near the data (sigma ~ 1e-6 under sub-VP) moved log p by up to 0.1 bits/dim.
    in_dtype = x.dtype
    work = f64 if x.device.type != "mps" else in_dtype
    x = x.to(work)
    lam0 = float(sde.log_snr(torch.tensor(eps, dtype=f64)))
    lam1 = float(sde.log_snr(torch.tensor(sde.T, dtype=f64)))
    span = lam0 - lam1

    cache: dict[float, tuple[float, float, float]] = {}

    def coefficients(lam: float) -> tuple[float, float, float]:
        """`(t, alpha, sigma)` at log-SNR `lam`, in float64 on the host (no device sync);
        cached, since each step needs them twice (the inversion of lambda may be a bisection).
        Strictly inside (lam1, lam0) the public `t_from_log_snr`'s clamps and checks are
        no-ops, so the SDE's own inverse and coefficients are called directly (the same
        numbers, without a range computation and a NaN check per call)."""
        if lam not in cache:
            if lam == lam0:
                t = eps
            elif lam == lam1:
                t = sde.T
            else:
                t = float(sde._t_from_log_snr(torch.tensor(lam, dtype=f64)).clamp(eps, sde.T))
            tt = torch.tensor(t, dtype=f64)
            if len(cache) > 1:
                cache.clear()  # only the current step's two points are ever needed again
            cache[lam] = (t, float(sde._log_alpha(tt).exp()), float(sde._sigma(tt)))
        return cache[lam]

    def nonfinite(bad: torch.Tensor, lam: float, evaluation: int) -> NonFiniteError:
        t_bad = coefficients(lam)[0]
        return NonFiniteError(
            f"likelihood (exp_abm): the score or its divergence is NaN/Inf for "
            f"{int(bad.sum())} of {batch} examples at t = {t_bad:.6g} (lambda = {lam:.4g}, "
            f"evaluation {evaluation}); check that the score function returns finite values "
            "for t in [eps, T]"
        )

    if per_example and grid is None:
        x, delta, nfe, error = per_example_solve(
            score, sde, x, eps=eps, probes=probes, fresh_probes=fresh_probes,
            exact_chunk=exact_chunk, tolerances=(rtol_s, atol_s), order=order,
            first_step=first_step, max_steps=max_steps, max_evals=max_evals, consts=_CONSTS,
            where=f"likelihood (exp_abm per example, rtol={rtol}, atol={atol})",
            in_dtype=in_dtype,
        )  # fmt: skip
        return _finish(sde, eps, x, delta, error, nfe, probes, fresh_probes, in_dtype)

    def evaluate(y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise prediction and $h$ at `y`; with `fresh_probes`, $h$ stacks the fixed
        probes' rows (control) above the fresh ones' (estimate)."""
        t, _, sigma = coefficients(lam)
        vecs = probes if fresh_probes is None else torch.cat([probes, fresh_probes()])
        tb = torch.full((batch,), t, dtype=in_dtype, device=y.device)
        s, div = value_and_divergence(score, y.to(in_dtype), tb, vecs, chunk=exact_chunk)
        return s.to(work) * -sigma, div.to(work) * -(sigma * sigma)

    n_control = 0 if probes is None else probes.shape[0]

    def control(h: torch.Tensor) -> torch.Tensor:
        """The step-control rows of $h$ (`(B,)` or `(k, B)`; never the fresh probes)."""
        return h if fresh_probes is None else h[:n_control]

    def noise_fraction(h: torch.Tensor) -> torch.Tensor:
        r"""The batch mean of $h/d$ on the step-control rows (never the fresh probes)."""
        return control(h).mean() / d

    def log_shape_constant(phi: float, lam: float) -> float:
        r"""$\log C$ of the shape $g = 1/(1 + C e^{2\lambda})$ through $g(\lambda) = \varphi$;
        $\varphi$ outside (0, 1) (a Hutchinson estimate, a mode switch) is clipped."""
        phi = min(max(phi, 1e-12), 1.0 - 1e-12)
        return math.log1p(-phi) - math.log(phi) - 2.0 * lam

    def local_error(gap: torch.Tensor, eps_t: torch.Tensor, dx: torch.Tensor, sigma_t: float):
        r"""`(2, B)` nats: the step's signed gap (the log-density quadrature's, mean over the
        control probes, plus x's as it reaches log p, $\hat\epsilon\cdot\delta/\sigma$)
        and the sum of the two gaps' magnitudes; see `ERROR_FLOOR`."""
        q = gap.reshape(-1, batch).mean(0)
        s = (eps_t * dx).reshape(batch, -1).sum(1) / sigma_t
        return torch.stack([q + s, q.abs() + s.abs()])

    eps0, h0 = evaluate(x, lam0)
    bad0 = ~torch.isfinite(eps0).reshape(batch, -1).all(1)
    bad0 |= ~torch.isfinite(h0).reshape(-1, batch).all(0)
    if bool(bad0.any()):  # one sync before the loop: a NaN at eps is named at eps
        raise nonfinite(bad0, lam0, 1)
    nfe = 1
    history = [_Node(lam0, eps0, h0)]
    delta = torch.zeros_like(h0)  # int h dlam so far, (B,) or (k, B)
    error = x.new_zeros(2, batch)  # accepted steps' gaps: signed sum, sum of |.|, nats
    _, alpha_s, _ = coefficients(lam0)
    if grid is not None:
        x, delta, error, history = _fixed_steps(
            grid, x, delta, error, history, alpha_s, order, noise_fraction(h0),
            coefficients, evaluate, control, local_error,
        )  # fmt: skip
        nfe = len(grid)
        bad = ~torch.isfinite(error) | ~torch.isfinite(delta.reshape(-1, batch)).all(0)
        if bool(bad.any()):  # after the loop: one sync
            raise nonfinite(bad, lam1, nfe)
    else:
        log_c = log_shape_constant(float(noise_fraction(h0)), lam0)
        lam, step = lam0, -abs(first_step)
        r_prev = None  # the previous accepted error ratio, for the PI control
    while grid is None and lam > lam1:
        if nfe > max_steps:
            raise MaxStepsError(
                f"likelihood (exp_abm): more than max_steps={max_steps} steps between "
                f"lambda = {lam0:.3g} and {lam1:.3g} (now at {lam:.3g}, rtol={rtol}, "
                f"atol={atol}); loosen the tolerances or raise max_steps"
            )
        if nfe >= max_evals or abs(step) < COLLAPSE * span:
            where = f"likelihood (exp_abm, rtol={rtol}, atol={atol}, in log-SNR lambda)"
            at = dict(nfe=nfe, t=coefficients(lam)[0], t0=eps, t1=sde.T, dtype=in_dtype)
            if nfe >= max_evals:
                raise budget_exceeded(where, max_evals=max_evals, **at)
            raise step_collapsed(
                where, moved=abs(step), over=f"one step in lambda (of {span:.3g})", **at
            )
        step = max(step, -_MAX_STEP)
        if lam + step <= lam1 or (lam + step - lam1) < 1e-3 * abs(step):
            step = lam1 - lam  # land exactly on T
        lam_t = lam + step
        _, alpha_t, sigma_t = coefficients(lam_t)
        k = min(order, len(history))
        past = history[::-1][:k]  # newest first
        nodes = [p.lam - lam for p in past]
        ratio, scale = alpha_t / alpha_s, alpha_t * math.exp(-lam)
        # One set of moments per step: the predictor's are the corrector's first k rows.
        moments = _moments(step, lam, log_c, k + 1)
        w_eps, w_h = _weights(nodes, moments, lam, log_c)
        x_pred = ratio * x - scale * _combine(w_eps, [p.eps for p in past])
        q_pred = _combine(w_h, [p.h for p in past])
        eps_t, h_t = evaluate(x_pred, lam_t)
        nfe += 1
        w_eps, w_h = _weights([step, *nodes], moments, lam, log_c)
        x_corr = ratio * x - scale * _combine(w_eps, [eps_t, *(p.eps for p in past)])
        q_corr = _combine(w_h, [h_t, *(p.h for p in past)])
        dx = x_corr - x_pred
        err_x = (dx / (atol_s + rtol_s * torch.maximum(x.abs(), x_corr.abs()))).reshape(batch, -1)
        err_x = err_x.square().mean(1).sqrt()
        # The log-density's errors are absolute (nats): atol per dimension, no relative part.
        # Its own quadrature's, and x's as it reaches log p: grad log p . dx = -eps . dx / sigma.
        gap = control(q_corr - q_pred)
        err_q = (gap.abs() / (atol_s * d)).reshape(-1, batch).amax(0)
        err_s = (eps_t * dx).reshape(batch, -1).sum(1).abs() / (sigma_t * atol_s * d)
        err = torch.maximum(torch.maximum(err_x, err_q), err_s)
        # The one sync per step: accept or not, and the shape's constant for the next step.
        r, phi = torch.stack([err.max(), noise_fraction(h_t).to(err.dtype)]).tolist()
        if not math.isfinite(r):
            raise nonfinite(~torch.isfinite(err), lam_t, nfe)
        r = max(r, 1e-10)
        if r <= 1.0:
            error = error + local_error(gap, eps_t, dx, sigma_t)
            x, lam, alpha_s = x_corr, lam_t, alpha_t
            delta = delta - q_corr  # lambda decreases: int_{lam_T}^{lam_eps} h = -sum of steps
            history.append(_Node(lam_t, eps_t, h_t))
            del history[: -(order + 1)]
            log_c = log_shape_constant(phi, lam_t)
            factor = r ** (-_PI_CURRENT / (k + 1))
            if r_prev is not None:
                factor *= r_prev ** (_PI_PREVIOUS / (k + 1))
            r_prev = max(r, 1e-4)
            step *= min(_MAX_GROWTH, max(_MIN_SHRINK, _SAFETY * factor))
        else:  # plain rule after a rejection, never growing
            step *= min(1.0, max(_MIN_SHRINK, _SAFETY * r ** (-1.0 / (k + 1))))
    return _finish(sde, eps, x, delta, error, nfe, probes, fresh_probes, in_dtype)


def _finish(sde, eps, x, delta, error, nfe, probes, fresh_probes, in_dtype) -> ExpABMSolution:
    """The solution from the integrated state: the linear part $d\\log(\\alpha_T/
    \\alpha_\\varepsilon)$ added, the control probes' rows dropped, the error estimate formed."""
    f64 = torch.float64
    log_ratio = float(
        sde.log_alpha(torch.tensor(sde.T, dtype=f64)) - sde.log_alpha(torch.tensor(eps, dtype=f64))
    )
    if fresh_probes is not None:
        delta = delta[probes.shape[0] :]
    estimate = error[0].abs() + ERROR_FLOOR * error[1]
    d = x[0].numel()
    return ExpABMSolution(
        x.to(in_dtype), (delta + d * log_ratio).to(in_dtype), nfe, estimate.to(in_dtype)
    )


def _fixed_steps(
    grid, x, delta, error, history, alpha_s, order, phi0, coefficients, evaluate, control,
    local_error,
):  # fmt: skip
    r"""The predictor-corrector steps of `exp_abm_likelihood` on the fixed nodes `grid`
    (log-SNR, decreasing), without step control: the shape constant stays on the device
    (`_weights_on_device`), so the loop never synchronises with it."""

    def log_shape_constant(phi: torch.Tensor, lam: float) -> torch.Tensor:
        phi = phi.to(torch.float64).clamp(1e-12, 1.0 - 1e-12)
        return torch.log1p(-phi) - torch.log(phi) - 2.0 * lam

    log_c = log_shape_constant(phi0, grid[0])
    for lam, lam_t in zip(grid[:-1], grid[1:], strict=True):
        step = lam_t - lam
        _, alpha_t, sigma_t = coefficients(lam_t)
        k = min(order, len(history))
        past = history[::-1][:k]
        nodes = [p.lam - lam for p in past]
        ratio, scale = alpha_t / alpha_s, alpha_t * math.exp(-lam)
        w_eps, w_h = _weights_on_device(nodes, step, lam, log_c, k + 1)
        x_pred = ratio * x - scale * _combine(w_eps, [p.eps for p in past])
        q_pred = _combine(w_h, [p.h for p in past])
        eps_t, h_t = evaluate(x_pred, lam_t)
        w_eps, w_h = _weights_on_device([step, *nodes], step, lam, log_c, k + 1)
        x_corr = ratio * x - scale * _combine(w_eps, [eps_t, *(p.eps for p in past)])
        q_corr = _combine(w_h, [h_t, *(p.h for p in past)])
        error = error + local_error(control(q_corr - q_pred), eps_t, x_corr - x_pred, sigma_t)
        x, alpha_s = x_corr, alpha_t
        delta = delta - q_corr
        history.append(_Node(lam_t, eps_t, h_t))
        del history[: -(order + 1)]
        log_c = log_shape_constant(control(h_t).mean() / x[0].numel(), lam_t)
    return x, delta, error, history


@final
class ExpABM(Solver):
    r"""The adaptive exponential Adams predictor-corrector in log-SNR (see the module), as the
    solver of `likelihood` (its default for a `GaussianSDE`); it integrates the likelihood's
    $(x, \Delta\log p)$ system only, not sampling.

    Args:
        rtol: relative tolerance, on dopri5's scale (`internal_tolerances`; default 2e-5:
            docs/likelihood.md, "What a tolerance means", says what it buys).
        atol: absolute tolerance, likewise; scaled, it also bounds each step's log-density
            error (default 2e-5).
        order: predictor order k, 1 to 4 (default 4); the corrector has order k + 1.
        first_step: the first step in log-SNR, between 1e-6 and 1 (default 0.05).
        max_steps: the most step attempts before a `MaxStepsError` (default 10 000).
        max_evals: the most score calls (network passes) before a `MaxStepsError` (default
            `DEFAULT_MAX_EVALS`, 10 000: docs/likelihood.md); a step size that collapses (below
            1e-10 of the log-SNR interval) stops the solve sooner.
        steps: a fixed budget of score calls (network passes) per batch instead of step
            control: the evaluation at eps and `steps - 1` predictor-corrector steps between
            the nodes of `grid`; an int >= 2, or `None` (default: adaptive). The tolerances
            and limits are then unused, and the solve never synchronises with the device.
        grid: where the fixed steps go, a `Grid` or its name (`"time_quadratic"`, `"logsnr"`,
            `"time_uniform"`, `"karras"`) or explicit times from eps to T (`steps - 1`
            intervals); default `"time_quadratic"` (docs/likelihood.md, "A fixed budget").
            Only with `steps` (or explicit times, which fix it).
        per_example: step control per example (default `False`: one step for the batch): each
            example has its own clock, step size and error test, and a network pass evaluates
            only the examples not yet at T, each at its own time (the score gets `t: (B,)`
            with different values). An example's result no longer depends on its batch, and
            a hard example no longer shrinks the others' steps; at the same tolerance the
            mean error is larger than with one step for the batch (docs/likelihood.md,
            "Per-example step control and an accuracy target"). Adaptive only (not with
            `steps`).
        target: an accuracy target in bits/dim per example, a float in (0, 1), instead of
            rtol/atol: step control per example (implies `per_example`) at
            rtol = atol = `TARGET_TOLERANCE` * target (1/200 of it). Not a guarantee: an
            example can miss it (measured in docs/likelihood.md, "Per-example step control and
            an accuracy target"); `LikelihoodResult.bits_per_dim_error` estimates each
            example's error. Default `None` (the tolerances).

    Raises:
        ValueError, TypeError: a bad option, named in the message.
    """

    process: ClassVar[str] = "ode"
    supports_likelihood: ClassVar[bool] = True

    def __init__(
        self,
        *,
        rtol: float = DEFAULT_TOLERANCE,
        atol: float = DEFAULT_TOLERANCE,
        order: int = 4,
        first_step: float = 0.05,
        max_steps: int = DEFAULT_MAX_STEPS,
        max_evals: int = DEFAULT_MAX_EVALS,
        steps: int | None = None,
        grid=None,
        per_example: bool = False,
        target: float | None = None,
    ):
        self.rtol, self.atol, self.max_steps, self.max_evals = check_adaptive(
            rtol, atol, max_steps, max_evals
        )
        self.steps, self.grid = _check_budget(steps, grid)
        self.order = check_order(order, highest=4)
        if (
            isinstance(first_step, bool)
            or not isinstance(first_step, (int, float))
            or not 1e-6 <= first_step <= 1
        ):
            raise ValueError(
                "first_step must be a step in log-SNR between 1e-6 and 1 (the longest step; "
                f"default 0.05), got {first_step!r}"
            )
        self.first_step = float(first_step)
        if not isinstance(per_example, bool):
            raise TypeError(
                f"per_example must be True or False (step control per example or for the "
                f"batch), got {type(per_example).__name__}"
            )
        if per_example and self.steps is not None:
            raise ValueError(
                f"per_example=True controls adaptive steps; a fixed budget (steps="
                f"{self.steps}) has none to control: give one or the other"
            )
        if target is not None:
            if isinstance(target, bool) or not isinstance(target, (int, float)):
                raise TypeError(
                    f"target must be an error target in bits/dim (a float in (0, 1)) or None, "
                    f"got {type(target).__name__}"
                )
            if not 0.0 < target < 1.0:
                raise ValueError(
                    f"target must be an error target in bits/dim in (0, 1) (e.g. 0.005), got "
                    f"{target!r}"
                )
            if self.steps is not None:
                raise ValueError(
                    f"target={target!r} controls adaptive steps; a fixed budget (steps="
                    f"{self.steps}) has none to control: give one or the other"
                )
            target = float(target)
            tol = TARGET_TOLERANCE * target
            if {rtol, atol} - {tol, DEFAULT_TOLERANCE}:
                raise ValueError(
                    f"target={target!r} sets the tolerances (rtol = atol = {tol:.3g}); give "
                    f"either target or rtol/atol, got rtol={rtol!r}, atol={atol!r} too"
                )
            self.rtol = self.atol = tol
            per_example = True
        self.per_example, self.target = per_example, target

    def integrate(self, p) -> torch.Tensor:
        raise ValueError(
            "ExpABM integrates the likelihood's (x, log p) system from eps to T "
            "(sdescore.likelihood(..., solver=ExpABM())); to sample, use method='auto'"
        )

    def score_calls(self, steps: int | None) -> int | None:
        return self.steps

    def lambda_nodes(self, sde: GaussianSDE, eps: float) -> list[float] | None:
        """The fixed nodes in log-SNR from `eps` to T (`steps` of them, ends exact), or
        `None` when adaptive."""
        if self.steps is None:
            return None
        grid = TimeQuadratic() if self.grid is None else self.grid
        like = torch.empty(0, dtype=torch.float64)
        t = grid.times(sde, eps, sde.T, self.steps - 1, like).to(torch.float64)
        lam = sde.log_snr(t).tolist()
        lam[0] = float(sde.log_snr(torch.tensor(eps, dtype=torch.float64)))
        lam[-1] = float(sde.log_snr(torch.tensor(sde.T, dtype=torch.float64)))
        if any(b >= a for a, b in zip(lam[:-1], lam[1:], strict=True)):
            raise ValueError(
                f"grid={grid!r} gives times that do not increase strictly from eps = {eps} to "
                f"T = {sde.T} (log-SNR nodes {lam}); ExpABM(steps=...) needs distinct times"
            )
        return lam


def _check_budget(steps, grid) -> tuple[int | None, Grid | None]:
    """`ExpABM`'s `steps` (an int >= 2 or None) and `grid` (only with a budget)."""
    if grid is not None:
        grid = as_grid(grid)
        if steps is None and grid.steps is not None:
            steps = grid.steps + 1
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise TypeError(
                f"steps must be an int >= 2 (score calls per batch: the evaluation at eps and "
                f"steps - 1 steps) or None (adaptive), got {type(steps).__name__}"
            )
        if steps < 2:
            raise ValueError(
                f"steps must be an int >= 2 (score calls per batch: the evaluation at eps and "
                f"steps - 1 steps) or None (adaptive), got {steps}"
            )
        if grid is not None and grid.steps is not None and grid.steps != steps - 1:
            raise ValueError(
                f"steps={steps} takes {steps - 1} steps, but the grid's times fix {grid.steps} "
                f"({grid.steps + 1} times): give steps={grid.steps + 1} or leave it out"
            )
    elif grid is not None:
        raise ValueError(
            f"grid={grid!r} places fixed steps; give their budget too (ExpABM(steps=40, "
            "grid=...)), or leave grid out for the adaptive solver"
        )
    return steps, grid
