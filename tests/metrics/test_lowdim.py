"""Sliced Wasserstein-2, MMD and the exact mixture metrics on Gaussians with known answers."""

import math

import pytest
import torch

from sdescore.metrics import mixture_metrics, mmd, mmd_squared, sliced_wasserstein, wasserstein2_1d
from sdescore.toy import GaussianMixture, eight_gaussians


def test_w2_1d_unequal_sizes_exact():
    # {0, 1} vs {0, 0.5, 1}: quantiles differ by 0.5 on (1/3, 1/2) and (1/2, 2/3): W2^2 = 2 * 0.25/6.
    a = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64)
    assert wasserstein2_1d(a, b).item() == pytest.approx(0.25 / 3, rel=1e-12)
    assert wasserstein2_1d(b, b).item() == 0


def test_sw2_between_gaussians_closed_form():
    # N(m1, s1^2 I) vs N(m2, s2^2 I) in d dims: SW2^2 = |m1 - m2|^2 / d + (s1 - s2)^2.
    g = torch.Generator().manual_seed(0)
    d, n = 3, 2000
    m = torch.tensor([0.5, -0.5, 0.5], dtype=torch.float64)
    x = 2.0 * torch.randn(n, d, generator=g, dtype=torch.float64) + m
    y = 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    exact = m.square().sum().item() / d + 1.5**2
    res = sliced_wasserstein(x, y, projections=500, generator=g)
    # Projection Monte Carlo (stderr ~0.4 %) plus sampling error of n = 2000 (~1 %): 3 %.
    assert res.extra["sw2_squared"] == pytest.approx(exact, rel=0.03)
    assert res.value == pytest.approx(math.sqrt(res.extra["sw2_squared"]))


