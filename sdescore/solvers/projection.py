r"""Inpainting and imputation: one per-step projection shared by the native reverse-SDE samplers.

Song et al. (2021), App. I.2: to sample $x_0$ given the observed part $y = x_0(\Omega)$ (a mask
$\Omega$ of known coordinates or pixels), run the reverse SDE on all coordinates and, after every
step at time $t$, replace the known part by a fresh draw of its forward marginal given the
observation, $x_t(\Omega) \sim p_t(x_t(\Omega) \mid x_0(\Omega) = y) = N(\alpha(t)\,y,
\sigma(t)^2 I)$. At the end the known part is set to $y$ itself.

**Why the replacement alone is biased, and the fix (`method="tweedie"`).** Given $y$, the known
part's noise is independent of everything else, so under the target $p_t(x_t \mid y)$ the known
part $x_t(\Omega)$ is independent of the unknown part $x_t(\bar\Omega)$ and the replacement draws
it exactly. The unknown part must follow the reverse SDE of the *conditional* score
$$\nabla_{\bar\Omega} \log p_t(x_t \mid y) = \nabla_{\bar\Omega} \log p_t(x_t)
 + \nabla_{\bar\Omega} \log p(x_0(\Omega) = y \mid x_t),$$
and the replacement method drops the second term, which vanishes only when the coordinates are
independent. `method="tweedie"` adds it, with $p(x_0 \mid x_t)$ replaced by the Gaussian of
Tweedie's first two moments: mean $\hat x_0 = (x_t + \sigma^2 s)/\alpha$ and covariance
$C = \tfrac{\sigma^2}{\alpha} J$, $J = \partial \hat x_0/\partial x_t = (I + \sigma^2 \nabla s)/\alpha$
(Efron 2011; the second-order Tweedie formula of Boys et al. 2023). The term is then
$$J_{\Omega\bar\Omega}^\top\, C_{\Omega\Omega}^{-1}\,(y - \hat x_0(\Omega)),$$
the gradient of $\log N(y;\, \hat x_0(\Omega),\, C_{\Omega\Omega})$ through the denoiser, as in the
reconstruction guidance of Ho et al. (2022, Sec. 3.1), which takes $C = \sigma^2/\alpha^2\,I$
instead. For Gaussian data $p(x_0 \mid x_t)$ is exactly this Gaussian, so the imputation is exact
up to the sampler's discretisation. $C_{\Omega\Omega}^{-1}$ is applied by conjugate gradients
with vector–Jacobian products of one score evaluation (J is symmetric for an exact score), so a
step costs one score call plus `cg_iterations` backward passes through it.

**Measured** on a 2-D Gaussian with correlation 0.8, $x_1 = 1.5$ known (exact $x_2 \mid x_1$:
mean -0.20, variance 0.36; VP, reverse diffusion, 4000 samples, `benchmarks/imputation.py`):
replacement gives mean -0.50, variance 0.49 at 200 steps and the same at 1000; `"tweedie"`
gives -0.20, 0.36 at 200 steps (0.39 at 50). For independent coordinates both are exact.

**Use.** `Inpainting(observed, mask, solver="pc")` is itself a reverse-SDE solver object that
wraps a native sampler (extension by wrapping): `reverse.sample(shape,
method=Inpainting(y, mask, solver=PC()))`; the wrapped solver applies the projection after every
step.

**Probability-flow ODE.** Inpainting is offered for the native reverse-SDE samplers only. The
ODE has no noise of its own to undo the mismatch between the replaced known part and the path:
with the same projection, Euler PF-ODE steps give mean -0.69, variance 0.60 on the example
above, worse than every SDE sampler (tests/solvers/test_inpainting.py).
"""

from __future__ import annotations

from typing import ClassVar, final

import torch

from .._checks import check_choice, check_int, check_state
from .._shapes import append_dims, batch_sum
from ..sdes.base import SDE
from ..sdes.gaussian import GaussianSDE
from ._common import noise_like
from .base import Problem, Solver

__all__ = ["INPAINT_METHODS", "Inpainting"]

INPAINT_METHODS = ("replace", "tweedie")


