"""`sdescore.likelihood` against exact log-densities of Gaussian and mixture data."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import sdescore
from sdescore.toy import eight_gaussians

from problems import gaussian_1d, image_gaussian, make_sdes, mixture_2d

F64 = torch.float64
EPS = 1e-5
SDES = make_sdes()


def sample(data, n, seed=0, dtype=F64):
    return data.sample(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def identity_error(data, sde, x, res):
    """|log pi(z) + delta - log p_eps(x)| minus the prior's part: the ODE + trace error alone.

    The PF ODE with the exact score maps p_eps onto p_T exactly, so log p_eps(x) =
    log p_T(z) + delta must hold whatever the prior pi is.
    """
    exact = data.marginal_log_prob(x, EPS, sde)
    return (res.delta_log_prob + data.marginal_log_prob(res.latent, sde.T, sde) - exact).abs()


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("make", [gaussian_1d, mixture_2d], ids=["gauss1d", "mix2d"])
def test_exact_trace_matches_the_exact_density(name, make):
    sde, data = SDES[name], make()
    x = sample(data, 128)
    res = sdescore.likelihood(data.score_fn(sde), x, sde=sde, estimator="exact")
    err = identity_error(data, sde, x, res)
    # Step control on x, RMS over the batch (the default): mean error far below 1e-3 nats, but
    # single points may reach a few 1e-3 (the log p channel is not error-controlled).
    assert err.mean() < 2e-4
    per = sdescore.likelihood(
        data.score_fn(sde),
        x,
        sde=sde,
        estimator="exact",
        solver=sdescore.TorchDiffEq("dopri5", step_control="all"),
    )
    # With the log p channel under error control too: every point within 1e-3 nats.
    assert identity_error(data, sde, x, per).max() < 1e-3
    # And the reported log p differs from the exact log p_eps only by the prior mismatch.
    exact = data.marginal_log_prob(x, EPS, sde)
    mismatch = sde.prior_logp(per.latent) - data.marginal_log_prob(per.latent, sde.T, sde)
    assert (per.log_prob - exact - mismatch).abs().max() < 1e-3
    assert res.log_prob.dtype == F64 and res.latent.shape == x.shape
    torch.testing.assert_close(res.log_prob, res.prior_log_prob + res.delta_log_prob)


def test_eight_gaussians_vp_mae_target():
    """The benchmark's target problem: per-point MAE vs the exact log p0 <= 5e-4 nats."""
    sde, data = sdescore.VPSDE(0.1, 20.0), eight_gaussians()
    x = sample(data, 512, seed=1)
    res = sdescore.likelihood(data.score_fn(sde), x, sde=sde, estimator="exact")
    assert (res.log_prob - data.log_prob(x)).abs().mean() < 5e-4


def test_image_shaped_float64():
    sde, data = SDES["vp"], image_gaussian((1, 3, 3))
    x = sample(data, 6)
    res = sdescore.likelihood(
        data.score_fn(sde),
        x,
        sde=sde,
        estimator="exact",
        solver=sdescore.TorchDiffEq("dopri5", step_control="x"),
    )
    assert res.latent.shape == x.shape and res.log_prob.dtype == F64
    assert identity_error(data, sde, x, res).max() < 1e-3
    hut = sdescore.likelihood(
        data.score_fn(sde),
        x,
        sde=sde,
        generator=torch.Generator().manual_seed(0),
        estimator=sdescore.Hutchinson(32),
        solver=sdescore.TorchDiffEq("dopri5", step_control="x"),
    )
    # Same steps as the exact run (step control on x only): only the probe noise differs.
    assert hut.nfe == res.nfe
    assert ((hut.log_prob - res.log_prob).abs() < 4 * hut.log_prob_stderr).all()
    torch.testing.assert_close(res.bits_per_dim, -res.log_prob / (9 * math.log(2)))


def test_float32_in_float32_out():
    sde, data = SDES["vp"], mixture_2d()
    x = sample(data, 64, dtype=torch.float32)
    res = sdescore.likelihood(data.score_fn(sde), x, sde=sde, estimator="exact")
    assert res.log_prob.dtype == torch.float32 and res.latent.dtype == torch.float32
    exact = data.marginal_log_prob(x.double(), EPS, sde)
    # float32 round-off along ~60 steps and the prior mismatch (~2e-3 here)
    assert (res.log_prob.double() - exact).abs().mean() < 1e-2


