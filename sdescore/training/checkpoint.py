"""A Trainer's checkpoint: what it holds, how it is written and read, and what resume honours.

Written with `sdescore.models.checkpoint.atomic_save` (atomic, with a checksum) and read with
`safe_load` (`weights_only=True`). A checkpoint is checked completely before anything is copied,
so a failed load leaves the trainer as it was.

On resume each option of the new trainer is either honoured or refused (docs/training.md):
the optimizer's settings (`OptimizerConfig`) and `batch_size` are honoured, with a warning
naming what changed; `seed`, `dequantize`/`data_range`, the EMA's settings, the model, its dtype
and the world size are refused with a `ValueError` when they differ from the checkpoint's.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import torch
import torch.distributed as dist

from ..models.checkpoint import (
    TRAINER_FORMAT,
    atomic_save,
    check_model_state,
    load_model_state,
    model_state,
    safe_load,
)

__all__ = ["load", "save", "state_dict"]

FORMAT = TRAINER_FORMAT
# 2: the network's own RNG stream (dropout); 3: the options, checked on resume
VERSION = 3


def _config(trainer) -> dict:
    return {
        "seed": trainer.seed,
        "batch_size": trainer.batch_size,
        "optimizer": dataclasses.asdict(trainer.optimizer_config),
        "dequantize": trainer.batches.bins,
        "data_range": trainer.batches.data_range,
    }


def _rank_state(trainer) -> dict:
    return {"noise_generator": trainer.noise_generator.get_state(), "rng": dict(trainer.rng_state)}


def state_dict(trainer) -> dict:
    """The trainer's state (this rank's random streams; `save` adds every rank's)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": model_state(trainer.model),
        "optimizer": trainer.optimizer.state_dict(),
        "ema": None if trainer.ema is None else trainer.ema.state_dict(),
        "step": trainer.step,
        "losses": torch.tensor(trainer.losses, dtype=torch.float64),
        "data_generator": trainer.batches.generator.get_state(),
        "noise_generator": trainer.noise_generator.get_state(),
        "rng": dict(trainer.rng_state),
        "world_size": trainer.world_size,
        "config": _config(trainer),
    }


def save(trainer, path) -> None:
    """Write `trainer`'s checkpoint to `path`; under DDP every rank calls it, rank 0 writes."""
    state = state_dict(trainer)
    if trainer.world_size == 1:
        atomic_save(state, path)
        return
    ranks = [None] * trainer.world_size
    dist.all_gather_object(ranks, _rank_state(trainer))  # also the barrier before the write
    state["ranks"] = ranks
    error = None
    if trainer.rank == 0:
        try:
            atomic_save(state, path)
        except Exception as err:  # reported to every rank below, then re-raised here
            error = err
    failed = torch.tensor([0 if error is None else 1], device=trainer.device)
    dist.all_reduce(failed)  # the barrier after: no rank reads a half-written file
    if error is not None:
        raise error
    if failed.item():
        raise OSError(f"rank 0 failed to write the checkpoint {os.fspath(path)!r}")


