"""`ProbabilityFlowODE.sample`, `.encode` and `.decode`: validate once, then solve the ODE.

The three functions are attached to `ProbabilityFlowODE` as methods; all go through `_solve`,
which picks DPM-Solver or the torchdiffeq path from the method name.
"""

from __future__ import annotations

import inspect

import torch

from .._checks import check_end_time, check_state
from ._common import CountedScore, Recorder, finish, progress_bar, tweedie, working_state
from .base import Problem, Solver
from .native import PREDICTORS
from .ode_methods import DPMSolver, TorchDiffEq
from .options import check_denoise, check_flags, resolve_solver, resolve_start, resolve_steps
from .torchdiffeq_sample import ODE_ADAPTIVE, ODE_FIXED
from .torchsde import TORCHSDE_METHODS
from .unipc import UniPC

__all__ = ["ODE_METHODS", "decode", "encode", "sample"]

ODE_METHODS = ("dpm_solver", "unipc", *ODE_ADAPTIVE, *ODE_FIXED)
# The reverse SDE's methods (sample_sde.SDE_METHODS), named only to point a user to them.
_SDE_ONLY = (*PREDICTORS, "pc", "annealed_langevin", "gotta_go_fast", *TORCHSDE_METHODS)

_OPTIONS = {
    "dpm_solver": frozenset({"steps", "order", "schedule", "prediction", "multistep"}),
    "unipc": frozenset({"steps", "order", "schedule"}),
    **{m: frozenset({"rtol", "atol", "max_steps"}) for m in ODE_ADAPTIVE},
    **{m: frozenset({"steps"}) for m in ODE_FIXED},
}


