r"""The torchdiffeq adapter: solve $dx/dt = v(x, t)$ for a forward-clock velocity field.

This is the only module that imports torchdiffeq. It converts sdescore's calling convention
(`v(x, t)` with `x: (B, *D)` and `t: (B,)`, forward clock) into torchdiffeq's `func(t, y)` once,
integrates between any two times (increasing or decreasing), and optionally carries an auxiliary
channel integrated alongside $x$ (the $\Delta\log p$ of the instantaneous change of variables,
Chen et al. 2018, Theorem 1) without letting it steer the step size.

Used by the probability-flow ODE (sampling, encode/decode) and by `sdescore.likelihood`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchdiffeq
from torchdiffeq._impl.odeint import SOLVERS as _SOLVERS

from .._checks import check_callable, check_int, check_real, check_state
from ._common import (
    COLLAPSE,
    DEFAULT_MAX_EVALS,
    DEFAULT_MAX_STEPS,
    FiniteWatch,
    MaxStepsError,
    NonFiniteError,
    budget_exceeded,
    step_collapsed,
)

__all__ = ["ADAPTIVE_RK_METHODS", "ODESolution", "STEP_CONTROLS", "odeint_drift"]

# Adaptive Runge-Kutta solvers of torchdiffeq: they accept `step_t`, `ifactor`, `first_step`...
TORCHDIFFEQ_METHODS = frozenset(_SOLVERS)
ADAPTIVE_RK_METHODS = frozenset({"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"})
STEP_CONTROLS = ("x", "x_per_example", "all")


@dataclass(frozen=True)
class ODESolution:
    """What `odeint_drift` returns.

    Attributes:
        x: the state at the end time `t1`, `(B, *D)`.
        aux: the auxiliary channel at `t1` (shaped like `aux0`), or `None` without one.
        nfe: number of evaluations of the velocity field (each one call of `drift`).
        times: the output times `(N,)` (`t0`, the `save_at` times, `t1`), or `None` when
            `save_at` was not given.
        xs: the states at `times`, `(N, B, *D)`, or `None`.
        auxs: the auxiliary channel at `times`, `(N, *aux0.shape)`, or `None`.
    """

    x: torch.Tensor
    aux: torch.Tensor | None
    nfe: int
    times: torch.Tensor | None = None
    xs: torch.Tensor | None = None
    auxs: torch.Tensor | None = None


def _rms(v: torch.Tensor) -> torch.Tensor:
    return v.square().mean().sqrt()


def _norm_x_only(y: tuple[torch.Tensor, ...]) -> torch.Tensor:
    # Error control on the state alone: the auxiliary channel (log p, or one per Hutchinson
    # probe) is a quadrature that rides along; letting its error estimate shrink the steps
    # only buys accuracy in a noisy estimator at the price of network evaluations.
    return _rms(y[0])


def _norm_x_per_example(y) -> torch.Tensor:
    # The worst example's RMS error: each example meets the tolerance as if solved alone
    # (torchdiffeq's RMS over the whole batch lets a few examples carry far larger errors).
    x = y[0] if isinstance(y, tuple) else y
    return x.reshape(x.shape[0], -1).square().mean(1).sqrt().max()


def _norm_all(y: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.stack([_rms(v) for v in y]).max()


# Evaluations between two checks of the progress in time (one host sync each; torchdiffeq's
# own step control already syncs once per step, i.e. every 2-13 evaluations).
_WINDOW = 240


class _Stop(Exception):
    """Raised inside torchdiffeq's loop to end a solve that ran out of budget or collapsed."""

    def __init__(self, error: MaxStepsError):
        super().__init__(str(error))
        self.error = error


