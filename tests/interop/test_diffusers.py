"""diffusers models as score functions: the heads, the timestep convention, and cross-library
agreement of our DDIM / DPM-Solver steps with diffusers' schedulers (tiny random UNet, no
downloads)."""

import textwrap

import pytest
import torch

import sdescore
from sdescore import DiscreteVPSDE
from sdescore.interop import TimestepNet, from_diffusers, sde_from_scheduler
from sdescore.solvers import dpm_solver as dpm
from sdescore.solvers._common import Recorder
from sdescore.solvers.base import Problem
from sdescore.toy import GaussianMixture

N = 1000
F64 = {"dtype": torch.float64}
CONFIG = {"num_train_timesteps": N, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}


class _Output:
    def __init__(self, sample):
        self.sample = sample


class OracleUNet:
    """The exact eps / v / x0 of a Gaussian mixture, called like a diffusers UNet."""

    def __init__(self, data, sde, prediction_type):
        self.data, self.sde, self.kind = data, sde, prediction_type

    def __call__(self, x, timestep):
        t = self.sde.t_from_timestep(timestep).to(x.dtype)
        a = self.sde.alpha(t)[:, None]
        s = self.sde.sigma(t)[:, None]
        score = self.data.marginal_score(x, t, self.sde)
        eps, x0 = -s * score, (x + s.square() * score) / a
        out = {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}[self.kind]
        return _Output(out)


def _data():
    means = torch.tensor([[-0.5, 0.3], [0.4, -0.2]], **F64)
    return GaussianMixture(means, torch.tensor([0.2, 0.1]))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_heads_of_an_exact_network_reproduce_the_oracle_score(prediction_type):
    sde = DiscreteVPSDE.linear()
    data = _data()
    # a duck-typed scheduler: a table and a config
    scheduler = type("S", (), {"alphas_cumprod": sde.alphas_cumprod, "config": {}})()
    model = from_diffusers(
        OracleUNet(data, sde, prediction_type), scheduler, prediction_type=prediction_type
    )
    x = torch.randn(64, 2, **F64, generator=torch.Generator().manual_seed(0))
    t = torch.rand(64, **F64, generator=torch.Generator().manual_seed(1)) * 0.99 + 0.01
    assert torch.allclose(model(x, t), data.marginal_score(x, t, model.sde), rtol=1e-9, atol=1e-9)


def test_scheduler_errors_are_clear():
    with pytest.raises(TypeError, match="alphas_cumprod tensor.*got int"):
        sde_from_scheduler(3)
    sched = type("S", (), {"alphas_cumprod": torch.tensor([0.9, 0.5]), "config": {}})()
    with pytest.raises(ValueError, match=r"prediction_type must be one of \['epsilon'"):
        from_diffusers(lambda x, k: x, sched, prediction_type="eps")
    with pytest.raises(TypeError, match="net must be callable"):
        TimestepNet(3, DiscreteVPSDE(torch.tensor([0.1])))


# --- with diffusers ------------------------------------------------------------------------
diffusers = pytest.importorskip("diffusers", reason="needs the optional diffusers extra")

from problems import tiny_unet  # noqa: E402


def _unet():
    return tiny_unet(torch.float64)


def test_config_and_scheduler_give_the_same_sde():
    sched = diffusers.DDPMScheduler(**CONFIG)
    a, b = sde_from_scheduler(sched), sde_from_scheduler(dict(sched.config))
    assert torch.equal(a.alphas_cumprod, b.alphas_cumprod)
    assert torch.allclose(a.alphas_cumprod, sched.alphas_cumprod.double(), rtol=2e-15, atol=0)
    model = from_diffusers(_unet(), sched.config)
    assert model.parameterization == "eps" and isinstance(model.net, TimestepNet)


@torch.no_grad()
def test_ddim_steps_equal_ddim_scheduler():
    # DDIM (eta = 0) is DPM-Solver-1 (Lu et al. 2022, Sec. 4.1); at the scheduler's own
    # timesteps our step must reproduce diffusers' step. set_alpha_to_one=False ends at t = 1/N.
    unet = _unet()
    sched = diffusers.DDIMScheduler(**CONFIG, set_alpha_to_one=False, clip_sample=False)
    sched.set_timesteps(10)
    # diffusers keeps alphas_cumprod in float32 and takes square roots there; in float64 the
    # two libraries then agree to float64 rounding.
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    sched.final_alpha_cumprod = sched.alphas_cumprod[0]
    model = from_diffusers(unet, sched)
    sde = model.sde
    k = sched.timesteps
    ts = torch.cat([sde.t_from_timestep(k.double()), torch.tensor([1.0 / N], **F64)])
    x = torch.randn(3, 1, 8, 8, **F64, generator=torch.Generator().manual_seed(0))
    for i, step_k in enumerate(k):
        ref = sched.step(unet(x, step_k).sample, step_k, x).prev_sample
        ours = dpm.dpm_solver(
            Problem(sde, model, x, ts[i].item(), ts[i + 1].item(), 1, None, Recorder(False)),
            order=1, grid="time_uniform", prediction="noise",
        )  # fmt: skip
        assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-10), i
        x = ref


