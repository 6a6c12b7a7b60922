r"""Langevin samplers: predictor–corrector (Song et al. 2021) and annealed Langevin (NCSN).

Both apply unadjusted Langevin steps $x \leftarrow x + \epsilon\,s(x, t) + \sqrt{2\epsilon}\,z$,
which leave $p_t$ invariant as $\epsilon \to 0$; they differ in how $\epsilon$ is chosen.
"""

from __future__ import annotations

from typing import ClassVar, final

import torch

from .._checks import check_choice, check_int
from ._common import check_positive, noise_like, require_gaussian
from .base import Problem, Solver
from .grid import as_grid, grid_dtype
from .native import (
    PREDICTORS,
    Predictor,
    StepCoefficients,
    _grid,
    _Predictor,
    _require_gaussian,
    batch_times,
    last_noise,
)

__all__ = [
    "PC",
    "AnnealedLangevin",
    "Langevin",
    "annealing_levels",
    "langevin_correct",
]


def _mean_norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1).mean()


def langevin_correct(
    score,
    x: torch.Tensor,
    t: torch.Tensor,
    *,
    snr: float,
    steps: int,
    alpha,
    sigma: float | None,
    generator,
) -> torch.Tensor:
    r"""Langevin corrector of Song et al. (2021), Algorithms 4–5, at times `t: (B,)`.

    With `sigma` = $\sigma(t)$ of a Gaussian-kernel SDE, the step is
    $\epsilon = 2\alpha\,(r\,\sigma)^2$, $r$ = `snr`: the paper's
    $2\alpha\,(r\,\lVert z\rVert / \lVert s\rVert)^2$ at the score norm
    $\lVert s\rVert = \lVert z\rVert/\sigma$ of the kernel itself. Since $p_t$ is the data
    smoothed by the kernel, $-\nabla^2 \log p_t \preceq I/\sigma^2$, so this step is stable
    ($\epsilon L \le 2\alpha r^2$) for any data, in any dimension; and $\epsilon$ does not
    depend on the model, so an inaccurate score (a trained one, too small at low noise) cannot
    inflate it. Without `sigma` (an SDE without a kernel) the paper's rule is used with
    batch-mean norms, as in the reference code (finite where one example's score vanishes, but
    coupling the examples of a batch).
    """
    if sigma is not None:  # eps = 2 alpha (snr sigma)^2, sqrt(2 eps) = 2 snr sigma sqrt(alpha)
        step, noise = 2 * alpha * (snr * sigma) ** 2, 2 * snr * sigma * alpha**0.5
    # eps = 2 alpha (snr r)^2 and sqrt(2 eps) = 2 snr sqrt(alpha) r, with r = |z| / |s|.
    c_step, c_noise = 2 * alpha * snr**2, 2 * snr * alpha**0.5
    tiny = torch.finfo(x.dtype).tiny
    t = t.to(x.dtype)  # the grid may be float32 for a low-precision state (no-op otherwise)
    for _ in range(steps):
        s = score(x, t)
        z = noise_like(x, generator)
        if sigma is not None:
            x = x.add(s, alpha=step).add_(z, alpha=noise)
            continue
        r = _mean_norm(z) / _mean_norm(s).clamp_min(tiny)
        x = torch.addcmul(torch.addcmul(x, s, r.square() * c_step), z, r * c_noise)
    return x


def annealing_levels(sde, eps: float, steps: int, like: torch.Tensor) -> torch.Tensor:
    """`steps` times from T down to `eps`, uniform in log-SNR $\\lambda$ (a single level: `eps`).

    For the VE SDE this is NCSN's geometric sequence of noise levels (Song & Ermon 2019, Sec. 4.2);
    for VP-type SDEs it is its natural analogue (uniform in $t$ would leave few levels at the low
    noise where the samples contract: measured on Gaussian data, std 0.426 for a target 0.400
    with 200 levels uniform in t).
    """
    _require_gaussian(sde, "annealed_langevin")
    if steps == 1:
        return torch.full((1,), eps, device=like.device, dtype=grid_dtype(like))
    opts = {"device": like.device, "dtype": grid_dtype(like)}  # at least float32
    ends = sde.log_snr(torch.tensor([sde.T, eps], **opts))
    lam = ends[0] + torch.linspace(0, 1, steps, **opts) * (ends[1] - ends[0])
    levels = sde.t_from_log_snr(lam).to(**opts)
    levels[0], levels[-1] = sde.T, eps
    return levels