class _Vector:
    """torchdiffeq's `func(t, y)` for sdescore's `drift(x, t)`; counts evaluations and stops
    the solve past `max_evals` of them, or when a window of `_WINDOW` evaluations advanced
    less than `COLLAPSE` of the interval (a collapsed step size)."""

    def __init__(self, drift, x_shape, aux_shape, t0: float, t1: float, max_evals: int, where):
        self.drift = drift
        self.x_shape = x_shape
        self.aux_shape = aux_shape
        self.t0, self.t1 = t0, t1
        self.lo, self.hi = min(t0, t1), max(t0, t1)
        self.max_evals, self.where = max_evals, where
        self.nfe = 0
        self.watch = FiniteWatch("drift(x, t)")
        self._mark: torch.Tensor | None = None

    def _check_progress(self, t: torch.Tensor, dtype: torch.dtype) -> None:
        # Read without the graph: in a differentiable solve the time carries one, and float()
        # on it warns (and would differentiate nothing).
        t = t.detach()
        if self.nfe > self.max_evals:
            raise _Stop(
                budget_exceeded(
                    self.where, max_evals=self.max_evals, nfe=self.nfe - 1, t=float(t),
                    t0=self.t0, t1=self.t1, dtype=dtype,
                )
            )  # fmt: skip
        if self.nfe % _WINDOW == 0:
            moved = None if self._mark is None else float((t - self._mark).abs())
            self._mark = t.clone()
            if moved is not None and moved < COLLAPSE * (self.hi - self.lo):
                raise _Stop(
                    step_collapsed(
                        self.where, nfe=self.nfe - 1, t=float(t), moved=moved,
                        over=f"the last {_WINDOW} evaluations", t0=self.t0, t1=self.t1,
                        dtype=dtype,
                    )
                )  # fmt: skip

    def __call__(self, t: torch.Tensor, y):
        self.nfe += 1
        x = y[0] if self.aux_shape is not None else y
        self._check_progress(t, x.dtype)
        # Guard time: torchdiffeq's initial-step heuristic probes t0 + h, which may lie beyond
        # the end time (t > T, or t < 0 where sigma(t) = 0); the clamp is a device op, no sync.
        tb = t.to(x.dtype).clamp(self.lo, self.hi).expand(x.shape[0])
        out = self.drift(x, tb)
        if self.aux_shape is None:
            _check_out(out, self.x_shape, "drift(x, t)")
            self.watch(x, tb, out)
            return out
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError(
                "with aux0 given, drift(x, t) must return a pair (dx/dt, daux/dt), "
                f"got {type(out).__name__}"
            )
        _check_out(out[0], self.x_shape, "drift(x, t)[0]")
        _check_out(out[1], self.aux_shape, "drift(x, t)[1]")
        self.watch(x, tb, out)
        return out


def _check_out(v, shape, what: str) -> None:
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{what} must return a torch.Tensor, got {type(v).__name__}")
    if v.shape != shape:
        raise ValueError(f"{what} returned shape {tuple(v.shape)}, expected {tuple(shape)}")


def _time_grid(t0: float, t1: float, save_at, like: torch.Tensor) -> torch.Tensor:
    pts = [t0]
    if save_at is not None:
        if isinstance(save_at, torch.Tensor):
            save_at = save_at.detach().reshape(-1).tolist()
        if not isinstance(save_at, Sequence):
            raise TypeError(
                f"save_at must be a sequence of floats or a 1-d tensor, got {type(save_at).__name__}"
            )
        pts += [check_real("save_at[i]", s) for s in save_at]
    pts.append(t1)
    sign = 1.0 if t1 > t0 else -1.0
    if any(sign * (b - a) <= 0 for a, b in zip(pts[:-1], pts[1:], strict=False)):
        raise ValueError(
            "save_at must lie strictly between t0 and t1 and run in the direction of "
            f"integration, got t0={t0}, save_at={pts[1:-1]}, t1={t1}"
        )
    return torch.tensor(pts, dtype=_time_dtype(like), device=like.device)


def _time_dtype(like: torch.Tensor) -> torch.dtype:
    # Times in float64 whatever the state's dtype: torchdiffeq keeps time-like values in
    # float64 anyway, and eps = 1e-5 next to T = 1 must stay distinct. MPS has no float64.
    return like.dtype if like.device.type == "mps" else torch.float64


