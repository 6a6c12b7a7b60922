"""`evaluate`: samples, likelihood, ELBO and the applicable sample metrics in one call.

Every entry records what it cost: NFE (batched network calls) and wall time. The sample metrics
that apply are chosen from the data: 8x8 digits get FID-digits, KID and the Inception-style
score (with torchmetrics installed); point data `(N, d)` gets SW2 and MMD; a known
`GaussianMixture` adds the exact-density metrics.

Under `torchrun` every rank samples and scores its share; the ranks meet only after their
solves (one gather of the samples, one all-reduce of sums and counts), never inside a solver.
"""

from __future__ import annotations

import math
import time
from functools import partial

import torch
import torch.distributed as dist

from .._checks import (
    check_bool,
    check_choice,
    check_finite_tensor,
    check_generator,
    check_int,
    check_state,
    moved_keywords,
)
from ..distributed import env as dist_env
from ..distributed import gather, is_distributed, rank_seed, shard
from ..elbo import elbo as _elbo
from ..likelihood import likelihood as _likelihood
from ..likelihood import resolve_sde
from ..models.mode import check_event_shape, to_model_dtype
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


_MOVED = {
    "sample_options": "the sampler object: sampler=sdescore.Auto(steps=20) (options on the "
    "solver object; the process follows from it)",
    "likelihood_examples": "a key of likelihood=: likelihood={{'examples': {v!r}}}",
    "likelihood_options": "likelihood={v!r} (a dict of sdescore.likelihood's options)",
    "elbo_options": "elbo={v!r} (a dict of sdescore.elbo's options)",
    "verbose": "print(sdescore.metrics.format_table(result))",
    "steps": "the sampler's: sampler=sdescore.Auto(steps={v!r})",
    "method": "the sampler: sampler={v!r} (a name or a solver object)",
}


