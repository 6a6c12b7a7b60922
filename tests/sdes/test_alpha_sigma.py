"""Construction-time checks of `AlphaSigmaSDE` (trial 4 of a new user's report)."""

import math

import numpy as np
import pytest
import torch

from sdescore import AlphaSigmaSDE, LinearSDE, RectifiedFlowSDE


def _cos(t):
    return torch.cos(0.5 * math.pi * t)


def _sin(t):
    return torch.sin(0.5 * math.pi * t)


def test_a_kernel_whose_alpha_vanishes_at_T_is_refused_with_a_smaller_T_suggested():
    # float64 cos(pi/2) = 6e-17 > 0 passed, then alpha(1) was NaN in float32 and the reverse
    # SDE's float64 samples had mean 6e4 without a word.
    with pytest.raises(ValueError, match=r"alpha\(t\) = 6.1.*e-17 at t = 1 .*>= 1e-06.*T = 0.999"):
        AlphaSigmaSDE(_cos, _sin)
    # Just inside the threshold is refused, the documented T = 0.999 (alpha = 1.6e-3) accepted.
    t_edge = 1 - 2 * 0.9e-6 / math.pi  # alpha(t_edge) = 0.9e-6
    with pytest.raises(ValueError, match=r"alpha\(t\) = 9e-07"):
        AlphaSigmaSDE(_cos, _sin, T=t_edge)
    sde = AlphaSigmaSDE(_cos, _sin, T=0.999)
    assert sde.alpha(torch.tensor([0.999])).item() == pytest.approx(1.5708e-3, rel=1e-4)
    assert RectifiedFlowSDE().T == 0.999  # its own T default is unaffected


def test_given_derivatives_that_do_not_match_the_schedule_are_refused():
    with pytest.raises(ValueError, match=r"alpha_prime is not the derivative of alpha: at t = "):
        AlphaSigmaSDE(_cos, _sin, alpha_prime=lambda t: torch.zeros_like(t), T=0.9)
    # 1% off: well outside the 1e-4 tolerance; the message gives both values.
    with pytest.raises(ValueError, match=r"sigma_prime\(t\) = .* but the central difference"):
        AlphaSigmaSDE(_cos, _sin, sigma_prime=lambda t: 1.01 * 0.5 * math.pi * _cos(t), T=0.9)


def test_correct_given_derivatives_pass_including_a_steep_sqrt_sigma():
    sde = AlphaSigmaSDE(
        _cos,
        _sin,
        alpha_prime=lambda t: -0.5 * math.pi * _sin(t),
        sigma_prime=lambda t: 0.5 * math.pi * _cos(t),
        T=0.999,
    )
    t = torch.tensor([0.3], dtype=torch.float64)
    assert sde.diffusion(t).item() ** 2 == pytest.approx(math.pi * math.tan(0.15 * math.pi))
    # sigma ~ sqrt(t + 1e-6): sigma' is 500 at 0 and 0.5 at 1, the hardest case for the
    # differences (smallest scale near the steepest point).
    AlphaSigmaSDE(
        lambda t: torch.exp(-5 * t),
        lambda t: (t + 1e-6).sqrt(),
        sigma_prime=lambda t: 0.5 / (t + 1e-6).sqrt(),
        T=1.0,
    )


def test_non_torch_maths_in_a_schedule_is_named_with_the_cause_chained():
    with pytest.raises(
        TypeError, match=r"alpha must map a tensor .*torch operations.*autograd"
    ) as e:
        AlphaSigmaSDE(lambda t: torch.as_tensor(np.cos(t.numpy())), torch.sin, T=0.9)
    assert isinstance(e.value.__cause__, RuntimeError)
    with pytest.raises(TypeError, match=r"sigma must map a tensor .*math.exp") as e:
        AlphaSigmaSDE(_cos, lambda t: math.sin(t), T=0.9)
    assert e.value.__cause__ is not None
    with pytest.raises(TypeError, match=r"f must map a tensor of times t of shape \(n,\)") as e:
        LinearSDE(lambda t: -math.exp(t), lambda t: 1.0)
    assert e.value.__cause__ is not None
    with pytest.raises(TypeError, match=r"g must map a tensor"):
        LinearSDE(lambda t: -torch.ones_like(t), lambda t: math.sqrt(t))
    # A wrong shape keeps its own ValueError.
    with pytest.raises(ValueError, match=r"f\(t\) must return a tensor shaped like t"):
        LinearSDE(lambda t: -2 * torch.ones(3), lambda t: 2.0)
