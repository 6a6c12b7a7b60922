"""Discrete data and evaluation mode across `likelihood` and `elbo` (issue 16, items 1-3, 5)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import sdescore

from problems import make_sdes

SDES = make_sdes()
F64 = torch.float64


def levels_problem(n=64, d=16, seed=0):
    """Levels 0..16 of a 4-mode mixture on [-0.8, 0.8]^d (std 0.15), with its exact score."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(4, d, generator=g, dtype=F64) * 1.6 - 0.8
    data = sdescore.toy.GaussianMixture(means, 0.15)
    y = data.sample(n, generator=g, dtype=F64)
    return data, sdescore.quantize(y, 17, out_of_range="clamp")  # the tails: the end levels


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2).double()
        self.drop = nn.Dropout(0.5)

    def forward(self, x, t):
        return self.drop(self.lin(torch.cat([x, t[:, None]], 1)))


def test_quantize_inverts_dequantize():
    k = torch.randint(0, 17, (32, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    y, log_w = sdescore.dequantize(k, 17, (-1.0, 1.0), generator=torch.Generator().manual_seed(1))
    assert torch.equal(sdescore.quantize(y, 17, (-1.0, 1.0)), k)
    assert math.isclose(log_w, math.log(2 / 17))
    # Outside the range: the nearest end level, said aloud unless asked for (issue 25, item 16).
    y_out = torch.tensor([[-3.0, 0.5, 3.0]])
    with pytest.warns(UserWarning, match=r"2 of 3 values of y .* from -3 to 3; they were clamped"):
        assert sdescore.quantize(y_out, 17).tolist() == [[0, 12, 16]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sdescore.quantize(y_out, 17, out_of_range="clamp").tolist() == [[0, 12, 16]]
        assert torch.equal(sdescore.quantize(y, 17, out_of_range="raise"), k)
    with pytest.raises(ValueError, match=r"2 of 3 values of y \(66.7 %\) lie outside"):
        sdescore.quantize(y_out, 17, out_of_range="raise")
    with pytest.raises(ValueError, match="out_of_range must be one of"):
        sdescore.quantize(y, 17, out_of_range=True)
    with pytest.raises(TypeError, match="floating-point"):
        sdescore.quantize(k, 17)


def test_bits_per_dim_refuses_a_dimension_that_is_not_a_positive_int():
    # Issue 25, item 6: dim = 0 gave inf, negative and fractional dims a number.
    lp = torch.tensor([-10.0, -20.0], dtype=torch.float64)
    assert torch.allclose(sdescore.bits_per_dim(lp, 5), -lp / (5 * math.log(2)), rtol=1e-15)
    for dim in (0, -3):
        with pytest.raises(ValueError, match=f"dim must be an int >= 1, got {dim}"):
            sdescore.bits_per_dim(lp, dim)
    for dim in (2.5, 4.0, True):
        with pytest.raises(TypeError, match="dim must be an int >= 1"):
            sdescore.bits_per_dim(lp, dim)


@pytest.mark.parametrize("entry", ["likelihood", "elbo"])
def test_evaluation_runs_the_network_in_eval_mode_and_restores_it(entry):
    """A dropout network in training mode made the likelihood random (issue 16, item 1)."""
    sde = SDES["vp"]
    model = sdescore.ScoreModel(DropoutNet(), sde)
    model.train()
    x = torch.randn(8, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    kw = dict(estimator="exact") if entry == "likelihood" else dict(samples=4)
    fn = getattr(sdescore, entry)
    a = fn(model, x, generator=torch.Generator().manual_seed(1), **kw)
    b = fn(model, x, generator=torch.Generator().manual_seed(1), **kw)
    va = a.log_prob if entry == "likelihood" else a.nll_bound
    vb = b.log_prob if entry == "likelihood" else b.nll_bound
    assert torch.equal(va, vb)
    assert model.training and model.net.drop.training  # the caller's mode is restored


def test_elbo_with_bins_bounds_the_bin_probability():
    """elbo(bins=) and likelihood(bins=) bound the same quantity: -log P(k), in bits/dim."""
    data, k = levels_problem(n=32)
    sde = SDES["vp"]
    sc = data.score_fn(sde)
    g = torch.Generator().manual_seed(0)
    lik = sdescore.likelihood(sc, k, sde=sde, estimator="exact", generator=g, dequantization=17)
    bound = sdescore.elbo(
        sc, k, sde=sde, samples=64, estimator="exact", generator=g, dequantization=17
    )
    # With the exact score both bound -log P(k) through the same dequantized density; the ELBO
    # exceeds -log p only by the prior mismatch (~0 for VP) plus Monte Carlo noise.
    gap = (bound.nll_bound + lik.log_prob).mean()
    se = bound.stderr.square().mean().sqrt() / math.sqrt(32)
    assert gap.abs() < 4 * se + 0.05, (gap, se)
    assert bound.bits_per_dim.mean() > 0  # offset log2(17/2) included, as in likelihood


@pytest.mark.parametrize("entry", ["likelihood", "elbo"])
def test_integer_levels_without_bins_are_refused(entry):
    sde = SDES["vp"]
    k = torch.randint(0, 17, (4, 2))
    with pytest.raises(TypeError, match="pass dequantization="):
        getattr(sdescore, entry)(lambda x, t: -x, k, sde=sde)


@pytest.mark.parametrize("entry", ["likelihood", "elbo"])
def test_data_far_outside_the_training_range_warns(entry):
    sde = SDES["vp"]
    train = torch.rand(256, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    model = sdescore.ScoreModel(lambda x, t: -x, sde).fit_baseline(train)
    levels = torch.randint(0, 256, (4, 2), generator=torch.Generator().manual_seed(1)).to(F64)
    kw = dict(samples=2) if entry == "elbo" else {}
    with pytest.warns(UserWarning, match="far outside the data the model was fitted to"):
        getattr(sdescore, entry)(model, levels + 100, **kw)  # raw 8-bit levels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(sdescore, entry)(model, train[:4], **kw)


def test_importance_weighting_with_one_probe_is_refused():
    data, k = levels_problem(n=4)
    with pytest.raises(ValueError, match="needs probes >= 2"):
        sdescore.likelihood(
            data.score_fn(SDES["vp"]),
            k,
            sde=SDES["vp"],
            dequantization=sdescore.Dequantization(17, samples=4),
        )


def test_importance_weighting_with_hutchinson_is_unbiased():
    """S = 4 draws, 2 probes: the variance-corrected combination agrees with the exact trace's.

    Uncorrected, the log-mean-exp adds up to half the Hutchinson variance (here ~1.2 nats, far
    more than the error bar); corrected, the mean difference is within 3 standard errors.
    """
    data, k = levels_problem(n=64)
    sde = SDES["vp"]
    sc = data.score_fn(sde)
    kw = dict(sde=sde, dequantization=sdescore.Dequantization(17, samples=4))
    ex = sdescore.likelihood(
        sc, k, estimator="exact", generator=torch.Generator().manual_seed(1), **kw
    )
    # Probes held fixed through each solve: their noise is large, so is the bias removed.
    hu = sdescore.likelihood(
        sc,
        k,
        generator=torch.Generator().manual_seed(2),
        **kw,
        estimator=sdescore.Hutchinson(2, resample=False),
    )
    one = sdescore.likelihood(
        sc,
        k,
        sde=sde,
        generator=torch.Generator().manual_seed(3),
        dequantization=17,
        estimator=sdescore.Hutchinson(2, resample=False),
    )
    diff = hu.log_prob - ex.log_prob
    se = diff.std() / math.sqrt(len(diff))
    half_var = (one.log_prob_stderr.square() / 2).mean()
    assert half_var > 5 * se  # the bias being removed is large against the error bar
    assert diff.mean().abs() < 3 * se, (diff.mean(), se)
    # S > 1 reports a standard error (delta method over the draws).
    assert hu.log_prob_stderr is not None and torch.isfinite(hu.log_prob_stderr).all()
    assert ex.log_prob_stderr is not None and (ex.log_prob_stderr > 0).all()
    # The default for this dimension (exp_abm, probes drawn afresh at every evaluation): less
    # noise (the spread left is mostly the dequantization draws'; measured 0.76 vs 1.44 nats),
    # and the corrected combination is unbiased too.
    fresh = sdescore.likelihood(
        sc, k, generator=torch.Generator().manual_seed(4), **kw, estimator=sdescore.Hutchinson(2)
    )
    d2 = fresh.log_prob - ex.log_prob
    assert d2.std() < 0.75 * diff.std(), (d2.std(), diff.std())
    assert d2.mean().abs() < 3 * d2.std() / math.sqrt(len(d2)) + 1e-3, d2.mean()


def test_exact_trace_at_image_size_warns():
    sde = SDES["vp"]
    x = torch.zeros(1, 3, 8, 8, dtype=F64)
    with pytest.warns(UserWarning, match="vector-Jacobian products per ODE evaluation"):
        sdescore.likelihood(lambda y, t: -y, x, sde=sde, estimator="exact", rtol=1e-3, atol=1e-3)
