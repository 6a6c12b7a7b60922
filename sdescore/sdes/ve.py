r"""Variance-exploding SDE (Song et al. 2021, eq. (9)), the continuous limit of SMLD/NCSN."""

from __future__ import annotations

import math

import torch

from .._checks import check_real
from .gaussian import GaussianSDE

__all__ = ["VESDE"]


class VESDE(GaussianSDE):
    r"""Variance-exploding SDE $dx = \sigma(t)\sqrt{2\log(\sigma_{max}/\sigma_{min})}\,dw$.

    With $\sigma(t) = \sigma_{min}(\sigma_{max}/\sigma_{min})^t$, so that $g(t)^2 = d\sigma^2/dt$.

    **Kernel convention (SMLD):** `marginal_prob` returns std $\sigma(t)$, as Song & Ermon (2019)
    and the score_sde code do. This is the exact kernel of the SDE started from data already
    smoothed by $N(0, \sigma_{min}^2 I)$; the kernel from unsmoothed data would have variance
    $\sigma(t)^2 - \sigma_{min}^2$ (write the schedule as a `LinearSDE` to get that one). The
    difference is below $\sigma_{min}$ everywhere. Prior $N(0, \sigma(T)^2 I)$, i.e.
    $N(0, \sigma_{max}^2 I)$ for $T = 1$.

    Args:
        sigma_min: $\sigma(0) > 0$.
        sigma_max: $\sigma(1) > \sigma_{min}$.
        T: end time.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, *, T: float = 1.0):
        super().__init__(T=T)
        self.sigma_min = check_real("sigma_min", sigma_min, positive=True)
        self.sigma_max = check_real("sigma_max", sigma_max, positive=True)
        if self.sigma_min >= self.sigma_max:
            raise ValueError(
                f"sigma_min must be < sigma_max, got sigma_min={self.sigma_min}, "
                f"sigma_max={self.sigma_max}"
            )
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)
        self._check_schedule()

    _schedule_hint = "lower sigma_max (or T); sigma(t) = sigma_min (sigma_max/sigma_min)^t"
    _prior_hint = (
        "raise sigma_max well above the data's scale (Song & Ermon 2020: about the largest "
        "distance between two data points)"
    )

    def _f(self, t):
        return torch.zeros_like(t)

    def _g(self, t):
        return self._sigma(t) * math.sqrt(2 * self._log_ratio)

    def _log_alpha(self, t):
        return torch.zeros_like(t)

    def _sigma(self, t):
        return torch.exp(math.log(self.sigma_min) + t * self._log_ratio)

    def _t_from_log_snr(self, lam):
        return ((-lam - math.log(self.sigma_min)) / self._log_ratio).clamp(0.0, self.T)

    @property
    def prior_std(self) -> float:
        # sigma(T); equals sigma_max for the default T = 1.
        # In log space: a huge T * log_ratio gives inf (refused by _check_schedule), not an error.
        log_s = math.log(self.sigma_min) + self.T * self._log_ratio
        return math.exp(log_s) if log_s < 709.0 else math.inf

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, T={self.T})"
