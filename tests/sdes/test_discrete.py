"""DiscreteVPSDE: the table at the training times, f and g from the marginals, Fokker-Planck on
the oracle, every sampler and the likelihood on it, and clear errors for bad schedules."""

import math

import pytest
import torch

import sdescore
from sdescore import DiscreteVPSDE
from sdescore.solvers import ODE_METHODS, SDE_METHODS
from sdescore.toy import GaussianMixture

from problems import likelihood_error_bpd

N = 1000
BETAS = torch.linspace(1e-4, 0.02, N, dtype=torch.float64)  # Ho et al. (2020)
SDE = DiscreteVPSDE(BETAS)
F64 = {"dtype": torch.float64}


def _mixture_1d() -> GaussianMixture:
    means = torch.tensor([[-0.6], [0.5]], **F64)
    return GaussianMixture(means, torch.tensor([0.15, 0.3]), weights=torch.tensor([0.4, 0.6]))


def test_marginals_reproduce_the_table_at_the_training_times():
    n = torch.arange(1, N + 1, **F64)
    t = n / N
    acp = torch.cumprod(1 - BETAS, 0)
    # betas: log alpha accumulated with log1p; cumprod rounds too, hence 1e-13 and not 1e-16
    assert torch.allclose(SDE.alpha(t).square(), acp, rtol=1e-13, atol=0)
    assert torch.allclose(SDE.alphas_cumprod, acp, rtol=1e-13, atol=0)
    assert torch.allclose(SDE.betas, BETAS, rtol=1e-10, atol=0)
    x0 = torch.randn(N, 3, **F64, generator=torch.Generator().manual_seed(0))
    mean, std = SDE.marginal_prob(x0, t)
    assert torch.allclose(mean, acp.sqrt()[:, None] * x0, rtol=1e-13, atol=0)
    assert torch.allclose(std, (1 - acp).sqrt(), rtol=1e-12, atol=0)
    # a float32 table (as diffusers stores it) is reproduced to float64 rounding
    acp32 = torch.cumprod(1 - BETAS.float(), 0)
    sde32 = DiscreteVPSDE(alphas_cumprod=acp32)
    assert torch.allclose(sde32.alpha(t).square(), acp32.double(), rtol=2e-15, atol=0)
    # data at t = 0, and the numpy/list forms are accepted
    assert SDE.alpha(0.0).item() == 1.0 and SDE.sigma(0.0).item() == 0.0
    assert torch.equal(DiscreteVPSDE(BETAS.numpy()).alphas_cumprod, SDE.alphas_cumprod)
    assert torch.equal(DiscreteVPSDE.linear().alphas_cumprod, SDE.alphas_cumprod)


def test_log_alpha_is_linear_in_t_between_the_nodes():
    k = torch.arange(0, N, **F64)
    u = torch.rand(N, **F64, generator=torch.Generator().manual_seed(1))
    la = SDE.log_alpha((k + u) / N)
    nodes = SDE.log_alpha(torch.arange(0, N + 1, **F64) / N)
    assert torch.allclose(la, nodes[:-1] + u * (nodes[1:] - nodes[:-1]), rtol=1e-12, atol=1e-15)


