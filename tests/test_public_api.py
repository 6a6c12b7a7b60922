"""The public entry points stay small: no callable over 12 parameters (DESIGN.md, 'API rules')."""

from __future__ import annotations

import inspect

import pytest
import torch

import sdescore
import sdescore.divergence

_PF = sdescore.VPSDE().probability_flow(lambda x, t: -x)
_REV = sdescore.VPSDE().reverse(lambda x, t: -x)
ENTRY_POINTS = [
    sdescore.likelihood,
    sdescore.elbo,
    sdescore.evaluate,
    sdescore.optimize_schedule,
    _PF.sample,
    _PF.encode,
    _PF.decode,
    _REV.sample,
    sdescore.pretrained.load,
    sdescore.ScoreModel,
    sdescore.UNet,
    sdescore.ConditionalUNet,
]


@pytest.mark.parametrize("fn", ENTRY_POINTS, ids=lambda f: getattr(f, "__qualname__", repr(f)))
def test_no_entry_point_takes_more_than_12_parameters(fn):
    assert len(inspect.signature(fn).parameters) <= 12


def test_likelihood_shorthands_are_the_2021_keywords_and_nothing_else():
    # rtol/atol/method ride in **shorthands (so that likelihood stays at 12 parameters with
    # differentiable=); a misspelt one is named, not swallowed.
    x = sdescore.toy.eight_gaussians().sample(4).double()
    res = sdescore.likelihood(
        lambda x, t: -x, x, sde=sdescore.VPSDE(), rtol=1e-6, atol=1e-6, method="dopri5"
    )
    assert res.solver.rtol == 1e-6 and res.solver.method == "dopri5"
    with pytest.raises(TypeError, match="unexpected keyword argument 'rtool'.*'rtol'"):
        sdescore.likelihood(lambda x, t: -x, x, sde=sdescore.VPSDE(), rtool=1e-6)


# Bad `generator=` and `dtype=` are refused at the entry point, naming the argument, what it
# must be and what it got (not torch's error from randn/randint deep inside).
_X = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
_VP = sdescore.VPSDE()
_MIX = sdescore.toy.eight_gaussians()
_IMAGES = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _net():
    return sdescore.ScoreModel(sdescore.MLPScoreNet(2, hidden=8, depth=1), _VP)


GENERATOR_CALLS = {
    "ReverseSDE.sample": lambda g: _REV.sample((8, 2), steps=2, generator=g),
    "ReverseSDE.sample(x_T)": lambda g: _REV.sample(x_T=_X, steps=2, generator=g),
    "ProbabilityFlowODE.sample": lambda g: _PF.sample((8, 2), steps=2, generator=g),
    "likelihood": lambda g: sdescore.likelihood(lambda x, t: -x, _X, sde=_VP, generator=g),
    "likelihood(exact)": lambda g: sdescore.likelihood(
        lambda x, t: -x, _X, sde=_VP, estimator="exact", generator=g
    ),
    "elbo": lambda g: sdescore.elbo(lambda x, t: -x, _X, sde=_VP, generator=g),
    "evaluate": lambda g: sdescore.evaluate(_net(), _X, generator=g),
    "optimize_schedule": lambda g: sdescore.optimize_schedule(_PF, 4, shape=(8, 2), generator=g),
    "dsm_loss": lambda g: sdescore.losses.dsm_loss(lambda x, t: -x, _X, sde=_VP, generator=g),
    "dsm_loss(is)": lambda g: sdescore.losses.dsm_loss(
        lambda x, t: -x, _X, sde=_VP, importance_sampling=True, generator=g
    ),
    "ncsn_loss": lambda g: sdescore.losses.ncsn_loss(
        lambda x, t: -x, _X, sde=sdescore.VESDE(), generator=g
    ),
    "ddpm_loss": lambda g: sdescore.losses.ddpm_loss(lambda x, t: -x, _X, sde=_VP, generator=g),
    "ism_loss": lambda g: sdescore.losses.ism_loss(lambda x, t: -x, _X, sde=_VP, generator=g),
    "ssm_loss": lambda g: sdescore.losses.ssm_loss(lambda x, t: -x, _X, sde=_VP, generator=g),
    "flow_matching_loss": lambda g: sdescore.losses.flow_matching_loss(
        lambda x, t: -x, _X, sde=sdescore.RectifiedFlowSDE(), generator=g
    ),
    "classifier_loss": lambda g: sdescore.losses.classifier_loss(
        lambda x, t: torch.zeros(x.shape[0], 3),
        _X,
        torch.zeros(8, dtype=torch.long),
        sde=_VP,
        generator=g,
    ),
    "label_dropout_loss": lambda g: sdescore.losses.label_dropout_loss(
        sdescore.ConditionalScoreModel(
            sdescore.ConditionalMLPScoreNet(2, 3, hidden=8, depth=1), _VP, num_classes=3
        ),
        _X,
        labels=torch.zeros(8, dtype=torch.long),
        generator=g,
    ),
    "train_step": lambda g: sdescore.train_step(
        (m := _net()), _X, torch.optim.SGD(m.parameters(), lr=0.0), generator=g
    ),
    "SDE.prior_sampling": lambda g: _VP.prior_sampling((8, 2), generator=g),
    "GaussianSDE.perturb": lambda g: _VP.perturb(_X, 0.5, generator=g),
    "dequantize": lambda g: sdescore.dequantize(
        torch.zeros(4, 2, dtype=torch.long), 4, generator=g
    ),
    "draw_probes": lambda g: sdescore.divergence.draw_probes(_X, generator=g),
    "GaussianMixture.sample": lambda g: _MIX.sample(8, generator=g),
    "ToyDataset.sample": lambda g: sdescore.toy.two_moons().sample(8, generator=g),
    "sample_toy": lambda g: sdescore.toy.sample_toy("rings", 8, generator=g),
    "mmd": lambda g: sdescore.metrics.mmd(_X, _X, generator=g),
    "sliced_wasserstein": lambda g: sdescore.metrics.sliced_wasserstein(_X, _X, generator=g),
    "mixture_metrics": lambda g: sdescore.metrics.mixture_metrics(_X, _MIX, generator=g),
    "kid": lambda g: sdescore.metrics.kid(
        _IMAGES, _IMAGES, feature_net=torch.nn.Flatten(), generator=g
    ),
    "kid_digits": lambda g: sdescore.metrics.kid_digits(_IMAGES, _IMAGES, generator=g),
    "inception_score": lambda g: sdescore.metrics.inception_score(
        _IMAGES, logits_net=torch.nn.Flatten(), generator=g
    ),
    "inception_score_digits": lambda g: sdescore.metrics.inception_score_digits(
        _IMAGES, generator=g
    ),
}


