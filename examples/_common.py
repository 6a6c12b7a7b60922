"""Helpers shared by the example scripts (not part of the library)."""

from __future__ import annotations

import os

import torch


def default_threads() -> int:
    """torch CPU threads for these small networks: 2 on idle cores, 1 on a busy machine.

    Measured (toy_2d.py default run, pinned to 2 idle cores): 71 s with 2 threads, 156 s with 1.
    But torch's OpenMP threads spin-wait for each other when they get no core: on a loaded
    2-core machine one small U-Net step took 27 s with 2 threads and 0.6 s with 1.
    """
    cores = os.cpu_count() or 1
    idle = cores - os.getloadavg()[0]
    return max(1, min(2, round(idle)))


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
