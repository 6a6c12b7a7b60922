"""No NaN at any step count >= 1, for every kernel-based sampler and every kind of SDE.

The 2021 reference ancestral sampler returns NaN for steps <= 20 (beta_i = beta_max / N > 1).
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sdescore

from problems import make_sdes, mixture_2d

SDES = make_sdes()


@pytest.mark.parametrize("kind", sorted(SDES))
@given(
    steps=st.integers(1, 25),
    method=st.sampled_from(
        ["euler_maruyama", "reverse_diffusion", "ancestral", "pc", "annealed_langevin"]
    ),
)
def test_no_nan_at_any_step_count(kind, steps, method):
    # The 2021 reference ancestral sampler returns NaN for steps <= 20 (beta_i = beta_max/N > 1).
    sde = SDES[kind]
    data = mixture_2d()
    x = sde.reverse(data.score_fn(sde)).sample(
        (32, 2), method=method, steps=steps, generator=torch.Generator().manual_seed(steps)
    )
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("kind", sorted(SDES))
@given(steps=st.integers(1, 25), order=st.integers(1, 3), multistep=st.booleans())
def test_dpm_solver_no_nan_at_any_step_count(kind, steps, order, multistep):
    sde = SDES[kind]
    pf = sde.probability_flow(mixture_2d().score_fn(sde))
    res = pf.sample(
        (32, 2),
        steps=steps,
        method=sdescore.DPMSolver(order=order, multistep=multistep),
        return_info=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.isfinite(res.samples).all() and res.nfe == steps
