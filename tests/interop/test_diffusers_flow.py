"""diffusers flow-matching models as score functions: the timestep convention, the shifted grid,
and our first-order steps against FlowMatchEulerDiscreteScheduler (tiny random UNet, no
downloads)."""

import pytest
import torch

import sdescore
from sdescore import RectifiedFlowSDE
from sdescore.interop import FlowTimestepNet, flow_sampling_times, from_diffusers_flow
from sdescore.solvers import dpm_solver as dpm
from sdescore.solvers._common import Recorder
from sdescore.solvers.base import Problem

F64 = {"dtype": torch.float64}


class OracleFlowNet:
    """The exact velocity eps - x0 of a Gaussian mixture, called like a diffusers network."""

    def __init__(self, data, sde):
        self.data, self.sde = data, sde

    def __call__(self, x, timestep):
        t = timestep / 1000
        s = self.data.marginal_score(x, t, self.sde)
        x0 = x + t[:, None].square() * s  # alpha x0_hat = x + sigma^2 s, then / alpha below
        x0 = x0 / (1 - t)[:, None]
        return -t[:, None] * s - x0  # eps_hat - x0_hat


def test_an_exact_flow_network_gives_the_exact_score():
    sde = RectifiedFlowSDE()
    data = sdescore.toy.eight_gaussians()
    config = {"num_train_timesteps": 1000, "shift": 3.0}
    model = from_diffusers_flow(OracleFlowNet(data, sde), config)
    assert model.parameterization == "velocity" and isinstance(model.sde, RectifiedFlowSDE)
    x = 3 * torch.randn(64, 2, **F64, generator=torch.Generator().manual_seed(0))
    t = torch.rand(64, **F64, generator=torch.Generator().manual_seed(1)) * 0.98 + 0.01
    assert torch.allclose(model(x, t), data.marginal_score(x, t, sde), rtol=1e-9, atol=1e-9)


def test_flow_errors_are_clear():
    with pytest.raises(TypeError, match="FlowMatchEulerDiscreteScheduler"):
        from_diffusers_flow(lambda x, k: x, {"num_train_timesteps": 1000})
    with pytest.raises(ValueError, match="invert_sigmas=True"):
        from_diffusers_flow(
            lambda x, k: x, {"num_train_timesteps": 1000, "shift": 1.0, "invert_sigmas": True}
        )
    with pytest.raises(TypeError, match="net must be callable"):
        FlowTimestepNet(3)
    with pytest.raises(ValueError, match="T must be < 1"):
        from_diffusers_flow(lambda x, k: x, {"num_train_timesteps": 1000, "shift": 1.0}, T=1.0)


# --- with diffusers ------------------------------------------------------------------------
diffusers = pytest.importorskip("diffusers", reason="needs the optional diffusers extra")

from problems import tiny_unet  # noqa: E402


def _unet(dtype):
    return tiny_unet(dtype)


def _scheduler(**options):
    return diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **options)


@pytest.mark.parametrize(
    "options, mu",
    [({"shift": 1.0}, None), ({"shift": 3.0}, None), ({"use_dynamic_shifting": True}, 0.8)],
)
def test_sampling_times_are_the_schedulers_sigmas(options, mu):
    sched = _scheduler(**options)
    before = sched.sigmas.clone()
    ts = flow_sampling_times(sched, 10, mu=mu)
    assert torch.equal(sched.sigmas, before)  # the caller's scheduler is untouched
    ref = _scheduler(**options)
    ref.set_timesteps(10, mu=mu)
    assert ts.shape == (11,) and ts.dtype == torch.float64
    assert torch.equal(ts[1:], ref.sigmas[1:].double()) and ts[0] == 0.999  # sigma = 1 -> T
    assert ts[-1] == 0 and bool((ts[1:] < ts[:-1]).all())
    # and the timestep each sigma is given to the network
    assert torch.allclose(ts[1:-1] * 1000, ref.timesteps[1:].double(), rtol=1e-6)
    # a config gives the same grid
    assert torch.equal(flow_sampling_times(dict(ref.config), 10, mu=mu), ts)


def _first_order(model, x, s, t):
    """Our first-order step s -> t: DPM-Solver++(1), i.e. DDIM in data prediction."""
    return dpm.dpm_solver(
        Problem(model.sde, model, x, s, t, 1, None, Recorder(False)),
        order=1, grid="time_uniform", prediction="data",
    )  # fmt: skip


@torch.no_grad()
def test_one_euler_step_equals_our_first_order_step_float32():
    unet = _unet(torch.float32)
    sched = _scheduler(shift=3.0)
    sched.set_timesteps(10)
    model = from_diffusers_flow(unet, sched)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for i in range(1, 10):  # every step but the first (from sigma = 1, beyond T)
        k = sched.timesteps[i]
        sched._step_index = i
        ref = sched.step(unet(x, k.expand(3)).sample, k, x).prev_sample
        ours = _first_order(model, x, sched.sigmas[i].item(), sched.sigmas[i + 1].item())
        # measured: <= 4.8e-7 (float32 rounding of the two formulas)
        assert (ours - ref).abs().max().item() <= 1e-5, i


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-6), (torch.float32, 2e-5)])
@torch.no_grad()
def test_ten_step_solve_equals_the_diffusers_loop_on_the_same_grid(dtype, tol):
    # diffusers' own loop (the pipelines' `for t in timesteps: step(net(x, t), t, x)`) on the
    # grid of flow_sampling_times, i.e. with its first sigma at T instead of 1; ours: ten
    # first-order steps, the last one to t = 0 (x0-prediction, as diffusers' last step).
    unet = _unet(dtype)
    sched = _scheduler(shift=3.0)
    ts = flow_sampling_times(sched, 10)
    sched.set_timesteps(10)
    sched.sigmas = ts.float()
    sched.timesteps = (ts[:-1] * 1000).float()
    model = from_diffusers_flow(unet, sched)
    z = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=dtype)
    x, euler = z.clone(), z.clone()
    for i, k in enumerate(sched.timesteps):
        x = sched.step(unet(x, k.expand(3).to(dtype)).sample, k, x).prev_sample.to(dtype)
        # diffusers' update written out in the working precision
        kk = (ts[i] * 1000).to(dtype).expand(3)
        euler = euler + (ts[i + 1] - ts[i]).item() * unet(euler, kk).sample
    ours = z.clone()
    for s, t in zip(ts[:-1].tolist(), ts[1:].tolist(), strict=True):
        ours = _first_order(model, ours, s, t)
    # measured: 2.9e-7 (float64: diffusers' step computes in float32 whatever the input),
    # 6.4e-6 (float32: the x0 prediction at T divides by alpha(T) = 1e-3, which amplifies the
    # rounding of x ~10x in the first step)
    assert (ours - x).abs().max().item() <= tol
    if dtype == torch.float64:  # against the same update in float64: rounding (1.6e-14)
        assert (ours - euler).abs().max().item() <= 1e-12


@torch.no_grad()
def test_public_samplers_run_on_a_diffusers_flow_model():
    unet = _unet(torch.float64)
    model = from_diffusers_flow(unet, _scheduler(shift=3.0))
    pf = model.sde.probability_flow(model)
    gen = torch.Generator().manual_seed(2)
    for method, opts in (("auto", {"steps": 10}), ("unipc", {"steps": 10})):
        x = pf.sample((2, 1, 8, 8), method=method, generator=gen, **F64, **opts)
        assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()
