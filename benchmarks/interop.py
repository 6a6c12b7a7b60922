"""Benchmark: diffusers interop (issue 14). Prints three tables.

1. Per-step agreement with diffusers' schedulers on a tiny random `UNet2DModel` (float64 state):
   our DPM-Solver-1 step vs `DDIMScheduler.step` (diffusers' float32 `alphas_cumprod` as is, and
   cast to float64), and our multistep DPM-Solver (order 2, data prediction) vs
   `DPMSolverMultistepScheduler` (dpmsolver++, midpoint and heun, sigma_min; ours with
   `solver_type` "midpoint" and "taylor"): max |ours - diffusers| per step.
2. Exact bits/dim of the same UNet (random weights: a cost and consistency figure, not quality)
   on 8 digits (sklearn 8x8, scaled to 8-bit levels), with score calls and time.
3. The size of the "continuous VP" mistake, with an exact model: the exact eps of a Gaussian
   mixture under the discrete linear schedule (N = 1000), wrapped (a) correctly on
   `DiscreteVPSDE` and (b) as users often do, on `VPSDE(0.1, 20)` with timestep t * (N - 1).
   bits/dim of (a), (b) and the exact log-density; (a) also with dopri5 told the nodes
   (`TorchDiffEq("dopri5", options={"jump_t": nodes})`).

Run:  python benchmarks/interop.py        (about three minutes on a CPU)
"""

from __future__ import annotations

import math
import time

import diffusers
import torch
from sklearn.datasets import load_digits

import sdescore
from sdescore import DiscreteVPSDE
from sdescore.interop import from_diffusers
from sdescore.solvers import dpm_solver as dpm
from sdescore.solvers._common import Recorder
from sdescore.solvers.base import Problem

N = 1000
CONFIG = {"num_train_timesteps": N, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
F64 = {"dtype": torch.float64}


def tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8,
    ).double().eval()  # fmt: skip


@torch.no_grad()
def ddim_agreement(unet, steps, float64_table):
    sched = diffusers.DDIMScheduler(**CONFIG, set_alpha_to_one=False, clip_sample=False)
    sched.set_timesteps(steps)
    if float64_table:
        sched.alphas_cumprod = sched.alphas_cumprod.double()
        sched.final_alpha_cumprod = sched.alphas_cumprod[0]
    model = from_diffusers(unet, sched)
    ts = torch.cat(
        [model.sde.t_from_timestep(sched.timesteps.double()), torch.tensor([1 / N], **F64)]
    )
    x = torch.randn(4, 1, 8, 8, **F64, generator=torch.Generator().manual_seed(0))
    worst = 0.0
    for i, k in enumerate(sched.timesteps):
        ref = sched.step(unet(x, k).sample, k, x).prev_sample
        ours = dpm.dpm_solver(
            Problem(model.sde, model, x, ts[i].item(), ts[i + 1].item(), 1, None, Recorder(False)),
            order=1, grid="time_uniform", prediction="noise",
        )  # fmt: skip
        worst = max(worst, (ours - ref).abs().max().item())
        x = ref
    return worst


@torch.no_grad()
def multistep_agreement(unet, steps, float64_table=False, solver_type="midpoint"):
    sched = diffusers.DPMSolverMultistepScheduler(
        **CONFIG, algorithm_type="dpmsolver++", solver_order=2, solver_type=solver_type,
        lower_order_final=True, final_sigmas_type="sigma_min",
    )  # fmt: skip
    if float64_table:
        sched.alphas_cumprod = sched.alphas_cumprod.double()
    sched.set_timesteps(steps)
    model = from_diffusers(unet, sched)
    ts = torch.cat(
        [model.sde.t_from_timestep(sched.timesteps.double()), torch.tensor([1 / N], **F64)]
    )
    x0 = torch.randn(4, 1, 8, 8, **F64, generator=torch.Generator().manual_seed(1))
    ref, x = [x0], x0
    for k in sched.timesteps:
        x = sched.step(unet(x, k).sample, k, x).prev_sample
        ref.append(x)
    # the scheduler's own grid handed to our DPM-Solver++(2M), from T = ts[0] to ts[-1]
    ours_type = {"midpoint": "midpoint", "heun": "taylor"}[solver_type]  # diffusers' names
    solver = sdescore.DPMSolver(order=2, multistep=True, grid=ts, solver_type=ours_type)
    ours = model.sde.probability_flow(model).sample(
        x_T=x0, method=solver, eps=ts[-1].item(), return_info="trajectory"
    )
    return max((a - b).abs().max().item() for a, b in zip(ours.trajectory, ref, strict=True))


def digits_levels(n):
    d = torch.as_tensor(load_digits().images[:n], **F64)  # levels 0..16
    return torch.round(d * 255 / 16)[:, None]  # 8-bit levels, (n, 1, 8, 8)


