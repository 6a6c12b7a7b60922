"""ScoreModel: every parameterization reproduces the exact score on the oracle (float64)."""

from __future__ import annotations

import pytest
import torch

import sdescore
from sdescore import ScoreModel
from sdescore.toy import gaussian

from problems import image_gaussian, make_sdes, mixture_2d

SDES = make_sdes()
TOL = dict(rtol=1e-9, atol=1e-9)  # conversions are a few flops in float64


def _oracle_nets(data, sde):
    """Network outputs that each parameterization should turn back into the exact score."""

    def coeffs(x, t):
        a = sde.alpha(t).reshape(-1, *[1] * (x.ndim - 1))
        s = sde.sigma(t).reshape(-1, *[1] * (x.ndim - 1))
        return a, s, data.marginal_score(x, t, sde)

    def eps(x, t):
        a, s, sc = coeffs(x, t)
        return -s * sc

    def x0(x, t):
        a, s, sc = coeffs(x, t)
        return (x + s**2 * sc) / a  # Tweedie

    def v(x, t):
        a, s, sc = coeffs(x, t)
        return a * (-s * sc) - s * (x + s**2 * sc) / a

    def energy(x, t):
        return -data.marginal_log_prob(x, t, sde)

    return {"score": data.score_fn(sde), "eps": eps, "x0": x0, "v": v, "energy": energy}


@pytest.mark.parametrize("sde_name", sorted(SDES))
@pytest.mark.parametrize("param", ["score", "eps", "x0", "v", "energy"])
@pytest.mark.parametrize("problem", ["mixture_2d", "image"])
def test_parameterizations_match_exact_score(sde_name, param, problem):
    sde = SDES[sde_name]
    data = mixture_2d() if problem == "mixture_2d" else image_gaussian()
    g = torch.Generator().manual_seed(1)
    x = data.sample(16, generator=g, dtype=torch.float64)
    t = 0.02 + 0.9 * torch.rand(16, generator=g, dtype=torch.float64) * sde.T
    model = ScoreModel(_oracle_nets(data, sde)[param], sde, param)
    x_before = x.clone()
    out = model(x, t)
    assert out.dtype == torch.float64 and out.shape == x.shape
    torch.testing.assert_close(out, data.marginal_score(x, t, sde), **TOL)
    assert torch.equal(x, x_before) and not x.requires_grad


