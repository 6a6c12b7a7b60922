r"""Denoisers $D(\tilde x, \tilde\sigma)$ in the EDM / k-diffusion convention, both ways.

Karras et al. (2022, EDM, Sec. 2 and Table 1) and k-diffusion write every Gaussian-kernel diffusion
in the variance-exploding variable $\tilde x = x/\alpha_t$ with noise level
$\tilde\sigma = \sigma_t/\alpha_t$ ($= e^{-\lambda_t}$), and a model as the denoiser
$D(\tilde x, \tilde\sigma) \approx E[x_0 \mid \tilde x]$. With Tweedie's formula (Efron 2011),

$$D(\tilde x, \tilde\sigma) = \frac{x + \sigma_t^2\,s(x, t)}{\alpha_t}
= \tilde x + \alpha_t\tilde\sigma^2\,s(\alpha_t\tilde x, t), \qquad
s(x, t) = \frac{\alpha_t D(x/\alpha_t, \sigma_t/\alpha_t) - x}{\sigma_t^2},$$

where $t$ solves $\sigma_t/\alpha_t = \tilde\sigma$, i.e. $\lambda_t = -\log\tilde\sigma$. For a
VE SDE ($\alpha = 1$) this is $\sigma_t = \tilde\sigma$; for VP it is the DDPM ↔ EDM map of
Karras et al. (2022), Table 1. No k-diffusion dependency: the convention is a signature.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_callable, check_end_time, check_state
from .._shapes import append_dims
from ..models.score_model import ScoreModel
from ..sdes.gaussian import GaussianSDE

__all__ = ["Denoiser", "DenoiserNet", "as_denoiser", "from_denoiser"]


def _check_sde(sde) -> None:
    if not isinstance(sde, GaussianSDE):
        raise TypeError(
            f"sde must be a GaussianSDE (alpha(t), sigma(t) are needed), got {type(sde).__name__}"
        )


class DenoiserNet(nn.Module):
    r"""An sdescore `"x0"` net $(x, t) \mapsto D(x/\alpha_t, \sigma_t/\alpha_t)$ from a denoiser.

    Args:
        denoiser: callable `D(x: (B, *D), sigma: (B,)) -> (B, *D)` (k-diffusion / EDM).
        sde: the `GaussianSDE` whose $t \leftrightarrow \tilde\sigma$ map to use.
    """

    def __init__(self, denoiser, sde: GaussianSDE):
        super().__init__()
        check_callable("denoiser", denoiser, example="D(x, sigma)")
        _check_sde(sde)
        self.denoiser, self.sde = denoiser, sde

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.sde.alpha(t), self.sde.sigma(t)
        return self.denoiser(x / append_dims(alpha, x.ndim), sigma / alpha)


def from_denoiser(denoiser, sde: GaussianSDE) -> ScoreModel:
    r"""A `ScoreModel` on `sde` from an EDM / k-diffusion denoiser $D(\tilde x, \tilde\sigma)$.

    The score is $s = (\alpha D - x)/\sigma^2$ (the `"x0"` head). Any `sde` works: the
    denoiser sees only $\tilde x$ and $\tilde\sigma$, so e.g. an EDM model runs as a VE SDE
    (`VESDE(sigma_min, sigma_max)`: $\tilde\sigma = \sigma_t$) or as VP, with the same samples
    from the probability-flow ODE (the ODE is invariant under this change of variables).

    Raises:
        TypeError: `denoiser` not callable, or `sde` not a `GaussianSDE`.
    """
    return ScoreModel(DenoiserNet(denoiser, sde), sde, "x0")


class Denoiser(nn.Module):
    r"""A score function as a k-diffusion-style denoiser `D(x, sigma)` (see the module docstring).

    Callable as `D(x: (B, *D), sigma)` with `sigma` a float, a 0-d tensor or `(B,)`, in the
    VE variable; returns $E[x_0 \mid \tilde x]$ `(B, *D)`. `sigma_min` and `sigma_max` are the
    noise levels of times `eps` and $T$, for a k-diffusion sigma schedule such as
    `get_sigmas_karras(n, D.sigma_min, D.sigma_max)`; the samplers drive the ODE
    $d\tilde x/d\tilde\sigma = (\tilde x - D)/\tilde\sigma$, the PF ODE of `sde` in these variables.

    Args:
        score_fn: any score function `(x, t) -> (B, *D)` (a `ScoreModel`, an oracle, ...).
        sde: its `GaussianSDE`.
        eps: the smallest time; sets `sigma_min`.

    Raises:
        TypeError: `score_fn` not callable, `sde` not a `GaussianSDE`.
        ValueError: `eps` outside $(0, T)$; when called, `sigma` outside
            `[sigma_min, sigma_max]` (checked once per call: it needs one host sync).
    """

    def __init__(self, score_fn, sde: GaussianSDE, *, eps: float = 1e-5):
        super().__init__()
        check_callable("score_fn", score_fn)
        _check_sde(sde)
        self.score_fn, self.sde = score_fn, sde
        self.eps = check_end_time(eps, sde.T)
        ends = sde.log_snr(torch.tensor([eps, sde.T], dtype=torch.float64))
        self.sigma_min, self.sigma_max = math.exp(-ends[0].item()), math.exp(-ends[1].item())

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        check_state(x)
        sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
        sigma = sigma.reshape(-1).expand(x.shape[0]) if sigma.numel() == 1 else sigma
        if sigma.shape != (x.shape[0],):
            raise ValueError(
                f"sigma must be a number or shaped ({x.shape[0]},), got {tuple(sigma.shape)}"
            )
        # A relative slack of 1e-4 lets float32 round trips of the end points through.
        lo, hi = self.sigma_min * (1 - 1e-4), self.sigma_max * (1 + 1e-4)
        if bool(((sigma < lo) | (sigma > hi)).any()):
            raise ValueError(
                f"sigma must lie in [sigma_min, sigma_max] = [{self.sigma_min:.6g}, "
                f"{self.sigma_max:.6g}] (times [eps, T] of {self.sde!r}), got "
                f"{sigma.min().item():.6g} .. {sigma.max().item():.6g}"
            )
        t = self.sde.t_from_log_snr(-sigma.log()).clamp(self.eps, self.sde.T).to(x.dtype)
        alpha = self.sde.alpha(t)
        s = self.score_fn(append_dims(alpha, x.ndim) * x, t)
        return x + append_dims(alpha * sigma.square(), x.ndim) * s


def as_denoiser(score_fn, sde: GaussianSDE, *, eps: float = 1e-5) -> Denoiser:
    """`Denoiser(score_fn, sde, eps=eps)`: an sdescore model for k-diffusion samplers."""
    return Denoiser(score_fn, sde, eps=eps)
