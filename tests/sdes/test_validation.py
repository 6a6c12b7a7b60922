"""Bad input at the public boundary raises a clear ValueError/TypeError naming the argument."""

import math
import warnings

import pytest
import torch

import sdescore

NAN = float("nan")


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: sdescore.VPSDE(-0.1, 20.0), ValueError, "beta_min must be >= 0, got -0.1"),
        (lambda: sdescore.VPSDE(NAN, 20.0), ValueError, "beta_min must be finite"),
        (lambda: sdescore.VPSDE(0.1, 0.0), ValueError, "beta_max must be > 0"),
        (lambda: sdescore.VPSDE(5.0, 1.0), ValueError, "beta_min must be <= beta_max"),
        (lambda: sdescore.SubVPSDE(3.0, 2.0), ValueError, "beta_min must be <= beta_max"),
        (lambda: sdescore.VPSDE("0.1", 20.0), TypeError, "beta_min must be a real number, got str"),
        (lambda: sdescore.VPSDE(0.1, 20.0, T=0.0), ValueError, "T must be > 0, got 0.0"),
        (lambda: sdescore.VESDE(0.01, 50.0, T=-1), ValueError, "T must be > 0"),
        (lambda: sdescore.VESDE(0.0, 50.0), ValueError, "sigma_min must be > 0, got 0.0"),
        (lambda: sdescore.VESDE(50.0, 50.0), ValueError, "sigma_min must be < sigma_max"),
        (lambda: sdescore.VESDE(0.01, float("inf")), ValueError, "sigma_max must be finite"),
    ],
)
def test_bad_sde_parameters(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "make, match",
    [
        # sigma(t)^2 overflows float32 from sigma ~ 1.8e19 on (issue 8: NaN samples before)
        (
            lambda: sdescore.VESDE(0.01, 1e40),
            r"VESDE.*sigma\(t\) = .* overflows float32.*sigma_max",
        ),
        (
            lambda: sdescore.VESDE(0.01, 50.0, T=1000.0),
            r"sigma\(t\) = .*at t = .*sigma_max \(or T\)",
        ),
        # alpha(t) = exp(-t^2 beta_max / 4) flushes to zero in float32 at t ~ 0.02
        (lambda: sdescore.VPSDE(0.1, 1e6), r"VPSDE.*alpha\(t\) = exp.*flushes to zero.*beta_max"),
        (lambda: sdescore.SubVPSDE(0.1, 1e6), r"alpha\(t\) = exp.*flushes to zero.*beta_max"),
        # a growing LinearSDE: alpha = e^{100 t} overflows float32
        (
            lambda: sdescore.LinearSDE(lambda t: 100 + 0 * t, lambda t: 1 + 0 * t),
            r"alpha\(t\) = exp\(8.*overflows float32.*rescale f and g",
        ),
        (
            lambda: sdescore.LinearSDE(lambda t: 0 * t, lambda t: 1e30 + 0 * t),
            r"sigma\(t\) = .* overflows float32",
        ),
        (
            lambda: sdescore.LinearSDE(lambda t: 0 * t, lambda t: 1 + 0 * t, prior_std=1e30),
            r"prior_std = 1e\+30 must be > 0 with a square that fits float32",
        ),
    ],
)
def test_absurd_schedules_are_refused_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_extreme_but_usable_schedules_are_accepted():
    sdescore.VPSDE(0.1, 300.0)  # alpha(1) = e^-75 still fits float32
    sdescore.VESDE(1e-3, 1e15)
    with pytest.warns(UserWarning, match="far from the prior"):  # an expanding SDE: no prior fits
        sdescore.LinearSDE(lambda t: 40 + 0 * t, lambda t: 1 + 0 * t)  # sigma(1) ~ 2e16


def test_positional_contract_signatures():
    assert sdescore.VPSDE(0.2, 10.0).beta_max == 10.0
    assert sdescore.VESDE(0.1, 9.0).sigma_max == 9.0
    with pytest.raises(TypeError):
        sdescore.VPSDE(0.1, 20.0, 2.0)  # T is keyword-only


@pytest.mark.parametrize("t", [1.5, -0.1, NAN])
def test_time_outside_the_interval(t):
    sde, x = sdescore.VPSDE(), torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        sde.marginal_prob(x, t)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        sde.drift(x, torch.full((3,), t))
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        sde.diffusion(torch.tensor([t]))


@pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.bool])
def test_integer_times_are_refused_alike_by_every_entry_point(dtype):
    # alpha refused an integer tensor while drift truncated it into the state's dtype.
    sde, x = sdescore.VPSDE(), torch.zeros(4, 2)
    t = torch.tensor([0, 1, 0, 1]).to(dtype)
    calls = [sde.alpha, sde.sigma, sde.diffusion, sde.drift_coeff, sde.log_snr]
    calls += [lambda t: sde.drift(x, t), lambda t: sde.marginal_prob(x, t)]
    calls += [lambda t: sde.perturb(x, t), lambda t: sde.sde(x, t)]
    for call in calls:
        with pytest.raises(TypeError, match=r"t must be a floating-point tensor, got dtype"):
            call(t)
        with pytest.raises(TypeError, match=r"t must be a floating-point tensor, got dtype"):
            call(t[:1])  # also as a one-element tensor broadcast to the batch


