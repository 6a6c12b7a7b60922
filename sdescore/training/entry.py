"""`train`: a `Trainer` and its `run` in one call, with the flat option shorthands and resume."""

from __future__ import annotations

import os

import torch

from ..distributed import env as dist_env
from ..distributed import process_group
from ..models.score_model import ScoreModel
from .config import CheckpointConfig, flat_options
from .loop import Trainer, TrainResult

__all__ = ["train"]


def train(
    model: ScoreModel,
    data,
    *,
    steps: int | None,
    max_seconds: float | None = None,
    resume: bool | str = False,
    checkpoint: CheckpointConfig | None = None,
    callback=None,
    progress: bool = True,
    **options,
) -> TrainResult:
    """Train `model` for `steps` optimizer steps: a `Trainer`, then `Trainer.run`.

    Args:
        model: the `ScoreModel` (trained in place).
        data: tensor `(N, *D)` or iterable of batches (integer levels with `dequantize=`).
        steps: total number of steps (None: until `max_seconds`).
        max_seconds: time budget of this call in seconds; training stops after the step that
            exceeds it, writes the checkpoint, and `TrainResult.stop_reason` says so.
        resume: continue from the checkpoint's file: `True` requires it to exist
            (`FileNotFoundError` otherwise, so a mistyped path never trains from scratch),
            `"auto"` resumes when it exists and starts afresh when not, `False` starts afresh.
        checkpoint: a `CheckpointConfig` (path, every), or None; see `Trainer.run`.
        callback: `callback(trainer)` after every step; return `True` to stop.
        progress: show a tqdm bar.
        **options: `Trainer`'s keyword arguments; also `loss_kwargs` (a dict of the loss's
            options, e.g. `{"weighting": "likelihood"}`) and the option groups' fields as flat
            shorthands: `lr`, `weight_decay`, `betas`, `warmup_steps`, `grad_clip` (an
            `OptimizerConfig`), `ema_decay` (an `EMAConfig`, None for no EMA), and
            `checkpoint_path`, `checkpoint_every` (a `CheckpointConfig`). Unknown names raise
            `TypeError`.

    Returns:
        A `TrainResult` with the model, its EMA, the loss curve and the time taken.

    Raises:
        FileNotFoundError: `resume=True` and no checkpoint file exists, or its directory is
            missing.
        TypeError, ValueError: a bad argument, named (e.g. `checkpoint_every` without
            `checkpoint_path`).

    Example:
        >>> model = ScoreModel(MLPScoreNet(2), VPSDE()).fit_baseline(x)  # doctest: +SKIP
        >>> result = train(model, x, steps=2000, lr=1e-3, batch_size=1024)  # doctest: +SKIP
    """
    if checkpoint is not None:
        options["checkpoint"] = checkpoint
    options = flat_options(options)
    checkpoint = options.pop("checkpoint", None)
    if resume not in (False, True, "auto"):
        raise ValueError(f"resume must be False, True or 'auto', got {resume!r}")
    if resume and checkpoint is None:
        raise ValueError(
            f"resume={resume!r} needs checkpoint_path (or checkpoint=CheckpointConfig(path))"
        )
    if resume is True and not os.path.exists(checkpoint.path):
        raise FileNotFoundError(
            f"resume=True but there is no checkpoint at {checkpoint.path!r}; fix the path, "
            "or pass resume='auto' to start afresh when the file does not exist yet"
        )
    loop = dict(max_seconds=max_seconds, checkpoint=checkpoint, callback=callback)
    loop["progress"] = progress
    # Under torchrun without a group yet: create it for this call (destroyed on return).
    launched = dist_env().world_size > 1 and options.get("distributed") is not False
    if not launched:  # validation errors first, before any group is created
        return _train(model, data, steps, resume, options, loop)
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    with process_group(params[0].device if params else "cpu"):
        return _train(model, data, steps, resume, options, loop)


def _train(model, data, steps, resume, options, loop) -> TrainResult:
    trainer = Trainer(model, data, **options)
    path = None if loop["checkpoint"] is None else loop["checkpoint"].path
    if resume and os.path.exists(path):
        trainer.load(path)
    return trainer.run(steps, **loop)
