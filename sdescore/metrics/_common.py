"""Shared pieces of the sample metrics: input checks and the result type."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .._checks import check_finite_tensor

__all__ = ["SampleMetric", "check_pair", "check_samples"]


@dataclass(frozen=True)
class SampleMetric:
    """A sample-based metric with its finite-sample floor.

    Attributes:
        name: what was measured, e.g. `"sw2"`.
        value: the metric between the samples and the real data.
        floor: the same metric between an independent real set of the samples' size (the
            `reference`) and the real data: what a perfect model would score at this size,
            or `None` when no reference was given.
        stderr: Monte Carlo standard error of `value` where the metric has one, else `None`.
        n: number of samples the value used.
        extra: metric-specific numbers (a p-value, the floor's own size, ...).
    """

    name: str
    value: float
    floor: float | None = None
    stderr: float | None = None
    n: int = 0
    extra: dict = field(default_factory=dict)


def check_samples(x, name: str, *, min_samples: int = 2) -> torch.Tensor:
    """A set of points `(N, *D)` with `N >= min_samples`, floating point and finite."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, *D), got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (N, *D) with N points, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] < min_samples:
        raise ValueError(f"{name} must hold at least {min_samples} samples, got {x.shape[0]}")
    check_finite_tensor(x, name)
    return x


def check_pair(x, y, names=("x", "y"), *, min_samples: int = 2):
    """Two point sets with the same trailing shape, flattened to `(N, d)` and `(M, d)`."""
    check_samples(x, names[0], min_samples=min_samples)
    check_samples(y, names[1], min_samples=min_samples)
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same point shape, got "
            f"{tuple(x.shape[1:])} and {tuple(y.shape[1:])}"
        )
    return x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