@moved_keywords(_MOVED)
def evaluate(
    model,
    data,
    *,
    sde=None,
    num_samples: int | None = None,
    sampler="ode",
    metrics=None,
    reference: torch.Tensor | None = None,
    likelihood: bool | dict = True,
    elbo: bool | dict = True,
    generator: torch.Generator | None = None,
    return_samples: bool = False,
    distributed: bool | None = None,
):
    r"""Evaluate a score model on held-out data: samples, NLL and bits/dim, ELBO, sample metrics.

    Draws `num_samples` samples from the PF ODE (Song et al. 2021 eq. (13)) or the reverse SDE
    (eq. (6)) with `sampler`; computes the test NLL and bits/dim with `sdescore.likelihood` and
    the variational bound with `sdescore.elbo` on the first 256 points (`likelihood=
    {"examples": n}`); then the sample metrics against `data`, each with its floor
    when `reference` (real data independent of `data`) is given (for a mixture the floors
    come from exact samples).

    Args:
        model: a `ScoreModel`, or a score callable `(x, t)` with `sde=`.
        data: held-out real data `(N, *D)`, or a `sdescore.toy.GaussianMixture` (then
            `num_samples` test points are drawn from it, in float64).
        sde: the model's SDE when `model` carries none.
        num_samples: samples to draw; default `N`.
        sampler: the solver that draws the samples, with its budget on the object: a solver
            object (`sdescore.Auto(steps=20)`, `sdescore.PC(steps=500)`; its `process` picks
            `ProbabilityFlowODE.sample` or `ReverseSDE.sample`), a method name (looked up for
            the PF ODE first), or `"ode"` / `"sde"` for that process's default method.
        metrics: names from `METRICS` to compute; default those that apply to the data.
        reference: real data independent of `data` for the metrics' floors.
        likelihood: compute the NLL and bits/dim: `True`, `False`, or a dict of
            `sdescore.likelihood`'s options (`{"solver": ..., "dequantization": 256}`) with
            `"examples"`, how many points of `data` to score (default 256; `None`: all).
        elbo: compute the ELBO (needs a `GaussianSDE`; skipped otherwise): `True`, `False`, or
            a dict of `sdescore.elbo`'s options; it scores the same points.
        generator: `torch.Generator` for the samples, probes and metrics.
        return_samples: also return the samples. (`format_table(result)` prints the table.)
        distributed: shard the work over the ranks of the process group: None (default) when
            one of more than one process is initialised (`sdescore.distributed`), or a bool.
            Every rank must then call `evaluate` with the same arguments and the same `data`.
            Rank r draws its `shard(num_samples)` of the samples and scores its shard of the
            held-out points with its own generator (`rank_seed` of one seed that rank 0 draws
            from `generator` and broadcasts); the samples are gathered and the per-example sums
            and counts combined in one all-reduce after every rank's solves (an adaptive solver
            takes a different number of steps on each rank: a collective inside it would
            deadlock). The NLL then equals a one-process run's to within the solver tolerance
            (exact trace) or its Monte Carlo error (Hutchinson, ELBO); the samples are other,
            equally valid draws, reproducible for a fixed seed and world size. The metrics are
            computed on the gathered samples on every rank, so every rank returns the same dict.
            `nfe` is the largest count of any rank (a fixed-step sampler reports what one
            process would), `seconds` the slowest rank's. `nfe` counts network evaluations
            per example: the sampler's and the likelihood solve's steps, the ELBO's `samples`.

    Returns:
        A dict `{name: {"value", "stderr", "floor", "nfe", "seconds", "unit", ...}}` with
        entries `"sampling"` (with the `world_size` it was drawn on), `"nll"`,
        `"bits_per_dim"`, `"elbo_nll"`, `"elbo_bits_per_dim"` and one per metric (values are
        Python floats; NLL entries are means over examples with their standard errors); with
        `return_samples`, the pair `(dict, samples)` (all `num_samples`, on every rank).

    Raises:
        ValueError, TypeError: for a bad argument (unknown sampler or metric, data that is
            neither a tensor nor a `GaussianMixture`, NaN in the data, `distributed=True`
            without a process group, fewer samples than ranks).
    """
    sde = resolve_sde(model, sde)
    solver = _sampler(sampler)
    lo, likelihood = _options("likelihood", likelihood)
    eo, elbo = _options("elbo", elbo)
    examples = check_int("likelihood['examples']", lo.pop("examples", 256), allow_none=True)
    check_generator("generator", generator)
    num_samples = check_int("num_samples", num_samples, allow_none=True)
    check_bool("return_samples", return_samples)
    world = _world_size(distributed)
    # One process draws everything from `generator`. Several ranks need streams of their own
    # (else every rank would draw the same samples) and a shared one (data, metrics): both come
    # from one seed that rank 0 draws and broadcasts.
    local_gen = shared_gen = generator
    if world > 1:
        base = _broadcast_seed(generator)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        shared_gen = torch.Generator(gen_device).manual_seed(base)
        local_gen = None  # made on the data's device below
    mixture = None
    if isinstance(data, GaussianMixture):
        mixture = data
        data = mixture.sample(num_samples or 1000, generator=shared_gen, dtype=torch.float64)
        if reference is None:  # a known law gives the floors' independent real set for free
            reference = mixture.sample(data.shape[0], generator=shared_gen, dtype=torch.float64)
    check_state(data, "data")
    check_event_shape(model, data, "data")
    check_finite_tensor(data, "data")
    data = to_model_dtype(model, data)  # the library's dtype rule (models.mode)
    if isinstance(reference, torch.Tensor):
        reference = to_model_dtype(model, reference)
    if data.ndim < 2 or data.shape[0] < 2:
        raise ValueError(f"data must have shape (N, *D) with N >= 2, got {tuple(data.shape)}")
    if metrics is None:
        metrics = _auto_metrics(data, mixture)
    for m in metrics:
        check_choice("metrics", m, METRICS)
    if "mixture" in metrics and mixture is None:
        raise ValueError("metrics 'mixture' needs data given as a sdescore.toy.GaussianMixture")
    n = num_samples or data.shape[0]
    if n < world:
        raise ValueError(f"num_samples must be at least the world size {world}, got {n}")
    if world > 1:
        local_gen = torch.Generator(data.device).manual_seed(rank_seed(base))
    mine = _Share(world)

    # Samples: this rank's share.
    proc = (ProbabilityFlowODE if solver.process == "ode" else ReverseSDE)(sde, model)
    part = shard(n, world_size=world) if world > 1 else slice(0, n)
    res, sec = _timed(
        lambda: proc.sample(
            (part.stop - part.start, *data.shape[1:]),
            method=solver,
            generator=local_gen,
            device=data.device,
            dtype=data.dtype,
            return_info=True,
        )  # fmt: skip
    )
    mine.cost("sampling", res.nfe, sec)

    # Likelihood and ELBO on this rank's share of the held-out points.
    test = data if examples is None else data[:examples]
    if world > 1:
        test = test[shard(test.shape[0], world_size=world)]
    scored = test.shape[0] > 0
    if likelihood:
        run = partial(_likelihood, model, test, sde=sde, generator=local_gen, **lo)
        lr, sec = _timed(run) if scored else (None, 0.0)
        mine.cost("likelihood", 0 if lr is None else lr.nfe, sec)
        mine.values("nll", None if lr is None else -lr.log_prob)
        mine.values("bits_per_dim", None if lr is None else lr.bits_per_dim)
    run_elbo = elbo and isinstance(sde, GaussianSDE)
    if run_elbo:
        run = partial(_elbo, model, test, sde=sde, generator=local_gen, **eo)
        er, sec = _timed(run) if scored else (None, 0.0)
        # Per example, as the likelihood's: each of the bound's `samples` draws of (t, x_t) is
        # one network evaluation of that example (however the pairs are batched).
        mine.cost("elbo", 0 if er is None else er.samples, sec)
        mine.values("elbo_nll", None if er is None else er.nll_bound)
        mine.values("elbo_bits_per_dim", None if er is None else er.bits_per_dim)

    # The ranks meet here, after all their solves: the samples, then the sums and counts.
    x = gather(res.samples) if world > 1 else res.samples
    total = mine.combine(data.device)
    out = {}
    nfe, sec = total.cost("sampling")
    out["sampling"] = _row(
        nfe=nfe, seconds=sec, sampler=res.solver, n=n, world_size=world, unit="samples"
    )
    entries = [("nll", "likelihood", "nats"), ("bits_per_dim", "likelihood", "bits/dim")]
    entries += [("elbo_nll", "elbo", "nats"), ("elbo_bits_per_dim", "elbo", "bits/dim")]
    for key, stage, unit in entries:
        if (stage == "likelihood" and likelihood) or (stage == "elbo" and run_elbo):
            nfe, sec = total.cost(stage)
            mean, se = total.mean_se(key)
            out[key] = _row(mean, stderr=se, nfe=nfe, seconds=sec, unit=unit)

    # Sample metrics on all the samples (every rank the same): their NFE is the sampler's.
    for name in metrics:
        (vals, sec) = _timed(
            lambda name=name: _metric(name, x, data, reference, mixture, shared_gen)
        )
        for key, m in vals.items():
            out[key] = _row(
                m.value, stderr=m.stderr, floor=m.floor, nfe=out["sampling"]["nfe"], seconds=sec
            )
    return (out, x) if return_samples else out


