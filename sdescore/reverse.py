r"""The reverse-time SDE and the probability-flow ODE of a forward SDE.

Anderson (1982); Song et al. (2021), eqs. (6) and (13). Both keep the forward clock: `drift(x, t)`
is evaluated at forward time t, and a solver integrates from T down to a small end time.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ._checks import as_time, check_callable, check_output_shape, check_state
from ._shapes import append_dims
from .sdes.base import SDE
from .solvers import sample as _sample

__all__ = ["ProbabilityFlowODE", "ReverseSDE"]


class _ScoreDriven:
    """Shared part of the two wrappers: the forward SDE, the score function and the drift."""

    # w in the drift f - w g^2 s: 1 for the reverse SDE (Song et al. 2021, eq. (6)), 1/2 for
    # the probability-flow ODE (eq. (13)).
    _score_weight: ClassVar[float]

    def __init__(self, sde: SDE, score_fn):
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be an sdescore.SDE, got {type(sde).__name__}")
        check_callable("score_fn", score_fn)
        self.sde = sde
        self.score_fn = score_fn

    @property
    def T(self) -> float:
        return self.sde.T

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        """The score $s(x, t) \\approx \\nabla_x \\log p_t(x)$, checked to be shaped like `x`."""
        check_state(x)
        t = as_time(t, x, self.T)
        return check_output_shape(self.score_fn(x, t), x, "score_fn(x, t)")

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        r"""The drift $f - w\,g^2 s$ at forward time t, `x: (B, *D)`, `t: (B,)` or a float: the
        reverse-SDE drift for $w = 1$, the probability-flow velocity for $w = \tfrac12$."""
        check_state(x)
        t = as_time(t, x, self.T)
        f, g = self.sde.sde(x, t)
        # The drift of a user SDE is checked as the score is: a (B, 1) drift for a (B, 2)
        # state would otherwise broadcast silently.
        f = check_output_shape(f, x, f"{type(self.sde).__name__}.drift(x, t)")
        s = check_output_shape(self.score_fn(x, t), x, "score_fn(x, t)")
        return f - self._score_weight * append_dims(g.square(), x.ndim) * s

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sde={self.sde!r}, score_fn={self.score_fn!r})"


class ReverseSDE(_ScoreDriven):
    r"""Reverse-time SDE $dx = [f(x, t) - g(t)^2 \nabla_x \log p_t(x)]\,dt + g(t)\,d\bar w$.

    Song et al. (2021), eq. (6), integrated from $t = T$ down to $t \approx 0$.

    Args:
        sde: the forward `SDE`.
        score_fn: any callable `score_fn(x, t) -> (B, *D)`.
    """

    _score_weight: ClassVar[float] = 1.0

    def diffusion(self, t) -> torch.Tensor:
        """$g(t)$, the forward diffusion coefficient."""
        return self.sde.diffusion(t)

    sample = _sample.sample_sde


class ProbabilityFlowODE(_ScoreDriven):
    r"""Probability-flow ODE $dx/dt = f(x, t) - \tfrac12 g(t)^2 \nabla_x \log p_t(x)$.

    Song et al. (2021), eq. (13): a deterministic process with the same marginals $p_t$ as the
    forward SDE, hence an invertible map between data and prior used for likelihoods.

    Args:
        sde: the forward `SDE`.
        score_fn: any callable `score_fn(x, t) -> (B, *D)`.
    """

    _score_weight: ClassVar[float] = 0.5

    def diffusion(self, t) -> torch.Tensor:
        """Zero: the ODE has no noise (kept so both wrappers share one interface)."""
        return torch.zeros_like(self.sde.diffusion(t))

    sample = _sample.sample_ode
    encode = _sample.encode
    decode = _sample.decode
