"""Time grids: every fixed-step solver takes one (a rule or explicit times); explicit times are
validated, give bit-identical samples to the rule that produced them, run in either direction,
fix the budget, and serialise with the solver."""

import json
import math

import pytest
import torch

import sdescore
from sdescore.solvers import (
    GRIDS,
    Karras,
    LogSNR,
    TimeQuadratic,
    TimeUniform,
    grid_from_dict,
    solver_from_dict,
)

from problems import CubicSDE, make_sdes

VP = make_sdes()["vp"]
EPS = 1e-3
F64 = {"dtype": torch.float64}
DATA = sdescore.toy.eight_gaussians()
PF = VP.probability_flow(DATA.score_fn(VP))
RS = VP.reverse(DATA.score_fn(VP))

# Every fixed-step solver with a grid option, with a budget small enough to run fast.
FIXED = [
    (PF, lambda g: sdescore.Auto(grid=g), 8),
    (PF, lambda g: sdescore.DPMSolver(order=2, multistep=True, grid=g), 8),
    (PF, lambda g: sdescore.DPMSolver(order=2, multistep=False, grid=g), 8),
    (PF, lambda g: sdescore.UniPC(order=3, grid=g), 8),
    (PF, lambda g: sdescore.TorchDiffEq("rk4", grid=g), 5),
    (PF, lambda g: sdescore.TorchDiffEq("euler", grid=g), 9),
    (RS, lambda g: sdescore.EulerMaruyama(grid=g), 9),
    (RS, lambda g: sdescore.ReverseDiffusion(grid=g), 9),
    (RS, lambda g: sdescore.Ancestral(grid=g), 9),
    (RS, lambda g: sdescore.PC(grid=g), 9),
    (RS, lambda g: sdescore.SDEDPMSolver(grid=g), 9),
]


def _intervals(solver, steps):
    """Grid intervals a solve of `steps` takes (singlestep DPM-Solver: `order` calls each)."""
    if isinstance(solver, sdescore.DPMSolver):
        order, multistep, _ = solver.plan(steps)
        return steps if multistep else steps // order
    return steps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rule", ["time_uniform", "time_quadratic", "logsnr", "karras"])
@pytest.mark.parametrize(("proc", "build", "steps"), FIXED)
def test_explicit_times_are_bit_identical_to_the_rule_that_made_them(
    proc, build, steps, rule, dtype
):
    ruled = build(rule)
    # the grid in the dtype the solver uses: the state's (float64, or float32 at least), or
    # float64 for torchdiffeq, which keeps its times in float64 whatever the state
    like = torch.empty(0, dtype=torch.float64 if isinstance(ruled, sdescore.TorchDiffEq) else dtype)
    n = _intervals(ruled, steps)
    times = GRIDS[rule]().times(VP, VP.T, EPS, n, like)
    explicit = build(times)
    assert explicit.grid_steps() == steps  # the grid fixes the budget
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    kw = dict(eps=EPS, dtype=dtype, return_info=True)
    a = proc.sample((64, 2), method=ruled, steps=steps, generator=gen(), **kw)
    b = proc.sample((64, 2), method=explicit, generator=gen(), **kw)
    assert torch.equal(a.samples, b.samples) and a.nfe == b.nfe


def test_rules_have_their_closed_forms_and_exact_ends():
    like = torch.empty(0, **F64)
    n = 10
    u = torch.linspace(0, 1, n + 1, **F64)
    t = TimeUniform().times(VP, VP.T, EPS, n, like)
    torch.testing.assert_close(t, VP.T + u * (EPS - VP.T), rtol=0, atol=1e-15)
    t = TimeQuadratic().times(VP, VP.T, EPS, n, like)
    torch.testing.assert_close(t.sqrt(), 1 + u * (math.sqrt(EPS) - 1), rtol=0, atol=1e-15)
    lam = VP.log_snr(LogSNR().times(VP, VP.T, EPS, n, like))
    torch.testing.assert_close(lam.diff(), lam.diff()[:1].expand(n), rtol=1e-9, atol=0)
    for grid in (TimeUniform(), TimeQuadratic(), LogSNR(), Karras(3.0)):
        for dtype in (torch.float32, torch.float64):
            ts = grid.times(VP, VP.T, EPS, n, torch.empty(0, dtype=dtype))
            assert ts.dtype == dtype and ts[0] == VP.T and ts[-1] == torch.tensor(EPS, dtype=dtype)
            assert bool((ts.diff() < 0).all())
    # half-precision states get float32 grids, never reduced precision
    assert TimeUniform().times(VP, 1.0, EPS, 4, torch.empty(0, dtype=torch.bfloat16)).dtype == (
        torch.float32
    )