@final
class Inpainting(Solver):
    r"""Inpainting with a native reverse-SDE sampler: `ReverseSDE.sample(shape,
    method=Inpainting(y, mask, solver="pc"))`.

    After every step of `solver` the known part is redrawn from its forward marginal given the
    observation (Song et al. 2021, App. I), and the samples end equal to `observed` where `mask`
    is True (after any final denoising). `steps` on `sample` are `solver`'s.

    Args:
        observed: `(B, *D)` (or `(*D)`, shared by the batch) with the known values where `mask`
            is True, which must be finite; other entries are never read (NaN there is fine:
            every use of `observed` selects it with `torch.where(mask, ...)`, whose other
            branch does not propagate NaN, and no gradient flows through it).
        mask: boolean `(B, *D)` or `(*D)`, True where the value is known (broadcast over the
            batch).
        method: `"replace"` (default): the replacement method of Song et al. (2021), App. I,
            one score call per step, biased where known and unknown coordinates are correlated.
            `"tweedie"`: the replacement plus the conditional-score term of the unknown part
            through the denoiser (see the module docstring), exact for Gaussian data; the score
            must be differentiable in `x` (autograd), and the examples of a batch independent.
        cg_iterations: `"tweedie"` only: conjugate-gradient iterations for
            $C_{\Omega\Omega}^{-1}$, each one backward pass through the score (default 5;
            capped at the number of known entries per example, where CG is exact).
        solver: the native sampler that runs: a solver object (`EulerMaruyama()`,
            `ReverseDiffusion()`, `Ancestral()`, `PC()`, `AnnealedLangevin()`) or its name
            (default `"euler_maruyama"`, as `ReverseSDE.sample`).

    Raises:
        TypeError: `observed` not a floating tensor, `mask` not a boolean tensor, or
            `cg_iterations` not an int.
        ValueError: shapes that do not match, `observed` NaN or Inf where `mask` is True (the
            message counts the bad entries), a mask with every coordinate known (nothing to
            sample) or none known (plain sampling: use the solver without `Inpainting`), an unknown `method`,
            `cg_iterations` < 1 or given with `method="replace"`, a `solver` that is not a
            native reverse-SDE sampler.
    """

    process: ClassVar[str] = "sde"

    def __init__(
        self,
        observed: torch.Tensor,
        mask: torch.Tensor,
        *,
        method: str = "replace",
        cg_iterations: int | None = None,
        solver="euler_maruyama",
    ):
        if not isinstance(observed, torch.Tensor) or not observed.is_floating_point():
            got = observed.dtype if isinstance(observed, torch.Tensor) else type(observed).__name__
            raise TypeError(f"observed must be a floating tensor (B, *D), got {got}")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(
                f"mask must be a boolean tensor (True = known), got {got}; use mask.bool() or "
                "mask > 0.5 for a 0/1 mask"
            )
        try:
            torch.broadcast_shapes(observed.shape, mask.shape)
        except RuntimeError:
            raise ValueError(
                f"mask {tuple(mask.shape)} and observed {tuple(observed.shape)} do not broadcast"
            ) from None
        if bool(mask.all()):
            raise ValueError("mask marks every coordinate known: there is nothing to sample")
        _check_known_finite(observed, mask)
        if not bool(mask.any()):
            raise ValueError(
                "mask marks no coordinate known: sample with the solver itself, without Inpainting (or invert the mask)"
            )
        self.method = check_choice("method", method, INPAINT_METHODS)
        if cg_iterations is not None and method != "tweedie":
            raise ValueError(
                f"cg_iterations applies to method='tweedie' only, got cg_iterations="
                f"{cg_iterations!r} with method={method!r}"
            )
        self.cg_iterations = check_int(
            "cg_iterations", 5 if cg_iterations is None else cg_iterations
        )
        self.observed, self.mask = observed.detach(), mask
        from .table import get_solver  # the table lists this class: import at use

        self.solver = get_solver(solver, "sde", what="solver")
        if not self.solver.supports_inpaint:
            raise ValueError(
                f"solver {self.solver!r} cannot inpaint; the native samplers can: "
                "'euler_maruyama', 'reverse_diffusion', 'ancestral', 'pc', 'annealed_langevin'"
            )

    @property
    def default_steps(self) -> int | None:  # type: ignore[override]
        return self.solver.default_steps

    def score_calls(self, steps: int | None) -> int | None:
        return self.solver.score_calls(steps)

    def grid_steps(self) -> int | None:
        return self.solver.grid_steps()

    def describe(self, steps: int | None) -> str:
        return f"{self!r}: {self.solver.describe(steps)}"

    def projection(self, sde: SDE, x: torch.Tensor, generator) -> BoundInpainting:
        """The per-step projection for a solve from `x` (`ReverseSDE.sample` calls this)."""
        return self.bind(sde, x, generator)

    def integrate(self, p: Problem) -> torch.Tensor:
        if p.project is None:
            raise ValueError(
                "Inpainting runs through ReverseSDE.sample(..., method=Inpainting(...)), which "
                "binds the projection to the solve"
            )
        return self.solver.integrate(p)

    def to_dict(self) -> dict:
        raise TypeError("an Inpainting holds tensors (observed, mask): it has no plain description")

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def bind(self, sde: SDE, x: torch.Tensor, generator) -> BoundInpainting:
        """Check against the start state `x: (B, *D)` and fix the SDE and the noise stream."""
        if not isinstance(sde, GaussianSDE):
            raise TypeError(
                f"inpainting needs a GaussianSDE for the forward marginal of the known part, got "
                f"{type(sde).__name__}"
            )
        check_state(x)
        for name, v in (("observed", self.observed), ("mask", self.mask)):
            try:
                ok = torch.broadcast_shapes(v.shape, x.shape) == x.shape
            except RuntimeError:
                ok = False
            if not ok:
                raise ValueError(
                    f"{name} must have shape {tuple(x.shape)} or {tuple(x.shape[1:])} to match "
                    f"the samples, got {tuple(v.shape)}"
                )
        return BoundInpainting(self, sde, x, generator)

    def __repr__(self) -> str:
        return (
            f"Inpainting(known={int(self.mask.sum())} of {self.mask.numel()} entries, "
            f"method={self.method!r}, solver={self.solver!r})"
        )


