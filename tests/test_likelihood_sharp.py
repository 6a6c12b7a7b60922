"""The default `likelihood` on sharp, image-like data (issue 8, section 1).

Gaussian mixtures with component std 0.004 on [-1, 1]^D, as sharp as 8-bit images. With step
control on x alone, the default until this test was written, bits/dim came out 0.05-0.08 too
low under VPSDE(0.1, 20) (the divergence near eps was integrated far too coarsely).
Tolerances: mean error <= 1e-3 bits/dim, worst point <= 1e-2 bits/dim (exact trace, float64).
"""

from __future__ import annotations

import math

import pytest
import torch

import sdescore

from problems import likelihood_error_bpd, make_sdes, sharp_mixture

SDES = make_sdes()


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("shape", [(2,), (16,)], ids=["d2", "d16"])
def test_default_is_right_on_sharp_data(name, shape):
    sde, data = SDES[name], sharp_mixture(shape)
    x = data.sample(32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = sdescore.likelihood(data.score_fn(sde), x, sde=sde, estimator="exact")
    err = likelihood_error_bpd(data, sde, x, res)
    assert err.mean().abs() < 1e-3, err.mean()
    assert err.abs().max() < 1e-2, err.abs().max()


@pytest.mark.parametrize("name", ["vp", "subvp"])
def test_default_is_right_on_sharp_images(name):
    """(1, 8, 8) images: the exact trace is 64 products per evaluation, so few points."""
    sde, data = SDES[name], sharp_mixture((1, 8, 8))
    x = data.sample(6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    res = sdescore.likelihood(data.score_fn(sde), x, sde=sde, estimator="exact")
    assert res.latent.shape == x.shape
    err = likelihood_error_bpd(data, sde, x, res)
    assert err.mean().abs() < 1e-3, err.mean()
    assert err.abs().max() < 1e-2, err.abs().max()


def test_step_control_on_x_alone_is_biased_on_sharp_data():
    """Documents why the default controls both channels: the cheaper "x" is far off here."""
    sde, data = SDES["vp"], sharp_mixture((16,))
    x = data.sample(32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = sdescore.likelihood(
        data.score_fn(sde),
        x,
        sde=sde,
        estimator="exact",
        solver=sdescore.TorchDiffEq("dopri5", step_control="x"),
    )
    assert likelihood_error_bpd(data, sde, x, res).mean() > 0.02  # log p too high


@pytest.mark.parametrize("method,steps,tol", [("rk4", 60, 1e-3), ("midpoint", 200, 5e-3)])
def test_fixed_grid_methods_take_their_steps(method, steps, tol):
    """A fixed-grid method runs `steps` steps on a log-SNR grid (it used to take one step)."""
    sde, data = SDES["vp"], sharp_mixture((16,))
    x = data.sample(16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    solver = sdescore.TorchDiffEq(method, steps=steps)
    res = sdescore.likelihood(data.score_fn(sde), x, sde=sde, estimator="exact", solver=solver)
    stages = {"rk4": 4, "midpoint": 2}[method]
    assert res.nfe == stages * steps
    # measured: rk4 4e-4, midpoint (second order) 3.3e-3 bits/dim
    assert likelihood_error_bpd(data, sde, x, res).mean().abs() < tol


def test_fixed_grid_method_without_steps_is_refused():
    sde, data = SDES["vp"], sharp_mixture((2,))
    x = data.sample(4, dtype=torch.float64)
    for method in ("euler", "rk4", "midpoint"):
        with pytest.raises(ValueError, match="fixed-step method and needs a step count"):
            sdescore.likelihood(data.score_fn(sde), x, sde=sde, method=method)
    with pytest.raises(ValueError, match="steps applies to the fixed-step methods"):
        sdescore.TorchDiffEq("dopri5", steps=10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_data_is_refused_clearly(dtype):
    sde, data = SDES["vp"], sharp_mixture((2,))
    x = data.sample(4, dtype=torch.float64).to(dtype)
    with pytest.raises(TypeError, match="float32 or float64"):
        sdescore.likelihood(data.score_fn(sde), x, sde=sde)


@pytest.mark.parametrize("solver", [sdescore.TorchDiffEq("rk4", steps=10), "dopri5", "exp_abm"])
def test_nan_score_is_reported_not_returned(solver):
    sde = SDES["vp"]
    x = torch.zeros(4, 2, dtype=torch.float64)

    def nan_score(x, t):
        return x * float("nan")  # keeps the graph for the divergence

    with pytest.raises((FloatingPointError, RuntimeError), match="(?i)nan|non-finite"):
        sdescore.likelihood(nan_score, x, sde=sde, solver=solver)


def test_elbo_nan_score_is_reported_not_returned():
    x = torch.zeros(4, 2, dtype=torch.float64)

    def nan_score(x, t):
        return x * float("nan")  # keeps the graph for the divergence

    with pytest.raises(FloatingPointError, match="non-finite"):
        sdescore.elbo(nan_score, x, sde=SDES["vp"], samples=4)


def test_adaptive_likelihood_stops_at_max_steps():
    sde, data = SDES["vp"], sharp_mixture((2,))
    x = data.sample(4, dtype=torch.float32)
    with pytest.raises(sdescore.MaxStepsError, match="max steps exceeded"):
        sdescore.likelihood(
            data.score_fn(sde),
            x,
            sde=sde,
            solver=sdescore.TorchDiffEq("dopri5", rtol=1e-12, atol=1e-12, max_steps=20),
        )


class _Runaway(Exception):
    pass


class _Counted:
    """A score function counting its calls; past `cap` it raises, so that a solve without a
    work budget fails the test fast instead of running for minutes."""

    def __init__(self, fn, cap: int):
        self.fn, self.cap, self.calls = fn, cap, 0

    def __call__(self, x, t):
        self.calls += 1
        if self.calls > self.cap:
            raise _Runaway(f"{self.calls} score calls")
        return self.fn(x, t)


_STIFF = (lambda x, t: -1e6 * x,)


@pytest.mark.parametrize(
    "case",
    ["dopri5_1e-12_float32", "Dopri5_1e-12_float32", "exp_abm_stiff"],
)
@pytest.mark.filterwarnings("ignore:x holds only whole numbers")
def test_adaptive_likelihood_stops_at_its_budget_of_score_calls(case):
    # Issue 25, item 1: each of these ran to max_steps (10 000 steps: 60 000 score calls for
    # dopri5) before; now each stops at max_evals score calls, saying what to do.
    sde, budget = SDES["vp"], 200
    data = sharp_mixture((2,))
    x = data.sample(4, dtype=torch.float32)
    fn = data.score_fn(sde)
    if case.startswith("dopri5"):
        solver = sdescore.TorchDiffEq("dopri5", rtol=1e-12, atol=1e-12, max_evals=budget)
    elif case.startswith("Dopri5"):
        solver = sdescore.Dopri5(rtol=1e-12, atol=1e-12, max_evals=budget)
    else:
        solver = sdescore.ExpABM(max_evals=budget)
        fn = _STIFF[0]
    score = _Counted(fn, cap=3 * budget)
    with pytest.raises(sdescore.MaxStepsError, match="max score calls exceeded") as err:
        sdescore.likelihood(score, x, sde=sde, solver=solver)
    assert score.calls <= budget + 2  # + the likelihood's shape probe of the score
    assert "raise max_evals" in str(err.value)


def test_exp_abm_names_a_collapsed_step():
    # A score with a pole at t = 0.5 (1/|t - 0.5|): the steps shrink toward it until one is
    # below 1e-10 of the log-SNR span, named as such. (This test used points at x = 1e10,
    # which now solve: their log-density tests are relative, see the next test.)
    sde, data = SDES["vp"], sharp_mixture((2,))
    x = data.sample(4, dtype=torch.float32)
    score = _Counted(lambda y, t: -y / (t[:, None] - 0.5).abs().clamp_min(1e-30), cap=3000)
    with pytest.raises(sdescore.MaxStepsError, match="step size collapsed.*near t = 0.5"):
        sdescore.likelihood(score, x, sde=sde, solver=sdescore.ExpABM(max_evals=3000))


@pytest.mark.filterwarnings("ignore:x holds only whole numbers")
def test_exp_abm_solves_points_absurdly_far_out():
    # x = 1e10 (log-density -6e24 nats) collapsed the step at once; with the relative part of
    # the log-density tests for points far outside the data it is solved, to 1e-5 relative.
    sde, data = SDES["vp"], sharp_mixture((2,))
    x = torch.full((4, 2), 1e10, dtype=torch.float64)
    res = sdescore.likelihood(data.score_fn(sde), x, sde=sde, estimator="exact")
    err = likelihood_error_bpd(data, sde, x, res) * 2 * math.log(2)
    assert res.nfe <= 50 and (err.abs() <= 1e-4 * (res.log_prob - err).abs()).all()
