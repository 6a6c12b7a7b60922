"""Helpers shared by the example scripts (not part of the library)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
import time
import warnings

import torch
import torch.distributed as dist

from sdescore.distributed import gather, process_group, rank_seed, shard


def default_threads() -> int:
    """torch CPU threads for these small networks: 2 on idle cores, 1 on a busy machine.

    Measured (toy_2d.py default run, pinned to 2 idle cores): 71 s with 2 threads, 156 s with 1.
    But torch's OpenMP threads spin-wait for each other when they get no core: on a loaded
    2-core machine one small U-Net step took 27 s with 2 threads and 0.6 s with 1.
    Under `torchrun` the node's ranks share the cores: each gets its part (at least 1).
    """
    cores = os.cpu_count() or 1
    idle = cores - os.getloadavg()[0]
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, min(2, round(idle)) // ranks)


def add_run_options(
    p, *, out: str, quick: str = "CI-sized run", device: bool = True, threads: int | None = None
) -> None:
    """The options every example shares: `--seed`, `--device` (unless `device=False`), `--out`
    (default `out`), `--quick` (`quick` is its help), `--no-plots` and `--threads` (default
    `threads`, else `default_threads()`)."""
    p.add_argument("--seed", type=int, default=0)
    if device:
        p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--out", default=out, help="output directory (created)")
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--no-plots", action="store_true", help="write metrics.json only")
    p.add_argument(
        "--threads",
        type=int,
        default=default_threads() if threads is None else threads,
        help="torch CPU threads (default: 2 on idle cores, 1 on a busy machine, where more "
        "threads make these small networks many times slower)"
        if threads is None
        else f"torch CPU threads (default {threads})",
    )


def histogram_tv(x: torch.Tensor, y: torch.Tensor, *, limit: float = 4.8, bins: int = 30) -> float:
    """Total-variation distance between the 2-D histograms of two point sets `(n, 2)`.

    Sliced distances see only 1-D projections and miss structure such as concentric rings
    (a uniform disc has almost the same projections); a histogram with bins finer than that
    structure does not.
    """
    edges = torch.linspace(-limit, limit, bins + 1, dtype=torch.float64)

    def hist(p):
        p = p.double().cpu()
        h = torch.histogramdd(p, bins=[edges, edges]).hist
        return h / len(p)

    return 0.5 * (hist(x) - hist(y)).abs().sum().item()


class Phase:
    """One line per phase of an example: its name when it starts, its wall time when it ends.

    `with Phase("sampling: PF ODE") as ph: ...` prints `sampling: PF ODE ...` at once (flushed,
    so a long phase is never a silent terminal) and ` 12.3 s` when the block ends; `ph.seconds`
    holds the time. Printed to stdout, so rank > 0 of torchrun prints nothing.
    """

    def __init__(self, label: str):
        self.label, self.seconds = label, float("nan")

    def __enter__(self) -> Phase:
        print(f"{self.label} ...", end="", flush=True)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start
        print(f" {self.seconds:.1f} s" if exc[0] is None else " failed", flush=True)
        sys.stdout.flush()


def data_reference(draw, n: int, metrics: dict, *, pairs: int = 8) -> dict:
    """What exact data scores on each metric: its mean and sd over `pairs` independent draws.

    `draw(n)` returns `n` fresh points of the data's law; each metric `fn(a, b)` compares a set
    `a` of `n` points (in the role of the samples) with a set `b` of `n` points (the role of the
    fresh data). A sampler that draws the data's law exactly scores `mean` give or take `sd` (its
    spread over independent sets of this size): that is the reference to compare with. It is not
    a floor: a single value falls below `mean` about half the time, by chance; only a value many
    `sd` above it says the samples differ from the data.

    Returns:
        `{name: {"mean": float, "sd": float}}`, plus `"pairs"` and `"points_per_set"`.
    """
    values: dict = {name: [] for name in metrics}
    for _ in range(pairs):
        a, b = draw(n), draw(n)
        for name, fn in metrics.items():
            values[name].append(float(fn(a, b)))
    ref = {}
    for name, v in values.items():
        t = torch.tensor(v, dtype=torch.float64)
        ref[name] = {"mean": t.mean().item(), "sd": t.std().item()}
    return {**ref, "pairs": pairs, "points_per_set": n}


def quick_mark(quick: bool) -> str:
    """The mark a figure of a `--quick` run carries in its title (its numbers are not results)."""
    return " [--quick run: CI-sized, not converged]" if quick else ""


@dataclasses.dataclass(frozen=True)
class Launch:
    """Where an example runs: one process (`python examples/x.py`) or one rank of `torchrun`.

    `is_main` (rank 0) alone prints and writes files. `sample` and `sharded` split a batch
    over the ranks and gather the results; in a world of one they are the plain call, so a
    single-process run is bit for bit what it was without them.
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def fork(self, generator: torch.Generator | None) -> torch.Generator | None:
        """A stream of this rank's own, seeded from one draw of `generator` (or of torch's
        global stream), which every rank makes alike; in a world of one, `generator` itself."""
        if self.world_size == 1:
            return generator
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        device = generator.device if generator is not None else self.device
        return torch.Generator(device).manual_seed(rank_seed(seed, self.rank))

    def sample(self, process, shape, *, generator=None, **options):
        """`process.sample(shape, ...)`, each rank drawing its share of `shape[0]` with its own
        stream; the samples (and trajectories) of all ranks, in rank order, on every rank."""
        if self.world_size == 1:
            return process.sample(shape, generator=generator, **options)
        n = shape[0]
        part = shard(n, self.rank, self.world_size)
        local = (part.stop - part.start, *shape[1:])
        res = process.sample(local, generator=self.fork(generator), **options)
        if isinstance(res, torch.Tensor):
            return gather(res)
        traj = res.trajectory
        if traj is not None:  # (S, B, *D): gather along the batch
            traj = gather(traj.movedim(1, 0)).movedim(0, 1)
        return dataclasses.replace(res, samples=gather(res.samples), trajectory=traj)

    def sharded(self, fn, model, x: torch.Tensor, *, generator=None, **options):
        """`fn(model, x, generator=..., **options)` for a per-example `fn` returning a dataclass
        (`sdescore.likelihood`, `sdescore.elbo`): each rank its shard of `x` with its own
        stream; per-example tensors gathered in rank order, counts (`nfe`) the largest."""
        if self.world_size == 1:
            return fn(model, x, generator=generator, **options)
        part = x[shard(x.shape[0], self.rank, self.world_size)]
        res = fn(model, part, generator=self.fork(generator), **options)
        fields = {}
        for f in dataclasses.fields(res):
            v = getattr(res, f.name)
            if isinstance(v, torch.Tensor) and v.ndim >= 1:
                fields[f.name] = gather(v)
            elif isinstance(v, int) and not isinstance(v, bool):
                top = torch.tensor([v], device=self.device)
                dist.all_reduce(top, op=dist.ReduceOp.MAX)
                fields[f.name] = int(top.item())
        return dataclasses.replace(res, **fields)


@contextlib.contextmanager
def launch(device: str = "cpu"):
    """Run an example as one process or as one rank of `torchrun` (gloo on the CPU, nccl on
    CUDA); yields a `Launch`.

    Under `torchrun` the process group lives for the whole block (training under DDP, then the
    sharded sampling and likelihood); ranks other than 0 print nothing and warn nothing (their
    errors still surface: they propagate out of the block).
    """
    with process_group(device) as where:
        dev = torch.device(device)
        if dev.type == "cuda" and where.world_size > 1:
            dev = torch.device("cuda", where.local_rank)
        run = Launch(where.rank, where.world_size, dev)
        if run.is_main:
            yield run
            return
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            yield run
