r"""Variance-preserving and sub-VP SDEs (Song et al. 2021, eqs. (11) and (29)).

Both use the linear schedule $\beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min})$ and share
$\log\alpha(t) = -\tfrac14 t^2 (\beta_{max} - \beta_{min}) - \tfrac12 t \beta_{min}$.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import check_real
from .gaussian import GaussianSDE

__all__ = ["VPSDE", "SubVPSDE"]


class _LinearBetaSDE(GaussianSDE):
    """Shared schedule of VPSDE and SubVPSDE (not public)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, *, T: float = 1.0):
        super().__init__(T=T)
        self.beta_min = check_real("beta_min", beta_min, nonnegative=True)
        self.beta_max = check_real("beta_max", beta_max, positive=True)
        if self.beta_min > self.beta_max:
            raise ValueError(
                f"beta_min must be <= beta_max, got beta_min={self.beta_min}, "
                f"beta_max={self.beta_max}"
            )
        self._check_schedule()

    _schedule_hint = (
        "lower beta_max (or T): log alpha(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2, "
        "so the data signal is gone long before T"
    )
    _prior_hint = "raise beta_max (or T) so that alpha(T) = exp(-T^2 (beta_max - beta_min) / 4 - T beta_min / 2) is near 0"

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _f(self, t):
        return -0.5 * self.beta(t)

    def _log_alpha(self, t):
        return -0.25 * t.square() * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def _t_from_log_alpha(self, log_alpha: torch.Tensor) -> torch.Tensor:
        # Solve 1/4 d t^2 + 1/2 b t = c, c = -log alpha >= 0, in the cancellation-free form.
        c = (-log_alpha).clamp(min=0)
        b, d = self.beta_min, self.beta_max - self.beta_min
        # The denominator vanishes only at c = 0 with beta_min = 0, where t = 0.
        denom = (0.5 * b + torch.sqrt(0.25 * b * b + d * c)).clamp_min(torch.finfo(c.dtype).tiny)
        return (2 * c / denom).clamp(0.0, self.T)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T})"
        )


class VPSDE(_LinearBetaSDE):
    r"""Variance-preserving SDE $dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)}\,dw$.

    The continuous limit of DDPM (Ho et al. 2020). Kernel: mean $\alpha(t)x_0$ and std
    $\sigma(t) = \sqrt{1 - \alpha(t)^2}$, computed as `sqrt(-expm1(2 log alpha))` so that it stays
    accurate for t near 0. Prior $N(0, I)$.

    Args:
        beta_min: $\beta(0) \ge 0$.
        beta_max: $\beta(1) \ge \beta_{min}$, > 0.
        T: end time.
    """

    def _g(self, t):
        return self.beta(t).sqrt()

    def _sigma(self, t):
        return torch.sqrt(-torch.expm1(2 * self._log_alpha(t)))

    def _log_snr(self, t):
        la = self._log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2 * la))

    def _t_from_log_snr(self, lam):
        # alpha^2 = sigmoid(2 lambda)  =>  log alpha = -softplus(-2 lambda) / 2
        return self._t_from_log_alpha(-0.5 * F.softplus(-2 * lam))

    @property
    def prior_std(self) -> float:
        return 1.0


class SubVPSDE(_LinearBetaSDE):
    r"""Sub-VP SDE $dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)(1 - e^{-2\int_0^t\beta})}\,dw$.

    Song et al. (2021), eq. (29): its variance is bounded by the VP SDE's. Kernel: mean
    $\alpha(t)x_0$ and std $\sigma(t) = 1 - \alpha(t)^2$ (via `expm1`). Prior $N(0, I)$.
    """

    def _g(self, t):
        # 1 - exp(-2 int beta) = 1 - alpha^4
        return torch.sqrt(self.beta(t) * -torch.expm1(4 * self._log_alpha(t)))

    def _sigma(self, t):
        return -torch.expm1(2 * self._log_alpha(t))

    def _alpha_sigma_dot(self, t):
        # sigma = 1 - alpha^2, so sigma' = -2 alpha alpha' = beta alpha^2: finite at t = 0
        # (beta_min), where the generic f sigma + g^2 / (2 sigma) is 0/0.
        alpha = self._log_alpha(t).exp()
        return self._f(t) * alpha, self.beta(t) * alpha.square()

    def _log_snr(self, t):
        la = self._log_alpha(t)
        return la - torch.log(-torch.expm1(2 * la))

    def _t_from_log_snr(self, lam):
        # alpha / (1 - alpha^2) = e^lam  =>  alpha = 2 e^lam / (1 + sqrt(1 + 4 e^{2 lam}))
        # = 2 / (e^-lam + sqrt(e^-2lam + 4)); each form where its exponential cannot overflow.
        neg, pos = lam.clamp(max=0.0), lam.clamp(min=0.0)
        small = neg + math.log(2.0) - torch.log1p(torch.sqrt(1 + 4 * torch.exp(2 * neg)))
        large = math.log(2.0) - torch.log(torch.exp(-pos) + torch.sqrt(torch.exp(-2 * pos) + 4))
        return self._t_from_log_alpha(torch.where(lam < 0, small, large))

    @property
    def prior_std(self) -> float:
        return 1.0
