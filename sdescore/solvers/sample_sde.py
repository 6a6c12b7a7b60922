"""`ReverseSDE.sample`: validate the options once, then hand over to a solver.

The function is attached to `ReverseSDE` as its `sample` method. Every method gets the score
wrapped in a `CountedScore`, so that evaluations are counted and shapes checked the same way.
"""

from __future__ import annotations

import inspect

import torch

from .._checks import check_end_time
from ._common import (
    CountedScore,
    Recorder,
    finish,
    grid_dtype,
    progress_bar,
    tweedie,
    working_state,
)
from .base import Problem, Solver
from .native import PREDICTORS
from .options import check_denoise, check_flags, resolve_solver, resolve_start, resolve_steps
from .projection import Inpainting
from .sde_methods import (
    _PREDICTOR_CLASSES,
    PC,
    AnnealedLangevin,
    GottaGoFast,
    Langevin,
    SDEDPMSolver,
    TorchSDE,
)
from .torchdiffeq_sample import ODE_ADAPTIVE, ODE_FIXED
from .torchsde import TORCHSDE_METHODS

__all__ = ["SDE_METHODS", "sample"]

SDE_METHODS = (
    *PREDICTORS,
    "pc",
    "annealed_langevin",
    "sde_dpm_solver",
    "gotta_go_fast",
    *TORCHSDE_METHODS,
)
# The probability-flow ODE's methods (sample_ode.ODE_METHODS, which imports this module's
# neighbours, not this module), named here only to point a user to the right process.
_ODE_ONLY = ("dpm_solver", "unipc", *ODE_ADAPTIVE, *ODE_FIXED)

_OPTIONS = {
    **{p: frozenset({"steps", "inpaint"}) for p in PREDICTORS},
    "pc": frozenset({"steps", "predictor", "snr", "corrector_steps", "inpaint"}),
    "annealed_langevin": frozenset({"steps", "corrector_steps", "step_size", "inpaint"}),
    "sde_dpm_solver": frozenset({"steps"}),
    "gotta_go_fast": frozenset({"rtol", "atol", "dt", "max_steps"}),
    **{
        m: frozenset({"steps", "dt", "adaptive", "rtol", "atol", "max_steps"})
        for m in TORCHSDE_METHODS
    },
}


