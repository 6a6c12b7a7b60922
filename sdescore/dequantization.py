r"""Discrete data under a continuous model: uniform dequantization and bits per dimension.

Uniform dequantization turns levels $k \in \{0, \dots, n-1\}^d$ into points of the model's
continuous data range; Jensen's inequality then gives a lower bound on the probability of the
bin (Theis et al. 2016). The derivation of the bits/dim offset is in `dequantize`.
"""

from __future__ import annotations

import math
import warnings

import torch

from ._checks import (
    check_choice,
    check_dtype,
    check_finite_tensor,
    check_generator,
    check_int,
    check_real,
    check_state,
    is_int,
)

__all__ = ["Dequantization", "as_dequantization", "bits_per_dim", "dequantize", "quantize"]


class Dequantization:
    r"""How `likelihood` and `elbo` treat discrete data: levels `0 .. bins - 1` uniformly
    dequantized onto `data_range` (see `dequantize` for the bound and the bits/dim offset).

    `likelihood(model, levels, dequantization=256)` is short for
    `dequantization=Dequantization(256)`.

    Args:
        bins: the number of levels n >= 2 (256 for 8-bit images).
        data_range: `(a, b)`, the continuous interval the model's data live on (default
            `(-1, 1)`).
        samples: S >= 1 dequantization draws per example; for S > 1 they are combined by the
            importance-weighted bound $\log P(k) \ge \log\frac1S\sum_s p(y_s) + d\log w$
            (Burda et al. 2016, Theorem 1), tighter than S = 1 and never looser on average. With
            Hutchinson it needs `probes >= 2` (each draw's estimate is corrected by half its
            estimated variance, which the log-mean-exp would otherwise add).

    Raises:
        ValueError, TypeError: a bad option, named in the message.
    """

    def __init__(self, bins: int, *, data_range=(-1.0, 1.0), samples: int = 1):
        self.bins, self.data_range = check_bins(bins, data_range)
        self.samples = check_int("samples", samples)

    def __repr__(self) -> str:
        return (
            f"Dequantization(bins={self.bins}, data_range={self.data_range}, "
            f"samples={self.samples})"
        )

    def __eq__(self, other) -> bool:
        return isinstance(other, Dequantization) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((self.bins, self.data_range, self.samples))


def as_dequantization(value) -> Dequantization | None:
    """`None` (continuous data), a `Dequantization`, or one from a number of bins.

    Raises:
        TypeError: another type.
    """
    if value is None or isinstance(value, Dequantization):
        return value
    if is_int(value):
        return Dequantization(value)
    raise TypeError(
        "dequantization must be None (continuous data), a number of bins (e.g. 256) or "
        f"sdescore.Dequantization(bins, data_range=..., samples=...), got {type(value).__name__}"
    )


def bits_per_dim(log_prob: torch.Tensor, dim: int) -> torch.Tensor:
    r"""Convert a log-density in nats to bits per dimension: $-\log p / (d \ln 2)$.

    Args:
        log_prob: log-densities in nats, e.g. `(B,)`.
        dim: the number of dimensions $d$ of one example, an int >= 1.

    Raises:
        TypeError: `dim` is not an int (a float such as 3.5 included).
        ValueError: `dim` < 1 (0 would give Inf, a negative dim a sign flip).
    """
    dim = check_int("dim", dim)
    return -log_prob / (dim * math.log(2.0))


