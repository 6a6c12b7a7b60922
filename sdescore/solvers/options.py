"""Validation of sampler options at the public entry points, with one error style throughout.

Each method accepts a known set of options; an option set for a method that does not use it is
an error (a silently ignored `snr=` on Euler–Maruyama would hide a typo in `method=`).
"""

from __future__ import annotations

import torch

from .._checks import check_bool, check_choice, check_real, check_shape, check_state
from ..sdes.base import SDE

__all__ = [
    "DENOISE",
    "check_denoise",
    "check_flags",
    "check_method",
    "check_positive",
    "check_unused",
    "resolve_start",
]


def check_method(method, valid, *, other, kind: str, hint: str) -> str:
    """`method` if it is in `valid`; a method of the other process (`other`) says where it
    belongs (`kind`) and what to call instead (`hint`); anything else lists the valid names."""
    if isinstance(method, str) and method in other and method not in valid:
        raise ValueError(f"method {method!r} is a {kind} method; {hint}")
    return check_choice("method", method, valid)


def check_unused(method: str, given: dict, allowed: frozenset) -> None:
    """Raise if an option that `method` does not use was set (is not `None`)."""
    bad = sorted(k for k, v in given.items() if v is not None and k not in allowed)
    if bad:
        raise ValueError(
            f"option(s) {bad} do not apply to method {method!r}; "
            f"its options are {sorted(allowed) or 'none'}"
        )


def resolve_start(sde: SDE, shape, x_T, *, generator, device, dtype) -> torch.Tensor:
    """The start state: `x_T` if given (checked against `shape`), else a draw from the prior."""
    if x_T is None:
        if shape is None:
            raise ValueError("give the sample shape (B, *D) as `shape`, or a start state `x_T`")
        shape = check_shape(shape)
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


DENOISE = ("mean", "tweedie", "none")


def check_denoise(denoise) -> str:
    """`denoise` as one of `DENOISE`; `True` means `"tweedie"` and `False` means `"none"`."""
    if isinstance(denoise, bool):
        return "tweedie" if denoise else "none"
    if not isinstance(denoise, str):
        raise TypeError(f"denoise must be one of {DENOISE} or a bool, got {denoise!r}")
    if denoise not in DENOISE:
        raise ValueError(f"denoise must be one of {DENOISE} or a bool, got {denoise!r}")
    return denoise


def check_flags(progress, return_info, trajectory) -> None:
    for name, value in (
        ("progress", progress),
        ("return_info", return_info),
        ("trajectory", trajectory),
    ):
        check_bool(name, value)
    if trajectory and not return_info:
        raise ValueError("trajectory=True needs return_info=True (the path is in the result)")