@pytest.mark.parametrize(("theirs", "ours"), [("midpoint", "midpoint"), ("heun", "taylor")])
@torch.no_grad()
def test_dpm_solver_2m_on_diffusers_grid_equals_dpm_solver_multistep_scheduler(theirs, ours):
    # Settings under which diffusers' DPM-Solver++(2M) is our multistep solver: data prediction
    # (dpmsolver++), its solver_type "midpoint" (its default, Lu et al.'s Alg. 2, and ours) or
    # "heun" (our "taylor"), lower_order_final with < 15 steps (ours too),
    # final_sigmas_type="sigma_min" (end at t = 1/N rather than sigma = 0).
    unet = _unet()
    sched = diffusers.DPMSolverMultistepScheduler(
        **CONFIG, algorithm_type="dpmsolver++", solver_order=2, solver_type=theirs,
        lower_order_final=True, final_sigmas_type="sigma_min",
    )  # fmt: skip
    sched.set_timesteps(8)
    model = from_diffusers(unet, sched)
    sde = model.sde
    # the scheduler's time grid: its timesteps, then t = 1/N (sigma_min)
    ts = torch.cat([sde.t_from_timestep(sched.timesteps.double()), torch.tensor([1.0 / N], **F64)])
    x0 = torch.randn(3, 1, 8, 8, **F64, generator=torch.Generator().manual_seed(1))
    x = x0.clone()
    for k in sched.timesteps:
        x = sched.step(unet(x, k).sample, k, x).prev_sample
    # the public way: the scheduler's grid handed to the solver object, from T = ts[0]
    solver = sdescore.DPMSolver(order=2, multistep=True, grid=ts, solver_type=ours)
    assert ts[0].item() == sde.T  # diffusers' first timestep N - 1 is t = T
    flow = sde.probability_flow(model)
    info = flow.sample(x_T=x0, method=solver, eps=ts[-1].item(), return_info=True)
    assert info.nfe == 8 and "DPM-Solver++(2M" in info.solver
    # diffusers computes sigma, alpha, lambda from the float32 table in float32
    assert torch.allclose(info.samples, x, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # a whole adaptive likelihood solve through a U-Net (about 10 s)
def test_likelihood_of_a_tiny_unet_runs():
    unet = _unet()
    model = from_diffusers(unet, diffusers.DDPMScheduler(**CONFIG))
    levels = torch.randint(0, 256, (2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    res = sdescore.likelihood(
        model, levels.double(), dequantization=256, rtol=1e-3, atol=1e-3, eps=1e-3,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert res.bits_per_dim.shape == (2,) and torch.isfinite(res.bits_per_dim).all()


def test_times_below_the_first_training_step_are_refused_not_extrapolated():
    # issue 25 item 3: t < 1/N reached the UNet as a negative timestep (t = 1e-4 as -0.9).
    seen = []

    class Spy(torch.nn.Module):  # a module, so that its float64 weights set the data's dtype
        def __init__(self):
            super().__init__()
            self.unet = _unet()

        def forward(self, x, timestep):
            seen.append(timestep.min().item())
            return self.unet(x, timestep)

    model = from_diffusers(Spy(), diffusers.DDPMScheduler(**CONFIG))
    x = torch.randn(2, 1, 8, 8, **F64, generator=torch.Generator().manual_seed(0))
    for t in (0.0, 1e-4, 0.5 / N):
        with pytest.raises(ValueError, match=r"below the first training time .* 1/N = 0.001"):
            model(x, t)
    assert seen == []  # the network never saw a negative timestep
    levels = torch.randint(0, 256, (2, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=r"eps=0.001"):
        sdescore.likelihood(
            model, levels, dequantization=256
        )  # the default eps = 1e-5 lies below 1/N
    assert seen == []
    res = sdescore.likelihood(model, levels, eps=model.net.min_time, dequantization=256)
    assert torch.isfinite(res.bits_per_dim).all() and min(seen) == 0.0
    # t = 1/N with a rounding error lies within the band: timestep 0, not refused
    seen.clear()
    assert torch.isfinite(model(x, (1.0 - 1e-7) / N)).all() and seen == [0.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the accelerator path needs CUDA")
def test_times_below_the_first_training_step_give_nan_on_an_accelerator():
    # no host sync on a GPU: NaN where t < 1/N, which the solvers then report
    model = from_diffusers(_unet().cuda(), diffusers.DDPMScheduler(**CONFIG))
    x = torch.randn(2, 1, 8, 8, **F64, device="cuda")
    t = torch.tensor([0.5 / N, 0.5], **F64, device="cuda")
    out = model(x, t)
    assert out[0].isnan().all() and out[1].isfinite().all()
    levels = torch.randint(0, 256, (2, 1, 8, 8), device="cuda")
    with pytest.raises(sdescore.solvers.NonFiniteError, match="non-finite"):
        sdescore.likelihood(model, levels, dequantization=256)  # default eps = 1e-5 < 1/N


def test_from_diffusers_docstring_example_runs():
    # Trial 3 item 4: the example omitted eps=model.net.min_time, which these models need, and
    # raised. Run its code (less the lines that load files) on a tiny UNet.
    block = from_diffusers.__doc__.split("::", 1)[1].split("\n    Args:")[0]
    lines = [
        line
        for line in textwrap.dedent(block).strip().splitlines()
        if "from_pretrained" not in line and "from_diffusers(" not in line
    ]
    model = from_diffusers(_unet(), diffusers.DDPMScheduler(**CONFIG))
    levels = torch.randint(0, 256, (2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    scope = {"sdescore": sdescore, "model": model, "images_uint8": levels.to(torch.uint8)}
    exec("\n".join(lines), scope)  # noqa: S102 (the docstring's own example)
    assert torch.isfinite(scope["res"].bits_per_dim).all()
