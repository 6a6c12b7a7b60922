r"""One predictor-corrector step of `ExpABM` with one step for the batch (the scheme:
`sdescore.solvers.exp_abm`), and the state it advances."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import final

import torch

from .system import LikelihoodSystem
from .weights import combine

__all__ = ["March", "Node", "Trial", "predict_correct"]


@final
class Node:
    """An accepted point: its log-SNR and the network's noise prediction and $h$ there."""

    __slots__ = ("lam", "eps", "h")

    def __init__(self, lam: float, eps: torch.Tensor, h: torch.Tensor):
        self.lam, self.eps, self.h = lam, eps, h


@final
class March:
    r"""A shared-step solve's state: `x` `(B, *D)` and $\alpha$ at the current log-SNR, the last
    accepted nodes (oldest first), `delta` ($\int h\,d\lambda$ so far, `(B,)` or `(k, B)`),
    `error` (`(2, B)`: the accepted steps' gaps, signed sum and sum of magnitudes, nats; see
    `ERROR_FLOOR`) and `nfe`, the network passes so far."""

    __slots__ = ("x", "alpha", "history", "delta", "error", "nfe")

    def __init__(self, system: LikelihoodSystem, x: torch.Tensor):
        """The state at `eps` from the first evaluation, checked (one sync before the loop: a
        NaN at eps is named at eps)."""
        batch, lam0 = system.batch, system.lam0
        eps0, h0 = system.evaluate(x, lam0)
        bad0 = ~torch.isfinite(eps0).reshape(batch, -1).all(1)
        bad0 |= ~torch.isfinite(h0).reshape(-1, batch).all(0)
        if bool(bad0.any()):
            raise system.nonfinite(bad0, lam0, 1)
        self.x, self.nfe = x, 1
        self.history = [Node(lam0, eps0, h0)]
        self.delta = torch.zeros_like(h0)
        self.error = x.new_zeros(2, batch)
        _, self.alpha, _ = system.coefficients(lam0)

    def accept(self, trial: Trial, order: int) -> None:
        r"""Move to the trial's point. Lambda decreases, so $\int_{\lambda_T}^{\lambda_
        \varepsilon} h$ is minus the sum of the steps' shares. Keeps `order + 1` nodes."""
        self.x, self.alpha = trial.x_corr, trial.alpha_t
        self.delta = self.delta - trial.q_corr
        self.history.append(Node(trial.lam_t, trial.eps_t, trial.h_t))
        del self.history[: -(order + 1)]


@dataclass(frozen=True)
class Trial:
    """A step's outcome before its error test: the new point's log-SNR `lam_t`, coefficients
    and evaluation (at the predicted `x`), the corrected `x_corr` and step share `q_corr`, and
    the predictor-corrector gaps of $x$ (`dx`) and of the share on the control rows (`gap`)."""

    lam_t: float
    alpha_t: float
    sigma_t: float
    eps_t: torch.Tensor
    h_t: torch.Tensor
    x_corr: torch.Tensor
    q_corr: torch.Tensor
    dx: torch.Tensor
    gap: torch.Tensor


def predict_correct(
    system: LikelihoodSystem,
    march: March,
    lam: float,
    step: float,
    lam_t: float,
    k: int,
    weigh: Callable[[list[float]], tuple],
) -> Trial:
    r"""One step from `lam` by `step` to `lam_t` (one network pass, counted in `march.nfe`):
    the predictor of order `k` through the last `k` nodes gives $x^P_t$, evaluated there; the
    corrector of order `k + 1` through the new value and the same nodes gives $x_t$ and the
    step's share of $\int h\,d\lambda$. `weigh(nodes)` gives the weights of the noise prediction
    and of $h$ at the node offsets `nodes` from `lam` (`weights.node_weights` or
    `node_weights_on_device`, for the step's shape constant)."""
    _, alpha_t, sigma_t = system.coefficients(lam_t)
    past = march.history[::-1][:k]  # newest first
    nodes = [p.lam - lam for p in past]
    x = march.x
    ratio, scale = alpha_t / march.alpha, alpha_t * math.exp(-lam)
    w_eps, w_h = weigh(nodes)
    x_pred = ratio * x - scale * combine(w_eps, [p.eps for p in past])
    q_pred = combine(w_h, [p.h for p in past])
    eps_t, h_t = system.evaluate(x_pred, lam_t)
    march.nfe += 1
    w_eps, w_h = weigh([step, *nodes])
    x_corr = ratio * x - scale * combine(w_eps, [eps_t, *(p.eps for p in past)])
    q_corr = combine(w_h, [h_t, *(p.h for p in past)])
    dx, gap = x_corr - x_pred, system.control(q_corr - q_pred)
    return Trial(lam_t, alpha_t, sigma_t, eps_t, h_t, x_corr, q_corr, dx, gap)
