"""`ProbabilityFlowODE.sample(..., return_logp=...)`: log p of the samples from the same solve.

Oracle: with the exact score of a Gaussian mixture the PF ODE carries p_T onto p_eps, so the
returned log p (which starts from the prior pi, not p_T) equals
log p_eps(x) + log pi(x_T) - log p_T(x_T), all in closed form (float64). `likelihood` of the
returned samples (exact trace, tight dopri5) must agree with it to the sampler's accuracy.
"""

from __future__ import annotations

import pytest
import torch

import sdescore
from tests.problems import CubicSDE, gaussian_1d, make_sdes, mixture_2d

EPS = 1e-3
SDES = {k: v for k, v in make_sdes().items() if k in ("vp", "subvp", "ve")}
TIGHT = sdescore.TorchDiffEq("dopri5", rtol=1e-10, atol=1e-10)


def _start(sde, shape=(32, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    return sde.prior_sampling(shape, generator=g, dtype=torch.float64)


def _oracle(data, sde, x_T, x):
    """Closed-form log p the sampler should return for samples `x` started at `x_T`."""
    return (
        data.marginal_log_prob(x, EPS, sde)
        + sde.prior_logp(x_T)
        - data.marginal_log_prob(x_T, sde.T, sde)
    )


def _likelihood(score, sde, x):
    return sdescore.likelihood(score, x, sde=sde, estimator="exact", eps=EPS, solver=TIGHT)


@pytest.mark.parametrize("name", list(SDES))
def test_tight_adaptive_solve_matches_closed_form_and_likelihood(name):
    sde, data = SDES[name], mixture_2d()
    score = data.score_fn(sde)
    x_T = _start(sde)
    method = sdescore.TorchDiffEq("dopri5", rtol=1e-9, atol=1e-9)
    res = sde.probability_flow(score).sample(
        x_T=x_T, method=method, return_info=True, return_logp=True
    )
    assert res.log_prob.shape == (32,) and res.log_prob.dtype == torch.float64
    # dopri5 at 1e-9 on both channels: errors measured at most 3e-7 nats
    torch.testing.assert_close(
        res.log_prob, _oracle(data, sde, x_T, res.samples), atol=1e-5, rtol=0
    )
    lik = _likelihood(score, sde, res.samples)
    # likelihood runs eps -> T from the samples: its latent is x_T again, its log p the same
    torch.testing.assert_close(lik.latent, x_T, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.log_prob, lik.log_prob, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize(
    ("method", "coarse", "fine"),
    [("dpm_solver", 20, 80), ("unipc", 20, 80), ("ipndm", 20, 80), ("rk4", 25, 100)],
)
def test_fixed_step_solvers_keep_their_samples_and_converge(name, method, coarse, fine):
    sde, data = SDES[name], mixture_2d()
    pf = sde.probability_flow(data.score_fn(sde))
    x_T = _start(sde)
    errors = []
    for steps in (coarse, fine):
        x, log_prob = pf.sample(x_T=x_T, method=method, steps=steps, return_logp=True)
        # x's updates are the same elementwise arithmetic with or without log p: bit-identical
        assert torch.equal(x, pf.sample(x_T=x_T, method=method, steps=steps))
        errors.append((log_prob - _oracle(data, sde, x_T, x)).abs().mean().item())
    # 4x the steps of an order >= 2 rule: at least 8x smaller (measured 11-190x); fine budget
    # error measured at most 0.035 nats (VE, dpm_solver)
    assert errors[1] < errors[0] / 8
    assert errors[1] < 0.05


def test_default_auto_agrees_with_likelihood_to_its_accuracy():
    sde, data = SDES["vp"], mixture_2d()
    score = data.score_fn(sde)
    x_T = _start(sde, (64, 2))
    res = sde.probability_flow(score).sample(x_T=x_T, return_info=True, return_logp=True)
    assert res.nfe == 20 and res.solver.startswith("Auto")
    lik = _likelihood(score, sde, res.samples)
    # 20 calls of UniPC: mean error measured 0.017 nats, the worst point 0.07
    err = (res.log_prob - lik.log_prob).abs()
    assert err.mean() < 0.03 and err.max() < 0.15


def test_isotropic_gaussian_hutchinson_is_exact():
    # For N(m, s^2 I) the score's Jacobian is a multiple of I, so a Rademacher probe's estimate
    # e^T J e equals the trace: one probe gives the exact answer (to rounding).
    sde = SDES["vp"]
    mean = 0.5 * torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(0))
    data = sdescore.toy.gaussian(mean.double(), 0.3)
    pf = sde.probability_flow(data.score_fn(sde))
    x_T = _start(sde, (8, 1, 4, 4))
    method = sdescore.TorchDiffEq("rk4", steps=60)
    g = torch.Generator().manual_seed(3)
    x, hutch = pf.sample(x_T=x_T, method=method, return_logp=sdescore.Hutchinson(), generator=g)
    _, exact = pf.sample(x_T=x_T, method=method, return_logp=sdescore.ExactTrace(chunk=5))
    assert x.shape == (8, 1, 4, 4)
    torch.testing.assert_close(hutch, exact, atol=1e-9, rtol=0)
    torch.testing.assert_close(exact, _oracle(data, sde, x_T, x), atol=1e-4, rtol=0)


def test_hutchinson_probes_average_to_the_exact_trace():
    sde, data = SDES["vp"], mixture_2d()
    pf = sde.probability_flow(data.score_fn(sde))
    x_T = _start(sde, (16, 2))
    method = sdescore.TorchDiffEq("rk4", steps=40)
    _, exact = pf.sample(x_T=x_T, method=method, return_logp=True)  # d = 2: exact by default
    g = torch.Generator().manual_seed(0)
    one = pf.sample(x_T=x_T, method=method, return_logp=sdescore.Hutchinson(), generator=g)[1]
    many = pf.sample(x_T=x_T, method=method, return_logp=sdescore.Hutchinson(256), generator=g)[1]
    # the anisotropic mixture makes one probe visibly noisy; 256 probes shrink it 16x
    spread_one, spread_many = (one - exact).abs().mean(), (many - exact).abs().mean()
    assert spread_one > 1e-3
    assert spread_many < spread_one / 4


def test_trained_network_agrees_with_likelihood():
    torch.manual_seed(0)
    sde = sdescore.VPSDE()
    model = sdescore.ScoreModel(sdescore.MLPScoreNet(2, hidden=32, depth=2), sde)
    data = mixture_2d().sample(512, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    sdescore.train(model, data, steps=150, progress=False)
    model = model.double()
    pf = sde.probability_flow(model)
    x_T = _start(sde, (32, 2))
    method = sdescore.TorchDiffEq("dopri5", rtol=1e-8, atol=1e-8)
    res = pf.sample(x_T=x_T, method=method, return_info=True, return_logp=True)
    lik = sdescore.likelihood(model, res.samples, estimator="exact", eps=EPS, solver=TIGHT)
    # both solves at <= 1e-8: measured 2e-6 nats apart
    torch.testing.assert_close(res.log_prob, lik.log_prob, atol=1e-4, rtol=0)
    assert res.log_prob.grad_fn is None  # sampling keeps no graph


def test_non_gaussian_sde_with_a_torchdiffeq_method():
    sde = CubicSDE()
    # any smooth field (both solves integrate the same ODE); this one makes the PF velocity
    # (x + sin x) / 2, tame backwards in time, with a divergence that varies along the path
    score = lambda x, t: -2 * x.pow(3) - x - torch.sin(x)  # noqa: E731
    pf = sde.probability_flow(score)
    x_T = _start(sde, (16, 3))
    res = pf.sample(
        x_T=x_T, method=sdescore.TorchDiffEq("dopri5", rtol=1e-9, atol=1e-9),
        return_info="trajectory", return_logp=True,
    )  # fmt: skip
    assert res.trajectory.shape[1:] == (16, 3)
    lik = sdescore.likelihood(score, res.samples, sde=sde, estimator="exact", eps=EPS, solver=TIGHT)
    torch.testing.assert_close(res.log_prob, lik.log_prob, atol=1e-6, rtol=0)
    with pytest.raises(TypeError, match="needs a GaussianSDE"):
        pf.sample(x_T=x_T, method="unipc", return_logp=True)


def test_trajectory_and_progress_with_log_p():
    sde, data = SDES["vp"], gaussian_1d()
    pf = sde.probability_flow(data.score_fn(sde))
    res = pf.sample((4, 1), steps=6, return_info="trajectory", return_logp=True)
    assert res.trajectory.shape == (7, 4, 1) and res.times.shape == (7,)
    assert torch.equal(res.trajectory[-1], res.samples)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"return_logp": 1}, TypeError, "return_logp must be a bool, or the divergence"),
        ({"return_logp": "exact"}, TypeError, "return_logp must be a bool"),
        ({"return_logp": True, "denoise": True}, ValueError, "Tweedie's final denoising"),
        (
            {"return_logp": sdescore.Hutchinson(resample=True)},
            ValueError,
            "resample=True",
        ),
        ({"return_logp": True, "dtype": torch.float16}, TypeError, "float32 or float64"),
        ({"trajectory": True}, TypeError, "return_info='trajectory'"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    sde = SDES["vp"]
    pf = sde.probability_flow(gaussian_1d().score_fn(sde))
    with pytest.raises(error, match=match):
        pf.sample((4, 1), **kwargs)


def test_reverse_sde_refuses_return_logp_and_says_where_to_go():
    sde = SDES["vp"]
    rs = sde.reverse(gaussian_1d().score_fn(sde))
    with pytest.raises(TypeError, match=r"probability_flow\(score_fn\).sample\(\.\.\., return_l"):
        rs.sample((4, 1), return_logp=True)


def test_detached_score_is_refused():
    sde = SDES["vp"]
    exact = gaussian_1d().score_fn(sde)
    pf = sde.probability_flow(lambda x, t: exact(x, t).detach())
    with pytest.raises(TypeError, match="without an autograd graph"):
        pf.sample((4, 1), return_logp=True)
