"""The Trainer's batches: minibatches drawn from a tensor, or cycled from an iterable."""

from __future__ import annotations

import torch

from .._checks import check_finite_tensor, check_label_tensor, check_state
from ..dequantization import check_bins, dequantize, to_levels
from ..distributed import shard

__all__ = ["BatchStream", "check_labels"]


class BatchStream:
    """The global batches of one run, with their labels, dequantized when asked.

    Tensor data: `batch_size` indices drawn with replacement by `generator` (the data generator,
    saved in checkpoints, so a resumed run draws the same batches). An iterable is cycled; an
    item is a tensor or a tuple/list whose first element is the batch (and second its labels,
    with `labels=True`).
    """

    def __init__(self, data, labels, bins, data_range, generator: torch.Generator):
        self.bins = self.data_range = None
        if bins is not None:
            self.bins, self.data_range = check_bins(bins, data_range)
        if isinstance(data, torch.Tensor):
            if data.ndim < 1 or data.shape[0] < 1:
                check_state(data, "data")  # the library-wide message for a missing batch
            if self.bins is not None:
                to_levels(data, self.bins, None)  # checks the levels once, not per batch
            elif not data.is_floating_point():
                raise ValueError(
                    f"data must be a floating tensor (N, *D), got {data.dtype}; for integer "
                    "levels pass dequantize=bins (and data_range=) to dequantize each batch"
                )
            else:
                check_finite_tensor(data, "data")  # once here, not when a batch draws the row
        elif not hasattr(data, "__iter__"):
            raise TypeError(
                f"data must be a tensor (N, *D) or an iterable of batches, got {type(data).__name__}"
            )
        self.data, self.labels, self.generator = data, check_labels(labels, data), generator
        self._iter = None

    def restart(self) -> None:
        """Start an iterable from its beginning again (after a resume)."""
        self._iter = None

    def next(self, batch_size: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next global batch `(x, labels or None)` on `device` in `dtype`."""
        y = None
        if isinstance(self.data, torch.Tensor):
            g, n = self.generator, self.data.shape[0]
            idx = torch.randint(n, (batch_size,), generator=g, device=g.device)
            x = self.data[idx]
            if isinstance(self.labels, torch.Tensor):
                y = self.labels[idx.to(self.labels.device)]
        else:
            x, y = self._next_item()
        if self.bins is not None:
            g = self.generator
            x, _ = dequantize(x.to(g.device), self.bins, self.data_range, generator=g, dtype=dtype)
        if y is not None:
            y = y.to(device)
        return x.to(device=device, dtype=dtype), y

    def _next_item(self):
        if self._iter is None:
            self._iter = iter(self.data)
        try:
            x = next(self._iter)
        except StopIteration:
            self._iter = iter(self.data)
            x = next(self._iter, None)
            if x is None:
                raise ValueError("data is an empty iterable") from None
        y = None
        if isinstance(x, (tuple, list)):
            if self.labels is True:
                if len(x) < 2:
                    raise ValueError("labels=True needs (x, y) batches from the iterable")
                y = x[1]
            x = x[0]
        elif self.labels is True:
            raise ValueError("labels=True needs (x, y) batches from the iterable")
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"data batches must be tensors, got {type(x).__name__}")
        return x, y


def local_share(x, y, rank: int, world_size: int):
    """This rank's contiguous share of a global batch `(x, y)`."""
    if world_size == 1:
        return x, y
    part = shard(x.shape[0], rank, world_size)
    if part.stop == part.start:
        raise ValueError(
            f"a batch of {x.shape[0]} examples leaves rank {rank} of {world_size} without "
            "data; yield batches of at least the world size"
        )
    return x[part], (None if y is None else y[part])


def check_labels(labels, data):
    """`labels` as given: None, True (for an iterable of `(x, y)`), or `(N,)` integers."""
    if labels is None:
        return None
    if labels is True:
        if isinstance(data, torch.Tensor):
            raise ValueError("labels=True is for iterables of (x, y) batches; pass the tensor")
        return True
    check_label_tensor("labels", labels, "an integer tensor (N,) or True")
    if not isinstance(data, torch.Tensor) or labels.shape[0] != data.shape[0]:
        n = data.shape[0] if isinstance(data, torch.Tensor) else "an iterable"
        raise ValueError(
            f"labels must have one entry per example of tensor data, got {labels.shape[0]} "
            f"labels for {n}"
        )
    return labels