def table1(unet):
    print("1. per-step agreement with diffusers (max |ours - diffusers| over steps, float64 state)")
    print(f"{'scheduler':54s} {'steps':>5s} {'max abs diff':>12s}")
    for steps in (10, 50):
        print(
            f"{'DDIMScheduler (its float32 alphas_cumprod)':54s} {steps:5d} {ddim_agreement(unet, steps, False):12.2e}"
        )
        print(
            f"{'DDIMScheduler (alphas_cumprod cast to float64)':54s} {steps:5d} {ddim_agreement(unet, steps, True):12.2e}"
        )
        for kind in ("midpoint", "heun"):
            label = f"DPMSolverMultistep (++, 2M, {kind}, sigma_min)"
            diff = multistep_agreement(unet, steps, solver_type=kind)
            print(f"{label:54s} {steps:5d} {diff:12.2e}")


def table2(unet):
    print(
        "\n2. exact bits/dim of the tiny random UNet on 8 digits (dequantization=256, data in [-1, 1])"
    )
    model = from_diffusers(unet, diffusers.DDPMScheduler(**CONFIG))
    x = digits_levels(8)
    print(f"{'estimator':26s} {'eps':>7s} {'bits/dim':>9s} {'score calls':>11s} {'time s':>7s}")
    # exact trace: 64 vector-Jacobian products per evaluation, minutes on a CPU; Hutchinson here
    # eps = 1/N = 1e-3: below the first training time the network is refused (docs/interop.md)
    for est, eps in ((sdescore.Hutchinson(1), 1e-3), (sdescore.Hutchinson(4), 1e-3)):
        t0 = time.perf_counter()
        r = sdescore.likelihood(model, x, dequantization=256, estimator=est, eps=eps,
                                generator=torch.Generator().manual_seed(0))  # fmt: skip
        dt = time.perf_counter() - t0
        print(
            f"{'hutchinson, ' + str(est.probes) + ' probe(s)':26s} {eps:7.0e} {r.bits_per_dim.mean().item():9.4f} {r.nfe:11d} {dt:7.1f}"
        )


class ExactEps:
    """The exact eps of `data` under the discrete schedule, called like a diffusers UNet."""

    def __init__(self, data, sde):
        self.data, self.sde = data, sde

    def __call__(self, x, timestep):
        t = self.sde.t_from_timestep(timestep.clamp(-1, N - 1)).to(x.dtype)
        return -self.sde.sigma(t)[:, None, None, None] * self.data.marginal_score(x, t, self.sde)


def table3():
    print(
        "\n3. the continuous-VP mistake, with an exact eps-model of a Gaussian mixture (8 digits,"
    )
    print("   std 0.05, N = 1000 linear schedule); bits/dim of 16 samples, eps = 1e-3")
    disc = DiscreteVPSDE.linear(N)
    means = digits_levels(8) / 127.5 - 1
    data = sdescore.toy.GaussianMixture(means, 0.05)
    net = ExactEps(data, disc)
    right = sdescore.ScoreModel(sdescore.interop.TimestepNet(net, disc), disc, "eps")
    vp = sdescore.VPSDE(0.1, 20.0)
    wrong = sdescore.ScoreModel(lambda x, t: net(x, t * (N - 1)), vp, "eps")
    x = data.sample(16, generator=torch.Generator().manual_seed(2), **F64)
    d = x[0].numel() * math.log(2)
    exact = data.marginal_log_prob(x, 1e-3, disc)
    nodes = torch.arange(1, N, **F64) / N
    rows = [
        ("exact log p_eps (discrete schedule)", None, None),
        ("DiscreteVPSDE, default solver (ExpABM)", right, {}),
        (
            "DiscreteVPSDE, dopri5 1e-5, jump_t=nodes",
            right,
            {"solver": sdescore.TorchDiffEq("dopri5", options={"jump_t": nodes})},
        ),
        ("VPSDE(0.1, 20), timestep t*999 (the mistake)", wrong, {}),
    ]
    print(f"{'model':46s} {'bits/dim':>9s} {'vs exact':>9s} {'score calls':>11s} {'time s':>7s}")
    ref = (-exact / d).mean().item()
    for name, model, opts in rows:
        if model is None:
            print(f"{name:46s} {ref:9.4f} {0:9.4f} {'-':>11s} {'-':>7s}")
            continue
        t0 = time.perf_counter()
        r = sdescore.likelihood(model, x, estimator="exact", eps=1e-3, **opts)
        dt = time.perf_counter() - t0
        bpd = r.bits_per_dim.mean().item()
        print(f"{name:46s} {bpd:9.4f} {bpd - ref:9.4f} {r.nfe:11d} {dt:7.1f}")


if __name__ == "__main__":
    torch.set_num_threads(4)
    unet = tiny_unet()
    table1(unet)
    table2(unet)
    table3()
