"""Numerical failure is never silent (issue 8, section 2), for every sampler.

A NaN score, an overflowing step, a stiff problem at impossible tolerances, a low-precision
state, a wrongly shaped user drift and an empty batch each give a clear error (or, for low
precision, the right answer), never all-NaN samples or a misleading message.
"""

import re

import pytest
import torch

import sdescore
from sdescore.solvers import ODE_METHODS, SDE_METHODS
from sdescore.solvers._common import MaxStepsError, NonFiniteError
from sdescore.solvers.torchdiffeq import odeint_drift

from problems import gaussian_1d

VP = sdescore.VPSDE(0.1, 20.0)


def nan_below_half(x, t):
    """The exact score of N(0, I) data under VP (-x), NaN once t < 0.5."""
    return torch.where(t[:, None] < 0.5, torch.full_like(x, float("nan")), -x)


# Cheap options per method; adaptive ones with loose tolerances so the test stays fast.
_SDE_KW = {"gotta_go_fast": {}, "annealed_langevin": {"steps": 10}}
_SDE_SOLVER = {"euler": sdescore.TorchSDE("euler", adaptive=True, rtol=1e-2, atol=1e-2)}


@pytest.mark.parametrize("method", SDE_METHODS)
def test_sde_sampler_nan_score_raises_naming_method_and_time(method):
    kw = _SDE_KW.get(method, {"steps": 10})
    with pytest.raises(NonFiniteError) as err:
        VP.reverse(nan_below_half).sample(
            (8, 2),
            method=_SDE_SOLVER.get(method, method),
            generator=torch.Generator().manual_seed(0),
            **kw,
        )
    msg = str(err.value)
    # Before: all-NaN samples returned silently, or "t must lie in [0, T], got nan".
    assert method in msg and "score_fn(x, t) returned NaN or Inf" in msg
    assert 0.0 < float(re.search(r"\(t = ([0-9.e-]+)\)", msg).group(1)) < 0.5  # where it began
    assert "must lie" not in msg


@pytest.mark.parametrize("method", ODE_METHODS)
def test_ode_sampler_nan_score_raises_naming_method_and_time(method):
    kw = (
        {}
        if method in ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
        else {"steps": 10}
    )
    with pytest.raises(NonFiniteError) as err:
        VP.probability_flow(nan_below_half).sample((8, 2), method=method, **kw)
    msg = str(err.value)
    assert method in msg and "score_fn(x, t) returned NaN or Inf" in msg and "must lie" not in msg


def test_nan_start_state_and_overflow_are_named():
    pf = VP.probability_flow(lambda x, t: -x)
    with pytest.raises(NonFiniteError, match="start state contains NaN"):
        pf.decode(torch.full((4, 2), float("nan")))
    # A finite score whose steps overflow float32: the state, not the score, goes non-finite.
    ve = sdescore.VESDE(0.01, 50.0)
    with pytest.raises(NonFiniteError, match="euler_maruyama"):
        ve.reverse(lambda x, t: x * 1e30).sample((4, 2), steps=10)


def test_odeint_drift_reports_nan_drift_not_the_time_check():
    def drift(x, t):
        return VP.drift(x, t) * float("nan")

    with pytest.raises(NonFiniteError, match=r"drift\(x, t\) returned NaN or Inf at call 1"):
        odeint_drift(drift, torch.zeros(4, 2), 1.0, 1e-3)


def test_adaptive_half_precision_is_refused_clearly():
    with pytest.raises(TypeError, match="float32 or float64 state, got torch.float16"):
        odeint_drift(VP.drift, torch.zeros(4, 2, dtype=torch.float16), 1.0, 1e-3)


def stiff(x, t):
    return -1e4 * x


