"""The sampling API: validation, reproducibility, score counts, shapes, dtypes, trajectories."""

import pytest
import torch

import sdescore
from sdescore.solvers import METHODS, ODE_METHODS, SDE_METHODS, SampleResult
from sdescore.solvers.torchdiffeq_sample import ODE_ADAPTIVE

from problems import gaussian_1d, image_gaussian, make_sdes

SDES = make_sdes()
VP = SDES["vp"]
DATA_1D = gaussian_1d()

# Small step counts keep the whole module fast; the laws are checked in test_sampling_laws.py.
# name -> (the method: a name or a solver object, the options shared by every solver)
SDE_CASES = {
    "euler_maruyama": ("euler_maruyama", {"steps": 8}),
    "reverse_diffusion": ("reverse_diffusion", {"steps": 8}),
    "ancestral": ("ancestral", {"steps": 8}),
    "pc": (sdescore.PC(corrector=sdescore.Langevin(steps=2)), {"steps": 4}),
    "annealed_langevin": (sdescore.AnnealedLangevin(corrector_steps=2), {"steps": 4}),
    "sde_dpm_solver": ("sde_dpm_solver", {"steps": 8}),
    "gotta_go_fast": (sdescore.GottaGoFast(rtol=0.05, atol=0.05), {}),
    "euler": ("euler", {"steps": 8}),
    "milstein": ("milstein", {"steps": 8}),
    "srk": ("srk", {"steps": 8}),
    "midpoint": ("midpoint", {"steps": 8}),
    "heun": ("heun", {"steps": 8}),
    "euler_heun": ("euler_heun", {"steps": 8}),
    "log_ode": ("log_ode", {"steps": 8}),
}
ODE_CASES = {
    "auto": ("auto", {"steps": 9}),
    "dpm_solver": ("dpm_solver", {"steps": 9}),
    "dpm_solver-multi": (sdescore.DPMSolver(multistep=True), {"steps": 9}),
    "dpm_solver-noise": (sdescore.DPMSolver(multistep=False, prediction="noise"), {"steps": 9}),
    "unipc": ("unipc", {"steps": 9}),
    "dopri5": (sdescore.TorchDiffEq("dopri5", rtol=1e-3, atol=1e-3), {}),
    "bosh3": (sdescore.TorchDiffEq("bosh3", rtol=1e-3, atol=1e-3), {}),
    "rk4": ("rk4", {"steps": 5}),
    "euler-ode": ("euler", {"steps": 10}),
}


def _ode(name):
    return name.split("-")[0]


def test_method_tables_cover_the_cases():
    assert set(SDE_CASES) == set(SDE_METHODS)
    assert {_ode(m) for m in ODE_CASES} <= set(ODE_METHODS)


