"""Closed-form problems shared by the tests: SDEs with known marginals and data with exact scores.

Append new problems at the end; keep each one small and documented.
"""

from __future__ import annotations

import math

import torch

import sdescore
from sdescore.toy import GaussianMixture, eight_gaussians, gaussian

COSINE_S = 0.008


def cosine_log_alpha(t: torch.Tensor) -> torch.Tensor:
    """log alpha of the cosine schedule (Nichol & Dhariwal 2021), normalised so alpha(0) = 1."""
    u = 0.5 * math.pi * (t + COSINE_S) / (1 + COSINE_S)
    u0 = 0.5 * math.pi * COSINE_S / (1 + COSINE_S)
    # log(cos u / cos u0) without cancellation: cos u - cos u0 = -2 sin((u+u0)/2) sin((u-u0)/2)
    diff = -2 * torch.sin(0.5 * (u + u0)) * torch.sin(0.5 * (u - u0))
    return torch.log1p(diff / math.cos(u0))


def cosine_f(t: torch.Tensor) -> torch.Tensor:
    u = 0.5 * math.pi * (t + COSINE_S) / (1 + COSINE_S)
    return -0.5 * math.pi / (1 + COSINE_S) * torch.tan(u)


def cosine_g(t: torch.Tensor) -> torch.Tensor:
    # variance preserving: g^2 = -2 f
    return torch.sqrt(-2 * cosine_f(t))


def cosine_sde() -> sdescore.LinearSDE:
    """Cosine-schedule VP SDE as a LinearSDE; T = 0.99 keeps tan(u) finite."""
    return sdescore.LinearSDE(cosine_f, cosine_g, T=0.99)


def vp_as_linear(beta_min=0.1, beta_max=20.0) -> sdescore.LinearSDE:
    d = beta_max - beta_min
    return sdescore.LinearSDE(
        lambda t: -0.5 * (beta_min + d * t), lambda t: torch.sqrt(beta_min + d * t)
    )


def make_sdes() -> dict[str, sdescore.GaussianSDE]:
    """One SDE of every kind the library ships, with default-ish parameters."""
    return {
        "vp": sdescore.VPSDE(0.1, 20.0),
        "subvp": sdescore.SubVPSDE(0.1, 20.0),
        "ve": sdescore.VESDE(0.01, 50.0),
        "linear_cosine": cosine_sde(),
    }


def gaussian_1d(mean=0.7, std=0.4) -> GaussianMixture:
    """N(mean, std^2) on states of shape (B, 1)."""
    return gaussian(torch.tensor([mean], dtype=torch.float64), std)


def mixture_2d() -> GaussianMixture:
    """Two anisotropic components with unequal weights, on states (B, 2)."""
    means = torch.tensor([[-1.5, 0.5], [1.0, -0.5]], dtype=torch.float64)
    cov = torch.tensor(
        [[[0.3, 0.1], [0.1, 0.2]], [[0.15, -0.05], [-0.05, 0.25]]], dtype=torch.float64
    )
    return GaussianMixture(means, covariances=cov, weights=torch.tensor([0.3, 0.7]))


def image_gaussian(shape=(1, 4, 4)) -> GaussianMixture:
    """An isotropic two-component mixture on image-shaped states (B, C, H, W)."""
    g = torch.Generator().manual_seed(0)
    means = 0.5 * torch.randn(2, *shape, generator=g, dtype=torch.float64)
    return GaussianMixture(means, torch.tensor([0.3, 0.5]))


EIGHT_GAUSSIANS = eight_gaussians  # radius 4, std 0.5


def sharp_mixture(shape=(16,), components=8, std=0.004, seed=0) -> GaussianMixture:
    """Image-like data: `components` isotropic modes uniform on [-1, 1]^D, std 0.004.

    As sharp as 8-bit images scaled to [-1, 1] (a bin is 2/256 ~ 0.008 wide): near t = eps the
    divergence of the PF ODE is of order d g^2 / (2 std^2), the hard case for likelihoods.
    """
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(components, *shape, generator=g, dtype=torch.float64) * 2 - 1
    return GaussianMixture(means, std)


def likelihood_error_bpd(data, sde, x, res, eps=1e-5) -> torch.Tensor:
    """Per-point error of `likelihood`'s log p in bits/dim, against the oracle, `(B,)`.

    The exact value for the returned latent z: log p_eps(x) + log pi(z) - log p_T(z) (the PF
    ODE with the exact score maps p_eps onto p_T; the prior mismatch at z is added back).
    """
    d = x[0].numel()
    exact = (
        data.marginal_log_prob(x, eps, sde)
        + sde.prior_logp(res.latent)
        - data.marginal_log_prob(res.latent, sde.T, sde)
    )
    return (res.log_prob - exact) / (d * math.log(2))


def cosine_alpha(t: torch.Tensor) -> torch.Tensor:
    return torch.cos(0.5 * math.pi * t)


def cosine_sigma(t: torch.Tensor) -> torch.Tensor:
    return torch.sin(0.5 * math.pi * t)


def make_flow_sdes() -> dict[str, sdescore.GaussianSDE]:
    """SDEs given by their kernel: rectified flow (plain and with sigma_min) and a cosine
    schedule written as alpha, sigma (derivatives by autograd)."""
    return {
        "rectified_flow": sdescore.RectifiedFlowSDE(),
        "rectified_flow_smin": sdescore.RectifiedFlowSDE(0.01),
        "alpha_sigma_cosine": sdescore.AlphaSigmaSDE(cosine_alpha, cosine_sigma, T=0.999),
    }


class CubicSDE(sdescore.SDE):
    """dx = -x^3 dt + dw: not a Gaussian-kernel SDE (no closed-form kernel, no log-SNR)."""

    def drift(self, x, t):
        return -x.pow(3)

    def diffusion(self, t):
        return torch.ones_like(t)

    @property
    def prior_std(self):
        return 1.0


def tiny_unet(dtype=torch.float64):
    """A small diffusers `UNet2DModel` for 1x8x8 images, random weights (seed 0), eval mode: a
    consistency check between libraries, not a trained model. Needs the diffusers extra."""
    import diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    return unet.to(dtype).eval()
