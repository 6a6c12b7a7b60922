r"""Fixed-step predictors for the reverse-time SDE: Euler–Maruyama, reverse diffusion, ancestral.

All three step from $t_i$ down to $t_{i+1} < t_i$ on a decreasing grid. Reverse diffusion and
ancestral sampling are derived from the exact forward transition of a Gaussian-kernel SDE,
$x_t = a\,x_s + G z$ with $a = \alpha_t/\alpha_s$ and
$G^2 = \sigma_t^2 - a^2\sigma_s^2 = \sigma_t^2\,(1 - e^{2(\lambda_t - \lambda_s)})$, $\lambda$ the half
log-SNR. For the VP SDE this gives DDPM's $\beta_i = 1 - \bar\alpha_i/\bar\alpha_{i-1}$, for the VE SDE
SMLD's $\sigma_i^2 - \sigma_{i-1}^2$, for any schedule and step count. Written with `expm1`,
$G^2 \in [0, \sigma_t^2]$ and $a > 0$, so no step count produces NaN (the 2021 reference code set
$\beta_i = \beta_{max}/N$, which exceeds 1 for $N \le 20$).
"""

from __future__ import annotations

from typing import ClassVar, final

import torch

from .._checks import check_int
from ..sdes.base import SDE
from ..sdes.gaussian import GaussianSDE
from ._common import checked_drift, noise_like, require_gaussian
from .base import Problem, Solver
from .grid import as_grid

__all__ = [
    "PREDICTORS",
    "Ancestral",
    "EulerMaruyama",
    "ReverseDiffusion",
    "Predictor",
    "StepCoefficients",
    "batch_times",
    "last_noise",
    "predictor_step",
]

PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral")


class StepCoefficients:
    r"""Per-step coefficients on a decreasing grid `ts: (N + 1,)`, computed once before the loop.

    Attributes (each `(N,)`, entry i for the step $t_i \to t_{i+1}$): `h` the step length,
    `g` the diffusion $g(t_i)$; for a `GaussianSDE` also `log_a` $= \log(\alpha_{t_i}/\alpha_{t_{i+1}})$,
    `G2` the forward transition variance and `post_var` $= \sigma_{t_{i+1}}^2 G^2 / \sigma_{t_i}^2$,
    the variance of $q(x_{t_{i+1}} \mid x_{t_i}, x_0)$ (Ho et al. 2020, eq. (7)).
    """

    def __init__(self, sde: SDE, ts: torch.Tensor):
        self.ts = ts
        self.h = ts[:-1] - ts[1:]
        self.g = sde.diffusion(ts)[:-1]
        self.gaussian = isinstance(sde, GaussianSDE)
        if self.gaussian:
            log_alpha, sigma, lam = sde.log_alpha(ts), sde.sigma(ts), sde.log_snr(ts)
            keep = -torch.expm1(2 * (lam[:-1] - lam[1:]))  # 1 - (SNR_t / SNR_s), in [0, 1]
            self.log_a = log_alpha[:-1] - log_alpha[1:]
            self.G2 = sigma[:-1].square() * keep
            self.post_var = sigma[1:].square() * keep
            self.f = sde.drift_coeff(ts)[:-1]

    def corrector_alpha(self) -> list:
        r"""Langevin's $\alpha_i$: $a^2$ ($1 - \beta_i$ for VP, 1 for VE; Song et al. 2021, Alg. 5)."""
        if not self.gaussian:
            return [1.0] * len(self.h)
        return torch.exp(2 * self.log_a).tolist()

    def affine(self, name: str) -> tuple[list, list, list]:
        r"""Per-step scalars `(a, b, c)` of the update $x \leftarrow a x + b s + c z$.

        All three predictors take this form for a Gaussian-kernel SDE (for Euler–Maruyama on
        another SDE, `a` is `None` and the drift is evaluated). Converted to Python numbers once,
        before the loop, so that each step is three fused tensor operations.
        """
        if name == "euler_maruyama":
            a = (1 - self.f * self.h) if self.gaussian else None
            b, c = self.g.square() * self.h, self.g * self.h.sqrt()
        elif name == "reverse_diffusion":
            a, b, c = 2 - self.log_a.exp(), self.G2, self.G2.sqrt()
        else:  # ancestral
            inv_a = torch.exp(-self.log_a)
            a, b, c = inv_a, self.G2 * inv_a, self.post_var.sqrt()
        return (None if a is None else a.tolist()), b.tolist(), c.tolist()


def _require_gaussian(sde: SDE, method: str) -> None:
    require_gaussian(
        sde, f"method {method!r}", purpose=" for its discrete kernel",
        instead="use 'euler_maruyama' for other SDEs",
    )  # fmt: skip


def batch_times(ts: torch.Tensor, batch: int) -> list[torch.Tensor]:
    """The grid as a list of per-example time vectors `(B,)` (views, no copies)."""
    return list(ts[:, None].expand(len(ts), batch).unbind(0))


