"""The SDE abstraction: a forward diffusion $dx = f(x, t)\\,dt + g(t)\\,dw$ on $[0, T]$."""

from __future__ import annotations

import abc
import math

import torch

from .._checks import check_bool, check_dtype, check_generator, check_real, check_shape, check_state
from .._shapes import batch_sum, flat_dim

__all__ = ["SDE", "same_sde"]


class SDE(abc.ABC):
    r"""Abstract forward SDE $dx = f(x, t)\,dt + g(t)\,dw$, $t \in [0, T]$.

    Subclass it with `drift(x, t)` and `diffusion(t)`; the reverse-time SDE and the
    probability-flow ODE (Song et al. 2021, eqs. (6) and (13)) are then derived by
    `reverse(score_fn)` and `probability_flow(score_fn)`.

    Shapes: `x: (B, *D)`, `t: (B,)`; `drift` returns `(B, *D)` and `diffusion` returns `(B,)`.
    Time runs forward from data (t = 0) to the prior (t = T).

    Args:
        T: the end time, > 0.
    """

    def __init__(self, *, T: float = 1.0):
        self.T = check_real("T", T, positive=True)

    @abc.abstractmethod
    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The drift $f(x, t)$, shaped like `x: (B, *D)`."""

    @abc.abstractmethod
    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """The diffusion coefficient $g(t)$, shaped like `t: (B,)`."""

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pair `(drift(x, t), diffusion(t))`."""
        return self.drift(x, t), self.diffusion(t)

    # Optional parts: SDEs with a known perturbation kernel and prior override these.
    def marginal_prob(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean `(B, *D)` and std `(B,)` of the perturbation kernel $p_t(x \\mid x_0)$."""
        raise NotImplementedError(
            f"{type(self).__name__} has no closed-form perturbation kernel; "
            "use a GaussianSDE (VPSDE, SubVPSDE, VESDE, LinearSDE) or override marginal_prob"
        )

    @property
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior $\\pi = N(0, s^2 I)$."""
        raise NotImplementedError(
            f"{type(self).__name__} defines no prior; override prior_std "
            "(or prior_sampling and prior_logp)"
        )

    def prior_sampling(self, shape, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        """Draw `shape = (B, *D)` samples from the prior $N(0, s^2 I)$."""
        check_generator("generator", generator)
        dtype = check_dtype("dtype", dtype)
        z = torch.randn(check_shape(shape), generator=generator, device=device, dtype=dtype)
        return z * self.prior_std

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density `(B,)` of the prior $N(0, s^2 I)$ at `z: (B, *D)`."""
        check_state(z, "z")
        s = self.prior_std
        d = flat_dim(z)
        return -0.5 * batch_sum(z.square()) / s**2 - 0.5 * d * math.log(2 * math.pi * s**2)

    # Derived processes (Song et al. 2021, eqs. (6) and (13)).
    def reverse(self, score_fn, probability_flow: bool = False):
        """The reverse-time SDE, or the probability-flow ODE when `probability_flow=True`.

        Args:
            score_fn: any callable `score_fn(x, t) -> (B, *D)` approximating $\\nabla_x \\log p_t$.
            probability_flow: return a `ProbabilityFlowODE` instead of a `ReverseSDE`.
        """
        from ..reverse import ProbabilityFlowODE, ReverseSDE

        check_bool("probability_flow", probability_flow)
        if probability_flow:
            return ProbabilityFlowODE(self, score_fn)
        return ReverseSDE(self, score_fn)

    def probability_flow(self, score_fn):
        """The probability-flow ODE $dx/dt = f - \\tfrac12 g^2 \\nabla \\log p_t$."""
        return self.reverse(score_fn, probability_flow=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(T={self.T})"

    def _parameters(self) -> dict:
        """What defines this SDE, for `same_sde`: its public attributes (numbers, and
        callables, which compare by identity). Subclasses holding their definition in private
        attributes (a table) add it."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def same_sde(a: SDE, b: SDE) -> bool:
    """Whether `a` and `b` define the same SDE: the same object, or the same class with equal
    parameters (`VPSDE(0.1, 20.0)` twice), tensors compared by value, callables by identity."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    pa, pb = a._parameters(), b._parameters()
    if pa.keys() != pb.keys():
        return False
    for k, va in pa.items():
        vb = pb[k]
        if isinstance(va, torch.Tensor) or isinstance(vb, torch.Tensor):
            if not (
                isinstance(va, torch.Tensor)
                and isinstance(vb, torch.Tensor)
                and va.shape == vb.shape
                and torch.equal(va.detach().cpu(), vb.detach().cpu())
            ):
                return False
        elif callable(va) or callable(vb):
            if va is not vb:
                return False
        elif va != vb:
            return False
    return True
