"""Plumbing shared by every sampler: the result type, score counting, time grids, Tweedie, and
the errors a numerical failure raises.

Nothing here knows a particular algorithm; solvers receive a `CountedScore` and a `Recorder` and
return a plain tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_int, check_output_shape, check_real, is_int
from .._shapes import append_dims
from ..sdes.base import SDE
from ..sdes.gaussian import GaussianSDE
from .grid import grid_dtype

__all__ = [
    "COLLAPSE",
    "DEFAULT_MAX_EVALS",
    "DEFAULT_MAX_STEPS",
    "CountedScore",
    "FiniteWatch",
    "MaxStepsError",
    "NonFiniteError",
    "Recorder",
    "SampleResult",
    "budget_exceeded",
    "check_finite",
    "checked_drift",
    "finish",
    "check_adaptive",
    "check_order",
    "check_positive",
    "grid_dtype",
    "noise_like",
    "step_collapsed",
    "progress_bar",
    "time_grid",
    "tweedie",
    "working_state",
]

DEFAULT_MAX_STEPS = 10_000
# The work budget of every adaptive solver, in score calls (docs/sampling.md, "No end", says
# why this value: the longest legitimate solves measured took 6 432, GottaGoFast at rtol=1e-5).
DEFAULT_MAX_EVALS = 10_000
# A step (or the progress over a window of evaluations) below this fraction of the interval is a
# collapsed step size: the solver would crawl to the budget without getting anywhere.
COLLAPSE = 1e-10
_ADVICE = (
    "loosen rtol/atol (a {dtype} state resolves relative errors down to about {res:.1e}), check "
    "the score for stiffness (a very large scale) or NaN/Inf near t = {t:.6g}, integrate to a "
    "larger eps, or raise max_evals"
)


class NonFiniteError(FloatingPointError):
    """A solver met NaN or Inf: raised instead of returning non-finite samples.

    The message names the method, the first score (or drift) call whose input or output was not
    finite and its time, and what to check. A `FloatingPointError`, so `except ArithmeticError`
    catches it too.
    """


class MaxStepsError(RuntimeError):
    """An adaptive solver gave up before reaching the end time: it used up its work budget
    (`max_evals` score calls) or its step budget (`max_steps`), or its step size collapsed.

    The message names the solver, the budget, the score calls spent, the time reached and what
    to do.
    """


def _advice(dtype: torch.dtype, t: float) -> str:
    return _ADVICE.format(dtype=dtype, res=torch.finfo(dtype).eps, t=t)


def budget_exceeded(
    where: str, *, max_evals: int, nfe: int, t: float, t0: float, t1: float, dtype: torch.dtype
) -> MaxStepsError:
    """The `MaxStepsError` for a solve that used up `max_evals` score calls at time `t`."""
    return MaxStepsError(
        f"{where}: max score calls exceeded (max_evals={max_evals}) after {nfe} score calls, "
        f"at t = {t:.6g} on the way from {t0:.6g} to {t1:.6g}. To fix: {_advice(dtype, t)}."
    )


def step_collapsed(
    where: str, *, nfe: int, t: float, moved: float, over: str, t0: float, t1: float, dtype
) -> MaxStepsError:
    """The `MaxStepsError` for a solve that advanced only `moved` (below `COLLAPSE` of the
    interval) in `over` (e.g. "one step") at time `t`."""
    return MaxStepsError(
        f"{where}: the step size collapsed: {moved:.3g} in {over}, below {COLLAPSE:g} of the "
        f"interval from {t0:.6g} to {t1:.6g}, at t = {t:.6g} after {nfe} score calls: the "
        "tolerances cannot be met there (a solution or score that blows up near that time, a "
        f"stiff score, or tolerances below the dtype's resolution). To fix: {_advice(dtype, t)}."
    )


def _probe(v: torch.Tensor) -> torch.Tensor:
    # One reduction, no host sync: the sum is NaN/Inf iff `v` holds NaN/Inf (or overflows, which
    # only happens on the way to Inf). Accumulated in float32 at least: a float16 sum of
    # ordinary values overflows at 65504.
    return v.sum(dtype=torch.float64 if v.dtype == torch.float64 else torch.float32)


def _time_probe(t: torch.Tensor) -> torch.Tensor:
    if t.ndim == 0:
        return t
    if t.numel() == 1 or t.stride(0) == 0:  # one time broadcast to the batch: a view, no kernel
        return t[0]
    return t.amin()  # per-example times (gotta_go_fast): the batch's earliest


class FiniteWatch:
    """Remember, lazily on the device, whether each call of a user function saw finite values.

    Each call stores three 0-d tensors (the time, and probes of the input and the output); they
    are read back only when a solve has failed, so a loop on an accelerator never waits for them.
    """

    def __init__(self, what: str):
        self.what = what
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, out) -> None:
        # Detached: in a differentiable solve the probes would hold the graph, and reading them
        # back (float()) would warn.
        outs = out if isinstance(out, tuple) else (out,)
        probe = _probe(outs[0].detach())
        for o in outs[1:]:
            probe = probe + _probe(o.detach())
        self.calls.append((_time_probe(t.detach()), _probe(x.detach()), probe))

    def first_bad(self) -> tuple[int, list[bool], float] | None:
        """`(call index, [time, input, output finite], time)` of the first call that saw NaN or
        Inf, or `None` (one host sync; for error paths only)."""
        if not self.calls:
            return None
        cols = [
            torch.stack([c[k].to(self.calls[0][k].dtype) for c in self.calls]) for k in range(3)
        ]
        flags = torch.stack([torch.isfinite(c) for c in cols], 1)
        ok = flags.all(1)
        if bool(ok.all()):
            return None
        k = int((~ok).nonzero()[0, 0])
        return k, flags[k].tolist(), float(cols[0][k])

    def explain(self, method: str, dtype: torch.dtype) -> str:
        """Why the solve went non-finite, from the first call that saw NaN/Inf (one sync)."""
        n = len(self.calls)
        bad = self.first_bad()
        fix = (
            f"use more steps (or a smaller dt, or looser rtol/atol), check the SDE's drift and "
            f"schedule, and the dtype ({dtype}: largest value {torch.finfo(dtype).max:.3g})"
        )
        if bad is None:
            return (
                f"{method} returned NaN or Inf although all {n} calls of {self.what} had finite "
                f"input and output: the last step overflowed. To fix: {fix}."
            )
        k, (t_ok, x_ok, out_ok), t = bad
        at = f"call {k + 1} of {n} of {self.what}"
        if not t_ok:
            return (
                f"{method}: the solver's time became NaN/Inf at {at}: its step-size control broke "
                "down (a NaN/Inf error estimate, e.g. tolerances below the dtype's resolution). "
                f"To fix: {fix}."
            )
        if not x_ok and k == 0:
            return f"{method}: the start state contains NaN or Inf (at t = {t:.6g})."
        if not x_ok:
            return (
                f"{method}: the state became NaN or Inf before {at} (t = {t:.6g}), although "
                f"every earlier call returned finite values: a step overflowed. To fix: {fix}."
            )
        return (
            f"{method}: {self.what} returned NaN or Inf at {at} (t = {t:.6g}) for a finite "
            "input. Check the function at that time (a diverged network, a division by "
            "sigma(t) -> 0 near t = 0, a log of 0)."
        )


@dataclass(frozen=True)
class SampleResult:
    """What a sampler returns with `return_info=True`.

    Attributes:
        samples: the final states `(B, *D)`.
        nfe: the number of score evaluations actually made (batched calls of `score_fn`).
        trajectory: with `trajectory=True`, the states visited, `(S, B, *D)`, first the start
            state and last the state before any final denoising; otherwise `None`.
        times: the forward times `(S,)` of the `trajectory` states, or `None`.
        solver: what ran: the algorithm, its order and grid, and the budget
            (`Solver.describe`), e.g. `"Auto: UniPC (UniP-2 + UniC, bh2) on TimeQuadratic()
            with 10 score calls"`.
        log_prob: with `return_logp` (`ProbabilityFlowODE.sample`), the log-density of each
            sample under the model's probability-flow ODE, in nats, `(B,)`; otherwise `None`.
    """

    samples: torch.Tensor
    nfe: int
    trajectory: torch.Tensor | None = None
    times: torch.Tensor | None = None
    solver: str | None = None
    log_prob: torch.Tensor | None = None


class CountedScore:
    """Wrap a score function: check every output's shape and count the calls.

    The shape check compares metadata only (no device synchronisation); a `FiniteWatch` keeps
    lazy finiteness probes of every input and output for the error message should the solve fail.
    With a tqdm bar, each call advances it by one, so progress is measured in score evaluations
    for every method.

    With `io_dtype` (a float16/bfloat16 caller, see `working_state`) the solver works in float32
    and the score is called, and answers, in `io_dtype`.

    A score that writes into its input `x` (an in-place op, seen by torch's version counter:
    no copy, no sync) raises `ValueError`; the first call gets a copy of the state, so the
    caller's `x_T` is never modified. An answer that is not floating point raises `TypeError`.

    Every answer is cast to the state's dtype before the solver uses it: a network run under
    `torch.autocast` may answer in bfloat16/float16, and the state, the time grid and the step
    arithmetic stay in the state's float32/float64 (tests/test_mixed_precision.py).
    """

    def __init__(self, score_fn, *, progress=None, io_dtype: torch.dtype | None = None):
        self.score_fn = score_fn
        self.nfe = 0
        self.progress = progress
        self.io_dtype = io_dtype
        self.watch = FiniteWatch("score_fn(x, t)")

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        work = x.dtype
        if self.io_dtype is not None:
            x, t = x.to(self.io_dtype), t.to(self.io_dtype)
        elif self.nfe == 0:
            x = x.clone()  # the first call may see the caller's x_T: never hand that out
        version = None if x.is_inference() else x._version
        out = check_output_shape(self.score_fn(x, t), x, "score_fn(x, t)")
        if version is not None and x._version != version:  # torch counts in-place writes
            raise ValueError(
                f"score_fn(x, t) modified its input x in place (call {self.nfe + 1}, "
                f"t = {t.detach().reshape(-1)[0].item():.6g}): the solver's state would change under it. "
                "Compute on a copy (x = x.clone(), or out-of-place ops such as x * 2)"
            )
        self.watch(x, t, out)
        out = out.to(work)
        self.nfe += 1
        if self.progress is not None:
            self.progress.update(1)
        return out


class Recorder:
    """Collect `(t, x)` pairs when a trajectory was asked for; a no-op otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.states: list[torch.Tensor] = []
        self.times: list[torch.Tensor] = []

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> None:
        if self.enabled:
            self.states.append(x.detach())
            self.times.append(t.detach().reshape(()))

    def stacked(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.enabled or not self.states:
            return None, None
        return torch.stack(self.states), torch.stack(self.times)


def working_state(x: torch.Tensor) -> tuple[torch.Tensor, torch.dtype | None]:
    """The state a solver works on, and the caller's dtype when it differs (else `None`).

    A float16/bfloat16 state is integrated in float32 (mixed precision): in bfloat16 (8
    significant bits) the many small increments of a 1000-step sampler round away (measured:
    Euler-Maruyama on N(0.7, 0.4^2), mean 0.650, std 0.391). The score is still called in the
    caller's dtype, and the result is returned in it.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.to(torch.float32), x.dtype
    return x, None


def checked_drift(sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """`sde.drift(x, t)`, checked to be shaped like `x` exactly as the score is (metadata only:
    a user SDE's `(B, 1)` drift for a `(B, 2)` state would otherwise broadcast silently)."""
    return check_output_shape(sde.drift(x, t), x, f"{type(sde).__name__}.drift(x, t)")


def check_positive(name: str, value) -> float:
    """`value` as a float, checked finite and > 0 (a solver's tolerance, step or ratio)."""
    return check_real(name, value, positive=True)


def check_order(order, highest: int = 3) -> int:
    """A solver's `order`: an int from 1 to `highest` (`TypeError` for another type, booleans
    included; `ValueError` out of range)."""
    valid = ", ".join(map(str, range(1, highest))) + f" or {highest}"
    if not is_int(order):
        raise TypeError(f"order must be an int {valid}, got {type(order).__name__}")
    order = int(order)
    if not 1 <= order <= highest:
        raise ValueError(f"order must be {valid}, got {order!r}")
    return order


def check_adaptive(rtol, atol, max_steps, max_evals) -> tuple[float, float, int, int]:
    """An adaptive solver's tolerances (finite, > 0) and its limits in steps and score calls."""
    return (
        check_positive("rtol", rtol),
        check_positive("atol", atol),
        check_int("max_steps", max_steps),
        check_int("max_evals", max_evals),
    )


def time_grid(T: float, eps: float, steps: int, like: torch.Tensor) -> torch.Tensor:
    """Decreasing uniform grid `(steps + 1,)` from `T` to `eps` on `like`'s device, in
    `grid_dtype(like)` (at least float32)."""
    return torch.linspace(T, eps, steps + 1, device=like.device, dtype=grid_dtype(like))


def batch_time(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Expand a 0-d time to the per-example `(B,)` that score functions receive (in x's dtype)."""
    return t.to(x.dtype).reshape(1).expand(x.shape[0])


def noise_like(x: torch.Tensor, generator) -> torch.Tensor:
    """Standard normal noise shaped like `x`, drawn from `generator` on `x`'s device and dtype."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def require_gaussian(sde: SDE, what: str, *, purpose: str = "", instead: str = "") -> None:
    """`TypeError` unless `sde` is a `GaussianSDE`: "`what` needs a GaussianSDE (...)`purpose`,
    got <type>; `instead`" (the method that needs its kernel, what for, what to use instead)."""
    if not isinstance(sde, GaussianSDE):
        hint = f"; {instead}" if instead else ""
        raise TypeError(
            f"{what} needs a GaussianSDE (VPSDE, SubVPSDE, VESDE, LinearSDE){purpose}, got "
            f"{type(sde).__name__}{hint}"
        )


def tweedie(sde: SDE, score, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""Tweedie's denoiser $E[x_0 \mid x_t] = (x_t + \sigma(t)^2 \nabla \log p_t(x_t)) / \alpha(t)$.

    Efron (2011); used as the final denoising step of Song et al. (2021), App. G. One score call.

    Args:
        sde: a `GaussianSDE` (the formula needs its kernel).
        score: a score function `(x, t) -> (B, *D)`.
        x: states `(B, *D)` at the 0-d forward time `t`.
    """
    require_gaussian(sde, "denoise=True", purpose=" for Tweedie's formula")
    s = score(x, batch_time(t, x))
    # Coefficients in the grid's precision (at least float32), then cast to the state's.
    tg = t.to(grid_dtype(x)).reshape(1)
    alpha, sigma2 = sde.alpha(tg).to(x.dtype), sde.sigma(tg).square().to(x.dtype)
    return (x + append_dims(sigma2, x.ndim) * s) / append_dims(alpha, x.ndim)


def progress_bar(enabled: bool, total: int | None, desc: str):
    """A tqdm bar counting score evaluations, or `None`."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="nfe")


def check_finite(x: torch.Tensor, watch: FiniteWatch, method: str, cause=None) -> torch.Tensor:
    """Return `x` if it is finite (one host sync), else raise `NonFiniteError` explaining why."""
    if cause is None and bool(torch.isfinite(x).all()):
        return x
    raise NonFiniteError(watch.explain(method, x.dtype)) from cause


def finish(
    x: torch.Tensor,
    score: CountedScore,
    record: Recorder,
    *,
    return_info: bool,
    method: str = "the sampler",
    solver: str | None = None,
):
    """Close the progress bar, check that `x` is finite; return `x` or a `SampleResult`
    (`solver`: what ran, for `SampleResult.solver`).

    Raises:
        NonFiniteError: when `x` holds NaN or Inf; the message says where it first appeared.
    """
    if score.progress is not None:
        score.progress.close()
    if score.io_dtype is not None:  # back to the caller's float16/bfloat16
        x = x.to(score.io_dtype)
    check_finite(x, score.watch, method)
    if not return_info:
        return x
    trajectory, times = record.stacked()
    if trajectory is not None:
        trajectory = trajectory.to(x.dtype)
    return SampleResult(samples=x, nfe=score.nfe, trajectory=trajectory, times=times, solver=solver)
