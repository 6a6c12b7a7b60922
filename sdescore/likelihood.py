r"""Exact log-likelihoods through the probability-flow ODE, in nats and bits per dimension.

The probability-flow ODE $dx/dt = v(x, t) = f(x, t) - \tfrac12 g(t)^2 s(x, t)$ (Song et al.
2021, eq. (13)) maps a point $x$ at time $\varepsilon$ to a latent $z = x(T)$. By the
instantaneous change of variables (Chen et al. 2018, Theorem 1; Song et al. 2021, eq. (39)),
$d\log p_t(x(t))/dt = -\nabla\cdot v(x(t), t)$, hence

$$\log p_\varepsilon(x) = \log \pi(z) + \int_\varepsilon^T \nabla\cdot v(x(t), t)\,dt .$$

The pair $(x, \Delta\log p)$ is integrated from $\varepsilon$ to $T$, for a Gaussian-kernel SDE
by the exponential Adams solver in log-SNR (`sdescore.solvers.exp_abm`), otherwise by the
torchdiffeq adapter, either way with error control on both channels, and the divergence comes
from the same network pass as $v$. Controlling $x$ alone is not enough on sharp data: for
8-bit-image-like data the divergence near $t = \varepsilon$ is of order
$d\,g^2/(2\sigma_{data}^2)$ and varies on a time scale far shorter than the one the state needs,
so steps sized for $x$ under-resolve it (bits/dim 0.05-0.08 too low under `VPSDE(0.1, 20)`; see
`benchmarks/likelihood.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._checks import (
    check_callable,
    check_choice,
    check_end_time,
    check_int,
)
from ._divergence import NOISES, check_graph, draw_probes, value_and_divergence
from ._likelihood_solver import (
    EXP_ABM,
    FIXED_GRID_METHODS,
    check_combination,
    choose_solver,
    fixed_grid,
)
from ._shapes import flat_dim
from .dequantization import (
    bits_per_dim,
    check_bins,
    check_continuous_data,
    dequantize,
    to_levels,
)
from .models.mode import check_data_scale, evaluation_mode
from .sdes.base import SDE
from .solvers._common import NonFiniteError
from .solvers.exp_abm import exp_abm_likelihood
from .solvers.torchdiffeq import (
    DEFAULT_MAX_STEPS,
    STEP_CONTROLS,
    odeint_drift,
)

__all__ = [
    "ESTIMATORS",
    "EXP_ABM",
    "FIXED_GRID_METHODS",
    "LikelihoodResult",
    "likelihood",
    "resolve_sde",
]

ESTIMATORS = ("hutchinson", "exact")


@dataclass(frozen=True)
class LikelihoodResult:
    """Per-example results of `likelihood`.

    Attributes:
        log_prob: `(B,)` log-density in nats, $\\log p_\\varepsilon(x)$; for discrete data
            (`bins=`), the dequantization lower bound on the log-probability of the bin.
        bits_per_dim: `(B,)` $-$`log_prob` $/ (d \\ln 2)$, `d = prod(D)`.
        prior_log_prob: `(B,)` $\\log\\pi(z)$ of the latent.
        delta_log_prob: `(B,)` $\\int_\\varepsilon^T \\nabla\\cdot v\\,dt$ (mean over probes).
        latent: `(B, *D)` the latent $z = x(T)$.
        nfe: ODE right-hand-side evaluations, each one network pass, summed over batches and
            dequantization draws.
        log_prob_stderr: `(B,)` standard error of `log_prob`: over the Hutchinson probes
            (`probes > 1`, one dequantization draw), or over the dequantization draws
            (`dequantization_samples > 1`, delta method on the importance weights), else
            `None`.
        dequantized: `(B, *D)` the dequantized continuous point (first draw) for `bins=`,
            else `None`.
    """

    log_prob: torch.Tensor
    bits_per_dim: torch.Tensor
    prior_log_prob: torch.Tensor
    delta_log_prob: torch.Tensor
    latent: torch.Tensor
    nfe: int
    log_prob_stderr: torch.Tensor | None = None
    dequantized: torch.Tensor | None = None


def resolve_sde(model, sde) -> SDE:
    """The SDE of a score function: `sde` if given, else `model.sde` (a `ScoreModel`)."""
    check_callable("model", model)
    own = getattr(model, "sde", None)
    if sde is None:
        if not isinstance(own, SDE):
            raise TypeError(
                "model must be a ScoreModel (carrying .sde), or pass the SDE as sde=...; "
                f"got a {type(model).__name__} without an SDE"
            )
        return own
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdescore.SDE, got {type(sde).__name__}")
    if isinstance(own, SDE) and own is not sde:
        raise ValueError(
            f"sde={sde!r} differs from the model's own SDE {own!r}; leave sde=None to use the "
            "model's, or wrap a plain score function"
        )
    return sde


class _NeedsGraph:
    """The score function, refusing an answer without an autograd graph to `x` while the
    divergence is being taken: the drift's linear part keeps a graph of its own, so the
    divergence of the drift alone would count such a score's divergence as zero without a
    word."""

    def __init__(self, score):
        self.score = score

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self.score(x, t)
        check_graph(s, x, "the score function (likelihood needs its divergence)")
        return s


class _AugmentedDrift:
    """Right-hand side `(x, t) -> (v, rate)` of the $(x, \\Delta\\log p)$ system, one pass each."""

    def __init__(self, drift, probes: torch.Tensor | None, exact_chunk: int | None):
        self.drift, self.probes, self.exact_chunk = drift, probes, exact_chunk

    def __call__(self, x: torch.Tensor, t: torch.Tensor):
        # rate (B,) with the exact trace, (k, B) per Hutchinson probe
        return value_and_divergence(self.drift, x, t, self.probes, chunk=self.exact_chunk)


@dataclass(frozen=True)
class _Solve:
    """One ODE solve of a batch (one dequantization draw)."""

    y: torch.Tensor  # the continuous point the solve started from, (B, *D)
    log_prob: torch.Tensor  # (B,) log p(y), mean over probes
    prior: torch.Tensor  # (B,)
    delta: torch.Tensor  # (B,) mean over probes
    per_probe: torch.Tensor | None  # (k, B) with Hutchinson, else None
    latent: torch.Tensor  # (B, *D)
    nfe: int


def _solve(
    pf, y, *, estimator, noise, probes, eps, generator, solver_kw, exact_chunk, resample_probes
) -> _Solve:
    """One ODE solve for a batch `y: (B, *D)` from `eps` to `T`."""
    x = y
    vecs, fresh = None, None
    if estimator == "hutchinson" and not resample_probes:  # drawn once, held fixed (FFJORD)
        vecs = draw_probes(x, probes, noise=noise, generator=generator)
    elif estimator == "hutchinson":  # one fixed probe for the step control, fresh ones to estimate
        vecs = draw_probes(x, 1, noise=noise, generator=generator)

        def fresh():
            return draw_probes(x, probes, noise=noise, generator=generator)

    if solver_kw["method"] == EXP_ABM:
        kw = {k: v for k, v in solver_kw.items() if k in ("rtol", "atol", "max_steps")}
        with torch.no_grad():
            sol = exp_abm_likelihood(
                pf.score, pf.sde, x, eps=eps, probes=vecs, exact_chunk=exact_chunk,
                fresh_probes=fresh, **kw, **solver_kw["options"],
            )  # fmt: skip
        latent, aux, nfe = sol.latent, sol.delta, sol.nfe
    else:
        aux0 = x.new_zeros(x.shape[0]) if vecs is None else x.new_zeros(probes, x.shape[0])
        with torch.no_grad():
            sol = odeint_drift(
                _AugmentedDrift(pf.drift, vecs, exact_chunk), x, eps, pf.T, aux0=aux0, **solver_kw
            )
        latent, aux, nfe = sol.x, sol.aux, sol.nfe
    per_probe = None if vecs is None else aux
    delta = aux if vecs is None else aux.mean(0)
    prior = pf.sde.prior_logp(latent)
    return _Solve(y, prior + delta, prior, delta, per_probe, latent, nfe)


def likelihood(
    model,
    x: torch.Tensor,
    *,
    sde: SDE | None = None,
    estimator: str = "hutchinson",
    noise: str = "rademacher",
    probes: int = 1,
    rtol: float | None = None,
    atol: float | None = None,
    method: str | None = None,
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    bins: int | None = None,
    data_range: tuple[float, float] = (-1.0, 1.0),
    dequantization_samples: int = 1,
    batch_size: int | None = None,
    step_control: str = "all",
    steps: int | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    options: dict | None = None,
    exact_chunk: int | None = None,
    resample_probes: bool | None = None,
) -> LikelihoodResult:
    r"""Log-likelihood of `x` under the probability-flow ODE of a score model.

    Integrates $(x, \Delta\log p)$ from `eps` to $T$ (see the module docstring) and returns
    $\log p_\varepsilon(x) = \log\pi(z) + \int_\varepsilon^T \nabla\cdot v\,dt$ per example, the
    density of the model's time-`eps` marginal at `x` (Song et al. 2021, Sec. 4.3 and App. D.2).
    The divergence is estimated by Hutchinson's trick with `probes` probes (Grathwohl et al.
    2019; held fixed through the solve with the torchdiffeq methods, drawn afresh at every
    evaluation with `"exp_abm"`, see `resample_probes`), or computed exactly (`estimator="exact"`, `prod(D)`
    vector-Jacobian products per evaluation: moderate dimension only). Either way the drift and
    its products share one network pass per ODE evaluation. Adaptive steps are shared by the
    whole batch, so an example's value depends on the rest of the batch at the level of the
    tolerances.

    **The default solver** for a Gaussian-kernel SDE (VP, sub-VP, VE, `LinearSDE`,
    `DiscreteVPSDE`) is `"exp_abm"` (rtol = atol = 2e-3; see `method`) with Hutchinson probes
    drawn afresh at every evaluation; for other SDEs, or with an option only the torchdiffeq
    methods have (`step_control="x"`, `steps`, torchdiffeq `options`), dopri5 at rtol = atol =
    1e-5 with error control on $x$ and $\Delta\log p$. Measured by `benchmarks/likelihood.py`
    against the exact answer with exact scores, on image-like data (Gaussian mixtures with
    component std 0.004 on $[-1, 1]^d$, d = 16, 64 and 1x8x8, VP, sub-VP, VE; exact trace): mean
    error at most 5.5e-4 bits/dim and worst point 1.4e-3, with 0.30-0.47 of the evaluations of
    plain dopri5 at 1e-5; on eight Gaussians in 2-D 66 evaluations against dopri5's 86 with
    errors of the same size (mean 4.8e-5 vs 2.7e-5 nats); on the trained digits U-Net (d = 64)
    99 evaluations against dopri5's 218. With one probe resampled the per-point Hutchinson
    noise is 6-9x smaller than with one fixed probe (the trained digits U-Net; a trained MLP).
    `step_control="x"` is cheaper but biased on sharp data (0.05-0.08 bits/dim too low under
    `VPSDE(0.1, 20)`); use it only for smooth densities.

    Args:
        model: a `ScoreModel` (its `.sde` is used), or any score callable `(x, t) -> (B, *D)`
            together with `sde=`.
        x: data `(B, *D)`, B >= 1, float32 or float64 (float64 stays float64); with `bins`,
            integer levels. Never modified.
        sde: the forward SDE, required when `model` carries none.
        estimator: `"hutchinson"` or `"exact"`.
        noise: Hutchinson probe distribution, `"rademacher"` or `"gaussian"`.
        probes: number k of Hutchinson probes per example, each integrated as its own channel;
            `log_prob` uses their mean and, for k > 1, `log_prob_stderr` their standard error.
        rtol: relative tolerance of the ODE solver (default 2e-3 for `"exp_abm"`, 1e-5 for
            the torchdiffeq methods).
        atol: absolute tolerance of the ODE solver (defaults as `rtol`); with `"exp_abm"` it
            also bounds each step's log-density error by `atol * d` nats.
        method: `None` (default: see above), a torchdiffeq method name (see
            `sdescore.solvers.torchdiffeq.odeint_drift`): adaptive (`"dopri5"`, `"dopri8"`,
            `"bosh3"`, ...) or fixed-grid (`FIXED_GRID_METHODS`, which need `steps`); or
            `"exp_abm"` for a Gaussian-kernel SDE: an adaptive exponential predictor-corrector
            in log-SNR, one network pass per step, the linear part of the drift and its
            divergence exact, the rest fitted as the shape Gaussian data would give times a
            polynomial (`sdescore.solvers.exp_abm`; exact for isotropic Gaussian data).
            `options` may set its `"order"` (1-4, default 4) and `"first_step"` (in log-SNR,
            default 0.05).
        eps: start time $\varepsilon \in (0, T)$; the score is typically unreliable at t = 0.
        generator: `torch.Generator` for the probes and the dequantization noise.
        bins: if given, `x` holds discrete levels `0 .. bins-1` and is uniformly dequantized
            onto `data_range` (see `dequantize` for the bound and the bits/dim offset).
        data_range: `(a, b)`, the continuous interval the model's data live on (with `bins`).
        dequantization_samples: S >= 1 dequantization draws; for S > 1 they are combined by the
            importance-weighted bound $\log P(k) \ge \log\frac1S\sum_s p(y_s) + d\log w$
            (Burda et al. 2016, Theorem 1), tighter than S = 1 and never looser on average.
            With Hutchinson it needs `probes >= 2`: each draw's estimate is corrected by half
            its estimated variance, which the log-mean-exp would otherwise add (see `_combine`).
        batch_size: evaluate at most this many examples per ODE solve (memory); default all.
        step_control: `"all"` (default: error control on $x$ and on $\Delta\log p$, right on
            sharp data), `"x"` (the state only, RMS over the batch: fewer evaluations, biased
            on sharp data) or `"x_per_example"` (the worst example's error on the state); see
            `odeint_drift`.
        steps: number of steps for a fixed-grid `method` (required there, refused for adaptive
            methods). The grid is uniform in the half log-SNR $\lambda(t)$ for a `GaussianSDE`
            (fine steps near the data, where the density is sharp), uniform in $t$ otherwise.
        max_steps: the most steps an adaptive method may take per solve (default 10 000);
            beyond it `MaxStepsError` says so instead of running on (a stiff or broken score,
            or tolerances too tight for the dtype).
        options: extra torchdiffeq options; for adaptive Runge-Kutta methods `ifactor`
            (the largest step growth) defaults to 4 here instead of torchdiffeq's 10.
        exact_chunk: basis vectors per batched backward call for `estimator="exact"`.
        resample_probes: `None` (default: on exactly when the method is `"exp_abm"` and the
            estimator Hutchinson), or a bool. With `method="exp_abm"` and Hutchinson, draw `probes` new probes at
            every evaluation instead of holding them fixed through the solve: the estimate
            becomes a quadrature of independent estimates, whose variance falls with the
            number of steps as well as with k, while one extra fixed probe (one more
            vector-Jacobian product per evaluation) steers the step control, so the steps never
            depend on the estimating probes and the estimate stays unbiased. Measured
            (`benchmarks/likelihood.py`): per-point standard deviation 8.7x below fixed probes
            at the same k and evaluations on a trained 2-D MLP, 5.9x on the trained digits
            U-Net, 3.5x on a 16-D mixture's exact score.

    Returns:
        A `LikelihoodResult`.

    Raises:
        ValueError: NaN/Inf in `x`, an empty batch, an unknown `estimator`/`noise`/`method`
            (the message lists the valid ones), a fixed-grid method without `steps`, a bad
            option value, a score of the wrong shape, or `"exp_abm"` with an SDE that is not
            a `GaussianSDE`, with `steps` or with `step_control` other than `"all"`.
        TypeError: a wrong argument type, a `model` without an SDE and no `sde=`, a score
            without an autograd graph to `x` (detached or under `no_grad`), or data in
            half precision (float16/bfloat16: the ODE state and the log-density accumulator
            need float32 at least; run the network under `torch.autocast` instead).
        NonFiniteError: (a `FloatingPointError`) the solve produced a non-finite log-density (a score returning
            NaN/Inf, or one that blows up near `eps`); the message says how many examples.
        MaxStepsError: an adaptive method exceeded `max_steps` (a `RuntimeError`).
        RuntimeError: the adaptive solver failed (step size underflow).
    """
    sde = resolve_sde(model, sde)
    check_choice("estimator", estimator, ESTIMATORS)
    check_choice("noise", noise, NOISES)
    check_choice("step_control", step_control, STEP_CONTROLS)
    check_int("probes", probes)
    check_int("dequantization_samples", dequantization_samples)
    check_int("batch_size", batch_size, allow_none=True)
    check_int("steps", steps, allow_none=True)
    eps = check_end_time(eps, sde.T)
    if bins is None:
        check_continuous_data(x)
        if x.dtype in (torch.float16, torch.bfloat16):
            raise TypeError(
                f"x must be float32 or float64 for likelihood, got {x.dtype}: the ODE state and "
                "the log-density accumulator need float32 at least. Pass x.float() and, for a "
                "half-precision network, run it under torch.autocast inside the score function"
            )
        if dequantization_samples != 1:
            raise ValueError("dequantization_samples > 1 needs bins=... (discrete data)")
        levels = None
        check_data_scale(model, x)
    else:
        bins, _ = check_bins(bins, data_range)
        levels = to_levels(x, bins, None)
    pf = sde.probability_flow(_NeedsGraph(model))
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
    options = dict(options or {})
    method, resample_probes, solver_kw = choose_solver(
        sde, method=method, estimator=estimator, steps=steps, step_control=step_control,
        options=options, rtol=rtol, atol=atol, max_steps=max_steps,
        resample_probes=resample_probes,
    )  # fmt: skip
    src = x.detach() if levels is None else levels
    check_combination(estimator, probes, dequantization_samples, flat_dim(src))
    if steps is not None:
        grid = fixed_grid(sde, eps, steps, src)
        options["grid_constructor"] = lambda func, y0, t: grid
    d = flat_dim(src)
    bs = src.shape[0] if batch_size is None else batch_size

    solve_kw = dict(
        estimator=estimator, noise=noise, probes=probes, eps=eps, generator=generator,
        solver_kw=solver_kw, exact_chunk=exact_chunk, resample_probes=resample_probes,
    )  # fmt: skip
    with evaluation_mode(model):
        parts = [
            _evaluate_batch(
                pf,
                chunk,
                dequantization_samples,
                bins if levels is not None else None,
                data_range,
                solve_kw,
            )  # fmt: skip
            for chunk in src.split(bs)
        ]
    log_prob = torch.cat([p.log_prob for p in parts])
    result = LikelihoodResult(
        log_prob=log_prob,
        bits_per_dim=bits_per_dim(log_prob, d),
        prior_log_prob=torch.cat([p.prior for p in parts]),
        delta_log_prob=torch.cat([p.delta for p in parts]),
        latent=torch.cat([p.latent for p in parts]),
        nfe=sum(p.nfe for p in parts),
        log_prob_stderr=None if parts[0].stderr is None else torch.cat([p.stderr for p in parts]),
        dequantized=None if levels is None else torch.cat([p.y for p in parts]),
    )
    check_finite_per_example(
        result.log_prob, f"likelihood ({method}) produced non-finite log-densities"
    )
    return result


@dataclass(frozen=True)
class _Part:
    """The combined result of one batch: the fields of `LikelihoodResult` for its examples."""

    y: torch.Tensor
    log_prob: torch.Tensor
    prior: torch.Tensor
    delta: torch.Tensor
    stderr: torch.Tensor | None
    latent: torch.Tensor
    nfe: int


def _evaluate_batch(pf, chunk, samples: int, bins, data_range, solve_kw) -> _Part:
    """One batch: `samples` dequantization draws of levels `chunk` (or `chunk` itself when
    `bins` is None, continuous data), each one ODE solve, combined by `_combine`."""
    draws, log_w = [], 0.0
    for _ in range(samples):
        if bins is None:
            y = chunk
        else:
            y, log_w = dequantize(chunk, bins, data_range, generator=solve_kw["generator"])
        draws.append(_solve(pf, y, **solve_kw))
    return _combine(draws, flat_dim(chunk) * log_w)


def _combine(draws: list[_Solve], log_volume: float) -> _Part:
    r"""Merge S dequantization draws of one batch; prior, delta and latent of the first draw.

    `log_volume` is $d \log w$, the log-volume of a bin (0 for continuous data). For S > 1 the
    draws are combined by the importance-weighted bound $\log\frac1S\sum_s e^{L_s}$. A noisy
    Hutchinson estimate $\hat L_s = L_s + \delta_s$ would bias it upward: by Jensen,
    $E\,e^{\hat L_s} = e^{L_s} E\,e^{\delta_s} \approx e^{L_s + v_s/2}$ for a near-Gaussian
    error of variance $v_s$ (the central limit over the ODE's many evaluations). So each draw
    enters as $\hat L_s - \hat v_s / 2$, with $\hat v_s$ the variance of its probe mean
    (k >= 2 probes); the correction is exact for Gaussian errors of known variance. The standard
    error for S > 1 is the delta method's: the spread of the weights $e^{\tilde L_s}$ over draws.
    """
    first = draws[0]
    nfe = sum(dr.nfe for dr in draws)
    k = 1 if first.per_probe is None else first.per_probe.shape[0]
    if len(draws) > 1:
        stack = torch.stack([dr.log_prob for dr in draws])  # (S, B)
        if first.per_probe is not None:
            var = torch.stack([dr.per_probe.var(0) / k for dr in draws])
            stack = stack - 0.5 * var
        logp = torch.logsumexp(stack, dim=0) - math.log(len(draws))
        w = (stack - logp).exp()  # weights relative to their mean: mean over draws is 1
        stderr = w.std(0) / math.sqrt(len(draws))
    else:
        logp = first.log_prob
        stderr = first.per_probe.std(0) / math.sqrt(k) if k > 1 else None
    return _Part(first.y, logp + log_volume, first.prior, first.delta, stderr, first.latent, nfe)


def check_finite_per_example(values: torch.Tensor, what: str) -> None:
    """Raise `NonFiniteError` if any of the per-example `values: (B,)` is NaN/Inf.

    `what` opens the message (e.g. "likelihood (dopri5) produced non-finite log-densities").
    One host sync, after the solve: never inside an integration loop.
    """
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        raise NonFiniteError(
            f"{what} for {int(bad.sum())} of {bad.numel()} examples. Check that the score "
            "function returns finite values for t in [eps, T] (try it at t = eps), that the "
            "model and data dtypes match, and that eps is not too small for the model"
        )