def odeint_drift(
    drift: Callable,
    x0: torch.Tensor,
    t0: float,
    t1: float,
    *,
    aux0: torch.Tensor | None = None,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    step_control: str = "x",
    save_at: Sequence[float] | torch.Tensor | None = None,
    options: dict | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    max_evals: int = DEFAULT_MAX_EVALS,
) -> ODESolution:
    r"""Integrate $dx/dt = v(x, t)$ from `t0` to `t1` with torchdiffeq.

    The velocity field keeps sdescore's forward clock and shapes: `drift(x, t)` receives the
    state `x: (B, *D)` and a time tensor `t: (B,)` (every entry equal, same dtype and device as
    `x`) and returns `dx/dt: (B, *D)`. The integration may run forwards (`t0 < t1`, e.g. data to
    prior, $\varepsilon \to T$) or backwards (`t0 > t1`, e.g. sampling, $T \to \varepsilon$);
    torchdiffeq's time reversal is used, so `drift` never needs to flip signs.

    **Augmented state.** With `aux0` given (any tensor, typically $\Delta\log p$ of shape `(B,)`
    or one channel per Hutchinson probe `(k, B)`), `drift(x, t)` must return the pair
    `(dx/dt, daux/dt)` from *one* call, so a network evaluation and its vector-Jacobian product
    can share a forward pass. The pair is passed to torchdiffeq as a tuple state.

    **Step-size control.** `step_control="x"` (default) measures the local error by its RMS over
    all of `x` (the whole batch) only; the auxiliary channel is integrated with the same steps
    but does not shrink them. `"x_per_example"` uses the largest per-example RMS error on `x`,
    so every example meets the tolerance as if it were solved alone (more steps; errors of single
    examples in a large batch stay at the tolerance instead of averaging out).
    `step_control="all"` uses torchdiffeq's default mixed norm (max of the RMS norms of all
    channels). A `"norm"` in `options` overrides all of these (with `aux0` it receives the tuple
    `(x, aux)`, otherwise the tensor).

    **End-time robustness.** Adaptive solvers (dopri5 and friends) normally step past the end time
    and interpolate back, and their initial-step heuristic probes a time beyond it: for a
    diffusion that would mean $t > T$ or $t < 0$, where the SDE is undefined or $\sigma(t) = 0$
    and the velocity is infinite, the classic cause of "underflow in dt". Here (1) for the adaptive
    Runge-Kutta methods (`ADAPTIVE_RK_METHODS`) `t1` is passed as a `step_t` grid point, so the
    last step lands exactly on `t1` and every stage stays inside $[t_0, t_1]$, and (2) for every
    method the time handed to `drift` is clamped to the interval. `step_control` only matters for
    adaptive methods.

    **Failures are never silent.** Adaptive methods stop with a `MaxStepsError` after
    `max_evals` evaluations of `drift` in all, after `max_steps` steps (per interval between
    output times), or when `_WINDOW` evaluations advance less than `COLLAPSE` (1e-10) of the
    interval (a collapsed step size; one host sync per window); a NaN/Inf from `drift`, in the state or in the
    result raises a `NonFiniteError` naming the first evaluation that saw it (the checks are
    lazy device probes read once, after the solve or on failure). Adaptive methods need a
    float32 or float64 state: float16/bfloat16 cannot resolve usual tolerances and their error
    estimates overflow (a `TypeError` says so).

    Args:
        drift: callable `drift(x, t) -> (B, *D)`, or `-> ((B, *D), aux-shaped)` with `aux0`.
            It is called in the caller's autograd mode (wrap the call in `torch.no_grad()` when
            no gradient through the solve is wanted; `drift` may enable grad inside itself).
        x0: the initial state `(B, *D)` at time `t0`; floating point, not modified.
        t0: initial time (a float).
        t1: end time (a float), `!= t0`.
        aux0: optional initial value of the auxiliary channel (same dtype and device as `x0`).
        method: a torchdiffeq method name, e.g. `"dopri5"`, `"dopri8"`, `"bosh3"`,
            `"adaptive_heun"`, `"rk4"`, `"euler"`, `"midpoint"` (fixed-step methods need
            `options={"step_size": h}`).
        rtol: relative tolerance of adaptive methods.
        atol: absolute tolerance of adaptive methods.
        step_control: `"x"`, `"x_per_example"` or `"all"`, see above.
        save_at: optional times strictly between `t0` and `t1`, in the direction of integration,
            at which the states are also returned (dense output, no extra steps).
        options: extra torchdiffeq options, passed through (e.g. `first_step`, `step_size`,
            `step_t`; a `step_t` given here is merged with `t1`; a `max_num_steps` given here
            overrides `max_steps`).
        max_steps: the most steps an adaptive method may take (default 10 000).
        max_evals: the most evaluations of `drift` an adaptive method may make (default
            `DEFAULT_MAX_EVALS`, 10 000; fixed-step methods take no budget).

    Returns:
        An `ODESolution` with the final `x`, the final `aux` (or `None`), the number of `drift`
        evaluations `nfe` and, with `save_at`, the path `times`, `xs`, `auxs`.

    Raises:
        TypeError, ValueError: on a bad argument (each message names it), when `drift`
            returns the wrong type or shape, or for a float16/bfloat16 state with an adaptive
            method.
        NonFiniteError: `drift`, the state or the result became NaN/Inf (a `FloatingPointError`).
        MaxStepsError: an adaptive method exceeded `max_steps` (a `RuntimeError`).
        RuntimeError: when the adaptive solver's step size underflows (typically a velocity that
            blows up: raise the end time `eps`, loosen the tolerances).

    Example:
        >>> pf = sde.probability_flow(score_fn)
        >>> with torch.no_grad():
        ...     sol = odeint_drift(pf.drift, z, sde.T, 1e-3)   # prior -> data
        >>> x, nfe = sol.x, sol.nfe
    """
    check_callable("drift", drift)
    check_state(x0, "x0")
    t0 = check_real("t0", t0)
    t1 = check_real("t1", t1)
    if t0 == t1:
        raise ValueError(f"t0 and t1 must differ, got t0 = t1 = {t0}")
    rtol = check_real("rtol", rtol, positive=True)
    atol = check_real("atol", atol, positive=True)
    if not isinstance(method, str) or method not in _SOLVERS:
        valid = sorted(_SOLVERS)
        raise ValueError(f"method must be one of {valid}, got {method!r}")
    if step_control not in STEP_CONTROLS:
        raise ValueError(f"step_control must be one of {STEP_CONTROLS}, got {step_control!r}")
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
    max_steps = check_int("max_steps", max_steps)
    max_evals = check_int("max_evals", max_evals)
    opts = dict(options or {})
    if method in ADAPTIVE_RK_METHODS:
        if x0.dtype in (torch.float16, torch.bfloat16):
            raise TypeError(
                f"adaptive method {method!r} needs a float32 or float64 state, got {x0.dtype}: "
                "its error estimate cannot resolve rtol/atol and overflows in half precision. "
                "Cast the state (and model) to float32, or use a fixed-step method."
            )
        opts.setdefault("max_num_steps", max_steps)
    if aux0 is not None:
        if not isinstance(aux0, torch.Tensor):
            raise TypeError(f"aux0 must be a torch.Tensor or None, got {type(aux0).__name__}")
        if aux0.dtype != x0.dtype or aux0.device != x0.device:
            raise ValueError(
                f"aux0 must have x0's dtype and device ({x0.dtype}, {x0.device}), "
                f"got ({aux0.dtype}, {aux0.device})"
            )
    if "norm" not in opts:
        if step_control == "x_per_example":
            opts["norm"] = _norm_x_per_example
        elif aux0 is not None:
            opts["norm"] = _norm_x_only if step_control == "x" else _norm_all
    grid = _time_grid(t0, t1, save_at, x0)
    if method in ADAPTIVE_RK_METHODS:
        step_t = opts.get("step_t")
        step_t = [] if step_t is None else torch.as_tensor(step_t).reshape(-1).tolist()
        if t1 not in step_t:
            step_t.append(t1)
        opts["step_t"] = torch.tensor(step_t, dtype=_time_dtype(x0), device=x0.device)

    where = f"odeint_drift ({method}, t0={t0}, t1={t1}, rtol={rtol}, atol={atol})"
    budget = max_evals if method in ADAPTIVE_RK_METHODS else None
    aux_shape = None if aux0 is None else aux0.shape
    func = _Vector(drift, x0.shape, aux_shape, t0, t1, budget or 2**62, where)
    y0 = x0 if aux0 is None else (x0, aux0)
    try:
        ys = torchdiffeq.odeint(func, y0, grid, rtol=rtol, atol=atol, method=method, options=opts)
    except _Stop as stop:
        if func.watch.first_bad() is not None:
            raise NonFiniteError(func.watch.explain(where, x0.dtype)) from stop.error
        raise stop.error from None
    except Exception as err:
        # A NaN drift or state first shows up elsewhere (a NaN time fails the SDE's range check,
        # a NaN error ratio "underflows"): report the NaN itself when there was one.
        if func.watch.first_bad() is not None:
            raise NonFiniteError(func.watch.explain(where, x0.dtype)) from err
        if not isinstance(err, AssertionError):  # torchdiffeq reports solver failure by assert
            raise
        if "max_num_steps" in str(err):
            raise MaxStepsError(
                f"{where}: max steps exceeded, loosen rtol/atol or raise max_steps "
                f"(max_steps={opts['max_num_steps']}, rtol={rtol}, atol={atol}, {func.nfe} "
                f"evaluations; a {x0.dtype} state resolves relative errors down to about "
                f"{torch.finfo(x0.dtype).eps:.1e})"
            ) from err
        raise RuntimeError(
            f"{where} failed after {func.nfe} evaluations: {err}. A velocity that blows up "
            "near the end time is the usual cause: integrate to a larger eps, or loosen "
            f"rtol/atol (a {x0.dtype} state resolves about {torch.finfo(x0.dtype).eps:.1e})."
        ) from err
    xs, auxs = (ys, None) if aux0 is None else ys
    last = xs[-1] if auxs is None else torch.cat([xs[-1].reshape(-1), auxs[-1].reshape(-1)])
    if not bool(torch.isfinite(last).all()):  # the one sync of the check, after the solve
        raise NonFiniteError(func.watch.explain(where, x0.dtype))
    path = save_at is not None
    return ODESolution(
        x=xs[-1],
        aux=None if auxs is None else auxs[-1],
        nfe=func.nfe,
        times=grid.to(x0.dtype) if path else None,
        xs=xs if path else None,
        auxs=auxs if path else None,
    )


def check_options(method: str, options: dict) -> None:
    """Refuse an `options` key that torchdiffeq's `method` does not read (torchdiffeq would only
    warn, and the solve would run without it).

    Raises:
        ValueError: the unknown keys, with the method's own.
    """
    import contextlib
    import inspect

    known = {"norm", "grid_constructor"}
    for klass in _SOLVERS[method].__mro__:  # each solver's keywords are spread over its bases
        if "__init__" in vars(klass):
            with contextlib.suppress(TypeError, ValueError):
                known |= set(inspect.signature(vars(klass)["__init__"]).parameters)
    known -= {"self", "func", "y0", "rtol", "atol", "args", "kwargs", "unused_kwargs"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"options {unknown} are not read by torchdiffeq's {method!r}; its options are "
            f"{sorted(known)} (rtol, atol and max_steps are the solver object's own)"
        )
