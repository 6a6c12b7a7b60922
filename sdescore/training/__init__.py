"""Training score models, along its concerns.

- `config`: the option groups `OptimizerConfig`, `EMAConfig`, `CheckpointConfig`;
- `step`: `train_step`, one optimizer step on one batch, for a loop of one's own;
- `loop`: `Trainer` (state, one step at a time, `run`); `entry`: `train`, its one-call front end;
- `data`: the Trainer's batches; `ddp`: the loss under DistributedDataParallel; `interrupts`:
  Ctrl-C held back during a step's update;
- `checkpoint`: the Trainer's checkpoint, and what resume honours or refuses.
"""

from __future__ import annotations

from .config import CheckpointConfig, EMAConfig, OptimizerConfig
from .ddp import DistributedLoss
from .entry import train
from .loop import Trainer, TrainResult
from .step import train_step

__all__ = [
    "CheckpointConfig",
    "DistributedLoss",
    "EMAConfig",
    "OptimizerConfig",
    "TrainResult",
    "Trainer",
    "train",
    "train_step",
]