def test_time_batch_mismatch_and_types():
    sde, x = sdescore.VESDE(), torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"t must have shape \(4,\).*got \(3,\)"):
        sde.marginal_prob(x, torch.rand(3))
    with pytest.raises(TypeError, match="t must be a float or a tensor"):
        sde.drift(x, "0.5")
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor"):
        sde.marginal_prob([[0.0, 1.0]], 0.5)
    with pytest.raises(TypeError, match="floating-point"):
        sde.drift(torch.zeros(4, 2, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="batch dimension"):
        sde.drift(torch.tensor(1.0), 0.5)
    with pytest.raises(ValueError, match="noise must be a tensor shaped like x0"):
        sde.perturb(x, 0.5, noise=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="shape must be a tuple of positive ints"):
        sde.prior_sampling((0, 2))


def test_score_of_the_wrong_shape_is_named():
    sde = sdescore.VPSDE()
    rev = sde.reverse(lambda x, t: x[:, :1])
    with pytest.raises(
        ValueError, match=r"score_fn\(x, t\) returned shape \(3, 1\), expected .*\(3, 2\)"
    ):
        rev.drift(torch.zeros(3, 2), 0.5)
    with pytest.raises(TypeError, match="score_fn must be callable"):
        sde.reverse(42)
    with pytest.raises(TypeError, match="probability_flow must be a bool"):
        sde.reverse(lambda x, t: x, probability_flow="yes")
    with pytest.raises(TypeError, match="sde must be an sdescore.SDE"):
        sdescore.ReverseSDE(object(), lambda x, t: x)


def test_user_sde_without_kernel_says_what_to_override():
    class DoubleWell(sdescore.SDE):
        def drift(self, x, t):
            return x - x**3

        def diffusion(self, t):
            return torch.ones_like(t)

    sde = DoubleWell()
    with pytest.raises(NotImplementedError, match="no closed-form perturbation kernel"):
        sde.marginal_prob(torch.zeros(2, 1), 0.5)
    with pytest.raises(NotImplementedError, match="defines no prior"):
        sde.prior_sampling((2, 1))
    with pytest.raises(TypeError, match="abstract"):
        sdescore.SDE()


FAR_FROM_PRIOR = {
    # Issue 25, item 7: 60 % of a datum's variance left at T, sampling silently wrong.
    "discrete_linear_50": lambda: sdescore.DiscreteVPSDE.linear(50),
    "vp_small_beta": lambda: sdescore.VPSDE(0.1, 1.0),
    "subvp_small_beta": lambda: sdescore.SubVPSDE(0.1, 1.0),
    "ve_small_sigma_max": lambda: sdescore.VESDE(0.01, 2.0),
    "brownian_motion": lambda: sdescore.LinearSDE(lambda t: 0 * t, lambda t: 1 + 0 * t),
}


@pytest.mark.parametrize("name", sorted(FAR_FROM_PRIOR))
def test_an_sde_whose_marginal_at_T_is_far_from_its_prior_warns_with_the_mismatch(name):
    with pytest.warns(UserWarning, match="far from the prior") as record:
        sde = FAR_FROM_PRIOR[name]()
    assert record[0].filename == __file__  # points at the user's line, not the library's
    # The message carries the KL divergence per coordinate for a unit-scale datum.
    tT = torch.tensor([sde.T], dtype=torch.float64)
    a, s, p = sde.alpha(tT).item(), sde.sigma(tT).item(), sde.prior_std
    kl = 0.5 * ((a / p) ** 2 + (s / p) ** 2 - 1 - 2 * math.log(s / p))
    assert f"{kl:.3g} nats per coordinate" in str(record[0].message)
    if name == "discrete_linear_50":
        assert "keeps 60.3 % of its variance" in str(record[0].message)


def test_the_shipped_schedules_do_not_warn_about_the_prior():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sdescore.VPSDE(), sdescore.SubVPSDE(), sdescore.VESDE(), sdescore.VESDE(0.01, 10.0)
        sdescore.DiscreteVPSDE.linear(1000)


def test_linear_sde_refuses_a_negative_diffusion():
    # Issue 25, item 16: g < 0 was accepted silently (the kernel only sees g^2).
    with pytest.raises(ValueError, match=r"g\(t\) must be >= 0.*got g\(0\) = -1"):
        sdescore.LinearSDE(lambda t: -0.5 + 0 * t, lambda t: -1 + 0 * t)


def test_same_sde_compares_definitions():
    from sdescore.sdes.base import same_sde

    assert same_sde(sdescore.VPSDE(0.1, 20.0), sdescore.VPSDE(0.1, 20.0))
    assert same_sde(sdescore.VESDE(0.01, 50.0), sdescore.VESDE(0.01, 50.0))
    assert not same_sde(sdescore.VPSDE(0.1, 20.0), sdescore.VPSDE(0.1, 25.0))
    assert not same_sde(sdescore.VPSDE(0.1, 20.0), sdescore.SubVPSDE(0.1, 20.0))
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    a, b = sdescore.DiscreteVPSDE(betas), sdescore.DiscreteVPSDE(betas.clone())
    a.alpha(torch.tensor([0.5], dtype=torch.float64))  # a filled cache does not count
    assert same_sde(a, b)
    assert not same_sde(a, sdescore.DiscreteVPSDE(betas * 1.01))
    f, g = (lambda t: -0.5 * (0.1 + 19.9 * t)), (lambda t: (0.1 + 19.9 * t).sqrt())
    assert same_sde(sdescore.LinearSDE(f, g), sdescore.LinearSDE(f, g))
    assert not same_sde(
        sdescore.LinearSDE(f, g), sdescore.LinearSDE(lambda t: -0.5 * (0.1 + 19.9 * t), g)
    )
