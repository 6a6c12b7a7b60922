"""Score-matching objectives on data with exact scores (float64, fixed seeds, error bars).

Statistical checks compare a Monte Carlo mean with its expectation within 4 standard errors
(a false alarm rate of about 6e-5 per check for a normal mean).
"""

from __future__ import annotations

import math

import pytest
import torch

import sdescore
from sdescore.losses import ddpm_loss, dsm_loss, ism_loss, ncsn_loss, ssm_loss
from sdescore.toy import gaussian

from problems import make_sdes, mixture_2d

SDES = make_sdes()
N = 20_000
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)


def _gauss():
    return gaussian(torch.tensor([0.7, -0.3], dtype=torch.float64), covariance=COV)


def _samples(data, n=N, seed=0):
    return data.sample(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _mean_se(v):
    return v.mean().item(), v.std().item() / math.sqrt(v.numel())


def _dsm_constant(sde, t):
    """E ||sigma s* + z||^2 = sum_k a^2 l_k / (a^2 l_k + s^2) for Gaussian data with cov eigvals l."""
    lam = torch.linalg.eigvalsh(COV)
    t = torch.as_tensor(t, dtype=torch.float64)
    a2, s2 = sde.alpha(t).square()[..., None], sde.sigma(t).square()[..., None]
    return (a2 * lam / (a2 * lam + s2)).sum(-1)


@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_dsm_at_exact_score_equals_analytic_constant(sde_name):
    sde, data = SDES[sde_name], _gauss()
    t = 0.3 * sde.T
    loss = dsm_loss(
        data.score_fn(sde), _samples(data), sde=sde, t=t, generator=torch.Generator().manual_seed(1)
    )
    m, se = _mean_se(loss)
    assert abs(m - 0.5 * _dsm_constant(sde, t).item()) < 4 * se


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_likelihood_weighting_with_and_without_importance_sampling(sde_name):
    # E_t[1/2 g^2/sigma^2 * D(t)], t ~ U[eps, T], by quadrature in u = log t (integrand ~ 1/t)
    sde, data, eps = SDES[sde_name], _gauss(), 1e-5
    u = torch.linspace(math.log(eps), math.log(sde.T), 20_001, dtype=torch.float64)
    tt = u.exp()
    f = 0.5 * sde.diffusion(tt).square() / sde.sigma(tt).square() * _dsm_constant(sde, tt) * tt
    exact = torch.trapezoid(f, u).item() / (sde.T - eps)
    score, x = data.score_fn(sde), _samples(data)
    uni = dsm_loss(
        score,
        x,
        sde=sde,
        weighting="likelihood",
        eps=eps,
        generator=torch.Generator().manual_seed(2),
    )
    imp = dsm_loss(score, x, sde=sde, weighting="likelihood", importance_sampling=True, eps=eps,
                   generator=torch.Generator().manual_seed(3))  # fmt: skip
    (mu, se_u), (mi, se_i) = _mean_se(uni), _mean_se(imp)
    assert abs(mi - exact) < 4 * se_i and abs(mu - exact) < 4 * se_u
    if sde_name != "ve":  # VE has constant g^2/sigma^2: the proposal is uniform
        assert se_i < se_u / 4


@pytest.mark.parametrize("loss_fn", [dsm_loss, ssm_loss, ism_loss])
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_exact_score_minimises_and_shift_costs_half_lambda_delta2(loss_fn, sde_name):
    # For a constant shift delta, E[L(s* + delta) - L(s*)] = 1/2 lambda |delta|^2 for all three
    # (E[s* + z/sigma | x_t] = 0 for DSM; E[s*] = 0 and tr grad delta = 0 for SSM/ISM).
    sde, data = SDES[sde_name], mixture_2d()
    score, x, t = data.score_fn(sde), _samples(data), 0.4 * sde.T
    delta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    kw = dict(sde=sde, t=t, reduction="none")
    base = loss_fn(score, x, generator=torch.Generator().manual_seed(5), **kw)
    shifted = loss_fn(
        lambda y, s: score(y, s) + delta, x, generator=torch.Generator().manual_seed(5), **kw
    )
    m, se = _mean_se(shifted - base)  # common random numbers: same t, noise, projections
    expected = 0.5 * sde.sigma(torch.tensor(t)).item() ** 2 * delta.square().sum().item()
    assert m > 0 and abs(m - expected) < 4 * se


@pytest.mark.parametrize("sde_name", ["vp", "subvp"])
def test_dsm_ssm_ism_share_the_minimiser(sde_name):
    # Family s_k = k s*: each objective is exactly quadratic in k on fixed samples; its argmin
    # estimates 1. Standard error of the argmin ~ sqrt(2 / (d N)) = 0.007; tolerance 0.04.
    sde, data = SDES[sde_name], _gauss()
    score, x, t = data.score_fn(sde), _samples(data), 0.2 * sde.T
    argmins = {}
    for fn in (dsm_loss, ssm_loss, ism_loss):
        vals = [
            fn(lambda y, s, k=k: k * score(y, s), x, sde=sde, t=t, reduction="mean",
               generator=torch.Generator().manual_seed(6)).item()
            for k in (0.5, 1.0, 1.5)
        ]  # fmt: skip
        curv = vals[0] - 2 * vals[1] + vals[2]
        assert curv > 0
        argmins[fn.__name__] = 1.0 - 0.5 * (vals[2] - vals[0]) / curv
    for name, k in argmins.items():
        assert abs(k - 1.0) < 0.04, (name, k)


def test_ssm_without_variance_reduction_and_gaussian_projections_agree():
    sde, data = sdescore.VPSDE(), _gauss()
    score, x = data.score_fn(sde), _samples(data)
    ref = ism_loss(score, x, sde=sde, t=0.3, generator=torch.Generator().manual_seed(7))
    exp_ref, se_ref = _mean_se(ref)
    for kw in ({"variance_reduction": False}, {"projection": "gaussian", "num_projections": 2}):
        v = ssm_loss(score, x, sde=sde, t=0.3, generator=torch.Generator().manual_seed(8), **kw)
        m, se = _mean_se(v)
        assert abs(m - exp_ref) < 4 * math.hypot(se, se_ref), kw


def test_ncsn_uses_the_geometric_sigma_sequence_and_ddpm_the_discrete_grid():
    sde, data = sdescore.VESDE(0.01, 50.0), _gauss()
    seen = []

    def recording(x, t):
        seen.append(t.clone())
        return data.marginal_score(x, t, sde)

    x = _samples(data, 4000)
    loss = ncsn_loss(
        recording, x, sde=sde, num_scales=5, generator=torch.Generator().manual_seed(9)
    )
    sig = torch.unique(sde.sigma(seen[-1]))
    torch.testing.assert_close(sig, 0.01 * 5000.0 ** (torch.arange(5, dtype=torch.float64) / 4))
    # per-level constant 1/2 D(t_i), averaged over the uniformly drawn levels
    expected = (0.5 * _dsm_constant(sde, seen[-1])).mean().item()
    m, se = _mean_se(loss)
    assert abs(m - expected) < 4 * se + 1e-12
    vp = sdescore.VPSDE()
    seen.clear()
    rec_vp = lambda x, t: seen.append(t.clone()) or data.marginal_score(x, t, vp)  # noqa: E731
    loss = ddpm_loss(rec_vp, x, sde=vp, num_steps=10, generator=torch.Generator().manual_seed(10))
    assert set(torch.unique(seen[-1] * 10).round().tolist()) == set(range(1, 11))
    m, se = _mean_se(loss)
    assert abs(m - _dsm_constant(vp, seen[-1]).mean().item()) < 4 * se


@pytest.mark.parametrize("loss_fn", [dsm_loss, ncsn_loss, ddpm_loss, ssm_loss, ism_loss])
def test_losses_train_a_score_model_and_respect_inputs(loss_fn):
    torch.manual_seed(0)
    net = sdescore.models.MLPScoreNet(2, hidden=16, depth=2).double()
    torch.nn.init.normal_(net.out.weight, std=0.1)
    kw = {"t_min": 1e-3} if loss_fn is ncsn_loss else {}
    model = sdescore.ScoreModel(net, sdescore.VPSDE(), "eps")
    x = _samples(_gauss(), 64)
    x_before = x.clone()
    loss = loss_fn(model, x, generator=torch.Generator().manual_seed(0), **kw)
    assert loss.shape == (64,) and loss.dtype == torch.float64 and torch.isfinite(loss).all()
    loss.mean().backward()
    assert net.layers[0].weight.grad.abs().sum() > 0
    assert torch.equal(x, x_before) and not x.requires_grad
    again = loss_fn(model, x, generator=torch.Generator().manual_seed(0), reduction="mean", **kw)
    torch.testing.assert_close(again, loss.mean())


def test_validation_messages():
    sde, data = sdescore.VPSDE(), _gauss()
    score, x = data.score_fn(sde), _samples(data, 8)
    with pytest.raises(ValueError, match="weighting must be one of"):
        dsm_loss(score, x, sde=sde, weighting="snr")
    with pytest.raises(ValueError, match="importance_sampling=True needs weighting='likelihood'"):
        dsm_loss(score, x, sde=sde, importance_sampling=True)
    with pytest.raises(ValueError, match="reduction must be one of"):
        dsm_loss(score, x, sde=sde, reduction="avg")
    with pytest.raises(ValueError, match="eps must be < T"):
        dsm_loss(score, x, sde=sde, eps=1.0)
    with pytest.raises(ValueError, match="sde is required"):
        dsm_loss(lambda y, t: y, x)
    with pytest.raises(TypeError, match="sde must be a GaussianSDE"):
        ssm_loss(score, x, sde="vp")
    with pytest.raises(ValueError, match=r"shaped like x \(8, 2\), got \(8, 1\)"):
        dsm_loss(lambda y, t: y[:, :1], x, sde=sde)
    with pytest.raises(ValueError, match="num_projections must be an int >= 1"):
        ssm_loss(score, x, sde=sde, num_projections=0)
    with pytest.raises(TypeError, match="variance_reduction must be a bool, got str"):
        ssm_loss(score, x, sde=sde, variance_reduction="yes")  # issue 25, item 16
    with pytest.raises(ValueError, match="pass t_min > 0"):
        ncsn_loss(score, x, sde=sde)
    with pytest.raises(ValueError, match="weighting\\(t\\) must return"):
        dsm_loss(score, x, sde=sde, weighting=lambda t: 1.0)


@pytest.mark.parametrize("sde_name", sorted(SDES))
@pytest.mark.parametrize("weighting", ["sigma2", "likelihood", "none"])
def test_dsm_at_t_zero_refused_where_sigma_vanishes(sde_name, weighting):
    # The DSM target -z / sigma(t) is undefined where sigma(t) = 0 (t = 0 for VP, sub-VP and
    # LinearSDE): refused clearly instead of Inf/NaN. VE (sigma(0) = sigma_min) stays finite.
    sde, data = SDES[sde_name], mixture_2d()
    x = _samples(data, 16)
    model = sdescore.ScoreModel(lambda y, s: torch.zeros_like(y), sde, "eps")
    if float(sde.sigma(0.0)) == 0.0:
        for t in (0.0, torch.tensor([0.3] * 15 + [0.0], dtype=torch.float64)):
            with pytest.raises(ValueError, match=r"t must be > 0 where sigma\(t\) = 0"):
                dsm_loss(model, x, sde=sde, t=t, weighting=weighting)
            with pytest.raises(ValueError, match=r"t must be > 0 where sigma\(t\) = 0"):
                dsm_loss(data.score_fn(sde), x, sde=sde, t=t, weighting=weighting)
    else:
        loss = dsm_loss(model, x, sde=sde, t=0.0, weighting=weighting)
        assert bool(torch.isfinite(loss).all())


def test_ism_ssm_at_t_zero():
    # ISM/SSM need no kernel: with a plain score at t = 0 they are finite (the exact data score);
    # an eps-ScoreModel cannot be evaluated there and says so.
    sde, data = SDES["vp"], mixture_2d()
    x = _samples(data, 16)
    for fn in (ism_loss, ssm_loss):
        loss = fn(data.score_fn(sde), x, sde=sde, t=0.0, weighting="none")
        assert bool(torch.isfinite(loss).all())
        eps_model = sdescore.ScoreModel(lambda y, s: torch.zeros_like(y), sde, "eps")
        with pytest.raises(ValueError, match=r"t must be > 0 where sigma\(t\) = 0"):
            fn(eps_model, x, sde=sde, t=0.0)


@pytest.mark.parametrize("loss_fn", [dsm_loss, ddpm_loss, ncsn_loss])
def test_score_scaled_by_sigma_is_eps_with_the_sign_flipped(loss_fn):
    # Issue 16 item 7: "score" with scale_by_sigma=True returns net / sigma; "eps" returns
    # -net / sigma. With net_eps = -net_score the losses, and their gradients, are bit-identical.
    sde = SDES["vp"]
    torch.manual_seed(0)
    net = sdescore.MLPScoreNet(2, hidden=16, depth=2).double()
    score_model = sdescore.ScoreModel(net, sde, "score", scale_by_sigma=True)
    eps_model = sdescore.ScoreModel(lambda y, s: -net(y, s), sde, "eps")
    x = _samples(mixture_2d(), 64)
    kw = {"t_min": 0.01} if loss_fn is ncsn_loss else {}
    grads = []
    for model in (score_model, eps_model):
        net.zero_grad()
        loss = loss_fn(model, x, sde=sde, generator=torch.Generator().manual_seed(3), **kw)
        loss.mean().backward()
        grads.append((loss.detach(), [p.grad.clone() for p in net.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1], strict=True))
