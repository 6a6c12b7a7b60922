"""One training step on one batch: the loss, its gradient, the checks, the update.

`train_step` is what a loop of one's own calls per batch (a plain loop, a `torchrun` script,
an `accelerate` loop); `Trainer` builds on the same two pieces, `backward_checked` (gradient,
clipping, finiteness) and the update (optimizer step, then EMA).
"""

from __future__ import annotations

import inspect

import torch
import torch.distributed as dist

from .._checks import check_callable, check_generator, check_real, check_state, nonfinite_rows
from ..ema import EMA
from ..losses import dsm_loss
from .ddp import DistributedLoss

__all__ = ["backward_checked", "check_loss_call", "mean_loss", "train_step"]


def _loss_name(loss) -> str:
    inner = loss.loss if isinstance(loss, DistributedLoss) else loss
    inner = getattr(inner, "func", inner)  # a functools.partial
    return getattr(inner, "__name__", type(inner).__name__)


def check_loss_call(loss, model, labels: bool) -> None:
    """Refuse a `loss` that cannot be called as `loss(model, x, generator=g[, labels=y])`.

    Checked on the signature (no call), so that a wrong loss gets a message about the contract
    instead of Python's "unexpected keyword argument" from inside the step. A callable whose
    signature cannot be read is let through.

    Raises:
        TypeError: `labels` are given and the loss takes none (e.g. `dsm_loss` of an
            unconditional model), or the loss does not take `(model, x, *, generator)`.
    """
    inner = loss.loss if isinstance(loss, DistributedLoss) else loss
    try:
        sig = inspect.signature(inner)
    except (TypeError, ValueError):
        return
    name = _loss_name(loss)
    extra = {"labels": None} if labels else {}
    try:
        sig.bind(model, None, generator=None, **extra)
        return
    except TypeError as err:
        problem = err
    if labels and _binds(sig, model):
        raise TypeError(
            "labels need a ConditionalScoreModel and a loss that takes them as labels= "
            "(sdescore.label_dropout_loss, or one of your own with a labels= keyword); got a "
            f"{type(model).__name__} with loss {name}, which takes no labels"
        )
    call = "loss(model, x, *, generator, labels)" if labels else "loss(model, x, *, generator)"
    raise TypeError(
        f"loss must be callable as {call} and return (B,) or a scalar (the step passes its "
        "generator for the times and noise: accept it and draw from it, or take **kwargs); "
        f"got {name}{sig}: {problem}"
    )


def _binds(sig, model) -> bool:
    try:
        sig.bind(model, None, generator=None)
    except TypeError:
        return False
    return True


def mean_loss(out, x: torch.Tensor, loss) -> torch.Tensor:
    """The mean of a loss's output, which must be per example `(B,)` or a scalar.

    Raises:
        TypeError: the output is not a tensor.
        ValueError: it has another shape (a per-coordinate loss must be reduced by the loss).
    """
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"loss {_loss_name(loss)} must return a tensor (B,) or a scalar, got "
            f"{type(out).__name__}"
        )
    if out.ndim != 0 and tuple(out.shape) != (x.shape[0],):
        raise ValueError(
            f"loss {_loss_name(loss)} must return one value per example, shape "
            f"({x.shape[0]},), or a scalar; got shape {tuple(out.shape)} (reduce the other "
            "dimensions inside the loss)"
        )
    return out.mean()


def _batch_note(batch) -> str:
    """On the failure path only: say when the batch itself holds NaN or Inf."""
    if not isinstance(batch, torch.Tensor) or not batch.is_floating_point():
        return ""
    n = int(nonfinite_rows(batch).sum())
    if n == 0:
        return ""
    return (
        f": the batch itself holds NaN or Inf ({n} of {batch.shape[0]} examples), so check "
        "the data first"
    )


def backward_checked(loss, params, *, grad_clip=None, world_size=1, step=None, batch=None) -> float:
    """Back-propagate the scalar `loss`, clip, and check loss and gradient; return the loss.

    One host synchronisation reads both the loss value and the gradient's global norm (a NaN or
    Inf in any gradient makes the norm non-finite). With `world_size > 1` both are averaged over
    the ranks first, so that every rank takes the same decision. Nothing but the gradients
    (`.grad`) is changed.

    Raises:
        FloatingPointError: the loss or the gradient is NaN or Inf (`step` names the step; when
            `batch`, this step's data, itself holds NaN or Inf the message says so).
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
        cause = _batch_note(batch) or "; lower lr, set grad_clip, or check the data"
        raise FloatingPointError(
            f"the loss became {value}{at}{cause} (the model weights are those before this step)"
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

    Zeroes the gradients (the model's and the optimizer's), evaluates `loss(model, x,
    generator=generator[, labels=labels])` and its mean, back-propagates, clips the gradient
    norm to `grad_clip`, checks that loss and gradient are finite (one host synchronisation,
    which reading the loss needs anyway), steps `optimizer` and folds the new weights into
    `ema`. A failed check raises before the optimizer step: the weights, optimizer and EMA are
    then as before. The caller owns the learning-rate schedule, the data, the train/eval mode
    and the loop.

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
        TypeError, ValueError: a bad argument, named: e.g. an optimizer that holds none of
            the model's trainable parameters (one holding some of them, a model frozen in
            part on purpose, is accepted), `labels` with a loss that takes none, a loss
            returning neither `(B,)` nor a scalar.

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
    check_optimizer_holds(optimizer, model)
    check_loss_call(loss, model, labels is not None)
    world = loss.world_size if isinstance(loss, DistributedLoss) else 1
    extra = {} if labels is None else {"labels": labels}
    # The model's parameters the optimizer does not hold (frozen on purpose) must not carry
    # gradients from step to step: they would enter the clipping norm and pile up.
    model.zero_grad(set_to_none=True)
    optimizer.zero_grad(set_to_none=True)
    value = mean_loss(loss(model, x, generator=generator, **extra), x, loss)
    value = backward_checked(
        value, model.parameters(), grad_clip=grad_clip, world_size=world, batch=x
    )
    optimizer.step()
    if ema is not None:
        ema.update(model)
    return value


def check_optimizer_holds(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
    """Refuse an optimizer that holds none of `model`'s trainable parameters.

    It would train nothing while the losses look normal. One that holds some of them (a model
    frozen in part on purpose) is accepted. A set of parameter ids: cheap next to a step.

    Raises:
        ValueError: the optimizer holds none of the model's trainable parameters.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"model ({type(model).__name__}) has no trainable parameters")
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not any(id(p) in held for p in trainable):
        raise ValueError(
            f"optimizer must optimize the model's parameters, e.g. "
            f"torch.optim.AdamW(model.parameters()); it holds none of the model's "
            f"{len(trainable)} trainable parameters (it holds {len(held)} others)"
        )
