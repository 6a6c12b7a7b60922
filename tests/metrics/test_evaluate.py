"""`evaluate` on a Gaussian mixture with its exact score: every entry present and sensible."""

import math

import pytest
import torch

import sdescore
from sdescore import VPSDE
from sdescore.metrics import evaluate, format_table
from sdescore.toy import GaussianMixture


def _mixture():
    return GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), 0.5)


def test_evaluate_exact_score_on_mixture():
    mix, sde = _mixture(), VPSDE()
    g = torch.Generator().manual_seed(0)
    out, x = evaluate(
        mix.score_fn(sde),
        mix,
        sde=sde,
        num_samples=300,
        sampler=sdescore.Auto(steps=20),
        likelihood={"examples": 16, "estimator": "exact", "rtol": 1e-4, "atol": 1e-4},
        elbo={"samples": 8},
        generator=g,
        return_samples=True,
    )
    assert x.shape == (300, 2) and x.dtype == torch.float64
    expected = {"sampling", "nll", "bits_per_dim", "elbo_nll", "elbo_bits_per_dim", "sw2", "mmd2"}
    assert expected | {"log_density", "mode_weights", "mode_spreads"} == set(out)
    assert out["sampling"]["nfe"] == 20 and out["nll"]["nfe"] > 0
    # per example, as the others: 8 draws, 8 evaluations (it said 1: one batched call)
    assert out["elbo_nll"]["nfe"] == 8 == out["elbo_bits_per_dim"]["nfe"]
    assert all(r["seconds"] >= 0 for r in out.values())
    # Exact score: the NLL is the data's exact -log p (at eps = 1e-5) up to solver error, and the
    # ELBO bounds it from above within its Monte Carlo error.
    # evaluate drew its 300 test points first from g (then the floors' reference); 16 were scored.
    data = mix.sample(300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)[:16]
    assert out["nll"]["value"] == pytest.approx(-mix.log_prob(data).mean().item(), abs=1e-2)
    assert out["elbo_nll"]["value"] > out["nll"]["value"] - 4 * out["elbo_nll"]["stderr"]
    assert out["nll"]["value"] / (2 * math.log(2)) == pytest.approx(out["bits_per_dim"]["value"])
    # Exact samples: the sample metrics sit near their floors.
    assert out["mode_weights"]["value"] < 0.1
    assert out["sw2"]["value"] < 3 * out["sw2"]["floor"] and out["mmd2"]["floor"] is not None
    assert out["log_density"]["value"] == pytest.approx(out["log_density"]["floor"], abs=0.3)
    table = format_table(out)
    assert "mode_weights" in table and "NFE" in table.splitlines()[0]


def test_evaluate_bad_arguments():
    mix, sde = _mixture(), VPSDE()
    score = mix.score_fn(sde)
    with pytest.raises(ValueError, match="sampler must be one of"):
        evaluate(score, mix, sde=sde, sampler="eulr")
    with pytest.raises(TypeError, match="sampler must be a method name or an sdescore.Solver"):
        evaluate(score, mix, sde=sde, sampler=3)
    with pytest.raises(ValueError, match="metrics must be one of"):
        evaluate(score, torch.randn(10, 2), sde=sde, metrics=("fid",))
    with pytest.raises(ValueError, match="needs data given as"):
        evaluate(score, torch.randn(10, 2), sde=sde, metrics=("mixture",))
    with pytest.raises(TypeError, match=r"sample_options= is now the sampler object"):
        evaluate(score, mix, sde=sde, sample_options=["steps", 3])
    with pytest.raises(TypeError, match=r"likelihood must be a bool or a dict"):
        evaluate(score, mix, sde=sde, likelihood="yes")
    with pytest.raises(TypeError, match=r"verbose= is now print\(sdescore.metrics.format_table"):
        evaluate(score, mix, sde=sde, verbose=True)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(score, torch.full((10, 2), float("nan")), sde=sde)


def test_format_table_refuses_what_evaluate_does_not_return():
    # Issue 25, item 15: an AttributeError ('list' object has no attribute 'items') before.
    with pytest.raises(TypeError, match="results must be the dict evaluate returns.*got list"):
        format_table([1, 2])
    with pytest.raises(TypeError, match="got a dict holding float"):
        format_table({"sw2": 0.3})
    assert "sw2" in format_table({"sw2": {"value": 0.3, "stderr": 0.01}})


def test_data_of_another_shape_than_the_model_takes_is_named():
    # Trial 3 item 6: "x must have shape (B, 2), got (10, 3)", a batch of samples, from mlp.py.
    model = sdescore.ScoreModel(sdescore.MLPScoreNet(2, hidden=8, depth=1), VPSDE())
    with pytest.raises(ValueError, match=r"data must have shape \(N, 2\) for this model's MLPScoreNet, got \(20, 3\)"):  # fmt: skip
        evaluate(model, torch.randn(20, 3), num_samples=10)


def test_evaluate_warns_but_scores_model_samples_beyond_the_digits_range():
    # Trial 3 item 3: the digits metrics refuse images beyond [-1.5, 1.5]; evaluate's samples
    # are the model's own (the caller cannot rescale them): scored, with a warning. Data in
    # 0..255 are still refused.
    pytest.importorskip("sklearn")
    pytest.importorskip("torchmetrics")
    test = sdescore.metrics.digits_data("test")[0][:40].double()
    score = lambda x, t: -3.0 * x  # noqa: E731 (samples far wider than the data)
    with pytest.warns(UserWarning, match=r"samples reach values from .* beyond \[-1.5, 1.5\]"):
        out = evaluate(score, test, sde=VPSDE(), num_samples=40, likelihood=False,
                       metrics=("fid_digits",), generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert math.isfinite(out["fid_digits"]["value"])
    with pytest.raises(ValueError, match=r"real must be images in \[-1, 1\]"):
        evaluate(score, (test + 1) * 127.5, sde=VPSDE(), num_samples=40, likelihood=False,
                 metrics=("fid_digits",), generator=torch.Generator().manual_seed(0))  # fmt: skip
