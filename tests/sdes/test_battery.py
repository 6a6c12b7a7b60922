"""One battery applied to every SDE the library ships: shapes, dtypes, prior, log-SNR, drift."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sdescore

from problems import make_flow_sdes, make_sdes

SDES = {**make_sdes(), **make_flow_sdes()}
SHAPES = [(5,), (5, 3), (5, 2, 4, 4)]


@pytest.fixture(params=sorted(SDES))
def sde(request):
    return SDES[request.param]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtypes_follow_the_input(sde, shape, dtype):
    x = torch.randn(shape, dtype=dtype)
    t = torch.rand(shape[0], dtype=dtype) * sde.T
    x_before = x.clone()
    drift = sde.drift(x, t)
    assert drift.shape == x.shape and drift.dtype == dtype
    assert sde.diffusion(t).shape == t.shape and sde.diffusion(t).dtype == dtype
    mean, std = sde.marginal_prob(x, t)
    assert mean.shape == x.shape and std.shape == (shape[0],)
    assert mean.dtype == dtype and std.dtype == dtype
    xt, z, s = sde.perturb(x, t, generator=torch.Generator().manual_seed(0))
    assert xt.shape == x.shape and z.shape == x.shape and s.dtype == dtype
    assert sde.prior_logp(x).shape == (shape[0],)
    prior = sde.prior_sampling(shape, dtype=dtype)
    assert prior.shape == shape and prior.dtype == dtype
    assert torch.equal(x, x_before)  # the caller's tensor is untouched


def test_drift_is_linear_and_float_time_broadcasts(sde):
    x = torch.randn(4, 3, dtype=torch.float64)
    t = 0.37 * sde.T
    f = sde.drift_coeff(torch.tensor(t, dtype=torch.float64))
    assert torch.allclose(sde.drift(x, t), f * x, rtol=1e-14)
    drift, diffusion = sde.sde(x, torch.full((4,), t, dtype=torch.float64))
    assert torch.allclose(drift, f * x) and diffusion.shape == (4,)


def test_perturb_is_mean_plus_std_times_noise(sde):
    x0 = torch.randn(6, 2, dtype=torch.float64)
    t = torch.linspace(0.1, 1, 6, dtype=torch.float64) * sde.T
    noise = torch.randn_like(x0)
    xt, z, std = sde.perturb(x0, t, noise=noise)
    mean, std2 = sde.marginal_prob(x0, t)
    assert torch.equal(z, noise)
    assert torch.allclose(xt, mean + std2[:, None] * noise, rtol=1e-15)


def test_perturb_is_reproducible_with_a_generator(sde):
    x0 = torch.zeros(3, 2, dtype=torch.float64)
    a = sde.perturb(x0, 0.5 * sde.T, generator=torch.Generator().manual_seed(3))[0]
    b = sde.perturb(x0, 0.5 * sde.T, generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b)


def test_prior_logp_is_a_normalised_density(sde):
    s = sde.prior_std
    # 1-d: trapezoid over +-12 prior stds; 2-d: the product grid
    u = torch.linspace(-12 * s, 12 * s, 4001, dtype=torch.float64)
    p1 = sde.prior_logp(u[:, None]).exp()
    assert abs(torch.trapezoid(p1, u).item() - 1) < 1e-10
    grid = torch.stack(torch.meshgrid(u[::8], u[::8], indexing="ij"), -1).reshape(-1, 2)
    p2 = sde.prior_logp(grid).exp().reshape(501, 501)
    total = torch.trapezoid(torch.trapezoid(p2, u[::8]), u[::8])
    assert abs(total.item() - 1) < 1e-8
    # and it is the log-density of N(0, s^2 I), with the prior sampler matching it
    z = sde.prior_sampling(
        (20000, 1), generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    assert abs(z.std().item() / s - 1) < 4 / math.sqrt(2 * 20000)


@given(st.floats(0.0, 1.0))
def test_log_snr_inverse_round_trip(frac):
    for sde in SDES.values():
        t = torch.tensor([max(frac * sde.T, 1e-4)], dtype=torch.float64)
        lam = sde.log_snr(t)
        assert torch.allclose(sde.t_from_log_snr(lam), t, rtol=1e-9, atol=1e-12)
        # lambda = log alpha - log sigma, and it decreases in t
        assert torch.allclose(lam, sde.log_alpha(t) - sde.sigma(t).log(), rtol=1e-12)
        assert (sde.log_snr(t * 0.99) > lam).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_t_from_log_snr_outside_the_range_gives_the_end_and_nan_is_refused(sde, dtype):
    # Issue 25, item 2: SubVP gave NaN at 1e6 and +-inf, VP at -inf, LinearSDE a plausible
    # 4e-19 for NaN. Above lambda(0) is t = 0, below lambda(T) is t = T, for every SDE.
    lo, hi = (v.item() for v in sde.log_snr(torch.tensor([sde.T, 1e-6], dtype=torch.float64)))
    lam = torch.tensor([math.inf, 1e6, hi + 50, lo - 50, -1e6, -math.inf], dtype=dtype)
    t = sde.t_from_log_snr(lam)
    assert t.dtype == dtype and torch.isfinite(t).all()
    assert t[:3].abs().max().item() < 1e-6 and torch.equal(
        t[3:], torch.full((3,), sde.T, dtype=dtype)
    )
    for bad in (float("nan"), torch.tensor([0.0, math.nan], dtype=dtype)):
        with pytest.raises(ValueError, match="lam must not be NaN"):
            sde.t_from_log_snr(bad)


def test_reverse_and_probability_flow_are_built(sde):
    score_fn = sdescore.toy.gaussian(torch.zeros(2, dtype=torch.float64), 1.0).score_fn(sde)
    rev = sde.reverse(score_fn)
    pf1, pf2 = sde.reverse(score_fn, probability_flow=True), sde.probability_flow(score_fn)
    assert isinstance(rev, sdescore.ReverseSDE)
    assert isinstance(pf1, sdescore.ProbabilityFlowODE) and isinstance(
        pf2, sdescore.ProbabilityFlowODE
    )
    assert rev.T == sde.T and pf1.sde is sde
