r"""Conditional flow matching (Lipman et al. 2023; Liu et al. 2023), stated as denoising score matching.

For a Gaussian kernel $x_t = \alpha(t) x_0 + \sigma(t) z$ the conditional velocity is
$u_t(x_t \mid x_0) = \dot\alpha x_0 + \dot\sigma z$, and the loss regresses a velocity model on it:

$$\mathcal L_{FM}(\theta) = E_{t, x_0, z}\big[w(t)\,\lVert \hat u_\theta(x_t, t) - \dot\alpha x_0
- \dot\sigma z\rVert^2\big].$$

With $\dot\alpha = f\alpha$ and $\dot\sigma = f\sigma + g^2/(2\sigma)$, the target is
$f x_t + g^2 z/(2\sigma)$, and a velocity model is a score model through
$\hat u = f x - \tfrac12 g^2 s_\theta$ (the probability-flow drift), so

$$\hat u_\theta - u_t = -\tfrac12 g^2\,(s_\theta + z/\sigma), \qquad
w\,\lVert\hat u_\theta - u_t\rVert^2 = \tfrac12\Big(\tfrac12 w g^4\Big)\lVert s_\theta + z/\sigma\rVert^2:$$

flow matching with weight $w(t)$ is `dsm_loss` with the weighting $\lambda(t) = \tfrac12 w(t)
g(t)^4$ (Kingma & Gao 2023 make the same observation). Plain flow matching ($w = 1$) on
rectified flow has $\lambda = 2t^2/(1-t)^2$, i.e. $\lambda/g^2 = t/(1 - t)$ times the likelihood
weighting $g^2$ of Song et al. (2021b); `weighting="likelihood"` ($w = 2/g^2$) makes it exactly
that, so the time integral bounds the KL divergence (their Thm. 1).
"""

from __future__ import annotations

import torch

from .._checks import check_generator
from .._shapes import append_dims, batch_sum
from ..models.score_model import ScoreModel
from ._common import call_model, call_weighting, reduce, resolve, sample_time

__all__ = ["FM_WEIGHTINGS", "flow_matching_loss"]

FM_WEIGHTINGS = ("none", "likelihood")


def _predicted_velocity(model, sde, x, t):
    # A ScoreModel gives its velocity head's raw output (no round trip through the score); any
    # other score function is converted by u = f x - g^2 s / 2.
    if isinstance(model, ScoreModel):
        u = model.velocity(x, t)
    else:
        s = call_model(model, x, t)
        g2 = append_dims(sde.diffusion(t).square(), x.ndim)
        u = sde.drift(x, t) - 0.5 * g2 * s
    return u


def flow_matching_loss(
    model,
    x0: torch.Tensor,
    *,
    sde=None,
    weighting="none",
    eps: float = 1e-5,
    t=None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "none",
) -> torch.Tensor:
    r"""Conditional flow matching, $w(t)\lVert\hat u_\theta(x_t, t) - \dot\alpha x_0 -
    \dot\sigma z\rVert^2$ with $t \sim U[\epsilon, T]$.

    Lipman et al. (2023), eq. (9) (Liu et al. 2023 for $\alpha = 1 - t$, $\sigma = t$), for the
    kernel of any `GaussianSDE`. Equal to `dsm_loss` with $\lambda(t) = \tfrac12 w(t) g(t)^4$ for
    the same $t$ and $z$ (module docstring; tested to rounding).

    Args:
        model: a `ScoreModel` (its `velocity`, the raw output of a `"velocity"` head) or any
            score function `(x, t) -> (B, *D)` (converted, $\hat u = f x - \tfrac12 g^2 s$).
        x0: data `(B, *D)`.
        sde: a `GaussianSDE`; default `model.sde`.
        weighting: $w(t)$: `"none"` (1, plain flow matching), `"likelihood"` ($2/g(t)^2$, the
            likelihood weighting $\lambda = g^2$ of Song et al. 2021b), or a callable
            `t (B,) -> (B,)`.
        eps: lower end of the time interval.
        t: fixed times (a float or `(B,)`) instead of random ones.
        noise: fixed $z$ `(B, *D)` instead of fresh noise.
        generator: for $t$ and $z$.
        reduction: `"none"` (per-example `(B,)`, summed over the data dimensions), `"mean"` or
            `"sum"`.

    Raises:
        TypeError: `model` not callable, `sde` not a `GaussianSDE`.
        ValueError: a bad weighting, `eps`, `t`, `noise` or reduction (named), or a model
            output of the wrong shape.
    """
    sde = resolve(model, x0, sde)
    if not (callable(weighting) or weighting in FM_WEIGHTINGS):
        raise ValueError(
            f"weighting must be one of {FM_WEIGHTINGS} or a callable w(t), got {weighting!r}"
        )
    check_generator("generator", generator)
    t = sample_time(sde, x0, t, eps, generator)
    x_t, z, _ = sde.perturb(x0, t, noise=noise, generator=generator)
    da, ds = sde.alpha_sigma_derivatives(t)
    target = append_dims(da, x0.ndim) * x0 + append_dims(ds, x0.ndim) * z
    sq = batch_sum((_predicted_velocity(model, sde, x_t, t) - target).square())
    if weighting == "none":
        return reduce(sq, reduction)
    if weighting == "likelihood":
        return reduce(2 * sq / sde.diffusion(t).square(), reduction)
    return reduce(call_weighting(weighting, t) * sq, reduction)
