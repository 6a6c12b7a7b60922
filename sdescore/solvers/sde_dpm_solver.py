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

import torch

from .._shapes import append_dims
from ..sdes.base import SDE
from ._common import batch_time, noise_like
from .dpm_solver import _boundaries
from .native import _require_gaussian


def default_order(steps: int) -> int:
    """The order of `SDEDPMSolver()` for `steps` calls: 2 below 20, 3 from 20.

    Measured on eight Gaussians, VPSDE(0.1, 20), exact score, time-quadratic grid, 4 seeds of
    8192 samples (mean exact log p0 minus its expectation; standard error 0.005): 3M is -2.6 at
    10 calls and -0.35 at 15 where 2M is -0.40 and -0.21; from 20 calls 3M is +0.02, +0.004,
    -0.002 at 20, 30, 40 where 2M is -0.12, -0.06, -0.03 (docs/sampling.md).
    """
    return 2 if steps < 20 else 3


def sample_sde_dpm_solver(
    sde: SDE,
    score,
    x: torch.Tensor,
    t0: float,
    t1: float,
    steps: int,
    *,
    schedule: str,
    order: int,
    eta: float,
    final_noise: bool,
    generator,
    record,
    damped: bool = False,
) -> torch.Tensor:
    """Carry `x` from `t0` to `t1` in `steps` steps on DPM-Solver's `schedule` (a
    `GaussianSDE` only); one score call per step."""
    _require_gaussian(sde, "sde_dpm_solver")
    ts = _boundaries(sde, t0, t1, steps, schedule, x)
    coef = ts.to(torch.float64)
    alpha, sigma = sde.alpha(coef), sde.sigma(coef)
    lam = alpha.log() - sigma.log()
    hist: list = []  # (D, h) of the previous steps, newest first
    n = ts.shape[0] - 1
    for i in range(n):
        t = batch_time(ts[i], x)
        d = (x + append_dims(sigma[i].to(x.dtype) ** 2, x.ndim) * score(x, t)) / alpha[i].to(
            x.dtype
        )
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
                    w = 1.0 if damped else 2.0  # D'' = 2q; damped halves that term
                    y = (
                        y
                        + (h * (1 - phi1)).to(x.dtype) * (delta0 + h1.to(x.dtype) * q)
                        + (w * h * h * (0.5 - phi2)).to(x.dtype) * q
                    )
        last = i == n - 1
        if eta > 0 and (final_noise or not last):
            std = (sigma[i + 1] / alpha[i + 1]) * torch.sqrt(-torch.expm1(-2 * eta * h))
            y = y + std.to(x.dtype) * noise_like(x, generator)
        x = alpha[i + 1].to(x.dtype) * y
        hist = [(d, h)] + hist[:1]
        record(ts[i + 1], x)
    return x
