r"""Maximum mean discrepancy with a Gaussian kernel (Gretton et al. 2012).

The unbiased estimator (Gretton et al. 2012, Lemma 6, $\mathrm{MMD}^2_u$) with the kernel
$k(x, y) = \exp(-\|x - y\|^2 / (2h^2))$, the bandwidth $h$ by default the median pairwise
distance of the pooled sample (the median heuristic), and a permutation p-value for the null
hypothesis that both samples come from one law. Because the median heuristic is a symmetric
function of the pooled sample, the estimator stays exactly unbiased (mean 0) under that null.
"""

from __future__ import annotations

import torch

from .._checks import check_generator, check_int, check_real
from ._common import SampleMetric, check_pair

__all__ = ["mmd", "mmd_squared"]


def _gram(z: torch.Tensor, bandwidth: float | None):
    d2 = torch.cdist(z, z).square()
    if bandwidth is None:
        n = z.shape[0]
        off = d2[~torch.eye(n, dtype=torch.bool, device=z.device)]
        bandwidth = off.sqrt().median().item()
        if bandwidth == 0:
            raise ValueError(
                "mmd: the median pairwise distance is 0 (constant data); pass bandwidth="
            )
    k = torch.exp(-d2 / (2 * bandwidth**2))
    k.fill_diagonal_(0)  # the unbiased estimator leaves out i = j pairs
    return k, bandwidth


def _mmd2_from_labels(k: torch.Tensor, s: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """MMD²_u for label rows `s: (P, N+M)` (1 marks the first sample), `(P,)`."""
    ks = s @ k  # (P, N+M); k has a zero diagonal
    xx = (ks * s).sum(1)
    xy = (ks * (1 - s)).sum(1)
    yy = k.sum() - 2 * xy - xx
    return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m)


def mmd_squared(x: torch.Tensor, y: torch.Tensor, *, bandwidth: float | None = None):
    """Unbiased $\\mathrm{MMD}^2_u$ between `x: (N, *D)` and `y: (M, *D)`; `(value, bandwidth)`.

    Raises:
        ValueError, TypeError: for fewer than 2 points, different point shapes, NaN/Inf, or a
            non-positive bandwidth.
    """
    xf, yf = check_pair(x, y)
    if bandwidth is not None:
        bandwidth = check_real("bandwidth", bandwidth, positive=True)
    z = torch.cat([xf, yf.to(xf.dtype)])
    k, h = _gram(z, bandwidth)
    s = torch.cat([z.new_ones(xf.shape[0]), z.new_zeros(yf.shape[0])])[None]
    return _mmd2_from_labels(k, s, xf.shape[0], yf.shape[0])[0], h


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    bandwidth: float | None = None,
    permutations: int = 200,
    reference: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SampleMetric:
    r"""Unbiased squared MMD between samples `x` and real data `y`, with a permutation p-value.

    Cost: a pooled $(N+M)^2$ Gram matrix and `permutations` matrix-vector products with it.

    Args:
        x: `(N, *D)` samples (N >= 2).
        y: `(M, *D)` real data (M >= 2).
        bandwidth: kernel bandwidth $h$; default the median heuristic on the pooled sample.
        permutations: label permutations for the p-value (0 for none).
        reference: optional `(R, *D)` real data independent of `y`; the floor is the metric
            between its first `min(R, N)` rows and `y` (each with its own median bandwidth).
        generator: `torch.Generator` for the permutations.

    Returns:
        `SampleMetric` named `"mmd2"`: `value` $\mathrm{MMD}^2_u$ (can be slightly negative),
        `stderr` the standard deviation of the permutation null (the scale of its noise),
        `floor`, and `extra` with `"p_value"` ($(1 + \#\{\text{perm} \ge \text{obs}\}) /
        (1 + P)$) and `"bandwidth"`.

    Raises:
        ValueError, TypeError: as for `mmd_squared`, or a negative `permutations`.
    """
    xf, yf = check_pair(x, y)
    check_generator("generator", generator)
    permutations = check_int("permutations", permutations, minimum=0)
    if bandwidth is not None:
        bandwidth = check_real("bandwidth", bandwidth, positive=True)
    n, m = xf.shape[0], yf.shape[0]
    z = torch.cat([xf, yf.to(xf.dtype)])
    k, h = _gram(z, bandwidth)
    s = torch.cat([z.new_ones(n), z.new_zeros(m)])[None]
    value = _mmd2_from_labels(k, s, n, m)[0].item()
    extra = {"bandwidth": h, "p_value": None}
    se = None
    if permutations:
        perm = torch.argsort(
            torch.rand(permutations, n + m, generator=generator, device=z.device), dim=1
        )
        null = _mmd2_from_labels(k, s[0][perm], n, m)
        extra["p_value"] = (1 + (null >= value).sum().item()) / (1 + permutations)
        se = null.std().item()
    floor = None
    if reference is not None:
        rf, _ = check_pair(reference, y, ("reference", "y"))
        floor = mmd_squared(rf[:n], yf, bandwidth=bandwidth)[0].item()
        extra["floor_n"] = min(rf.shape[0], n)
    return SampleMetric("mmd2", value, floor, se, n, extra)
