"""Rectified flow and SDEs from alpha, sigma: closed forms, derived f and g, the end at t -> 1,
the reverse processes against the exact mixture oracle, samplers and likelihood on them."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sdescore
from sdescore import AlphaSigmaSDE, RectifiedFlowSDE

from problems import cosine_alpha, cosine_sigma, likelihood_error_bpd, make_flow_sdes, mixture_2d

F64 = {"dtype": torch.float64}
FLOW = make_flow_sdes()


def _times(sde, n=41, lo=1e-3):
    return torch.linspace(lo, sde.T, n, **F64)


@pytest.mark.parametrize("sigma_min", [0.0, 0.01, 0.3])
def test_rectified_flow_closed_forms(sigma_min):
    sde = RectifiedFlowSDE(sigma_min)
    t = _times(sde)
    sig = sigma_min + (1 - sigma_min) * t
    x0 = torch.randn(41, 3, **F64, generator=torch.Generator().manual_seed(0))
    mean, std = sde.marginal_prob(x0, t)
    assert torch.allclose(mean, (1 - t)[:, None] * x0, rtol=1e-15, atol=0)
    assert torch.allclose(std, sig, rtol=1e-15, atol=0)
    assert torch.allclose(sde.drift_coeff(t), -1 / (1 - t), rtol=1e-15, atol=0)
    assert torch.allclose(sde.diffusion(t).square(), 2 * sig / (1 - t), rtol=1e-14, atol=0)
    assert torch.allclose(sde.log_snr(t), torch.log((1 - t) / sig), rtol=1e-13, atol=1e-15)
    da, ds = sde.alpha_sigma_derivatives(t)
    assert torch.equal(da, -torch.ones_like(t)) and torch.allclose(ds, 1 - sigma_min + 0 * t)
    # the prior: the marginal scale at T of unit-variance data
    assert sde.prior_std == pytest.approx(math.hypot(1 - sde.T, sig[-1].item()), rel=1e-15)
    t0 = torch.zeros((), **F64)
    assert sde.sigma(t0).item() == sigma_min and sde.alpha(t0).item() == 1.0


@pytest.mark.parametrize("name", sorted(FLOW))
def test_f_and_g_are_the_derivatives_of_the_marginals(name):
    # f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2 (central differences, float64)
    sde = FLOW[name]
    t = torch.linspace(0.01, sde.T - 0.01, 33, **F64)
    h = 1e-6
    dla = (sde.log_alpha(t + h) - sde.log_alpha(t - h)) / (2 * h)
    f = sde.drift_coeff(t)
    assert torch.allclose(dla, f, rtol=1e-7, atol=0)
    dvar = (sde.sigma(t + h).square() - sde.sigma(t - h).square()) / (2 * h)
    g2 = dvar - 2 * f * sde.sigma(t).square()
    assert torch.allclose(sde.diffusion(t).square(), g2, rtol=1e-7, atol=1e-12)
    # and the generic derivatives (from f, g) agree with the leaf's
    da, ds = sde.alpha_sigma_derivatives(t)
    assert torch.allclose(da, f * sde.alpha(t), rtol=1e-12)
    generic = f * sde.sigma(t) + 0.5 * sde.diffusion(t).square() / sde.sigma(t)
    assert torch.allclose(ds, generic, rtol=1e-12)


def test_alpha_sigma_with_autograd_equals_given_derivatives_and_the_closed_form():
    rf = RectifiedFlowSDE(0.01)
    auto = AlphaSigmaSDE(lambda t: 1 - t, lambda t: 0.01 + 0.99 * t, T=0.999)
    given_d = AlphaSigmaSDE(
        lambda t: 1 - t,
        lambda t: 0.01 + 0.99 * t,
        alpha_prime=lambda t: -torch.ones_like(t),
        sigma_prime=lambda t: torch.full_like(t, 0.99),
        T=0.999,
    )
    t = _times(rf)
    for sde in (auto, given_d):
        for name in ("drift_coeff", "diffusion", "alpha", "sigma", "log_snr"):
            a, b = getattr(sde, name)(t), getattr(rf, name)(t)
            assert torch.allclose(a, b, rtol=1e-13, atol=1e-15), name
        assert torch.allclose(sde.t_from_log_snr(rf.log_snr(t)), t, rtol=0, atol=1e-13)
        assert sde.prior_std == pytest.approx(rf.prior_std, rel=1e-15)
    # the cosine schedule is variance preserving: g^2 = -2 f = pi tan(pi t / 2)
    cos = FLOW["alpha_sigma_cosine"]
    assert torch.allclose(
        cos.diffusion(t).square(), math.pi * torch.tan(0.5 * math.pi * t), rtol=1e-12
    )
    # float32 times give float32 coefficients
    assert auto.drift_coeff(t.float()).dtype == torch.float32


def test_alpha_sigma_agrees_with_linear_sde_built_from_its_f_and_g():
    # LinearSDE integrates f, g numerically: an independent route back to alpha, sigma.
    cos = FLOW["alpha_sigma_cosine"]
    lin = sdescore.LinearSDE(cos.drift_coeff, cos.diffusion, T=cos.T)
    t = _times(cos)
    assert torch.allclose(lin.alpha(t), cosine_alpha(t), rtol=1e-9)
    assert torch.allclose(lin.sigma(t), cosine_sigma(t), rtol=1e-8)


@given(st.floats(-40.0, 40.0), st.sampled_from([0.0, 0.01, 0.5]))
def test_log_snr_inverse_is_closed_form_and_finite(lam, sigma_min):
    sde = RectifiedFlowSDE(sigma_min)
    t = sde.t_from_log_snr(torch.tensor([lam], **F64))
    assert torch.isfinite(t).all() and 0 <= t.item() <= sde.T
    lam_lo, lam_hi = sde.log_snr(torch.tensor([sde.T, 0.0], **F64)).tolist()
    if lam_lo < lam < lam_hi:
        assert sde.log_snr(t).item() == pytest.approx(lam, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"T": 1.0}, r"T must be < 1, got T = 1.0: alpha\(1\) = 0"),
        ({"T": 1.5}, "T must be < 1"),
        ({"sigma_min": 1.0}, r"sigma_min must lie in \[0, 1\)"),
        ({"sigma_min": -0.1}, "sigma_min must be >= 0"),
    ],
)
def test_rectified_flow_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RectifiedFlowSDE(**kwargs)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((lambda t: 2 - t, lambda t: t), {}, ValueError, r"alpha\(0\) must be 1"),
        # alpha = 0 at T = 1: f = alpha'/alpha is infinite
        ((lambda t: 1 - t, lambda t: t), {"T": 1.0}, ValueError, r"alpha\(t\) = 0 at t = 1"),
        # log-SNR increases: sigma shrinks while alpha stays 1
        ((lambda t: 1 + 0 * t, lambda t: 1 - 0.5 * t), {}, ValueError, "g\\(t\\)\\^2 .* negative"),
        ((lambda t: 1 - 0.5 * t, lambda t: 0 * t), {}, ValueError, r"sigma\(t\) = 0 at t = 0.0039"),
        ((lambda t: 1 - 0.5 * t, 3), {}, TypeError, "sigma must be callable"),
        ((lambda t: 1 - 0.5 * t, lambda t: t), {"sigma_prime": 2}, TypeError, "sigma_prime"),
    ],
)
def test_alpha_sigma_bad_schedules_are_refused(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        AlphaSigmaSDE(*args, **kwargs)


def test_prior_mismatch_at_T_is_within_the_stated_bound():
    # KL(p_T || prior) by quadrature on a 2-d grid for eight Gaussians (E|x0|^2 = 16.5), against
    # the convexity bound of RectifiedFlowSDE's docstring; and against its second-order value for
    # data of per-coordinate variance c = 8.25: p_T is nearly N(0, sigma^2 + alpha^2 c), so
    # KL ~ d/4 (alpha^2 (c - 1) / s^2)^2, far below the bound (the modes' offsets average out).
    data = sdescore.toy.eight_gaussians()
    u = torch.linspace(-7, 7, 701, **F64)
    grid = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    for T in (0.95, 0.99, 0.999):
        sde = RectifiedFlowSDE(T=T)
        logp = data.marginal_log_prob(grid, T, sde)
        integrand = (logp.exp() * (logp - sde.prior_logp(grid))).reshape(701, 701)
        kl = torch.trapezoid(torch.trapezoid(integrand, u), u).item()
        bound = sde.prior_mismatch_bound(16.0 + 2 * 0.25, 2)
        assert kl <= bound, (T, kl, bound)
        second_order = 0.5 * ((1 - T) ** 2 * 7.25 / sde.prior_std**2) ** 2
        if T < 0.999:  # at 0.999 the KL (3e-11) is below the quadrature's resolution
            assert kl == pytest.approx(second_order, rel=0.05), (T, kl, second_order)
    assert RectifiedFlowSDE().prior_mismatch_bound(16.5, 2) < 1e-5


def _posterior(data, sde, x, t):
    """E[x0 | x_t] and E[eps | x_t] from the exact score (Tweedie)."""
    s = data.marginal_score(x, t, sde)
    a, sig = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    return (x + sig.square() * s) / a, -sig * s


@pytest.mark.parametrize("name", sorted(FLOW))
def test_reverse_processes_against_the_mixture_oracle(name):
    # The PF drift with the exact score is the flow-matching velocity E[a' x0 + s' eps | x_t];
    # the reverse SDE's drift is 2 * PF drift - f x.
    sde, data = FLOW[name], mixture_2d()
    x = torch.randn(64, 2, **F64, generator=torch.Generator().manual_seed(0)) * 2
    t = torch.rand(64, **F64, generator=torch.Generator().manual_seed(1)) * (sde.T - 0.01) + 0.01
    pf = sde.probability_flow(data.score_fn(sde))
    rev = sde.reverse(data.score_fn(sde))
    x0_hat, eps_hat = _posterior(data, sde, x, t)
    da, ds = sde.alpha_sigma_derivatives(t)
    u = da[:, None] * x0_hat + ds[:, None] * eps_hat
    assert torch.allclose(pf.drift(x, t), u, rtol=1e-9, atol=1e-9)
    f = sde.drift_coeff(t)[:, None]
    assert torch.allclose(rev.drift(x, t), 2 * u - f * x, rtol=1e-9, atol=1e-8)


def test_fokker_planck_holds_for_the_oracle():
    r"""$\partial_t \log p = -fd - f x\cdot s + \tfrac12 g^2(\nabla\cdot s + |s|^2)$, d = 2."""
    sde, data = RectifiedFlowSDE(0.01), mixture_2d()
    x = torch.randn(16, 2, **F64, generator=torch.Generator().manual_seed(2))
    for t in (0.05, 0.5, 0.95):
        h = 1e-6
        lp = data.marginal_log_prob
        dt = (lp(x, t + h, sde) - lp(x, t - h, sde)) / (2 * h)
        xg = x.clone().requires_grad_(True)
        s = data.marginal_score(xg, t, sde)
        div = sum(
            torch.autograd.grad(s[:, i].sum(), xg, retain_graph=True)[0][:, i] for i in (0, 1)
        )
        f = sde.drift_coeff(torch.tensor(t, **F64))
        g2 = sde.diffusion(torch.tensor(t, **F64)).square()
        rhs = -2 * f - f * (x * s).sum(1) + 0.5 * g2 * (div + s.square().sum(1))
        assert torch.allclose(dt, rhs.detach(), rtol=1e-6, atol=1e-6), t


ODE_CASES = {
    "auto": sdescore.Auto(steps=20),
    "unipc": sdescore.UniPC(steps=20),
    "dopri5": sdescore.TorchDiffEq("dopri5", rtol=1e-5, atol=1e-5),
    "heun2": sdescore.TorchDiffEq("heun2", steps=50),
    "euler": sdescore.TorchDiffEq("euler", steps=200),
}


@pytest.mark.parametrize("method", sorted(ODE_CASES))
def test_pf_ode_samplers_reach_the_exact_flow_map(method):
    # Same prior draws through a tight dopri5 reference: the error is the solver's alone.
    sde, data = RectifiedFlowSDE(), sdescore.toy.eight_gaussians()
    pf = sde.probability_flow(data.score_fn(sde))
    z = sde.prior_sampling((256, 2), generator=torch.Generator().manual_seed(0), **F64)
    ref = pf.sample(
        x_T=z,
        method=sdescore.TorchDiffEq("dopri5", rtol=1e-9, atol=1e-9),
    )
    x = pf.sample(x_T=z, method=ODE_CASES[method])
    err = (x - ref).norm(dim=1).mean().item()
    # measured: auto 1.0e-2, unipc 1.2e-2, dopri5 1.8e-4, heun2 5.3e-4, euler 1.2e-2
    assert err < {"dopri5": 1e-3, "heun2": 3e-3}.get(method, 3e-2), (method, err)
    # and the flow map lands on the data: 256 draws, radius-4 modes of std 0.5
    assert abs(x.norm(dim=1).mean().item() - 4.0) < 0.15


@pytest.mark.parametrize("method", ["euler_maruyama", "sde_dpm_solver", "pc"])
def test_reverse_sde_samplers_match_the_data_moments(method):
    sde, data = RectifiedFlowSDE(), mixture_2d()
    rev = sde.reverse(data.score_fn(sde))
    x = rev.sample(
        (2000, 2), method=method, steps=200, generator=torch.Generator().manual_seed(0), **F64
    )
    # 2000 draws: the mean's standard error is <= 0.03 per coordinate (data std <= 1.2); 4 of them
    assert torch.allclose(x.mean(0), data.mean(), atol=0.12), (method, x.mean(0))
    assert torch.allclose(x.std(0), data.covariance().diagonal().sqrt(), rtol=0.08)


def test_likelihood_with_the_exact_score_matches_the_oracle():
    sde, data = RectifiedFlowSDE(), sdescore.toy.eight_gaussians()
    x = data.sample(32, generator=torch.Generator().manual_seed(3), **F64)
    res = sdescore.likelihood(
        data.score_fn(sde), x, sde=sde, estimator="exact", rtol=1e-6, atol=1e-6
    )
    err = likelihood_error_bpd(data, sde, x, res)
    assert err.abs().max() < 1e-5  # measured 4.4e-7