def test_sw2_floor_and_shapes():
    g = torch.Generator().manual_seed(1)
    y, ref = torch.randn(500, 2, generator=g), torch.randn(800, 2, generator=g)
    x = torch.randn(500, 2, generator=g) + 1.0
    res = sliced_wasserstein(x, y, reference=ref, generator=g)
    assert res.floor < 0.2 < res.value and res.extra["floor_n"] == 500
    with pytest.raises(ValueError, match="same point shape"):
        sliced_wasserstein(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        sliced_wasserstein(x[:1], y)
    with pytest.raises(ValueError, match=r"shape \(N, \*D\)"):
        sliced_wasserstein(torch.randn(5), y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sw2_is_finite_and_scales_for_huge_finite_data(dtype):
    # Issue 25, item 5: at 1e20 (float32) the value was inf and the stderr NaN. SW2 is
    # homogeneous of degree 1, so the result at 1e20 is 1e20 times the result at 1.
    g = torch.Generator().manual_seed(2)
    x, y, ref = (torch.randn(200, 3, generator=g, dtype=dtype) for _ in range(3))
    small = sliced_wasserstein(x, y, reference=ref, generator=torch.Generator().manual_seed(0))
    big = sliced_wasserstein(
        x * 1e20, y * 1e20, reference=ref * 1e20, generator=torch.Generator().manual_seed(0)
    )
    tol = 1e-5 if dtype == torch.float32 else 1e-12  # the scaling's rounding
    for field in ("value", "stderr", "floor"):
        assert math.isfinite(getattr(big, field))
        assert getattr(big, field) == pytest.approx(1e20 * getattr(small, field), rel=tol)
    assert big.extra["sw2_squared"] == pytest.approx(1e40 * small.extra["sw2_squared"], rel=tol)


def test_w2_1d_refuses_mismatched_or_empty_rows():
    # Issue 25, item 15: a RuntimeError or an IndexError from deep inside before.
    with pytest.raises(ValueError, match="same number of rows P, got 3 and 2"):
        wasserstein2_1d(torch.randn(3, 5), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"a must have shape \(P, N\) with N >= 1.*\(3, 0\)"):
        wasserstein2_1d(torch.randn(3, 0), torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"b must have shape \(P, N\)"):
        wasserstein2_1d(torch.randn(3, 5), torch.randn(5))
    with pytest.raises(TypeError, match="b must be a floating-point tensor"):
        wasserstein2_1d(torch.randn(3, 5), [1.0, 2.0])


def test_mmd_unbiased_under_null():
    # 200 repeats of MMD^2_u between two samples of N(0, I_2) of size 50: mean 0 within 4 sigma.
    g = torch.Generator().manual_seed(2)
    vals = torch.tensor(
        [
            mmd_squared(torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g))[0].item()
            for _ in range(200)
        ]
    )
    se = vals.std().item() / math.sqrt(len(vals))
    assert abs(vals.mean().item()) < 4 * se


def test_mmd_detects_shift_and_p_values():
    g = torch.Generator().manual_seed(3)
    y = torch.randn(200, 2, generator=g, dtype=torch.float64)
    same = mmd(torch.randn(200, 2, generator=g, dtype=torch.float64), y, generator=g)
    shifted = mmd(torch.randn(200, 2, generator=g, dtype=torch.float64) + 0.5, y, generator=g)
    assert shifted.extra["p_value"] == pytest.approx(1 / 201)  # no permutation beats it
    assert same.extra["p_value"] > 0.01 and shifted.value > 10 * same.stderr
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        mmd(y, y, bandwidth=0.0)


def test_mixture_metrics_exact_samples_match_truth():
    mix = GaussianMixture(
        torch.tensor([[-3.0, 0.0], [3.0, 0.0]]), torch.tensor([0.5, 1.0]), weights=[0.3, 0.7]
    )
    g = torch.Generator().manual_seed(4)
    exact = mixture_metrics(mix.sample(4000, generator=g, dtype=torch.float64), mix, generator=g)
    # Weights: binomial stderr sqrt(.21/4000) = 0.007 per mode; spreads within 5 %.
    assert exact["mode_weights"].value < 0.03 and exact["mode_spreads"].value < 0.05
    lp = exact["log_density"]
    assert lp.value == pytest.approx(
        lp.floor, abs=5 * math.hypot(lp.stderr, lp.extra["floor_stderr"])
    )
    # A collapsed model: every sample on the first mode, spread halved.
    bad = torch.randn(4000, 2, generator=g, dtype=torch.float64) * 0.25 + torch.tensor([-3.0, 0.0])
    worse = mixture_metrics(bad, mix, generator=g)
    assert worse["mode_weights"].value == pytest.approx(0.7, abs=1e-6)
    assert worse["mode_spreads"].value == pytest.approx(0.5, abs=0.05)  # the empty mode is NaN
    assert torch.isnan(worse["mode_spreads"].extra["spreads"][1])
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        mixture_metrics(torch.randn(10, 3), mix)
    with pytest.raises(TypeError, match="GaussianMixture"):
        mixture_metrics(bad, "mix")


def test_mixture_metrics_far_samples_are_finite_and_not_a_perfect_score():
    # Issue 25, item 5: samples at 1e30 rounded every responsibility to a tie, so the mode
    # weights scored a perfect 1e-16; at 1e150 the spreads overflowed to NaN and were dropped
    # (a "perfect" 0). All samples along mode 0's direction: every weight on mode 0.
    mix = eight_gaussians()
    g = torch.Generator().manual_seed(5)
    for far in (1e30, 1e150):
        x = (
            far
            * (1 + torch.rand(64, 1, generator=g, dtype=torch.float64))
            * torch.tensor([[1.0, 0.0]], dtype=torch.float64)
        )
        res = mixture_metrics(x, mix, generator=g)
        assert res["mode_weights"].value == pytest.approx(7 / 8, abs=1e-12)
        assert res["mode_spreads"].value == pytest.approx(far * 1.5 / 0.5 / math.sqrt(2), rel=0.2)
        for m in res.values():
            assert math.isfinite(m.value) and (m.stderr is None or math.isfinite(m.stderr))
    # Beyond float64's range for the log-density: refused, not -inf with a NaN error bar.
    with pytest.raises(ValueError, match=r"samples\[0\] lies so far from the mixture"):
        mixture_metrics(torch.full((4, 2), 1e200, dtype=torch.float64), mix)