def _sampler(sampler):
    """The sampling solver object for `evaluate`'s `sampler` (see there)."""
    from ..solvers.table import METHODS, get_solver

    if isinstance(sampler, str) and sampler in SAMPLERS:
        return get_solver("auto" if sampler == "ode" else "euler_maruyama", sampler)
    if isinstance(sampler, str) and sampler not in METHODS["ode"]:
        if sampler not in METHODS["sde"]:
            valid = [*SAMPLERS, *METHODS["ode"], *METHODS["sde"]]
            raise ValueError(f"sampler must be one of {valid} or a solver object, got {sampler!r}")
        return get_solver(sampler, "sde", what="sampler")
    process = getattr(sampler, "process", "ode")
    return get_solver(sampler, process if process in METHODS else "ode", what="sampler")


def _options(name: str, value) -> tuple[dict, bool]:
    """`(options, on)` from `True`/`False` or a dict of options (on)."""
    if isinstance(value, bool):
        return {}, value
    if isinstance(value, dict):
        return dict(value), True
    raise TypeError(f"{name} must be a bool or a dict of options, got {type(value).__name__}")


def _world_size(distributed) -> int:
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be None or a bool, got {type(distributed).__name__}")
    if distributed is None:
        distributed = is_distributed()
    if distributed and not is_distributed():
        raise ValueError(
            "distributed=True needs an initialised process group of more than one process "
            "(launch with torchrun and open sdescore.distributed.process_group()), got none"
        )
    return dist_env().world_size if distributed else 1