def test_hutchinson_is_unbiased_along_the_same_path():
    """With step control on x only, the steps do not depend on the probes, so each probe's
    channel is an unbiased estimate of the exact-trace result computed with the *same* steps."""
    sde, data = SDES["vp"], mixture_2d()
    x = sample(data, 8, seed=2)
    kw = dict(sde=sde, solver=sdescore.TorchDiffEq("dopri5", step_control="x"))
    exact = sdescore.likelihood(data.score_fn(sde), x, estimator="exact", **kw)
    for noise in ("rademacher", "gaussian"):
        res = sdescore.likelihood(data.score_fn(sde), x, generator=torch.Generator().manual_seed(3), **kw, estimator=sdescore.Hutchinson(256, noise=noise))  # fmt: skip
        assert res.nfe == exact.nfe
        z = (res.log_prob - exact.log_prob) / res.log_prob_stderr
        assert z.abs().max() < 4, z


def test_variance_falls_like_one_over_k():
    """Copies of one point get independent probes but identical steps: the spread across the
    copies is the estimator's own; its variance should fall ~1/k."""
    sde, data = SDES["vp"], mixture_2d()
    x = sample(data, 1, seed=4).expand(400, 2)
    g = torch.Generator().manual_seed(5)
    one = sdescore.likelihood(
        data.score_fn(sde), x, sde=sde, generator=g, estimator=sdescore.Hutchinson(1)
    )
    eight = sdescore.likelihood(
        data.score_fn(sde), x, sde=sde, generator=g, estimator=sdescore.Hutchinson(8)
    )
    ratio = float(one.log_prob.var() / eight.log_prob.var())
    # F(399, 399) ratio: 95% interval of var1/var8 around 8 is about [6.5, 9.8]
    assert 6.0 < ratio < 10.5, ratio
    # The reported standard error agrees with the spread across copies (within 15%).
    assert abs(float(eight.log_prob_stderr.mean() / eight.log_prob.std()) - 1) < 0.15


def test_rademacher_beats_gaussian_probes():
    sde, data = SDES["vp"], mixture_2d()
    x = sample(data, 1, seed=4).expand(300, 2)
    g = torch.Generator().manual_seed(6)
    rad = sdescore.likelihood(data.score_fn(sde), x, sde=sde, generator=g)
    gau = sdescore.likelihood(
        data.score_fn(sde), x, sde=sde, generator=g, estimator=sdescore.Hutchinson(noise="gaussian")
    )
    assert rad.log_prob.var() < gau.log_prob.var()


def test_step_control_on_x_needs_fewer_evaluations():
    sde, data = SDES["vp"], eight_gaussians()
    x = sample(data, 256, seed=7)
    kw = dict(sde=sde, generator=torch.Generator().manual_seed(0))
    a = sdescore.likelihood(
        data.score_fn(sde), x, **kw, solver=sdescore.TorchDiffEq("dopri5", step_control="x")
    )
    b = sdescore.likelihood(
        data.score_fn(sde), x, **kw, solver=sdescore.TorchDiffEq("dopri5", step_control="all")
    )
    assert a.nfe < b.nfe


class CountingScore:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


@pytest.mark.parametrize("estimator", ["hutchinson", "exact"])
def test_one_network_pass_per_evaluation(estimator):
    sde, data = SDES["vp"], mixture_2d()
    score = CountingScore(data.score_fn(sde))
    res = sdescore.likelihood(score, sample(data, 16), sde=sde, estimator=sdescore.Hutchinson(3))
    assert score.calls == res.nfe


def test_score_model_two_argument_call_and_chunking():
    sde, data = SDES["subvp"], mixture_2d()
    model = sdescore.ScoreModel(data.score_fn(sde), sde)
    x = sample(data, 24)
    a = sdescore.likelihood(model, x, estimator="exact")
    b = sdescore.likelihood(data.score_fn(sde), x, sde=sde, estimator="exact")
    torch.testing.assert_close(a.log_prob, b.log_prob)
    c = sdescore.likelihood(model, x, estimator="exact", batch_size=10)
    assert c.log_prob.shape == (24,) and c.nfe > a.nfe  # three solves
    # Chunks take their own adaptive steps (shared within a solve), so single points move by up
    # to a few 1e-3 nats (measured 4e-3 here) while the mean barely moves.
    assert (c.log_prob - a.log_prob).abs().max() < 2e-2
    assert (c.log_prob - a.log_prob).abs().mean() < 1e-3


