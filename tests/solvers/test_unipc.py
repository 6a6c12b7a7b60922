"""UniPC (Zhao et al. 2023) and the Karras rho-grid: orders by log-log fits on a closed-form flow
in float64, the default's choice by budget, NaN-free runs at every step count, option errors.

Gaussian data $N(\\mu, s^2)$ under the VP SDE has the linear PF-ODE flow
$x_t = \\alpha_t\\mu + \\sqrt{v_t / v_T}\\,(x_T - \\alpha_T\\mu)$, $v_t = \\alpha_t^2 s^2 + \\sigma_t^2$.
"""

import math

import numpy as np
import pytest
import torch

import sdescore
from sdescore.solvers._common import Recorder
from sdescore.solvers.base import Problem
from sdescore.solvers.grid import Karras
from sdescore.solvers.unipc import _phi, _weights, unipc
from sdescore.toy import eight_gaussians

from problems import gaussian_1d

MU, S0, EPS = 0.7, 0.4, 1e-3
VP = sdescore.VPSDE(0.1, 20.0)


def _exact_flow(z: torch.Tensor) -> torch.Tensor:
    def v_alpha(t):
        t = torch.tensor(t, dtype=torch.float64)
        return VP.alpha(t) ** 2 * S0**2 + VP.sigma(t) ** 2, VP.alpha(t)

    (v0, a0), (v1, a1) = v_alpha(VP.T), v_alpha(EPS)
    return a1 * MU + (v1 / v0).sqrt() * (z - a0 * MU)


def _slope(ns, errs) -> float:
    return -np.polyfit(np.log(ns), np.log(errs), 1)[0]


@pytest.mark.parametrize(
    ("order", "variant", "corrector", "expected"),
    [
        # UniP-p alone has order p; UniC raises it to p + 1 at no extra call (without the
        # lower-order final steps). Measured slopes on the time-quadratic grid: 0.99;
        # 2.10/1.97 (bh1/bh2); 2.14 (UniP-2); 3.17/3.06; 3.26 (UniP-3); 4.09.
        (1, "bh2", False, 1),
        (1, "bh1", True, 2),
        (1, "bh2", True, 2),
        (2, "bh2", False, 2),
        (2, "bh1", True, 3),
        (2, "bh2", True, 3),
        (3, "bh2", False, 3),
        (3, "bh2", True, 4),
    ],
)
def test_unipc_order(order, variant, corrector, expected):
    score = gaussian_1d(MU, S0).score_fn(VP)
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)[:, None]
    exact = _exact_flow(z)
    ns = [32, 64, 128]  # errors 1e-2 .. 1e-5: the asymptotic range of every variant
    errs = []
    for n in ns:
        x = unipc(
            Problem(VP, score, z, VP.T, EPS, n, None, Recorder(False)), order=order,
            grid="time_quadratic", variant=variant, corrector=corrector, lower_order_final=False,
        )  # fmt: skip
        errs.append((x - exact).abs().max().item())
    assert abs(_slope(ns, errs) - expected) <= 0.3, (errs, _slope(ns, errs))


@pytest.mark.parametrize("order", [2, 3])
def test_unipc_lower_order_final_keeps_at_least_order_two(order):
    # The final uncorrected DDIM step has local error O(h^2): order 2 at best asymptotically;
    # measured 3.4 (p = 2, an error cancellation) and 2.7 (p = 3) at 32-128 steps.
    pf = VP.probability_flow(gaussian_1d(MU, S0).score_fn(VP))
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)[:, None]
    ns = [32, 64, 128]
    solver = sdescore.UniPC(order=order)
    errs = [
        (pf.sample(x_T=z, method=solver, steps=n) - _exact_flow(z)).abs().max().item() for n in ns
    ]
    assert _slope(ns, errs) >= 1.7 and errs[-1] < 1e-4, errs


def test_phi_series_and_recursion_agree_with_the_integral():
    # phi_k(z) = int_0^1 e^{(1-u) z} u^{k-1}/(k-1)! du, by a 20001-point Simpson rule, float64,
    # on both sides of the |z| = 1 switch between the series and the recursion.
    u = torch.linspace(0, 1, 20001, dtype=torch.float64)
    w = torch.ones_like(u)
    w[1:-1:2], w[2:-1:2] = 4, 2
    for z in (-3.0, -1.0001, -0.9999, -0.05, 1e-4, 0.5, 2.0):
        for k in (1, 2, 3, 4):
            f = torch.exp((1 - u) * z) * u ** (k - 1) / math.factorial(k - 1)
            quad = ((w * f).sum() / (3 * (len(u) - 1))).item()
            assert abs(_phi(z, k) - quad) <= 1e-12, (z, k, _phi(z, k), quad)