def dequantize(
    k: torch.Tensor, bins: int, data_range=(-1.0, 1.0), *, generator=None, dtype=None
) -> tuple[torch.Tensor, float]:
    r"""Uniformly dequantize integer levels into the model's continuous coordinates.

    Level $k \in \{0, \dots, n-1\}$ (`n = bins`) becomes $y = a + w (k + u)$ with
    $u \sim U[0, 1)^d$ and bin width $w = (b - a)/n$ for `data_range = (a, b)`, so that the bins
    tile $[a, b)$. Why this gives a bound: the probability of a bin is the model density
    integrated over its cell $C_k$ of volume $w^d$,

    $$P(k) = \int_{C_k} p(y)\,dy = w^d\,E_u\,p(a + w(k + u))
       \ \ge\ \exp\!\big(E_u \log p(y) + d\log w\big)$$

    by Jensen's inequality (Theis et al. 2016; Ho et al. 2019, eq. (3)). In bits per dimension,
    $-\log_2 P(k)/d \le -E_u\log p(y)/(d\ln 2) + \log_2(n/(b-a))$. The **offset**
    $\log_2(n / (b - a))$ is $\log_2(256/2) = 7$ for 8-bit data on $[-1, 1]$ (and 8 on $[0, 1]$):
    the "7 - inverse_scaler(-1)" of the 2021 code, where `inverse_scaler(-1)` is 0 for centred data
    and -1 for data on $[0, 1]$.

    Args:
        k: integer levels `(B, *D)` (an integer tensor, or floats holding whole numbers) in
            `[0, bins - 1]`.
        bins: number of levels n >= 2 (256 for 8-bit images).
        data_range: `(a, b)` with `a < b`, the interval the model's data live on.
        generator: optional `torch.Generator` for `u`.
        dtype: floating dtype of the result; default `k`'s if floating, else the default dtype.

    Returns:
        `(y, log_width)`: the dequantized point `(B, *D)` and $\log w$.
    """
    bins, (a, b) = check_bins(bins, data_range)
    check_generator("generator", generator)
    y = to_levels(k, bins, check_dtype("dtype", dtype))
    u = torch.rand(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    width = (b - a) / bins
    return a + width * (y + u), math.log(width)


def quantize(
    y: torch.Tensor, bins: int, data_range=(-1.0, 1.0), *, out_of_range: str = "warn"
) -> torch.Tensor:
    r"""Map continuous points back to integer levels: the inverse of `dequantize`.

    $k = \lfloor (y - a) / w \rfloor$ with $w = (b - a)/n$, so every point of the bin
    $[a + wk, a + w(k+1))$ that `dequantize` draws from returns level $k$. Points outside
    `data_range` (a model's samples may overshoot it) go to the nearest end level; how loudly is
    `out_of_range`'s choice.

    Args:
        y: continuous points `(B, *D)`, floating point, finite (e.g. samples of a model).
        bins: number of levels n >= 2.
        data_range: `(a, b)` with `a < b`, as given to `dequantize`.
        out_of_range: for points outside `[a, b]`: `"warn"` (clamp to the end levels and warn
            with how many and how far), `"clamp"` (clamp silently: overshoot is expected), or
            `"raise"` (a `ValueError`).

    Returns:
        `(B, *D)` levels as `torch.long`.

    Raises:
        ValueError: a bad `bins`/`data_range`/`out_of_range`, NaN/Inf in `y`, or with
            `out_of_range="raise"` a point outside `data_range`.
        TypeError: `y` is not a floating-point tensor.
    """
    bins, (a, b) = check_bins(bins, data_range)
    check_choice("out_of_range", out_of_range, ("warn", "clamp", "raise"))
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        got = y.dtype if isinstance(y, torch.Tensor) else type(y).__name__
        raise TypeError(f"y must be a floating-point tensor (B, *D), got {got}")
    check_finite_tensor(y, "y")
    if out_of_range != "clamp":
        outside = (y < a) | (y > b)
        count = int(outside.sum())
        if count:
            msg = (
                f"{count} of {y.numel()} values of y ({100 * count / y.numel():.3g} %) lie outside "
                f"data_range [{a}, {b}], from {y.min().item():.4g} to {y.max().item():.4g}"
            )
            if out_of_range == "raise":
                raise ValueError(msg)
            warnings.warn(
                f"{msg}; they were clamped to the end levels 0 and {bins - 1} (pass "
                "out_of_range='clamp' if overshoot is expected, or check data_range)",
                stacklevel=2,
            )
    width = (b - a) / bins
    return torch.floor((y - a) / width).clamp(0, bins - 1).long()


def check_continuous_data(x) -> None:
    """Continuous data `(B, *D)` for an evaluation entry point: floating, finite, B >= 1.

    Integer tensors are refused with a pointer to `bins=` (they are levels to dequantize).
    """
    if isinstance(x, torch.Tensor) and not x.is_floating_point() and not x.is_complex():
        raise TypeError(
            f"x has integer dtype {x.dtype}: for discrete levels pass dequantization=256 (the "
            "number of levels, for data on (-1, 1)) or "
            "dequantization=sdescore.Dequantization(256, data_range=(a, b)), so that they are "
            "dequantized onto the model's range"
        )
    check_state(x)
    check_finite_tensor(x)


def check_bins(bins, data_range) -> tuple[int, tuple[float, float]]:
    bins = check_int("bins", bins, minimum=2)
    if not isinstance(data_range, (tuple, list)) or len(data_range) != 2:
        raise ValueError(f"data_range must be a pair (a, b), got {data_range!r}")
    a = check_real("data_range[0]", data_range[0])
    b = check_real("data_range[1]", data_range[1])
    if not a < b:
        raise ValueError(f"data_range must satisfy a < b, got {data_range!r}")
    return bins, (a, b)


def to_levels(k, bins: int, dtype) -> torch.Tensor:
    if not isinstance(k, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of levels (B, *D), got {type(k).__name__}")
    if k.ndim < 1:
        raise ValueError("x must have a batch dimension, shape (B, *D); got a 0-d tensor")
    if dtype is None:
        dtype = k.dtype if k.is_floating_point() else torch.get_default_dtype()
    y = k.detach().to(dtype)
    if k.is_floating_point():
        check_finite_tensor(k, "x")
        if not bool((y == y.round()).all()):
            frac = (y - y.round()).abs().max().item()
            raise ValueError(
                f"with bins={bins}, x must hold the integer levels 0 .. {bins - 1}; got "
                f"non-integer values (up to {frac:.3g} from the nearest integer, range "
                f"[{y.min().item():.4g}, {y.max().item():.4g}]): pass levels, or continuous "
                "data without dequantization"
            )
    if not bool(((y >= 0) & (y <= bins - 1)).all()):
        raise ValueError(
            f"with bins={bins}, x must lie in [0, {bins - 1}], "
            f"got values in [{y.min().item()}, {y.max().item()}]"
        )
    return y
