"""Bits per dimension and uniform dequantization, on discretised Gaussians of known entropy."""

from __future__ import annotations

import math

import pytest
import torch

import sdescore
from sdescore.dequantization import dequantize
from sdescore.toy import gaussian

F64 = torch.float64
MU, S = 0.1, 0.2  # per-coordinate data N(MU, S^2); the range (-1, 1) lies 4.5 S from it


def setup(bins, n, seed=0):
    """Data, SDE, exact score, and n discrete samples k = floor((y - a) / w) of y ~ data."""
    data = gaussian(torch.full((2,), MU, dtype=F64), S)
    sde = sdescore.VPSDE()
    y = data.sample(n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    w = 2.0 / bins
    k = torch.floor((y + 1) / w).clamp(0, bins - 1)
    return data, sde, k, w


def bin_probs(bins):
    """Exact per-coordinate bin probabilities P_k and cell centres c_k."""
    w = 2.0 / bins
    edges = -1 + w * torch.arange(bins + 1, dtype=F64)
    cdf = 0.5 * (1 + torch.erf((edges - MU) / (S * math.sqrt(2))))
    return cdf[1:] - cdf[:-1], edges[:-1] + w / 2


def jensen_mean(k, bins):
    """E_u[log p(a + w(k + u))] + d log w per point, in closed form (Gaussian, uniform u)."""
    w = 2.0 / bins
    c = -1 + w * (k + 0.5)
    per = -0.5 * math.log(2 * math.pi * S**2) - ((c - MU) ** 2 + w**2 / 12) / (2 * S**2)
    return (per + math.log(w)).sum(1)


def test_continuous_bits_per_dim():
    data, sde, _, _ = setup(8, 4)
    x = data.sample(5, dtype=F64)
    res = sdescore.likelihood(data.score_fn(sde), x, sde=sde, estimator="exact")
    torch.testing.assert_close(res.bits_per_dim, -res.log_prob / (2 * math.log(2)))


def test_offset_is_log2_bins_over_range():
    """8-bit data on [-1, 1]: bits/dim = -log p(y) / (d ln 2) + log2(256 / 2) = ... + 7."""
    data, sde, k, _ = setup(256, 64)
    res = sdescore.likelihood(data.score_fn(sde), k, sde=sde, estimator="exact", generator=torch.Generator().manual_seed(1), dequantization=256)  # fmt: skip
    assert res.log_prob.dtype == F64
    cont = res.prior_log_prob + res.delta_log_prob
    torch.testing.assert_close(res.bits_per_dim, -cont / (2 * math.log(2)) + 7.0)
    # The dequantized point lies in its bin, and its log p is the exact density there once the
    # prior mismatch log pi(z) - log p_T(z) (~3e-3 here) is taken out.
    y = res.dequantized
    assert ((y + 1) / (2 / 256) - k).min() >= 0 and ((y + 1) / (2 / 256) - k).max() < 1
    mismatch = res.prior_log_prob - data.marginal_log_prob(res.latent, sde.T, sde)
    assert (cont - mismatch - data.marginal_log_prob(y, 1e-5, sde)).abs().max() < 1e-3
    # uint8 levels (dequantized in the default dtype) on [0, 1]: the offset is log2(256) = 8.
    r01 = sdescore.likelihood(
        data.score_fn(sde),
        k.to(torch.uint8),
        sde=sde,
        dequantization=sdescore.Dequantization(256, data_range=(0.0, 1.0)),
    )
    assert r01.log_prob.dtype == torch.get_default_dtype()
    cont01 = r01.prior_log_prob + r01.delta_log_prob
    torch.testing.assert_close(r01.bits_per_dim, -cont01 / (2 * math.log(2)) + 8.0)


def test_dequantized_bound_against_the_known_discrete_entropy():
    """E[-log P_hat] has a closed form (Jensen) lying above the entropy H; S draws tighten it."""
    bins, n = 8, 512
    data, sde, k, w = setup(bins, n, seed=2)
    p, _ = bin_probs(bins)
    H = -2 * (p * p.log()).sum()  # two independent coordinates
    kk = torch.arange(bins, dtype=F64)
    expected_gap_bound = -2 * (p * jensen_mean(torch.stack([kk, kk], 1), bins) / 2).sum()
    assert expected_gap_bound > H  # Jensen: the S = 1 bound is loose on average

    kw = dict(sde=sde, estimator="exact")
    one = sdescore.likelihood(
        data.score_fn(sde), k, generator=torch.Generator().manual_seed(3), dequantization=bins, **kw
    )
    # Per point: estimate minus its closed-form expectation has mean 0 (u-noise only).
    diff = one.log_prob - jensen_mean(k, bins)
    assert diff.mean().abs() < 4 * diff.std() / math.sqrt(n) + 1e-3  # 1e-3: ODE and prior
    # Over the data: -mean log P_hat estimates E[-log P_hat], which is H + Jensen gap.
    nll = -one.log_prob
    se = nll.std() / math.sqrt(n)
    assert (nll.mean() - expected_gap_bound).abs() < 4 * se
    # Importance-weighted dequantization with 8 draws: a tighter bound, paired per point.
    eight = sdescore.likelihood(
        data.score_fn(sde), k, dequantization=sdescore.Dequantization(bins, samples=8),
        generator=torch.Generator().manual_seed(4), **kw,
    )  # fmt: skip
    gain = eight.log_prob - one.log_prob
    assert gain.mean() > 4 * gain.std() / math.sqrt(n)
    exact_logP = (p[k.long()]).log().sum(1)
    assert (eight.log_prob - exact_logP).mean() < 4 * gain.std() / math.sqrt(n)
    assert eight.nfe > 7 * one.nfe


def test_dequantize_and_bad_levels():
    k = torch.tensor([[0, 3], [1, 2]])
    y, log_w = dequantize(k, 4, (0.0, 2.0), generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.get_default_dtype() and log_w == pytest.approx(math.log(0.5))
    assert ((y - 0.5 * k) >= 0).all() and ((y - 0.5 * k) < 0.5).all()
    data, sde, _, _ = setup(8, 2)
    score = data.score_fn(sde)
    with pytest.raises(ValueError, match=r"must lie in \[0, 7\]"):
        sdescore.likelihood(score, torch.tensor([[8.0, 0.0]]), sde=sde, dequantization=8)
    # the message names the bin count and what was received (it printed "bins=..." literally)
    with pytest.raises(
        ValueError,
        match=r"with bins=8, x must hold the integer levels 0 \.\. 7; "
        r"got non-integer values \(up to 0\.5 .*range \[0, 0\.5\]",
    ):
        sdescore.likelihood(score, torch.tensor([[0.5, 0.0]]), sde=sde, dequantization=8)
    with pytest.raises(ValueError, match="bins must be an int >= 2"):
        sdescore.likelihood(score, torch.tensor([[0.0, 0.0]]), sde=sde, dequantization=1)
    with pytest.raises(ValueError, match="a < b"):
        sdescore.likelihood(
            score,
            torch.tensor([[0.0, 0.0]]),
            sde=sde,
            dequantization=sdescore.Dequantization(8, data_range=(1, 0)),
        )
    with pytest.raises(TypeError, match=r"dequantization_samples= is now .*Dequantization"):
        sdescore.likelihood(score, torch.zeros(1, 2), sde=sde, dequantization_samples=2)
    with pytest.raises(ValueError, match="samples must be an int >= 1"):
        sdescore.Dequantization(8, samples=0)
    with pytest.raises(TypeError, match="dequantization must be None"):
        sdescore.likelihood(score, torch.zeros(1, 2), sde=sde, dequantization=8.0)