def sample(
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
    return_info: bool = False,
    trajectory: bool = False,
    predictor: str | None = None,
    snr: float | None = None,
    corrector_steps: int | None = None,
    step_size: float | None = None,
    dt: float | None = None,
    adaptive: bool | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    inpaint: Inpainting | None = None,
    **solver_options,
):
    r"""Draw samples by integrating the reverse SDE from $T$ (the prior) down to `eps`.

    Methods (`sdescore.solvers.SDE_METHODS`): native fixed-step `"euler_maruyama"`,
    `"reverse_diffusion"`, `"ancestral"`, `"pc"` (predictor + Langevin corrector) and
    `"annealed_langevin"` (NCSN); `"sde_dpm_solver"` (`sdescore.SDEDPMSolver()`); the adaptive
    `"gotta_go_fast"`; and torchsde's `"euler"`,
    `"milstein"`, `"srk"`, `"midpoint"`, `"heun"`, `"euler_heun"`,
    `"log_ode"`. Options a method does not use must be left at `None`. See docs/sampling.md.

    Args:
        process: the `ReverseSDE` (this function is its `sample` method).
        shape: `(B, *D)`; may be omitted when `x_T` is given.
        method: the solver.
        steps: number of time steps (default 1000); for `"annealed_langevin"` the number of
            noise levels; for torchsde methods it sets `dt = (T - eps) / steps`.
        eps: end time, in $(0, T)$.
        x_T: start state `(B, *D)` instead of a prior draw.
        generator: `torch.Generator` for the prior draw and all noise (torchsde's Brownian
            motion is seeded from it): a fixed seed gives bit-identical samples.
        device: of the prior draw (without `x_T`).
        dtype: of the prior draw (without `x_T`).
        denoise: finish with Tweedie's denoiser $E[x_0 \mid x_\epsilon]$ (one score call).
        progress: show a tqdm bar counting score evaluations.
        return_info: return a `SampleResult` (samples, `nfe`, trajectory) instead of a tensor.
        trajectory: record the intermediate states (needs `return_info=True`).
        predictor: `"pc"` only: `"euler_maruyama"`, `"reverse_diffusion"` (default) or
            `"ancestral"`.
        snr: `"pc"` only: the corrector's signal-to-noise ratio (default 0.16).
        corrector_steps: Langevin steps per time step for `"pc"`, or per noise level for
            `"annealed_langevin"` (default 1).
        step_size: `"annealed_langevin"` only: $\epsilon$ in $\alpha_i = \epsilon
            \sigma_i^2/\sigma_L^2$ (Song & Ermon 2019); default $0.2\,\sigma_L^2$, their
            2e-5 at $\sigma_L = 0.01$.
        dt: torchsde: the step (or initial step); `"gotta_go_fast"`: the initial step.
        adaptive: torchsde only: adaptive step-size control.
        rtol: relative tolerance of torchsde's adaptive stepping (default 1e-5) or of
            `"gotta_go_fast"` (default 1e-2).
        atol: absolute tolerance of torchsde's adaptive stepping (default 1e-4) or of
            `"gotta_go_fast"` (default 1e-2).
        max_steps: adaptive methods only (`"gotta_go_fast"`, torchsde with `adaptive=True`):
            the most steps before a `MaxStepsError` (default 10 000).
        inpaint: native methods only (`PREDICTORS`, `"pc"`, `"annealed_langevin"`): an
            `Inpainting(observed, mask)`; after every step the known part is redrawn from its
            forward marginal given the observation (Song et al. 2021, App. I) and the samples
            end equal to `observed` where `mask` is True. `Inpainting(..., method="tweedie")`
            also corrects the unknown part's score (exact for Gaussian data; each score call
            then adds backward passes). See `sdescore.solvers.projection`.
        **solver_options: not accepted; they are caught only to say what to do. A method name
            is a shorthand for a default-configured solver object, and `sample` takes only the
            options listed above: any other option of the object (`sde_dpm_solver`'s `order`,
            `eta`, `schedule`, `damped`) raises a `TypeError` naming the call that sets it,
            `method=sdescore.SDEDPMSolver(order=3)`; an unknown name raises a `TypeError` with
            the closest valid names.

    Returns:
        Samples `(B, *D)` at time `eps` (or denoised), or a `SampleResult`.

    Raises:
        ValueError, TypeError: for an unknown method (the valid ones are listed), an option
            the method does not use, a bad value, or a score of the wrong shape.
        NonFiniteError: the samples hold NaN/Inf (checked once, after the loop); the message
            names the first score call that saw NaN/Inf and its time, and what to check.
        MaxStepsError: an adaptive method exceeded `max_steps`.
    """
    sde = process.sde
    given = dict(
        predictor=predictor,
        snr=snr,
        corrector_steps=corrector_steps,
        step_size=step_size,
        dt=dt,
        adaptive=adaptive,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
    )
    solver = resolve_solver(
        method,
        given,
        steps=steps,
        inpaint=inpaint,
        extra=solver_options,
        keywords=_KEYWORDS,
        process="sde",
        build=_build,
        valid=SDE_METHODS,
        other=_ODE_ONLY,
        options=_OPTIONS,
        hint="use sde.probability_flow(score_fn).sample(...) for it, or a reverse-SDE method "
        f"{list(SDE_METHODS)}",
    )
    if inpaint is not None and not isinstance(inpaint, Inpainting):
        raise TypeError(
            f"inpaint must be an sdescore.solvers.Inpainting(observed, mask), got "
            f"{type(inpaint).__name__}"
        )
    check_flags(progress, return_info, trajectory)
    denoise = check_denoise(denoise)
    eps = check_end_time(eps, sde.T)
    steps = resolve_steps(solver, steps)
    x = resolve_start(sde, shape, x_T, generator=generator, device=device, dtype=dtype)
    x, io_dtype = working_state(x)
    record = Recorder(trajectory)
    name = method if isinstance(method, str) else repr(solver)
    project = None if inpaint is None else inpaint.bind(sde, x, generator)
    score = CountedScore(
        process.score_fn if project is None else project.guide(process.score_fn),
        progress=progress_bar(progress, solver.score_calls(steps), name),
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
    return finish(
        x, score, record, return_info=return_info, method=f"ReverseSDE.sample(method={name!r})"
    )


# sample()'s own keywords, for the error on one it does not take.
_KEYWORDS = tuple(inspect.signature(sample).parameters)[2:-1]


def _build(method: str, opts: dict) -> Solver:
    """The default-configured solver object for a method name, with the legacy options."""
    if method in PREDICTORS:
        return _PREDICTOR_CLASSES[method]()
    if method == "pc":
        corrector = {k: opts[k] for k in ("snr",) if k in opts}
        if "corrector_steps" in opts:
            corrector["steps"] = opts["corrector_steps"]
        pred = {"predictor": opts["predictor"]} if "predictor" in opts else {}
        return PC(**pred, corrector=Langevin(**corrector))
    if method == "annealed_langevin":
        return AnnealedLangevin(**opts)
    if method == "sde_dpm_solver":
        return SDEDPMSolver()
    if method == "gotta_go_fast":
        return GottaGoFast(**opts)
    return TorchSDE(method, **opts)