def test_scale_by_sigma_and_energy_log_density():
    sde, data = sdescore.VPSDE(), mixture_2d()
    x = data.sample(8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.full((8,), 0.4, dtype=torch.float64)
    net = lambda x, t: sde.sigma(t)[:, None] * data.marginal_score(x, t, sde)  # noqa: E731
    model = ScoreModel(net, sde, scale_by_sigma=True)
    torch.testing.assert_close(model(x, t), data.marginal_score(x, t, sde), **TOL)
    energy = ScoreModel(lambda x, t: -data.marginal_log_prob(x, t, sde), sde, "energy")
    torch.testing.assert_close(energy.energy(x, t), -data.marginal_log_prob(x, t, sde), **TOL)
    with torch.no_grad():  # sampling path: still a score, without a graph
        s = energy(x, 0.4)
    assert not s.requires_grad
    torch.testing.assert_close(s, data.marginal_score(x, t, sde), **TOL)


@pytest.mark.parametrize("sde_name", ["vp", "ve", "linear_cosine"])
def test_gaussian_baseline_is_exact_for_gaussian_data(sde_name):
    # N(mu, diag(c^2)) data: the baseline alone is the exact score, so net = 0 is optimal.
    sde = SDES[sde_name]
    mu, c = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([0.3, 2.0])
    data = gaussian(mu, covariance=torch.diag(c.double() ** 2))
    model = ScoreModel(lambda x, t: torch.zeros_like(x), sde)
    model.set_baseline(mu, c.double())
    x = data.sample(32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = torch.linspace(0.01, 0.99, 32, dtype=torch.float64) * sde.T
    torch.testing.assert_close(model(x, t), data.marginal_score(x, t, sde), **TOL)
    # fitted from 10^5 samples: mean/std within a few standard errors, so the score within 2%
    big = data.sample(100_000, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    fitted = ScoreModel(lambda x, t: torch.zeros_like(x), sde).fit_baseline(big)
    torch.testing.assert_close(fitted(x, t), model(x, t), rtol=0.02, atol=0.02)


def test_energy_model_trains_through_the_score():
    net = sdescore.models.MLPScoreNet(2, hidden=8, depth=1, out_dim=1)
    torch.nn.init.normal_(net.out.weight)
    model = ScoreModel(net, sdescore.VPSDE(), "energy")
    x = torch.randn(5, 2)
    model(x, 0.5).square().sum().backward()
    assert net.layers[0].weight.grad is not None and net.layers[0].weight.grad.abs().sum() > 0
    assert x.grad is None and not x.requires_grad


def test_validation_messages():
    sde = sdescore.VPSDE()
    with pytest.raises(ValueError, match="parameterization must be one of"):
        ScoreModel(lambda x, t: x, sde, "noise")
    with pytest.raises(TypeError, match="sde must be an sdescore.SDE"):
        ScoreModel(lambda x, t: x, "vp")
    with pytest.raises(TypeError, match="net must be callable"):
        ScoreModel(3, sde)
    with pytest.raises(ValueError, match="scale_by_sigma=True applies"):
        ScoreModel(lambda x, t: x, sde, "eps", scale_by_sigma=True)
    with pytest.raises(ValueError, match=r"shaped like x \(4, 2\), got \(4, 3\)"):
        ScoreModel(lambda x, t: torch.zeros(4, 3), sde)(torch.zeros(4, 2), 0.5)
    with pytest.raises(ValueError, match=r"must return shape \(4,\)"):
        ScoreModel(lambda x, t: x, sde, "energy")(torch.zeros(4, 2), 0.5)
    with pytest.raises(ValueError, match="t must lie in"):
        ScoreModel(lambda x, t: x, sde)(torch.zeros(4, 2), 1.5)
    with pytest.raises(ValueError, match="energy\\(\\) needs parameterization='energy'"):
        ScoreModel(lambda x, t: x, sde).energy(torch.zeros(4, 2), 0.5)
    with pytest.raises(ValueError, match="zero variance"):
        ScoreModel(lambda x, t: x, sde).fit_baseline(torch.ones(10, 2))


def test_energy_model_through_exact_likelihood():
    # The energy parameterization must survive the exact-divergence ODE (second derivatives).
    # Tolerance: ODE rtol/atol 1e-5 and the start time eps = 1e-5 give ~1e-3 nats.
    sde, data = sdescore.VPSDE(), mixture_2d()
    model = ScoreModel(lambda x, t: -data.marginal_log_prob(x, t, sde), sde, "energy")
    x = data.sample(4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = sdescore.likelihood(model, x, estimator="exact")
    torch.testing.assert_close(res.log_prob, data.log_prob(x), rtol=0, atol=5e-3)


HEADS = {  # every head that divides by sigma(t): (parameterization, scale_by_sigma)
    "eps": ("eps", False),
    "x0": ("x0", False),
    "v": ("v", False),
    "score_scaled": ("score", True),
}


@pytest.mark.parametrize("sde_name", sorted(SDES))
@pytest.mark.parametrize("head", sorted(HEADS))
def test_t_zero_is_refused_where_sigma_vanishes_else_exact(sde_name, head):
    # sigma(0) = 0 for VP, sub-VP and every LinearSDE: those heads stand for an infinite score
    # there, so t = 0 is refused clearly (it used to return Inf/NaN). VE has sigma(0) = sigma_min
    # > 0, and there t = 0 is finite and exact.
    sde, data = SDES[sde_name], mixture_2d()
    param, scaled = HEADS[head]
    net = _oracle_nets(data, sde)["eps" if scaled else param]
    if scaled:  # sigma * score = -eps
        net = lambda x, t, f=net: -f(x, t)  # noqa: E731
    model = ScoreModel(net, sde, param, scale_by_sigma=scaled)
    x = data.sample(4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    t = torch.tensor([0.5, 0.0, 0.3, 0.2], dtype=torch.float64)
    if float(sde.sigma(0.0)) == 0.0:
        with pytest.raises(ValueError, match=r"t must be > 0 where sigma\(t\) = 0.*t = 0.0"):
            model(x, t)
        with pytest.raises(ValueError, match=r"t must be > 0 where sigma\(t\) = 0"):
            model(x, 0.0)
    else:
        torch.testing.assert_close(model(x, t), data.marginal_score(x, t, sde), **TOL)


@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_t_zero_plain_score_and_baseline_are_finite_and_exact(sde_name):
    # The plain "score" head and the Gaussian baseline never divide by sigma alone
    # (the baseline's variance is alpha^2 c^2 + sigma^2 > 0), so t = 0 is valid and exact.
    sde = SDES[sde_name]
    mu, c = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([0.3, 2.0]).double()
    data = gaussian(mu, covariance=torch.diag(c**2))
    model = ScoreModel(lambda x, t: torch.zeros_like(x), sde)
    model.set_baseline(mu, c)
    x = data.sample(8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    torch.testing.assert_close(model(x, 0.0), data.marginal_score(x, 0.0, sde), **TOL)
    plain = ScoreModel(data.score_fn(sde), sde)
    torch.testing.assert_close(plain(x, 0.0), data.marginal_score(x, 0.0, sde), **TOL)


def test_dtype_mismatch_says_how_to_convert():
    # Issue 8 s.5: a float32 net with float64 data used to fail with torch's matmul dtype error.
    model = ScoreModel(sdescore.MLPScoreNet(2, hidden=8, depth=1), sdescore.VPSDE(), "eps")
    x = torch.zeros(3, 2, dtype=torch.float64)
    msg = r"x has dtype torch.float64 but the network's parameters are torch.float32; .*x.float\(\).*model.double\(\)"
    with pytest.raises(TypeError, match=msg):
        model(x, 0.5)
    energy = ScoreModel(sdescore.MLPScoreNet(2, hidden=8, depth=1, out_dim=1), model.sde, "energy")
    with pytest.raises(TypeError, match=msg):
        energy.energy(x, 0.5)
    with pytest.raises(
        TypeError, match=r"torch.float32 but .* torch.float64; .*x.double\(\).*model.float\(\)"
    ):
        model.double()(x.float(), 0.5)
    assert model(x, 0.5).dtype == torch.float64  # after model.double()


def test_a_name_where_a_callable_is_expected_says_pass_the_object():
    with pytest.raises(
        TypeError, match=r"net must be callable, got the string 'mlp'; pass the function"
    ):
        ScoreModel("mlp", sdescore.VPSDE())


def test_the_t_zero_message_states_the_real_default_eps():
    # issue 25 item 17: it said the samplers default to eps = 1e-5; they use 1e-3
    import inspect

    vp = sdescore.VPSDE()
    for process in (vp.reverse(lambda x, t: -x), vp.probability_flow(lambda x, t: -x)):
        assert inspect.signature(process.sample).parameters["eps"].default == 1e-3
    assert inspect.signature(sdescore.likelihood).parameters["eps"].default == 1e-5
    model = ScoreModel(lambda x, t: x, sdescore.VPSDE(), "eps")
    with pytest.raises(ValueError, match=r"eps = 1e-3 for the samplers, 1e-5 for the losses"):
        model(torch.zeros(2, 2), 0.0)