@final
class Langevin:
    r"""The Langevin corrector of `PC` (Song et al. 2021, Algs. 4–5).

    Args:
        snr: the signal-to-noise ratio $r$; the step is $2\alpha (r\sigma_t)^2$ (default 0.16).
        steps: Langevin steps per time step (default 1), one score call each.
    """

    def __init__(self, *, snr: float = 0.16, steps: int = 1):
        self.snr = check_positive("snr", snr)
        self.steps = check_int("corrector steps", steps)

    def __repr__(self) -> str:
        return f"Langevin(snr={self.snr!r}, steps={self.steps!r})"

    def to_dict(self) -> dict:
        return {"snr": self.snr, "steps": self.steps}

    def __eq__(self, other) -> bool:
        return isinstance(other, Langevin) and (self.snr, self.steps) == (other.snr, other.steps)

    def __hash__(self) -> int:
        return hash((self.snr, self.steps))


@final
class PC(Solver):
    """Predictor–corrector sampling (Song et al. 2021, Alg. 1): a predictor step, then Langevin.

    `steps` on `sample` is the number of time steps (default 1000); each costs
    `1 + corrector.steps` score calls.

    Args:
        steps: the budget when `sample` gets no `steps=` (score calls for the exponential
            integrators, time steps otherwise; default: the class's `default_steps`).
        predictor: `EulerMaruyama()`, `ReverseDiffusion()` (default) or `Ancestral()`, or its
            name.
        corrector: a `Langevin` corrector (default `Langevin(snr=0.16, steps=1)`).
        grid: the step boundaries: a `Grid` (default `TimeUniform()`), its name, or explicit
            times (one step per interval; `sdescore.solvers.grid`).
    """

    process: ClassVar[str] = "sde"
    default_steps: ClassVar[int] = 1000
    supports_inpaint: ClassVar[bool] = True

    def __init__(
        self,
        *,
        steps: int | None = None,
        predictor="reverse_diffusion",
        corrector: Langevin | None = None,
        grid="time_uniform",
    ):
        self.steps = check_int("steps", steps, allow_none=True)
        if isinstance(predictor, _Predictor):
            predictor = predictor.name
        self.predictor = check_choice("predictor", predictor, PREDICTORS)
        corrector = Langevin() if corrector is None else corrector
        if not isinstance(corrector, Langevin):
            raise TypeError(
                f"corrector must be an sdescore.Langevin(snr=..., steps=...), got "
                f"{type(corrector).__name__}"
            )
        self.corrector = corrector
        self.grid = as_grid(grid)

    def score_calls(self, steps: int | None) -> int | None:
        return None if steps is None else steps * (1 + self.corrector.steps)

    def integrate(self, p: Problem) -> torch.Tensor:
        # At each grid time, first the corrector's Langevin steps at t_i, then one predictor step
        # to t_{i+1}; without `final_noise` the last predictor step returns its mean, as the
        # reference code does (`x_mean if denoise`).
        if self.predictor != "euler_maruyama":  # named as the user asked for it
            require_gaussian(
                p.sde, f"method 'pc' (its predictor {self.predictor!r})",
                purpose=" for its discrete kernel",
                instead="use sdescore.PC(predictor='euler_maruyama') for other SDEs",
            )  # fmt: skip
        ts, x, project = _grid(self, p), p.x, p.project
        c = StepCoefficients(p.sde, ts)
        step = Predictor(self.predictor, p.sde, p.score, c, x.shape[0])
        alphas = c.corrector_alpha()
        sigmas = p.sde.sigma(ts[:-1]).tolist() if c.gaussian else [None] * (len(ts) - 1)
        p.record(ts[0], x)
        for i in range(len(ts) - 1):
            x = langevin_correct(
                p.score,
                x,
                step.t[i],
                snr=self.corrector.snr,
                steps=self.corrector.steps,
                alpha=alphas[i],
                sigma=sigmas[i],
                generator=p.generator,
            )
            if project is not None:  # inpainting: after the corrector and after the predictor
                x = project(x, ts[i])
            x = step(x, i, last_noise(x, i, len(ts) - 2, p.final_noise, p.generator))
            if project is not None:
                x = project(x, ts[i + 1])
            p.record(ts[i + 1], x)
        return x


