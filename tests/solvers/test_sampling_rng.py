"""Randomness is injected: with `generator=` no sampler reads or advances torch's global RNG.

torchsde's Brownian interval draws from the global RNG after seeding it; before the adapter
forked the RNG, every torchsde method advanced the caller's global stream (issue 8, s. 3).
"""

from __future__ import annotations

import pytest
import torch

import sdescore
from sdescore.solvers import ODE_METHODS, SDE_METHODS
from sdescore.solvers.torchdiffeq_sample import ODE_ADAPTIVE

SDE = sdescore.VPSDE(0.1, 20.0)
DATA = sdescore.toy.eight_gaussians()


def _draw(process, method):
    g = torch.Generator().manual_seed(0)
    steps = None if method in (*ODE_ADAPTIVE, "gotta_go_fast") else 8
    return process.sample((32, 2), method=method, steps=steps, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(
    "process,method",
    [("sde", m) for m in SDE_METHODS] + [("ode", m) for m in ODE_METHODS],
)
def test_sampling_with_a_generator_leaves_the_global_rng_alone(process, method):
    score = DATA.score_fn(SDE)
    proc = SDE.reverse(score) if process == "sde" else SDE.probability_flow(score)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    a = _draw(proc, method)
    assert torch.equal(before, torch.get_rng_state()), "the global RNG was advanced"
    torch.manual_seed(2)  # another global state: the result must not depend on it
    b = _draw(proc, method)
    assert torch.equal(a, b)