def test_generator_makes_it_reproducible():
    sde, data = SDES["ve"], mixture_2d()
    x = sample(data, 8)
    r = [
        sdescore.likelihood(
            data.score_fn(sde), x, sde=sde, generator=torch.Generator().manual_seed(9)
        )
        for _ in range(2)
    ]
    assert torch.equal(r[0].log_prob, r[1].log_prob)


def test_an_equal_sde_is_the_models_own():
    # sde= was compared with the model's SDE by identity: VPSDE(0.1, 20.0) given again for a
    # model built on VPSDE(0.1, 20.0) was refused as "differing" from an identical repr.
    data = mixture_2d()
    x = sample(data, 4)
    model = sdescore.ScoreModel(data.score_fn(sdescore.VPSDE(0.1, 20.0)), sdescore.VPSDE(0.1, 20.0))
    ours = sdescore.likelihood(model, x, sde=sdescore.VPSDE(0.1, 20.0), estimator="exact")
    own = sdescore.likelihood(model, x, estimator="exact")
    assert torch.equal(ours.log_prob, own.log_prob)
    for other in (
        sdescore.VPSDE(0.1, 19.0),
        sdescore.SubVPSDE(0.1, 20.0),
        sdescore.VESDE(0.01, 50.0),
    ):
        with pytest.raises(ValueError, match="differs from the model's own SDE"):
            sdescore.likelihood(model, x, sde=other)


def test_bad_inputs():
    sde, data = SDES["vp"], mixture_2d()
    score = data.score_fn(sde)
    x = sample(data, 4)
    keep = x.clone()
    with pytest.raises(ValueError, match="NaN or Inf"):
        sdescore.likelihood(score, torch.full((2, 2), float("nan"), dtype=F64), sde=sde)
    with pytest.raises(ValueError, match=r"estimator must be one of \['hutchinson', 'exact'\]"):
        sdescore.likelihood(score, x, sde=sde, estimator="skilling")
    with pytest.raises(ValueError, match="noise must be one of"):
        sdescore.likelihood(score, x, sde=sde, estimator=sdescore.Hutchinson(noise="sphere"))
    with pytest.raises(ValueError, match=r"returned shape \(4, 1\)"):
        sdescore.likelihood(lambda y, t: y[:, :1], x, sde=sde)
    with pytest.raises(TypeError, match="pass the SDE as sde="):
        sdescore.likelihood(lambda y, t: score(y, t), x)
    with pytest.raises(ValueError, match="differs from the model's own SDE"):
        sdescore.likelihood(sdescore.ScoreModel(score, sde), x, sde=SDES["ve"])
    with pytest.raises(ValueError, match="eps must lie in"):
        sdescore.likelihood(score, x, sde=sde, eps=1.0)
    with pytest.raises(ValueError, match="probes must be an int >= 1"):
        sdescore.likelihood(score, x, sde=sde, estimator=sdescore.Hutchinson(0))
    with pytest.raises(ValueError, match="batch_size"):
        sdescore.likelihood(score, x, sde=sde, batch_size=0)
    with pytest.raises(TypeError, match="integer dtype.*pass dequantization="):
        sdescore.likelihood(score, torch.ones(2, 2, dtype=torch.int64), sde=sde)
    xr = x.clone().requires_grad_(True)
    sdescore.likelihood(score, xr, sde=sde)
    assert xr.requires_grad and xr.grad is None and torch.equal(x, keep)


# --- issue 25: one dtype rule, levels without bins, ignored options, sde required ---------
def _mlp_model(dtype):
    torch.manual_seed(0)
    net = sdescore.MLPScoreNet(2, hidden=16, depth=2)
    torch.nn.init.normal_(net.out.weight, std=0.3)
    return sdescore.ScoreModel(net, sdescore.VPSDE()).to(dtype)


