"""`evaluate`: samples, likelihood, ELBO and the applicable sample metrics in one call.

Every entry records what it cost: NFE (batched network calls) and wall time. The sample metrics
that apply are chosen from the data: 8x8 digits get FID-digits, KID and the Inception-style
score (with torchmetrics installed); point data `(N, d)` gets SW2 and MMD; a known
`GaussianMixture` adds the exact-density metrics.
"""

from __future__ import annotations

import math
import time

import torch

from .._checks import check_bool, check_choice, check_finite_tensor, check_int, check_state
from ..elbo import elbo as _elbo
from ..likelihood import likelihood as _likelihood
from ..likelihood import resolve_sde
from ..reverse import ProbabilityFlowODE, ReverseSDE
from ..sdes.gaussian import GaussianSDE
from ..toy.mixture import GaussianMixture
from .exact import mixture_metrics
from .mmd import mmd
from .sliced import sliced_wasserstein

__all__ = ["METRICS", "SAMPLERS", "evaluate", "format_table"]

SAMPLERS = ("ode", "sde")
METRICS = ("fid_digits", "kid_digits", "inception_score_digits", "sw2", "mmd", "mixture")
_LOWDIM_MAX = 64  # SW2/MMD are informative for low-dimensional data only


def _row(value=None, *, stderr=None, floor=None, nfe=None, seconds=None, unit="", **extra):
    return {"value": value, "stderr": stderr, "floor": floor, "nfe": nfe, "seconds": seconds,
            "unit": unit, **extra}  # fmt: skip


def _auto_metrics(x: torch.Tensor, mixture) -> tuple[str, ...]:
    if tuple(x.shape[1:]) == (1, 8, 8):
        try:
            import torchmetrics  # noqa: F401
        except ImportError:
            return ()
        return ("fid_digits", "kid_digits", "inception_score_digits")
    names = ("sw2", "mmd") if x.ndim == 2 and x.shape[1] <= _LOWDIM_MAX else ()
    return names + (("mixture",) if mixture is not None else ())


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def evaluate(
    model,
    data,
    *,
    sde=None,
    num_samples: int | None = None,
    sampler: str = "ode",
    sample_options: dict | None = None,
    metrics=None,
    reference: torch.Tensor | None = None,
    likelihood: bool = True,
    likelihood_examples: int | None = 256,
    likelihood_options: dict | None = None,
    elbo: bool = True,
    elbo_options: dict | None = None,
    generator: torch.Generator | None = None,
    verbose: bool = False,
    return_samples: bool = False,
):
    r"""Evaluate a score model on held-out data: samples, NLL and bits/dim, ELBO, sample metrics.

    Draws `num_samples` samples from the PF ODE (`sampler="ode"`, Song et al. 2021 eq. (13))
    or the reverse SDE (`"sde"`, eq. (6)); computes the test NLL and bits/dim with
    `sdescore.likelihood` and the variational bound with `sdescore.elbo` on the first
    `likelihood_examples` points; then the sample metrics against `data`, each with its floor
    when `reference` (real data independent of `data`) is given (for a mixture the floors
    come from exact samples).

    Args:
        model: a `ScoreModel`, or a score callable `(x, t)` with `sde=`.
        data: held-out real data `(N, *D)`, or a `sdescore.toy.GaussianMixture` (then
            `num_samples` test points are drawn from it, in float64).
        sde: the model's SDE when `model` carries none.
        num_samples: samples to draw; default `N`.
        sampler: `"ode"` (`ProbabilityFlowODE.sample`) or `"sde"` (`ReverseSDE.sample`).
        sample_options: keyword options for that `sample` call (`method`, `steps`, ...).
        metrics: names from `METRICS` to compute; default those that apply to the data.
        reference: real data independent of `data` for the metrics' floors.
        likelihood: compute the NLL and bits/dim.
        likelihood_examples: how many points of `data` to score (None: all).
        likelihood_options: keyword options for `sdescore.likelihood` (e.g. `bins=`).
        elbo: compute the ELBO (needs a `GaussianSDE`; skipped otherwise).
        elbo_options: keyword options for `sdescore.elbo`.
        generator: `torch.Generator` for the samples, probes and metrics.
        verbose: print the table (`format_table`).
        return_samples: also return the samples.

    Returns:
        A dict `{name: {"value", "stderr", "floor", "nfe", "seconds", "unit", ...}}` with
        entries `"sampling"`, `"nll"`, `"bits_per_dim"`, `"elbo_nll"`, `"elbo_bits_per_dim"`
        and one per metric (values are Python floats; NLL entries are means over examples
        with their standard errors); with `return_samples`, the pair `(dict, samples)`.

    Raises:
        ValueError, TypeError: for a bad argument (unknown sampler or metric, data that is
            neither a tensor nor a `GaussianMixture`, NaN in the data).
    """
    sde = resolve_sde(model, sde)
    check_choice("sampler", sampler, SAMPLERS)
    for name, flag in (("likelihood", likelihood), ("elbo", elbo), ("verbose", verbose)):
        check_bool(name, flag)
    check_int("num_samples", num_samples, allow_none=True)
    check_int("likelihood_examples", likelihood_examples, allow_none=True)
    for name, opts in (("sample_options", sample_options), ("likelihood_options", likelihood_options),
                       ("elbo_options", elbo_options)):  # fmt: skip
        if opts is not None and not isinstance(opts, dict):
            raise TypeError(f"{name} must be a dict of keyword options, got {type(opts).__name__}")
    mixture = None
    if isinstance(data, GaussianMixture):
        mixture = data
        data = mixture.sample(num_samples or 1000, generator=generator, dtype=torch.float64)
        if reference is None:  # a known law gives the floors' independent real set for free
            reference = mixture.sample(data.shape[0], generator=generator, dtype=torch.float64)
    check_state(data, "data")
    check_finite_tensor(data, "data")
    if data.ndim < 2 or data.shape[0] < 2:
        raise ValueError(f"data must have shape (N, *D) with N >= 2, got {tuple(data.shape)}")
    if metrics is None:
        metrics = _auto_metrics(data, mixture)
    for m in metrics:
        check_choice("metrics", m, METRICS)
    if "mixture" in metrics and mixture is None:
        raise ValueError("metrics 'mixture' needs data given as a sdescore.toy.GaussianMixture")
    n = num_samples or data.shape[0]
    out = {}

    # Samples.
    proc = ProbabilityFlowODE(sde, model) if sampler == "ode" else ReverseSDE(sde, model)
    opts = dict(sample_options or {})
    res, sec = _timed(
        lambda: proc.sample(
            (n, *data.shape[1:]),
            generator=generator,
            device=data.device,
            dtype=data.dtype,
            return_info=True,
            **opts,
        )  # fmt: skip
    )
    x = res.samples
    out["sampling"] = _row(nfe=res.nfe, seconds=sec, sampler=sampler, n=n, **opts)

    # Likelihood and ELBO on the held-out points.
    test = data if likelihood_examples is None else data[:likelihood_examples]
    if likelihood:
        lr, sec = _timed(lambda: _likelihood(model, test, sde=sde, generator=generator,
                                             **(likelihood_options or {})))  # fmt: skip
        for key, v, unit in (
            ("nll", -lr.log_prob, "nats"),
            ("bits_per_dim", lr.bits_per_dim, "bits/dim"),
        ):
            out[key] = _row(v.mean().item(), stderr=_se(v), nfe=lr.nfe, seconds=sec, unit=unit)
    if elbo and isinstance(sde, GaussianSDE):
        eo = dict(elbo_options or {})
        er, sec = _timed(lambda: _elbo(model, test, sde=sde, generator=generator, **eo))
        calls = math.ceil(
            er.samples * test.shape[0] / (eo.get("batch_size") or er.samples * test.shape[0])
        )
        for key, v, unit in (
            ("elbo_nll", er.nll_bound, "nats"),
            ("elbo_bits_per_dim", er.bits_per_dim, "bits/dim"),
        ):
            out[key] = _row(v.mean().item(), stderr=_se(v), nfe=calls, seconds=sec, unit=unit)

    # Sample metrics: they reuse the samples, so their NFE is the sampler's.
    for name in metrics:
        (vals, sec) = _timed(
            lambda name=name: _metric(name, x, data, reference, mixture, generator)
        )
        for key, m in vals.items():
            out[key] = _row(m.value, stderr=m.stderr, floor=m.floor, nfe=res.nfe, seconds=sec)
    if verbose:
        print(format_table(out))
    return (out, x) if return_samples else out


