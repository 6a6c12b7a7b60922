"""`ExpABMSolution`, the result of `exp_abm_likelihood`, and how it is formed from a solve."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .system import LikelihoodSystem
from .tolerances import ERROR_FLOOR

__all__ = ["ExpABMSolution", "solution_from_state"]


@dataclass(frozen=True)
class ExpABMSolution:
    """Result of `exp_abm_likelihood`: latent `(B, *D)`, `delta` (Delta log p, `(B,)` or
    `(k, B)` per probe), the network passes `nfe` (one per step attempt, plus the first) and
    `error` `(B,)`, the estimated size of each example's error in `delta` (nats; see
    `ERROR_FLOOR`)."""

    latent: torch.Tensor
    delta: torch.Tensor
    nfe: int
    error: torch.Tensor


def solution_from_state(
    system: LikelihoodSystem, x: torch.Tensor, delta: torch.Tensor, error: torch.Tensor, nfe: int
) -> ExpABMSolution:
    r"""The solution from the integrated state (`x` at T, `delta` = $\int h\,d\lambda$, the
    `(2, B)` accumulated gaps `error`): the linear part $d\log(\alpha_T/\alpha_\varepsilon)$
    added, the control probes' rows dropped, the error estimate formed, in the input dtype."""
    f64, sde, eps = torch.float64, system.sde, system.eps
    log_ratio = float(
        sde.log_alpha(torch.tensor(sde.T, dtype=f64)) - sde.log_alpha(torch.tensor(eps, dtype=f64))
    )
    if system.fresh_probes is not None:
        delta = delta[system.probes.shape[0] :]
    estimate = error[0].abs() + ERROR_FLOOR * error[1]
    d, in_dtype = x[0].numel(), system.in_dtype
    return ExpABMSolution(
        x.to(in_dtype), (delta + d * log_ratio).to(in_dtype), nfe, estimate.to(in_dtype)
    )
