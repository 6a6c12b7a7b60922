r"""SDE-DPM-Solver++: exponential integrators of the reverse SDE (Lu et al. 2022b, Sec. 5).

With the data prediction $\hat x_0(x, t) = (x + \sigma_t^2 s(x, t)) / \alpha_t$ (Tweedie) and the
half log-SNR $\lambda_t = \log(\alpha_t / \sigma_t)$, the linear part of the reverse SDE of a
Gaussian-kernel SDE integrates exactly. In the rescaled variable $y = x/\alpha$ (noise level
$\bar\sigma = \sigma/\alpha = e^{-\lambda}$), one step from $\lambda_i$ to $\lambda_{i+1}$,
$h = \lambda_{i+1} - \lambda_i > 0$, with stochasticity $\eta \in [0, 1]$ is

$$y_{i+1} = \frac{\bar\sigma_{i+1}}{\bar\sigma_i} e^{-\eta h} y_i
  + \big(1 - e^{-(1+\eta) h}\big) D_i + \bar\sigma_{i+1}\sqrt{1 - e^{-2\eta h}}\; z_i ,$$

$\eta = 1$ the reverse SDE (SDE-DPM-Solver++1, Lu et al. 2022b, eq. (18)), $\eta = 0$ the
probability-flow ODE (DPM-Solver++1, i.e. DDIM). The second-order multistep variant (2M) replaces
$D_i$ by $D_i + \frac{1}{2r}(D_i - D_{i-1})$, $r = h_{i-1}/h_i$, the "midpoint" form of the
multistep correction (the form of k-diffusion's `sample_dpmpp_2m_sde`; written here from the
paper's derivation). One score call per step; all noise from the caller's generator.
"""

from __future__ import annotations

import torch

from .._shapes import append_dims
from ..sdes.base import SDE
from ._common import batch_time, noise_like
from .dpm_solver import _boundaries
from .native import _require_gaussian


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
) -> torch.Tensor:
    """Carry `x` from `t0` to `t1` in `steps` steps on DPM-Solver's `schedule` (a
    `GaussianSDE` only); one score call per step."""
    _require_gaussian(sde, "sde_dpm_solver")
    ts = _boundaries(sde, t0, t1, steps, schedule, x)
    coef = ts.to(torch.float64)
    alpha, sigma = sde.alpha(coef), sde.sigma(coef)
    lam = alpha.log() - sigma.log()
    prev_d, prev_h = None, None
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
        target = d
        if order == 2 and prev_d is not None:
            target = d + (d - prev_d) * (0.5 * h / prev_h).to(x.dtype)
        y = decay.to(x.dtype) * y + gain.to(x.dtype) * target
        last = i == n - 1
        if eta > 0 and (final_noise or not last):
            std = (sigma[i + 1] / alpha[i + 1]) * torch.sqrt(-torch.expm1(-2 * eta * h))
            y = y + std.to(x.dtype) * noise_like(x, generator)
        x = alpha[i + 1].to(x.dtype) * y
        prev_d, prev_h = d, h
        record(ts[i + 1], x)
    return x
