"""Shared pieces of the objectives: argument checks, time sampling, weightings, reduction."""

from __future__ import annotations

import torch

from .._checks import as_time, check_callable, check_real, check_state
from ..sdes.base import SDE
from ..sdes.gaussian import GaussianSDE

__all__ = [
    "WEIGHTINGS",
    "call_model",
    "call_weighting",
    "reduce",
    "resolve",
    "sample_time",
    "weight",
]

WEIGHTINGS = ("sigma2", "likelihood", "none")
REDUCTIONS = ("none", "mean", "sum")


def resolve(model, x0, sde, *, gaussian: bool = True) -> SDE:
    """Check `model` and `x0`, and return the SDE (`sde`, else `model.sde`)."""
    check_callable("model", model)
    check_state(x0, "x0")
    if sde is None:
        sde = getattr(model, "sde", None)
        if sde is None:
            raise ValueError(
                "sde is required when model has no .sde attribute (a ScoreModel has one)"
            )
    want = GaussianSDE if gaussian else SDE
    if not isinstance(sde, want):
        raise TypeError(f"sde must be a {want.__name__}, got {type(sde).__name__}")
    return sde


def sample_time(sde: SDE, x0: torch.Tensor, t, eps, generator) -> torch.Tensor:
    """`t` validated as `(B,)`, or drawn uniformly on $[\\epsilon, T]$ when `t is None`."""
    if t is not None:
        return as_time(t, x0, sde.T)
    eps = check_real("eps", eps, positive=True)
    if eps >= sde.T:
        raise ValueError(f"eps must be < T = {sde.T}, got {eps}")
    u = torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)
    return eps + (sde.T - eps) * u


def check_weighting(weighting):
    if weighting is None or callable(weighting):
        return weighting
    if weighting not in WEIGHTINGS:
        raise ValueError(
            f"weighting must be one of {WEIGHTINGS}, None or a callable lambda(t), got {weighting!r}"
        )
    return weighting


def weight(weighting, sde: GaussianSDE, t: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """$\\lambda(t)$ `(B,)`: $\\sigma(t)^2$, $g(t)^2$ (Song et al. 2021b), 1, or a callable's value."""
    if weighting == "sigma2":
        return std.square()
    if weighting == "likelihood":
        return sde.diffusion(t).square()
    if weighting is None or weighting == "none":
        return torch.ones_like(t)
    return call_weighting(weighting, t)


def call_weighting(weighting, t: torch.Tensor) -> torch.Tensor:
    """A callable weighting's value at `t: (B,)`, checked to be a tensor shaped like `t`."""
    return _checked(weighting(t), t, "weighting(t)", "t")


def call_model(model, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """`model(x, t)`, checked to be a tensor shaped like `x: (B, *D)`."""
    return _checked(model(x, t), x, "model(x, t)", "x")


def _checked(out, like: torch.Tensor, call: str, name: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.shape != like.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{call} must return a tensor shaped like {name} {tuple(like.shape)}, got {got}"
        )
    return out


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-example `(B,)` loss, or its mean or sum."""
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
