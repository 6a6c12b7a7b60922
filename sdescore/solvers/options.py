"""Validation of sampler options at the public entry points, with one error style throughout.

Each method accepts a known set of options; an option set for a method that does not use it is
an error (a silently ignored `snr=` on Euler–Maruyama would hide a typo in `method=`).
"""

from __future__ import annotations

import torch

from .._checks import check_real, check_state
from ..sdes.base import SDE

__all__ = [
    "check_bool",
    "check_choice",
    "check_eps",
    "check_flags",
    "check_int",
    "check_positive",
    "check_unused",
    "resolve_start",
]


def check_choice(name: str, value, valid: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}")
    return value


def check_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_unused(method: str, given: dict, allowed: frozenset) -> None:
    """Raise if an option that `method` does not use was set (is not `None`)."""
    bad = sorted(k for k, v in given.items() if v is not None and k not in allowed)
    if bad:
        raise ValueError(
            f"option(s) {bad} do not apply to method {method!r}; "
            f"its options are {sorted(allowed) or 'none'}"
        )


def check_eps(eps, T: float) -> float:
    eps = check_real("eps", eps, positive=True)
    if eps >= T:
        raise ValueError(f"eps must lie in (0, T) = (0, {T}), got {eps}")
    return eps


def resolve_start(sde: SDE, shape, x_T, *, generator, device, dtype) -> torch.Tensor:
    """The start state: `x_T` if given (checked against `shape`), else a draw from the prior."""
    if x_T is None:
        if shape is None:
            raise ValueError("give the sample shape (B, *D) as `shape`, or a start state `x_T`")
        if isinstance(shape, torch.Size):
            shape = tuple(shape)
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = (shape,)
        if (
            not isinstance(shape, tuple)
            or not shape
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)
        ):
            raise ValueError(f"shape must be a tuple of positive ints (B, *D), got {shape!r}")
        return sde.prior_sampling(shape, generator=generator, device=device, dtype=dtype)
    check_state(x_T, "x_T")
    if shape is not None and tuple(shape) != tuple(x_T.shape):
        raise ValueError(f"shape {tuple(shape)} does not match x_T's shape {tuple(x_T.shape)}")
    if device is not None and torch.device(device) != x_T.device:
        raise ValueError(f"device={device} conflicts with x_T on {x_T.device}")
    if dtype is not None and dtype != x_T.dtype:
        raise ValueError(f"dtype={dtype} conflicts with x_T of dtype {x_T.dtype}")
    return x_T


def check_positive(name: str, value) -> float:
    return check_real(name, value, positive=True)


def check_flags(progress, return_info, trajectory, denoise) -> None:
    for name, value in (
        ("progress", progress),
        ("return_info", return_info),
        ("trajectory", trajectory),
        ("denoise", denoise),
    ):
        check_bool(name, value)
    if trajectory and not return_info:
        raise ValueError("trajectory=True needs return_info=True (the path is in the result)")
