"""Evaluation mode for the entry points that evaluate a score model (likelihood, ELBO, sampling).

A network left in training mode makes these entry points random (dropout) or batch-coupled
(batch norm): the same seed gave log-likelihoods 27 nats apart on one digit. So every evaluation
entry point runs the model in evaluation mode and restores each submodule's own mode afterwards.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["check_data_scale", "evaluation_mode"]


@contextmanager
def evaluation_mode(model) -> Iterator[None]:
    """Run `model` (any `nn.Module`, e.g. a `ScoreModel`) in eval mode inside the block.

    The mode of every submodule is restored on exit, also after an error, so a caller's module
    in training mode stays in training mode. A plain score function (not an `nn.Module`) is left
    alone: put the network it calls in eval mode yourself (`net.eval()`).
    """
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def check_data_scale(model, x: torch.Tensor, *, stacklevel: int = 3) -> None:
    """Warn when `x` lies far outside the data a `ScoreModel` was fitted to.

    Uses the model's Gaussian baseline (per-coordinate mean and std, from `fit_baseline`): a
    coordinate more than 50 of its training stds from its training mean is far outside anything
    the model has seen, typically raw integer levels (0..255) passed to a model trained on
    [-1, 1] without `dequantization=`. Only a warning: the numbers are still computed. One host sync.
    """
    mean = getattr(model, "baseline_mean", None)
    std = getattr(model, "baseline_std", None)
    if not isinstance(mean, torch.Tensor) or not isinstance(std, torch.Tensor):
        return
    if tuple(x.shape[1:]) != tuple(mean.shape):
        return  # the model reports the shape mismatch itself
    z = (x.detach() - mean.to(x.device, x.dtype)) / std.to(x.device, x.dtype).clamp_min(1e-12)
    worst = float(z.abs().max())
    if worst > 50:
        warnings.warn(
            f"x lies far outside the data the model was fitted to: a coordinate is {worst:.0f} "
            "training stds from its training mean. If x holds discrete levels (e.g. 0..255), "
            "pass dequantization=bins (or sdescore.Dequantization(bins, data_range=...)) so that they are dequantized onto the model's range",
            stacklevel=stacklevel,
        )