def load(trainer, path) -> None:
    """Check the checkpoint at `path` against `trainer` completely, then copy it in."""
    state = safe_load(path, map_location=trainer.device)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not an sdescore Trainer checkpoint")
    if state.get("version") not in (1, 2, VERSION):
        raise ValueError(f"unsupported Trainer checkpoint version {state.get('version')!r}")
    _check(trainer, state)
    changed = _check_config(trainer, state.get("config"))
    if changed:
        warnings.warn(
            f"resuming {os.fspath(path)!r} with {', '.join(changed)}: honoured from here on, so "
            "the run no longer equals an uninterrupted one",
            stacklevel=3,
        )
    load_model_state(trainer.model, state["model"]["state_dict"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.ema is not None:
        trainer.ema.load_state_dict(state["ema"])
    trainer.step = int(state["step"])
    trainer.losses = state["losses"].tolist()
    trainer.batches.generator.set_state(state["data_generator"].cpu())
    mine = state["ranks"][trainer.rank] if trainer.world_size > 1 else state
    trainer.noise_generator.set_state(mine["noise_generator"].cpu())
    trainer.rng_state.update({k: v.cpu() for k, v in mine.get("rng", {}).items()})
    trainer.batches.restart()
    # The saved param groups carry the saved lr, betas and weight decay: this trainer's win.
    trainer.optimizer_config.apply(trainer.optimizer, trainer.step + 1)


def _check_config(trainer, saved) -> list[str]:
    """Refuse options that resume cannot honour; list the honoured changes."""
    if saved is None:  # version 1-2 checkpoints did not record their options
        return []
    if not isinstance(saved, dict) or not isinstance(saved.get("optimizer"), dict):
        raise ValueError("checkpoint options are malformed; the file is inconsistent")
    mine = _config(trainer)
    for name, why in (
        ("seed", "the random streams continue from the checkpoint, a new seed would be ignored"),
        ("dequantize", "the data would change meaning"),
        ("data_range", "the data would change meaning"),
    ):
        if saved.get(name) != mine[name]:
            raise ValueError(
                f"the checkpoint was written with {name}={saved.get(name)!r} and this trainer has "
                f"{name}={mine[name]!r}; resume with the saved value ({why})"
            )
    changed = []
    if saved.get("batch_size") != mine["batch_size"]:
        changed.append(f"batch_size {mine['batch_size']} (saved {saved.get('batch_size')})")
    for key, value in mine["optimizer"].items():
        old = saved["optimizer"].get(key)
        if old != value and not (isinstance(old, (list, tuple)) and tuple(old) == tuple(value)):
            changed.append(f"{key} {value!r} (saved {old!r})")
    return changed


def _check(trainer, state: dict) -> None:
    """Everything `load` will copy, checked without touching the trainer."""
    check_model_state(state["model"], trainer.model)
    saved_dtype = state["model"]["dtype"]
    if saved_dtype is not None and getattr(torch, saved_dtype) != trainer.dtype:
        raise ValueError(
            f"checkpoint dtype {saved_dtype} differs from the model's {trainer.dtype}; exact "
            f"resume needs the same dtype: model.to(torch.{saved_dtype})"
        )
    if (state["ema"] is None) != (trainer.ema is None):
        saved = "no EMA" if state["ema"] is None else f"an EMA (decay {state['ema']['decay']})"
        raise ValueError(
            f"the checkpoint has {saved} but this trainer has "
            f"{'none' if trainer.ema is None else 'one'}; build it with the saved ema= "
            "(EMAConfig, or None)"
        )
    if trainer.ema is not None:
        trainer.ema.check_state_dict(state["ema"])
    _check_optimizer(trainer.optimizer, state["optimizer"])
    saved_world = state.get("world_size", 1)
    if saved_world != trainer.world_size:
        raise ValueError(
            f"the checkpoint was written by a run of {saved_world} process(es) and this one "
            f"has {trainer.world_size}; exact resume needs the same world size (each rank has "
            "its own random streams)"
        )
    mine = state
    if trainer.world_size > 1:
        ranks = state.get("ranks")
        if not isinstance(ranks, list) or len(ranks) != trainer.world_size:
            raise ValueError("checkpoint per-rank random states are missing or incomplete")
        mine = ranks[trainer.rank]
    for name, gen in (("data", trainer.batches.generator), ("noise", trainer.noise_generator)):
        saved = (state if name == "data" else mine).get(f"{name}_generator")
        if not torch.is_tensor(saved) or saved.shape != gen.get_state().shape:
            raise ValueError(f"checkpoint {name} generator state does not fit this trainer")
    for key, saved in mine.get("rng", {}).items():
        if key not in trainer.rng_state or saved.shape != trainer.rng_state[key].shape:
            raise ValueError(
                f"checkpoint random state {key!r} does not fit this trainer (saved on "
                "another device type?)"
            )
    if not torch.is_tensor(state["losses"]) or state["losses"].numel() != int(state["step"]):
        raise ValueError("checkpoint losses and step disagree; the file is inconsistent")


def _check_optimizer(optimizer, saved: dict) -> None:
    groups = optimizer.param_groups
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
