r"""SDE-DPM-Solver++: exponential integrators of the reverse SDE (Lu et al. 2022b, Sec. 5;
Gonzalez et al. 2023 for the third-order multistep form).

With the data prediction $\hat x_0(x, t) = (x + \sigma_t^2 s(x, t)) / \alpha_t$ (Tweedie) and the
half log-SNR $\lambda_t = \log(\alpha_t / \sigma_t)$, the linear part of the reverse SDE of a
Gaussian-kernel SDE integrates exactly. In the rescaled variable $y = x/\alpha$ (noise level
$\bar\sigma = \sigma/\alpha = e^{-\lambda}$) and with stochasticity $\eta \in [0, 1]$, the
family of reverse processes with the marginals of the data is
$dy = (1 + \eta)(D - y)\,d\lambda + \bar\sigma\sqrt{2\eta}\,d\bar w$, $D = \hat x_0$ (in $y$
units); $\eta = 1$ is the reverse SDE, $\eta = 0$ the probability-flow ODE. Variation of
constants over one step $\lambda_i \to \lambda_{i+1}$, $h = \lambda_{i+1} - \lambda_i > 0$,
$H = (1 + \eta) h$, gives exactly

$$y_{i+1} = e^{-H} y_i + \int_0^h (1+\eta) e^{-(1+\eta)(h-u)} D(\lambda_i + u)\,du
  + \bar\sigma_{i+1}\sqrt{1 - e^{-2\eta h}}\; z_i ,$$

the noise an exact Gaussian integral drawn from the caller's generator. Expanding $D$ in
$u$ about $\lambda_i$, $\int_0^h (1+\eta)e^{-(1+\eta)(h-u)} u^k/k!\,du = h^k H\varphi_{k+1}(H)$
with $\varphi_1 = (1 - e^{-H})/H$, $\varphi_{k+1} = (1/k! - \varphi_k)/H$ (written for $-H$), so

$$y_{i+1} = e^{-H} y_i + (1 - e^{-H}) D_i + h(1 - \varphi_1) D'_i
  + h^2(\tfrac12 - \varphi_2) D''_i + \text{noise}.$$

- order 1 (SDE-DPM-Solver++1, Lu et al. 2022b, eq. (18)): the first two terms;
- order 2 (2M): $D_i$ replaced by $D_i + \frac{1}{2r}(D_i - D_{i-1})$, $r = h_{i-1}/h_i$, the
  "midpoint" form of the multistep correction (as k-diffusion's `sample_dpmpp_2m_sde`);
- order 3 (3M, the multistep form of Gonzalez et al. 2023 and k-diffusion's
  `sample_dpmpp_3m_sde`): $D'_i$, $D''_i$ from the quadratic through the last three $(\lambda, D)$,
  $D'_i = \delta_0 + h_{i-1} q$, $D''_i = 2q$, with $\delta_0 = (D_i - D_{i-1})/h_{i-1}$,
  $\delta_1 = (D_{i-1} - D_{i-2})/h_{i-2}$, $q = (\delta_0 - \delta_1)/(h_{i-1} + h_{i-2})$. With
  `damped` the $D''$ term is halved, as in k-diffusion and diffusers' 3M. The first step is first
  order, the second uses $D'_i = \delta_0$.

All written from the expansion above; one score call per step.
"""

from __future__ import annotations

from typing import ClassVar, final

import torch

from .._checks import check_bool, check_int
from .._shapes import append_dims
from ._common import batch_time, check_order, noise_like
from .base import Problem, Solver
from .grid import as_grid
from .native import _require_gaussian


def default_order(steps: int) -> int:
    """The order of `SDEDPMSolver()` for `steps` calls: 2 below 20, 3 from 20.

    Measured on eight Gaussians, VPSDE(0.1, 20), exact score, time-quadratic grid, 4 seeds of
    8192 samples (mean exact log p0 minus its expectation; standard error 0.005): 3M is -2.6 at
    10 calls and -0.35 at 15 where 2M is -0.40 and -0.21; from 20 calls 3M is +0.02, +0.004,
    -0.002 at 20, 30, 40 where 2M is -0.12, -0.06, -0.03 (docs/sampling.md).
    """
    return 2 if steps < 20 else 3


