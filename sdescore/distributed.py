"""Several processes: torchrun/DDP detection, rank-dependent randomness, sharded evaluation.

Everything here is plain `torch.distributed`: launch with `torchrun` (or `torch.multiprocessing`,
or SLURM setting the same variables), and the library reads `RANK`, `WORLD_SIZE` and
`LOCAL_RANK` from the environment. The helpers shard *data*, never a solve: each rank runs the
ordinary single-process `sdescore.likelihood` or sampler on its share, and the ranks meet once
at the end (one all-reduce, or one gather). An adaptive solver takes a different number of steps
on every rank, so a collective inside its loop would deadlock; there is none.

Without an initialised process group every helper behaves as a world of one process (rank 0),
so code written for several ranks runs unchanged as `python script.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import os

import torch
import torch.distributed as dist

from ._checks import check_int, check_real, check_seed
from .likelihood import LikelihoodResult, likelihood

__all__ = [
    "DistEnv",
    "ShardedLikelihood",
    "backend_for",
    "env",
    "gather",
    "is_distributed",
    "process_group",
    "rank_generator",
    "rank_seed",
    "shard",
    "sharded_likelihood",
    "sharded_sample",
]

# A SplitMix64 increment: rank r's seed is seed + r * _GOLDEN mod 2**64, so rank 0 keeps `seed`
# (a world of one reproduces single-process runs bit for bit) and ranks get well-separated seeds.
_GOLDEN = 0x9E3779B97F4A7C15


@dataclasses.dataclass(frozen=True)
class DistEnv:
    """Where this process stands: `rank` in `[0, world_size)`, `local_rank` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def env() -> DistEnv:
    """This process's rank and world size.

    From the initialised process group if there is one, else from the launcher's environment
    variables `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (set by `torchrun`), else a world of one.

    Raises:
        ValueError: the environment variables are not integers or are inconsistent.
    """
    local = _env_int("LOCAL_RANK", 0)
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), local)
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(
            f"RANK={rank} and WORLD_SIZE={world} from the environment are inconsistent"
        )
    return DistEnv(rank, world, local)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def backend_for(device) -> str:
    """`"nccl"` for a CUDA device, `"gloo"` otherwise (CPU)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(device=None, *, timeout: float = 600.0):
    """Create the process group from the launcher's environment, and destroy it on exit.

    Under `torchrun` (`WORLD_SIZE` set) this calls `init_process_group` with the backend of
    `device` (`backend_for`), sets the CUDA device to `cuda:LOCAL_RANK` for a CUDA device without
    an index, and yields the `DistEnv`. Without a launcher, or when a group already exists (then
    it is left alone on exit: its creator owns it), it just yields the `DistEnv`.

    A rank that raises leaves the block (the group is destroyed) and exits non-zero; `torchrun`
    and `torch.multiprocessing.spawn` then stop the other ranks, so nobody waits on a
    collective for more than `timeout` seconds even with a custom launcher.

    Args:
        device: the training/evaluation device (chooses gloo or nccl); default CUDA if available.
        timeout: seconds a collective may wait for the other ranks before failing, > 0.

    Raises:
        ValueError, TypeError: `timeout` not a finite number > 0.

    Example:
        >>> with sdescore.distributed.process_group("cuda") as where:  # doctest: +SKIP
        ...     result = sdescore.train(model, data, steps=1000)
    """
    timeout = check_real("timeout", timeout, positive=True)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    where = env()
    created = False
    if where.world_size > 1 and not dist.is_initialized():
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        if device.type == "cuda":
            torch.cuda.set_device(device if device.index is not None else where.local_rank)
        dist.init_process_group(
            backend_for(device), timeout=datetime.timedelta(seconds=float(timeout))
        )
        created = True
    try:
        yield env()
        if created:
            # Objects that hold the group (a finished run's DDP wrapper, in a reference cycle)
            # must go while it is alive: freed after destroy_process_group, at exit, they
            # aborted a rank now and then ("terminate called without an active exception").
            gc.collect()
            # Leave together: a rank tearing down its connections while a peer is still in
            # its last collective can abort that peer (gloo). Not on an error: nobody would come.
            dist.barrier()
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def rank_seed(seed: int, rank: int | None = None) -> int:
    """The seed of rank `rank` (default: this process's) derived from `seed`; rank 0 keeps `seed`.

    Raises:
        ValueError: `seed` outside `[0, 2**64)` (a larger one would wrap onto another seed's
            stream: `2**70` onto 0), or a negative `rank`.
    """
    seed = check_seed("seed", seed)
    rank = env().rank if rank is None else check_int("rank", rank, minimum=0)
    return (seed + rank * _GOLDEN) % 2**64


def rank_generator(seed: int, device=None) -> torch.Generator:
    """A `torch.Generator` on `device` seeded with `rank_seed(seed)`: a different stream per rank,
    the same for a fixed seed and rank (so results are reproducible for a fixed world size)."""
    return torch.Generator(device if device is not None else "cpu").manual_seed(rank_seed(seed))


def shard(n: int, rank: int | None = None, world_size: int | None = None) -> slice:
    """The contiguous share of `range(n)` that `rank` takes: sizes differ by at most one.

    Args:
        n: number of items (examples of a batch or of a data set).
        rank, world_size: default this process's.

    Returns:
        A `slice`; rank r gets `[r*n//W, (r+1)*n//W)` (empty when `n < W` for some ranks).
    """
    where = env()
    rank = where.rank if rank is None else rank
    world = where.world_size if world_size is None else world_size
    n = check_int("n", n, minimum=0)
    world = check_int("world_size", world)
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    return slice(rank * n // world, (rank + 1) * n // world)


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `x: (B_r, *D)` along dim 0 in rank order, on every rank.

    The shares may differ in size (padded for the all-gather, trimmed after). Without a process
    group this returns `x`. Two collectives (sizes, then data); never call it inside a solver.
    """
    if not is_distributed():
        return x
    world = dist.get_world_size()
    sizes = torch.tensor([x.shape[0]], device=x.device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
    dist.all_gather(all_sizes, sizes)
    counts = [int(s) for s in torch.cat(all_sizes).tolist()]
    top = max(counts)
    padded = x.new_zeros((top, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])


@dataclasses.dataclass(frozen=True)
class ShardedLikelihood:
    """What `sharded_likelihood` returns (the same on every rank, except `local`).

    Attributes:
        log_prob: mean log-density over the whole data set, nats.
        bits_per_dim: mean bits/dim over the whole data set.
        bits_per_dim_stderr: standard error of that mean across examples.
        n: number of examples over all ranks.
        nfe: network evaluations summed over all ranks.
        local: this rank's `LikelihoodResult` for its shard (None for an empty shard).
    """

    log_prob: float
    bits_per_dim: float
    bits_per_dim_stderr: float
    n: int
    nfe: int
    local: LikelihoodResult | None


def sharded_likelihood(model, x: torch.Tensor, *, seed: int = 0, **options) -> ShardedLikelihood:
    """Mean log-likelihood / bits per dim of a data set, each rank solving its share.

    Every rank passes the same `x` (the whole set, e.g. memory-mapped) and takes `shard(N)`
    of it; it runs `sdescore.likelihood` on that share with a rank-dependent generator
    (`rank_generator(seed)`, for the probes and dequantization), then one all-reduce of the
    sums and counts combines the ranks. There is no collective inside the adaptive solve.

    The figure equals a single-process `likelihood(model, x).bits_per_dim.mean()` to within the
    solver tolerance (adaptive steps are shared by a batch, so each example's value depends on
    its batch at the level of `rtol`/`atol`) and, with Hutchinson, within its Monte Carlo error.

    Args:
        model: a `ScoreModel`, or a score callable with `sde=` in `options`.
        x: `(N, *D)` the whole data set, the same on every rank (integer levels with `dequantization=`).
        seed: seeds this rank's generator (reproducible for a fixed seed and world size).
        **options: `sdescore.likelihood`'s keyword arguments (`estimator`, `rtol`, `bins`,
            `batch_size`, ...), except `generator`.

    Returns:
        A `ShardedLikelihood`, identical on every rank.

    Raises:
        TypeError: `generator=` given (use `seed=`), or what `likelihood` raises.
    """
    if "generator" in options:
        raise TypeError("sharded_likelihood takes seed=, not generator= (one stream per rank)")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor (N, *D), got {type(x).__name__}")
    part = x[shard(x.shape[0])]
    local = None
    # float64 accumulators: sums of thousands of bits/dim values in float32 lose digits.
    stats = torch.zeros(5, dtype=torch.float64, device=x.device)
    if part.shape[0] > 0:
        local = likelihood(model, part, generator=rank_generator(seed, x.device), **options)
        bpd = local.bits_per_dim.double()
        stats = torch.stack(
            [
                local.log_prob.double().sum(),
                bpd.sum(),
                bpd.square().sum(),
                bpd.new_tensor(float(part.shape[0])),
                bpd.new_tensor(float(local.nfe)),
            ]
        )
    if is_distributed():
        dist.all_reduce(stats)  # the one collective: after every rank's solves are done
    log_prob, s1, s2, n, nfe = stats.tolist()
    if n == 0:
        raise ValueError("x is empty on every rank: nothing to evaluate")
    mean = s1 / n
    var = max(s2 / n - mean * mean, 0.0) * n / max(n - 1, 1)
    return ShardedLikelihood(log_prob / n, mean, (var / n) ** 0.5, int(n), int(nfe), local)


def sharded_sample(process, shape, *, seed: int = 0, device=None, **options) -> torch.Tensor:
    """Draw `shape[0]` samples across ranks and gather them (on every rank, rank order).

    Rank r draws its `shard(N)` with `process.sample((n_r, *D), generator=rank_generator(seed))`
    (a `ReverseSDE` or `ProbabilityFlowODE`, any method); the result is reproducible for a
    fixed seed and world size (a different world size draws other, equally valid, samples).

    Args:
        process: anything with `sample(shape, *, generator=..., device=..., **options)`.
        shape: `(N, *D)`, the total over all ranks.
        seed: seeds each rank's generator.
        device: where to sample (default CUDA `LOCAL_RANK` if available, else CPU).
        **options: the sampler's options (`method`, `steps`, ...), except `generator`.

    Returns:
        `(N, *D)` samples, on every rank.

    Raises:
        ValueError: fewer samples than ranks.
        TypeError: `generator=` or `return_info=` given, or `process` has no `sample` method
            (a score function, say).
    """
    if "generator" in options or "return_info" in options:
        raise TypeError("sharded_sample takes seed= (one stream per rank) and returns samples only")
    if not callable(getattr(process, "sample", None)):
        raise TypeError(
            "process must have a sample(shape, *, generator=..., device=...) method (a "
            "ReverseSDE or ProbabilityFlowODE: sde.reverse(score_fn) or "
            f"sde.probability_flow(score_fn)), got {type(process).__name__}"
        )
    shape = tuple(shape)
    if not shape:
        raise ValueError("shape must be (N, *D), got ()")
    n = check_int("shape[0]", shape[0])
    world = env().world_size
    if n < world:
        raise ValueError(f"shape[0] must be at least the world size {world}, got {n}")
    if device is None:
        device = f"cuda:{env().local_rank}" if torch.cuda.is_available() else "cpu"
    s = shard(n)
    local_n = s.stop - s.start
    gen = rank_generator(seed, device)
    x = process.sample((local_n, *shape[1:]), generator=gen, device=device, **options)
    return gather(x)
