r"""`ReverseSDE.sample` and `ProbabilityFlowODE.sample/encode/decode`: one entry point each.

Each takes a solver object (or its name, `sdescore.solvers.METHODS`) as `method=` and only the
options every solver shares; what a solver needs (steps' placement, order, tolerances, ...) is
set on the object. `steps=` is the budget of fixed-step solvers (score calls for the
exponential integrators, time steps for the native SDE samplers), and is fixed by an explicit
grid of times when the solver has one. Everything common is done here, around
`Solver.integrate`: the prior draw, the float16 working state, counting and shape-checking
score calls, the progress bar, trajectories, the final denoising and the NaN check.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect

import torch

from .._checks import (
    check_bool,
    check_dtype,
    check_end_time,
    check_generator,
    check_int,
    check_shape,
    check_state,
    moved_keywords,
)
from .._shapes import flat_dim
from ..estimators import ExactTrace, Hutchinson
from ..sdes.gaussian import GaussianSDE
from ._common import (
    CountedScore,
    Recorder,
    finish,
    grid_dtype,
    progress_bar,
    tweedie,
    working_state,
)
from ._logp import EXACT_DIM, LogpSolve
from .base import Problem, Solver
from .langevin import PC
from .table import METHODS, get_solver
from .torchdiffeq_sample import Dopri5, TorchDiffEq

__all__ = ["decode", "encode", "sample_ode", "sample_sde"]

DENOISE = ("mean", "tweedie", "none")


def _moved_to_solver(fn, unknown, kwargs) -> str:
    """The message for keywords that `fn` (an entry point below) does not take: each named with
    the solver object and option to use instead (an option of the solver objects that the entry
    points took before the one solver model), or the closest keyword."""
    params = inspect.signature(fn).parameters
    process = "sde" if fn.__name__ == "sample_sde" else "ode"
    caller = "sample" if fn.__name__.startswith("sample") else fn.__name__
    method = kwargs.get("method", params["method"].default)
    return _moved(unknown, kwargs, method, process, caller, list(params)[1:])


# The entry points take only the options every solver shares (see the module docstring).
_shared_only = moved_keywords(_moved_to_solver)


def _moved(unknown, kwargs, method, process, caller, keywords) -> str:
    try:
        solver = get_solver(method, process)
    except (TypeError, ValueError):
        solver = None
    own = _options(type(solver)) if solver is not None else []
    msgs = []
    for k in unknown:
        if k == "trajectory":
            msgs.append(
                "trajectory= is now a value of return_info: return_info='trajectory' returns a "
                "SampleResult holding the intermediate states"
            )
        elif k == "return_logp" and process == "sde":
            msgs.append(
                "return_logp= needs a deterministic sampler: the reverse SDE's samples have no "
                "density that one solve can track. Use sde.probability_flow(score_fn).sample("
                "..., return_logp=True), or sdescore.likelihood(model, samples) for the "
                "density of any samples under the model's probability-flow ODE"
            )
        elif k == "inpaint":
            msgs.append(
                "inpaint= is a solver wrapper now: method=sdescore.Inpainting(observed, mask, "
                f"solver={method!r})"
            )
        elif k == "n_steps":
            msgs.append(
                "n_steps= (the 2021 code's Langevin steps per predictor step) is an option of "
                "PC's corrector: method=sdescore.PC(corrector=sdescore.Langevin(steps="
                f"{kwargs[k]!r}))"
            )
        elif k in ("snr", "corrector_steps") and isinstance(solver, PC):
            opt = "snr" if k == "snr" else "steps"
            msgs.append(
                f"{k}= is an option of PC's corrector: "
                f"method=sdescore.PC(corrector=sdescore.Langevin({opt}={kwargs[k]!r}))"
            )
        elif k in own:
            cls = type(solver).__name__
            args = repr(method) + ", " if cls in ("TorchDiffEq", "TorchSDE") else ""
            msgs.append(
                f"{k}= is an option of the solver object, not of {caller}(): "
                f"method=sdescore.{cls}({args}{k}={kwargs[k]!r})"
            )
        elif k == "schedule" and "grid" in own:
            msgs.append(
                f"schedule= is now the solver's grid: method=sdescore.{type(solver).__name__}"
                f"(grid={kwargs[k]!r})"
            )
        else:
            owners = sorted(
                {type(f()).__name__ for f in METHODS[process].values() if k in _options(type(f()))}
            )
            if owners:
                msgs.append(
                    f"{k}= is not an option of {caller}() nor of method {method!r} "
                    f"({type(solver).__name__ if solver else '?'}: options {own}); it is an "
                    f"option of {', '.join('sdescore.' + o for o in owners)}"
                )
            else:
                near = difflib.get_close_matches(k, keywords + own, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                msgs.append(f"{caller}() got an unexpected keyword argument {k!r}{hint}")
    return (
        "; ".join(msgs) + f". {caller}() takes {keywords}; see docs/sampling.md, 'Solver objects'"
    )


def _options(cls) -> list[str]:
    return sorted(
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


@_shared_only
def sample_sde(
    process,
    shape=None,
    *,
    method: str | Solver = "euler_maruyama",
    steps: int | None = None,
    eps: float = 1e-3,
    x_T: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype=None,
    denoise: bool | str = "mean",
    progress: bool = False,
    return_info: bool | str = False,
):
    r"""Draw samples by integrating the reverse SDE from $T$ (the prior) down to `eps`.

    Anderson (1982); Song et al. (2021), eq. (6). `ReverseSDE.sample`.

    Args:
        process: the `ReverseSDE` (this function is its `sample` method).
        shape: `(B, *D)`; may be omitted when `x_T` is given.
        method: a reverse-SDE solver object or its name (`sdescore.solvers.SDE_METHODS`):
            `EulerMaruyama()` (`"euler_maruyama"`, default), `ReverseDiffusion()`,
            `Ancestral()`, `PC()`, `AnnealedLangevin()` (NCSN), `SDEDPMSolver()`,
            `GottaGoFast()` (adaptive), `TorchSDE(name)` (torchsde's methods), or
            `Inpainting(observed, mask, solver=...)`. Options are set on the object:
            `method=sdescore.PC(corrector=sdescore.Langevin(snr=0.1), grid="time_quadratic")`.
        steps: the number of time steps of a fixed-step solver (default: the solver's, 1000
            for the native samplers; `"annealed_langevin"`: noise levels); fixed by a solver's
            explicit grid of times; an error for adaptive solvers.
        eps: end time, in $(0, T)$.
        x_T: start state `(B, *D)` instead of a prior draw (never modified).
        generator: `torch.Generator` for the prior draw and all noise (torchsde's Brownian
            motion is seeded from it): a fixed seed gives bit-identical samples.
        device: of the prior draw (without `x_T`).
        dtype: of the prior draw (without `x_T`).
        denoise: `"mean"` (default): the last step without noise; `"tweedie"` (or `True`):
            then Tweedie's denoiser $E[x_0 \mid x_\epsilon]$ (one score call); `"none"` (or
            `False`): noise on the last step too.
        progress: show a tqdm bar counting score evaluations.
        return_info: `True`: return a `SampleResult` (samples, `nfe`, the solver that ran);
            `"trajectory"`: one that also holds the intermediate states and their times.

    Returns:
        Samples `(B, *D)` at time `eps` (or denoised), or a `SampleResult`.

    Raises:
        ValueError, TypeError: an unknown method (the valid ones are listed), a bad value, a
            score of the wrong shape, or a solver option given here (named with the object
            that takes it).
        NonFiniteError: the samples hold NaN/Inf (checked once, after the loop); the message
            names the first score call that saw NaN/Inf and its time, and what to check.
        MaxStepsError: an adaptive method exceeded its `max_steps`.
    """
    sde = process.sde
    solver = get_solver(method, "sde")
    return_info, trajectory = _check_flags(progress, return_info)
    denoise = _check_denoise(denoise)
    eps = check_end_time(eps, sde.T)
    steps = _resolve_steps(solver, steps)
    x = _start(sde, shape, x_T, generator=generator, device=device, dtype=dtype)
    x, io_dtype = working_state(x)
    record = Recorder(trajectory)
    project = solver.projection(sde, x, generator)
    score = CountedScore(
        process.score_fn if project is None else project.guide(process.score_fn),
        progress=progress_bar(progress, solver.score_calls(steps), _name(method, solver)),
        io_dtype=io_dtype,
    )
    opts = dict(device=x.device, dtype=grid_dtype(x))
    if project is not None:
        x = project(x, torch.tensor(sde.T, **opts))
    problem = Problem(
        sde=sde,
        score=score,
        x=x,
        t0=sde.T,
        t1=eps,
        steps=steps,
        generator=generator,
        record=record,
        final_noise=denoise != "mean",
        project=project,
    )
    x = solver.integrate(problem)
    if denoise == "tweedie":
        x = tweedie(sde, score, x, torch.tensor(eps, **opts))
    if project is not None:
        x = project.finish(x)
    return _finish(x, score, record, return_info, solver, steps, "ReverseSDE.sample", method)


@_shared_only
def sample_ode(
    process,
    shape=None,
    *,
    method: str | Solver = "auto",
    steps: int | None = None,
    eps: float = 1e-3,
    x_T: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype=None,
    denoise: bool = False,
    progress: bool = False,
    return_info: bool | str = False,
    return_logp=False,
):
    r"""Draw samples: a prior draw (or `x_T`) carried by the probability-flow ODE from $T$ to
    `eps` (Song et al. 2021, eq. (13)). `ProbabilityFlowODE.sample`.

    Args:
        process: the `ProbabilityFlowODE` (this function is its `sample` method).
        shape: `(B, *D)`; may be omitted when `x_T` is given.
        method: an ODE solver object or its name (`sdescore.solvers.ODE_METHODS`): `Auto()`
            (`"auto"`, default: the best measured solver for the budget, Gaussian-kernel SDEs),
            `DPMSolver()` (Lu et al. 2022, 2022b), `UniPC()` (Zhao et al. 2023),
            `TorchDiffEq(name)` for torchdiffeq's adaptive `"dopri5"`, `"dopri8"`, `"bosh3"`,
            `"fehlberg2"`, `"adaptive_heun"` and fixed-step `"euler"`, `"midpoint"`,
            `"heun2"`, `"heun3"`, `"rk4"`. Options are set on the object:
            `method=sdescore.DPMSolver(order=3, grid="logsnr")`.
        steps: fixed-step solvers: `"auto"`, `"dpm_solver"`, `"unipc"`: score evaluations
            (default 20); torchdiffeq's fixed-step methods: steps (default 100). Fixed by an
            explicit grid of times; an error for adaptive solvers.
        eps: end time, in $(0, T)$.
        x_T: start state `(B, *D)` instead of a prior draw (never modified).
        generator: `torch.Generator` for the prior draw.
        device: of the prior draw (without `x_T`).
        dtype: of the prior draw (without `x_T`), a floating-point `torch.dtype`. A float16 or
            bfloat16 state is solved in mixed precision by every method, adaptive ones
            included: the solver integrates (and controls its error) in float32, the score is
            called in the state's dtype, and the samples come back in it. The score's rounding
            is noise to an adaptive method's error control: at tight tolerances it costs score
            calls or ends in a `MaxStepsError`; loosen `rtol`/`atol` to the dtype
            (docs/sampling.md, "Devices and dtypes").
        denoise: finish with Tweedie's denoiser (one score call); refused with `return_logp`.
        progress: show a tqdm bar counting score evaluations.
        return_info: `True`: return a `SampleResult` (samples, `nfe`, the solver that ran);
            `"trajectory"`: one that also holds the intermediate states and their times.
        return_logp: also integrate the log-density of the samples in the same solve:
            $\log p_\varepsilon(x) = \log \pi(x_T) + \int_\varepsilon^T \nabla\cdot v\,dt$
            along the solver's own trajectory (Chen et al. 2018, Theorem 1; Song et al. 2021,
            eq. (39)), with the solver's own rule and order (`sdescore.solvers._logp`).
            `True`: the divergence by the exact trace up to 128 coordinates, else one
            Hutchinson probe; or the estimator itself, `sdescore.ExactTrace(chunk=...)` or
            `sdescore.Hutchinson(probes, noise=...)` (probes drawn once from `generator`, after
            the prior draw, and held fixed). Each score call then also takes the divergence
            (one network pass and its vector-Jacobian products). The samples are those of
            `return_logp=False` for the fixed-step solvers; adaptive ones also control the
            error of log p (docs/likelihood.md, "Likelihood while sampling").

    Returns:
        Samples `(B, *D)` at `eps`, or a `SampleResult`; with `return_logp`, the pair
        `(samples, log_prob)` (`log_prob: (B,)` in nats), or a `SampleResult` whose `log_prob`
        is set.

    Raises:
        ValueError, TypeError: for a bad option (named in the message), a score of the wrong
            shape, a float16/bfloat16 state with `return_logp`, `return_logp` with
            `denoise=True`, a solver option given here (named with the object that takes it),
            or `trajectory=` (now `return_info="trajectory"`).
        NonFiniteError: the result holds NaN/Inf (checked once, after the solve); the message
            names the first score call that saw NaN/Inf and its time, and what to check.
        MaxStepsError: an adaptive method exceeded its `max_steps`.
    """
    x_T = _start(process.sde, shape, x_T, generator=generator, device=device, dtype=dtype)
    return _solve_ode(
        "sample", process, x_T, eps, method, steps, denoise, progress, return_info, return_logp,
        generator,
    )  # fmt: skip


@_shared_only
def decode(
    process,
    z: torch.Tensor,
    *,
    method: str | Solver = "dopri5",
    steps: int | None = None,
    eps: float = 1e-3,
    denoise: bool = False,
    progress: bool = False,
    return_info: bool | str = False,
):
    """Map latents `z: (B, *D)` at time T to data at `eps` (the inverse of `encode`).

    `ProbabilityFlowODE.decode`; options as in `sample`, but the default method is the
    adaptive `"dopri5"` (rtol = atol = 1e-5), so that `decode(encode(x))` gives `x` back to
    the solver's tolerance (docs/sampling.md measures it), where a 20-call fixed-step solver
    can send points to another mode.
    """
    check_state(z, "z")
    return _solve_ode(
        "decode", process, z, eps, method, steps, denoise, progress, return_info, False, None
    )


@_shared_only
def encode(
    process,
    x: torch.Tensor,
    *,
    method: str | Solver = "dopri5",
    steps: int | None = None,
    eps: float = 1e-3,
    progress: bool = False,
    return_info: bool | str = False,
):
    """Map data `x: (B, *D)` at time `eps` to latents at T by integrating the ODE forwards.

    `ProbabilityFlowODE.encode`; options as in `sample` (without `denoise`); the default method
    is `"dopri5"`, as for `decode`. The exponential integrators run the same formulas with a
    negative log-SNR step (Lu et al. 2022 hold for either sign); an explicit grid of times is
    used in the increasing direction.
    """
    check_state(x, "x")
    return _solve_ode(
        "encode", process, x, eps, method, steps, False, progress, return_info, False, None
    )


def _solve_ode(
    what, process, x, eps, method, steps, denoise, progress, return_info, return_logp, generator
):
    """`ProbabilityFlowODE.<what>`: integrate the PF ODE from `x` at T down to `eps` (`"sample"`,
    `"decode"`), or from `x` at `eps` up to T (`"encode"`); with `return_logp`, together with
    the log-density of the samples (`solvers._logp`)."""
    eps = check_end_time(eps, process.T)
    t0, t1 = (eps, process.T) if what == "encode" else (process.T, eps)
    solver = get_solver(method, "ode")
    return_info, trajectory = _check_flags(progress, return_info)
    denoise = _check_denoise(denoise)
    estimator = _check_logp(return_logp, denoise, x, process.sde, solver)
    steps = _resolve_steps(solver, steps)
    record = Recorder(trajectory)
    x, io_dtype = working_state(x)
    sde, score_fn, rec, run = process.sde, process.score_fn, record, solver
    if estimator is not None:
        logp = LogpSolve(sde, score_fn, x, estimator, generator)
        x, sde, score_fn = logp.y, logp.sde, logp.score
        rec, run = logp.recorder(record), logp.solver(solver)
    score = CountedScore(
        score_fn,
        progress=progress_bar(progress, solver.score_calls(steps), _name(method, solver)),
        io_dtype=io_dtype,
    )
    problem = Problem(
        sde=sde, score=score, x=x, t0=t0, t1=t1, steps=steps, generator=None, record=rec
    )  # fmt: skip
    x = run.integrate(problem)
    if denoise == "tweedie":
        x = tweedie(process.sde, score, x, torch.tensor(t1, device=x.device, dtype=x.dtype))
    who = f"ProbabilityFlowODE.{what}"
    if estimator is None:
        return _finish(x, score, record, return_info, solver, steps, who, method)
    out = _finish(x, score, record, True, solver, steps, who, method)
    samples, log_prob = logp.split(out.samples)
    if not return_info:
        return samples, log_prob
    return dataclasses.replace(out, samples=samples, log_prob=log_prob)


def _finish(x, score, record, return_info, solver, steps, who, method):
    where = f"{who}(method={_name(method, solver)!r})"
    described = solver.describe(steps) if return_info else None
    return finish(x, score, record, return_info=return_info, method=where, solver=described)


def _name(method, solver) -> str:
    return method if isinstance(method, str) else repr(solver)


def _start(sde, shape, x_T, *, generator, device, dtype) -> torch.Tensor:
    """The start state: `x_T` if given (checked against `shape`), else a draw from the prior."""
    check_generator("generator", generator)
    dtype = check_dtype("dtype", dtype)
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


def _check_denoise(denoise) -> str:
    """`denoise` as one of `DENOISE`; `True` means `"tweedie"` and `False` means `"none"`."""
    if isinstance(denoise, bool):
        return "tweedie" if denoise else "none"
    if not isinstance(denoise, str):
        raise TypeError(f"denoise must be one of {DENOISE} or a bool, got {denoise!r}")
    if denoise not in DENOISE:
        raise ValueError(f"denoise must be one of {DENOISE} or a bool, got {denoise!r}")
    return denoise


def _check_flags(progress, return_info) -> tuple[bool, bool]:
    """`(return a SampleResult, record the trajectory)` from `return_info`."""
    check_bool("progress", progress)
    if return_info == "trajectory":
        return True, True
    if not isinstance(return_info, bool):
        raise TypeError(
            "return_info must be a bool (True: a SampleResult) or 'trajectory' (a SampleResult "
            f"with the intermediate states), got {return_info!r}"
        )
    return return_info, False


def _check_logp(return_logp, denoise: str, x: torch.Tensor, sde, solver):
    """The divergence estimator for `return_logp` (`None` when it is `False`).

    Raises:
        TypeError: not a bool nor an estimator object; a half-precision state; a non-Gaussian
            SDE with a solver that needs a Gaussian one.
        ValueError: `denoise=True`; `Hutchinson(resample=True)`.
    """
    if isinstance(return_logp, bool):
        if not return_logp:
            return None
        estimator = ExactTrace() if flat_dim(x) <= EXACT_DIM else Hutchinson()
    elif isinstance(return_logp, (ExactTrace, Hutchinson)):
        estimator = return_logp
    else:
        raise TypeError(
            "return_logp must be a bool, or the divergence estimator to use "
            "(sdescore.ExactTrace(...) or sdescore.Hutchinson(...)), got "
            f"{type(return_logp).__name__}"
        )
    if isinstance(estimator, Hutchinson) and estimator.resample:
        raise ValueError(
            "return_logp=Hutchinson(resample=True) is not supported: the sampler's quadrature "
            "of log p needs the probes held fixed through the solve (resample=None or False)"
        )
    if denoise != "none":
        raise ValueError(
            "return_logp=True with denoise=True: Tweedie's final denoising step is not a step "
            "of the probability-flow ODE and changes the density by the log-determinant of its "
            "Jacobian, which is not tracked; sample with denoise=False (log p of the time-eps "
            "samples), or call sdescore.likelihood on the denoised samples"
        )
    if x.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(
            f"return_logp needs a float32 or float64 state, got {x.dtype}: the log-density "
            "accumulator cannot be carried in half precision (pass dtype=torch.float32)"
        )
    if not isinstance(sde, GaussianSDE) and not isinstance(solver, (TorchDiffEq, Dopri5)):
        raise TypeError(
            f"method {solver!r} needs a GaussianSDE (VPSDE, SubVPSDE, VESDE, LinearSDE), got "
            f"{type(sde).__name__}; use a torchdiffeq method such as 'dopri5'"
        )
    return estimator


def _resolve_steps(solver: Solver, steps) -> int | None:
    """The budget: `steps` given to the entry point, the solver's own `steps`, its explicit
    grid's, or its default (all that are given must agree); `None` for a solver that chooses
    its own steps (where `steps` is an error)."""
    default = solver.default_steps
    if default is None:
        if steps is not None:
            raise ValueError(
                f"steps does not apply to method {solver!r}: it chooses its own steps (set its "
                "tolerances on the object instead)"
            )
        return None
    given = {
        "steps": None if steps is None else check_int("steps", steps),
        "the solver's steps": getattr(solver, "steps", None),
        "the solver's explicit grid": solver.grid_steps(),
    }
    set_ = {k: v for k, v in given.items() if v is not None}
    if len(set(set_.values())) > 1:
        raise ValueError(
            f"conflicting budgets for {solver!r}: "
            + ", ".join(f"{k} = {v}" for k, v in set_.items())
            + "; give one"
        )
    return next(iter(set_.values()), default)
