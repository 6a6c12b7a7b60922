"""The training loop: `Trainer` (model, optimizer, EMA, data and random streams, one step at a
time, and `run`, the loop). `train` (in `entry`) is its one-call front end."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings

import torch
from tqdm.auto import tqdm

from .._checks import check_callable, check_int, check_real, external_stacklevel
from ..distributed import rank_seed
from ..losses import dsm_loss
from ..models.mode import check_event_shape
from ..models.score_model import ScoreModel
from . import checkpoint as io
from .config import (
    CheckpointConfig,
    EMAConfig,
    OptimizerConfig,
    check_group,
    refuse_moved,
)
from .data import BatchStream, local_share
from .ddp import DistributedLoss, agree, world_of
from .interrupts import SigintGuard
from .step import backward_checked, check_loss_call, mean_loss

__all__ = ["TrainResult", "Trainer"]


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What `train` and `Trainer.run` return.

    Attributes:
        model: the trained `ScoreModel` (last weights).
        ema_model: the EMA of its weights (use this one for sampling and likelihoods), or `model`
            without an EMA.
        losses: `(steps,)` float64 loss per step, from the first step (also across resumes).
        steps: number of optimizer steps taken in all.
        seconds: wall-clock time of this call.
        stop_reason: why the run ended: `"steps"` (all done), `"max_seconds"` (the time budget
            ran out) or `"callback"` (the callback returned `True`).
    """

    model: ScoreModel
    ema_model: ScoreModel
    losses: torch.Tensor
    steps: int
    seconds: float
    stop_reason: str = "steps"


