r"""Sliced Wasserstein-2 distance between two point sets (Bonneel et al. 2015).

$$SW_2^2(\mu, \nu) = \int_{S^{d-1}} W_2^2(\theta_\#\mu, \theta_\#\nu)\,d\sigma(\theta),$$

estimated by Monte Carlo over uniformly random directions $\theta$. Each 1-D $W_2^2$ between
empirical measures is exact: $\int_0^1 (F^{-1}(u) - G^{-1}(u))^2\,du$ with both quantile
functions piecewise constant, summed over the merged breakpoints $\{i/N\} \cup \{j/M\}$ (for
$N = M$ this is the mean squared difference of the sorted projections).
"""

from __future__ import annotations

import math

import torch

from .._checks import check_generator, check_int
from ._common import SampleMetric, check_pair

__all__ = ["sliced_wasserstein", "wasserstein2_1d"]


def wasserstein2_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact squared $W_2$ between the empirical measures of the rows' entries.

    Args:
        a: `(P, N)` P one-dimensional samples of size N.
        b: `(P, M)` P one-dimensional samples of size M.

    Returns:
        `(P,)` $W_2^2$ of each pair of rows, in the inputs' dtype.

    Raises:
        TypeError: `a` or `b` is not a floating-point tensor.
        ValueError: not 2-d, different numbers of rows P, or an empty sample (N or M = 0).
    """
    for name, v in (("a", a), ("b", b)):
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            got = v.dtype if isinstance(v, torch.Tensor) else type(v).__name__
            raise TypeError(f"{name} must be a floating-point tensor (P, N), got {got}")
        if v.ndim != 2 or v.shape[1] == 0:
            raise ValueError(
                f"{name} must have shape (P, N) with N >= 1 points per row, got {tuple(v.shape)}"
            )
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"a and b must have the same number of rows P, got {a.shape[0]} and {b.shape[0]}"
        )
    a, b = a.sort(dim=1).values, b.sort(dim=1).values
    n, m = a.shape[1], b.shape[1]
    if n == m:
        return (a - b).square().mean(1)
    # Quantile levels where either empirical quantile function jumps; on each interval both
    # are constant, so the integral is a weighted sum over the intervals' midpoints.
    opts = dict(dtype=torch.float64, device=a.device)
    u = torch.cat([torch.arange(1, n + 1, **opts) / n, torch.arange(1, m + 1, **opts) / m])
    u = torch.unique(u)  # sorted
    widths = torch.diff(u, prepend=u.new_zeros(1))
    mid = u - 0.5 * widths
    ia = (mid * n).floor().long().clamp(max=n - 1)
    ib = (mid * m).floor().long().clamp(max=m - 1)
    return ((a[:, ia] - b[:, ib]).square() * widths.to(a.dtype)).sum(1)


def _pow2_scale(*xs: torch.Tensor) -> float:
    """The smallest power of two above every |entry| (1 for all-zero data): dividing by it is
    exact in floating point."""
    top = max(x.abs().max().item() for x in xs)
    return 1.0 if top == 0 else math.ldexp(1.0, math.frexp(top)[1])


def sliced_wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    projections: int = 512,
    reference: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SampleMetric:
    r"""Sliced Wasserstein-2 distance $SW_2$ between samples `x` and real data `y`.

    The directions are drawn once (from `generator`) and shared by the value and the floor.

    Args:
        x: `(N, *D)` samples (N >= 2).
        y: `(M, *D)` real data.
        projections: number of random directions.
        reference: optional `(R, *D)` real data independent of `y`; the floor is the metric
            between its first `min(R, N)` rows and `y`.
        generator: `torch.Generator` for the directions.

    Returns:
        `SampleMetric` named `"sw2"`: `value` $= \sqrt{\overline{W_2^2}}$ over the
        directions (same units as the data), `stderr` its Monte Carlo error over the
        directions (delta method), `floor`, and `extra["sw2_squared"]` (a Python float: finite
        whenever the square fits float64, also for float32 data beyond $10^{19}$). The value
        and stderr are finite for any finite data: the computation runs in units of a power of
        two above the largest coordinate, which is exact.

    Raises:
        ValueError, TypeError: for fewer than 2 points, different point shapes, NaN/Inf.
    """
    xf, yf = check_pair(x, y, ("x", "y"))
    check_generator("generator", generator)
    projections = check_int("projections", projections, minimum=2)
    rf = None if reference is None else check_pair(reference, y, ("reference", "y"))[0]
    # Work in units of a power of two above the largest coordinate: exact for data of any
    # ordinary scale, and squared distances cannot overflow for large (finite) ones.
    scale = _pow2_scale(xf, yf, *(() if rf is None else (rf,)))
    xf, yf = xf / scale, yf / scale
    theta = torch.randn(
        yf.shape[1], projections, generator=generator, dtype=yf.dtype, device=yf.device
    )
    theta = theta / theta.norm(dim=0, keepdim=True)
    py = (yf @ theta).T

    def sw(z):
        w = wasserstein2_1d((z.to(yf.dtype) @ theta).T, py)
        mean = w.mean()
        root = mean.sqrt().item()
        se = w.std().item() / math.sqrt(projections) / (2 * max(root, 1e-300))
        return root * scale, se * scale, mean.item() * scale * scale

    value, se, sq = sw(xf)
    floor, extra = None, {"sw2_squared": sq, "projections": projections}
    if rf is not None:
        floor = sw(rf[: xf.shape[0]] / scale)[0]
        extra["floor_n"] = min(rf.shape[0], xf.shape[0])
    return SampleMetric("sw2", value, floor, se, xf.shape[0], extra)