def _se(v: torch.Tensor) -> float:
    return v.std().item() / math.sqrt(v.shape[0]) if v.shape[0] > 1 else float("nan")


def _metric(name, x, data, reference, mixture, generator) -> dict:
    if name == "sw2":
        return {"sw2": sliced_wasserstein(x, data, reference=reference, generator=generator)}
    if name == "mmd":
        return {"mmd2": mmd(x, data, reference=reference, generator=generator)}
    if name == "mixture":
        return mixture_metrics(x, mixture, generator=generator)
    from . import image  # the torchmetrics path, imported only when asked for

    if name == "fid_digits":
        return {"fid_digits": image.fid_digits(x, data, reference=reference)}
    if name == "kid_digits":
        size = min(x.shape[0], data.shape[0], 1000)
        if reference is not None:
            size = min(size, reference.shape[0])
        return {"kid_digits": image.kid_digits(x, data, reference=reference, subset_size=size,
                                               generator=generator)}  # fmt: skip
    return {"inception_score_digits": image.inception_score_digits(x, reference=reference,
                                                                   generator=generator)}  # fmt: skip


def format_table(results: dict) -> str:
    """The dict returned by `evaluate` as a plain-text table (value ± stderr, floor, NFE, time)."""

    def num(v):
        return "" if v is None else f"{v:.4g}"

    lines = [f"{'metric':<24}{'value':>12}{'± stderr':>12}{'floor':>12}{'NFE':>8}{'time (s)':>10}"]
    for key, r in results.items():
        lines.append(
            f"{key:<24}{num(r.get('value')):>12}{num(r.get('stderr')):>12}"
            f"{num(r.get('floor')):>12}{'' if r.get('nfe') is None else r['nfe']:>8}"
            f"{num(r.get('seconds')):>10}"
        )
    return "\n".join(lines)