class Predictor:
    r"""One predictor step $t_i \to t_{i+1}$ of `x: (B, *D)` with standard normal noise `z`.

    - `euler_maruyama`: $x - [f(x, t) - g^2 s]\,h + g\sqrt{h}\,z$ (Song et al. 2021, eq. (6)).
    - `reverse_diffusion`: $(2 - a)\,x + G^2 s + G z$ (Song et al. 2021, eq. (46)).
    - `ancestral`: the posterior $q(x_{t_{i+1}} \mid x_{t_i}, \hat x_0)$ at Tweedie's
      $\hat x_0$: mean $(x + G^2 s)/a$, variance `post_var`. For VP this is DDPM with the
      posterior variance $\tilde\beta_i$ (Ho et al. 2020, eq. (7)); for VE it is exactly SMLD's
      ancestral sampler (Song et al. 2021, eq. (47)).
    """

    def __init__(self, name: str, sde: SDE, score, c: StepCoefficients, batch: int):
        if name != "euler_maruyama":
            _require_gaussian(sde, name)
        self.sde, self.score = sde, score
        self.a, self.b, self.c = c.affine(name)
        self.h = c.h.tolist()
        self.t = batch_times(c.ts, batch)

    def __call__(self, x: torch.Tensor, i: int, z: torch.Tensor | None) -> torch.Tensor:
        """Step `i`; with `z=None` the step returns its mean (no noise is added)."""
        t = self.t[i]
        if t.dtype != x.dtype:  # grid in float32 for a low-precision state; the score gets x's
            t = t.to(x.dtype)
        s = self.score(x, t)
        if self.a is None:  # Euler-Maruyama on an SDE without a closed-form kernel
            out = x - self.h[i] * checked_drift(self.sde, x, t)
        else:
            out = x * self.a[i]
        out = out.add_(s, alpha=self.b[i])
        return out if z is None else out.add_(z, alpha=self.c[i])


def predictor_step(
    name: str, sde: SDE, score, x: torch.Tensor, i: int, c: StepCoefficients, z: torch.Tensor
) -> torch.Tensor:
    """One step of predictor `name` (a convenience for tests; loops reuse a `Predictor`)."""
    return Predictor(name, sde, score, c, x.shape[0])(x, i, z)


def last_noise(x: torch.Tensor, i: int, last: int, final_noise: bool, generator):
    """The noise of step `i`: `None` (a noise-free step) for the last one unless `final_noise`."""
    return None if i == last and not final_noise else noise_like(x, generator)


def _grid(solver: Solver, p: Problem) -> torch.Tensor:
    """The solver's grid (`solver.grid`, uniform in t by default) from `p.t0` to `p.t1`."""
    return solver.grid.times(p.sde, p.t0, p.t1, p.steps, p.x)


class _Predictor(Solver):
    """A fixed-step predictor of `native.py`, `steps` steps (default 1000), one call each.

    Args:
        steps: the budget when `sample` gets no `steps=` (score calls for the exponential
            integrators, time steps otherwise; default: the class's `default_steps`).
        grid: the step boundaries: a `Grid` (default `TimeUniform()`, uniform in t), its name,
            or explicit times (one step per interval; `sdescore.solvers.grid`).
    """

    process: ClassVar[str] = "sde"
    default_steps: ClassVar[int] = 1000
    supports_inpaint: ClassVar[bool] = True
    name: ClassVar[str]

    def __init__(self, *, steps: int | None = None, grid="time_uniform"):
        self.steps = check_int("steps", steps, allow_none=True)
        self.grid = as_grid(grid)

    def integrate(self, p: Problem) -> torch.Tensor:
        # Without `final_noise` the last step returns its mean (Song et al. 2021's reference
        # code, `denoise=True`; Ho et al. 2020, Alg. 2); `project` (inpainting) after each step.
        ts, x = _grid(self, p), p.x
        step = Predictor(self.name, p.sde, p.score, StepCoefficients(p.sde, ts), x.shape[0])
        p.record(ts[0], x)
        last = len(ts) - 2
        for i in range(len(ts) - 1):
            x = step(x, i, last_noise(x, i, last, p.final_noise, p.generator))
            if p.project is not None:
                x = p.project(x, ts[i + 1])
            p.record(ts[i + 1], x)
        return x


@final
class EulerMaruyama(_Predictor):
    r"""Euler–Maruyama on the reverse SDE, $x - [f - g^2 s]\,h + g\sqrt h\,z$ (Song et al. 2021,
    eq. (6)); any SDE."""

    name: ClassVar[str] = "euler_maruyama"


@final
class ReverseDiffusion(_Predictor):
    """Reverse diffusion (Song et al. 2021, eq. (46)); a `GaussianSDE`."""

    name: ClassVar[str] = "reverse_diffusion"


@final
class Ancestral(_Predictor):
    """Ancestral sampling, DDPM / SMLD (Ho et al. 2020, eq. (7); Song et al. 2021, eq. (47));
    a `GaussianSDE`."""

    name: ClassVar[str] = "ancestral"
