r"""The log-density of the samples, integrated in the sampler's own solve (`return_logp=True`).

Along a probability-flow trajectory, $d\log p_t(x(t))/dt = -\nabla\cdot v(x(t), t)$ (Chen et
al. 2018, Theorem 1; Song et al. 2021, eq. (39)). Any ODE solver integrates it if it is handed
the augmented state $y = [x, \ell]$, flattened to `(B, d + 1)`, and a *score* for the extra
coordinate chosen so that the solver's velocity there is exactly $-\nabla\cdot v$:

$$s_\ell = \frac{f_\ell(y, t) + \nabla\cdot v(x, t)}{\tfrac12 g(t)^2}, \qquad
  f_\ell - \tfrac12 g^2 s_\ell = -\nabla\cdot v ,$$

where $f_\ell$ is what the SDE's drift gives the extra coordinate ($f(t)\,\ell$ for a
`GaussianSDE`, whose drift acts elementwise; 0 through `_FlatSDE` for any other SDE). So every
solver (the exponential integrators' exact linear part, multistep histories, Runge-Kutta stages,
adaptive error control) applies to $\ell$ the very rule it applies to $x$, at the points where it
evaluates the score, and $\ell$ gets the solver's order. The $x$ part of each update is the same
elementwise arithmetic as without $\ell$, so fixed-step samples do not change.

The divergence comes from the score call's own forward pass (`_divergence.value_and_divergence`,
the mechanism of `likelihood`), exactly or with Hutchinson probes held fixed through the solve.
"""

from __future__ import annotations

import copy

import torch

from .._divergence import check_graph, draw_probes, value_and_divergence
from .._shapes import append_dims
from ..sdes.base import SDE
from ..sdes.gaussian import GaussianSDE
from ._common import checked_drift
from .torchdiffeq_sample import ODE_ADAPTIVE, Dopri5, TorchDiffEq

__all__ = ["EXACT_DIM", "LogpSolve"]

# `return_logp=True` takes the exact trace up to this many coordinates, Hutchinson above (the
# threshold at which `likelihood` warns that the exact trace is the slower choice).
EXACT_DIM = 128


