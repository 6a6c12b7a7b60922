"""LinearSDE: marginals derived by quadrature agree with every closed form to 1e-8 (relative)."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sdescore

from problems import cosine_log_alpha, cosine_sde, vp_as_linear

# These check the kernel's mathematics over random schedules, most far from their prior at T.
pytestmark = pytest.mark.filterwarnings("ignore:.*far from the prior:UserWarning")

T_GRID = torch.tensor([0.0, 1e-8, 1e-6, 1e-4, 1e-2, 0.1, 0.333, 0.5, 0.9, 1.0], dtype=torch.float64)
TOL = 1e-8


def _rel_err(a, b):
    return ((a - b).abs() / b.abs().clamp_min(1e-300)).max().item()


def test_vp_written_as_linear_sde():
    ref, lin = sdescore.VPSDE(0.1, 20.0), vp_as_linear(0.1, 20.0)
    t = T_GRID[1:]
    assert _rel_err(lin.alpha(t), ref.alpha(t)) < TOL
    assert _rel_err(lin.sigma(t), ref.sigma(t)) < TOL
    assert _rel_err(lin.log_snr(t), ref.log_snr(t)) < TOL
    assert lin.prior_std == pytest.approx(1.0, abs=1e-12)


def test_subvp_written_as_linear_sde():
    ref = sdescore.SubVPSDE(0.1, 20.0)
    # sigma ~ t near 0 here (g(0) = 0): the partial-panel quadrature keeps it relative-accurate
    lin = sdescore.LinearSDE(
        lambda t: -0.5 * (0.1 + 19.9 * t),
        lambda t: torch.sqrt((0.1 + 19.9 * t) * -torch.expm1(-2 * (0.1 * t + 9.95 * t * t))),
    )
    t = T_GRID[1:]
    assert _rel_err(lin.alpha(t), ref.alpha(t)) < TOL
    assert _rel_err(lin.sigma(t), ref.sigma(t)) < TOL


def test_ve_written_as_linear_sde_uses_the_exact_kernel():
    ve = sdescore.VESDE(0.01, 50.0)
    lin = sdescore.LinearSDE(lambda t: torch.zeros_like(t), ve.diffusion)
    t = T_GRID[1:]
    exact = torch.sqrt(ve.sigma(t) ** 2 - 0.01**2)  # variance accumulated from t = 0
    assert _rel_err(lin.sigma(t), exact) < TOL
    assert lin.alpha(t).eq(1).all()
    assert lin.sigma(0.0).item() == 0.0


def test_cosine_schedule_against_its_closed_form():
    sde = cosine_sde()
    t = T_GRID[1:-1]
    assert _rel_err(sde.log_alpha(t), cosine_log_alpha(t)) < TOL
    # variance preserving by construction: sigma^2 = 1 - alpha^2
    ref = torch.sqrt(-torch.expm1(2 * cosine_log_alpha(t)))
    assert _rel_err(sde.sigma(t), ref) < TOL


@given(st.floats(-2.0, 2.0), st.floats(0.1, 3.0), st.floats(0.3, 3.0))
def test_constant_coefficients(a, c, T):
    # dx = a x dt + c dw: sigma^2 = c^2 (e^{2 a t} - 1) / (2 a)
    sde = sdescore.LinearSDE(lambda t: a, lambda t: c, T=T)
    t = torch.tensor([1e-6, 0.1 * T, 0.5 * T, T], dtype=torch.float64)
    var = c * c * t if a == 0 else c * c * torch.expm1(2 * a * t) / (2 * a)
    assert _rel_err(sde.sigma(t) ** 2, var) < TOL
    assert _rel_err(sde.alpha(t), torch.exp(a * t)) < TOL


def test_float32_and_batched_time_shapes():
    sde = vp_as_linear()
    t32 = torch.rand(7, 3, dtype=torch.float32)
    s = sde.sigma(t32)
    assert s.dtype == torch.float32 and s.shape == (7, 3)
    assert torch.allclose(s.double(), sdescore.VPSDE().sigma(t32.double()), rtol=1e-5)


def test_default_prior_is_the_marginal_scale_of_unit_data():
    sde = sdescore.LinearSDE(lambda t: torch.zeros_like(t), lambda t: 2.0 * torch.ones_like(t))
    assert sde.prior_std == pytest.approx(math.sqrt(1 + 4.0), rel=1e-12)
    assert sdescore.LinearSDE(lambda t: 0 * t, lambda t: 1 + 0 * t, prior_std=3.0).prior_std == 3.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"f": 1.0, "g": lambda t: t}, "f must be callable"),
        ({"f": lambda t: t, "g": "g"}, "g must be callable"),
        ({"f": lambda t: t, "g": lambda t: 0 * t}, "g\\(t\\) must be nonzero"),
        ({"f": lambda t: t / 0, "g": lambda t: 1 + t}, "finite"),
        ({"f": lambda t: t[:2], "g": lambda t: 1 + t}, "shaped like t"),
        ({"f": lambda t: t, "g": lambda t: 1 + t, "T": -1.0}, "T must be > 0"),
        ({"f": lambda t: t, "g": lambda t: 1 + t, "prior_std": 0.0}, "prior_std must be > 0"),
        ({"f": lambda t: t, "g": lambda t: 1 + t, "panels": 0}, "panels"),
    ],
)
def test_bad_schedules_raise(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sdescore.LinearSDE(**kwargs)


def test_strongly_contracting_schedule_stays_finite():
    # alpha(1) = e^-80 (float32 still holds it): a 1/alpha^2 formulation would overflow float32;
    # sigma^2 -> g^2 / (2 |f|) = 1/160.
    sde = sdescore.LinearSDE(lambda t: -80 + 0 * t, lambda t: 1 + 0 * t)
    t = torch.tensor([0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(sde.sigma(t) ** 2, torch.full_like(t, 1 / 160), rtol=1e-12)
    assert torch.allclose(sde.log_alpha(t), -80 * t, rtol=1e-12)
    assert bool(torch.isfinite(sde.sigma(t.float())).all() and (sde.alpha(t.float()) > 0).all())
    # e^-400 flushes to zero in float32: refused at construction (issue 8), not NaN later.
    with pytest.raises(ValueError, match=r"alpha\(t\) = exp\(-8.*flushes to zero in float32"):
        sdescore.LinearSDE(lambda t: -400 + 0 * t, lambda t: 1 + 0 * t)
