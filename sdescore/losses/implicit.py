r"""Score matching without the perturbation kernel: implicit (Hyvärinen) and sliced.

Both estimate, at each time, $\tfrac12 E\lVert s_\theta - \nabla\log p_t\rVert^2$ up to a constant
independent of $\theta$, from samples $x_t \sim p_t$ only, by integrating by parts:
$E[s^\top\nabla\log p_t] = -E[\operatorname{tr}\nabla_x s]$ (Hyvärinen 2005, Thm. 1). So they
share their minimiser with `dsm_loss` under the same weighting $\lambda(t)$.
"""

from __future__ import annotations

import torch

from .._checks import check_bool, check_choice, check_generator, check_int
from .._shapes import batch_sum
from ._common import call_model, check_weighting, reduce, resolve, sample_time, weight

__all__ = ["ism_loss", "ssm_loss"]

PROJECTIONS = ("rademacher", "gaussian")


def _score_at_samples(model, sde, x0, t, eps, generator):
    """Draw $x_t \\sim p_t$ (a fresh leaf that requires grad) and evaluate the model there."""
    t = sample_time(sde, x0, t, eps, generator)
    x_t, _, std = sde.perturb(x0.detach(), t, generator=generator)
    x_t = x_t.detach().requires_grad_(True)
    s = call_model(model, x_t, t)
    return x_t, s, t, std


def ism_loss(
    model,
    x0: torch.Tensor,
    *,
    sde=None,
    weighting="sigma2",
    eps: float = 1e-5,
    t=None,
    generator: torch.Generator | None = None,
    reduction: str = "none",
) -> torch.Tensor:
    r"""Implicit score matching $\lambda(t)\,[\tfrac12\lVert s_\theta\rVert^2 + \operatorname{tr}\nabla_x s_\theta]$.

    Hyvärinen (2005), eq. (4), at $x_t \sim p_t$. The trace is exact: one backward pass per data
    dimension, so this is meant for low dimension (points, small toy problems).

    The other arguments are those of `dsm_loss` (without importance sampling).
    """
    sde = resolve(model, x0, sde)
    check_generator("generator", generator)
    weighting = check_weighting(weighting)
    with torch.enable_grad():
        x_t, s, t, std = _score_at_samples(model, sde, x0, t, eps, generator)
        flat = s.reshape(s.shape[0], -1)
        trace = torch.zeros_like(std)
        for j in range(flat.shape[1]):
            (gj,) = torch.autograd.grad(flat[:, j].sum(), x_t, create_graph=True)
            trace = trace + gj.reshape(gj.shape[0], -1)[:, j]
        loss = weight(weighting, sde, t, std) * (0.5 * batch_sum(s.square()) + trace)
    return reduce(loss, reduction)


def ssm_loss(
    model,
    x0: torch.Tensor,
    *,
    sde=None,
    weighting="sigma2",
    num_projections: int = 1,
    projection: str = "rademacher",
    variance_reduction: bool = True,
    eps: float = 1e-5,
    t=None,
    generator: torch.Generator | None = None,
    reduction: str = "none",
) -> torch.Tensor:
    r"""Sliced score matching $\lambda(t)\,[\tfrac12\lVert s_\theta\rVert^2 + v^\top\nabla_x(v^\top s_\theta)]$.

    Song et al. (2019), eq. (7), and with `variance_reduction=True` (the default) its SSM-VR form,
    which replaces $\tfrac12(v^\top s)^2$ by its expectation $\tfrac12\lVert s\rVert^2$ over
    projections with $E[vv^\top] = I$. One Hessian-vector product per projection, so it scales to
    any dimension.

    The other arguments are those of `dsm_loss`.

    Args:
        num_projections: number of projection vectors $v$ per example (averaged).
        projection: `"rademacher"` (entries $\pm1$) or `"gaussian"` ($N(0, I)$).
        variance_reduction: use the SSM-VR form.
    """
    sde = resolve(model, x0, sde)
    check_generator("generator", generator)
    weighting = check_weighting(weighting)
    num_projections = check_int("num_projections", num_projections)
    check_choice("projection", projection, PROJECTIONS)
    check_bool("variance_reduction", variance_reduction)
    with torch.enable_grad():
        x_t, s, t, std = _score_at_samples(model, sde, x0, t, eps, generator)
        total = torch.zeros_like(std)
        for _ in range(num_projections):
            v = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            if projection == "rademacher":
                v = v.sign()  # P(v == 0) = 0 for a continuous draw
            vs = batch_sum(v * s)
            (hv,) = torch.autograd.grad(vs.sum(), x_t, create_graph=True)
            quad = 0.5 * batch_sum(s.square()) if variance_reduction else 0.5 * vs.square()
            total = total + quad + batch_sum(v * hv)
        loss = weight(weighting, sde, t, std) * total / num_projections
    return reduce(loss, reduction)
