r"""Rectified flow / flow matching as a linear SDE (Lipman et al. 2023; Liu et al. 2023).

Flow matching with the optimal-transport path interpolates data and noise linearly,
$x_t = (1 - t)\,x_0 + \sigma(t)\,\varepsilon$ with $\sigma(t) = \sigma_{min} + (1 - \sigma_{min})t$
(Lipman et al. 2023, eq. (20), with time reversed so that t = 0 is the data; $\sigma_{min} = 0$
is rectified flow, Liu et al. 2023, and Stable Diffusion 3, Esser et al. 2024). As a Gaussian
kernel with $\alpha = 1 - t$ it is the linear SDE (see `AlphaSigmaSDE`)

$$f(t) = -\frac{1}{1 - t}, \qquad g(t)^2 = 2\sigma(\dot\sigma - f\sigma) = \frac{2\sigma(t)}{1 - t},$$

and its probability-flow velocity $f x - \tfrac12 g^2\nabla\log p_t$ is the flow-matching
velocity $E[\dot\alpha x_0 + \dot\sigma\varepsilon \mid x_t] = E[\varepsilon - x_0 \mid x_t]$
($\sigma_{min} = 0$). Both coefficients blow up at $t = 1$, where $\alpha = 0$ and the half
log-SNR $\lambda = \log(1 - t) - \log\sigma$ is $-\infty$, so the SDE stops at $T < 1$.
"""

from __future__ import annotations

import math

import torch

from .._checks import check_real
from .gaussian import GaussianSDE

__all__ = ["RectifiedFlowSDE"]


class RectifiedFlowSDE(GaussianSDE):
    r"""Rectified flow / conditional flow matching: $\alpha = 1 - t$, $\sigma = \sigma_{min} +
    (1 - \sigma_{min})t$ on $[0, T]$, $T < 1$.

    **The end at $t = 1$.** At $t = 1$ the marginal is exactly $N(0, I)$ but $f$ and $g^2$ are
    infinite, so the SDE ends at $T = 1 - \delta$ (default $\delta = 10^{-3}$, the first noise
    level of diffusers' multistep schedulers for flow models). There the marginal still holds
    $\alpha(T) x_0 = \delta x_0$, while the prior is $N(0, s^2 I)$ with
    $s = \sqrt{\alpha(T)^2 + \sigma(T)^2}$. By joint convexity of the KL divergence the mismatch
    is at most $E_{x_0} KL(N(\alpha_T x_0, \sigma_T^2 I) \,\|\, N(0, s^2 I))
    = \frac{\alpha_T^2 E|x_0|^2}{2s^2} + \frac d2\big(\frac{\sigma_T^2}{s^2} - 1
    - \log\frac{\sigma_T^2}{s^2}\big)$ (`prior_mismatch_bound`; measured against quadrature
    in docs/flow_matching.md), and with the exact score it is the only error the truncation
    adds to a sample.

    The kernel is exact in closed form, $\lambda$ is inverted in closed form, and the
    flow-matching coefficients are $\dot\alpha = -1$, $\dot\sigma = 1 - \sigma_{min}$.
    A diffusers `FlowMatchEulerDiscreteScheduler` model lives on this SDE with
    $\sigma_{min} = 0$ (`sdescore.interop.from_diffusers_flow`).

    Args:
        sigma_min: $\sigma(0) \in [0, 1)$; with $\sigma_{min} > 0$ the kernel at $t = 0$ is
            $N(x_0, \sigma_{min}^2 I)$ (data smoothed by it, as for `VESDE`).
        T: end time in $(0, 1)$.
        prior_std: std of the prior; default $\sqrt{\alpha(T)^2 + \sigma(T)^2}$.

    Raises:
        ValueError: `sigma_min` outside $[0, 1)$, `T` outside $(0, 1)$, a bad `prior_std`.
    """

    def __init__(self, sigma_min: float = 0.0, *, T: float = 0.999, prior_std: float | None = None):
        super().__init__(T=T)
        self.sigma_min = check_real("sigma_min", sigma_min, nonnegative=True)
        if self.sigma_min >= 1:
            raise ValueError(f"sigma_min must lie in [0, 1), got {self.sigma_min}")
        if self.T >= 1:
            raise ValueError(
                f"T must be < 1, got T = {self.T}: alpha(1) = 0, so f(t) = -1/(1 - t) and "
                "g(t)^2 = 2 sigma(t)/(1 - t) are infinite at t = 1; use e.g. T = 0.999 "
                "(the prior mismatch this leaves is bounded in RectifiedFlowSDE's docstring)"
            )
        if prior_std is None:
            prior_std = math.hypot(1 - self.T, self.sigma_min + (1 - self.sigma_min) * self.T)
        self._prior_std = check_real("prior_std", prior_std, positive=True)
        self._check_schedule()

    _schedule_hint = "use T < 1"

    def _f(self, t):
        return -1 / (1 - t)

    def _g(self, t):
        return torch.sqrt(2 * self._sigma(t) / (1 - t))

    def _log_alpha(self, t):
        return torch.log1p(-t)

    def _sigma(self, t):
        return self.sigma_min + (1 - self.sigma_min) * t

    def _alpha_sigma_dot(self, t):
        return torch.full_like(t, -1.0), torch.full_like(t, 1 - self.sigma_min)

    def _t_from_log_snr(self, lam) -> torch.Tensor:
        r"""Invert $e^\lambda = (1 - t)/\sigma(t)$ in closed form (on `lam` already checked and
        clamped by `t_from_log_snr`): $t = (1 - \sigma_{min}e^\lambda)/(1 + (1 -
        \sigma_{min})e^\lambda)$, written with $e^{-\lambda}$ for $\lambda > 0$ so that
        neither exponential overflows."""
        m = self.sigma_min
        r = torch.exp(lam.clamp(max=0))
        q = torch.exp(-lam.clamp(min=0))
        t = torch.where(lam <= 0, (1 - m * r) / (1 + (1 - m) * r), (q - m) / (q + 1 - m))
        return t.clamp(0.0, self.T)

    def prior_mismatch_bound(self, second_moment: float, dim: int) -> float:
        r"""Upper bound (nats) on $KL(p_T \,\|\, \pi)$ for data with $E|x_0|^2$ = `second_moment`
        in `dim` dimensions (see the class docstring; joint convexity of KL)."""
        a, s, p = 1 - self.T, self.sigma_min + (1 - self.sigma_min) * self.T, self._prior_std
        r = (s / p) ** 2
        return a * a * second_moment / (2 * p * p) + 0.5 * dim * (r - 1 - math.log(r))

    @property
    def prior_std(self) -> float:
        return self._prior_std

    def __repr__(self) -> str:
        return f"RectifiedFlowSDE(sigma_min={self.sigma_min}, T={self.T})"