@pytest.mark.parametrize("model_dtype, data_dtype", [(torch.float32, F64), (F64, torch.float32)])
def test_data_follow_the_models_dtype_at_every_evaluation_entry_point(model_dtype, data_dtype):
    # issue 25 item 12: train converted data to the model's dtype, likelihood refused them
    from sdescore.metrics import evaluate

    model = _mlp_model(model_dtype)
    x = torch.randn(6, 2, dtype=data_dtype, generator=torch.Generator().manual_seed(0))
    ref = sdescore.likelihood(model, x.to(model_dtype), generator=torch.Generator().manual_seed(1))
    res = sdescore.likelihood(model, x, generator=torch.Generator().manual_seed(1))
    assert res.log_prob.dtype == model_dtype and torch.equal(res.log_prob, ref.log_prob)
    assert sdescore.elbo(model, x, samples=4).nll_bound.dtype == model_dtype
    levels = torch.randint(0, 4, (6, 2), generator=torch.Generator().manual_seed(2))
    assert sdescore.likelihood(model, levels, dequantization=4).log_prob.dtype == model_dtype
    assert sdescore.elbo(model, levels, samples=4, dequantization=4).nll_bound.dtype == model_dtype
    out = evaluate(model, x, num_samples=4, sampler=sdescore.TorchDiffEq("euler", steps=4),
                   likelihood={"solver": sdescore.TorchDiffEq("rk4", steps=4)},
                   elbo={"samples": 2}, metrics=())  # fmt: skip
    assert math.isfinite(out["nll"]["value"]) and math.isfinite(out["elbo_nll"]["value"])


def test_levels_without_bins_warn_for_any_model():
    # issue 25 item 13: 0..255 as continuous data gave ~14,675 bits/dim without a word
    sde = sdescore.VPSDE()
    x = torch.randint(0, 256, (4, 3), generator=torch.Generator().manual_seed(0)).to(F64)
    x[0, 0] = 255.0
    for fn in (sdescore.likelihood, sdescore.elbo):
        with pytest.warns(UserWarning, match=r"whole numbers from .* to 255.*Pass dequantization="):
            fn(lambda y, t: -y, x, sde=sde)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # continuous data and small integer points stay quiet
        sdescore.likelihood(
            lambda y, t: -y, torch.tensor([[2.0, 0.0], [0.0, -2.0]], dtype=F64), sde=sde
        )


def test_options_the_method_does_not_read_are_refused():
    # issue 25 item 16: torchdiffeq only warned, and the solve ran without them
    sde = sdescore.VPSDE()
    x = torch.randn(3, 2, dtype=F64)
    with pytest.raises(
        ValueError, match=r"options \['junk'\] are not read by torchdiffeq's 'dopri5'"
    ):
        sdescore.TorchDiffEq("dopri5", options={"junk": 1})
    with pytest.raises(
        ValueError, match=r"options \['ifactor'\] are not read by torchdiffeq's 'rk4'"
    ):
        sdescore.TorchDiffEq("rk4", steps=4, options={"ifactor": 2.0})
    # the old keyword names the object that checks them
    with pytest.raises(TypeError, match=r"options= is now solver=sdescore.TorchDiffEq"):
        sdescore.likelihood(lambda y, t: -y, x, sde=sde, options={"junk": 1})
    # the chunk is an option of the exact trace only: Hutchinson has no such option
    with pytest.raises(TypeError, match="unexpected keyword argument 'chunk'"):
        sdescore.Hutchinson(chunk=1)
    res = sdescore.likelihood(
        lambda y, t: -y,
        x,
        sde=sde,
        solver=sdescore.TorchDiffEq("dopri5", options={"first_step": 0.01}),
    )
    assert torch.isfinite(res.log_prob).all()


def test_a_plain_function_needs_its_sde_everywhere():
    # issue 25 item 16: no silent default SDE for a score function that carries none
    from sdescore.metrics import evaluate

    x = torch.randn(4, 2, dtype=F64)
    for call in (sdescore.likelihood, sdescore.elbo, evaluate):
        with pytest.raises(TypeError, match=r"pass the SDE as sde=\.\.\."):
            call(lambda y, t: -y, x)


def test_a_score_answering_integers_is_refused():
    # issue 25 item 14: an integer answer was truncated and used
    with pytest.raises(
        TypeError, match="must return a floating-point tensor, got dtype torch.int64"
    ):
        sdescore.likelihood(lambda y, t: (-y).long(), torch.randn(3, 2), sde=sdescore.VPSDE())