@pytest.mark.parametrize("bad", [0, "seed", torch.zeros(1)], ids=["int", "str", "tensor"])
@pytest.mark.parametrize("call", GENERATOR_CALLS.values(), ids=GENERATOR_CALLS.keys())
def test_a_generator_that_is_not_a_torch_generator_is_named(call, bad):
    with pytest.raises(TypeError, match=rf"generator must be a torch\.Generator or None, got "
                       rf"{type(bad).__name__}"):  # fmt: skip
        call(bad)


DTYPE_CALLS = {
    "ReverseSDE.sample": lambda d: _REV.sample((8, 2), steps=2, dtype=d),
    "ProbabilityFlowODE.sample": lambda d: _PF.sample((8, 2), steps=2, dtype=d),
    "ProbabilityFlowODE.sample(dopri5)": lambda d: _PF.sample((8, 2), method="dopri5", dtype=d),
    "optimize_schedule": lambda d: sdescore.optimize_schedule(_PF, 4, shape=(8, 2), dtype=d),
    "SDE.prior_sampling": lambda d: _VP.prior_sampling((8, 2), dtype=d),
    "GaussianMixture.sample": lambda d: _MIX.sample(8, dtype=d),
    "ToyDataset.sample": lambda d: sdescore.toy.checkerboard().sample(8, dtype=d),
    "sample_toy": lambda d: sdescore.toy.sample_toy("swiss_roll", 8, dtype=d),
    "digits_data": lambda d: sdescore.toy.digits_data(dtype=d),
    "dequantize": lambda d: sdescore.dequantize(torch.zeros(4, 2, dtype=torch.long), 4, dtype=d),
    "digits": lambda d: sdescore.toy.digits(dtype=d),
}


@pytest.mark.parametrize(
    "bad, error, got",
    [
        (torch.int64, ValueError, "torch.int64"),
        (torch.bool, ValueError, "torch.bool"),
        (torch.complex64, ValueError, "torch.complex64"),
        ("float64", TypeError, "str 'float64'"),
        (float, TypeError, "type <class 'float'>"),
    ],
    ids=["int64", "bool", "complex64", "str", "python-float"],
)
@pytest.mark.parametrize("call", DTYPE_CALLS.values(), ids=DTYPE_CALLS.keys())
def test_a_dtype_that_is_not_a_floating_torch_dtype_is_named(call, bad, error, got):
    with pytest.raises(error, match=r"dtype must be a floating-point torch\.dtype.*got " + got):
        call(bad)


def _entry_points_taking(param: str) -> set[str]:
    """The public functions and methods (of the public classes) in sdescore's namespaces that
    take `param`, by qualified name."""
    found = set()
    for mod in (sdescore, sdescore.losses, sdescore.metrics, sdescore.toy, sdescore.divergence):
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            members = [obj]
            if inspect.isclass(obj):
                members = [
                    getattr(obj, k) for k in dir(obj) if not k.startswith("_") and k != "bind"
                ]
            for f in members:
                try:
                    params = inspect.signature(f).parameters
                except (TypeError, ValueError):
                    continue
                if param in params and not inspect.isclass(f):
                    found.add(f.__qualname__)
    return found


# Not user entry points: the solver building blocks that receive the sampler's generator, and
# the deprecated `two_moons(n, ...)` forms, which pass theirs on to the checked `.sample`.
_BUILDING_BLOCKS = {"Solver.projection", "Inpainting.projection", "langevin_correct"}
_DEPRECATED = {"two_moons", "checkerboard", "swiss_roll", "rings"}


@pytest.mark.parametrize("param, calls", [("generator", GENERATOR_CALLS), ("dtype", DTYPE_CALLS)])
def test_every_entry_point_taking_generator_or_dtype_is_checked_above(param, calls):
    covered = {k.split("(")[0] for k in calls} | {"sample_sde", "sample_ode"}
    missing = _entry_points_taking(param) - covered - _BUILDING_BLOCKS - _DEPRECATED
    assert missing == set()