@pytest.mark.parametrize(
    "call",
    [
        lambda: VP.probability_flow(stiff).sample(
            (8, 2),
            method=sdescore.TorchDiffEq("dopri5", rtol=1e-12, atol=1e-12, max_steps=30),
        ),
        lambda: VP.reverse(stiff).sample(
            (8, 2),
            method=sdescore.GottaGoFast(rtol=1e-12, atol=1e-12, max_steps=30),
        ),
        lambda: VP.reverse(stiff).sample(
            (8, 2),
            method=sdescore.TorchSDE("euler", adaptive=True, rtol=1e-12, atol=1e-12, max_steps=30),
        ),
        lambda: odeint_drift(
            VP.drift, torch.ones(8, 2), 1.0, 1e-3, rtol=1e-12, atol=1e-12, max_steps=30
        ),
    ],
    ids=["dopri5", "gotta_go_fast", "torchsde", "odeint_drift"],
)
@pytest.mark.filterwarnings("ignore:Hitting minimum allowed step size")
def test_adaptive_paths_stop_at_max_steps(call):
    # float32 cannot meet rtol = atol = 1e-12: before, dopri5 ran for minutes, gotta_go_fast
    # for 100 000 iterations. Now each stops after max_steps with the advice in the message.
    msg = "max steps exceeded, loosen rtol/atol or raise max_steps"
    with pytest.raises(MaxStepsError, match=msg):
        call()


def test_max_steps_only_for_adaptive_methods():
    with pytest.raises(ValueError, match="max_steps"):
        VP.probability_flow(stiff).sample((4, 2), method=sdescore.TorchDiffEq("rk4", max_steps=10))
    with pytest.raises(ValueError, match="adaptive=True"):
        VP.reverse(stiff).sample((4, 2), method=sdescore.TorchSDE("euler", max_steps=10))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_sampling_has_right_std_and_no_zero_steps(dtype):
    # Before: bfloat16 grid, half of 1000 steps of zero length, samples 7 % too narrow (and the
    # bfloat16 state lost the small increments: mean 0.650 for 0.700). Now the grid and the state
    # are float32 inside, only the score sees `dtype`.
    data = gaussian_1d()  # N(0.7, 0.4^2); std at eps = 1e-3 is 0.4001
    res = VP.reverse(data.score_fn(VP)).sample(
        (4000, 1),
        steps=1000,
        dtype=dtype,
        generator=torch.Generator().manual_seed(0),
        return_info="trajectory",
    )
    assert res.samples.dtype == dtype
    assert bool((res.times[:-1] > res.times[1:]).all())  # no zero-length step
    x = res.samples.double()
    # Monte Carlo: the sample std has sd 0.4 / sqrt(8000) = 0.0045, the mean 0.0063; 3 sd.
    assert abs(x.std().item() - 0.4001) < 0.015
    assert abs(x.mean().item() - 0.7) < 0.02


def test_low_precision_ode_samplers_return_callers_dtype():
    pf = VP.probability_flow(gaussian_1d().score_fn(VP))
    for method in ("dpm_solver", "dopri5"):
        x = pf.sample(
            (2000, 1),
            method=method,
            dtype=torch.bfloat16,
            generator=torch.Generator().manual_seed(1),
        )
        assert x.dtype == torch.bfloat16
        assert abs(x.double().std().item() - 0.4001) < 0.02


class BadDriftSDE(sdescore.SDE):
    """A user SDE whose drift is (B, 1) for a (B, 2) state (an Ornstein-Uhlenbeck typo)."""

    def drift(self, x, t):
        return -x.mean(1, keepdim=True)

    def diffusion(self, t):
        return torch.ones_like(t)


@pytest.mark.parametrize(
    "call",
    [
        lambda rev, pf: rev.drift(torch.zeros(4, 2), 0.5),
        lambda rev, pf: pf.drift(torch.zeros(4, 2), 0.5),
        lambda rev, pf: rev.sample((4, 2), steps=5, x_T=torch.zeros(4, 2)),
        lambda rev, pf: rev.sample(method="gotta_go_fast", x_T=torch.zeros(4, 2)),
        lambda rev, pf: rev.sample(method="euler", steps=5, x_T=torch.zeros(4, 2)),
        lambda rev, pf: pf.decode(torch.zeros(4, 2), method="rk4", steps=5),
        lambda rev, pf: pf.decode(torch.zeros(4, 2), method="dopri5"),
    ],
    ids=[
        "reverse.drift",
        "pf.drift",
        "euler_maruyama",
        "gotta_go_fast",
        "torchsde",
        "rk4",
        "dopri5",
    ],
)
def test_user_drift_shape_is_checked_like_the_score(call):
    sde = BadDriftSDE()
    score = lambda x, t: -x  # noqa: E731
    with pytest.raises(ValueError, match=r"BadDriftSDE.drift\(x, t\) returned shape \(4, 1\)"):
        call(sde.reverse(score), sde.probability_flow(score))