class Trainer:
    """Train a `ScoreModel` with AdamW on a score-matching loss, one step at a time.

    The trainer holds the model, the optimizer, the EMA, the data and its random streams;
    `run` is the loop (how long, checkpoints, callback, progress bar), `train_step` one step,
    `save`/`load` the checkpoint.

    Data: a tensor `(N, *D)` (minibatches drawn with replacement from a generator seeded by
    `seed`) or any iterable of batches, e.g. a `DataLoader` (cycled; an item may be a tensor or
    a tuple/list whose first element is the batch). Batches are moved to the model's device
    and dtype. With tensor data, `load` + `run` continues *exactly* as an uninterrupted run
    (same weights bit for bit on the same machine): the data and noise generators, the
    network's own random stream (dropout), optimizer, EMA and step are all in the checkpoint.
    An iterable restarts from its beginning on resume. What a resumed trainer honours and
    what it refuses: see `load`.

    **Several processes (DDP).** Inside an initialised process group of W > 1 processes (launched
    by `torchrun`; `train` creates the group itself, `Trainer` uses one the caller created with
    `sdescore.distributed.process_group`), the loss runs through `DistributedDataParallel`
    (`DistributedLoss`; rank 0's initial weights are broadcast). `batch_size` stays the
    *global* batch: every rank draws the same global batch (same data generator) and trains on
    its contiguous share, the losses weighted so that the averaged gradient is that of the
    global batch even for unequal shares. Noise and dropout streams differ per rank
    (`sdescore.distributed.rank_seed`), so a run is reproducible for a fixed seed and world
    size; with a loss that draws no noise it equals the single-process run to float rounding.
    The EMA is kept on every rank (identical); checkpoints are written by rank 0 only, after
    gathering every rank's random state. Resume needs the same world size. An iterable must
    yield the same global batches on every rank (seed its shuffle).

    Randomness inside the network (dropout, or a loss that ignores `generator=`) draws from
    torch's global RNG; each step runs with that RNG forked (`torch.random.fork_rng`) onto a
    stream seeded by `seed` and kept in the checkpoint (CPU, and the model's CUDA device), so
    training neither depends on nor advances the caller's global RNG.

    Args:
        model: the `ScoreModel` to train (updated in place).
        data: tensor `(N, *D)` or iterable of batches.
        loss: objective `loss(model, x0, *, generator=...)` returning `(B,)` or a scalar;
            default `dsm_loss` (see `sdescore.losses`). Fix its options with
            `functools.partial(dsm_loss, weighting="likelihood")`.
        batch_size: minibatch size for tensor data (the global batch under DDP).
        optimizer: an `OptimizerConfig` (lr, weight decay, betas, warm-up, clipping).
        ema: an `EMAConfig` (decay, warm-up) for an average of the weights, or None for none.
        dequantize: for discrete data, the number of levels `bins`: `data` then holds integer
            levels `0 .. bins-1` and every batch is uniformly dequantized afresh onto
            `data_range` (see `sdescore.dequantization.dequantize`), with noise from the data
            generator, so exact resume holds. None (default) for continuous data.
        data_range: `(a, b)`, the interval the dequantized data fill (with `dequantize`).
        labels: `(N,)` integer class labels of tensor `data`, drawn with the same indices as
            the examples and passed to the loss as `labels=` (e.g.
            `sdescore.losses.label_dropout_loss` for classifier-free guidance). For an
            iterable, yield `(x, y)` batches and pass `labels=True`.
        seed: seeds the data and noise generators (nothing global is seeded).
        distributed: train under DDP: None (default) when a process group of more than one
            process is initialised, True to require one, False to train this process alone.
        **moved: the keywords of earlier versions (`lr=`, `ema_decay=`, `loss_kwargs=`,
            `checkpoint_path=`, `callback=`, `progress=`, ...) raise a `TypeError` naming the option that replaced
            them (`sdescore.train` still takes them).

    Raises:
        TypeError, ValueError: a bad argument, named; a keyword that moved, with its new place.
    """

    def __init__(
        self,
        model: ScoreModel,
        data,
        *,
        loss=dsm_loss,
        batch_size: int = 128,
        optimizer: OptimizerConfig = OptimizerConfig(),  # noqa: B008 (frozen, shared safely)
        ema: EMAConfig | None = EMAConfig(),  # noqa: B008
        dequantize: int | None = None,
        data_range: tuple[float, float] = (-1.0, 1.0),
        labels: torch.Tensor | None = None,
        seed: int = 0,
        distributed: bool | None = None,
        **moved,
    ):
        refuse_moved(moved)
        if not isinstance(model, ScoreModel):
            raise TypeError(f"model must be a ScoreModel, got {type(model).__name__}")
        params = list(model.parameters())
        if not params:
            raise ValueError("model has no trainable parameters (is net an nn.Module?)")
        check_callable("loss", loss, example="sdescore.losses.ddpm_loss")
        self.optimizer_config = check_group(
            "optimizer", optimizer, OptimizerConfig, allow_none=False
        )
        self.ema_config = check_group("ema", ema, EMAConfig, allow_none=True)
        self.seed = check_int("seed", seed, minimum=0)
        data_device = data.device if isinstance(data, torch.Tensor) else "cpu"
        data_generator = torch.Generator(data_device).manual_seed(self.seed)
        self.batches = BatchStream(data, labels, dequantize, data_range, data_generator)
        if isinstance(data, torch.Tensor):
            check_event_shape(model, data, "data")
        check_loss_call(loss, model, labels is not None)
        self.model, self.loss = model, loss
        self.batch_size = check_int("batch_size", batch_size)
        self.device, self.dtype = params[0].device, params[0].dtype
        self.rank, self.world_size = world_of(distributed)
        if self.world_size > 1:
            if self.batch_size < self.world_size:
                raise ValueError(
                    f"batch_size is the global batch and must be at least the world size "
                    f"{self.world_size}, got {self.batch_size}"
                )
            self.loss = DistributedLoss(model, loss)
        self.optimizer = self.optimizer_config.build(params)
        self.ema = None if self.ema_config is None else self.ema_config.build(model)
        # Rank 0 keeps the single-process seeds (rank_seed(s, 0) == s); other ranks draw their
        # own noise and dropout streams.
        self.noise_generator = torch.Generator(self.device).manual_seed(
            rank_seed(self.seed + 1, self.rank)
        )
        # The stream the global RNG is forked onto during a step (dropout): CPU, plus the
        # model's CUDA device, seeded from `seed` like the other two.
        self._rng_cuda = self.device.index if self.device.type == "cuda" else None
        if self._rng_cuda is None and self.device.type == "cuda":
            self._rng_cuda = torch.cuda.current_device()
        rng_seed = rank_seed(self.seed + 2, self.rank)
        self.rng_state = {"cpu": torch.Generator().manual_seed(rng_seed).get_state()}
        if self._rng_cuda is not None:
            gen = torch.Generator(f"cuda:{self._rng_cuda}").manual_seed(rng_seed)
            self.rng_state["cuda"] = gen.get_state()
        self.step = 0
        self.losses: list[float] = []
        self._sigint = SigintGuard()  # inactive until `run` installs it

    @property
    def ema_model(self) -> ScoreModel:
        """The EMA model (or the model itself without EMA)."""
        return self.model if self.ema is None else self.ema.model

    @property
    def data_generator(self) -> torch.Generator:
        """The generator that draws (and dequantizes) the batches."""
        return self.batches.generator

    @contextlib.contextmanager
    def _own_rng(self):
        """Run with torch's global RNG forked onto this trainer's stream; yield its new state."""
        cuda = [] if self._rng_cuda is None else [self._rng_cuda]
        state = {}
        with torch.random.fork_rng(devices=cuda, device_type="cuda"):
            torch.set_rng_state(self.rng_state["cpu"])
            if cuda:
                torch.cuda.set_rng_state(self.rng_state["cuda"], cuda[0])
            yield state
            state["cpu"] = torch.get_rng_state()
            if cuda:
                state["cuda"] = torch.cuda.get_rng_state(cuda[0])

    def train_step(self) -> float:
        """One optimizer step on the next batch; returns the loss.

        An error or interrupt while the batch, loss and gradient are computed leaves no trace:
        the weights, EMA, optimizer, step count and random streams are those before the step (an
        iterable's batch is consumed, though). The update that follows (optimizer step, EMA,
        step count) runs with Ctrl-C held back inside `run`, so it is never half done.

        Raises:
            FloatingPointError: the loss or the gradient is NaN/Inf.
        """
        self.model.train()
        step = self.step + 1
        streams = (self.batches.generator.get_state(), self.noise_generator.get_state())
        try:
            with self._own_rng() as rng:
                x, y = self.batches.next(self.batch_size, self.device, self.dtype)
                total = x.shape[0]
                x, y = local_share(x, y, self.rank, self.world_size)
                kwargs = {} if y is None else {"labels": y}
                self.optimizer.zero_grad(set_to_none=True)
                out = self.loss(self.model, x, generator=self.noise_generator, **kwargs)
                loss = mean_loss(out, x, self.loss)
                if self.world_size > 1:
                    # DDP averages gradients over ranks; weighting each rank's mean by its share
                    # makes that average the gradient of the global batch's mean loss.
                    loss = loss * (x.shape[0] * self.world_size / total)
                value = backward_checked(
                    loss,
                    self.model.parameters(),
                    grad_clip=self.optimizer_config.grad_clip,
                    world_size=self.world_size,
                    step=step,
                    batch=x,
                )
        except BaseException:
            self.batches.generator.set_state(streams[0])
            self.noise_generator.set_state(streams[1])
            raise
        with self._sigint.held():  # all of the update, or none of it
            self.optimizer_config.apply(self.optimizer, step)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            self.rng_state = rng
            self.step = step
            self.losses.append(value)
        return value

    def run(
        self,
        steps: int | None,
        *,
        max_seconds: float | None = None,
        checkpoint: CheckpointConfig | None = None,
        callback=None,
        progress: bool = True,
    ) -> TrainResult:
        """Train until `self.step == steps` or `max_seconds` have passed.

        The checkpoint (if any) is written every `checkpoint.every` steps, at the end, and when
        the run is interrupted by `KeyboardInterrupt` (Ctrl-C) in a single process; the
        interrupt is then re-raised. Under DDP an interrupt writes nothing (the write needs
        every rank): rely on `checkpoint.every`.

        Args:
            steps: total number of steps (a total, so a resumed trainer finishes the same run);
                None to stop on the time budget only.
            max_seconds: wall-clock budget of this call in seconds, checked after each step; the
                run then stops, writes its checkpoint and reports `stop_reason="max_seconds"`.
            checkpoint: a `CheckpointConfig` (path, every), or None to write nothing.
            callback: called as `callback(trainer)` after every step (`trainer.step`,
                `trainer.losses[-1]`); return `True` to stop early.
            progress: show a tqdm bar with the running loss (rank 0 only).

        Returns:
            A `TrainResult`.

        Raises:
            FileNotFoundError: the checkpoint's directory does not exist (before any step).
            FloatingPointError: a step's loss or gradient is NaN/Inf.
        """
        steps = check_int("steps", steps, allow_none=True)
        if max_seconds is not None:
            max_seconds = check_real("max_seconds", max_seconds, positive=True)
        elif steps is None:
            raise ValueError("give steps=, max_seconds=, or both")
        check_group("checkpoint", checkpoint, CheckpointConfig, allow_none=True)
        if callback is not None:
            check_callable("callback", callback)
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
        if checkpoint is not None:
            checkpoint.check_writable()
        if steps is not None and self.step > steps:
            warnings.warn(
                f"this trainer is already at step {self.step} (from its checkpoint), past "
                f"steps={steps}: nothing was trained and the result holds its {self.step} "
                f"steps; steps is the run's total, so pass steps > {self.step} to train further",
                stacklevel=external_stacklevel(),
            )
        start = time.perf_counter()
        quiet = not progress or self.rank != 0
        bar = tqdm(total=steps, initial=self.step, disable=quiet, desc="train")
        try:
            with self._sigint:
                reason = self._loop(steps, max_seconds, checkpoint, callback, bar, start)
        except KeyboardInterrupt as err:
            if checkpoint is not None and self.world_size == 1:
                self.save(checkpoint.path)
                if sys.version_info >= (3, 11):
                    err.add_note(f"sdescore: step {self.step} saved to {checkpoint.path!r}")
            raise
        finally:
            bar.close()
        if checkpoint is not None:
            self.save(checkpoint.path)
        return TrainResult(
            self.model,
            self.ema_model,
            torch.tensor(self.losses, dtype=torch.float64),
            self.step,
            time.perf_counter() - start,
            reason,
        )

    def _loop(self, steps, max_seconds, checkpoint, callback, bar, start) -> str:
        """Steps until one of the stop conditions; returns the stop reason."""
        every = None if checkpoint is None else checkpoint.every
        while steps is None or self.step < steps:
            self.train_step()
            bar.update(1)
            if self.step % 25 == 0 or self.step == steps:
                recent = self.losses[-100:]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4g}")
            if every and self.step % every == 0:
                self.save(checkpoint.path)
            stop = None
            if callback is not None and callback(self) is True:
                stop = "callback"
            elif max_seconds is not None and time.perf_counter() - start >= max_seconds:
                stop = "max_seconds"
            if self.world_size > 1 and (callback is not None or max_seconds is not None):
                stop = agree(stop, self.device)  # a rank stopping alone leaves the rest waiting
            if stop is not None:
                return stop
        return "steps"

    def state_dict(self) -> dict:
        """This trainer's state (this rank's random streams; `save` adds every rank's)."""
        return io.state_dict(self)

    def save(self, path) -> None:
        """Write a checkpoint that `load` resumes from exactly (see `atomic_save`).

        Under DDP every rank must call it (the run loop does): the ranks' random states are
        gathered, rank 0 writes, and the ranks meet again after the write.

        Raises:
            OSError: the write failed (on every rank under DDP).
        """
        io.save(self, path)

    def load(self, path) -> Trainer:
        """Restore the state saved by `save` into this trainer.

        The checkpoint is checked completely first (checksum, parameterization, SDE, network
        keys and shapes, dtype, optimizer, EMA presence and settings, random states, options);
        only then is anything copied, so a failed load leaves the model, EMA and optimizer
        unchanged. The model's baseline is replaced by the saved one (or removed when none was
        saved).

        Options: this trainer's `optimizer` (`OptimizerConfig`: lr, betas, weight decay,
        warm-up, clipping) and `batch_size` are honoured, with a `UserWarning` naming each
        one that differs from the checkpoint's; `seed`, `dequantize`, `data_range` and the
        EMA's settings must equal the checkpoint's (the random streams and the average continue
        from it), else `ValueError`.

        Raises:
            FileNotFoundError: no file at `path`.
            ValueError: the file is not a Trainer checkpoint of this kind of model and trainer,
                or an option differs that resume cannot honour.
        """
        io.load(self, path)
        return self
