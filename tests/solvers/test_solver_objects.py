"""Solver objects (`method=` an `sdescore.Solver`): a name gives the same samples as its default
object, an old keyword option names the object that takes it, a configured object gives the same
samples when rebuilt from its description, options are validated at construction, and a
user-defined solver runs end to end."""

import json
import warnings

import numpy as np
import pytest
import torch

import sdescore
from sdescore.solvers import Problem, Solver, solver_from_dict
from sdescore.solvers.table import METHODS, get_solver

from problems import gaussian_1d, make_sdes

VP = make_sdes()["vp"]
DATA = gaussian_1d()

# (method name, the old keyword options of sample(), the equivalent object, sample options shared
# by both)
SDE_PAIRS = [
    ("euler_maruyama", {}, sdescore.EulerMaruyama(), {"steps": 8}),
    ("reverse_diffusion", {}, sdescore.ReverseDiffusion(), {"steps": 8}),
    ("ancestral", {}, sdescore.Ancestral(), {"steps": 8, "denoise": "tweedie"}),
    (
        "pc",
        {"predictor": "ancestral", "snr": 0.1, "corrector_steps": 2},
        sdescore.PC(predictor=sdescore.Ancestral(), corrector=sdescore.Langevin(snr=0.1, steps=2)),
        {"steps": 4},
    ),
    (
        "annealed_langevin",
        {"step_size": 1e-4},
        sdescore.AnnealedLangevin(step_size=1e-4),
        {"steps": 4},
    ),
    ("gotta_go_fast", {"rtol": 0.05}, sdescore.GottaGoFast(rtol=0.05), {}),
    ("srk", {}, sdescore.TorchSDE("srk"), {"steps": 8}),
]
ODE_PAIRS = [
    ("dpm_solver", {}, sdescore.DPMSolver(), {"steps": 9}),
    (
        "dpm_solver",
        {"order": 2, "multistep": True, "grid": "logsnr"},
        sdescore.DPMSolver(order=2, multistep=True, grid="logsnr"),
        {"steps": 9},
    ),
    (
        "dopri5",
        {"rtol": 1e-3, "atol": 1e-3},
        sdescore.TorchDiffEq("dopri5", rtol=1e-3, atol=1e-3),
        {},
    ),
    ("rk4", {}, sdescore.TorchDiffEq("rk4"), {"steps": 5}),
]


def _check_pair(proc, name, legacy, obj, shared):
    def run(method):
        return proc.sample(
            (16, 1),
            method=method,
            generator=torch.Generator().manual_seed(3),
            return_info=True,
            **shared,
        )

    if legacy:
        # the old keywords of sample() now raise, naming the object and each option
        with pytest.raises(TypeError) as info:
            proc.sample((16, 1), method=name, **legacy, **shared)
        msg = str(info.value)
        assert f"method=sdescore.{type(obj).__name__}(" in msg, msg
        assert all(f"{k}=" in msg for k in legacy), msg
        other = solver_from_dict(obj.to_dict())  # the object rebuilt from its description
        assert other == obj and other is not obj
    else:
        other = name  # the name is the default-configured object
    a, b = run(other), run(obj)
    assert torch.equal(a.samples, b.samples) and a.nfe == b.nfe and a.solver == b.solver


@pytest.mark.parametrize(("name", "legacy", "obj", "shared"), SDE_PAIRS, ids=lambda v: str(v)[:30])
def test_sde_object_and_string_give_identical_samples(name, legacy, obj, shared):
    _check_pair(VP.reverse(DATA.score_fn(VP)), name, legacy, obj, shared)


@pytest.mark.parametrize(("name", "legacy", "obj", "shared"), ODE_PAIRS, ids=lambda v: str(v)[:30])
def test_ode_object_and_string_give_identical_samples(name, legacy, obj, shared):
    _check_pair(VP.probability_flow(DATA.score_fn(VP)), name, legacy, obj, shared)