@pytest.mark.parametrize(
    "call",
    [
        lambda rev, pf: rev.sample((0, 2)),
        lambda rev, pf: pf.sample((0, 2)),
        lambda rev, pf: rev.sample(x_T=torch.zeros(0, 2)),
        lambda rev, pf: pf.encode(torch.zeros(0, 2)),
        lambda rev, pf: pf.decode(torch.zeros(0, 2)),
    ],
    ids=["reverse.sample", "pf.sample", "x_T", "encode", "decode"],
)
def test_empty_batch_is_a_clear_error(call):
    score = lambda x, t: -x  # noqa: E731
    with pytest.raises(ValueError, match=r"B >= 1|positive ints"):
        call(VP.reverse(score), VP.probability_flow(score))


def _in_place(x, t):
    x.mul_(0.5)  # a score that writes into its input
    return -x


_CALLS = [
    lambda proc, z: proc.reverse_sde.sample(z.shape, steps=5, x_T=z),
    lambda proc, z: proc.reverse_sde.sample(method="euler", steps=5, x_T=z),
    lambda proc, z: proc.pf.sample(z.shape, method="dpm_solver", steps=4, x_T=z),
    lambda proc, z: proc.pf.decode(z, method="rk4", steps=5),
    lambda proc, z: proc.pf.decode(z, method="dopri5"),
    lambda proc, z: proc.pf.encode(z, method="rk4", steps=5),
]
_IDS = ["euler_maruyama", "torchsde", "dpm_solver", "rk4", "dopri5", "encode"]


class _Procs:
    def __init__(self, score):
        self.reverse_sde = VP.reverse(score)
        self.pf = VP.probability_flow(score)


@pytest.mark.parametrize("call", _CALLS, ids=_IDS)
def test_a_score_writing_into_its_input_is_refused_and_the_callers_tensor_kept(call):
    # issue 25 item 14: the score's in-place write changed the caller's x_T
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    before = z.clone()
    with pytest.raises(ValueError, match=r"modified its input x in place \(call 1"):
        call(_Procs(_in_place), z)
    assert torch.equal(z, before)


@pytest.mark.parametrize("call", _CALLS, ids=_IDS)
def test_a_score_answering_integers_is_refused(call):
    # issue 25 item 14: an integer answer was truncated and used
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(0)) * 3
    with pytest.raises(TypeError, match="floating-point tensor, got dtype torch.int64"):
        call(_Procs(lambda x, t: (-x).long()), z)


class Runaway(Exception):
    """A solve that kept calling the score far past its budget (issue 25, item 1)."""


class CountedStiff:
    """The score $-k x$ (stiff for large k), counting its calls; raises `Runaway` past `cap`
    calls so that a solver without a work budget fails the test fast instead of running for
    minutes."""

    def __init__(self, k: float, cap: int):
        self.k, self.cap, self.calls = k, cap, 0

    def __call__(self, x, t):
        self.calls += 1
        if self.calls > self.cap:
            raise Runaway(f"{self.calls} score calls")
        return -self.k * x


_BUDGET = 300
_BUDGETED = {
    "dopri5": ("ode", 1e6, lambda: sdescore.TorchDiffEq("dopri5", max_evals=_BUDGET)),
    "dopri8": ("ode", 1e6, lambda: sdescore.TorchDiffEq("dopri8", max_evals=_BUDGET)),
    "bosh3": ("ode", 1e6, lambda: sdescore.TorchDiffEq("bosh3", max_evals=_BUDGET)),
    "Dopri5": ("ode", 1e6, lambda: sdescore.Dopri5(max_evals=_BUDGET)),
    "gotta_go_fast": ("sde", 1e6, lambda: sdescore.GottaGoFast(max_evals=_BUDGET)),
    # -1e6 x makes torchsde's error estimate NaN at once (a NonFiniteError, not a runaway)
    "torchsde": ("sde", 1e4, lambda: sdescore.TorchSDE("euler", adaptive=True, max_evals=_BUDGET)),
}


