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

__all__ = [
    "check_data_scale",
    "check_event_shape",
    "evaluation_mode",
    "full_model_dtype",
    "model_dtype",
    "to_model_dtype",
]

_FULL = (torch.float32, torch.float64)


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


def model_dtype(model) -> torch.dtype | None:
    """The floating dtype of a model's network parameters (a `ScoreModel`'s net, or any
    `nn.Module`), or `None` for a plain score function or a module without floating parameters.
    """
    net = getattr(model, "net", model)
    for module in (net, model):
        if isinstance(module, nn.Module):
            for p in module.parameters():
                if p.is_floating_point():
                    return p.dtype
    return None


def full_model_dtype(model) -> torch.dtype | None:
    """`model_dtype` when it is float32 or float64 (the dtype data are converted to), else None."""
    dtype = model_dtype(model)
    return dtype if dtype in _FULL else None


def to_model_dtype(model, x: torch.Tensor) -> torch.Tensor:
    """The library's one dtype rule for data given to an entry point together with a model:
    **the model's dtype decides**. Float32/float64 data are converted to the dtype of the
    network's parameters (float32/float64) before any work, as `train` does with its batches, so
    the float64 arrays numpy makes by default work with a float32 model everywhere, and the
    results come in the model's dtype. A plain score function (no parameters) keeps the data's
    dtype (float64 in, float64 out). Half-precision models and data are left to the entry points'
    own checks (run half-precision networks under `torch.autocast` instead).
    """
    dtype = full_model_dtype(model)
    if dtype is not None and isinstance(x, torch.Tensor) and x.dtype in _FULL:
        return x.to(dtype)
    return x


def check_event_shape(model, x: torch.Tensor, name: str = "x") -> None:
    """Refuse data `x: (N, *D)` whose `D` does not fit the shape the model's network declares.

    The network declares it as `event_shape` (`MLPScoreNet`: `(dim,)`; `UNet`:
    `(in_channels, None, None)`, None for a free size); a network without one is not checked.
    An entry point checks what the user passed, so the message names `name` and that shape
    rather than an internal batch's.

    Raises:
        ValueError: `x`'s shape does not fit.
    """
    net = getattr(model, "net", model)
    expected = getattr(net, "event_shape", None)
    if not isinstance(expected, tuple) or not isinstance(x, torch.Tensor) or x.ndim < 1:
        return
    got = tuple(x.shape[1:])
    fits = len(got) == len(expected) and all(
        e is None or e == g for e, g in zip(expected, got, strict=True)
    )
    if not fits:
        letters = iter("HWXYZ")
        dims = ", ".join(str(e) if e is not None else next(letters, "?") for e in expected)
        raise ValueError(
            f"{name} must have shape (N, {dims}) for this model's {type(net).__name__}, got "
            f"{tuple(x.shape)}"
        )


def check_data_scale(model, x: torch.Tensor, *, stacklevel: int = 3) -> None:
    """Warn when `x` lies far outside a model's training data or looks like discrete levels.

    At most one warning (the numbers are still computed), each check one host sync:

    - a `ScoreModel` with a Gaussian baseline (`fit_baseline`): a coordinate more than 50 of its
      training stds from its training mean, far outside anything the model has seen;
    - any model (a plain score function, a diffusers model): every value of `x` is a whole
      number >= 0 and the largest is at least 15, as raw 4- to 8-bit levels (0..255) are; a
      continuous density at such points is no likelihood of the discrete data (image
      likelihoods dequantize them: `dequantization=`).
    """
    xd = x.detach()
    if _far_from_baseline(model, xd, stacklevel + 1):
        return
    if bool(((xd >= 0) & (xd == xd.round())).all()) and float(xd.max()) >= 15:
        warnings.warn(
            f"x holds only whole numbers from {float(xd.min()):g} to {float(xd.max()):g}: these "
            "look like discrete levels (e.g. 0..255 pixels), whose continuous density is not a "
            "likelihood of the data. Pass dequantization=... (e.g. 256, or "
            "sdescore.Dequantization(256, data_range=...) for the model's range) so that they are dequantized onto it",
            stacklevel=stacklevel,
        )


def _far_from_baseline(model, x: torch.Tensor, stacklevel: int) -> bool:
    mean = getattr(model, "baseline_mean", None)
    std = getattr(model, "baseline_std", None)
    if not isinstance(mean, torch.Tensor) or not isinstance(std, torch.Tensor):
        return False
    if tuple(x.shape[1:]) != tuple(mean.shape):
        return False  # the model reports the shape mismatch itself
    z = (x - mean.to(x.device, x.dtype)) / std.to(x.device, x.dtype).clamp_min(1e-12)
    worst = float(z.abs().max())
    if worst > 50:
        warnings.warn(
            f"x lies far outside the data the model was fitted to: a coordinate is {worst:.0f} "
            "training stds from its training mean. If x holds discrete levels (e.g. 0..255), "
            "pass dequantization=bins (or sdescore.Dequantization(bins, data_range=...)) so that they are dequantized onto the model's range",
            stacklevel=stacklevel,
        )
    return worst > 50
