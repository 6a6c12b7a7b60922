"""The exact-score oracle: densities normalised, scores equal autograd gradients, exact sampling."""

import math

import pytest
import torch

import sdescore
from sdescore.toy import GaussianMixture, eight_gaussians, gaussian

from problems import image_gaussian, make_sdes, mixture_2d

SDES = make_sdes()


def test_log_prob_is_normalised_in_2d():
    data = mixture_2d()
    u = torch.linspace(-6, 6, 801, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    p = data.log_prob(grid).exp().reshape(801, 801)
    assert abs(torch.trapezoid(torch.trapezoid(p, u), u).item() - 1) < 1e-9


def test_single_gaussian_matches_torch_distributions():
    cov = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    data = gaussian(mean, covariance=cov)
    ref = torch.distributions.MultivariateNormal(mean, cov)
    x = torch.randn(10, 2, dtype=torch.float64)
    assert torch.allclose(data.log_prob(x), ref.log_prob(x), rtol=1e-13)
    assert torch.allclose(data.score(x), -(x - mean) @ torch.linalg.inv(cov), rtol=1e-12)


@pytest.mark.parametrize("name", sorted(SDES))
@pytest.mark.parametrize("make", [mixture_2d, lambda: image_gaussian((2, 3, 3))])
def test_marginal_score_is_the_gradient_of_marginal_log_prob(name, make):
    sde, data = SDES[name], make()
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(6, *data.event_shape, generator=g, dtype=torch.float64)
    t = torch.rand(6, generator=g, dtype=torch.float64) * sde.T
    xg = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(data.marginal_log_prob(xg, t, sde).sum(), xg)[0]
    assert torch.allclose(data.marginal_score(x, t, sde), grad, rtol=1e-11, atol=1e-12)
    assert data.score_fn(sde)(x, t).shape == x.shape


def test_marginal_is_the_data_convolved_with_the_kernel():
    # p_t(x) = E_{x0 ~ p0}[N(x; alpha x0, sigma^2 I)], by Monte Carlo over 400k data draws
    sde, data = SDES["vp"], mixture_2d()
    x0 = data.sample(400_000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    t = torch.tensor([0.2], dtype=torch.float64)
    a, s = sde.alpha(t).item(), sde.sigma(t).item()
    x = torch.tensor([[0.3, -0.2], [-1.0, 0.4]], dtype=torch.float64)
    for xi in x:
        k = torch.exp(-0.5 * ((xi - a * x0) ** 2).sum(1) / s**2) / (2 * math.pi * s**2)
        est, se = k.mean().item(), k.std().item() / math.sqrt(k.numel())
        exact = data.marginal_log_prob(xi[None], t, sde).exp().item()
        assert abs(est - exact) < 4 * se


def test_sampling_moments_and_mode_weights():
    data = mixture_2d()
    n = 200_000
    x = data.sample(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cov = data.covariance()
    se = (cov.diagonal() / n).sqrt()
    assert ((x.mean(0) - data.mean()).abs() < 4 * se).all()
    emp = torch.cov(x.T)
    assert torch.allclose(emp, cov, atol=4 * cov.diagonal().max().item() * math.sqrt(2 / n))
    # the first mode (weight 0.3) is the one with x < -0.25 almost surely
    frac = (x[:, 0] < -0.25).double().mean().item()
    assert abs(frac - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n) + 1e-3


def test_eight_gaussians_geometry_and_dtype():
    data = eight_gaussians()
    assert data.num_components == 8 and data.event_shape == (2,)
    x = data.sample(1000, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32
    r = x.norm(dim=1)
    assert 3.0 < r.mean().item() < 4.2
    assert data.log_prob(x).dtype == torch.float32


def test_sampling_is_reproducible():
    data = image_gaussian()
    a = data.sample(5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    b = data.sample(5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert torch.equal(a, b) and a.shape == (5, 1, 4, 4)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: GaussianMixture(torch.zeros(2, 2)), "exactly one of stds"),
        (lambda: GaussianMixture(torch.zeros(2, 2), -1.0), "stds must be finite and > 0"),
        (lambda: GaussianMixture(torch.zeros(2), 1.0), r"means must have shape \(K, \*D\)"),
        (
            lambda: GaussianMixture(torch.zeros(2, 2), covariances=torch.eye(2)[None]),
            "covariances must have shape",
        ),
        (
            lambda: GaussianMixture(torch.zeros(1, 2), covariances=-torch.eye(2)[None]),
            "positive definite",
        ),
        (
            lambda: GaussianMixture(torch.zeros(2, 2), 1.0, weights=torch.tensor([1.0, -1.0])),
            "weights",
        ),
        # a std per dimension leaked torch's expand error (found by a user's trial)
        (
            lambda: GaussianMixture(torch.zeros(3, 2), torch.ones(2)),
            r"stds must be a float or one per component, shape \(3,\).*got shape \(2,\)",
        ),
        (
            lambda: gaussian(torch.tensor([0.7, -1.0]), torch.tensor([0.4, 1.5])),
            r"std must be a float .*shape \(2,\).*covariance=torch.diag",
        ),
    ],
)
def test_bad_mixtures(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_bad_queries():
    data = mixture_2d()
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        data.log_prob(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="sde must be a GaussianSDE"):
        data.marginal_score(torch.zeros(3, 2), 0.5, object())
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        data.sample(0)


@pytest.mark.parametrize("name", sorted(sdescore.toy.TOY_DATASETS))
def test_toy_datasets(name):
    a = sdescore.toy.sample_toy(
        name, 2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    b = sdescore.toy.sample_toy(
        name, 2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    assert a.shape == (2000, 2) and a.dtype == torch.float64 and torch.equal(a, b)
    assert torch.isfinite(a).all() and a.abs().max() < 6.5 and a.std(0).min() > 0.5
    with pytest.raises(ValueError, match="unknown toy dataset"):
        sdescore.toy.sample_toy("spiral", 10)


def test_checkerboard_only_fills_dark_squares():
    x = sdescore.toy.checkerboard().sample(5000, generator=torch.Generator().manual_seed(0))
    cells = torch.floor((x + 4) / 2).long()
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()


@pytest.mark.parametrize("name", sorted(sdescore.toy.TOY_DATASETS))
def test_every_toy_dataset_has_one_calling_convention(name):
    # Issue 8 s.5: eight_gaussians() returned an object, two_moons(n) a tensor. Now every
    # sdescore.toy.<name>() is an object with .sample(n, *, generator, device, dtype).
    data = getattr(sdescore.toy, name)()
    x = data.sample(100, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert x.shape == (100, 2) and x.dtype == torch.float64
    assert data.sample(3).dtype == torch.get_default_dtype()
    same = sdescore.toy.sample_toy(
        name, 100, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    assert torch.equal(x, same)
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        data.sample(0)


@pytest.mark.parametrize("name", ["two_moons", "checkerboard", "swiss_roll", "rings"])
def test_old_tensor_form_still_works_with_a_deprecation_warning(name):
    make = getattr(sdescore.toy, name)
    with pytest.warns(DeprecationWarning, match=rf"{name}\(n\) returning a tensor is deprecated"):
        old = make(50, generator=torch.Generator().manual_seed(2))
    new = make().sample(50, generator=torch.Generator().manual_seed(2))
    assert torch.equal(old, new)
    with pytest.raises(TypeError, match=r"belong to .*\.sample\(n, \.\.\.\)"):
        make(generator=torch.Generator())


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: GaussianMixture(torch.tensor([[0.0, NAN]]), 1.0), "means must be finite"),
        (lambda: GaussianMixture(torch.tensor([[0.0, INF]]), 1.0), "means must be finite"),
        (lambda: GaussianMixture(torch.zeros(2, 2), [1.0, NAN]), "stds must be finite"),
        (lambda: GaussianMixture(torch.zeros(2, 2), 1.0, weights=[1.0, INF]), "weights must be"),
        (lambda: GaussianMixture(torch.zeros(2, 2), 1.0, weights=[1.0, NAN]), "weights must be"),
        (
            lambda: GaussianMixture(torch.zeros(1, 2), covariances=torch.full((1, 2, 2), NAN)),
            "covariances must be finite",
        ),
        (lambda: eight_gaussians(radius=NAN), "radius must be finite"),
        (lambda: eight_gaussians(std=INF), "std must be finite"),
        (lambda: gaussian(torch.tensor([NAN]), 1.0), "means must be finite"),
        (lambda: sdescore.toy.two_moons(noise=NAN), "noise must be finite"),
        (lambda: sdescore.toy.swiss_roll(noise=-1.0), "noise must be >= 0"),
        (lambda: sdescore.toy.rings(noise=INF), "noise must be finite"),
    ],
)
def test_non_finite_toy_parameters_are_refused_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(("dtype", "far"), [(torch.float32, 1e20), (torch.float64, 1e30)])
def test_far_points_give_finite_scores_and_resolved_responsibilities(dtype, far):
    # Issue 25, item 5: at 1e20 in float32 the squares overflowed and the score was NaN; far out
    # in float64 every component rounded to a tie (mode weights then looked perfect). Along the
    # direction of mode 3 of eight_gaussians its responsibility is 1: a neighbour's logit is
    # |x| radius (1 - cos 45 deg) / (2 std^2) = 2.3 |x| nats behind.
    data = sdescore.toy.eight_gaussians()
    angle = 3 * math.pi / 4
    x = far * torch.tensor([[math.cos(angle), math.sin(angle)]], dtype=dtype)
    score = data.score(x)
    assert torch.isfinite(score).all()
    # The exact score is -(x - mu_3) / std^2 = -4 x to relative 1e-19 here.
    assert torch.allclose(score, -4 * x, rtol=1e-6 if dtype == torch.float32 else 1e-14)
    sde = sdescore.VPSDE()
    clf = sdescore.toy.MixtureClassifier(data, sde)
    for t in (0.0, 0.5):
        r = clf.log_prob(x, t).exp()
        assert torch.isfinite(r).all() and r[0, 3].item() == pytest.approx(1.0, abs=1e-12)
        assert torch.isfinite(data.marginal_score(x, t, sde)).all()
    if dtype == torch.float64:  # the log-density itself fits float64 at 1e30
        expected = -0.5 * ((x[0] - data._base["mu"][3]) / 0.5).square().sum() - math.log(
            8 * 2 * math.pi * 0.25
        )
        assert data.log_prob(x).item() == pytest.approx(expected.item(), rel=1e-14)


def test_far_points_with_full_covariances_give_finite_scores():
    # The same overflow for components with full covariances (summed in scaled units).
    data = mixture_2d()
    x = torch.tensor([[1e20, -3e19], [-2e20, 1e20]], dtype=torch.float32)
    assert torch.isfinite(data.score(x)).all()
    ref = data.score(x.double())  # float64 holds the squares: the reference
    assert torch.allclose(data.score(x).double(), ref, rtol=1e-5)
