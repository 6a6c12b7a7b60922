"""Measured convergence orders (log-log fits) on problems with known solutions, in float64.

Gaussian data $N(\\mu, s^2)$ under the VP SDE has the linear PF-ODE flow
$x_t = \\alpha_t\\mu + \\sqrt{v_t / v_T}\\,(x_T - \\alpha_T\\mu)$ with $v_t = \\alpha_t^2 s^2 + \\sigma_t^2$,
the reference for DPM-Solver; the strong order of Euler-Maruyama is measured against a fine
Euler-Maruyama solution driven by the same Brownian path.
"""

import math

import numpy as np
import pytest
import torch

import sdescore
from sdescore.solvers._common import Recorder
from sdescore.solvers.native import StepCoefficients, predictor_step

from problems import gaussian_1d

MU, S0 = 0.7, 0.4
EPS = 1e-3
VP = sdescore.VPSDE(0.1, 20.0)


def _slope(ns, errs) -> float:
    """Order p from err ~ C n^-p."""
    return -np.polyfit(np.log(ns), np.log(errs), 1)[0]


def _exact_flow(z: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    def v_alpha(t):
        t = torch.tensor(t, dtype=torch.float64)
        return VP.alpha(t) ** 2 * S0**2 + VP.sigma(t) ** 2, VP.alpha(t)

    (v0, a0), (v1, a1) = v_alpha(t0), v_alpha(t1)
    return a1 * MU + (v1 / v0).sqrt() * (z - a0 * MU)


@pytest.mark.parametrize(
    ("order", "prediction", "multistep", "schedule"),
    [
        (1, "data", False, "logsnr"),
        (2, "data", False, "logsnr"),
        (3, "data", False, "logsnr"),
        (1, "noise", False, "logsnr"),
        (2, "noise", False, "logsnr"),
        (3, "noise", False, "logsnr"),
        (2, "data", True, "time_quadratic"),
        (3, "data", True, "time_quadratic"),
    ],
)
def test_dpm_solver_order(order, prediction, multistep, schedule):
    pf = VP.probability_flow(gaussian_1d(MU, S0).score_fn(VP))
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)[:, None]
    exact = _exact_flow(z, VP.T, EPS)
    ns = [32, 64, 128]  # steps; the asymptotic range for all variants (errors 1e-2 .. 1e-8)
    errs = []
    for n in ns:
        method = sdescore.DPMSolver(
            order=order, prediction=prediction, multistep=multistep, grid=schedule
        )
        x = pf.sample(x_T=z, steps=n if multistep else n * order, method=method)
        errs.append((x - exact).abs().max().item())
    assert abs(_slope(ns, errs) - order) <= 0.3, (errs, _slope(ns, errs))


def test_dpm_solver_encode_is_the_exact_flow_and_decode_inverts_it():
    pf = VP.probability_flow(gaussian_1d(MU, S0).score_fn(VP))
    x = torch.linspace(-1, 2.5, 41, dtype=torch.float64)[:, None]
    opts = dict(method=sdescore.DPMSolver(multistep=False, grid="logsnr"), steps=300)
    z = pf.encode(x, **opts)
    # 100 order-3 steps: truncation error ~1e-6 relative (measured 5e-6 absolute at |z| ~ 4).
    torch.testing.assert_close(z, _exact_flow(x, EPS, VP.T), rtol=0, atol=2e-5)
    torch.testing.assert_close(pf.decode(z, **opts), x, rtol=0, atol=2e-5)


def test_dopri5_encode_decode_roundtrip_to_small_eps():
    method = sdescore.TorchDiffEq("dopri5", rtol=1e-8, atol=1e-8)
    # dopri5 on the VP PF ODE down to a small eps is the classic "underflow in dt" trap.
    eps = 1e-5
    pf = VP.probability_flow(gaussian_1d(MU, S0).score_fn(VP))
    x = torch.linspace(-1, 2.5, 41, dtype=torch.float64)[:, None]
    res = pf.encode(x, method=method, eps=eps, return_info=True)
    torch.testing.assert_close(res.samples, _exact_flow(x, eps, VP.T), rtol=0, atol=1e-5)
    back = pf.decode(res.samples, method=method, eps=eps)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-5)
    assert res.nfe > 0