def sample(
    process,
    shape=None,
    *,
    method: str | Solver = "dpm_solver",
    steps: int | None = None,
    eps: float = 1e-3,
    x_T: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype=None,
    denoise: bool = False,
    progress: bool = False,
    return_info: bool = False,
    trajectory: bool = False,
    order: int | None = None,
    schedule: str | None = None,
    prediction: str | None = None,
    multistep: bool | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    **solver_options,
):
    r"""Draw samples: a prior draw (or `x_T`) carried by the ODE from $T$ to `eps`.

    Methods (`sdescore.solvers.ODE_METHODS`), each a shorthand for a default-configured solver
    object: `"dpm_solver"` (default, `sdescore.DPMSolver()`; Lu et al. 2022, Gaussian-kernel
    SDEs), `"unipc"` (`sdescore.UniPC()`; Zhao et al. 2023), torchdiffeq's adaptive
    `"dopri5"`, `"dopri8"`, `"bosh3"`, `"fehlberg2"`, `"adaptive_heun"` and fixed-step
    `"euler"`, `"midpoint"`, `"heun2"`, `"heun3"`, `"rk4"`. Options a method does not use must
    be left at `None`.

    Args:
        process: the `ProbabilityFlowODE` (this function is its `sample` method).
        shape: `(B, *D)`; may be omitted when `x_T` is given.
        method: the solver.
        steps: `"dpm_solver"`, `"unipc"`: score evaluations (default 20); fixed-step methods:
            steps (default 100).
        eps: end time, in $(0, T)$.
        x_T: start state `(B, *D)` instead of a prior draw.
        generator: `torch.Generator` for the prior draw.
        device: of the prior draw (without `x_T`).
        dtype: of the prior draw (without `x_T`).
        denoise: finish with Tweedie's denoiser (one score call).
        progress: show a tqdm bar counting score evaluations.
        return_info: return a `SampleResult` (samples, `nfe`, trajectory).
        trajectory: record the intermediate states (needs `return_info=True`).
        order: `"dpm_solver"` and `"unipc"`: 1, 2 or 3. `"dpm_solver"`: left unset (with
            `multistep`), the solver is chosen by the budget, as measured
            (`sdescore.DPMSolver`): 2M below 6 calls, UniPC (`sdescore.UniPC`, the multistep
            solver with UniC's corrector) of order 2 from 6 to 15 calls and of order 3 from 16.
            `"unipc"`: the predictor's order (default 2).
        schedule: `"dpm_solver"` and `"unipc"`: step boundaries `"time_quadratic"` (default,
            uniform in $\sqrt t$), `"logsnr"` (uniform in $\lambda$), `"time_uniform"` or
            `"karras"` (Karras et al. 2022, eq. (5), $\rho = 7$).
        prediction: `"dpm_solver"` only: Taylor-expand the data prediction `"data"`
            (default; DPM-Solver++) or the noise prediction `"noise"` (DPM-Solver).
        multistep: `"dpm_solver"` only: `False` is the singlestep solver (orders 1-3 of Lu
            et al. 2022, `order` calls per step); `True` reuses past predictions, one score
            call per step (DPM-Solver++(2M/3M), Lu et al. 2022b); unset, chosen by budget.
        rtol: relative tolerance, adaptive torchdiffeq methods only (default 1e-5).
        atol: absolute tolerance, adaptive torchdiffeq methods only (default 1e-5).
        max_steps: adaptive torchdiffeq methods only: the most steps before a `MaxStepsError`
            (default 10 000).
        **solver_options: not accepted; caught only to say what to do. A solver object's
            option that is not a keyword above (`DPMSolver`'s `damped`, `allocation`; `UniPC`'s
            `variant`, `lower_order_final`) raises a `TypeError` naming the call that sets it,
            e.g. `method=sdescore.UniPC(variant="bh1")`; an unknown name raises a `TypeError`
            with the closest valid names.

    Returns:
        Samples `(B, *D)` at `eps`, or a `SampleResult`.

    Raises:
        ValueError, TypeError: for a bad option (named in the message), a score of the wrong
            shape, or a float16/bfloat16 state with an adaptive method.
        NonFiniteError: the result holds NaN/Inf (checked once, after the solve); the message
            names the first score call that saw NaN/Inf and its time, and what to check.
        MaxStepsError: an adaptive method exceeded `max_steps`.
    """
    if x_T is None:
        x_T = resolve_start(
            process.sde, shape, None, generator=generator, device=device, dtype=dtype
        )
    else:
        x_T = resolve_start(process.sde, shape, x_T, generator=None, device=device, dtype=dtype)
    eps = check_end_time(eps, process.T)
    return _solve(
        process,
        x_T,
        t0=process.T,
        t1=eps,
        method=method,
        steps=steps,
        denoise=denoise,
        progress=progress,
        return_info=return_info,
        trajectory=trajectory,
        order=order,
        schedule=schedule,
        prediction=prediction,
        multistep=multistep,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        extra=solver_options,
        caller="sample",
    )


def decode(
    process,
    z: torch.Tensor,
    *,
    method: str | Solver = "dopri5",
    steps: int | None = None,
    eps: float = 1e-3,
    denoise: bool = False,
    progress: bool = False,
    return_info: bool = False,
    trajectory: bool = False,
    order: int | None = None,
    schedule: str | None = None,
    prediction: str | None = None,
    multistep: bool | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    **solver_options,
):
    """Map latents `z: (B, *D)` at time T to data at `eps` (the inverse of `encode`).

    `ProbabilityFlowODE.decode`; same options as `sample`, but the default method is the
    adaptive `"dopri5"` (rtol = atol = 1e-5), so that `decode(encode(x))` gives `x` back:
    on eight Gaussians (VP, exact score) to 2e-3 at worst over 1024 points, where
    `dpm_solver` at its 20 steps sends some points to another mode (error up to 4.0).
    """
    check_state(z, "z")
    eps = check_end_time(eps, process.T)
    return _solve(
        process,
        z,
        t0=process.T,
        t1=eps,
        method=method,
        steps=steps,
        order=order,
        schedule=schedule,
        prediction=prediction,
        multistep=multistep,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        denoise=denoise,
        progress=progress,
        return_info=return_info,
        trajectory=trajectory,
        extra=solver_options,
        caller="decode",
    )


