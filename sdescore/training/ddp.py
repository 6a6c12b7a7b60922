"""Training under DistributedDataParallel: the loss as a module DDP runs, and the ranks' agreement.

DDP synchronises gradients only for computations that run through its own `forward`. The loss
(not the score network) is therefore wrapped: `DistributedLoss` runs `loss(model, x, ...)` inside
DDP's forward, so the loss sees the real model (its class, `sde`, `labeled`, ...) and every
parameter it touches is averaged over the ranks in the backward pass.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .._checks import check_callable
from ..distributed import env as dist_env
from ..distributed import is_distributed

__all__ = ["DistributedLoss", "agree", "world_of"]

STOP_REASONS = ("steps", "max_seconds", "callback")


class _LossModule(nn.Module):
    """`loss(model, x, ...)` as a module's forward, for DDP to wrap."""

    def __init__(self, model: nn.Module, loss):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, x, generator, extra):
        return self.loss(self.model, x, generator=generator, **extra)


class DistributedLoss:
    """A loss evaluated through `DistributedDataParallel`, for `train_step` under torchrun.

    Build it inside an initialised process group of more than one process (e.g. within
    `sdescore.distributed.process_group()`), once, after the model is on its device; rank 0's
    weights and buffers are broadcast to every rank here. Call it as the loss it wraps,
    `dloss(model, x, generator=..., labels=...)`, with the same `model`; the gradients of the
    backward pass are then averaged over the ranks.

    Args:
        model: the `ScoreModel` being trained (on this rank's device).
        loss: `loss(model, x, *, generator, **extra)`, default `sdescore.dsm_loss`.

    Raises:
        ValueError: no process group of more than one process is initialised.
    """

    def __init__(self, model: nn.Module, loss=None):
        if loss is None:
            from ..losses import dsm_loss

            loss = dsm_loss
        check_callable("loss", loss)
        if not is_distributed():
            raise ValueError(
                "DistributedLoss needs an initialised process group of more than one process: "
                "launch with torchrun and build it inside sdescore.distributed.process_group()"
            )
        device = next(model.parameters()).device
        ids = [device] if device.type == "cuda" else None
        # Buffers (a fitted baseline) are synchronised once here, not at every forward.
        self._ddp = DistributedDataParallel(
            _LossModule(model, loss), device_ids=ids, forward_sync_buffers=False
        )
        self.model, self.loss = model, loss
        where = dist_env()
        self.rank, self.world_size = where.rank, where.world_size

    def __call__(self, model, x, *, generator=None, **extra) -> torch.Tensor:
        if model is not self.model:
            raise ValueError("DistributedLoss was built for another model; build one per model")
        return self._ddp(x, generator, extra)


def world_of(distributed) -> tuple[int, int]:
    """`(rank, world size)` for a Trainer's `distributed=` (None: detect a process group)."""
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be None or a bool, got {type(distributed).__name__}")
    if distributed is None:
        distributed = is_distributed()
    if not distributed:
        return 0, 1
    if not is_distributed():
        raise ValueError(
            "distributed=True needs an initialised process group of more than one process: "
            "launch with torchrun and build the Trainer inside "
            "sdescore.distributed.process_group(), or call sdescore.train"
        )
    where = dist_env()
    return where.rank, where.world_size


def agree(stop: str | None, device) -> str | None:
    """The stop decision of all ranks (any rank stopping stops all; callback wins)."""
    code = torch.tensor([0 if stop is None else STOP_REASONS.index(stop)], device=device)
    dist.all_reduce(code, op=dist.ReduceOp.MAX)
    code = int(code.item())
    return None if code == 0 else STOP_REASONS[code]
