"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    r"""Keep $\bar\theta \leftarrow \beta\bar\theta + (1 - \beta)\theta$ after every step.

    The average lives in `ema.model`, a deep copy of the tracked module (buffers such as a fitted
    baseline are copied, not averaged). With `warmup=True` the decay at update n is
    $\min(\beta, (1 + n)/(10 + n))$, so that early averages are not dominated by the random
    initialisation (as in TensorFlow's `ExponentialMovingAverage` with `num_updates`).

    Args:
        model: the module whose parameters are averaged.
        decay: $\beta \in [0, 1)$.
        warmup: ramp the decay up over the first updates.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise ValueError(f"decay must be a number in [0, 1), got {decay!r}")
        self.decay, self.warmup = float(decay), bool(warmup)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current parameters of `model` into the average."""
        n = self.num_updates
        beta = min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay
        for avg, p in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.lerp_(p.detach(), 1.0 - beta)
        for avg, b in zip(self.model.buffers(), model.buffers(), strict=True):
            avg.copy_(b)
        self.num_updates = n + 1

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "num_updates": self.num_updates,
            "decay": self.decay,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
