"""Fréchet distance: closed forms in float64, agreement with torchmetrics, bad inputs."""

import pytest
import torch

from sdescore.metrics import (
    feature_statistics,
    frechet_distance,
    frechet_distance_features,
)


def _spd(d, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_identical_gaussians_give_zero():
    cov, mu = _spd(6, 0), torch.arange(6.0, dtype=torch.float64)
    assert frechet_distance(mu, cov, mu, cov).item() == pytest.approx(0, abs=1e-10)


def test_mean_shift_gives_squared_norm():
    cov = _spd(5, 1)
    mu = torch.zeros(5, dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    d2 = frechet_distance(mu, cov, mu + shift, cov)
    assert d2.dtype == torch.float64
    assert d2.item() == pytest.approx(shift.square().sum().item(), rel=1e-10)


def test_diagonal_covariances_closed_form():
    a = torch.tensor([0.5, 1.0, 4.0, 9.0], dtype=torch.float64)
    b = torch.tensor([2.0, 1.0, 1.0, 0.25], dtype=torch.float64)
    mu = torch.zeros(4, dtype=torch.float64)
    d2 = frechet_distance(mu, torch.diag(a), mu, torch.diag(b))
    assert d2.item() == pytest.approx((a.sqrt() - b.sqrt()).square().sum().item(), rel=1e-12)


def test_symmetric_and_nonnegative():
    mu1, mu2 = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    c1, c2 = _spd(8, 2), _spd(8, 3)
    d12, d21 = frechet_distance(mu1, c1, mu2, c2), frechet_distance(mu2, c2, mu1, c1)
    assert d12.item() > 0
    assert d12.item() == pytest.approx(d21.item(), rel=1e-10)


def test_singular_covariance_clipped_and_reported():
    # 3 points in 10 dimensions: a rank-2 sample covariance, eigenvalues ~ -1e-16 from round-off.
    g = torch.Generator().manual_seed(4)
    f = torch.randn(3, 10, generator=g, dtype=torch.float64)
    mu, cov = feature_statistics(f)
    info = frechet_distance(mu, cov, mu, cov, return_info=True)
    assert info.clipped > 0 and info.min_eigenvalue <= 0
    assert info.distance.item() == pytest.approx(0, abs=1e-7)


def test_not_psd_warns():
    mu = torch.zeros(2, dtype=torch.float64)
    bad = torch.diag(torch.tensor([1.0, -0.5], dtype=torch.float64))
    with pytest.warns(UserWarning, match="not positive semi-definite"):
        frechet_distance(mu, bad, mu, torch.eye(2, dtype=torch.float64))


def test_agrees_with_torchmetrics():
    fid_mod = pytest.importorskip(
        "torchmetrics.image.fid", reason="torchmetrics (the metrics extra)"
    )
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 16, generator=g, dtype=torch.float64)
    y = 0.8 * torch.randn(200, 16, generator=g, dtype=torch.float64) + 0.3
    ours = frechet_distance_features(x, y).item()
    theirs = fid_mod._compute_fid(*feature_statistics(x), *feature_statistics(y)).item()
    assert ours == pytest.approx(theirs, rel=1e-6)


@pytest.mark.parametrize(
    ("args", "err", "match"),
    [
        ((torch.zeros(3, 2), torch.eye(2)), ValueError, "mu1 must have shape"),
        ((torch.zeros(2), torch.eye(3)), ValueError, "cov1 must have shape"),
        ((torch.zeros(2), torch.full((2, 2), float("nan"))), ValueError, "NaN"),
        ((torch.zeros(2, dtype=torch.int64), torch.eye(2)), TypeError, "floating-point"),
    ],
)
def test_bad_statistics(args, err, match):
    with pytest.raises(err, match=match):
        frechet_distance(*args, torch.zeros(2), torch.eye(2))


def test_different_feature_sizes():
    with pytest.raises(ValueError, match="same feature size"):
        frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(3))
    with pytest.raises(ValueError, match="same point shape"):
        frechet_distance_features(torch.randn(5, 2), torch.randn(5, 3))


def test_bad_feature_sets():
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance_features(torch.randn(1, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"shape \(N, d\)"):
        frechet_distance_features(torch.randn(5, 3, 2), torch.randn(5, 3, 2))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance_features(torch.full((4, 3), float("nan")), torch.randn(5, 3))