def test_explicit_times_run_in_the_solve_direction():
    """A decreasing grid serves encode (increasing) too: the same boundaries, reversed."""
    solver = sdescore.DPMSolver(order=2, multistep=True, grid=TimeQuadratic())
    times = TimeQuadratic().times(VP, VP.T, EPS, 12, torch.empty(0, **F64))
    x = DATA.sample(32, generator=torch.Generator().manual_seed(0), **F64)
    up = sdescore.DPMSolver(order=2, multistep=True, grid=times.flip(0).tolist())
    z_explicit = PF.encode(x, method=up, eps=EPS, return_info=True)
    z_down = PF.encode(x, method=sdescore.DPMSolver(order=2, multistep=True, grid=times), eps=EPS)
    assert z_explicit.nfe == 12 and torch.equal(z_explicit.samples, z_down)
    z_rule = PF.encode(x, method=solver, steps=12, eps=EPS)
    # a rule's boundaries are computed from the increasing end: equal to rounding
    torch.testing.assert_close(z_down, z_rule, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("times", "err", "match"),
    [
        ([1.0], ValueError, "at least 2 times"),
        ([1.0, float("nan"), 1e-3], ValueError, r"finite, got nan at index 1"),
        ([1.0, 0.5, 0.5, 1e-3], ValueError, r"strictly monotone, got times\[1\] = 0.5"),
        ([1.0, 0.2, 0.5, 1e-3], ValueError, r"strictly monotone, got times\[1\] = 0.2"),
        (torch.ones(2, 2), ValueError, "1-d"),
        (torch.tensor([True, False]), TypeError, "real numbers"),
        (["1", 0.5], TypeError, "real numbers"),
        ({1: 2}, TypeError, "must be a Grid"),
        ("cosine", ValueError, r"grid must be one of \['karras', 'logsnr'"),
    ],
)
def test_bad_grids_are_refused_at_construction(times, err, match):
    with pytest.raises(err, match=match):
        sdescore.DPMSolver(grid=times)


def test_a_grid_must_fit_the_solve():
    grid = [1.0, 0.5, 0.1, 1e-3]
    with pytest.raises(ValueError, match=r"end time is 0.001, but the solve's end time is 0.01"):
        PF.sample((4, 2), method=sdescore.UniPC(grid=grid), eps=1e-2)
    short = [0.9, 0.5, 1e-3]
    with pytest.raises(ValueError, match="start time is 0.9"):
        PF.sample((4, 2), method=sdescore.UniPC(grid=short))
    with pytest.raises(ValueError, match="conflicting budgets .*steps = 5.*explicit grid = 3"):
        PF.sample((4, 2), method=sdescore.UniPC(grid=grid), steps=5)
    with pytest.raises(ValueError, match="grid applies to the fixed-step methods"):
        sdescore.TorchDiffEq("dopri5", grid=grid)
    with pytest.raises(TypeError, match="placed in log-SNR and needs a GaussianSDE"):
        CubicSDE().reverse(lambda x, t: -x).sample(
            (4, 1), method=sdescore.EulerMaruyama(grid="logsnr"), steps=4
        )


def test_singlestep_dpm_solver_spends_order_calls_per_interval():
    times = TimeQuadratic().times(VP, VP.T, EPS, 4, torch.empty(0, **F64))
    solver = sdescore.DPMSolver(order=3, multistep=False, grid=times)
    info = PF.sample((8, 2), method=solver, eps=EPS, return_info=True, **F64)
    assert solver.grid_steps() == 12 and info.nfe == 12
    with pytest.raises(ValueError, match="allocation='order' places its own boundaries"):
        sdescore.DPMSolver(order=3, multistep=False, allocation="order", grid=times)


def test_grids_and_solvers_serialise_to_json_and_back():
    times = TimeQuadratic().times(VP, VP.T, EPS, 7, torch.empty(0, **F64))
    solvers = [
        sdescore.Auto(steps=12, grid=Karras(5.0)),
        sdescore.DPMSolver(order=3, multistep=True, damped=True, grid=times),
        sdescore.UniPC(order=2, variant="bh1", grid="logsnr"),
        sdescore.PC(predictor="ancestral", corrector=sdescore.Langevin(snr=0.1, steps=2)),
        sdescore.SDEDPMSolver(order=3, eta=0.5),
        sdescore.TorchDiffEq("rk4", steps=20, grid="time_quadratic"),
        sdescore.TorchDiffEq("dopri5", rtol=1e-3, atol=1e-4, step_control="x"),
        sdescore.TorchSDE("srk", dt=0.01),
        sdescore.GottaGoFast(rtol=0.05),
        sdescore.ExpABM(rtol=1e-4, order=3),
    ]
    for solver in solvers:
        back = solver_from_dict(json.loads(json.dumps(solver.to_dict())))
        assert back == solver and type(back) is type(solver), (solver, back)
    # explicit times survive exactly (float64 through JSON's shortest repr)
    back = solver_from_dict(json.loads(json.dumps(solvers[1].to_dict())))
    assert torch.equal(back.grid.times(VP, VP.T, EPS, 7, torch.empty(0, **F64)), times)
    assert grid_from_dict({"grid": "karras", "rho": 3.0}) == Karras(3.0)
    with pytest.raises(ValueError, match="unknown grid 'cosine'"):
        grid_from_dict({"grid": "cosine"})
    with pytest.raises(ValueError, match="unknown solver 'Heun'"):
        solver_from_dict({"solver": "Heun", "options": {}})
    with pytest.raises(TypeError, match="no plain description"):
        sdescore.Inpainting(torch.zeros(2), torch.tensor([True, False])).to_dict()


def test_the_result_names_what_ran():
    info = PF.sample((8, 2), steps=10, return_info=True)
    assert info.solver == "Auto: UniPC (UniP-2 + UniC, bh2) on TimeQuadratic() with 10 score calls"
    info = PF.sample((8, 2), steps=5, return_info=True)
    assert info.solver.startswith("Auto: DPM-Solver++(2M) on TimeQuadratic()")
    info = PF.sample((8, 2), method="dpm_solver", steps=20, return_info=True)
    assert info.solver == "DPM-Solver++(3M, damped) on TimeQuadratic() with 20 score calls"
    assert "Auto" not in repr(sdescore.DPMSolver())
