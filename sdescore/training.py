"""A small training loop for score models: AdamW, warm-up, clipping, EMA, checkpoints, resume.

This is a library loop, not a framework: one `Trainer` holding the model, optimizer, EMA and
random state, and `train(...)` as a one-call front end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ._checks import check_callable, check_int, check_real, check_state
from .dequantization import check_bins, dequantize, to_levels
from .distributed import env as dist_env
from .distributed import is_distributed, process_group, rank_seed, shard
from .ema import EMA
from .losses import dsm_loss
from .models.checkpoint import (
    TRAINER_FORMAT,
    atomic_save,
    check_model_state,
    load_model_state,
    model_state,
    safe_load,
)
from .models.score_model import ScoreModel

__all__ = ["TrainResult", "Trainer", "train"]

FORMAT = TRAINER_FORMAT
VERSION = 2  # 2: the network's own RNG stream (dropout) is in the checkpoint
STOP_REASONS = ("steps", "max_seconds", "callback")


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
    """Train a `ScoreModel` with AdamW on a score-matching loss.

    Data: a tensor `(N, *D)` (minibatches drawn with replacement from a generator seeded by
    `seed`) or any iterable of batches, e.g. a `DataLoader` (cycled; an item may be a tensor or
    a tuple/list whose first element is the batch). Batches are moved to the model's device
    and dtype. With tensor data, `load` + `run` continues *exactly* as an uninterrupted run
    (same weights bit for bit on the same machine): the data and noise generators, the
    network's own random stream (dropout), optimizer, EMA and step are all in the checkpoint.
    An iterable restarts from its beginning on resume.

    **Several processes (DDP).** Inside an initialised process group of W > 1 processes (launched
    by `torchrun`; `train` creates the group itself, `Trainer` uses one the caller created with
    `sdescore.distributed.process_group`), the model is wrapped in `DistributedDataParallel`
    (rank 0's initial weights are broadcast). `batch_size` stays the *global* batch: every rank
    draws the same global batch (same data generator) and trains on its contiguous share, the
    losses weighted so that the averaged gradient is that of the global batch even for unequal
    shares. Noise and dropout streams differ per rank (`sdescore.distributed.rank_seed`), so a
    run is reproducible for a fixed seed and world size; with a loss that draws no noise it
    equals the single-process run to float rounding. The EMA is kept on every rank (identical);
    checkpoints are written by rank 0 only, after gathering every rank's random state, and the
    ranks meet after the write (a failed write raises on every rank). Resume needs the same
    world size. An iterable must yield the same global batches on every rank (seed its shuffle).

    Randomness inside the network (dropout, or a loss that ignores `generator=`) draws from
    torch's global RNG; each step runs with that RNG forked (`torch.random.fork_rng`) onto a
    stream seeded by `seed` and kept in the checkpoint (CPU, and the model's CUDA device), so
    training neither depends on nor advances the caller's global RNG.

    A step checks that the loss and the gradient are finite before the optimizer step (one host
    synchronisation per step, which reading the loss value needs anyway); on failure it raises
    `FloatingPointError` naming the step, with the weights, EMA and optimizer as before it.

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
        labels: `(N,)` integer class labels of tensor `data`, drawn with the same indices as
            the examples and passed to the loss as `labels=` (e.g.
            `sdescore.losses.label_dropout_loss` for classifier-free guidance). For an
            iterable, yield `(x, y)` batches and pass `labels=True`.
        dequantize: for discrete data, the number of levels `bins`: `data` then holds integer
            levels `0 .. bins-1` and every batch is uniformly dequantized afresh onto
            `data_range` (see `sdescore.dequantization.dequantize`), with noise from the data
            generator, so exact resume holds. None (default) for continuous data.
        data_range: `(a, b)`, the interval the dequantized data fill (with `dequantize`).
        seed: seeds the data and noise generators (nothing global is seeded).
        checkpoint_path: where `run` writes checkpoints (every `checkpoint_every` steps and at
            the end); None for none.
        checkpoint_every: steps between checkpoints.
        callback: called as `callback(trainer)` after every step (`trainer.step`,
            `trainer.losses[-1]`); return `True` to stop early.
        progress: show a tqdm bar with the running loss (rank 0 only).
        distributed: train under DDP: None (default) when a process group of more than one
            process is initialised, True to require one, False to train this process alone.
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
        dequantize: int | None = None,
        data_range: tuple[float, float] = (-1.0, 1.0),
        labels: torch.Tensor | None = None,
        seed: int = 0,
        checkpoint_path=None,
        checkpoint_every: int | None = None,
        callback=None,
        progress: bool = True,
        distributed: bool | None = None,
    ):
        if not isinstance(model, ScoreModel):
            raise TypeError(f"model must be a ScoreModel, got {type(model).__name__}")
        params = list(model.parameters())
        if not params:
            raise ValueError("model has no trainable parameters (is net an nn.Module?)")
        check_callable("loss", loss, example="sdescore.losses.ddpm_loss")
        if callback is not None:
            check_callable("callback", callback)
        if loss_kwargs is not None and not isinstance(loss_kwargs, dict):
            raise TypeError(f"loss_kwargs must be a dict, got {type(loss_kwargs).__name__}")
        self.bins = self.data_range = None
        if dequantize is not None:
            self.bins, self.data_range = check_bins(dequantize, data_range)
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
        elif not hasattr(data, "__iter__"):
            raise TypeError(
                f"data must be a tensor (N, *D) or an iterable of batches, got {type(data).__name__}"
            )
        self.labels = _check_labels(labels, data)
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
        self.rank, self.world_size = self._setup_distributed(distributed)
        self.optimizer = torch.optim.AdamW(
            params, lr=self.lr, betas=betas, weight_decay=weight_decay
        )
        self.ema = None if ema_decay is None else EMA(model, ema_decay)
        seed = check_int("seed", seed, minimum=0)
        data_device = data.device if isinstance(data, torch.Tensor) else "cpu"
        self.data_generator = torch.Generator(data_device).manual_seed(seed)
        # Rank 0 keeps the single-process seeds (rank_seed(s, 0) == s); other ranks draw their
        # own noise and dropout streams.
        self.noise_generator = torch.Generator(self.device).manual_seed(
            rank_seed(seed + 1, self.rank)
        )
        # The stream the global RNG is forked onto during a step (dropout): CPU, plus the
        # model's CUDA device, seeded from `seed` like the other two.
        self._rng_cuda = self.device.index if self.device.type == "cuda" else None
        if self._rng_cuda is None and self.device.type == "cuda":
            self._rng_cuda = torch.cuda.current_device()
        rng_seed = rank_seed(seed + 2, self.rank)
        self.rng_state = {"cpu": torch.Generator().manual_seed(rng_seed).get_state()}
        if self._rng_cuda is not None:
            gen = torch.Generator(f"cuda:{self._rng_cuda}").manual_seed(rng_seed)
            self.rng_state["cuda"] = gen.get_state()
        self.step = 0
        self.losses: list[float] = []
        self._iter = None

    def _setup_distributed(self, distributed) -> tuple[int, int]:
        """Wrap the model in DDP when asked or when a group exists; return (rank, world size)."""
        self._net = self.model  # what the loss calls
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
        if self.batch_size < where.world_size:
            raise ValueError(
                f"batch_size is the global batch and must be at least the world size "
                f"{where.world_size}, got {self.batch_size}"
            )
        ids = [self.device] if self.device.type == "cuda" else None
        # Buffers (a fitted baseline) are synchronised once here, not at every forward.
        ddp = DistributedDataParallel(self.model, device_ids=ids, forward_sync_buffers=False)
        self._net = _Replica(ddp, self.model)
        return where.rank, where.world_size

    @property
    def ema_model(self) -> ScoreModel:
        """The EMA model (or the model itself without EMA)."""
        return self.model if self.ema is None else self.ema.model

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        y = None
        if isinstance(self.data, torch.Tensor):
            g, n = self.data_generator, self.data.shape[0]
            idx = torch.randint(n, (self.batch_size,), generator=g, device=g.device)
            x = self.data[idx]
            if isinstance(self.labels, torch.Tensor):
                y = self.labels[idx.to(self.labels.device)]
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
                if self.labels is True:
                    if len(x) < 2:
                        raise ValueError("labels=True needs (x, y) batches from the iterable")
                    y = x[1]
                x = x[0]
            elif self.labels is True:
                raise ValueError("labels=True needs (x, y) batches from the iterable")
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"data batches must be tensors, got {type(x).__name__}")
        if self.bins is not None:
            g = self.data_generator
            x, _ = dequantize(
                x.to(g.device), self.bins, self.data_range, generator=g, dtype=self.dtype
            )
        if y is not None:
            y = y.to(self.device)
        return x.to(device=self.device, dtype=self.dtype), y

    def _local_batch(self) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """This rank's share of the next global batch (examples, labels) and its global size."""
        x, y = self._next_batch()  # the whole global batch, identical on every rank
        total = x.shape[0]
        if self.world_size > 1:
            part = shard(total, self.rank, self.world_size)
            x, y = x[part], (None if y is None else y[part])
            if x.shape[0] == 0:
                raise ValueError(
                    f"a batch of {total} examples leaves rank {self.rank} of {self.world_size} "
                    "without data; yield batches of at least the world size"
                )
        return x, y, total

    @contextlib.contextmanager
    def _own_rng(self):
        """Run with torch's global RNG forked onto this trainer's stream; keep its new state."""
        cuda = [] if self._rng_cuda is None else [self._rng_cuda]
        with torch.random.fork_rng(devices=cuda, device_type="cuda"):
            torch.set_rng_state(self.rng_state["cpu"])
            if cuda:
                torch.cuda.set_rng_state(self.rng_state["cuda"], cuda[0])
            yield
            state = {"cpu": torch.get_rng_state()}
            if cuda:
                state["cuda"] = torch.cuda.get_rng_state(cuda[0])
        self.rng_state = state  # only after a step that completed

    def train_step(self) -> float:
        """One optimizer step; returns the loss.

        Raises:
            FloatingPointError: the loss or the gradient is NaN/Inf; the weights, EMA,
                optimizer and random state are those before this step.
        """
        self.model.train()
        with self._own_rng():
            x, y, total = self._local_batch()
            kwargs = self.loss_kwargs if y is None else {**self.loss_kwargs, "labels": y}
            loss = self.loss(self._net, x, generator=self.noise_generator, **kwargs)
            loss = loss.mean()
            if self.world_size > 1:
                # DDP averages gradients over ranks; weighting each rank's mean by its share
                # makes that average the gradient of the global batch's mean loss.
                loss = loss * (x.shape[0] * self.world_size / total)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            params = [p for p in self.model.parameters() if p.grad is not None]
            if self.grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            # One host sync for both checks: the loss value is read every step anyway. A NaN or
            # Inf in any gradient makes the total norm non-finite.
            stats = torch.stack([loss.detach(), norm.to(loss.dtype)])
            if self.world_size > 1:
                # Global mean loss; the norm is the same on every rank (gradients are averaged),
                # so its mean is itself. All ranks then take the same decision below.
                stats = stats / self.world_size
                dist.all_reduce(stats)
            value, norm = stats.tolist()
            step = self.step + 1
            if not torch.isfinite(torch.tensor(value)):
                raise FloatingPointError(
                    f"the loss became {value} at step {step}; lower lr, set grad_clip, or "
                    "check the data (the model weights are those before this step)"
                )
            if not torch.isfinite(torch.tensor(norm)):
                raise FloatingPointError(
                    f"the gradient became non-finite (norm {norm}) at step {step} although the "
                    f"loss is finite ({value}); check the network and loss for operations with "
                    "infinite derivatives (sqrt or log at 0), or lower lr (the weights, EMA and "
                    "optimizer are those before this step)"
                )
            if self.warmup_steps:
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr * min(1.0, step / self.warmup_steps)
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        self.losses.append(value)
        return value

    def run(self, steps: int | None, *, max_seconds: float | None = None) -> TrainResult:
        """Train until `self.step == steps` or `max_seconds` have passed, then checkpoint.

        Args:
            steps: total number of steps (a total, so a resumed trainer finishes the same run);
                None to stop on the time budget only.
            max_seconds: wall-clock budget of this call in seconds, checked after each step; the
                run then stops, writes its checkpoint and reports `stop_reason="max_seconds"`.
        """
        check_int("steps", steps, allow_none=True)
        if max_seconds is not None:
            max_seconds = check_real("max_seconds", max_seconds, positive=True)
        elif steps is None:
            raise ValueError("give steps=, max_seconds=, or both")
        start = time.perf_counter()
        reason = "steps"
        quiet = not self.progress or self.rank != 0
        bar = tqdm(total=steps, initial=self.step, disable=quiet, desc="train")
        try:
            while steps is None or self.step < steps:
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
                stop = None
                if self.callback is not None and self.callback(self) is True:
                    stop = "callback"
                elif max_seconds is not None and time.perf_counter() - start >= max_seconds:
                    stop = "max_seconds"
                if self.world_size > 1 and (self.callback is not None or max_seconds is not None):
                    stop = self._agree(stop)  # a rank stopping alone would leave the rest waiting
                if stop is not None:
                    reason = stop
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
            reason,
        )

    def _agree(self, stop: str | None) -> str | None:
        """The stop decision of all ranks (any rank stopping stops all; callback wins)."""
        code = torch.tensor([0 if stop is None else STOP_REASONS.index(stop)], device=self.device)
        dist.all_reduce(code, op=dist.ReduceOp.MAX)
        code = int(code.item())
        return None if code == 0 else STOP_REASONS[code]

    def _rank_state(self) -> dict:
        return {"noise_generator": self.noise_generator.get_state(), "rng": dict(self.rng_state)}

    def state_dict(self) -> dict:
        """This trainer's state (this rank's random streams; `save` adds every rank's)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": model_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "step": self.step,
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "data_generator": self.data_generator.get_state(),
            "noise_generator": self.noise_generator.get_state(),
            "rng": dict(self.rng_state),
            "world_size": self.world_size,
        }

    def save(self, path) -> None:
        """Write a checkpoint that `load` resumes from exactly (see `atomic_save`).

        Under DDP every rank must call it (the run loop does): the ranks' random states are
        gathered, rank 0 writes, and the ranks meet again after the write.

        Raises:
            OSError: the write failed (on every rank under DDP).
        """
        state = self.state_dict()
        if self.world_size == 1:
            atomic_save(state, path)
            return
        ranks = [None] * self.world_size
        dist.all_gather_object(ranks, self._rank_state())  # also the barrier before the write
        state["ranks"] = ranks
        error = None
        if self.rank == 0:
            try:
                atomic_save(state, path)
            except Exception as err:  # reported to every rank below, then re-raised here
                error = err
        failed = torch.tensor([0 if error is None else 1], device=self.device)
        dist.all_reduce(failed)  # the barrier after: no rank reads a half-written file
        if error is not None:
            raise error
        if failed.item():
            raise OSError(f"rank 0 failed to write the checkpoint {os.fspath(path)!r}")

    def load(self, path) -> Trainer:
        """Restore the state saved by `save` into this trainer (built with the same arguments).

        The checkpoint is checked completely first (checksum, parameterization, SDE, network
        keys and shapes, dtype, optimizer, EMA presence and settings, random states); only then
        is anything copied, so a failed load leaves the model, EMA and optimizer unchanged. The
        model's baseline is replaced by the saved one (or removed when none was saved).

        Raises:
            ValueError: the file is not a Trainer checkpoint of this kind of model and trainer.
        """
        state = safe_load(path, map_location=self.device)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{os.fspath(path)!r} is not an sdescore Trainer checkpoint")
        if state.get("version") not in (1, VERSION):
            raise ValueError(f"unsupported Trainer checkpoint version {state.get('version')!r}")
        self._check(state)
        load_model_state(self.model, state["model"]["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self.losses = state["losses"].tolist()
        self.data_generator.set_state(state["data_generator"].cpu())
        mine = state["ranks"][self.rank] if self.world_size > 1 else state
        self.noise_generator.set_state(mine["noise_generator"].cpu())
        self.rng_state.update({k: v.cpu() for k, v in mine.get("rng", {}).items()})
        self._iter = None
        return self

    def _check(self, state: dict) -> None:
        """Everything `load` will copy, checked without touching this trainer."""
        check_model_state(state["model"], self.model)
        saved_dtype = state["model"]["dtype"]
        if saved_dtype is not None and getattr(torch, saved_dtype) != self.dtype:
            raise ValueError(
                f"checkpoint dtype {saved_dtype} differs from the model's {self.dtype}; exact "
                f"resume needs the same dtype: model.to(torch.{saved_dtype})"
            )
        if (state["ema"] is None) != (self.ema is None):
            saved = "no EMA" if state["ema"] is None else f"an EMA (decay {state['ema']['decay']})"
            raise ValueError(
                f"the checkpoint has {saved} but this trainer has "
                f"{'none' if self.ema is None else 'one'}; build it with the saved ema_decay"
            )
        if self.ema is not None:
            self.ema.check_state_dict(state["ema"])
        self._check_optimizer(state["optimizer"])
        saved_world = state.get("world_size", 1)
        if saved_world != self.world_size:
            raise ValueError(
                f"the checkpoint was written by a run of {saved_world} process(es) and this one "
                f"has {self.world_size}; exact resume needs the same world size (each rank has "
                "its own random streams)"
            )
        mine = state
        if self.world_size > 1:
            ranks = state.get("ranks")
            if not isinstance(ranks, list) or len(ranks) != self.world_size:
                raise ValueError("checkpoint per-rank random states are missing or incomplete")
            mine = ranks[self.rank]
        for name, gen in (("data", self.data_generator), ("noise", self.noise_generator)):
            saved = (state if name == "data" else mine).get(f"{name}_generator")
            if not torch.is_tensor(saved) or saved.shape != gen.get_state().shape:
                raise ValueError(f"checkpoint {name} generator state does not fit this trainer")
        rng = mine.get("rng", {})
        for key, saved in rng.items():
            if key not in self.rng_state or saved.shape != self.rng_state[key].shape:
                raise ValueError(
                    f"checkpoint random state {key!r} does not fit this trainer (saved on "
                    "another device type?)"
                )
        if not torch.is_tensor(state["losses"]) or state["losses"].numel() != int(state["step"]):
            raise ValueError("checkpoint losses and step disagree; the file is inconsistent")

    def _check_optimizer(self, saved: dict) -> None:
        groups = self.optimizer.param_groups
        if not isinstance(saved, dict) or len(saved.get("param_groups", ())) != len(groups):
            raise ValueError("checkpoint optimizer state does not fit this model's parameters")
        params = []
        for g, s in zip(groups, saved["param_groups"], strict=True):
            if len(g["params"]) != len(s["params"]):
                raise ValueError("checkpoint optimizer state does not fit this model's parameters")
            params += list(zip(s["params"], g["params"], strict=True))
        for key, p in params:
            for name, v in saved["state"].get(key, {}).items():
                if torch.is_tensor(v) and v.ndim > 0 and v.shape != p.shape:
                    raise ValueError(
                        f"checkpoint optimizer state {name!r} has shape {tuple(v.shape)} for a "
                        f"parameter of shape {tuple(p.shape)}"
                    )


def _check_labels(labels, data):
    """`labels` as given: None, True (for an iterable of `(x, y)`), or `(N,)` integers."""
    if labels is None:
        return None
    if labels is True:
        if isinstance(data, torch.Tensor):
            raise ValueError("labels=True is for iterables of (x, y) batches; pass the tensor")
        return True
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.ndim != 1:
        got = (
            f"{labels.dtype} tensor of shape {tuple(labels.shape)}"
            if isinstance(labels, torch.Tensor)
            else type(labels).__name__
        )
        raise TypeError(f"labels must be an integer tensor (N,) or True, got {got}")
    if not isinstance(data, torch.Tensor) or labels.shape[0] != data.shape[0]:
        n = data.shape[0] if isinstance(data, torch.Tensor) else "an iterable"
        raise ValueError(
            f"labels must have one entry per example of tensor data, got {labels.shape[0]} "
            f"labels for {n}"
        )
    return labels


def train(
    model: ScoreModel,
    data,
    *,
    steps: int | None,
    max_seconds: float | None = None,
    resume: bool = False,
    **options,
) -> TrainResult:
    """Train `model` for `steps` optimizer steps; see `Trainer` for the options.

    Args:
        model: the `ScoreModel` (trained in place).
        data: tensor `(N, *D)` or iterable of batches (integer levels with `dequantize=`).
        steps: total number of steps (None: until `max_seconds`).
        max_seconds: time budget of this call in seconds; training stops after the step that
            exceeds it, writes the checkpoint, and `TrainResult.stop_reason` says so.
        resume: continue from `options["checkpoint_path"]` if that file exists.
        **options: `Trainer`'s keyword arguments (unknown names raise `TypeError`).

    Returns:
        A `TrainResult` with the model, its EMA, the loss curve and the time taken.

    Example:
        >>> model = ScoreModel(MLPScoreNet(2), VPSDE()).fit_baseline(x)  # doctest: +SKIP
        >>> result = train(model, x, steps=2000, lr=1e-3, batch_size=1024)  # doctest: +SKIP
    """
    path = options.get("checkpoint_path")
    if resume and path is None:
        raise ValueError("resume=True needs checkpoint_path")
    # Under torchrun without a group yet: create it for this call (destroyed on return).
    launched = dist_env().world_size > 1 and options.get("distributed") is not False
    if not launched:  # validation errors first, before any group is created
        return _train(model, data, steps, max_seconds, resume, path, options)
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    with process_group(params[0].device if params else "cpu"):
        return _train(model, data, steps, max_seconds, resume, path, options)


def _train(model, data, steps, max_seconds, resume, path, options) -> TrainResult:
    trainer = Trainer(model, data, **options)
    if resume and os.path.exists(path):
        trainer.load(path)
    return trainer.run(steps, max_seconds=max_seconds)


class _Replica:
    """The model as the loss sees it under DDP: calls go through `DistributedDataParallel` (which
    synchronises the gradients), attributes (`sde`, `parameterization`, ...) come from the model."""

    def __init__(self, ddp: DistributedDataParallel, model: ScoreModel):
        self._ddp, self._model = ddp, model

    def __call__(self, *args, **kwargs):
        return self._ddp(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)

    @property
    def __class__(self):  # so a loss's isinstance check (label_dropout_loss) sees the model
        return type(self._model)