@final
class SDEDPMSolver(Solver):
    r"""SDE-DPM-Solver++ (Lu et al. 2022b): exponential integrator of the reverse SDE.

    One score call per step; the linear part is integrated exactly and the noise comes from the
    caller's generator (see `sdescore.solvers.sde_dpm_solver`). Needs a `GaussianSDE`. The last
    step is noise-free unless `denoise="none"`.

    Args:
        steps: the budget when `sample` gets no `steps=` (score calls for the exponential
            integrators, time steps otherwise; default: the class's `default_steps`).
        order: 1 (SDE-DPM-Solver++1), 2 (SDE-DPM-Solver++(2M); the first step is first
            order) or 3 (SDE-DPM-Solver++(3M), Gonzalez et al. 2023; the first two steps of
            order 1 and 2). Default: chosen by budget (`plan`): 2 below 20 calls, 3 from 20.
        eta: stochasticity in [0, 1]: 1 (default) samples the reverse SDE, 0 is the
            probability-flow ODE's DPM-Solver++ (deterministic), in between a mixture.
        grid: the step boundaries: a `Grid` (default `TimeQuadratic()`), its name, or explicit
            times (one step per interval; `sdescore.solvers.grid`).
        damped: order 3 only: `True` halves the second-derivative term, as k-diffusion's
            `sample_dpmpp_3m_sde` (order 2 at eta = 0); `False` (default) the exact term (order
            3 at eta = 0).

    Raises:
        ValueError, TypeError: a bad option, named in the message.
    """

    process: ClassVar[str] = "sde"
    default_steps: ClassVar[int] = 100

    def __init__(
        self,
        *,
        steps: int | None = None,
        order: int | None = None,
        eta: float = 1.0,
        grid="time_quadratic",
        damped: bool = False,
    ):
        self.steps = check_int("steps", steps, allow_none=True)
        self.order = None if order is None else check_order(order)
        self.damped = check_bool("damped", damped)
        if damped and order != 3:
            raise ValueError(f"damped applies to order=3 only, got damped=True with order={order}")
        eta = float(eta) if isinstance(eta, (int, float)) and not isinstance(eta, bool) else eta
        if not isinstance(eta, float) or not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
        self.eta = eta
        self.grid = as_grid(grid)

    def plan(self, steps: int) -> int:
        """The order used for a budget of `steps` calls: `order`, or if unset
        `sde_dpm_solver.default_order(steps)` (2 below 20 calls, 3 from 20)."""
        return default_order(steps) if self.order is None else self.order

    def integrate(self, p: Problem) -> torch.Tensor:
        sde, x, eta, order = p.sde, p.x, self.eta, self.plan(p.steps)
        _require_gaussian(sde, "sde_dpm_solver")
        ts = self.grid.times(sde, p.t0, p.t1, p.steps, x)
        coef = ts.to(torch.float64)
        alpha, sigma = sde.alpha(coef), sde.sigma(coef)
        lam = alpha.log() - sigma.log()
        hist: list = []  # (D, h) of the previous steps, newest first
        n = ts.shape[0] - 1
        p.record(ts[0], x)
        for i in range(n):
            t = batch_time(ts[i], x)
            s2 = append_dims(sigma[i].to(x.dtype) ** 2, x.ndim)
            d = (x + s2 * p.score(x, t)) / alpha[i].to(x.dtype)  # Tweedie's data prediction
            h = lam[i + 1] - lam[i]
            y = x / alpha[i].to(x.dtype)
            decay = (sigma[i + 1] / alpha[i + 1]) / (sigma[i] / alpha[i]) * torch.exp(-eta * h)
            gain = -torch.expm1(-(1 + eta) * h)
            if order == 2 and hist:
                d_prev, h_prev = hist[0]
                y = decay.to(x.dtype) * y + gain.to(x.dtype) * (
                    d + (d - d_prev) * (0.5 * h / h_prev).to(x.dtype)
                )
            else:
                y = decay.to(x.dtype) * y + gain.to(x.dtype) * d
                if order == 3 and hist:
                    big_h = (1 + eta) * h
                    phi1 = gain / big_h
                    phi2 = (1 - phi1) / big_h
                    d1, h1 = hist[0]
                    delta0 = (d - d1) / h1.to(x.dtype)
                    if len(hist) == 1:
                        y = y + (h * (1 - phi1)).to(x.dtype) * delta0
                    else:
                        d2, h2 = hist[1]
                        q = (delta0 - (d1 - d2) / h2.to(x.dtype)) / (h1 + h2).to(x.dtype)
                        w = 1.0 if self.damped else 2.0  # D'' = 2q; damped halves that term
                        y = (
                            y
                            + (h * (1 - phi1)).to(x.dtype) * (delta0 + h1.to(x.dtype) * q)
                            + (w * h * h * (0.5 - phi2)).to(x.dtype) * q
                        )
            last = i == n - 1
            if eta > 0 and (p.final_noise or not last):
                std = (sigma[i + 1] / alpha[i + 1]) * torch.sqrt(-torch.expm1(-2 * eta * h))
                y = y + std.to(x.dtype) * noise_like(x, p.generator)
            x = alpha[i + 1].to(x.dtype) * y
            hist = [(d, h)] + hist[:1]
            p.record(ts[i + 1], x)
        return x