class _FlatSDE(SDE):
    """A non-Gaussian SDE acting on the flattened augmented state `(B, d + 1)`: its own drift on
    the `x` part (in `x`'s shape), zero on $\\ell$; the same diffusion."""

    def __init__(self, sde: SDE, shape: tuple[int, ...]):
        super().__init__(T=sde.T)
        self.sde, self.shape = sde, shape

    def drift(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = y[:, :-1].reshape(y.shape[0], *self.shape)
        f = checked_drift(self.sde, x, t).reshape(y.shape[0], -1)
        return torch.cat([f, torch.zeros_like(y[:, -1:])], 1)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        return self.sde.diffusion(t)

    def __repr__(self) -> str:
        return repr(self.sde)


class _Velocity:
    """The PF velocity $f - \\tfrac12 g^2 s$ whose divergence is taken; keeps the score it saw."""

    def __init__(self, sde: SDE, score_fn):
        self.sde, self.score_fn, self.score = sde, score_fn, None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self.score_fn(x, t)
        # The drift's linear part keeps a graph of its own: a detached score would otherwise
        # count as divergence-free without a word.
        check_graph(s, x, "the score function (return_logp needs its divergence)")
        self.score = s
        g2 = append_dims(self.sde.diffusion(t).square().to(x.dtype), x.ndim)
        return checked_drift(self.sde, x, t) - 0.5 * g2 * s


class _AugmentedScore:
    """The score of $y = [x, \\ell]$: the model's at `x`, and $s_\\ell$ (module docstring)."""

    def __init__(self, sde, flat_sde, score_fn, shape, probes, chunk):
        self.sde, self.flat_sde, self.score_fn = sde, flat_sde, score_fn
        self.shape, self.probes, self.chunk = shape, probes, chunk

    def __call__(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = y.shape[0]
        x = y[:, :-1].reshape(b, *self.shape)
        velocity = _Velocity(self.sde, self.score_fn)
        _, div = value_and_divergence(velocity, x, t, self.probes, chunk=self.chunk)
        if self.probes is not None:
            div = div.mean(0)  # the k-probe estimate
        s = velocity.score.detach().to(y.dtype).reshape(b, -1)
        f_l = checked_drift(self.flat_sde, y, t)[:, -1]
        s_l = (f_l + div.to(y.dtype)) / (0.5 * self.sde.diffusion(t).square().to(y.dtype))
        return torch.cat([s, s_l[:, None]], 1)


class _FlatRecorder:
    """The caller's `Recorder`, handed the `x` part of the augmented states."""

    def __init__(self, record, shape):
        self.record, self.shape, self.enabled = record, shape, record.enabled

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> None:
        if self.enabled:
            self.record(t, y[:, :-1].reshape(y.shape[0], *self.shape))


class _AugmentedNorm:
    """torchdiffeq's error norm on the flat augmented state: RMS over `x` (or the worst
    example's, `"x_per_example"`), and with `"all"` also over $\\ell$ (kept apart from `x`, so
    one coordinate among d + 1 is not averaged away), as `likelihood` controls its two
    channels."""

    def __init__(self, step_control: str):
        self.step_control = step_control

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        x, ell = r[:, :-1], r[:, -1]
        if self.step_control == "x_per_example":
            return x.square().mean(1).sqrt().max()
        nx = x.square().mean().sqrt()
        return torch.maximum(nx, ell.square().mean().sqrt()) if self.step_control == "all" else nx


class LogpSolve:
    """What `ProbabilityFlowODE.sample(..., return_logp=...)` hands its solver instead of the
    plain state: the augmented start state, score, SDE and recorder, and the reading of
    $\\log p_\\varepsilon$ from the end state.

    Args:
        sde: the forward SDE.
        score_fn: the score function `(x, t) -> (B, *D)` (the entry point counts the calls of
            the augmented score, one network pass each).
        x: the start state `(B, *D)` at T.
        estimator: an `ExactTrace` or `Hutchinson` (probes drawn once, from `generator`).
    """

    def __init__(self, sde: SDE, score_fn, x: torch.Tensor, estimator, generator):
        self.shape = tuple(x.shape[1:])
        self.prior = sde.prior_logp(x)
        probes, chunk = None, getattr(estimator, "chunk", None)
        if estimator.name == "hutchinson":
            probes = draw_probes(x, estimator.probes, noise=estimator.noise, generator=generator)
        gaussian = isinstance(sde, GaussianSDE)
        self.sde = sde if gaussian else _FlatSDE(sde, self.shape)
        self.score = _AugmentedScore(sde, self.sde, score_fn, self.shape, probes, chunk)
        self.y = torch.cat([x.reshape(x.shape[0], -1), x.new_zeros(x.shape[0], 1)], 1)

    def recorder(self, record):
        return _FlatRecorder(record, self.shape)

    def solver(self, solver):
        """`solver` itself, or for torchdiffeq's adaptive methods a copy whose error norm keeps
        $\\ell$ apart from `x` (unless the user set a `norm`); `Dopri5` runs as the same
        `TorchDiffEq("dopri5")`."""
        if isinstance(solver, Dopri5):
            solver = TorchDiffEq(
                "dopri5", rtol=solver.rtol, atol=solver.atol, max_steps=solver.max_steps,
                max_evals=solver.max_evals,
            )  # fmt: skip
        if not isinstance(solver, TorchDiffEq) or solver.method not in ODE_ADAPTIVE:
            return solver
        options = solver.options or {}
        if "norm" in options:
            return solver
        out = copy.copy(solver)
        out.options = {**options, "norm": _AugmentedNorm(solver.step_control)}
        return out

    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples `(B, *D)` and $\\log p_\\varepsilon$ of them `(B,)` from the end state."""
        x = y[:, :-1].reshape(y.shape[0], *self.shape)
        return x, self.prior.to(y.dtype) + y[:, -1]