@pytest.mark.parametrize("case", sorted(SDE_CASES))
def test_sde_same_seed_bit_identical_and_finite(case):
    rs = VP.reverse(DATA_1D.score_fn(VP))
    method, opts = SDE_CASES[case]
    runs = [
        rs.sample(
            (64, 1),
            method=method,
            generator=torch.Generator().manual_seed(3),
            dtype=torch.float64,
            **opts,
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    other = rs.sample(
        (64, 1),
        method=method,
        generator=torch.Generator().manual_seed(4),
        dtype=torch.float64,
        **opts,
    )
    assert not torch.equal(runs[0], other)
    assert runs[0].dtype == torch.float64 and torch.isfinite(runs[0]).all()


@pytest.mark.parametrize("case", sorted(ODE_CASES))
def test_ode_same_seed_bit_identical(case):
    pf = VP.probability_flow(DATA_1D.score_fn(VP))
    method, opts = ODE_CASES[case]
    runs = [
        pf.sample(
            (64, 1),
            method=method,
            generator=torch.Generator().manual_seed(3),
            dtype=torch.float64,
            **opts,
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1]) and torch.isfinite(runs[0]).all()


def test_unknown_method_lists_the_valid_ones():
    rs = VP.reverse(DATA_1D.score_fn(VP))
    with pytest.raises(ValueError, match="method must be one of") as err:
        rs.sample((4, 1), method="rk45")
    for m in ("euler_maruyama", "ancestral", "pc", "annealed_langevin", "srk", "gotta_go_fast"):
        assert m in str(err.value)
    pf = VP.probability_flow(DATA_1D.score_fn(VP))
    with pytest.raises(ValueError, match="dpm_solver") as err:
        pf.sample((4, 1), method="ancestral")
    assert "dopri5" in str(err.value)


def test_wrong_shape_score_names_both_shapes():
    def bad(x, t):
        return x[:, :1]

    for proc in (VP.reverse(bad), VP.probability_flow(bad)):
        with pytest.raises(ValueError, match=r"returned shape \(4, 1\).*\(4, 3\)"):
            proc.sample((4, 3), steps=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "euler_maruyama", "snr": 0.1}, "snr"),
        ({"method": "ancestral", "rtol": 1e-3}, "rtol"),
        (lambda: {"method": sdescore.PC(predictor="heun")}, "predictor must be one of"),
        ({"steps": 0}, "steps must be an int >= 1"),
        ({"eps": 1.5}, "eps must lie in"),
        ({"eps": 0.0}, "eps must be > 0"),
        ({"trajectory": True}, "trajectory= is now a value of return_info: return_info="),
        ({"return_info": "path"}, "return_info must be a bool .* or 'trajectory'"),
        (lambda: {"method": sdescore.PC(corrector=sdescore.Langevin(snr=-1.0))}, "snr must be > 0"),
        (lambda: {"method": sdescore.TorchSDE("srk", adaptive=1)}, "adaptive must be a bool"),
        # a solver option given to sample: the error names the object and option to use
        ({"method": "pc", "snr": 0.1}, r"method=sdescore.PC\(corrector=sdescore.Langevin"),
    ],
)
def test_bad_sde_options(kwargs, match):
    # a bad option of a solver object is refused where the object is built (a callable here)
    rs = VP.reverse(DATA_1D.score_fn(VP))
    with pytest.raises((ValueError, TypeError), match=match):
        rs.sample((4, 1), **(kwargs() if callable(kwargs) else kwargs))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (lambda: {"method": sdescore.DPMSolver(order=4)}, "order must be 1, 2 or 3"),
        (lambda: {"method": sdescore.DPMSolver(grid="cosine")}, "grid must be one of"),
        (lambda: {"method": sdescore.Auto(grid="cosine")}, "grid must be one of"),
        ({"method": "dopri5", "steps": 10}, "steps does not apply to method"),
        ({"method": "rk4", "order": 2}, "order"),
        ({"order": 3}, r"order= is not an option of sample\(\) nor of method 'auto'"),
        (
            lambda: {"method": sdescore.DPMSolver(prediction="noise", multistep=True)},
            "multistep=True supports prediction=.data. only",
        ),
        ({"steps": 2.5}, "steps must be an int"),
    ],
)
def test_bad_ode_options(kwargs, match):
    # a bad option of a solver object is refused where the object is built (a callable here)
    pf = VP.probability_flow(DATA_1D.score_fn(VP))
    with pytest.raises((ValueError, TypeError), match=match):
        pf.sample((4, 1), **(kwargs() if callable(kwargs) else kwargs))


def test_shape_and_start_state_validation():
    rs = VP.reverse(DATA_1D.score_fn(VP))
    with pytest.raises(ValueError, match="shape must be a tuple of positive ints"):
        rs.sample((0, 1))
    with pytest.raises(ValueError, match="give the sample shape"):
        rs.sample()
    with pytest.raises(ValueError, match="does not match x_T's shape"):
        rs.sample((3, 1), x_T=torch.zeros(4, 1))
    with pytest.raises(TypeError, match="x_T must be a torch.Tensor"):
        rs.sample(x_T=[0.0])


