"""Validation of sampler options at the public entry points, with one error style throughout.

Each method accepts a known set of options; an option set for a method that does not use it is
an error (a silently ignored `snr=` on Euler–Maruyama would hide a typo in `method=`).
"""

from __future__ import annotations

import difflib
import inspect

import torch

from .._checks import check_bool, check_choice, check_int, check_real, check_shape, check_state
from ..sdes.base import SDE

__all__ = [
    "DENOISE",
    "resolve_solver",
    "resolve_steps",
    "check_denoise",
    "check_flags",
    "check_method",
    "check_positive",
    "check_unused",
    "reject_extra",
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


_PROCESS = {"ode": "the probability-flow ODE", "sde": "the reverse SDE"}


def resolve_solver(
    method,
    given: dict,
    *,
    steps,
    inpaint,
    extra: dict,
    keywords,
    process: str,
    build,
    valid,
    other,
    options,
    hint,
    extra_hints=None,
    caller: str = "sample",
):
    """The `Solver` object for `method`: the object itself, or, for a method name, the
    default-configured object built by `build(name, options)` from the per-method keyword
    options of `sample` (kept for backward compatibility; each must apply to the method).

    `extra` holds the keyword arguments that `caller` does not take (its `**solver_options`,
    whose names are not in `keywords`); any of them is an error (`reject_extra`), raised after
    the method itself is checked.

    Raises:
        ValueError, TypeError: an unknown name, a solver of the other process, an option that
            does not apply, keyword options next to a solver object (set them on the object),
            or a keyword that `sample` does not take.
    """
    from .base import Solver

    if isinstance(method, Solver):
        set_ = sorted(k for k, v in given.items() if v is not None) + sorted(extra)
        if set_:
            raise ValueError(
                f"option(s) {set_} are set on the solver object, not on sample(); got "
                f"method={method!r} with {set_}"
            )
        if method.process != process:
            raise ValueError(
                f"method {method!r} integrates {_PROCESS.get(method.process, method.process)}, "
                f"not {_PROCESS[process]}; {hint}"
            )
        if inpaint is not None and not method.supports_inpaint:
            raise ValueError(f"option(s) ['inpaint'] do not apply to method {method!r}")
        return method
    if not isinstance(method, str):
        raise TypeError(
            f"method must be a method name or an sdescore.Solver, got {type(method).__name__}"
        )
    check_method(method, valid, other=other, kind=_KIND[process], hint=hint)
    if extra:
        reject_extra(method, build(method, {}), extra, keywords, extra_hints or {}, caller)
    check_unused(method, dict(given, steps=steps, inpaint=inpaint), options[method])
    return build(method, {k: v for k, v in given.items() if v is not None})


def _solver_options(solver) -> list[str]:
    """The keyword-only constructor options of a solver object's class."""
    params = inspect.signature(type(solver)).parameters.values()
    return sorted(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def reject_extra(
    name: str, solver, extra: dict, keywords, hints: dict, caller: str = "sample"
) -> None:
    """Raise `TypeError` for keyword arguments `extra` that `caller` (`sample`) does not take.

    A method name is a shorthand for a default-configured solver object (`solver`); `sample`
    takes some of the objects' options as keywords (its signature, `keywords`) and no others.
    An option of the object that `sample` lacks gets the call that sets it on the object
    (`method=sdescore.SDEDPMSolver(order=3)`); any other name is reported as unknown, with
    the closest valid names.
    """
    cls = type(solver).__name__
    own = _solver_options(solver)
    unknown = sorted(k for k in extra if k not in own)
    if unknown:
        near = sorted(
            {m for k in unknown for m in difflib.get_close_matches(k, [*keywords, *own], n=1)}
        )
        parts = [f"{caller}() got unexpected keyword argument(s) {unknown}"]
        parts += [hints[k] for k in unknown if k in hints]
        parts.append(
            f"its keywords are {sorted(keywords)}, and method {name!r} (sdescore.{cls}) has "
            f"the options {own}"
        )
        if near:
            parts.append(f"did you mean {', '.join(map(repr, near))}?")
        raise TypeError("; ".join(parts))
    # Positional constructor arguments (TorchDiffEq / TorchSDE take the method name).
    positional = [
        repr(name)
        for p in inspect.signature(type(solver)).parameters.values()
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.name == "method"
    ]
    args = ", ".join([*positional, *(f"{k}={v!r}" for k, v in sorted(extra.items()))])
    raise TypeError(
        f"option(s) {sorted(extra)} of method {name!r} are not keywords of {caller}(): the name "
        f"is a shorthand for the default sdescore.{cls}(), whose options are {own}; set them "
        f"on the object, method=sdescore.{cls}({args})"
    )


_KIND = {"ode": "reverse-SDE", "sde": "probability-flow ODE"}


def resolve_steps(solver, steps):
    """`steps` checked, or the solver's default; an error for a solver that takes no steps."""
    default = solver.default_steps
    if default is None:
        if steps is not None:
            raise ValueError(
                f"option(s) ['steps'] do not apply to method {solver!r}; it chooses its steps"
            )
        return None
    return check_int("steps", default if steps is None else steps)
