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