def test_dopri5_is_torchdiffeq_dopri5():
    pf = VP.probability_flow(DATA.score_fn(VP))
    a, b = (
        pf.sample((16, 1), method=m, generator=torch.Generator().manual_seed(3), return_info=True)
        for m in (
            sdescore.Dopri5(rtol=1e-3, atol=1e-3),
            sdescore.TorchDiffEq("dopri5", rtol=1e-3, atol=1e-3),
        )
    )
    assert torch.equal(a.samples, b.samples) and a.nfe == b.nfe


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: sdescore.DPMSolver(order=4), "order must be 1, 2 or 3"),
        (lambda: sdescore.DPMSolver(grid="cosine"), "grid must be one of"),
        (lambda: sdescore.Auto(grid="cosine"), "grid must be one of"),
        (lambda: sdescore.DPMSolver(multistep=1), "multistep must be a bool"),
        (lambda: sdescore.DPMSolver(multistep=True, prediction="noise"), "prediction='noise'"),
        (lambda: sdescore.Dopri5(rtol=-1.0), "rtol must be > 0"),
        (lambda: sdescore.TorchDiffEq("rk45"), "method must be one of"),
        (lambda: sdescore.Langevin(snr=0.0), "snr must be > 0"),
        (lambda: sdescore.PC(predictor="heun"), "predictor must be one of"),
        (lambda: sdescore.PC(corrector=0.16), "corrector must be an sdescore.Langevin"),
        (lambda: sdescore.AnnealedLangevin(corrector_steps=0), "corrector_steps must be an int"),
        (lambda: sdescore.GottaGoFast(atol=0), "atol must be > 0"),
        (lambda: sdescore.TorchSDE("srk", max_steps=10), "adaptive=True"),
        (lambda: sdescore.TorchSDE("rk4"), "method must be one of"),
    ],
)
def test_bad_options_raise_at_construction(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_objects_are_checked_against_the_process_and_the_options():
    rs = VP.reverse(DATA.score_fn(VP))
    pf = VP.probability_flow(DATA.score_fn(VP))
    with pytest.raises(ValueError, match=r"integrates the probability-flow ODE.*probability_flow"):
        rs.sample((4, 1), method=sdescore.DPMSolver())
    with pytest.raises(ValueError, match=r"integrates the reverse SDE.*sde.reverse"):
        pf.sample((4, 1), method=sdescore.PC())
    with pytest.raises(TypeError, match=r"snr= is an option of PC's corrector: .*Langevin\(snr"):
        rs.sample((4, 1), method=sdescore.PC(), snr=0.2)
    with pytest.raises(ValueError, match=r"steps does not apply to method Dopri5\("):
        pf.sample((4, 1), method=sdescore.Dopri5(), steps=10)
    with pytest.raises(TypeError, match="method must be a method name or an sdescore.Solver"):
        pf.sample((4, 1), method=len)
    assert sdescore.DPMSolver(order=2) == sdescore.DPMSolver(order=2) != sdescore.DPMSolver()


class HalfStepEuler(Solver):
    """A user's solver: Euler on the PF ODE with `steps` equal steps (first order)."""

    process = "ode"
    default_steps = 40

    def integrate(self, p: Problem) -> torch.Tensor:
        ts = torch.linspace(p.t0, p.t1, p.steps + 1, dtype=torch.float64)
        x = p.x
        p.record(ts[0], x)
        for s, t in zip(ts[:-1], ts[1:], strict=True):
            x = x + float(t - s) * p.velocity(x, s.to(x.dtype).expand(x.shape[0]))
            p.record(t, x)
        return x


def test_user_defined_solver_runs_end_to_end():
    # Same prior draws as a 30-call DPM-Solver solve (error ~1e-4 here): what remains is Euler's
    # O(h) error at 400 steps, measured 8e-4 mean |dx|; 0.01 leaves a wide margin.
    pf = VP.probability_flow(DATA.score_fn(VP))
    g = torch.Generator().manual_seed(0)
    res = pf.sample(
        (4096, 1), method=HalfStepEuler(), steps=400, generator=g, return_info="trajectory"
    )
    ref = pf.sample(
        (4096, 1), method="dpm_solver", steps=30, generator=torch.Generator().manual_seed(0)
    )
    assert res.nfe == 400 and res.trajectory.shape == (401, 4096, 1)
    assert (res.samples - ref).abs().mean() < 0.01
    with pytest.raises(TypeError, match="abstract"):
        Solver()


def test_auto_is_chosen_by_budget():
    # Measured on eight Gaussians (docs/sampling.md, "choosing a sampler"): 2M below 6 calls,
    # UniPC-2 (2M + UniC corrector) from 6 to 15, UniPC-3 from 16.
    auto = sdescore.Auto()
    assert [auto.plan(n) for n in (5, 6, 15, 16, 50)] == [
        sdescore.DPMSolver(order=2, multistep=True),
        sdescore.UniPC(order=2),
        sdescore.UniPC(order=2),
        sdescore.UniPC(order=3),
        sdescore.UniPC(order=3),
    ]
    assert "UniPC (UniP-2 + UniC" in auto.describe(10) and "(2M)" in auto.describe(5)
    karras = sdescore.Auto(grid="karras")
    assert karras.plan(20) == sdescore.UniPC(order=3, grid=sdescore.Karras())


def test_dpm_solver_runs_dpm_solver_and_explicit_options_keep_their_meaning():
    # With order and multistep unset: multistep DPM-Solver++, 2M below 13 calls, damped 3M from
    # 13; explicit options keep the old meaning.
    default = sdescore.DPMSolver()
    assert [default.plan(n) for n in (5, 6, 12, 13, 50)] == [
        (2, True, False),
        (2, True, False),
        (2, True, False),
        (3, True, True),
        (3, True, True),
    ]
    assert sdescore.DPMSolver(damped=False).plan(13) == (3, True, False)
    assert sdescore.DPMSolver(damped=True).plan(13) == (3, True, True)
    assert sdescore.DPMSolver(order=3).plan(10) == (3, False, False)
    assert sdescore.DPMSolver(multistep=True).plan(10) == (3, True, False)
    with pytest.raises(ValueError, match="damped applies to the multistep solver only"):
        sdescore.DPMSolver(multistep=False, damped=True)
    with pytest.raises(ValueError, match="allocation must be one of"):
        sdescore.DPMSolver(allocation="proportional")


@pytest.mark.parametrize(
    "kw",
    [
        {"order": 2, "damped": True},  # order alone is singlestep: damped used to be ignored
        {"order": 3, "damped": False},
        {"prediction": "noise", "damped": True},
        {"order": 2, "solver_type": "taylor"},
        {"order": 2, "solver_type": "midpoint"},
        {"multistep": False, "solver_type": "taylor"},
        {"prediction": "noise", "solver_type": "taylor"},
    ],
)
def test_multistep_only_options_are_refused_where_the_solver_is_singlestep(kw):
    option = "damped" if "damped" in kw else "solver_type"
    with pytest.raises(ValueError, match=f"{option} applies to the multistep solver only") as e:
        sdescore.DPMSolver(**kw)
    # every option that makes it singlestep is named, with its value
    assert f"prediction={kw.get('prediction', 'data')!r}" in str(e.value)


def test_damped_is_refused_below_order_3():
    # an order-2 multistep solver has no second-derivative term to damp (used to be accepted
    # and described as "2M, damped")
    with pytest.raises(ValueError, match="damped applies to order 3 only"):
        sdescore.DPMSolver(order=2, multistep=True, damped=True)
    assert "damped" in sdescore.DPMSolver(multistep=True, damped=True).describe(20)
    assert (
        sdescore.DPMSolver(order=2, multistep=True, damped=False)
        .describe(8)
        .endswith("(2M) on TimeQuadratic() with 8 score calls")
    )


def test_dpm_solver_solver_type_is_checked_and_named_in_describe():
    with pytest.raises(ValueError, match="got 'heun' \\(diffusers' 'heun' is our 'taylor'\\)"):
        sdescore.DPMSolver(solver_type="heun")
    with pytest.raises(ValueError, match="Lu et al.'s 'dpmsolver' is our 'midpoint'"):
        sdescore.DPMSolver(solver_type="dpmsolver")
    with pytest.raises(TypeError, match="solver_type must be a str"):
        sdescore.DPMSolver(solver_type=2)
    assert sdescore.DPMSolver().solver_type is None  # the default form, midpoint
    assert "(2M, taylor)" in sdescore.DPMSolver(solver_type="taylor").describe(8)
    assert "Taylor form" in sdescore.DPMSolver(solver_type="taylor").describe(None)
    assert "(2M)" in sdescore.DPMSolver().describe(8)
    assert "(1M)" in sdescore.DPMSolver(order=1, multistep=True, solver_type="taylor").describe(5)
    solver = sdescore.DPMSolver(multistep=True, order=2, solver_type="taylor")
    assert sdescore.solvers.solver_from_dict(solver.to_dict()) == solver


def test_a_dpm_solver_saved_before_solver_type_loads_as_the_taylor_form():
    # Its order-2 multistep steps were the Taylor form; loading it as the new default would
    # change its samples without a word.
    legacy = sdescore.DPMSolver(multistep=True, order=2).to_dict()
    del legacy["options"]["solver_type"]
    with pytest.warns(UserWarning, match="saved before solver_type existed"):
        loaded = sdescore.solvers.solver_from_dict(legacy)
    assert loaded == sdescore.DPMSolver(multistep=True, order=2, solver_type="taylor")
    by_budget = sdescore.DPMSolver().to_dict()
    del by_budget["options"]["solver_type"]
    with pytest.warns(UserWarning, match="saved before solver_type existed"):
        assert sdescore.solvers.solver_from_dict(by_budget).solver_type == "taylor"
    singlestep = sdescore.DPMSolver(order=3).to_dict()  # no order-2 multistep steps: as saved
    del singlestep["options"]["solver_type"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sdescore.solvers.solver_from_dict(singlestep) == sdescore.DPMSolver(order=3)


def test_order_allocation_makes_the_last_low_order_step_short():
    # 10 calls, order 3: steps 3, 3, 3, 1. Equal allocation: four equal steps in sqrt(t); Lu et
    # al.'s: the final first-order step is one cell of the 10-cell grid (t in [0.017, 0.001]).
    pf = VP.probability_flow(DATA.score_fn(VP))
    times = {
        a: pf.sample(
            (4, 1),
            method=sdescore.DPMSolver(order=3, multistep=False, allocation=a),
            steps=10,
            return_info="trajectory",
        ).times
        for a in ("equal", "order")
    }
    assert times["equal"].shape == times["order"].shape == (5,)
    fine = torch.linspace(1.0, 1e-3**0.5, 11).square()
    torch.testing.assert_close(times["order"], fine[[0, 3, 6, 9, 10]])
    assert float(times["order"][-2]) < 0.02 < 0.07 < float(times["equal"][-2])


@pytest.mark.parametrize(("grid", "steps"), [("time_quadratic", 10), ("time_uniform", 6)])
def test_order_allocation_evaluates_the_score_at_the_grid_times_as_lu_et_al(grid, steps):
    # Lu et al.'s code places a step's intermediate stages on the same nfe-cell grid as its
    # boundaries (the grid's inner points of the step), so its score calls are the grid's
    # first nfe times; ours used to put them at 1/3, 2/3 of the step in log-SNR (0.46 apart
    # from the file's samples at 6 calls on eight Gaussians; now equal to 1e-8 in float64).
    seen = []

    def score(x, t):
        seen.append(float(t[0]))
        return DATA.score_fn(VP)(x, t)

    solver = sdescore.DPMSolver(order=3, multistep=False, allocation="order", grid=grid)
    VP.probability_flow(score).sample((4, 1), method=solver, steps=steps, dtype=torch.float64)
    fine = sdescore.solvers.grid.as_grid(grid).times(
        VP, VP.T, 1e-3, steps, torch.zeros(1, dtype=torch.float64)
    )
    torch.testing.assert_close(torch.tensor(seen, dtype=torch.float64), fine[:-1])


def test_an_order_must_be_an_int_for_every_solver():
    # DPMSolver and SDEDPMSolver accepted order=3.0 (UniPC refused it): one rule for all
    for cls in (sdescore.DPMSolver, sdescore.SDEDPMSolver, sdescore.UniPC):
        with pytest.raises(TypeError, match="order must be an int"):
            cls(order=3.0)


def test_fixed_step_torchdiffeq_refuses_tolerances():
    # rtol/atol/max_steps were accepted and never used by a fixed-step method
    for name in ("rtol", "atol", "max_steps"):
        with pytest.raises(ValueError, match=f"{name} applies to the adaptive methods"):
            sdescore.TorchDiffEq("rk4", **{name: 10})
    assert sdescore.solvers.solver_from_dict(sdescore.TorchDiffEq("rk4", steps=3).to_dict()) == (
        sdescore.TorchDiffEq("rk4", steps=3)
    )


def test_torchdiffeq_options_and_step_control_reach_the_sampler():
    # TorchDiffEq(options=..., step_control=...) were used by likelihood only: sampling ignored
    # them without a word (same calls, same samples)
    sde = sdescore.VPSDE()
    pf = sde.probability_flow(sdescore.toy.eight_gaussians().score_fn(sde))
    z = sde.prior_sampling((64, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    plain = pf.sample(x_T=z, method=sdescore.TorchDiffEq("dopri5"), return_info=True)
    grown = sdescore.TorchDiffEq("dopri5", options={"first_step": 0.5, "ifactor": 1.5})
    other = pf.sample(x_T=z, method=grown, return_info=True)
    assert other.nfe != plain.nfe and not torch.equal(other.samples, plain.samples)
    worst = sdescore.TorchDiffEq("dopri5", step_control="x_per_example")
    assert pf.sample(x_T=z, method=worst, return_info=True).nfe != plain.nfe


def test_numpy_integers_are_accepted_and_stored_as_python_ints():
    # ExpABM(steps=np.int64(40)) was refused ("got int64"): numpy ints come from sweeps
    built = [
        (sdescore.ExpABM(steps=np.int64(40)), "steps", 40),
        (sdescore.TorchDiffEq("rk4", steps=np.int32(10)), "steps", 10),
        (sdescore.EulerMaruyama(steps=np.int64(5)), "steps", 5),
        (sdescore.DPMSolver(order=np.int64(2)), "order", 2),
        (sdescore.Dopri5(max_evals=np.uint16(500)), "max_evals", 500),
    ]
    for solver, name, value in built:
        got = getattr(solver, name)
        assert got == value and type(got) is int, (solver, type(got))
        assert json.loads(json.dumps(solver.to_dict())) == solver.to_dict()
    # the entry points: a shape and steps from numpy give the same samples as Python ints
    pf = sdescore.VPSDE().probability_flow(lambda x, t: -x)
    g = torch.Generator().manual_seed(0)
    a = pf.sample((np.int64(4), np.int64(2)), method="euler", steps=np.int64(3), generator=g)
    b = pf.sample((4, 2), method="euler", steps=3, generator=g.manual_seed(0))
    assert torch.equal(a, b)
    x = sdescore.toy.eight_gaussians().sample(np.int64(6), dtype=torch.float64)
    assert x.shape == (6, 2)
    res = sdescore.likelihood(lambda x, t: -x, x, sde=sdescore.VPSDE(), batch_size=np.int64(3))
    assert res.log_prob.shape == (6,)


@pytest.mark.parametrize("bad", [True, np.True_, 40.0, np.float64(40.0)], ids=repr)
def test_bools_and_floats_are_still_refused_as_integers(bad):
    with pytest.raises(TypeError, match="steps must be an int"):
        sdescore.ExpABM(steps=bad)
    with pytest.raises(TypeError, match="steps must be an int"):
        sdescore.TorchDiffEq("rk4", steps=bad)
    with pytest.raises(TypeError, match="order must be an int"):
        sdescore.DPMSolver(order=bad)


def test_fixed_step_torchdiffeq_refuses_step_control_and_shows_only_its_options():
    # TorchDiffEq("rk4", steps=10, step_control="x") was accepted though it controls no step,
    # and the repr listed rtol/atol that the constructor refuses for rk4
    with pytest.raises(ValueError, match="step_control applies to the adaptive methods"):
        sdescore.TorchDiffEq("rk4", steps=10, step_control="x")
    rk4 = sdescore.TorchDiffEq("rk4", steps=10, step_control="all")  # the default: no change
    assert repr(rk4) == "TorchDiffEq(method='rk4', steps=10, grid=None, options=None)"
    assert eval(repr(rk4), vars(sdescore)) == rk4
    assert solver_from_dict(rk4.to_dict()) == rk4
    dopri = sdescore.TorchDiffEq("dopri5", rtol=1e-6, step_control="x")
    assert "rtol=1e-06" in repr(dopri) and "step_control='x'" in repr(dopri)
    assert eval(repr(dopri), vars(sdescore)) == dopri
    assert solver_from_dict(dopri.to_dict()) == dopri


@pytest.mark.parametrize("process, name", [(p, n) for p, names in METHODS.items() for n in names])
def test_describe_without_a_budget(process, name):
    # Found by a user's trial: DPMSolver(order=3).describe(None) said "with None score calls"
    # and Auto().describe(None) raised a TypeError.
    solver = get_solver(name, process)
    text = solver.describe(None)
    assert isinstance(text, str) and "None" not in text.replace("=None", "")
