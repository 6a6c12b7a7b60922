"""SDE-DPM-Solver++ (Lu et al. 2022b): the stochastic exponential integrator of the reverse SDE."""

from __future__ import annotations

import math

import pytest
import torch

import sdescore

F64 = torch.float64
SDE = sdescore.VPSDE(0.1, 20.0)
DATA = sdescore.toy.eight_gaussians()


def _prior(n, seed=0):
    return SDE.prior_sampling((n, 2), generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_eta_zero_first_order_is_dpm_solver_pp1():
    """With eta = 0 the update is DPM-Solver++1 (DDIM) on the same log-SNR grid."""
    score = DATA.score_fn(SDE)
    z = _prior(256)
    ours = SDE.reverse(score).sample(
        x_T=z, method=sdescore.SDEDPMSolver(order=1, eta=0.0), steps=12
    )
    ref = SDE.probability_flow(score).sample(
        x_T=z,
        method=sdescore.DPMSolver(order=1, multistep=False, schedule="logsnr", prediction="data"),
        steps=12,
    )
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_eta_zero_second_order_converges_at_order_two():
    """The deterministic limit of 2M is a second-order ODE solver (log-log slope 2 +- 0.3)."""
    score = DATA.score_fn(SDE)
    z = _prior(512, seed=1)
    flow = SDE.probability_flow(score)
    ref = flow.sample(x_T=z, method="dopri5", rtol=1e-10, atol=1e-10)
    steps = [40, 80, 160]
    errs = [
        (SDE.reverse(score).sample(x_T=z, method=sdescore.SDEDPMSolver(eta=0.0), steps=n) - ref)
        .abs()
        .mean()
        .item()
        for n in steps
    ]
    slope = -(math.log(errs[-1]) - math.log(errs[0])) / (math.log(steps[-1]) - math.log(steps[0]))
    assert abs(slope - 2) < 0.3, (errs, slope)


def test_reverse_sde_samples_have_the_data_law():
    """2M at 100 calls: mean exact log-density and within-mode spread of 8192 samples against
    exact samples (standard error of each mean about 0.011; tolerance 0.04)."""
    rev = SDE.reverse(DATA.score_fn(SDE))
    g = torch.Generator().manual_seed(3)
    x = rev.sample((8192, 2), method="sde_dpm_solver", steps=100, generator=g, dtype=F64)
    exact = DATA.sample(8192, generator=torch.Generator().manual_seed(4), dtype=F64)
    assert abs(DATA.log_prob(x).mean() - DATA.log_prob(exact).mean()) < 0.04
    # Within-mode spread: distance to the nearest mode centre (radius 4, 8 modes).
    angles = torch.arange(8, dtype=F64) * (2 * math.pi / 8)
    centres = 4 * torch.stack([angles.cos(), angles.sin()], 1)
    spread = torch.cdist(x, centres).min(1).values.square().mean().sqrt()
    spread_exact = torch.cdist(exact, centres).min(1).values.square().mean().sqrt()
    assert abs(spread - spread_exact) < 0.02, (spread, spread_exact)


def test_fifty_calls_reach_the_monte_carlo_floor():
    """At 50 calls the mean exact log-density of 32768 samples matches the data's (its expectation
    from 2^18 exact draws) within 0.03, about 3 standard errors. Measured (two seeds of 8192):
    2M +0.005 at 50 calls, where Euler-Maruyama is -0.023 and PC -0.19."""
    rev = SDE.reverse(DATA.score_fn(SDE))
    target = DATA.log_prob(
        DATA.sample(2**18, generator=torch.Generator().manual_seed(5), dtype=F64)
    ).mean()
    g = torch.Generator().manual_seed(6)
    x = rev.sample((32768, 2), method="sde_dpm_solver", steps=50, generator=g, dtype=F64)
    assert abs(DATA.log_prob(x).mean() - target) < 0.03


def test_options_and_bad_inputs():
    rev = SDE.reverse(DATA.score_fn(SDE))
    g = torch.Generator().manual_seed(0)
    info = rev.sample((64, 2), method="sde_dpm_solver", steps=25, generator=g, return_info=True)
    assert info.nfe == 25 and torch.isfinite(info.samples).all()
    a = rev.sample(
        (64, 2),
        method=sdescore.SDEDPMSolver(),
        steps=25,
        generator=torch.Generator().manual_seed(1),
    )
    b = rev.sample(
        (64, 2), method="sde_dpm_solver", steps=25, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(a, b)
    for bad in ({"order": 3}, {"eta": 1.5}, {"eta": "one"}, {"schedule": "karras"}):
        with pytest.raises(ValueError):
            sdescore.SDEDPMSolver(**bad)

    class Plain(sdescore.SDE):
        T = 1.0
        prior_std = 1.0

        def drift(self, x, t):
            return -0.5 * x

        def diffusion(self, t):
            return torch.ones_like(torch.as_tensor(t, dtype=F64))

    with pytest.raises(TypeError, match="GaussianSDE"):
        Plain().reverse(lambda x, t: -x).sample((4, 2), method="sde_dpm_solver", steps=5)
