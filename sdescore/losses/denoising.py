r"""Denoising score matching (Vincent 2011) and its discrete NCSN and DDPM forms.

All three regress the model onto the score of the perturbation kernel: with
$x_t = \alpha(t) x_0 + \sigma(t) z$, $\nabla_{x_t}\log p_t(x_t \mid x_0) = -z / \sigma(t)$, and

$$\mathcal L(\theta) = E_{t, x_0, z}\big[\tfrac12\lambda(t)\,\lVert s_\theta(x_t, t) + z/\sigma(t)\rVert^2\big]$$

(Song et al. 2021, eq. (7)). Each function returns the per-example loss `(B,)` (summed over the
data dimensions) unless `reduction` says otherwise. Residuals are formed as
$\sigma s_\theta + z$, which stays finite as $\sigma \to 0$ for an $\varepsilon$-parameterized model.
"""

from __future__ import annotations

import torch

from .._checks import check_bool, check_generator, check_int, check_real, check_sigma_positive
from .._shapes import append_dims, batch_sum
from ._common import call_model, check_weighting, reduce, resolve, sample_time, weight

__all__ = ["ddpm_loss", "dsm_loss", "ncsn_loss"]


def _residual(model, sde, x0, t, noise, generator):
    """$\\sigma s_\\theta(x_t, t) + z$ `(B, *D)` and $\\sigma$ `(B,)`."""
    x_t, z, std = sde.perturb(x0, t, noise=noise, generator=generator)
    check_sigma_positive(std, t, sde, "the denoising target -z / sigma(t)")
    s = call_model(model, x_t, t)
    return append_dims(std, x0.ndim) * s + z, std


def _likelihood_is_time(sde, x0, eps, generator):
    r"""Draw $t \sim q(t) \propto g(t)^2/\sigma(t)^2$ on $[\epsilon, T]$ and return $(t, Z)$.

    For $dx = f x\,dt + g\,dw$, $d\sigma^2/dt = 2f\sigma^2 + g^2$, so
    $g^2/\sigma^2 = -2\,d\lambda/dt$ with $\lambda = \log\alpha - \log\sigma$ the half log-SNR: the
    inverse CDF of $q$ is the inverse of $\lambda$ (Song et al. 2021b, Sec. 5 use this proposal),
    and the normaliser is $Z = 2(\lambda(\epsilon) - \lambda(T))$.
    """
    eps = check_real("eps", eps, positive=True)
    if eps >= sde.T:
        raise ValueError(f"eps must be < T = {sde.T}, got {eps}")
    ends = torch.tensor([eps, sde.T], dtype=torch.float64)
    lam_eps, lam_T = sde.log_snr(ends).tolist()
    u = torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=torch.float64)
    t = sde.t_from_log_snr(lam_eps - u * (lam_eps - lam_T))
    t = t.to(device=x0.device, dtype=x0.dtype).clamp(eps, sde.T)
    return t, 2.0 * (lam_eps - lam_T)


def dsm_loss(
    model,
    x0: torch.Tensor,
    *,
    sde=None,
    weighting="sigma2",
    importance_sampling: bool = False,
    eps: float = 1e-5,
    t=None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "none",
) -> torch.Tensor:
    r"""Continuous-time denoising score matching, $\tfrac12\lambda(t)\lVert s_\theta + z/\sigma\rVert^2$.

    Song et al. (2021), eq. (7), with $t \sim U[\epsilon, T]$.

    Args:
        model: score function `(x, t) -> (B, *D)`, typically a `ScoreModel`.
        x0: data `(B, *D)`.
        sde: a `GaussianSDE`; default `model.sde`.
        weighting: $\lambda(t)$: `"sigma2"` ($\sigma(t)^2$, the NCSN choice), `"likelihood"`
            ($g(t)^2$, which makes the time integral a bound on the KL divergence, Song et al.
            2021b, Thm. 1), `"none"`/`None` (1), or a callable `t (B,) -> (B,)`.
        importance_sampling: with `"likelihood"`, draw $t \propto g^2/\sigma^2$ instead of
            uniformly and reweight, an unbiased estimate of the same objective with far lower
            variance (Song et al. 2021b, Sec. 5).
        eps: lower end of the time interval.
        t: fixed times (a float or `(B,)`) instead of random ones.
        noise: fixed $z$ `(B, *D)` instead of fresh noise.
        generator: for $t$ and $z$.
        reduction: `"none"` (per-example `(B,)`), `"mean"` or `"sum"`.
    """
    sde = resolve(model, x0, sde)
    check_generator("generator", generator)
    weighting = check_weighting(weighting)
    check_bool("importance_sampling", importance_sampling)
    if importance_sampling:
        if weighting != "likelihood":
            raise ValueError(
                f"importance_sampling=True needs weighting='likelihood', got {weighting!r}"
            )
        if t is not None:
            raise ValueError("give either t or importance_sampling=True, not both")
        t, Z = _likelihood_is_time(sde, x0, eps, generator)
        r, _ = _residual(model, sde, x0, t, noise, generator)
        # lambda / ((T - eps) q) * |r|^2 / sigma^2 = Z / (T - eps) * |r|^2
        return reduce(0.5 * Z / (sde.T - eps) * batch_sum(r.square()), reduction)
    t = sample_time(sde, x0, t, eps, generator)
    r, std = _residual(model, sde, x0, t, noise, generator)
    lam = weight(weighting, sde, t, std)
    return reduce(0.5 * lam / std.square() * batch_sum(r.square()), reduction)


