"""Input validation for the public entry points.

Every check names the argument, what was expected and what was received. Value checks that
would force a host-device synchronisation (range or NaN checks on a CUDA tensor) are only done
for CPU tensors and Python numbers, so that solver loops on an accelerator never stall on them.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import sys

import torch

__all__ = [
    "as_time",
    "as_time_only",
    "check_bool",
    "check_callable",
    "check_choice",
    "check_dtype",
    "check_end_time",
    "check_generator",
    "check_int",
    "is_int",
    "nonfinite_rows",
    "check_shape",
    "check_finite_tensor",
    "check_output_shape",
    "check_real",
    "check_sigma_positive",
    "check_state",
    "check_seed",
    "check_input_dtype",
    "external_stacklevel",
]


def check_real(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> float:
    """Return `value` as a finite Python float, or raise naming `name`."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(
                f"{name} must be a real number, got a tensor of shape {tuple(value.shape)}"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def is_int(value) -> bool:
    """Whether `value` is an integer: a Python or numpy int (`numbers.Integral`), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, *, minimum: int = 1, allow_none: bool = False):
    """Return `value` as a Python int if it is an integer >= `minimum` (a numpy integer
    included, bools and floats refused), or None when `allow_none`; else raise."""
    if value is None and allow_none:
        return None
    if not is_int(value):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_dtype(name: str, dtype) -> torch.dtype | None:
    """A floating-point `torch.dtype` for a draw (or None: torch's default), else raise.

    Raises:
        TypeError: `dtype` is not a `torch.dtype` (a string such as `"float64"`, a numpy dtype).
        ValueError: an integer, bool or complex `torch.dtype`.
    """
    if dtype is None:
        return None
    if not isinstance(dtype, torch.dtype):
        hint = f" (torch.{dtype})" if isinstance(dtype, str) and hasattr(torch, dtype) else ""
        raise TypeError(
            f"{name} must be a floating-point torch.dtype such as torch.float32{hint} or None, "
            f"got {type(dtype).__name__} {dtype!r}"
        )
    if not dtype.is_floating_point:
        raise ValueError(
            f"{name} must be a floating-point torch.dtype (torch.float16, torch.bfloat16, "
            f"torch.float32 or torch.float64) or None, got {dtype}"
        )
    return dtype


def check_generator(name: str, generator) -> torch.Generator | None:
    """A `torch.Generator` or None, else a `TypeError` naming `name` and the type received.

    Only the type is checked: the generator's device is matched against the data's where it
    is used (torch's own error).
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        hint = (
            f"; to seed, pass torch.Generator().manual_seed({generator})"
            if is_int(generator)
            else ""
        )
        raise TypeError(
            f"{name} must be a torch.Generator or None, got {type(generator).__name__}{hint}"
        )
    return generator


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_choice(name: str, value, valid) -> str:
    """Return `value` if it is one of the strings `valid`, else raise listing them."""
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}")
    return value


def check_end_time(eps, T: float) -> float:
    """A solver's small end (or start) time `eps`, in (0, T)."""
    eps = check_real("eps", eps, positive=True)
    if eps >= T:
        raise ValueError(f"eps must lie in (0, T) = (0, {T}), got {eps}")
    return eps


def check_shape(shape) -> tuple[int, ...]:
    """A state shape `(B, *D)` of positive ints; an int, list or `torch.Size` is accepted."""
    if isinstance(shape, (torch.Size, list)):
        shape = tuple(shape)
    if is_int(shape):
        shape = (shape,)
    if not isinstance(shape, tuple) or not shape or any(not is_int(s) or s < 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive ints (B, *D), got {shape!r}")
    return tuple(int(s) for s in shape)


def check_callable(name: str, fn, *, example: str | None = None) -> None:
    """Raise unless `fn` is callable; a string gets "pass the object, not its name".

    Args:
        name: the argument's name.
        fn: the value received.
        example: a callable to suggest, e.g. `"sdescore.losses.ddpm_loss"`.
    """
    if callable(fn):
        return
    hint = f" such as {example}" if example else ""
    if isinstance(fn, str):
        raise TypeError(
            f"{name} must be callable{hint}, got the string {fn!r}; pass the function or "
            "object itself, not its name"
        )
    raise TypeError(f"{name} must be callable{hint}, got {type(fn).__name__}")


def check_state(x, name: str = "x") -> torch.Tensor:
    """A state `(B, *D)`: a floating-point tensor with a batch dimension and `B >= 1`.

    Raises:
        TypeError: if `x` is not a floating-point tensor.
        ValueError: if `x` is 0-d or its batch is empty (`B = 0`).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, *D), got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension, shape (B, *D); got a 0-d tensor")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] == 0:
        # One behaviour for every entry point: an empty batch is refused here rather than
        # crashing deep inside a solver, a reduction or a network.
        raise ValueError(
            f"{name} must have at least one example (B >= 1), got shape {tuple(x.shape)}"
        )
    return x


def check_finite_tensor(x: torch.Tensor, name: str = "x") -> None:
    """Raise if `x` holds NaN or Inf (this synchronises with the device: entry points only).

    The message says how many rows (examples along dimension 0) hold one, and the first.
    """
    if bool(torch.isfinite(x).all()):
        return
    if x.ndim == 0:
        raise ValueError(f"{name} contains NaN or Inf values")
    bad = nonfinite_rows(x)
    first = int(bad.nonzero()[0, 0])
    raise ValueError(
        f"{name} contains NaN or Inf values in {int(bad.sum())} of {x.shape[0]} rows (the first "
        f"at index {first})"
    )


def nonfinite_rows(x: torch.Tensor) -> torch.Tensor:
    """`(N,)` bool: which rows of `x: (N, ...)` (examples along dimension 0) hold NaN or Inf."""
    return ~torch.isfinite(x.detach().reshape(x.shape[0], -1)).all(dim=1)


def as_time(t, like: torch.Tensor, T: float, name: str = "t") -> torch.Tensor:
    """Convert `t` to a `(B,)` tensor on `like`'s device and dtype, with `B = like.shape[0]`.

    Accepts a Python number, a 0-d or 1-element floating tensor (broadcast to the batch), or a
    `(B,)` floating tensor (integer tensors are refused, as by `as_time_only`). Values must lie
    in `[0, T]`; the range is checked for numbers and CPU tensors.
    """
    batch = like.shape[0]
    if isinstance(t, numbers.Real) and not isinstance(t, bool):
        t = float(t)
        if not (0.0 <= t <= T):
            raise ValueError(f"{name} must lie in [0, T] = [0, {T}], got {t}")
        return torch.full((batch,), t, device=like.device, dtype=like.dtype)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a float or a tensor of shape (B,), got {type(t).__name__}")
    _check_time_dtype(t, name)
    if t.ndim == 0 or (t.ndim == 1 and t.shape[0] == 1 and batch != 1):
        t = t.reshape(1).expand(batch)
    elif t.shape != (batch,):
        raise ValueError(
            f"{name} must have shape ({batch},) to match the batch of the state, "
            f"got {tuple(t.shape)}"
        )
    _check_time_range(t, T, name)
    return t.to(device=like.device, dtype=like.dtype)


def as_time_only(t, T: float, name: str = "t") -> torch.Tensor:
    """Validate a time given without a state: a number becomes a 0-d tensor, a tensor is kept."""
    if isinstance(t, numbers.Real) and not isinstance(t, bool):
        t = float(t)
        if not (0.0 <= t <= T):
            raise ValueError(f"{name} must lie in [0, T] = [0, {T}], got {t}")
        return torch.tensor(t, dtype=torch.get_default_dtype())
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a float or a tensor of shape (B,), got {type(t).__name__}")
    _check_time_dtype(t, name)
    _check_time_range(t, T, name)
    return t


def _check_time_dtype(t: torch.Tensor, name: str) -> None:
    # Integer times would be truncated (or, without a state, give integer coefficients): refuse
    # them alike in every entry point that takes a time.
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def _check_time_range(t: torch.Tensor, T: float, name: str) -> None:
    # Value checks only where they cost no device synchronisation (see the module docstring).
    if t.device.type == "cpu":
        bad = torch.isnan(t) | (t < 0) | (t > T)
        if bool(bad.any()):
            raise ValueError(f"{name} must lie in [0, T] = [0, {T}], got {t[bad][0].item()}")


def check_sigma_positive(sigma: torch.Tensor, t: torch.Tensor, sde, what: str) -> None:
    """Refuse times where the kernel std $\\sigma(t)$ vanishes (t = 0 for VP, sub-VP, LinearSDE).

    `what` names the quantity that divides by $\\sigma(t)$. Checked for CPU tensors only (no device sync).

    Raises:
        ValueError: naming the first such time, the SDE and what to do.
    """
    if sigma.device.type == "cpu":
        bad = ~(sigma > 0)
        if bool(bad.any()):
            raise ValueError(
                f"t must be > 0 where sigma(t) = 0: {what} is undefined at "
                f"t = {t.reshape(-1)[bad.reshape(-1)][0].item()} for {sde!r}; "
                "use times t >= eps > 0 (the defaults: eps = 1e-3 for the samplers, 1e-5 for "
                "the losses, likelihood and elbo)"
            )


def check_output_shape(out, x: torch.Tensor, what: str) -> torch.Tensor:
    """Check that a user callable returned a floating-point tensor shaped like the state `x`
    (metadata only: no device synchronisation). An integer answer would be truncated where it
    is combined with the state, so it is refused rather than used."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{what} must return a torch.Tensor, got {type(out).__name__}")
    if not out.is_floating_point():
        raise TypeError(
            f"{what} must return a floating-point tensor, got dtype {out.dtype} (an integer "
            "answer would be truncated and used as if it were the value)"
        )
    if out.shape != x.shape:
        raise ValueError(
            f"{what} returned shape {tuple(out.shape)}, expected the state's shape {tuple(x.shape)}"
        )
    return out


def moved_keywords(moved, *, shorthands=()):
    """Decorator: a keyword that the function does not take (an option that moved onto an object
    when the options were grouped) gets a `TypeError` saying what to write instead.

    `moved` says where each went: a dict, `moved[name]` a hint with `{v}` for the value given
    (any other unknown keyword gets a message naming it); or, where the answer depends on the
    call (the sampling entry points: on its `method=`), a callable
    `moved(fn, unknown, kwargs) -> str` that writes the whole message for the sorted unknown
    names. The public signature (what `inspect.signature` reports) is the function's own.
    `shorthands`: the names the function's `**kwargs` accepts; any other is unknown.
    """
    explain = moved if callable(moved) else functools.partial(_moved_message, moved, shorthands)

    def decorate(fn):
        params = set(inspect.signature(fn).parameters) | set(shorthands)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            unknown = sorted(k for k in kwargs if k not in params)
            if unknown:
                raise TypeError(explain(fn, unknown, kwargs))
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def _moved_message(moved: dict, shorthands, fn, unknown: list, kwargs: dict) -> str:
    hints = [
        f"{k}= is now {moved[k].format(v=kwargs[k])}"
        if k in moved
        else f"unexpected keyword argument {k!r}"
        for k in unknown
    ]
    params = [p.name for p in inspect.signature(fn).parameters.values() if p.kind != p.VAR_KEYWORD]
    params += list(shorthands)
    return f"{fn.__name__}(): " + "; ".join(hints) + f". It takes {params}"


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def external_stacklevel() -> int:
    """The `stacklevel` for `warnings.warn` that points at the first caller outside sdescore.

    Call it in the function that warns: `warnings.warn(msg, stacklevel=external_stacklevel())`.
    A warning raised several calls deep (a classmethod calling `__init__` calling a check) then
    names the user's line, however the call chain inside the package is built.
    """
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def check_seed(name: str, seed) -> int:
    """A seed for `torch.Generator.manual_seed`: an int in `[0, 2**64)`.

    Larger ints are refused rather than reduced modulo $2^{64}$, which would map different
    seeds (`2**70` and 0) to one stream.
    """
    seed = check_int(name, seed, minimum=0)
    if seed >= 2**64:
        raise ValueError(f"{name} must be an int in [0, 2**64), got {seed}")
    return seed


_CAST = {torch.float32: "float", torch.float64: "double", torch.float16: "half"}
_CAST[torch.bfloat16] = "bfloat16"


def check_input_dtype(module: torch.nn.Module, x: torch.Tensor, name: str = "x") -> None:
    """Refuse a floating input whose dtype differs from the module's parameters, saying what to do.

    Skipped under autocast, which mixes dtypes on purpose. Torch's own error (a matmul or conv
    dtype mismatch from deep inside) names neither the argument nor the fix.

    Raises:
        TypeError: naming both dtypes and the two conversions.
    """
    if not isinstance(x, torch.Tensor) or torch.is_autocast_enabled(x.device.type):
        return
    w = next((p for p in module.parameters() if p.is_floating_point()), None)
    if w is not None and x.is_floating_point() and w.dtype != x.dtype:
        raise TypeError(
            f"{name} has dtype {x.dtype} but {type(module).__name__}'s parameters are {w.dtype}; "
            f"convert the input with {name}.{_CAST.get(w.dtype, 'to')}() or the network with "
            f"net.{_CAST.get(x.dtype, 'to')}()"
        )


def check_label_tensor(name: str, y, expected: str) -> None:
    """`y` a 1-d integer tensor of labels; else a `TypeError` saying `name must be {expected}`
    and what was received (its dtype and shape, or its type)."""
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.ndim != 1:
        got = (
            f"{y.dtype} tensor of shape {tuple(y.shape)}"
            if isinstance(y, torch.Tensor)
            else type(y).__name__
        )
        raise TypeError(f"{name} must be {expected}, got {got}")


def check_label_range(y: torch.Tensor, num_classes: int) -> None:
    """Inside a network: labels in `[0, K]` (K the null label), checked for CPU tensors only.

    On an accelerator the check would synchronise with the host on every call; there the
    embedding's own index check reports a bad label.

    Raises:
        ValueError: a label outside `[0, K]`.
    """
    if isinstance(y, torch.Tensor) and y.device.type == "cpu" and y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi > num_classes:
            raise ValueError(
                f"y must lie in [0, {num_classes}] ({num_classes} is the null label), got labels "
                f"from {lo} to {hi}"
            )
