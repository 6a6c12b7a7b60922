"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ._checks import check_bool

__all__ = ["EMA"]


class EMA:
    r"""Keep $\bar\theta \leftarrow \beta\bar\theta + (1 - \beta)\theta$ after every step.

    The average lives in `ema.model`, a deep copy of the tracked module (buffers such as a fitted
    baseline are copied, not averaged). Parameters and buffers are paired by name, and a module
    of another structure is refused. With `warmup=True` the decay at update n is
    $\min(\beta, (1 + n)/(10 + n))$, so that early averages are not dominated by the random
    initialisation (as in TensorFlow's `ExponentialMovingAverage` with `num_updates`).

    Args:
        model: the module whose parameters are averaged.
        decay: $\beta \in [0, 1)$.
        warmup: ramp the decay up over the first updates (a bool).

    Raises:
        TypeError: `model` is not an `nn.Module`, `warmup` is not a bool, or `decay` is not a
            number (a bool included).
        ValueError: `decay` is not in [0, 1).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)):
            raise TypeError(
                f"decay must be a float in [0, 1) (e.g. 0.999), got {type(decay).__name__} "
                f"{decay!r}"
            )
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be a number in [0, 1), got {decay!r}")
        self.decay, self.warmup = float(decay), check_bool("warmup", warmup)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current parameters of `model` into the average, pairing them by name.

        Buffers are mirrored by name, including ones set after the EMA was built (a baseline
        fitted later is copied in; one removed is removed). Everything is checked before
        anything changes.

        Raises:
            ValueError: `model` does not have the structure of the averaged module (other
                parameter or buffer names, or other shapes).
        """
        avg = dict(self.model.named_parameters())
        pairs = [(avg.get(name), p) for name, p in model.named_parameters()]
        if len(pairs) != len(avg) or any(a is None or a.shape != p.shape for a, p in pairs):
            _refuse(avg, dict(model.named_parameters()), "parameters")
        _check_buffers(self.model, dict(model.named_buffers()))
        n = self.num_updates
        beta = min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay
        for a, p in pairs:
            a.lerp_(p.detach(), 1.0 - beta)
        _set_buffers(self.model, dict(model.named_buffers()))
        self.num_updates = n + 1

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "num_updates": self.num_updates,
            "decay": self.decay,
            "warmup": self.warmup,
        }

    def check_state_dict(self, state: dict) -> None:
        """Raise a `ValueError` if `state` cannot be loaded (nothing is modified)."""
        if not isinstance(state, dict) or not {"model", "num_updates", "decay"} <= state.keys():
            raise ValueError("not an EMA state: expected the keys model, num_updates, decay")
        saved = (state["decay"], state.get("warmup", self.warmup))
        if saved != (self.decay, self.warmup):
            raise ValueError(
                f"checkpoint EMA decay {saved[0]} (warmup={saved[1]}) differs from this EMA's "
                f"{self.decay} (warmup={self.warmup}); build it with the saved settings"
            )
        sd = state["model"]
        buffers = dict(self.model.named_buffers())
        params = {k: v for k, v in sd.items() if k not in buffers and _slot(self.model, k) is None}
        _check_buffers(self.model, {k: v for k, v in sd.items() if k not in params})
        have = dict(self.model.named_parameters())
        if params.keys() != have.keys() or any(v.shape != have[k].shape for k, v in params.items()):
            _refuse(have, params, "parameters")

    def load_state_dict(self, state: dict) -> None:
        self.check_state_dict(state)
        sd = state["model"]
        _set_buffers(self.model, {k: v for k, v in sd.items() if _slot(self.model, k) is not None})
        self.model.load_state_dict(sd)
        self.num_updates = int(state["num_updates"])


def _slot(module: nn.Module, name: str):
    """`(owner, leaf)` when `name` is a registered buffer slot of `module` (even if None)."""
    prefix, _, leaf = name.rpartition(".")
    try:
        owner = module.get_submodule(prefix)
    except AttributeError:
        return None
    return (owner, leaf) if leaf in owner._buffers else None


def _check_buffers(ema_model: nn.Module, src: dict) -> None:
    dst = dict(ema_model.named_buffers())
    for name, b in src.items():
        if _slot(ema_model, name) is None or (name in dst and dst[name].shape != b.shape):
            _refuse(dst, src, "buffers")


def _set_buffers(ema_model: nn.Module, src: dict) -> None:
    # Buffers are copied, not averaged; a slot that is None on one side follows the other.
    dst = dict(ema_model.named_buffers())
    for name in dst.keys() - src.keys():
        owner, leaf = _slot(ema_model, name)
        setattr(owner, leaf, None)
    for name, b in src.items():
        if name in dst:
            dst[name].copy_(b)
        else:
            owner, leaf = _slot(ema_model, name)
            setattr(owner, leaf, b.detach().clone())


def _refuse(have: dict, got: dict, what: str):
    diff = sorted(
        set(have) ^ set(got) | {k for k in set(have) & set(got) if have[k].shape != got[k].shape}
    )
    raise ValueError(
        f"the model does not have the structure of the EMA's copy ({what} differ: {diff}); "
        "an EMA averages one fixed architecture, build a new EMA for a new one"
    )
