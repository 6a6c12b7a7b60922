"""A small training loop for score models: AdamW, warm-up, clipping, EMA, checkpoints, resume.

This is a library loop, not a framework: one `Trainer` holding the model, optimizer, EMA and
random state, and `train(...)` as a one-call front end.
"""

from __future__ import annotations

import dataclasses
import os
import time

import torch
from tqdm.auto import tqdm

from ._checks import check_callable, check_int, check_real
from .ema import EMA
from .losses import dsm_loss
from .models.checkpoint import atomic_save, model_from_state, model_state, safe_load
from .models.score_model import ScoreModel

__all__ = ["TrainResult", "Trainer", "train"]

FORMAT = "sdescore.Trainer"


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What `train` returns.

    Attributes:
        model: the trained `ScoreModel` (last weights).
        ema_model: the EMA of its weights (use this one for sampling and likelihoods), or `model`
            when `ema_decay=None`.
        losses: `(steps,)` float64 loss per step, from the first step (also across resumes).
        steps: number of optimizer steps taken in all.
        seconds: wall-clock time of this call.
    """

    model: ScoreModel
    ema_model: ScoreModel
    losses: torch.Tensor
    steps: int
    seconds: float


class Trainer:
    """Train a `ScoreModel` with AdamW on a score-matching loss.

    Data: a tensor `(N, *D)` (minibatches drawn with replacement from a generator seeded by
    `seed`) or any iterable of batches, e.g. a `DataLoader` (cycled; an item may be a tensor or
    a tuple/list whose first element is the batch). Batches are moved to the model's device
    and dtype. With tensor data, `load` + `run` continues *exactly* as an uninterrupted run
    (same weights bit for bit on the same machine): the data and noise generators, optimizer,
    EMA and step are all in the checkpoint. An iterable restarts from its beginning on resume.

    Args:
        model: the `ScoreModel` to train (updated in place).
        data: tensor `(N, *D)` or iterable of batches.
        loss: objective `loss(model, x0, *, generator=..., **loss_kwargs)` returning `(B,)` or a
            scalar; default `dsm_loss` (see `sdescore.losses`).
        loss_kwargs: extra keyword arguments for `loss`, e.g. `{"weighting": "likelihood"}`.
        batch_size: minibatch size for tensor data.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW's moment coefficients.
        warmup_steps: linear learning-rate warm-up over this many steps (0 for none).
        grad_clip: clip the gradient norm to this value (None for no clipping).
        ema_decay: EMA decay of the weights, or None for no EMA.
        seed: seeds the data and noise generators (nothing global is seeded).
        checkpoint_path: where `run` writes checkpoints (every `checkpoint_every` steps and at
            the end); None for none.
        checkpoint_every: steps between checkpoints.
        callback: called as `callback(trainer)` after every step (`trainer.step`,
            `trainer.losses[-1]`); return `True` to stop early.
        progress: show a tqdm bar with the running loss.
    """

    def __init__(
        self,
        model: ScoreModel,
        data,
        *,
        loss=dsm_loss,
        loss_kwargs: dict | None = None,
        batch_size: int = 128,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        grad_clip: float | None = None,
        ema_decay: float | None = 0.999,
        seed: int = 0,
        checkpoint_path=None,
        checkpoint_every: int | None = None,
        callback=None,
        progress: bool = True,
    ):
        if not isinstance(model, ScoreModel):
            raise TypeError(f"model must be a ScoreModel, got {type(model).__name__}")
        params = list(model.parameters())
        if not params:
            raise ValueError("model has no trainable parameters (is net an nn.Module?)")
        check_callable("loss", loss)
        if callback is not None:
            check_callable("callback", callback)
        if loss_kwargs is not None and not isinstance(loss_kwargs, dict):
            raise TypeError(f"loss_kwargs must be a dict, got {type(loss_kwargs).__name__}")
        if isinstance(data, torch.Tensor):
            if data.ndim < 1 or data.shape[0] < 1 or not data.is_floating_point():
                raise ValueError(
                    f"data must be a floating tensor (N, *D), got {data.dtype} {tuple(data.shape)}"
                )
        elif not hasattr(data, "__iter__"):
            raise TypeError(
                f"data must be a tensor (N, *D) or an iterable of batches, got {type(data).__name__}"
            )
        self.model, self.data, self.loss = model, data, loss
        self.loss_kwargs = dict(loss_kwargs or {})
        self.batch_size = check_int("batch_size", batch_size)
        self.lr = check_real("lr", lr, positive=True)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
        clip, every = grad_clip, checkpoint_every
        self.grad_clip = None if clip is None else check_real("grad_clip", clip, positive=True)
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = None if every is None else check_int("checkpoint_every", every)
        self.callback, self.progress = callback, bool(progress)
        self.device, self.dtype = params[0].device, params[0].dtype
        self.optimizer = torch.optim.AdamW(
            params, lr=self.lr, betas=betas, weight_decay=weight_decay
        )
        self.ema = None if ema_decay is None else EMA(model, ema_decay)
        seed = check_int("seed", seed, minimum=0)
        data_device = data.device if isinstance(data, torch.Tensor) else "cpu"
        self.data_generator = torch.Generator(data_device).manual_seed(seed)
        self.noise_generator = torch.Generator(self.device).manual_seed(seed + 1)
        self.step = 0
        self.losses: list[float] = []
        self._iter = None

    @property
    def ema_model(self) -> ScoreModel:
        """The EMA model (or the model itself without EMA)."""
        return self.model if self.ema is None else self.ema.model

    def _next_batch(self) -> torch.Tensor:
        if isinstance(self.data, torch.Tensor):
            g, n = self.data_generator, self.data.shape[0]
            x = self.data[torch.randint(n, (self.batch_size,), generator=g, device=g.device)]
        else:
            if self._iter is None:
                self._iter = iter(self.data)
            try:
                x = next(self._iter)
            except StopIteration:
                self._iter = iter(self.data)
                x = next(self._iter, None)
                if x is None:
                    raise ValueError("data is an empty iterable") from None
            if isinstance(x, (tuple, list)):
                x = x[0]
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"data batches must be tensors, got {type(x).__name__}")
        return x.to(device=self.device, dtype=self.dtype)

    def train_step(self) -> float:
        """One optimizer step; returns the loss. Raises `FloatingPointError` on a NaN/Inf loss."""
        self.model.train()
        x = self._next_batch()
        loss = self.loss(self.model, x, generator=self.noise_generator, **self.loss_kwargs)
        loss = loss.mean()
        value = float(loss.detach())
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(
                f"the loss became {value} at step {self.step + 1}; lower lr, set grad_clip, or "
                "check the data (the model weights are those before this step)"
            )
        if self.warmup_steps:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr * min(1.0, (self.step + 1) / self.warmup_steps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        self.losses.append(value)
        return value

    def run(self, steps: int) -> TrainResult:
        """Train until `self.step == steps` (a total, so a resumed trainer finishes the same run)."""
        check_int("steps", steps)
        start = time.perf_counter()
        bar = tqdm(total=steps, initial=self.step, disable=not self.progress, desc="train")
        try:
            while self.step < steps:
                self.train_step()
                bar.update(1)
                if self.step % 25 == 0 or self.step == steps:
                    recent = self.losses[-100:]
                    bar.set_postfix(loss=f"{sum(recent) / len(recent):.4g}")
                if (
                    self.checkpoint_every
                    and self.checkpoint_path
                    and self.step % self.checkpoint_every == 0
                ):
                    self.save(self.checkpoint_path)
                if self.callback is not None and self.callback(self) is True:
                    break
        finally:
            bar.close()
        if self.checkpoint_path is not None:
            self.save(self.checkpoint_path)
        return TrainResult(
            self.model,
            self.ema_model,
            torch.tensor(self.losses, dtype=torch.float64),
            self.step,
            time.perf_counter() - start,
        )

    def state_dict(self) -> dict:
        return {
            "format": FORMAT,
            "model": model_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "step": self.step,
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "data_generator": self.data_generator.get_state(),
            "noise_generator": self.noise_generator.get_state(),
        }

    def save(self, path) -> None:
        """Write a checkpoint that `load` resumes from exactly."""
        atomic_save(self.state_dict(), path)

    def load(self, path) -> Trainer:
        """Restore the state saved by `save` into this trainer (built with the same arguments)."""
        state = safe_load(path, map_location=self.device)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{os.fspath(path)!r} is not an sdescore Trainer checkpoint")
        saved = model_from_state(state["model"], net=self.model.net, sde=self.model.sde)
        if saved.parameterization != self.model.parameterization:
            raise ValueError(
                f"checkpoint parameterization {saved.parameterization!r} does not match the "
                f"model's {self.model.parameterization!r}"
            )
        if saved.has_baseline:
            self.model.set_baseline(saved.baseline_mean, saved.baseline_std)
        # `saved` shares self.model.net, so the weights are already loaded in place.
        self.optimizer.load_state_dict(state["optimizer"])
        if (state["ema"] is None) != (self.ema is None):
            raise ValueError("checkpoint and trainer disagree on whether an EMA is kept")
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self.losses = state["losses"].tolist()
        self.data_generator.set_state(state["data_generator"])
        self.noise_generator.set_state(state["noise_generator"].cpu())
        self._iter = None
        return self


def train(model: ScoreModel, data, *, steps: int, resume: bool = False, **options) -> TrainResult:
    """Train `model` for `steps` optimizer steps; see `Trainer` for the options.

    Args:
        model: the `ScoreModel` (trained in place).
        data: tensor `(N, *D)` or iterable of batches.
        steps: total number of steps.
        resume: continue from `options["checkpoint_path"]` if that file exists.
        **options: `Trainer`'s keyword arguments (unknown names raise `TypeError`).

    Returns:
        A `TrainResult` with the model, its EMA, the loss curve and the time taken.

    Example:
        >>> model = ScoreModel(MLPScoreNet(2), VPSDE()).fit_baseline(x)  # doctest: +SKIP
        >>> result = train(model, x, steps=2000, lr=1e-3, batch_size=1024)  # doctest: +SKIP
    """
    trainer = Trainer(model, data, **options)
    path = options.get("checkpoint_path")
    if resume:
        if path is None:
            raise ValueError("resume=True needs checkpoint_path")
        if os.path.exists(path):
            trainer.load(path)
    return trainer.run(steps)