def test_weights_solve_the_order_conditions():
    # sum_k a_k r_k^(j-1) = j! (-h) phi_{j+1}(-h) for j = 1..p (with B(h) = 1 folded in)
    h, r = 0.3, [-0.8, -1.7, 1.0]
    w = _weights(r, h)
    for j in (1, 2, 3):
        lhs = sum(wk * rk ** (j - 1) for wk, rk in zip(w, r, strict=True))
        assert abs(lhs - math.factorial(j) * (-h) * _phi(-h, j + 1)) <= 1e-14


def test_karras_grid_is_eq5_in_sigma_over_alpha():
    like = torch.zeros(1, dtype=torch.float64)
    ts = Karras().times(VP, VP.T, EPS, 10, like)
    assert ts.dtype == torch.float64 and ts[0] == VP.T and ts[-1] == EPS
    sig = (-VP.log_snr(ts)).exp()  # sigma / alpha
    s_max, s_min = sig[0], sig[-1]
    ramp = torch.linspace(0, 1, 11, dtype=torch.float64)
    inv = 1 / Karras().rho
    eq5 = (s_max**inv + ramp * (s_min**inv - s_max**inv)) ** Karras().rho
    # t_from_log_snr bisects to float64 resolution in t; sigma/alpha follows to ~1e-12 relative
    torch.testing.assert_close(sig, eq5, rtol=1e-10, atol=0)
    assert Karras().rho == 7.0