def test_drift_and_diffusion_are_the_derivatives_of_the_marginals():
    # Inside each step (away from the nodes, where f and g jump): central differences.
    t = (torch.arange(0, N, **F64) + 0.5) / N
    h = 1e-7
    dla = (SDE.log_alpha(t + h) - SDE.log_alpha(t - h)) / (2 * h)
    f = SDE.drift_coeff(t)
    assert torch.allclose(dla, f, rtol=1e-6, atol=0)
    assert torch.allclose(f, 0.5 * N * torch.log1p(-BETAS), rtol=1e-12, atol=0)
    dvar = (SDE.sigma(t + h).square() - SDE.sigma(t - h).square()) / (2 * h)
    g2 = dvar - 2 * f * SDE.sigma(t).square()
    assert torch.allclose(SDE.diffusion(t).square(), g2, rtol=1e-5, atol=0)
    # at a node the coefficients are those of the step that ends there
    node = torch.tensor([1 / N, 0.5, 1.0], **F64)
    idx = torch.tensor([0, N // 2 - 1, N - 1])
    assert torch.allclose(SDE.drift_coeff(node), 0.5 * N * torch.log1p(-BETAS[idx]), rtol=1e-12)
    assert SDE.drift_coeff(torch.zeros((), **F64)).item() == pytest.approx(
        0.5 * N * math.log1p(-1e-4), rel=1e-12
    )


def test_fokker_planck_holds_for_the_oracle():
    r"""$\partial_t \log p = -fd - f x\cdot s + \tfrac12 g^2(\nabla\cdot s + |s|^2)$, d = 1."""
    data = _mixture_1d()
    x = torch.linspace(-2, 2, 9, **F64)[:, None]
    for t in (0.0105, 0.2505, 0.7995):  # inside steps: the marginals are smooth there
        h = 1e-6
        dt = (data.marginal_log_prob(x, t + h, SDE) - data.marginal_log_prob(x, t - h, SDE)) / (
            2 * h
        )
        xg = x.clone().requires_grad_(True)
        s = data.marginal_score(xg, t, SDE)
        (div,) = torch.autograd.grad(s.sum(), xg)
        f = SDE.drift_coeff(torch.tensor(t, **F64))
        g2 = SDE.diffusion(torch.tensor(t, **F64)).square()
        rhs = -f - f * (x * s).sum(1) + 0.5 * g2 * (div.sum(1) + s.square().sum(1))
        assert torch.allclose(dt, rhs.detach(), rtol=1e-6, atol=1e-6), t


def test_log_snr_inverse_and_timestep_map():
    t = torch.rand(2000, **F64, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(SDE.t_from_log_snr(SDE.log_snr(t)), t, rtol=0, atol=1e-12)
    t32 = t.float()
    assert torch.allclose(SDE.t_from_log_snr(SDE.log_snr(t32)), t32, rtol=0, atol=1e-5)
    # clamped outside [lambda(1), lambda(0)]
    ends = SDE.t_from_log_snr(torch.tensor([-100.0, 100.0], **F64))
    assert ends[0].item() == 1.0 and ends[1].item() < 1e-80
    k = torch.arange(N)
    assert torch.allclose(SDE.t_from_timestep(k), (k + 1.0) / N)
    assert torch.allclose(SDE.timestep(SDE.t_from_timestep(k.double())), k.double(), atol=1e-10)
    with pytest.raises(ValueError, match=r"timestep must lie in \[-1, 999\]"):
        SDE.t_from_timestep(1000)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({}, ValueError, "exactly one of betas or alphas_cumprod"),
        ({"betas": BETAS, "alphas_cumprod": BETAS}, ValueError, "exactly one"),
        (
            {"betas": torch.tensor([0.1, 1.0])},
            ValueError,
            r"open interval \(0, 1\).*betas\[1\] = 1",
        ),
        # The hint matches the end that was crossed (it spoke of beta = 1 for beta = 0).
        ({"betas": torch.tensor([0.1, 0.0])}, ValueError, r"betas\[1\] = 0 \(beta <= 0 adds no"),
        ({"betas": torch.tensor([0.1, 1.0])}, ValueError, r"= 1 \(beta = 1 is zero terminal"),
        ({"alphas_cumprod": torch.tensor([0.5, 0.0])}, ValueError, r"= 0 \(alphas_cumprod = 0 is"),
        ({"alphas_cumprod": torch.tensor([1.0, 0.5])}, ValueError, r"= 1 \(alphas_cumprod = 1 is"),
        ({"betas": torch.tensor([0.1, -0.2])}, ValueError, r"betas\[1\] = -0.2"),
        ({"betas": torch.tensor([0.1, float("nan")])}, ValueError, r"finite.*index 1"),
        ({"betas": torch.ones(3, 2) * 0.1}, ValueError, r"1-d tensor \(N,\), got shape \(3, 2\)"),
        ({"betas": torch.tensor([])}, ValueError, "non-empty"),
        ({"betas": "linear"}, TypeError, "1-d tensor or array of numbers, got str"),
        (
            {"alphas_cumprod": torch.tensor([0.9, 0.8, 0.85], **F64)},
            ValueError,
            r"strictly decreasing, got alphas_cumprod\[2\] = 0.85 after 0.8",
        ),
        ({"alphas_cumprod": torch.tensor([0.9, 0.0])}, ValueError, r"alphas_cumprod\[1\] = 0"),
        ({"alphas_cumprod": torch.tensor([1.0, 0.5])}, ValueError, r"alphas_cumprod\[0\] = 1"),
    ],
)
def test_bad_schedules_are_refused_clearly(kwargs, error, match):
    with pytest.raises(error, match=match):
        DiscreteVPSDE(**kwargs)


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((1000, "a", 0.02), TypeError, "beta_start must be a real number, got str"),
        ((1000, 1e-4, None), TypeError, "beta_end must be a real number, got NoneType"),
        ((1000, float("nan"), 0.02), ValueError, "beta_start must be finite"),
        ((0, 1e-4, 0.02), ValueError, "num_timesteps must be an int >= 1"),
        ((1000.0, 1e-4, 0.02), TypeError, "num_timesteps must be an int"),
    ],
)
def test_linear_checks_its_arguments(args, error, match):
    # beta_start = "a" gave torch.linspace's own TypeError.
    with pytest.raises(error, match=match):
        DiscreteVPSDE.linear(*args)