def _check_known_finite(observed: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise if `observed` is NaN/Inf where `mask` (broadcast against it) is True.

    Counted over the broadcast shape, so a shared `(*D)` observation against a per-example mask
    counts once per example that knows the entry. One host read, at construction only.
    """
    obs, known = torch.broadcast_tensors(observed.detach(), mask.to(observed.device))
    bad = known & ~torch.isfinite(obs)
    n_bad = int(bad.sum())
    if n_bad:
        first = tuple(torch.nonzero(bad)[0].tolist())
        raise ValueError(
            f"observed is NaN or Inf at {n_bad} of its {int(known.sum())} known entries (where "
            f"mask is True; the first at index {first} of shape {tuple(obs.shape)}); the known "
            "values must be finite (entries where mask is False are ignored and may be NaN)"
        )


class BoundInpainting:
    """An `Inpainting` fixed to one solve: `project(x, t)` per step, `finish(x)` at the end.

    Built by `Inpainting.bind`; the observed values and mask are moved to the state's device and
    dtype once, so a step is one noise draw and one `torch.where` (no host synchronisation).
    With `method="tweedie"`, `guide(score_fn)` is the score the solver must use.
    """

    def __init__(self, spec: Inpainting, sde: GaussianSDE, x: torch.Tensor, generator):
        self.sde, self.generator, self.method = sde, generator, spec.method
        self.observed = spec.observed.to(device=x.device, dtype=x.dtype).expand(x.shape)
        self.mask = spec.mask.to(x.device).expand(x.shape)
        # CG on k unknowns is exact after k iterations: no more are needed (one sync, here).
        known = int(self.mask.reshape(x.shape[0], -1).sum(1).max())
        self.cg_iterations = min(spec.cg_iterations, known)

    def guide(self, score_fn):
        """The score the solver uses: `score_fn` itself, or with `"tweedie"` a `TweedieGuidedScore`."""
        return score_fn if self.method == "replace" else TweedieGuidedScore(score_fn, self)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r"""Replace the known part by a draw of $N(\alpha(t)\,y, \sigma(t)^2 I)$; `t` a 0-d time."""
        t = t.reshape(1)
        alpha = self.sde.log_alpha(t).exp().to(x.dtype).reshape(())
        sigma = self.sde.sigma(t).to(x.dtype).reshape(())
        known = self.observed * alpha + noise_like(x, self.generator) * sigma
        return torch.where(self.mask, known, x)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """The final samples: the known part is the observation itself."""
        return torch.where(self.mask, self.observed, x)


class TweedieGuidedScore:
    r"""The score with the conditional term of the unknown part, $J_{\Omega\bar\Omega}^\top
    C_{\Omega\Omega}^{-1}(y - \hat x_0(\Omega))$, added (module docstring; exact for Gaussian
    data). A score function `(x, t) -> (B, *D)`; one score call and `cg_iterations` backward
    passes per call, no host synchronisation. The known part of the result is the plain score
    (the projection redraws it anyway).
    """

    def __init__(self, score_fn, bound: BoundInpainting):
        self.score_fn, self.bound = score_fn, bound

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = self.bound
        alpha = append_dims(b.sde.alpha(t).to(x.dtype), x.ndim)
        var = append_dims(b.sde.sigma(t).to(x.dtype), x.ndim).square()
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            s = self.score_fn(xg, t)
            if not isinstance(s, torch.Tensor) or s.grad_fn is None:
                raise TypeError(
                    "Inpainting(method='tweedie') differentiates the score through its input, but "
                    "score_fn(x, t) returned a tensor without an autograd graph (computed under "
                    "torch.no_grad, detached, or constant in x); use method='replace'"
                )
            x0 = (xg + var * s) / alpha  # Tweedie's mean; J = d x0 / dx, C = (var / alpha) J
            res = torch.where(b.mask, b.observed - x0.detach(), 0.0)
            # Conjugate gradients for C_oo w = res with products C p = (var / alpha) J^T p on
            # the known part; the unknown part of J^T w, the correction, accumulates alongside.
            w_unknown, p, rr = torch.zeros_like(x), res, batch_sum(res * res)
            for k in range(b.cg_iterations):
                last = k == b.cg_iterations - 1
                (jp,) = torch.autograd.grad(x0, xg, p, retain_graph=not last)
                cp = torch.where(b.mask, jp * (var / alpha), 0.0)
                pcp = batch_sum(p * cp)
                ok = pcp > 0  # 0 once converged; < 0 only for a non-monotone learned score
                step = append_dims(torch.where(ok, rr / torch.where(ok, pcp, 1.0), 0.0), x.ndim)
                w_unknown = w_unknown + step * torch.where(b.mask, 0.0, jp)
                if last:
                    break
                res = res - step * cp
                rr_new = batch_sum(res * res)
                beta = torch.where(rr > 0, rr_new / torch.where(rr > 0, rr, 1.0), 0.0)
                p, rr = res + append_dims(beta, x.ndim) * p, rr_new
        return (s + w_unknown).detach()
