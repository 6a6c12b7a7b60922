r"""UniPC: a multistep predictor–corrector for the probability-flow ODE, in data prediction.

Zhao et al. (2023), "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models". In half log-SNR $\lambda$ the PF ODE's exact solution from $s$ to $t$,
$h = \lambda_t - \lambda_s$, is (DPM-Solver++, Lu et al. 2022b, eq. (9))

$$x_t = \frac{\sigma_t}{\sigma_s} x_s + \sigma_t \int_{\lambda_s}^{\lambda_t} e^{\lambda}
\hat x_0(\lambda)\,d\lambda, \qquad \sigma_t\int e^{\lambda} \frac{(\lambda - \lambda_s)^j}{j!}
\,d\lambda = \alpha_t\,h^{j+1}\varphi_{j+1}(-h),$$

with $\varphi_k(z) = \int_0^1 e^{(1-\theta)z}\theta^{k-1}/(k-1)!\,d\theta$. Given predictions
$m_k = \hat x_0$ at $\lambda_s + r_k h$ and $D_k = (m_k - m_0)/r_k$, the update

$$x_t = \frac{\sigma_t}{\sigma_s} x_s - \alpha_t\,\mathrm{expm1}(-h)\,m_0 - \alpha_t B(h)
\sum_k a_k D_k$$

is exact for polynomial $\hat x_0$ of degree $\le p$ when the $p$ weights solve the Vandermonde
system $\sum_k a_k r_k^{j-1} = j!\,(-h)\varphi_{j+1}(-h)/B(h)$, $j = 1..p$ (Zhao et al.,
Thm. 3.1 and Alg. 2 in data prediction; $B(h) = -h$ is their "bh1", $B(h) = \mathrm{expm1}(-h)$
"bh2"). The predictor UniP-$p$ uses the $p - 1$ previous predictions ($r_k < 0$): order $p$.
The corrector UniC-$p$ adds the prediction at the new point ($r = 1$), which the next step
evaluates anyway, and redoes the step: order $p + 1$ at no extra score call. The next step
starts from the corrected state but keeps the prediction made at the predicted one; the last
step is not corrected (its prediction would be an extra call).

With the exact weights $B(h)$ cancels; it matters where the paper fixes a weight to $1/2$
(UniC-1 and UniP-2, $a_1 = 1/2$, exact to leading order): there "bh2" gives DPM-Solver++(2M).
"""

from __future__ import annotations

import math
from typing import ClassVar, final

import torch

from .._checks import check_bool, check_choice, check_int
from ._common import check_order, require_gaussian
from .base import Problem, Solver, with_calls
from .dpm_solver import DEFAULT_GRID
from .grid import Grid, as_grid

__all__ = ["UNIPC_VARIANTS", "UniPC", "unipc"]

UNIPC_VARIANTS = ("bh1", "bh2")
_SERIES_TERMS = 14  # |z| < 1: the series' remainder is below 1/(14 + k)! < 1e-11 relative


def _phi(z: float, k: int) -> float:
    r"""$\varphi_k(z) = \sum_{n \ge 0} z^n / (n + k)!$, $k \ge 1$, in float64.

    The recursion $\varphi_{k+1} = (\varphi_k - 1/k!)/z$ loses $\log_{10}(1/|z|)$ digits per
    level, so below $|z| = 1$ the series is summed instead.
    """
    if abs(z) < 1:
        out = 0.0
        for n in reversed(range(_SERIES_TERMS)):
            out = out * z + 1 / math.factorial(n + k)
        return out
    out = math.expm1(z) / z
    for j in range(1, k):
        out = (out - 1 / math.factorial(j)) / z
    return out


def _weights(r: list[float], h: float) -> list[float]:
    r"""Weights $B(h) a_k$ solving $\sum_k a_k r_k^{j-1} = j!\,(-h)\varphi_{j+1}(-h)/B(h)$ for
    the nodes `r` ($j = 1..$`len(r)`), by Lagrange's formula for the inverse Vandermonde matrix."""
    c = [math.factorial(j) * (-h) * _phi(-h, j + 1) for j in range(1, len(r) + 1)]
    out = []
    for k, rk in enumerate(r):
        others = [rm for m, rm in enumerate(r) if m != k]
        poly = [1.0]  # coefficients (low to high) of prod_{m != k} (x - r_m)
        for rm in others:
            poly = [
                (poly[i - 1] if i > 0 else 0.0) - (rm * poly[i] if i < len(poly) else 0.0)
                for i in range(len(poly) + 1)
            ]
        denom = math.prod(rk - rm for rm in others)
        out.append(sum(cj * pj for cj, pj in zip(c, poly, strict=True)) / denom)
    return out


def _update(x, s, t, hist, new, p: int, variant: str) -> torch.Tensor:
    """UniP-p (`new is None`) or UniC-p (`new` the prediction at `t`) from `s` to `t`.

    `s`, `t`: `(alpha, sigma, lambda)` as floats. `hist`: `(lambda, x0-prediction)` pairs, the
    one at `s` last; the predictor uses the last `p`, the corrector the last `p` and `new`.
    """
    (_, sig_s, lam_s), (a_t, sig_t, lam_t) = s, t
    h = lam_t - lam_s
    m0 = hist[-1][1]
    x_t = (sig_t / sig_s) * x - (a_t * math.expm1(-h)) * m0
    nodes = [((lam - lam_s) / h, m) for lam, m in reversed(hist[-p:-1])]
    if new is not None:
        nodes.append((1.0, new))
    if not nodes:
        return x_t
    if len(nodes) == 1 and (new is not None or p == 2):
        # UniC-1 and UniP-2: a_1 = 1/2 (Zhao et al., Sec. 3.2), exact to leading order
        w = [0.5 * (-h if variant == "bh1" else math.expm1(-h))]
    else:
        w = _weights([r for r, _ in nodes], h)
    for wk, (rk, mk) in zip(w, nodes, strict=True):
        x_t = x_t - (a_t * wk / rk) * (mk - m0)
    return x_t


