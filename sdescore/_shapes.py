"""Broadcasting between per-example quantities `(B,)` and states `(B, *D)`.

This is the only module that knows how a per-example scalar meets a state of any rank; nothing
else in sdescore indexes with `[:, None, None]`.
"""

from __future__ import annotations

import torch

__all__ = ["append_dims", "batch_sum", "flat_dim"]


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """View `v` with trailing singleton dimensions so that it has `ndim` dimensions.

    Args:
        v: a tensor, typically per-example `(B,)`.
        ndim: the rank of the state it will multiply, e.g. `x.ndim` for `x: (B, *D)`.

    Returns:
        `v` viewed as `(*v.shape, 1, ..., 1)` with `ndim` dimensions in all.

    Raises:
        ValueError: if `v` already has more than `ndim` dimensions (never shrinks).
    """
    extra = ndim - v.ndim
    if extra < 0:
        raise ValueError(f"append_dims: cannot shrink a {v.ndim}-d tensor to {ndim} dimensions")
    return v.reshape(*v.shape, *([1] * extra))


def batch_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum `x: (B, *D)` over every non-batch dimension, giving `(B,)`."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def flat_dim(x: torch.Tensor) -> int:
    """Number of data dimensions `prod(D)` of a state `x: (B, *D)` (1 for `x: (B,)`)."""
    n = 1
    for s in x.shape[1:]:
        n *= s
    return n