def test_default_uses_unipc_by_budget_and_counts_its_calls():
    pf = VP.probability_flow(gaussian_1d(MU, S0).score_fn(VP))
    z = torch.randn(64, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for steps, order in ((6, 2), (15, 2), (16, 3), (40, 3)):
        res = pf.sample(x_T=z, method=sdescore.Auto(), steps=steps, return_info=True)
        ref = pf.sample(x_T=z, method=sdescore.UniPC(order=order), steps=steps)
        assert res.nfe == steps and res.samples.dtype == torch.float64
        assert torch.equal(res.samples, ref) and f"UniP-{order} + UniC" in res.solver
        assert torch.equal(pf.sample(x_T=z, steps=steps), ref)  # Auto() is the default
    # below 6 calls: the 2M without corrector, as before
    two_m = sdescore.DPMSolver(order=2, multistep=True)
    assert torch.equal(pf.sample(x_T=z, steps=5), pf.sample(x_T=z, method=two_m, steps=5))


def test_default_is_more_accurate_at_10_calls_on_eight_gaussians():
    # Solver error against a converged solve from the same draws (2048 points; the benchmark's
    # 16384 x 3 seeds give 2.75e-2 for the old default, the 2M in its Taylor form, and 1.56e-2
    # for UniPC-2 at 10 calls).
    sde, data = VP, eight_gaussians(radius=4.0, std=0.5)
    pf = sde.probability_flow(data.score_fn(sde))
    z = sde.prior_sampling((2048, 2), generator=torch.Generator().manual_seed(0))
    ref = pf.sample(
        x_T=z, method=sdescore.DPMSolver(order=3, multistep=False, grid="logsnr"), steps=600
    )
    err = (pf.sample(x_T=z, steps=10) - ref).abs().mean().item()
    old_default = sdescore.DPMSolver(order=2, multistep=True, solver_type="taylor")
    old = pf.sample(x_T=z, method=old_default, steps=10) - ref
    assert err < 0.02 < old.abs().mean().item(), (err, old.abs().mean().item())


@pytest.mark.parametrize("steps", [5, 6, 8, 10])
def test_2m_midpoint_form_beats_the_taylor_form_on_eight_gaussians(steps):
    # The default 2M (Lu et al.'s Alg. 2) against the Taylor form on the same 2048 draws; the
    # benchmark (16384 x 3 seeds) gives 6.1e-2 / 4.1e-2 / 2.0e-2 / 1.5e-2 against 1.1e-1 /
    # 9.2e-2 / 4.9e-2 / 2.8e-2 at 5 / 6 / 8 / 10 calls. Auto() below 6 calls is this 2M.
    sde, data = VP, eight_gaussians(radius=4.0, std=0.5)
    pf = sde.probability_flow(data.score_fn(sde))
    z = sde.prior_sampling((2048, 2), generator=torch.Generator().manual_seed(0))
    ref = pf.sample(
        x_T=z, method=sdescore.DPMSolver(order=3, multistep=False, grid="logsnr"), steps=600
    )
    errs = {
        form: (
            pf.sample(
                x_T=z, method=sdescore.DPMSolver(multistep=True, order=2, solver_type=form),
                steps=steps,
            ) - ref
        ).abs().mean().item()
        for form in ("midpoint", "taylor")
    }  # fmt: skip
    assert errs["midpoint"] < 0.75 * errs["taylor"], errs
    if steps < 6:
        auto = (pf.sample(x_T=z, steps=steps) - ref).abs().mean().item()
        assert auto == errs["midpoint"]


@pytest.mark.parametrize("schedule", ["time_quadratic", "karras", "logsnr", "time_uniform"])
def test_unipc_is_finite_at_every_step_count_and_keeps_dtype(schedule):
    pf = VP.probability_flow(eight_gaussians().score_fn(VP))
    z = VP.prior_sampling((32, 2), generator=torch.Generator().manual_seed(1))
    for order in (1, 2, 3):
        for steps in range(1, 41):
            res = pf.sample(
                x_T=z, method=sdescore.UniPC(order=order, grid=schedule), steps=steps,
                return_info="trajectory",
            )  # fmt: skip
            assert res.nfe == steps and res.samples.dtype == torch.float32
            assert torch.isfinite(res.samples).all()
            # the trajectory holds the corrected states; its last one is the result
            assert res.trajectory.shape == (steps + 1, 32, 2)
            assert torch.equal(res.trajectory[-1], res.samples)
    x64 = pf.sample(x_T=z.double(), method=sdescore.UniPC(grid=schedule), steps=7)
    assert x64.dtype == torch.float64


def test_karras_grid_is_an_option_of_auto_and_dpm_solver():
    pf = VP.probability_flow(gaussian_1d(MU, S0).score_fn(VP))
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)[:, None]
    x = pf.sample(x_T=z, method=sdescore.Auto(grid="karras"), steps=50)  # UniPC-3: 6.5e-4
    assert (x - _exact_flow(z)).abs().max() < 1e-3
    # DPM-Solver++(3M, damped) on the same grid: measured 1.3e-3
    x = pf.sample(x_T=z, method=sdescore.DPMSolver(grid="karras"), steps=50)
    assert (x - _exact_flow(z)).abs().max() < 2e-3


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: sdescore.UniPC(order=4), ValueError, "order must be 1, 2 or 3, got 4"),
        (lambda: sdescore.UniPC(order=2.0), TypeError, "order must be an int"),
        (lambda: sdescore.UniPC(order=True), TypeError, "order must be an int"),
        (lambda: sdescore.UniPC(variant="bh3"), ValueError, "variant must be one of"),
        (lambda: sdescore.UniPC(grid="edm"), ValueError, "grid must be one of"),
        (lambda: sdescore.UniPC(2), TypeError, "positional"),
        (lambda: sdescore.UniPC(lower_order_final=1), TypeError, "lower_order_final must be"),
    ],
)
def test_unipc_bad_options(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_unipc_refuses_a_non_gaussian_sde_and_the_reverse_sde():
    class Plain(sdescore.SDE):
        def drift(self, x, t):
            return -x

        def diffusion(self, t):
            return torch.ones_like(t)

    pf = Plain().probability_flow(lambda x, t: -x)
    with pytest.raises(TypeError, match="needs a GaussianSDE"):
        pf.sample(x_T=torch.zeros(4, 1), method=sdescore.UniPC())
    rs = VP.reverse(gaussian_1d(MU, S0).score_fn(VP))
    with pytest.raises(ValueError, match="integrates the probability-flow ODE"):
        rs.sample((4, 1), method=sdescore.UniPC())


@pytest.mark.slow  # runs a benchmark script
def test_peers_benchmark_quick_mode_runs():
    # benchmarks/peers.py --quick: 512 draws, one seed, 10 calls (about 5 s with diffusers).
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "peers.py"), "--quick"],
        capture_output=True, text=True, timeout=120, cwd=root,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "best configuration of each library per NFE" in out.stdout
    assert "sdescore default" in out.stdout and "per-call overhead" in out.stdout