@pytest.mark.parametrize("name", list(_BUDGETED))
@pytest.mark.filterwarnings("ignore:Hitting minimum allowed step size")
def test_adaptive_sampling_stops_at_its_budget_of_score_calls(name):
    # Before: bounded in steps only, dopri5 on -1e6 x made 60 002 score calls (minutes).
    process, k, solver = _BUDGETED[name]
    score = CountedStiff(k, cap=3 * _BUDGET)
    obj = VP.probability_flow(score) if process == "ode" else VP.reverse(score)
    with pytest.raises(MaxStepsError, match=r"max score calls exceeded \(max_evals=300\)") as err:
        obj.sample((16, 2), method=solver())
    assert score.calls <= _BUDGET
    msg = str(err.value)
    # It says where it stopped and what to do.
    for part in ("score calls, at t = ", "loosen rtol/atol", "stiffness", "raise max_evals"):
        assert part in msg


def test_every_adaptive_solver_has_the_one_default_budget():
    from sdescore.solvers._common import DEFAULT_MAX_EVALS

    assert DEFAULT_MAX_EVALS == 10_000
    for solver in (
        sdescore.TorchDiffEq("dopri5"),
        sdescore.TorchDiffEq("bosh3"),
        sdescore.Dopri5(),
        sdescore.GottaGoFast(),
        sdescore.TorchSDE("euler", adaptive=True),
        sdescore.ExpABM(),
    ):
        assert solver.max_evals == DEFAULT_MAX_EVALS, solver
    with pytest.raises(ValueError, match="max_evals"):
        sdescore.TorchDiffEq("rk4", max_evals=10)
    with pytest.raises(ValueError, match="adaptive=True"):
        sdescore.TorchSDE("euler", max_evals=10)
    with pytest.raises((TypeError, ValueError), match="max_evals"):
        sdescore.GottaGoFast(max_evals=0)


def test_odeint_drift_stops_at_max_evals():
    calls = []

    def drift(x, t):
        calls.append(1)
        if len(calls) > 3 * _BUDGET:
            raise Runaway
        return -1e6 * x

    with pytest.raises(MaxStepsError, match=r"max_evals=300"):
        odeint_drift(drift, torch.ones(8, 2), 1.0, 1e-3, max_evals=_BUDGET)
    assert len(calls) <= _BUDGET


def test_gotta_go_fast_reports_a_collapsed_step_size_at_once():
    # float32 cannot meet rtol = atol = 1e-12: the step shrinks towards 0. Before, it ran for
    # 10 000 iterations (20 000 score calls); now the collapse is named after one window.
    score = CountedStiff(1.0, cap=1000)
    with pytest.raises(MaxStepsError, match="step size collapsed") as err:
        VP.reverse(score).sample((8, 2), method=sdescore.GottaGoFast(rtol=1e-12, atol=1e-12))
    assert score.calls <= 2 * 50  # one window of 50 iterations, two calls each
    assert "loosen rtol/atol" in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dopri5", "gotta_go_fast"])
def test_the_default_budget_ends_a_stiff_solve(method):
    # The issue's own call, with every default: VPSDE().probability_flow(-1e6 x).sample((16, 2),
    # method="dopri5") made 60 002 score calls before (218 s on the reporter's machine).
    from sdescore.solvers._common import DEFAULT_MAX_EVALS

    score = CountedStiff(1e6, cap=3 * DEFAULT_MAX_EVALS)
    sde = sdescore.VPSDE()
    obj = sde.probability_flow(score) if method == "dopri5" else sde.reverse(score)
    with pytest.raises(MaxStepsError, match="max score calls exceeded"):
        obj.sample((16, 2), method=method)
    assert score.calls <= DEFAULT_MAX_EVALS
