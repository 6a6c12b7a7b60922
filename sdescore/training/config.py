"""The Trainer's option groups: small frozen dataclasses, each validated when built.

`OptimizerConfig` (AdamW and its learning-rate schedule), `EMAConfig` (the average of the
weights) and `CheckpointConfig` (where and when the loop writes). `train` also takes their
fields as flat keywords (`lr=`, `ema_decay=`, `checkpoint_path=`, ...); `flat_options` turns
those into the groups, and `Trainer` refuses them with a `TypeError` naming the group.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import torch

from .._checks import check_bool, check_int, check_real
from ..ema import EMA
from ..losses import dsm_loss

__all__ = ["CheckpointConfig", "EMAConfig", "OptimizerConfig"]


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    r"""AdamW (Loshchilov & Hutter 2019) with a linear warm-up and gradient-norm clipping.

    The learning rate at step $n$ (counted from 1) is $\eta \min(1, n / n_w)$ with $n_w$ =
    `warmup_steps` (constant $\eta$ when it is 0).

    Args:
        lr: the learning rate $\eta > 0$.
        weight_decay: AdamW's decoupled weight decay, $\ge 0$.
        betas: AdamW's moment coefficients $(\beta_1, \beta_2)$, each in $[0, 1)$.
        warmup_steps: steps of linear warm-up, $\ge 0$.
        grad_clip: clip the gradient's global norm to this value ($> 0$), or None.

    Raises:
        TypeError, ValueError: a field of the wrong type or out of its range, named.
    """

    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "lr", check_real("lr", self.lr, positive=True))
        set_(self, "weight_decay", check_real("weight_decay", self.weight_decay, nonnegative=True))
        betas = self.betas
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        betas = tuple(check_real(f"betas[{i}]", b) for i, b in enumerate(betas))
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must each lie in [0, 1), got {betas}")
        set_(self, "betas", betas)
        set_(self, "warmup_steps", check_int("warmup_steps", self.warmup_steps, minimum=0))
        if self.grad_clip is not None:
            set_(self, "grad_clip", check_real("grad_clip", self.grad_clip, positive=True))

    def build(self, params) -> torch.optim.AdamW:
        """A `torch.optim.AdamW` over `params` with these settings."""
        return torch.optim.AdamW(
            params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay
        )

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step `step` (counted from 1)."""
        if self.warmup_steps == 0:
            return self.lr
        return self.lr * min(1.0, step / self.warmup_steps)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Set every parameter group's lr (for `step`), betas and weight decay to these."""
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group.update(lr=lr, betas=self.betas, weight_decay=self.weight_decay)


@dataclasses.dataclass(frozen=True)
class EMAConfig:
    """An exponential moving average of the weights (see `sdescore.EMA`).

    Args:
        decay: $\\beta \\in [0, 1)$.
        warmup: ramp the decay up over the first updates.

    Raises:
        TypeError, ValueError: a field of the wrong type or out of its range, named.
    """

    decay: float = 0.999
    warmup: bool = True

    def __post_init__(self):
        decay = check_real("decay", self.decay)
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be a number in [0, 1), got {decay!r}")
        object.__setattr__(self, "decay", decay)
        check_bool("warmup", self.warmup)

    def build(self, model: torch.nn.Module) -> EMA:
        """An `EMA` of `model` with these settings."""
        return EMA(model, self.decay, warmup=self.warmup)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Where and when the training loop writes its checkpoint.

    The loop writes every `every` steps, when it ends (steps done, time budget, callback), and
    when it is interrupted (`KeyboardInterrupt`, single process): the file then resumes the run
    exactly (see `Trainer.load`). Writes are atomic: the previous file survives a failed one.

    Args:
        path: the checkpoint file (str or path-like); its directory must exist.
        every: steps between periodic writes, or None for none.

    Raises:
        TypeError, ValueError: a field of the wrong type or out of its range, named.
    """

    path: str | os.PathLike
    every: int | None = None

    def __post_init__(self):
        if not isinstance(self.path, (str, os.PathLike)):
            raise TypeError(
                f"path must be a str or path-like checkpoint file, got {type(self.path).__name__}"
            )
        object.__setattr__(self, "path", os.fspath(self.path))
        object.__setattr__(self, "every", check_int("every", self.every, allow_none=True))

    def check_writable(self) -> None:
        """Raise `FileNotFoundError` now if the file's directory does not exist."""
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"the checkpoint directory {folder!r} does not exist (checkpoint path "
                f"{self.path!r}); create it or fix the path before training"
            )


