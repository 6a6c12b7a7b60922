"""Marginals against Monte Carlo of the forward SDE (Euler-Maruyama, fixed seed).

20000 paths of 1000 steps from a fixed x0: the standard error of the mean is sigma/141 and of the
std sigma/200; the Euler-Maruyama weak bias is O(dt) = O(1e-3). We allow 4 standard errors plus
2e-3 * sigma for the bias, and a KS test of the standardised values at level 1e-3.
"""

import math

import pytest
import torch
from scipy import stats

from problems import make_sdes

SDES = make_sdes()
N_PATHS, N_STEPS = 20000, 1000


@pytest.mark.parametrize("name", sorted(SDES))
def test_euler_maruyama_matches_the_kernel(name):
    sde = SDES[name]
    g = torch.Generator().manual_seed(1234)
    x0 = torch.full((N_PATHS, 1), 1.5, dtype=torch.float64)
    x = x0.clone()
    if name == "ve":  # SMLD convention: the kernel at t = 0 already has std sigma_min
        x = x + sde.sigma_min * torch.randn(x.shape, generator=g, dtype=x.dtype)
    t_end = 0.6 * sde.T
    dt = t_end / N_STEPS
    for i in range(N_STEPS):
        t = torch.full((N_PATHS,), i * dt, dtype=torch.float64)
        noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
        x = x + sde.drift(x, t) * dt + sde.diffusion(t)[:, None] * math.sqrt(dt) * noise
    mean, std = sde.marginal_prob(x0[:1], t_end)
    m, s = mean.item(), std.item()
    se_mean, se_std = s / math.sqrt(N_PATHS), s / math.sqrt(2 * N_PATHS)
    assert abs(x.mean().item() - m) < 4 * se_mean + 2e-3 * s
    assert abs(x.std().item() - s) < 4 * se_std + 2e-3 * s
    assert stats.kstest(((x.squeeze(1) - m) / s).numpy(), "norm").pvalue > 1e-3