def test_non_gaussian_sde_gets_a_clear_error_for_kernel_methods():
    class Plain(sdescore.SDE):
        def drift(self, x, t):
            return -x

        def diffusion(self, t):
            return torch.ones_like(t)

        @property
        def prior_std(self):
            return 1.0

    rs = Plain().reverse(lambda x, t: -x)
    assert torch.isfinite(rs.sample((8, 2), steps=4)).all()  # Euler-Maruyama needs no kernel
    for method in ("ancestral", "reverse_diffusion", "annealed_langevin", "pc", "sde_dpm_solver"):
        # named as asked: "pc" and "auto" used to name the solver they run inside
        with pytest.raises(TypeError, match=f"method '{method}'.* needs a GaussianSDE"):
            rs.sample((8, 2), method=method, steps=4)
    pc = sdescore.PC(predictor="euler_maruyama")  # needs no kernel
    assert torch.isfinite(rs.sample((8, 2), method=pc, steps=4)).all()
    pf = Plain().probability_flow(lambda x, t: -x)
    for method, named in [
        ("auto", "method 'auto'"),
        ("dpm_solver", "method 'dpm_solver'"),
        ("unipc", r"method UniPC\("),
        ("ipndm", r"IPNDM\("),
    ]:
        with pytest.raises(TypeError, match=f"{named}.* needs a GaussianSDE"):
            pf.sample((8, 2), method=method)


@pytest.mark.parametrize(
    ("method", "opts", "nfe"),
    [
        ("euler_maruyama", {"steps": 7}, 7),
        ("ancestral", {"steps": 7, "denoise": True}, 8),
        (sdescore.PC(corrector=sdescore.Langevin(steps=2)), {"steps": 7}, 21),
        (sdescore.AnnealedLangevin(corrector_steps=3), {"steps": 5}, 15),
        # torchsde probes the drift once in its contract check; SRK with additive noise needs
        # 3 drift evaluations per step (it would need 10 were the noise declared diagonal).
        ("euler", {"steps": 7}, 8),
        ("srk", {"steps": 7}, 22),
    ],
)
def test_sde_nfe_counts_every_score_call(method, opts, nfe):
    calls = []

    def score(x, t):
        calls.append(1)
        return DATA_1D.marginal_score(x, t, VP)

    res = VP.reverse(score).sample(
        (16, 1), method=method, return_info=True, generator=torch.Generator().manual_seed(0), **opts
    )
    assert isinstance(res, SampleResult)
    assert res.nfe == len(calls) == nfe


@pytest.mark.parametrize(
    ("opts", "nfe"),
    [
        ({"steps": 10}, 10),
        ({"steps": 10, "method": "dpm_solver"}, 10),
        ({"steps": 10, "method": sdescore.DPMSolver(multistep=False)}, 10),
        ({"steps": 11, "method": sdescore.DPMSolver(multistep=False, order=2)}, 11),
        ({"method": "rk4", "steps": 6}, 24),
        ({"method": "euler", "steps": 6, "denoise": True}, 7),
    ],
)
def test_ode_nfe_counts_every_score_call(opts, nfe):
    calls = []

    def score(x, t):
        calls.append(1)
        return DATA_1D.marginal_score(x, t, VP)

    res = VP.probability_flow(score).sample((16, 1), return_info=True, **opts)
    assert res.nfe == len(calls) == nfe