def unipc(
    p: Problem,
    *,
    order: int,
    grid: Grid,
    variant: str,
    corrector: bool = True,
    lower_order_final: bool = True,
) -> torch.Tensor:
    r"""UniPC for the problem `p`: the PF ODE from `p.t0` to `p.t1` in `p.steps` steps, one score
    call each.

    Args:
        p: the `Problem` (a `GaussianSDE`, a counted score, the state at `t0`, the recorder of
            the states at step boundaries).
        order: the predictor's order p (1-3); the first steps use lower orders (warm-up).
        grid: the step boundaries (`sdescore.solvers.grid`).
        variant: `"bh1"` or `"bh2"` (see the module docstring).
        corrector: apply UniC after every step but the last (`False`: UniP alone).
        lower_order_final: the last steps use orders $\min(p, \text{steps left})$.
    """
    sde, score, x, steps, record = p.sde, p.score, p.x, p.steps, p.record
    grid = as_grid(grid)
    ts = grid.times(sde, p.t0, p.t1, steps, x)
    tb = ts.to(x.dtype)[:, None].expand(len(ts), x.shape[0]).unbind(0)
    # All coefficients as float64 numbers: one host read before the loop, none inside it.
    coef = torch.stack([sde.alpha(ts), sde.sigma(ts), sde.log_snr(ts)], 1).tolist()
    hist: list = []
    prev = None  # (corrected state, coefficients, predictor order) of the previous step
    for i in range(steps):
        s, t = coef[i], coef[i + 1]
        m = (x + s[1] ** 2 * score(x, tb[i])) / s[0]  # Tweedie's x0-prediction
        if corrector and prev is not None:
            x = _update(prev[0], prev[1], s, hist, m, prev[2], variant)
        record(ts[i], x)
        hist = (hist + [(s[2], m)])[-3:]
        k = min(order, len(hist), steps - i if lower_order_final else order)
        prev = (x, s, k)
        x = _update(x, s, t, hist, None, k, variant)
    record(ts[-1], x)
    return x


@final
class UniPC(Solver):
    r"""UniPC-p (Zhao et al. 2023) for a `GaussianSDE`: the multistep predictor UniP-p and the
    corrector UniC-p in data prediction, one score call per step, order p + 1.

    `steps` on `sample` is the number of score evaluations (default 20). Measured on eight
    Gaussians (docs/sampling.md, "choosing a sampler"): `order=2` is the most accurate
    sdescore configuration from 6 to 15 calls, `order=3` from 16 to 50; the default
    sampler `Auto()` uses them by budget.

    Args:
        steps: the budget when `sample` gets no `steps=` (score calls for the exponential
            integrators, time steps otherwise; default: the class's `default_steps`).
        order: the predictor's order p: 1, 2 or 3 (default 2); the corrected solve has order
            p + 1 (tested by log-log fits).
        variant: $B(h)$ of the paper: `"bh2"` ($\mathrm{expm1}(-h)$, default) or `"bh1"`
            ($-h$); it enters only the weights fixed to 1/2 (UniC-1 in the first step, UniP-2).
        grid: the step boundaries, as `DPMSolver`: a `Grid` (default `TimeQuadratic()`), its
            name, or explicit times (one step per interval; `sdescore.solvers.grid`).
        lower_order_final: `True` (default, as Zhao et al.'s code and diffusers): the last
            steps use orders $\min(p, \text{steps left})$, ending in an uncorrected DDIM step;
            this caps the asymptotic order at 2 (measured 2.4-2.7 for p = 3 at 32-256 steps)
            but is 1.5-3x more accurate at 15-50 calls on eight Gaussians. `False`: order
            p + 1 throughout (tested).

    Raises:
        ValueError, TypeError: a bad option, named in the message; `TypeError` from `sample`
            for an SDE that is not a `GaussianSDE`.
    """

    process: ClassVar[str] = "ode"
    default_steps: ClassVar[int] = 20

    def __init__(
        self,
        *,
        steps: int | None = None,
        order: int = 2,
        variant: str = "bh2",
        grid=DEFAULT_GRID,
        lower_order_final: bool = True,
    ):
        self.steps = check_int("steps", steps, allow_none=True)
        self.order = check_order(order)
        self.variant = check_choice("variant", variant, UNIPC_VARIANTS)
        self.grid = as_grid(grid)
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)

    def integrate(self, p: Problem) -> torch.Tensor:
        require_gaussian(
            p.sde, f"method {self!r}", instead="use a torchdiffeq method such as 'dopri5'"
        )
        return unipc(
            p,
            order=self.order,
            grid=self.grid,
            variant=self.variant,
            lower_order_final=self.lower_order_final,
        )

    def describe(self, steps: int | None) -> str:
        return f"UniPC (UniP-{self.order} + UniC, {self.variant}) on {self.grid!r}" + with_calls(
            steps
        )