def test_euler_maruyama_strong_order_one_for_additive_noise():
    """Strong error E|x_N - x_ref| against a 1024-step solution on the same Brownian path.

    The noise is additive (g depends on t only), so Euler-Maruyama's strong order is 1, not 1/2
    (Kloeden & Platen 1992, Thm. 10.2.2 with the Milstein term vanishing).
    """
    score = gaussian_1d(MU, S0).score_fn(VP)
    n_ref, paths = 1024, 1000
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(paths, 1, generator=g, dtype=torch.float64)
    dw = torch.randn(n_ref, paths, 1, generator=g, dtype=torch.float64)  # unit-variance

    def solve(n):
        ts = torch.linspace(VP.T, EPS, n + 1, dtype=torch.float64)
        c = StepCoefficients(VP, ts)
        block = n_ref // n
        x = x0
        for i in range(n):
            # the coarse step's standard normal: the sum of its fine increments, rescaled
            z = dw[i * block : (i + 1) * block].sum(0) / math.sqrt(block)
            x = predictor_step("euler_maruyama", VP, score, x, i, c, z)
        return x

    ref = solve(n_ref)
    ns = [16, 32, 64, 128]
    errs = [(solve(n) - ref).abs().mean().item() for n in ns]
    assert abs(_slope(ns, errs) - 1.0) <= 0.3, (errs, _slope(ns, errs))


def test_recorder_is_inert_when_disabled():
    r = Recorder(False)
    r(torch.tensor(1.0), torch.zeros(2))
    assert r.stacked() == (None, None)


@pytest.mark.parametrize(
    ("solver", "calls", "order"),
    [
        # The damped 3M (the peers' "3M") is order 2 in practice: its second-derivative term
        # is half the exact one, which leaves an O(h^3) local error (the exact 3M is checked
        # in test_dpm_solver_order).
        (sdescore.DPMSolver(order=3, multistep=True, damped=True, grid="logsnr"), 1, 2),
        # Lu et al.'s allocation ends a budget divisible by 3 in orders 2, 1 (on log-SNR with
        # equal steps, as their code): the final first-order step caps the order at 2.
        (sdescore.DPMSolver(order=3, multistep=False, allocation="order", grid="logsnr"), 3, 2),
        (sdescore.DPMSolver(order=2, multistep=False, allocation="order", grid="logsnr"), 2, 2),
        # the 2M in its Taylor form (the default is the midpoint form, in test_dpm_solver_order)
        (sdescore.DPMSolver(order=2, multistep=True, solver_type="taylor"), 1, 2),
    ],
    ids=["3M-damped", "3S-order-allocation", "2S-order-allocation", "2M-taylor"],
)
def test_dpm_solver_variant_orders(solver, calls, order):
    pf = VP.probability_flow(gaussian_1d(MU, S0).score_fn(VP))
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)[:, None]
    exact = _exact_flow(z, VP.T, EPS)
    ns = [32, 64, 128]
    errs = [
        (pf.sample(x_T=z, steps=n * calls, method=solver) - exact).abs().max().item() for n in ns
    ]
    assert abs(_slope(ns, errs) - order) <= 0.3, (errs, _slope(ns, errs))


@pytest.mark.parametrize("steps", [2, 5, 9, 16])
def test_dpm_solver_2m_is_lu_et_al_algorithm_2(steps):
    # DPM-Solver++(2M) written out from Lu et al. 2022b, Alg. 2: x_i = (sigma_i / sigma_{i-1})
    # x_{i-1} - alpha_i expm1(-h_i) D_i with D_i = (1 + 1/(2 r_i)) m_{i-1} - m_{i-2} / (2 r_i),
    # r_i = h_{i-1} / h_i, a first-order first step and, below 15 steps, a first-order last step.
    pf = VP.probability_flow(gaussian_1d(MU, S0).score_fn(VP))
    z = torch.linspace(-3, 3, 13, dtype=torch.float64)[:, None]
    ts = sdescore.TimeQuadratic().times(VP, VP.T, EPS, steps, z)
    alpha, sigma = VP.alpha(ts), VP.sigma(ts)
    lam = (alpha / sigma).log()
    x, prev = z, None
    for i in range(steps):
        t = ts[i].expand(len(z))
        m = (x + sigma[i] ** 2 * pf.score_fn(x, t)) / alpha[i]
        h = lam[i + 1] - lam[i]
        d = m
        if prev is not None and not (steps < 15 and i == steps - 1):
            r = (lam[i] - lam[i - 1]) / h
            d = (1 + 1 / (2 * r)) * m - prev / (2 * r)
        x = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * torch.expm1(-h) * d
        prev = m
    ours = pf.sample(
        x_T=z, steps=steps, method=sdescore.DPMSolver(order=2, multistep=True), eps=EPS
    )
    assert torch.allclose(ours, x, rtol=1e-12, atol=1e-12), (ours - x).abs().max()