def test_non_monotone_betas_are_a_valid_schedule():
    # Any betas in (0, 1) give a decreasing alphas_cumprod, so nothing requires monotone betas.
    betas = torch.tensor([0.02, 0.01, 0.05, 0.03], **F64)
    with pytest.warns(UserWarning, match="far from the prior"):  # four small steps
        sde = DiscreteVPSDE(betas)
    assert torch.allclose(sde.alphas_cumprod, torch.cumprod(1 - betas, 0), rtol=1e-14)


def test_shapes_and_dtypes_follow_the_input():
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(5, 2, 3, 3, dtype=dtype)
        t = torch.rand(5, dtype=dtype)
        assert SDE.drift(x, t).dtype == dtype and SDE.drift(x, t).shape == x.shape
        assert SDE.diffusion(t).dtype == dtype and SDE.marginal_prob(x, t)[1].shape == (5,)
        assert SDE.t_from_log_snr(SDE.log_snr(t)).dtype == dtype
    assert "num_timesteps=1000" in repr(SDE)


# Small step counts; correctness of each method's law is tested in tests/solvers.
# (with "method" where it is a configured solver object)
SDE_CASES = {
    "pc": {"steps": 20, "method": sdescore.PC(corrector=sdescore.Langevin(steps=1))},
    "annealed_langevin": {"steps": 20, "method": sdescore.AnnealedLangevin(corrector_steps=1)},
    "gotta_go_fast": {"method": sdescore.GottaGoFast(rtol=0.02, atol=0.02)},
}
ODE_CASES = {"dpm_solver": {"steps": 12}}
ADAPTIVE = {"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"}


@pytest.mark.parametrize("method", SDE_METHODS)
def test_every_sde_sampler_runs(method):
    data = _mixture_1d()
    rs = SDE.reverse(data.score_fn(SDE))
    opts = {"method": method, **SDE_CASES.get(method, {"steps": 40})}
    x = rs.sample((400, 1), generator=torch.Generator().manual_seed(0), **F64, **opts)
    assert torch.isfinite(x).all()
    # 400 draws, data std 0.43: the mean's standard error is 0.022; 5 of them, plus step bias
    assert abs(x.mean().item() - data.mean().item()) < 0.15, method


@pytest.mark.parametrize("method", ODE_METHODS)
def test_every_ode_sampler_runs(method):
    data = _mixture_1d()
    pf = SDE.probability_flow(data.score_fn(SDE))
    if method in ADAPTIVE:
        opts = {"method": sdescore.TorchDiffEq(method, rtol=1e-3, atol=1e-3)}
    else:
        opts = {"method": method, **ODE_CASES.get(method, {"steps": 40})}
    x = pf.sample((400, 1), generator=torch.Generator().manual_seed(0), **F64, **opts)
    assert torch.isfinite(x).all()
    assert abs(x.mean().item() - data.mean().item()) < 0.15, method


def test_pf_ode_moments_match_the_data():
    data = _mixture_1d()
    pf = SDE.probability_flow(data.score_fn(SDE))
    x = pf.sample((4000, 1), steps=30, generator=torch.Generator().manual_seed(5), **F64)
    ref = data.sample(200_000, generator=torch.Generator().manual_seed(6), **F64)
    # 4000 draws: standard errors 0.007 (mean), 0.004 (std); 4 of them
    assert abs(x.mean().item() - ref.mean().item()) < 0.03
    assert abs(x.std().item() - ref.std().item()) < 0.02


def test_likelihood_matches_the_oracle():
    # f and g jump at every node, which an adaptive solver's error estimate does not see well
    # (N = 1000 at rtol = 1e-6: ~3e-3 bits/dim off, see benchmarks/interop.py); telling dopri5
    # where the jumps are (jump_t) makes it exact, which is what this test checks. N = 50 keeps
    # the number of restarts small.
    sde = DiscreteVPSDE(torch.linspace(2e-3, 0.3, 50, **F64))
    data = _mixture_1d()
    x = data.sample(16, generator=torch.Generator().manual_seed(7), **F64)
    nodes = torch.arange(1, 50, **F64) / 50
    res = sdescore.likelihood(
        data.score_fn(sde),
        x,
        sde=sde,
        estimator="exact",
        solver=sdescore.TorchDiffEq("dopri5", rtol=1e-7, atol=1e-7, options={"jump_t": nodes}),
    )
    err = likelihood_error_bpd(data, sde, x, res)
    assert err.abs().max() < 2e-4  # measured 8e-5 (VP SDEs: below 3e-4 at these tolerances)


def test_t_from_log_snr_outside_the_range_gives_the_end_and_nan_is_refused():
    # Issue 25, item 2, for the discrete schedule: +-inf and far values go to the ends.
    sde = DiscreteVPSDE.linear(1000)
    lam = torch.tensor([math.inf, 1e6, -1e6, -math.inf], dtype=torch.float64)
    assert sde.t_from_log_snr(lam).tolist() == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="lam must not be NaN"):
        sde.t_from_log_snr(float("nan"))
