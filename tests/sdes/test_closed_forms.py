"""Marginals of VP, sub-VP and VE against closed forms evaluated in 50-digit decimal arithmetic.

The tolerance 1e-12 (relative) is well below the error of a naive `sqrt(1 - alpha**2)` in float64
for t ~ 1e-6 (about 5e-10), so these tests prove the `expm1` care and not just the formula.
"""

import math
from decimal import Decimal, getcontext

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sdescore

# These check the kernel's mathematics over random schedules, most far from their prior at T.
pytestmark = pytest.mark.filterwarnings("ignore:.*far from the prior:UserWarning")

getcontext().prec = 50

betas = st.tuples(st.floats(0.0, 5.0), st.floats(0.01, 40.0)).map(lambda b: (b[0], b[0] + b[1]))
times = st.one_of(st.floats(1e-7, 1e-4), st.floats(1e-4, 1.0))


def _log_alpha_vp(beta_min, beta_max, t):
    b0, b1, t = Decimal(beta_min), Decimal(beta_max), Decimal(t)
    return -Decimal("0.25") * t * t * (b1 - b0) - Decimal("0.5") * t * b0


def _rel(a: torch.Tensor, ref: Decimal) -> float:
    return abs((Decimal(a.item()) - ref) / ref)


@given(betas, times)
def test_vp_marginal_matches_high_precision(b, t):
    sde = sdescore.VPSDE(*b)
    x0 = torch.tensor([[1.0]], dtype=torch.float64)
    mean, std = sde.marginal_prob(x0, t)
    alpha = _log_alpha_vp(*b, t).exp()
    assert _rel(mean[0, 0], alpha) < 1e-12
    assert _rel(std[0], (1 - alpha * alpha).sqrt()) < 1e-12
    # g^2 = beta(t)
    g = sde.diffusion(torch.tensor([t], dtype=torch.float64))
    beta = Decimal(b[0]) + Decimal(t) * (Decimal(b[1]) - Decimal(b[0]))
    assert _rel(g[0], beta.sqrt()) < 1e-13


@given(betas, times)
def test_subvp_marginal_matches_high_precision(b, t):
    sde = sdescore.SubVPSDE(*b)
    x0 = torch.tensor([[2.0]], dtype=torch.float64)
    mean, std = sde.marginal_prob(x0, t)
    alpha = _log_alpha_vp(*b, t).exp()
    assert _rel(mean[0, 0], 2 * alpha) < 1e-12
    assert _rel(std[0], 1 - alpha * alpha) < 1e-12
    g = sde.diffusion(torch.tensor([t], dtype=torch.float64))
    beta = Decimal(b[0]) + Decimal(t) * (Decimal(b[1]) - Decimal(b[0]))
    assert _rel(g[0], (beta * (1 - alpha**4)).sqrt()) < 1e-12


@given(st.floats(1e-3, 1.0), st.floats(1.5, 1e4), times)
def test_ve_marginal_matches_high_precision(sigma_min, ratio, t):
    sde = sdescore.VESDE(sigma_min, sigma_min * ratio)
    x0 = torch.tensor([[-3.0]], dtype=torch.float64)
    mean, std = sde.marginal_prob(x0, t)
    assert mean[0, 0].item() == -3.0
    log_r = (Decimal(sde.sigma_max) / Decimal(sigma_min)).ln()
    sigma = Decimal(sigma_min) * (Decimal(t) * log_r).exp()
    assert _rel(std[0], sigma) < 1e-13
    g = sde.diffusion(torch.tensor([t], dtype=torch.float64))
    assert _rel(g[0], sigma * (2 * log_r).sqrt()) < 1e-13


def test_std_positive_and_finite_on_whole_interval():
    t = torch.cat([torch.tensor([0.0, 1e-12, 1e-9]), torch.linspace(0, 1, 1001)]).double()
    for sde in (sdescore.VPSDE(), sdescore.SubVPSDE(), sdescore.VESDE()):
        x0 = torch.ones(t.shape[0], 3, dtype=torch.float64)
        mean, std = sde.marginal_prob(x0, t)
        assert torch.isfinite(mean).all() and torch.isfinite(std).all()
        assert (std[t > 0] > 0).all()
        assert torch.isfinite(sde.diffusion(t)).all()


def test_priors_match_song_et_al():
    assert sdescore.VPSDE().prior_std == 1.0
    assert sdescore.SubVPSDE().prior_std == 1.0
    assert abs(sdescore.VESDE(0.01, 50.0).prior_std - 50.0) < 1e-12
    # the VP marginal at T of unit-variance data is N(0, 1) exactly: alpha^2 + sigma^2 = 1
    sde = sdescore.VPSDE()
    t = torch.tensor(1.0, dtype=torch.float64)  # a Python float means torch's default dtype
    assert abs((sde.alpha(t) ** 2 + sde.sigma(t) ** 2).item() - 1.0) < 1e-15


def test_subvp_sigma_derivative_at_zero_is_its_limit_beta_min():
    # sigma = 1 - alpha^2, so sigma' = beta alpha^2 -> beta_min; the generic f sigma + g^2/(2 sigma)
    # was 0/0 = NaN at t = 0 exactly (and 0.1 at t = 1e-300).
    for b0, b1 in ((0.1, 20.0), (0.0, 5.0)):
        t = torch.tensor([0.0, 1e-300, 0.3], dtype=torch.float64)
        da, ds = sdescore.SubVPSDE(b0, b1).alpha_sigma_derivatives(t)
        la = -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0
        beta = b0 + t * (b1 - b0)
        assert torch.allclose(ds, beta * torch.exp(2 * la), rtol=1e-14, atol=0)
        assert torch.allclose(da, -0.5 * beta * torch.exp(la), rtol=1e-14, atol=0)
    # VP's sigma = sqrt(1 - alpha^2) has sigma' -> inf at 0: that stays.
    assert (
        sdescore.VPSDE().alpha_sigma_derivatives(torch.tensor([0.0]).double())[1].item() == math.inf
    )