def encode(
    process,
    x: torch.Tensor,
    *,
    method: str | Solver = "dopri5",
    steps: int | None = None,
    eps: float = 1e-3,
    progress: bool = False,
    return_info: bool = False,
    trajectory: bool = False,
    order: int | None = None,
    schedule: str | None = None,
    prediction: str | None = None,
    multistep: bool | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    **solver_options,
):
    """Map data `x: (B, *D)` at time `eps` to latents at T by integrating the ODE forwards.

    `ProbabilityFlowODE.encode`; options as in `sample` (without `denoise`); the default method
    is `"dopri5"`, as for `decode` (see there for the round-trip accuracy). For `dpm_solver`
    the same formulas run with a negative log-SNR step (Lu et al. 2022 hold for either sign).
    """
    check_state(x, "x")
    eps = check_end_time(eps, process.T)
    return _solve(
        process,
        x,
        t0=eps,
        t1=process.T,
        method=method,
        steps=steps,
        order=order,
        schedule=schedule,
        prediction=prediction,
        multistep=multistep,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        denoise=False,
        progress=progress,
        return_info=return_info,
        trajectory=trajectory,
        extra=solver_options,
        caller="encode",
    )


def _solve(
    process,
    x,
    *,
    t0,
    t1,
    method,
    steps,
    order,
    schedule,
    prediction,
    multistep,
    rtol,
    atol,
    max_steps,
    denoise,
    progress,
    return_info,
    trajectory,
    extra,
    caller,
):
    """Integrate the PF ODE from `t0` to `t1` starting at `x` (see `ProbabilityFlowODE`)."""
    sde = process.sde
    given = dict(
        order=order,
        schedule=schedule,
        prediction=prediction,
        multistep=multistep,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
    )
    solver = resolve_solver(
        method,
        given,
        steps=steps,
        inpaint=None,
        extra=extra,
        keywords=_KEYWORDS[caller],
        extra_hints=_HINTS,
        caller=caller,
        process="ode",
        build=_build,
        valid=ODE_METHODS,
        other=_SDE_ONLY,
        options=_OPTIONS,
        hint="use sde.reverse(score_fn).sample(...) for it, or a probability-flow ODE method "
        f"{list(ODE_METHODS)}",
    )
    check_flags(progress, return_info, trajectory)
    denoise = check_denoise(denoise)
    steps = resolve_steps(solver, steps)
    record = Recorder(trajectory)
    x, io_dtype = working_state(x)
    name = method if isinstance(method, str) else repr(solver)
    score = CountedScore(
        process.score_fn,
        progress=progress_bar(progress, solver.score_calls(steps), name),
        io_dtype=io_dtype,
    )
    problem = Problem(
        sde=sde, score=score, x=x, t0=t0, t1=t1, steps=steps, generator=None, record=record
    )
    x = solver.integrate(problem)
    if denoise == "tweedie":
        x = tweedie(sde, score, x, torch.tensor(t1, device=x.device, dtype=x.dtype))
    return finish(
        x, score, record, return_info=return_info, method=f"ProbabilityFlowODE (method={name!r})"
    )


# Each function's own keywords, for the error on one it does not take.
_KEYWORDS = {
    f.__name__: tuple(inspect.signature(f).parameters)[2:-1] for f in (sample, encode, decode)
}
_HINTS = {
    "inpaint": "inpaint= belongs to the reverse SDE: sde.reverse(score_fn).sample(..., "
    "inpaint=...) with a native method (docs/guidance.md)"
}


def _build(method: str, opts: dict) -> Solver:
    """The default-configured solver object for a method name, with the legacy options."""
    if method == "dpm_solver":
        return DPMSolver(**opts)
    if method == "unipc":
        return UniPC(**opts)
    return TorchDiffEq(method, **opts)