@pytest.mark.parametrize("shape", [(5,), (5, 3), (5, 1, 4, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_any_state_shape_and_dtype(shape, dtype):
    if len(shape) == 4:
        data = image_gaussian(shape[1:])
    elif len(shape) == 2:
        data = sdescore.toy.gaussian(torch.zeros(3, dtype=torch.float64), 0.5)
    else:
        data = None
    score = (lambda x, t: -x) if data is None else data.score_fn(VP)
    g = torch.Generator().manual_seed(0)
    for method in ("euler_maruyama", "ancestral", "pc", "srk", "gotta_go_fast"):
        opts = {} if method == "gotta_go_fast" else {"steps": 4}
        x = VP.reverse(score).sample(shape, method=method, generator=g, dtype=dtype, **opts)
        assert x.shape == shape and x.dtype == dtype and torch.isfinite(x).all()
    for method, opts in (
        ("dpm_solver", {"steps": 6}),
        (sdescore.TorchDiffEq("dopri5", rtol=1e-3, atol=1e-3), {}),
    ):
        x = VP.probability_flow(score).sample(
            shape, method=method, generator=g, dtype=dtype, **opts
        )
        assert x.shape == shape and x.dtype == dtype and torch.isfinite(x).all()


def test_trajectories_have_one_state_per_step():
    rs = VP.reverse(DATA_1D.score_fn(VP))
    res = rs.sample((8, 1), steps=6, return_info="trajectory")
    assert res.trajectory.shape == (7, 8, 1) and res.times.shape == (7,)
    assert torch.equal(res.trajectory[-1], res.samples)
    assert res.times[0] == VP.T and torch.isclose(res.times[-1], torch.tensor(1e-3))
    res = rs.sample((8, 1), method="srk", steps=6, return_info="trajectory")
    assert res.trajectory.shape == (7, 8, 1) and torch.equal(res.trajectory[-1], res.samples)
    pf = VP.probability_flow(DATA_1D.score_fn(VP))
    three = sdescore.DPMSolver(order=3)  # singlestep: 3 calls a step, 2 steps
    res = pf.sample((8, 1), steps=6, method=three, return_info="trajectory")
    assert res.trajectory.shape == (3, 8, 1) and bool((res.times.diff() < 0).all())
    multi = sdescore.DPMSolver(multistep=True)
    res = pf.sample((8, 1), steps=6, method=multi, return_info="trajectory")
    assert res.trajectory.shape == (7, 8, 1) and torch.equal(res.trajectory[-1], res.samples)
    res = pf.sample((8, 1), method="dopri5", return_info="trajectory")
    assert res.trajectory.shape == (101, 8, 1)
    torch.testing.assert_close(res.trajectory[-1], res.samples)
    assert rs.sample((8, 1), steps=3, return_info=True).trajectory is None


@pytest.mark.parametrize(
    "process, method",
    [("sde", m) for m in METHODS["sde"]] + [("ode", m) for m in METHODS["ode"]],
)
def test_every_trajectory_starts_at_x_T_and_ends_at_the_samples(process, method):
    # Found by a user's trial: sde_dpm_solver's trajectory began after its first step (it
    # recorded only after each step), so with steps=1 it held the samples alone.
    data = sdescore.toy.gaussian(torch.zeros(2, dtype=torch.float64), 0.5)
    proc = VP.reverse(data.score_fn(VP), probability_flow=process == "ode")
    z = VP.prior_sampling((4, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    adaptive = method in ("gotta_go_fast", *ODE_ADAPTIVE)
    opts = {} if adaptive or method == "annealed_langevin" else {"steps": 3}
    res = proc.sample(
        x_T=z, method=method, return_info="trajectory", generator=torch.Generator(), **opts
    )
    assert torch.equal(res.trajectory[0], z) and res.times[0] == VP.T
    torch.testing.assert_close(res.trajectory[-1], res.samples)
    assert res.trajectory.shape[0] == res.times.shape[0] >= 2


def test_progress_bar_counts_score_calls(capsys):
    rs = VP.reverse(DATA_1D.score_fn(VP))
    rs.sample((8, 1), steps=5, progress=True)
    assert "5/5" in capsys.readouterr().err


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 1e-3), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("method", sorted(ODE_ADAPTIVE))
def test_an_adaptive_ode_method_samples_a_half_precision_state_in_mixed_precision(
    method, dtype, tol
):
    # What ProbabilityFlowODE.sample's docstring says (it used to list this case under Raises):
    # the solve runs in float32, the score sees the caller's dtype, the samples come back in it.
    # Tolerances loosened to the score's rounding (docs/sampling.md, "Devices and dtypes").
    seen = set()
    exact = gaussian_1d().score_fn(VP)

    def score(x, t):
        seen.add((x.dtype, t.dtype))
        return exact(x, t)

    pf = VP.probability_flow(score)
    z = VP.prior_sampling((256, 1), generator=torch.Generator().manual_seed(0)).to(dtype)
    solver = sdescore.TorchDiffEq(method, rtol=tol, atol=tol)
    half = pf.sample(x_T=z, method=solver)
    assert half.dtype == dtype and seen == {(dtype, dtype)}
    full = pf.sample(x_T=z.float(), method=solver)  # the same start, all in float32
    err = (half.float() - full).abs().max().item()
    assert err < 10 * tol, err
    with pytest.raises(TypeError, match="return_logp needs a float32 or float64 state"):
        pf.sample(x_T=z, method=solver, return_logp=True)
