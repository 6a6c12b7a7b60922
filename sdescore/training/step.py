"""One training step on one batch: the loss, its gradient, the checks, the update.

`train_step` is what a loop of one's own calls per batch (a plain loop, a `torchrun` script,
an `accelerate` loop); `Trainer` builds on the same two pieces, `backward_checked` (gradient,
clipping, finiteness) and the update (optimizer step, then EMA).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .._checks import check_callable, check_generator, check_real, check_state
from ..ema import EMA
from ..losses import dsm_loss
from .ddp import DistributedLoss

__all__ = ["backward_checked", "train_step"]


def backward_checked(loss, params, *, grad_clip=None, world_size=1, step=None) -> float:
    """Back-propagate the scalar `loss`, clip, and check loss and gradient; return the loss.

    One host synchronisation reads both the loss value and the gradient's global norm (a NaN or
    Inf in any gradient makes the norm non-finite). With `world_size > 1` both are averaged over
    the ranks first, so that every rank takes the same decision. Nothing but the gradients
    (`.grad`) is changed.

    Raises:
        FloatingPointError: the loss or the gradient is NaN or Inf (`step` names the step).
    """
    loss.backward()
    params = [p for p in params if p.grad is not None]
    if grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    stats = torch.stack([loss.detach(), norm.to(loss.dtype)])
    if world_size > 1:
        # Global mean loss; the norm is the same on every rank (gradients are averaged), so its
        # mean is itself.
        stats = stats / world_size
        dist.all_reduce(stats)
    value, norm = stats.tolist()
    at = "" if step is None else f" at step {step}"
    if not torch.isfinite(torch.tensor(value)):
        raise FloatingPointError(
            f"the loss became {value}{at}; lower lr, set grad_clip, or check the data (the "
            "model weights are those before this step)"
        )
    if not torch.isfinite(torch.tensor(norm)):
        raise FloatingPointError(
            f"the gradient became non-finite (norm {norm}){at} although the loss is finite "
            f"({value}); check the network and loss for operations with infinite derivatives "
            "(sqrt or log at 0), or lower lr (the weights, EMA and optimizer are those before "
            "this step)"
        )
    return value


def train_step(
    model: torch.nn.Module,
    x: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    loss=dsm_loss,
    labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    grad_clip: float | None = None,
    ema: EMA | None = None,
) -> float:
    """One optimizer step of `model` on the batch `x`; returns the batch's mean loss.

    Zeroes the gradients, evaluates `loss(model, x, generator=generator[, labels=labels])`
    and its mean, back-propagates, clips the gradient norm to `grad_clip`, checks that loss and
    gradient are finite (one host synchronisation, which reading the loss needs anyway), steps
    `optimizer` and folds the new weights into `ema`. A failed check raises before the
    optimizer step: the weights, optimizer and EMA are then as before. The caller owns the
    learning-rate schedule, the data, the train/eval mode and the loop.

    Several processes: pass `loss=DistributedLoss(model, loss)` (built inside the process
    group); the loss then runs through `DistributedDataParallel`, the gradient is averaged over
    the ranks, and the returned value and the checks are global.

    Args:
        model: the `ScoreModel` (any module the loss accepts) whose parameters `optimizer` holds.
        x: the batch `(B, *D)`, on the model's device and in its dtype.
        optimizer: any `torch.optim.Optimizer` over the model's parameters.
        loss: `loss(model, x, *, generator, **extra) -> (B,)` or a scalar; default `dsm_loss`.
            Fix its options with `functools.partial(dsm_loss, weighting="likelihood")`.
        labels: `(B,)` class labels passed to the loss as `labels=` (classifier-free
            training with `sdescore.label_dropout_loss`), or None.
        generator: the loss's random numbers (times, noise).
        grad_clip: clip the gradient's global norm to this value, or None.
        ema: an `sdescore.EMA` of `model` to update after the step, or None.

    Returns:
        The loss as a Python float (averaged over the ranks under `DistributedLoss`).

    Raises:
        FloatingPointError: the loss or the gradient is NaN or Inf.
        TypeError, ValueError: a bad argument, named.

    Example:
        >>> opt = torch.optim.AdamW(model.parameters(), lr=1e-3)  # doctest: +SKIP
        >>> for x in loader:  # doctest: +SKIP
        ...     value = train_step(model, x, opt, generator=g)
    """
    check_state(x, "x")
    check_generator("generator", generator)
    check_callable("loss", loss, example="sdescore.dsm_loss")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if ema is not None and not isinstance(ema, EMA):
        raise TypeError(f"ema must be an sdescore.EMA or None, got {type(ema).__name__}")
    if grad_clip is not None:
        grad_clip = check_real("grad_clip", grad_clip, positive=True)
    world = loss.world_size if isinstance(loss, DistributedLoss) else 1
    extra = {} if labels is None else {"labels": labels}
    optimizer.zero_grad(set_to_none=True)
    value = loss(model, x, generator=generator, **extra).mean()
    value = backward_checked(value, model.parameters(), grad_clip=grad_clip, world_size=world)
    optimizer.step()
    if ema is not None:
        ema.update(model)
    return value
