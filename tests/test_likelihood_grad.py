"""`likelihood(..., differentiable=True)`: log p with gradients to the model's parameters.

Oracle: a two-parameter family of exact scores, those of N(m, s^2) under VP; the PF ODE is then
affine, so log p (the prior mismatch at the latent included) and its gradient in (m, s) are
closed-form expressions that autograd differentiates on its own.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import sdescore

SDE = sdescore.VPSDE()
EPS = 1e-3


LOG_S = math.log(0.6)


def _moments(m, log_s, t):
    """Variance and mean of p_t for data N(m, s^2) under VP."""
    alpha, sigma = SDE.alpha(t), SDE.sigma(t)
    return alpha.square() * (2 * log_s).exp() + sigma.square(), alpha * m


def _score(m, log_s, x, t):
    var, mean = _moments(m, log_s, t)
    return -(x - mean[:, None]) / var[:, None]


class GaussianScore(torch.nn.Module):
    """The exact score of N(m, s^2) in every dimension: 2 parameters (m, log s)."""

    def __init__(self, m=0.3, log_s=LOG_S):
        super().__init__()
        self.m = torch.nn.Parameter(torch.tensor(m, dtype=torch.float64))
        self.log_s = torch.nn.Parameter(torch.tensor(log_s, dtype=torch.float64))

    def variance(self, t):
        return _moments(self.m, self.log_s, t)

    def forward(self, x, t):
        return _score(self.m, self.log_s, x, t)


def closed_form(model, x):
    """log p_eps(x) + log pi(z) - log p_T(z), z the (affine) PF map of x: what likelihood
    integrates, in closed form and differentiable in the parameters."""
    b = x.shape[0]
    var0, mean0 = model.variance(torch.full((b,), EPS, dtype=x.dtype))
    var1, mean1 = model.variance(torch.full((b,), SDE.T, dtype=x.dtype))
    z = mean1[:, None] + ((var1 / var0).sqrt())[:, None] * (x - mean0[:, None])

    def log_normal(v, mean, var):
        return (-0.5 * (v - mean[:, None]).square() / var[:, None] - 0.5 * torch.log(
            2 * math.pi * var[:, None]
        )).sum(1)  # fmt: skip

    return log_normal(x, mean0, var0) + SDE.prior_logp(z) - log_normal(z, mean1, var1)


X = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.7


def test_gradcheck_through_a_fixed_step_solve():
    def log_prob(m, log_s):
        return sdescore.likelihood(
            lambda x, t: _score(m, log_s, x, t), X, sde=SDE, eps=EPS, estimator="exact",
            solver=sdescore.TorchDiffEq("rk4", steps=12), differentiable=True,
        ).log_prob  # fmt: skip

    params = (
        torch.tensor(0.3, dtype=torch.float64, requires_grad=True),
        torch.tensor(LOG_S, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(log_prob, params, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "estimator", ["exact", sdescore.Hutchinson(probes=1)], ids=["exact", "hutchinson"]
)
def test_gradient_matches_the_closed_form(estimator):
    # For N(m, s^2 I) the score's Jacobian is a multiple of I: one Rademacher probe is exact.
    model = GaussianScore()
    res = sdescore.likelihood(
        model, X, sde=SDE, eps=EPS, estimator=estimator, differentiable=True,
        solver=sdescore.TorchDiffEq("dopri5", rtol=1e-9, atol=1e-9),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    got = torch.autograd.grad(res.log_prob.sum(), [model.m, model.log_s])
    want_value = closed_form(model, X)
    want = torch.autograd.grad(want_value.sum(), [model.m, model.log_s])
    torch.testing.assert_close(res.log_prob, want_value, atol=1e-6, rtol=0)
    # dopri5 at 1e-9: measured within 1e-7 of the closed-form gradient
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_default_keeps_no_graph_and_the_same_values():
    model = GaussianScore()
    default = sdescore.likelihood(model, X, sde=SDE, eps=EPS, estimator="exact")
    assert not default.log_prob.requires_grad and default.log_prob.grad_fn is None
    solver = sdescore.TorchDiffEq("rk4", steps=20)
    plain = sdescore.likelihood(model, X, sde=SDE, eps=EPS, estimator="exact", solver=solver)
    graph = sdescore.likelihood(
        model, X, sde=SDE, eps=EPS, estimator="exact", solver=solver, differentiable=True
    )
    assert graph.log_prob.requires_grad and not plain.log_prob.requires_grad
    torch.testing.assert_close(graph.log_prob.detach(), plain.log_prob, atol=1e-12, rtol=0)


def test_gradient_reaches_the_data_when_it_requires_grad():
    model = GaussianScore()
    x = X.clone().requires_grad_(True)
    res = sdescore.likelihood(
        model, x, sde=SDE, eps=EPS, estimator="exact", differentiable=True,
        solver=sdescore.TorchDiffEq("dopri5", rtol=1e-9, atol=1e-9),
    )  # fmt: skip
    (gx,) = torch.autograd.grad(res.log_prob.sum(), x)
    (want,) = torch.autograd.grad(closed_form(model, x).sum(), x)
    torch.testing.assert_close(gx, want, atol=1e-5, rtol=1e-5)


def test_bad_inputs():
    model = GaussianScore()
    with pytest.raises(TypeError, match="differentiable must be a bool"):
        sdescore.likelihood(model, X, sde=SDE, differentiable="yes")
    with pytest.raises(ValueError, match="ExpABM runs without an autograd graph"):
        sdescore.likelihood(model, X, sde=SDE, solver=sdescore.ExpABM(), differentiable=True)


def test_nll_fine_tuning_lowers_held_out_bits_per_dim():
    # The recipe of docs/likelihood.md, "Fine-tuning by likelihood", at a small size.
    torch.manual_seed(0)
    data = sdescore.toy.eight_gaussians()
    g = torch.Generator().manual_seed(1)
    train_x = data.sample(512, generator=g) / 4
    test_x = data.sample(256, generator=g) / 4
    model = sdescore.ScoreModel(sdescore.MLPScoreNet(2, hidden=32, depth=2), SDE)
    sdescore.train(model, train_x, steps=300, progress=False)

    def held_out():
        res = sdescore.likelihood(model, test_x, estimator="exact", solver="dopri5")
        return res.bits_per_dim.mean().item()

    before = held_out()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    solver = sdescore.TorchDiffEq("rk4", steps=8)
    for _ in range(15):
        batch = train_x[torch.randint(0, 512, (128,), generator=g)]
        nll = -sdescore.likelihood(
            model, batch, estimator="exact", solver=solver, differentiable=True
        ).log_prob.mean()
        opt.zero_grad()
        nll.backward()
        opt.step()
    after = held_out()
    # measured: before 2.33, after 2.03 bits/dim (seed 0)
    assert after < before - 0.05, (before, after)


@pytest.fixture
def warn_always():
    # torch gives "requires_grad=True to a scalar" once per process: every time here, so that
    # a test that ran before cannot hide it
    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    yield
    torch.set_warn_always(before)


def test_a_long_differentiable_adaptive_solve_emits_no_warning(warn_always):
    # The step-collapse watch read the time with float() every 240 evaluations; in a
    # differentiable solve the time carries a graph, and torch warned "Converting a tensor with
    # requires_grad=True to a scalar" from sdescore/solvers/torchdiffeq.py
    w = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    mix = sdescore.toy.eight_gaussians()
    sde = sdescore.VPSDE()
    score = mix.score_fn(sde)
    x = mix.sample(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    solver = sdescore.TorchDiffEq("dopri5", rtol=1e-9, atol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = sdescore.likelihood(
            lambda x, t: w * score(x, t), x, sde=sde, estimator="exact", differentiable=True,
            solver=solver,
        )  # fmt: skip
        res.log_prob.mean().backward()
    assert res.nfe > 2 * 240  # the watch ran at least twice
    assert w.grad is not None and torch.isfinite(w.grad)


def test_a_differentiable_solve_that_fails_raises_its_error_not_a_warning(warn_always):
    # The same read on the failure path: the NaN watch's saved time carried the graph, so
    # naming the failing time warned (an exception under -W error) instead of the NonFiniteError
    w = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    mix = sdescore.toy.eight_gaussians()
    sde = sdescore.VPSDE()
    score, calls = mix.score_fn(sde), [0]

    def breaks_late(x, t):
        calls[0] += 1
        out = w * score(x, t)
        return out * math.nan if calls[0] > 300 else out

    x = mix.sample(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(sdescore.NonFiniteError, match=r"at call 301 .* \(t = 0\.\d+\)"):
            sdescore.likelihood(
                breaks_late, x, sde=sde, estimator="exact", differentiable=True,
                solver=sdescore.TorchDiffEq("dopri5", rtol=1e-9, atol=1e-9),
            )  # fmt: skip
