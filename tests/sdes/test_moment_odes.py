"""Marginals against an independent numerical solution of the moment ODEs (scipy, float64).

For dx = f(t) x dt + g(t) dw the kernel's mean coefficient m and variance v obey
dm/dt = f m and dv/dt = 2 f v + g^2 (Särkkä & Solin 2019, eq. (5.51)); DOP853 at rtol 1e-13
gives a reference good to ~1e-11, so 1e-8 relative is a sharp check.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

import sdescore

from problems import make_sdes

# These check the kernel's mathematics over random schedules, most far from their prior at T.
pytestmark = pytest.mark.filterwarnings("ignore:.*far from the prior:UserWarning")


def _moments(sde, ts, v0=0.0):
    def rhs(t, y):
        tt = torch.tensor([t], dtype=torch.float64)
        f = sde.drift_coeff(tt).item()
        g = sde.diffusion(tt).item()
        return [f * y[0], 2 * f * y[1] + g * g]

    sol = solve_ivp(
        rhs,
        (0.0, float(ts[-1])),
        [1.0, v0],
        method="DOP853",
        t_eval=ts,
        rtol=1e-13,
        atol=[1e-16, 1e-22],
    )
    return sol.y[0], sol.y[1]


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "linear_cosine"])
def test_marginals_solve_the_moment_odes(name):
    sde = make_sdes()[name]
    ts = np.array([1e-6, 1e-3, 0.05, 0.3, 0.5, 0.77, sde.T])
    # VE uses the SMLD convention: the kernel starts at std sigma_min, not 0.
    v0 = sde.sigma_min**2 if name == "ve" else 0.0
    m, v = _moments(sde, ts, v0)
    t = torch.tensor(ts, dtype=torch.float64)
    np.testing.assert_allclose(sde.alpha(t).numpy(), m, rtol=1e-9)
    np.testing.assert_allclose(sde.sigma(t).square().numpy(), v, rtol=1e-8)


@settings(max_examples=10)
@given(
    a=st.floats(-3.0, 1.0),
    b=st.floats(-4.0, 4.0),
    c=st.floats(0.05, 4.0),
    d=st.floats(0.0, 9.0),
    T=st.floats(0.2, 2.0),
)
def test_random_linear_sde_solves_the_moment_odes(a, b, c, d, T):
    sde = sdescore.LinearSDE(lambda t: a + b * t, lambda t: torch.sqrt(c + d * t * t), T=T)
    ts = np.array([1e-6, 1e-2, 0.3 * T, 0.71 * T, T])
    m, v = _moments(sde, ts)
    t = torch.tensor(ts, dtype=torch.float64)
    np.testing.assert_allclose(sde.alpha(t).numpy(), m, rtol=1e-9)
    np.testing.assert_allclose(sde.sigma(t).square().numpy(), v, rtol=1e-8)
    # and the closed form of this schedule: log alpha = a t + b t^2 / 2
    np.testing.assert_allclose(sde.log_alpha(t).numpy(), a * ts + 0.5 * b * ts**2, atol=1e-12)


def test_moment_reference_is_itself_sharp():
    # Guard the guard: the scipy reference reproduces VP's closed form to 1e-10.
    sde = sdescore.VPSDE()
    ts = np.array([1e-3, 0.5, 1.0])
    m, v = _moments(sde, ts)
    exact = np.exp(-0.25 * ts**2 * 19.9 - 0.05 * ts)
    np.testing.assert_allclose(m, exact, rtol=1e-10)
    np.testing.assert_allclose(v, -np.expm1(2 * np.log(exact)), rtol=1e-10)
    one = torch.tensor(1.0, dtype=torch.float64)
    assert math.isclose(sde.sigma(one).item() ** 2, v[-1], rel_tol=1e-10)