def _broadcast_seed(generator) -> int:
    """One seed for all ranks: rank 0's draw from `generator` (or torch's global stream)."""
    seed = torch.randint(0, 2**62, (1,), generator=generator, dtype=torch.int64)
    if dist.get_backend() == "nccl":  # nccl moves CUDA tensors only
        seed = seed.cuda()
    dist.broadcast(seed, src=0)
    return int(seed.item())


class _Share:
    """This rank's per-example sums and per-stage costs, combined over ranks in one all-reduce.

    Sums are float64 (thousands of bits/dim values in float32 would lose digits). Each rank fills
    its own row of a `(world, columns)` table; summing the tables (the all-reduce) gives every
    rank every row, from which the sums and the slowest rank's costs are read.
    """

    def __init__(self, world: int):
        self.world = world
        self.columns: dict[str, list[float] | torch.Tensor] = {}

    def cost(self, stage: str, nfe: int, seconds: float) -> None:
        self.columns[stage] = [float(nfe), float(seconds)]

    def values(self, key: str, v: torch.Tensor | None) -> None:
        if v is None:
            self.columns[key] = [0.0, 0.0, 0.0]
        else:  # stays on the device: one sync when the combined table is read
            v = v.detach().double()
            self.columns[key] = torch.stack([v.sum(), v.square().sum(), v.new_tensor(len(v))])

    def combine(self, device) -> _Totals:
        flat = [
            torch.as_tensor(c, dtype=torch.float64, device=device) for c in self.columns.values()
        ]
        row = torch.cat(flat)
        table = row.new_zeros(self.world, row.numel())
        table[dist_env().rank if self.world > 1 else 0] = row
        if self.world > 1:
            dist.all_reduce(table)  # the one all-reduce: after every rank's solves
        rows, start, per_rank = table.tolist(), 0, {}
        for key, c in self.columns.items():
            per_rank[key] = [r[start : start + len(c)] for r in rows]
            start += len(c)
        return _Totals(per_rank)


class _Totals:
    """The combined table of `_Share`: `{column: [this column's entries, one list per rank]}`."""

    def __init__(self, per_rank: dict[str, list[list[float]]]):
        self.per_rank = per_rank

    def cost(self, stage: str) -> tuple[int, float]:
        """The largest NFE and the slowest wall time over the ranks."""
        rows = self.per_rank[stage]
        return int(max(r[0] for r in rows)), max(r[1] for r in rows)

    def mean_se(self, key: str) -> tuple[float, float]:
        """Mean over all examples of all ranks and its standard error (unbiased std, as torch)."""
        s1, s2, n = (sum(r[k] for r in self.per_rank[key]) for k in range(3))
        mean = s1 / n
        if n < 2:
            return mean, float("nan")
        return mean, math.sqrt(max(s2 - s1 * mean, 0.0) / (n - 1) / n)


def _metric(name, x, data, reference, mixture, generator) -> dict:
    if name == "sw2":
        return {"sw2": sliced_wasserstein(x, data, reference=reference, generator=generator)}
    if name == "mmd":
        return {"mmd2": mmd(x, data, reference=reference, generator=generator)}
    if name == "mixture":
        return mixture_metrics(x, mixture, generator=generator)
    from . import image  # the torchmetrics path, imported only when asked for

    with image.model_samples():  # the model's samples: a warning if far outside [-1, 1]
        return _image_metric(image, name, x, data, reference, generator)


def _image_metric(image, name, x, data, reference, generator) -> dict:
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
    """The dict returned by `evaluate` as a plain-text table (value ± stderr, floor, NFE, time).

    Raises:
        TypeError: `results` is not a dict of dicts (`{name: {"value": ..., ...}}`).
    """
    if not isinstance(results, dict) or not all(isinstance(r, dict) for r in results.values()):
        bad = (
            results
            if not isinstance(results, dict)
            else next(r for r in results.values() if not isinstance(r, dict))
        )
        raise TypeError(
            "results must be the dict evaluate returns, {name: {'value': ..., ...}}, got "
            f"{'a dict holding ' if isinstance(results, dict) else ''}{type(bad).__name__}"
        )

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