# Trainer's earlier flat keywords: where each one lives now.
MOVED = {
    "lr": ("optimizer", "OptimizerConfig", "lr"),
    "weight_decay": ("optimizer", "OptimizerConfig", "weight_decay"),
    "betas": ("optimizer", "OptimizerConfig", "betas"),
    "warmup_steps": ("optimizer", "OptimizerConfig", "warmup_steps"),
    "grad_clip": ("optimizer", "OptimizerConfig", "grad_clip"),
    "ema_decay": ("ema", "EMAConfig", "decay"),
    "checkpoint_path": ("checkpoint", "CheckpointConfig", "path"),
    "checkpoint_every": ("checkpoint", "CheckpointConfig", "every"),
}
LOOP = ("checkpoint", "callback", "progress")  # options of `Trainer.run`, not of the Trainer


def refuse_moved(moved: dict) -> None:
    """The `TypeError` for keywords `Trainer` no longer takes, naming what replaced them."""
    if not moved:
        return
    name = sorted(moved)[0]
    if name in MOVED:
        group, cls, field = MOVED[name]
        where = f"Trainer(..., {group}={cls}({field}=...))"
        if group == "checkpoint":
            where = f"trainer.run(steps, checkpoint=CheckpointConfig({field}=...))"
        raise TypeError(
            f"Trainer does not take {name}= any more: pass {where} "
            f"(sdescore.train still accepts {name}=)"
        )
    if name == "loss_kwargs":
        raise TypeError(
            "Trainer does not take loss_kwargs= any more: pass "
            "loss=functools.partial(loss, **loss_kwargs) (sdescore.train still accepts it)"
        )
    if name in LOOP:
        raise TypeError(
            f"{name}= is an option of the loop: pass it to trainer.run(steps, {name}=...) "
            "(sdescore.train accepts it too)"
        )
    raise TypeError(f"Trainer() got an unexpected keyword argument {name!r}")


def flat_options(options: dict) -> dict:
    """`train`'s keywords with the flat shorthands (`lr=`, `ema_decay=`, ...) made into groups.

    A group and one of its shorthands together raise `TypeError`; so does `checkpoint_every`
    without `checkpoint_path`, which would never write.
    """
    options = dict(options)
    if "loss_kwargs" in options:
        extra = options.pop("loss_kwargs")
        if extra is not None and not isinstance(extra, dict):
            raise TypeError(f"loss_kwargs must be a dict, got {type(extra).__name__}")
        if extra:
            options["loss"] = functools.partial(options.get("loss", dsm_loss), **extra)
    shorthand = {k: options.pop(k) for k in list(options) if k in MOVED}
    for group, cls in (("optimizer", OptimizerConfig), ("ema", EMAConfig)):
        fields = {MOVED[k][2]: v for k, v in shorthand.items() if MOVED[k][0] == group}
        if group == "ema" and fields:
            if group in options:
                raise TypeError("give ema= or ema_decay=, not both")
            options["ema"] = None if fields["decay"] is None else cls(**fields)
        elif fields:
            if group in options:
                given = ", ".join(f"{k}=" for k in shorthand if MOVED[k][0] == group)
                raise TypeError(f"give optimizer= or {given}, not both")
            options[group] = cls(**fields)
    path, every = shorthand.get("checkpoint_path"), shorthand.get("checkpoint_every")
    if "checkpoint_path" in shorthand or "checkpoint_every" in shorthand:
        if "checkpoint" in options:
            raise TypeError("give checkpoint= or checkpoint_path=/checkpoint_every=, not both")
        if path is None and every is not None:
            raise ValueError(
                f"checkpoint_every={every!r} needs checkpoint_path= (no file to write to)"
            )
        options["checkpoint"] = None if path is None else CheckpointConfig(path, every)
    return options


def check_group(name: str, value, cls, *, allow_none: bool):
    """`value` if it is a `cls` (or None when allowed), else a `TypeError` naming `name`."""
    if value is None and allow_none or isinstance(value, cls):
        return value
    hint = " or None" if allow_none else ""
    article = "an" if cls.__name__[0] in "AEIOU" else "a"
    raise TypeError(
        f"{name} must be {article} {cls.__name__}{hint}, got {type(value).__name__} "
        f"(e.g. {name}=sdescore.{cls.__name__}(...))"
    )