@final
class AnnealedLangevin(Solver):
    r"""Annealed Langevin dynamics (NCSN; Song & Ermon 2019, Alg. 1) on a `GaussianSDE`.

    `steps` on `sample` is the number of noise levels $t_i$ (default 1000; `annealing_levels`).
    At level $i$, `corrector_steps` steps $x \leftarrow x + \tfrac{\alpha_i}{2} s(x, t_i) +
    \sqrt{\alpha_i}\,z$; the very last adds no noise unless `denoise="none"`.

    Args:
        steps: the budget when `sample` gets no `steps=` (score calls for the exponential
            integrators, time steps otherwise; default: the class's `default_steps`).
        step_size: $\epsilon$ in $\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2$; default
            $0.2\,\sigma_L^2$ (their 2e-5 at $\sigma_L = 0.01$), stable for any schedule.
        corrector_steps: Langevin steps per noise level (default 1).

    With one step per level it mixes too little where the noise is low and stays biased
    (docs/sampling.md, "Solver objects"): on a 2-D Gaussian with std (0.4, 1.5) the sample std
    was (0.50, 1.30) at 200 levels and (0.42, 1.43) at 1000; 100 levels of 100 steps, as
    NCSN's 10 x 100, gave (0.400, 1.500). Raise `corrector_steps` or use a reverse-SDE
    sampler.
    """

    process: ClassVar[str] = "sde"
    default_steps: ClassVar[int] = 1000
    supports_inpaint: ClassVar[bool] = True

    def __init__(
        self, *, steps: int | None = None, step_size: float | None = None, corrector_steps: int = 1
    ):
        self.steps = check_int("steps", steps, allow_none=True)
        self.step_size = None if step_size is None else check_positive("step_size", step_size)
        self.corrector_steps = check_int("corrector_steps", corrector_steps)

    def score_calls(self, steps: int | None) -> int | None:
        return None if steps is None else steps * self.corrector_steps

    def integrate(self, p: Problem) -> torch.Tensor:
        levels = annealing_levels(p.sde, p.t1, p.steps, p.x)  # checks that sde has a kernel
        step_size = self.step_size
        if step_size is None:
            # Song & Ermon's eps = 2e-5 was tuned for sigma_L = 0.01; rescaled to this SDE's
            # sigma_L it keeps alpha_i / sigma_i^2 = 0.2, stable whatever the schedule.
            step_size = 0.2 * float(p.sde.sigma(torch.tensor(p.t1, dtype=torch.float64))) ** 2
        sigma = p.sde.sigma(levels)
        alphas = (step_size * (sigma / sigma[-1]).square()).tolist()
        x, project = p.x, p.project
        times = batch_times(levels.to(x.dtype), x.shape[0])
        p.record(levels[0], x)
        last = len(levels) * self.corrector_steps - 1
        for i in range(len(levels)):
            a = alphas[i]
            for j in range(self.corrector_steps):
                x = x + (0.5 * a) * p.score(x, times[i])
                z = last_noise(x, i * self.corrector_steps + j, last, p.final_noise, p.generator)
                if z is not None:
                    x = x.add_(z, alpha=a**0.5)
                if project is not None:
                    x = project(x, levels[i])
            p.record(levels[i], x)
        return x