def _grid_time(sde, x0, num, t_min, generator, name):
    num = check_int(name, num)
    t_min = check_real("t_min", t_min, nonnegative=True)
    if t_min >= sde.T:
        raise ValueError(f"t_min must be < T = {sde.T}, got {t_min}")
    i = torch.randint(0, num, (x0.shape[0],), generator=generator, device=x0.device)
    return i, t_min, (sde.T - t_min) / max(num - 1, 1)


def ncsn_loss(
    model,
    x0: torch.Tensor,
    *,
    sde=None,
    num_scales: int = 10,
    t_min: float = 0.0,
    generator: torch.Generator | None = None,
    reduction: str = "none",
) -> torch.Tensor:
    r"""NCSN loss over $L$ noise levels, $\tfrac12\sigma_i^2\lVert s_\theta(x, t_i) + z/\sigma_i\rVert^2$.

    Song & Ermon (2019), eqs. (5)-(6), with $\lambda(\sigma_i) = \sigma_i^2$ and the level drawn
    uniformly. The levels are $t_i = t_{min} + (T - t_{min})\,i/(L-1)$; with a `VESDE` and
    $t_{min} = 0$, $T = 1$ they are the geometric sequence
    $\sigma_i = \sigma_{min}(\sigma_{max}/\sigma_{min})^{i/(L-1)}$. The model is conditioned on
    $t_i$ (equivalently on $\sigma_i$).

    The other arguments are those of `dsm_loss`.

    Args:
        num_scales: L.
        t_min: time of the smallest level; must have $\sigma(t_{min}) > 0$ (use $> 0$ for VP).
    """
    sde = resolve(model, x0, sde)
    check_generator("generator", generator)
    i, t0, h = _grid_time(sde, x0, num_scales, t_min, generator, "num_scales")
    if float(sde.sigma(t0)) <= 0:
        raise ValueError(f"sigma(t_min) must be > 0 for {sde!r}, got t_min={t0}; pass t_min > 0")
    t = t0 + h * i.to(x0.dtype)
    r, _ = _residual(model, sde, x0, t, None, generator)
    return reduce(0.5 * batch_sum(r.square()), reduction)


def ddpm_loss(
    model,
    x0: torch.Tensor,
    *,
    sde=None,
    num_steps: int = 1000,
    generator: torch.Generator | None = None,
    reduction: str = "none",
) -> torch.Tensor:
    r"""DDPM noise-prediction loss $\lVert z - \hat\varepsilon_\theta(x_{t_i}, t_i)\rVert^2$.

    Ho et al. (2020), eq. (14) ($L_{simple}$), with $i \sim U\{1, \dots, N\}$, $t_i = iT/N$ and
    $\hat\varepsilon_\theta = -\sigma(t_i)\,s_\theta$ (exact for an `"eps"` `ScoreModel`). With a
    `VPSDE(0.1, 20)` and $N = 1000$, $\alpha(t_i)^2$ approximates DDPM's $\bar\alpha_i$ for its
    linear $\beta$ schedule from $10^{-4}$ to $0.02$ (Song et al. 2021, App. B).

    The other arguments are those of `dsm_loss`.

    Args:
        num_steps: N.
    """
    sde = resolve(model, x0, sde)
    check_generator("generator", generator)
    i, _, _ = _grid_time(sde, x0, num_steps, 0.0, generator, "num_steps")
    t = (i + 1).to(x0.dtype) * (sde.T / num_steps)
    r, _ = _residual(model, sde, x0, t, None, generator)
    return reduce(batch_sum(r.square()), reduction)
