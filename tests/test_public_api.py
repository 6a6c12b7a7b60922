"""The public entry points stay small: no callable over 12 parameters (DESIGN.md, 'API rules')."""

from __future__ import annotations

import inspect

import pytest

import sdescore

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
