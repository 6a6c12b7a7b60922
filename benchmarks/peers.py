"""sdescore's samplers side by side with diffusers and k-diffusion.

    python benchmarks/peers.py [--n 16384] [--quick] [--figure PATH] [--k-diffusion DIR]
                               [--dpm-solver FILE]
    python benchmarks/peers.py --sde [--n-sde 8192] [--quick] [--k-diffusion DIR]
    python benchmarks/peers.py --digits [--model PATH] [--digits-n 500] [--figure PATH]

Workload (as `benchmarks/samplers.py --nfe-table`): eight Gaussians, VPSDE(0.1, 20), the exact
score, `n` shared prior draws for each of seeds 0-2, end time eps = 1e-3. Solver error = mean
|x - x_ref| per coordinate against a converged PF-ODE solve (900 calls) from the same draws.
Every library gets the same score, converted to its interface:

- diffusers (`pip install "sdescore[bench]"`): `trained_betas` such that `alphas_cumprod[i]`
  = alpha(t_i)^2 at t_i = (i + 1)/1000, so timestep 0 is t = eps; the eps-model returns
  eps = -sigma(t) score(x, t) at the noise level the scheduler is at (its `sigmas[i]`, not the
  rounded integer timestep: a continuous-time model), `prediction_type="epsilon"`,
  `thresholding=False` (no clipping of x0), `final_sigmas_type="sigma_min"` (end at eps
  instead of jumping to sigma = 0), `lower_order_final=True` (the singlestep scheduler's
  default `False` spends fewer calls than asked when the order does not divide them),
  grids: `timestep_spacing="linspace"` (uniform in t), `use_karras_sigmas`,
  `use_exponential_sigmas` (uniform in log-SNR); the last two end at sigma_min and then repeat
  it as the final sigma, a zero-length step (a wasted call, NaN in the 3M): we ask for
  NFE + 1 steps and stop before that last one (DEIS has no `final_sigmas_type` and
  behaves the same way).
- k-diffusion: its `sampling.py` imports `utils`, which needs torchvision, PIL and safetensors,
  for one function (`append_dims`); the file is loaded alone with a stub `utils`, so neither
  torchvision nor a second torch is installed. Point `--k-diffusion` at an unpacked
  `pip download k-diffusion --no-deps` (or install it with `pip install --no-deps
  k-diffusion`). The model is the denoiser D(x/alpha, sigma/alpha) of `sdescore.interop`;
  the sigma grid ends at sigma(eps) (no final jump to 0); heun and dpm_2 make 2 calls a step
  (NFE // 2 steps); the 2m_sde and 3m_sde samplers run with eta = 0 (the ODE).
- Lu et al.'s official DPM-Solver file is not on the package index. Give its path as
  `--dpm-solver` to run it as a library (`benchmarks/official_dpm_solver.py`: its multistep and
  singlestep solvers, DPM-Solver and DPM-Solver++, on its three grids); without it, its best
  figures per NFE from such a run are printed as a fixed row, labelled as not re-run.
- sdescore's own rows: the default `Auto()`; `Auto()` with a grid fitted for each NFE by
  `sdescore.optimize_schedule` on `--fit-draws` float64 prior draws of seed 1000 (never the
  evaluation draws), at most min(40 NFE, 400) fitting solves, its wall time printed; `IPNDM()`.

Tables: solver error at NFE 6-50 for each library's best configuration per NFE (and every
configuration with `--all`), the smallest NFE at which the default reaches 1e-2 on all three
seeds, and the per-call overhead at batch 1024 with a free score.

`--digits`: the image case instead. The trained digits U-Net (`sdescore.pretrained.load(
"digits8")`, or a file saved by `sdescore.save_model` given as `--model`), float32, `--digits-n`
prior draws for each of seeds 0 and 1, eps = 1e-3. Solver error = mean |x - x_ref| per pixel
against a 200-call UniPC-3 solve on the log-SNR grid from the same draws (its own error against
400 calls is printed), max over seeds; FID-digits of the samples (quantized to the 17 levels and
mapped to k/8 - 1, as `examples/digits.py` does) against the 450 test digits, per seed (the two
seeds show its noise), with the FID of the reference samples and of as many real training
digits (the floor). Rows at 5, 8, 10, 15 and 100 calls: `Auto()`; `Auto()` with a grid fitted
per budget (not at 100) on `--digits-fit-draws` float32 draws of seed 1000 with at most 10 NFE
solves, fit time printed; `IPNDM()`; diffusers' multistep schedulers (DPMSolverMultistep 2M/3M,
UniPC-2/3 bh2, DEIS-3 on its three grids, set up as above; the eps-model they call is
eps = -sigma(t) score(x, t), the network's own eps), the configuration chosen per NFE by solver
error on 32 draws of seed 0, then measured like the others. About 10 minutes on one core.

`--sde`: the reverse-SDE table instead (about 3.5 minutes of one core). Every sampler starts
from the same `n-sde` prior draws per seed (0-2) and draws its noise from a generator seeded
per seed, float32, 20-200 score calls; no final jump to sigma = 0 anywhere (sdescore's last
step is noise-free, `denoise="mean"`; the peers' last step keeps its noise, a difference of
sigma(eps) ~ 0.01 against a within-mode std of 0.5). Two distances to the data, mean over seeds:
dlogp, the mean exact log p0 of the samples minus its expectation (from 2^18 exact draws; its
Monte Carlo standard error is printed), and SW2, the sliced Wasserstein-2 distance to `n-sde`
exact samples (256 directions), whose floor is the same distance between two exact sets. Peers:
k-diffusion's `sample_euler_ancestral`, `sample_dpmpp_2m_sde` and `sample_dpmpp_3m_sde` at
eta = 1 with a `noise_sampler` of fresh N(0, I) draws from the seeded generator (exact for
these samplers: each step uses one independent increment; their default Brownian tree only
ties the noise across step counts), on the Karras, log-SNR and time-quadratic sigma grids;
diffusers' `DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")` of order 2 and 3
with `generator=` passed to `step`, on its three grids, otherwise set up as above. diffusers'
`DPMSolverSDEScheduler` (two calls a step on a torchsde Brownian tree seeded by an integer) is
not wired.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
import types
from pathlib import Path

import torch

import sdescore
from sdescore._shapes import append_dims
from sdescore.interop import Denoiser
from sdescore.metrics import sliced_wasserstein
from sdescore.solvers.grid import TimeQuadratic
from sdescore.toy import eight_gaussians

sys.path.insert(0, str(Path(__file__).resolve().parent))
import official_dpm_solver  # noqa: E402  (the benchmark next to this one)

EPS, N_TRAIN = 1e-3, 1000
FIT_SEED = 1000  # the fitting draws' seed; evaluation uses seeds 0-2
NFES = (6, 8, 10, 12, 15, 20, 30, 50)


class Workload:
    """The problem, the shared prior draws and their converged solutions."""

    def __init__(self, n: int, seeds):
        self.sde, self.data = sdescore.VPSDE(0.1, 20.0), eight_gaussians(radius=4.0, std=0.5)
        self.score = self.data.score_fn(self.sde)
        self.pf = self.sde.probability_flow(self.score)
        self.draws = [
            self.sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(s))
            for s in seeds
        ]
        ref = sdescore.DPMSolver(order=3, multistep=False, grid="logsnr")
        self.refs = [self.pf.sample(x_T=z, method=ref, steps=900, eps=EPS) for z in self.draws]

    def errors(self, solve, nfe) -> list[float]:
        return [
            (solve(z, nfe) - r).abs().mean().item()
            for z, r in zip(self.draws, self.refs, strict=True)
        ]


def calls_axis(ax, calls, label="score calls") -> None:
    """A figure's x axis of score calls: log scale ticks at exactly the budgets measured."""
    ax.set_xlabel(label)
    ax.minorticks_off()
    ax.set_xticks(calls, [str(c) for c in calls])


# --- sdescore -------------------------------------------------------------------------------


def sdescore_solver(method):
    def solve(w, z, nfe, score=None):
        pf = w.pf if score is None else w.sde.probability_flow(score)
        return pf.sample(x_T=z, method=method, steps=nfe, eps=EPS)

    return solve


class FittedGrids:
    """`solver` with a time grid fitted by `sdescore.optimize_schedule` for each budget.

    The grids are fitted on their own prior draws (`fit_n` float64 draws of seed `FIT_SEED`
    for the toy), never on the evaluation draws, with at most `min(40 * nfe, max_solves)`
    fitting solves; the wall time of each fit is kept in `seconds`.
    """

    def __init__(self, solver, fit_n, *, max_solves=400, per_call=40, dtype=torch.float64):
        self.solver, self.fit_n, self.dtype = solver, fit_n, dtype
        self.max_solves, self.per_call = max_solves, per_call
        self.fits, self.seconds = {}, {}

    def fit(self, w, nfe):
        if nfe not in self.fits:
            start = time.perf_counter()
            self.fits[nfe] = sdescore.optimize_schedule(
                w.pf, nfe, shape=(self.fit_n, *w.draws[0].shape[1:]), solver=self.solver,
                generator=torch.Generator().manual_seed(FIT_SEED), eps=EPS,
                max_solves=min(self.per_call * nfe, self.max_solves), dtype=self.dtype,
            )  # fmt: skip
            self.seconds[nfe] = time.perf_counter() - start
        return self.fits[nfe]

    def __call__(self, w, z, nfe, score=None):
        if score is not None:
            raise ValueError("a fitted grid belongs to its score; no overhead run")
        return w.pf.sample(x_T=z, method=self.fit(w, nfe), eps=EPS)


# Lu et al.'s official DPM-Solver file (`dpm_solver_pytorch.py`, commit 52bc3fb), its best
# configuration per budget on this workload (same draws, reference and error), from a run of
# this script with `--dpm-solver` (benchmarks/official_dpm_solver.py); the file is not on the
# package index, so without `--dpm-solver` this row is printed, not re-run.
OFFICIAL_DPM_SOLVER = {
    6: 4.14e-2, 8: 2.02e-2, 10: 2.40e-2, 12: 1.63e-2, 15: 8.91e-3, 20: 3.72e-3, 30: 1.03e-3,
    50: 3.25e-4,
}  # fmt: skip
OFFICIAL_LABEL = (
    "official DPM-Solver file (commit 52bc3fb), best configuration, from an earlier run with "
    "--dpm-solver (not re-run: not on the package index)"
)


# --- diffusers ------------------------------------------------------------------------------


def trained_betas(sde) -> list[float]:
    t = torch.arange(1, N_TRAIN + 1, dtype=torch.float64) / N_TRAIN
    abar = sde.alpha(t).square()
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return (1 - abar / prev).tolist()


def diffusers_solver(cls_name, **kw):
    def solve(w, z, nfe, score=None, generator=None):
        import diffusers

        score = w.score if score is None else score
        noise = {} if generator is None else {"generator": generator}
        sched = getattr(diffusers, cls_name)(
            num_train_timesteps=N_TRAIN, trained_betas=trained_betas(w.sde),
            prediction_type="epsilon", thresholding=False, **kw,
        )  # fmt: skip
        sched.set_timesteps(nfe)
        steps = nfe
        if sched.sigmas[-1] == sched.sigmas[-2]:
            # Karras/exponential/Lu grids end at sigma_min and final_sigmas_type="sigma_min"
            # repeats it: a zero-length last step (a wasted call; NaN in the 3M). Ask for one
            # step more and stop before that one, so `nfe` calls reach sigma_min.
            sched.set_timesteps(nfe + 1)
        # The scheduler's noise levels sigma/alpha -> our times (one vectorised inversion).
        sig = sched.sigmas.to(torch.float64)
        ts = w.sde.t_from_log_snr(-sig.clamp_min(1e-12).log()).float()
        x = z.clone()
        for i, step_t in enumerate(sched.timesteps[:steps]):
            tb = ts[i].expand(x.shape[0])
            # The eps-model diffusers expects: eps = -sigma(t) score(x, t) (for an "eps"
            # ScoreModel, its network's own output).
            eps = -append_dims(w.sde.sigma(tb), x.ndim) * score(x, tb)
            x = sched.step(eps, step_t, x, **noise).prev_sample
        return x

    return solve


DIFFUSERS_GRIDS = {
    "uniform t": {},  # timestep_spacing="linspace", the default (the singlestep has no option)
    "karras": {"use_karras_sigmas": True},
    "logsnr": {"use_exponential_sigmas": True},  # uniform in log(sigma/alpha) = -lambda
}
DIFFUSERS = {
    "DPMSolverMultistep 2M": ("DPMSolverMultistepScheduler", {"solver_order": 2}),
    "DPMSolverMultistep 3M": ("DPMSolverMultistepScheduler", {"solver_order": 3}),
    "DPMSolverSinglestep 2S": ("DPMSolverSinglestepScheduler", {"solver_order": 2}),
    "DPMSolverSinglestep 3S": ("DPMSolverSinglestepScheduler", {"solver_order": 3}),
    "UniPC-2 bh2": ("UniPCMultistepScheduler", {"solver_order": 2}),
    "UniPC-3 bh2": ("UniPCMultistepScheduler", {"solver_order": 3}),
    "UniPC-2 bh1": ("UniPCMultistepScheduler", {"solver_order": 2, "solver_type": "bh1"}),
    "DEIS-3": ("DEISMultistepScheduler", {"solver_order": 3}),
}
_COMMON = {
    "DPMSolverMultistepScheduler": {"algorithm_type": "dpmsolver++", "final_sigmas_type": "sigma_min"},
    "DPMSolverSinglestepScheduler": {
        "algorithm_type": "dpmsolver++", "final_sigmas_type": "sigma_min", "lower_order_final": True,
    },
    "UniPCMultistepScheduler": {"final_sigmas_type": "sigma_min"},
    "DEISMultistepScheduler": {},
}  # fmt: skip


def diffusers_configs():
    out = {}
    for name, (cls, kw) in DIFFUSERS.items():
        for grid, gkw in DIFFUSERS_GRIDS.items():
            out[f"{name}, {grid}"] = diffusers_solver(cls, **_COMMON[cls], **kw, **gkw)
    return out


# --- k-diffusion ----------------------------------------------------------------------------


def load_k_sampling(directory: str | None):
    """k-diffusion's `sampling.py` alone, with a stub `k_diffusion.utils` (see the docstring)."""
    if directory is None:
        spec = importlib.util.find_spec("k_diffusion")
        if spec is None or not spec.submodule_search_locations:
            return None
        directory = str(Path(next(iter(spec.submodule_search_locations))).parent)
    path = Path(directory) / "k_diffusion" / "sampling.py"
    if not path.is_file():
        return None
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [str(path.parent)]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    pkg.utils = utils
    sys.modules.setdefault("k_diffusion", pkg)
    sys.modules.setdefault("k_diffusion.utils", utils)
    spec = importlib.util.spec_from_file_location("k_diffusion.sampling", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def k_sigmas(kd, w, steps, grid, like):
    den = Denoiser(w.score, w.sde, eps=EPS)
    if grid == "karras":
        return kd.get_sigmas_karras(steps + 1, den.sigma_min, den.sigma_max, rho=7.0)[:-1]
    if grid == "logsnr":
        return kd.get_sigmas_exponential(steps + 1, den.sigma_min, den.sigma_max)[:-1]
    ts = TimeQuadratic().times(w.sde, w.sde.T, EPS, steps, like)
    return (-w.sde.log_snr(ts)).exp().float()


def k_solver(kd, name, calls_per_step, grid):
    fn = getattr(kd, f"sample_{name}")
    extra = {}
    if name.endswith("_sde"):  # eta = 0: the deterministic ODE sampler, no Brownian tree
        extra = {"eta": 0.0, "noise_sampler": lambda s, t: 0.0}

    def solve(w, z, nfe, score=None):
        den = Denoiser(w.score if score is None else score, w.sde, eps=EPS)
        sig = k_sigmas(kd, w, nfe // calls_per_step, grid, z)
        a_T, a_eps = w.sde.alpha(torch.tensor([w.sde.T, EPS])).tolist()
        x = fn(den, z / a_T, sig, disable=True, **extra)
        return a_eps * x

    return solve


K_SAMPLERS = {"dpmpp_2m": 1, "dpmpp_2m_sde": 1, "dpmpp_3m_sde": 1, "dpm_2": 2, "heun": 2}


def k_configs(kd):
    if kd is None:
        return {}
    return {
        f"{name}, {grid}": k_solver(kd, name, c, grid)
        for name, c in K_SAMPLERS.items()
        for grid in ("karras", "logsnr", "time_quadratic")
    }


# --- reverse SDE ---------------------------------------------------------------------------

SDE_CALLS = (20, 50, 100, 200)


class SDEWorkload:
    """Shared prior draws, the exact log-density target and two exact sets per seed."""

    def __init__(self, n: int, seeds):
        self.sde, self.data = sdescore.VPSDE(0.1, 20.0), eight_gaussians(radius=4.0, std=0.5)
        self.score = self.data.score_fn(self.sde)
        self.rev = self.sde.reverse(self.score)
        self.seeds = seeds
        self.draws = [
            self.sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(s))
            for s in seeds
        ]
        big = self.data.sample(2**18, generator=torch.Generator().manual_seed(99))
        lp = self.data.log_prob(big.double())
        self.target, self.se = lp.mean().item(), lp.std().item() / math.sqrt(n * len(seeds))
        self.exact = [self._exact(n, 1000 + s) for s in seeds]
        floors = [self.sw2(self._exact(n, 2000 + s), k) for k, s in enumerate(seeds)]
        self.floor = sum(floors) / len(floors)

    def _exact(self, n, seed):
        return self.data.sample(n, generator=torch.Generator().manual_seed(seed))

    def sw2(self, x, k) -> float:
        sw = sliced_wasserstein(
            x.double(), self.exact[k].double(), projections=256,
            generator=torch.Generator().manual_seed(7),
        )  # fmt: skip
        return sw.value

    def metrics(self, solve, calls):
        """(mean log p0 minus its expectation, SW2) of `solve`'s samples, mean over seeds."""
        lp, sw = [], []
        for k, (s, z) in enumerate(zip(self.seeds, self.draws, strict=True)):
            x = solve(self, z, calls, torch.Generator().manual_seed(100 + s)).double()
            if not torch.isfinite(x).all():
                return math.nan, math.nan
            lp.append(self.data.log_prob(x).mean().item() - self.target)
            sw.append(self.sw2(x, k))
        return sum(lp) / len(lp), sum(sw) / len(sw)


def sdescore_sde(method, calls_per_step=1):
    def solve(w, z, calls, g):
        return w.rev.sample(
            x_T=z, method=method, steps=calls // calls_per_step, eps=EPS, generator=g
        )

    return solve


def k_sde_solver(kd, name, grid):
    fn = getattr(kd, f"sample_{name}")

    def solve(w, z, calls, g):
        den = Denoiser(w.score, w.sde, eps=EPS)
        sig = k_sigmas(kd, w, calls, grid, z)
        a_T, a_eps = w.sde.alpha(torch.tensor([w.sde.T, EPS])).tolist()
        # Fresh N(0, I) per step from the caller's generator: exact for these one-step-noise
        # samplers (their default Brownian tree only matters across step counts).
        noise = lambda s, t: torch.randn(z.shape, generator=g, dtype=z.dtype)  # noqa: E731
        return a_eps * fn(den, z / a_T, sig, disable=True, eta=1.0, noise_sampler=noise)

    return solve


def sde_configs(kd):
    lib = {
        "sdescore": {
            "euler_maruyama": sdescore_sde("euler_maruyama"),
            "ancestral": sdescore_sde("ancestral"),
            "pc (2 calls/step)": sdescore_sde("pc", 2),
            "SDEDPMSolver(order=1)": sdescore_sde(sdescore.SDEDPMSolver(order=1)),
            "SDEDPMSolver(order=2, grid='logsnr') (old default)": sdescore_sde(
                sdescore.SDEDPMSolver(order=2, grid="logsnr")
            ),
            "SDEDPMSolver(order=2)": sdescore_sde(sdescore.SDEDPMSolver(order=2)),
            "SDEDPMSolver(order=3, damped=True)": sdescore_sde(
                sdescore.SDEDPMSolver(order=3, damped=True)
            ),
            "SDEDPMSolver() (default: 3M from 20 calls)": sdescore_sde(sdescore.SDEDPMSolver()),
        }
    }
    try:
        import diffusers  # noqa: F401

        lib["diffusers"] = {
            f"DPMSolverMultistep sde-dpmsolver++ {k}M, {grid}": diffusers_solver(
                "DPMSolverMultistepScheduler",
                algorithm_type="sde-dpmsolver++",
                solver_order=k,
                final_sigmas_type="sigma_min",
                **gkw,
            )  # fmt: skip
            for k in (2, 3)
            for grid, gkw in DIFFUSERS_GRIDS.items()
        }
        for cname, f in lib["diffusers"].items():
            lib["diffusers"][cname] = lambda w, z, c, g, f=f: f(w, z, c, generator=g)
    except ImportError:
        print("diffusers not installed (pip install 'sdescore[bench]'): skipped")
    if kd is not None:
        lib["k-diffusion"] = {
            f"{name}, {grid}": k_sde_solver(kd, name, grid)
            for name in ("euler_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde")
            for grid in ("karras", "logsnr", "time_quadratic")
        }
    return lib


def sde_table(n, seeds, calls, kd):
    w = SDEWorkload(n, seeds)
    print(
        f"reverse SDE: eight Gaussians, VPSDE(0.1, 20), exact score, n={n} x {len(seeds)} seeds, "
        f"eps={EPS}, float32; mean over seeds of\n  dlogp = mean exact log p0 of the samples "
        f"minus its expectation (2^18 exact draws; Monte Carlo SE {w.se:.3f})\n  SW2 = sliced "
        f"Wasserstein-2 to {n} exact samples (256 directions; floor, two exact sets: "
        f"{w.floor:.4f})"
    )
    head = "".join(f"{c:>8}" for c in calls)
    print(f"{'library: configuration':<66}{'dlogp at calls':<{8 * len(calls)}} | SW2")
    print(f"{'':<66}{head} | {head}")
    table = {}
    for lib, configs in sde_configs(kd).items():
        for cname, solve in configs.items():
            rows = table[f"{lib}: {cname}"] = [w.metrics(solve, c) for c in calls]
            print(
                f"{lib + ': ' + cname:<66}" + "".join(f"{r[0]:+8.3f}" for r in rows) + " | "
                + "".join(f"{r[1]:8.4f}" for r in rows), flush=True,
            )  # fmt: skip
    return table, w.floor, w.se


def sde_figure(table, floor, se, calls, path):
    """|dlogp| and SW2 against calls for the rows named in `SDE_FIGURE_ROWS`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, rows in table.items():
        if not any(name.startswith(r) for r in SDE_FIGURE_ROWS):
            continue
        style = "o-" if name.startswith("sdescore") else "s--"
        axes[0].loglog(calls, [max(abs(r[0]), 1e-3) for r in rows], style, label=name)
        axes[1].loglog(calls, [r[1] for r in rows], style, label=name)
    se_line = axes[0].axhline(2 * se, color="gray", lw=0.8, ls=":", label="2 x Monte Carlo SE")
    axes[1].axhline(floor, color="gray", lw=0.8, ls=":", label="floor (two exact sets)")
    axes[0].set_ylabel("|mean log p0 - expectation| (nats, >= 1e-3)")
    axes[1].set_ylabel("sliced W2 to exact samples")
    for ax in axes:
        calls_axis(ax, calls)
    axes[0].legend(handles=[se_line], fontsize=7)
    axes[1].legend(fontsize=6.5)
    fig.suptitle("reverse SDE: eight Gaussians, VPSDE(0.1, 20), exact score", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"figure written to {path}")


SDE_FIGURE_ROWS = (
    "sdescore: euler_maruyama",
    "sdescore: pc",
    "sdescore: SDEDPMSolver(order=2, grid='logsnr')",
    "sdescore: SDEDPMSolver() ",
    "diffusers: DPMSolverMultistep sde-dpmsolver++ 2M, karras",
    "k-diffusion: euler_ancestral, logsnr",
    "k-diffusion: dpmpp_2m_sde, time_quadratic",
    "k-diffusion: dpmpp_3m_sde, time_quadratic",
)


# --- image case: the digits U-Net ------------------------------------------------------------

DIGITS_NFES = (5, 8, 10, 15, 100)
DIGITS_SEEDS = (0, 1)
# diffusers' multistep schedulers: the singlestep ones and UniPC bh1 never led on the toy.
DIGITS_DIFFUSERS = (
    "DPMSolverMultistep 2M", "DPMSolverMultistep 3M", "UniPC-2 bh2", "UniPC-3 bh2", "DEIS-3",
)  # fmt: skip


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Samples on [-1, 1] -> their 17 levels k (`sdescore.quantize`) -> k / 8 - 1, as the
    digits example does before FID-digits."""
    # A few pixels overshoot [-1, 1] slightly: they belong to the end levels (as in the example).
    levels = sdescore.quantize(x.float(), 17, (-1.0, 1.0), out_of_range="clamp")
    return levels.float() / 8.0 - 1.0


class DigitsWorkload:
    """Shared float32 prior draws (one set per seed), their converged solves and the test set."""

    def __init__(self, model, n, seeds, ref_calls):
        from sdescore.toy import digits_data

        self.sde, self.score = model.sde, model
        self.pf = self.sde.probability_flow(model)
        self.draws = [
            self.sde.prior_sampling((n, 1, 8, 8), generator=torch.Generator().manual_seed(s))
            for s in seeds
        ]
        self.ref_solver = sdescore.UniPC(order=3, grid="logsnr", steps=ref_calls)
        self.refs = [self.pf.sample(x_T=z, method=self.ref_solver, eps=EPS) for z in self.draws]
        self.real = digits_data("test")[0]
        self.train = digits_data("train")[0]

    def fid(self, x) -> float:
        from sdescore.metrics import fid_digits

        return fid_digits(to_pixels(x), self.real).value

    def measure(self, solve, nfe):
        """(solver error, max over seeds; FID-digits per seed) of `solve` at `nfe` calls."""
        xs = [solve(self, z, nfe) for z in self.draws]
        err = max((x - r).abs().mean().item() for x, r in zip(xs, self.refs, strict=True))
        return err, [self.fid(x) for x in xs]


class Subset:
    """The first `k` draws of a workload's first seed: where peers' configurations are chosen."""

    def __init__(self, w, k):
        self.sde, self.score, self.pf = w.sde, w.score, w.pf
        self.z, self.ref = w.draws[0][:k], w.refs[0][:k]

    def error(self, solve, nfe) -> float:
        return (solve(self, self.z, nfe) - self.ref).abs().mean().item()


def load_digits_model(path):
    if path is None:
        from sdescore.pretrained import load

        model = load("digits8")
    else:
        model = sdescore.load_model(path).float().eval()
    return model.requires_grad_(False)


def digits(args):
    """The image case: every sampler drives the same trained U-Net from the same prior draws."""
    quick = args.quick
    n, seeds = (64, (0,)) if quick else (args.digits_n, DIGITS_SEEDS)
    nfes, ref_calls = ((5, 10, 100), 100) if quick else (DIGITS_NFES, 200)
    fit_n, select_n = (8, 16) if quick else (args.digits_fit_draws, 32)
    model = load_digits_model(args.model)
    start = time.perf_counter()
    torch.set_grad_enabled(False)
    w = DigitsWorkload(model, n, seeds, ref_calls)
    k = min(64, n)
    check = w.pf.sample(
        x_T=w.draws[0][:k], method=sdescore.UniPC(order=3, grid="logsnr", steps=2 * ref_calls),
        eps=EPS,
    )  # fmt: skip
    ref_err = (check - w.refs[0][:k]).abs().mean().item()
    ref_fid = [w.fid(r) for r in w.refs]
    floor = [
        w.fid(w.train[torch.randperm(len(w.train), generator=torch.Generator().manual_seed(s))[:n]])
        for s in seeds
    ]
    print(
        f"digits U-Net ({sum(p.numel() for p in model.parameters())} parameters, "
        f"{model.parameterization}, {model.sde!r}), float32, {n} prior draws x seeds {seeds}, "
        f"eps={EPS}\nreference: {ref_calls}-call UniPC-3 on the log-SNR grid from the same "
        f"draws; its own error (mean |x - x_{2 * ref_calls}|, {k} draws): {ref_err:.1e}\n"
        f"solver error = mean |x - x_ref| per pixel, max over seeds; FID-digits of the samples "
        f"(quantized to 17 levels, k/8 - 1) against the {len(w.real)} test digits, per seed\n"
        f"FID-digits of the reference samples: {fmt_fids(ref_fid)}; of {n} real training digits "
        f"(the floor): {fmt_fids(floor)}"
    )
    fitted = FittedGrids(
        sdescore.Auto(), fit_n, max_solves=math.inf, per_call=10, dtype=torch.float32
    )  # float32: the network's dtype
    rows = {
        "sdescore default Auto()": sdescore_solver(sdescore.Auto()),
        "sdescore Auto(), fitted grid": fitted,
        "sdescore IPNDM()": sdescore_solver(sdescore.IPNDM()),
    }
    results, seconds = {}, {}
    for name, solve in rows.items():
        t0 = time.perf_counter()
        results[name] = {k: w.measure(solve, k) for k in nfes if not (solve is fitted and k == 100)}
        seconds[name] = time.perf_counter() - t0
        print(f"  {name}: {seconds[name]:.0f} s", flush=True)
    try:
        import diffusers  # noqa: F401

        configs = {
            c: f for c, f in diffusers_configs().items() if c.split(",")[0] in DIGITS_DIFFUSERS
        }
        if quick:
            configs = dict(list(configs.items())[:2])
        sub, best = Subset(w, select_n), {}
        t0 = time.perf_counter()
        for k in nfes:
            errs = {c: sub.error(f, k) for c, f in configs.items()}
            best[k] = min(errs, key=lambda c: errs[c] if math.isfinite(errs[c]) else math.inf)
        results["diffusers, best config"] = {k: w.measure(configs[best[k]], k) for k in nfes}
        seconds["diffusers, best config"] = time.perf_counter() - t0
    except ImportError:
        best = None
        print("diffusers not installed (pip install 'sdescore[bench]'): skipped")
    digits_tables(results, nfes, fitted, best, select_n, ref_fid)
    print(f"\nwall time of the image case: {time.perf_counter() - start:.0f} s (one thread)")
    if args.figure:
        digits_figure(results, nfes, ref_fid, floor, args.figure)


def fmt_fids(fids) -> str:
    mean = sum(fids) / len(fids)
    return f"{mean:.3f}" + (
        " (" + " / ".join(f"{f:.3f}" for f in fids) + ")" if len(fids) > 1 else ""
    )


def digits_tables(results, nfes, fitted, best, select_n, ref_fid):
    width = 30
    head = f"{'calls':<{width}}" + "".join(f"{k:>9}" for k in nfes)
    print("\nsolver error (mean |x - x_ref| per pixel, max over seeds)\n" + head)
    for name, row in results.items():
        print(
            f"{name:<{width}}"
            + "".join(f"{row[k][0]:9.1e}" if k in row else f"{'-':>9}" for k in nfes)
        )
    print("\nFID-digits, mean over seeds\n" + head)
    for name, row in results.items():
        cells = (
            f"{sum(row[k][1]) / len(row[k][1]):9.3f}" if k in row else f"{'-':>9}" for k in nfes
        )
        print(f"{name:<{width}}" + "".join(cells))
    print("FID-digits per seed")
    for name, row in results.items():
        print(f"  {name}: " + "; ".join(f"{k}: {fmt_fids(row[k][1])}" for k in nfes if k in row))
    print(
        "fitting: optimize_schedule(Auto()) on "
        f"{fitted.fit_n} float32 prior draws of seed {FIT_SEED} (held out), at most "
        f"{fitted.per_call} * NFE solves; not fitted at 100 calls\n  wall time (s): "
        + "; ".join(f"{k}: {v:.0f}" for k, v in fitted.seconds.items())
    )
    if best is not None:
        print(
            f"diffusers' configuration chosen per NFE by solver error on {select_n} draws of the "
            "first seed: " + "; ".join(f"{k}: {c}" for k, c in best.items())
        )
    fit, default = results["sdescore Auto(), fitted grid"], results["sdescore default Auto()"]
    if 10 in fit and 100 in default:
        f10 = sum(fit[10][1]) / len(fit[10][1])
        f100 = sum(default[100][1]) / len(default[100][1])
        ref = sum(ref_fid) / len(ref_fid)
        print(
            f"\ntarget: FID-digits at 10 calls with a fitted grid within 10 % of the 100-call "
            f"value: {f10:.3f} vs {f100:.3f} (Auto() at 100 calls; {ref:.3f} for the reference), "
            f"{100 * (f10 / f100 - 1):+.1f} %: {'met' if f10 <= 1.1 * f100 else 'not met'}"
        )


def digits_figure(results, nfes, ref_fid, floor, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, row in results.items():
        ks = [k for k in nfes if k in row]
        style = "o-" if name.startswith("sdescore") else "s--"
        axes[0].loglog(ks, [row[k][0] for k in ks], style, label=name)
        axes[1].semilogx(ks, [sum(row[k][1]) / len(row[k][1]) for k in ks], style, label=name)
    axes[1].axhline(sum(ref_fid) / len(ref_fid), color="gray", lw=0.8, ls=":", label="reference")
    axes[1].axhline(sum(floor) / len(floor), color="black", lw=0.8, ls="--", label="real digits")
    axes[0].set_ylabel("solver error (mean |x - x_ref| per pixel)")
    axes[1].set_ylabel("FID-digits (mean over seeds)")
    axes[1].set_yscale("log")
    for ax in axes:
        calls_axis(ax, nfes)
    axes[1].legend(fontsize=7)
    fig.suptitle("digits U-Net (8x8), PF ODE, same prior draws for every sampler", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"figure written to {path}")


# --- tables ---------------------------------------------------------------------------------


def error_table(w, libraries, nfes, show_all):
    """{library: {nfe: (max-over-seeds error, config)}} for each library's best config."""
    best = {}
    for lib, configs in libraries.items():
        best[lib] = {}
        for cname, solve in configs.items():
            errs = [max(w.errors(lambda z, k, f=solve: f(w, z, k), nfe)) for nfe in nfes]
            if show_all:
                print(f"  {lib + ': ' + cname:<52}" + "".join(f"{e:9.1e}" for e in errs))
            for nfe, e in zip(nfes, errs, strict=True):
                if nfe not in best[lib] or e < best[lib][nfe][0]:
                    best[lib][nfe] = (e, cname)
    return best


def overhead(w, libraries, calls=20, batch=1024):
    """Wall time per score call beyond the score itself: the score is free (a fixed tensor)."""
    z = torch.randn(batch, 2, generator=torch.Generator().manual_seed(0))
    free_out = torch.zeros(batch, 2)

    def free(x, t):
        return free_out

    rows = []
    for lib, (cname, solve) in libraries.items():
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            solve(w, z, calls, score=free)
            best = min(best, time.perf_counter() - t0)
        rows.append((lib, cname, 1e6 * best / calls))
    return rows


def toy_libraries(args, kd):
    """{library: {configuration: solve}} of the toy table, sdescore's rows first."""
    fit_n, cap = (64, 40) if args.quick else (args.fit_draws, 400)
    libraries = {
        "sdescore default": {"Auto()": sdescore_solver(sdescore.Auto())},
        "sdescore fitted grid": {"Auto(), fitted": FittedGrids(sdescore.Auto(), fit_n, max_solves=cap)},
        "sdescore iPNDM": {"IPNDM()": sdescore_solver(sdescore.IPNDM())},
    }  # fmt: skip
    try:
        import diffusers  # noqa: F401

        libraries["diffusers"] = diffusers_configs()
    except ImportError:
        print("diffusers not installed (pip install 'sdescore[bench]'): skipped")
    if kd is None:
        print("k-diffusion not found (--k-diffusion DIR, see the docstring): skipped")
    else:
        libraries["k-diffusion"] = k_configs(kd)
    if args.dpm_solver:
        libraries["official DPM-Solver"] = official_dpm_solver.configs(
            official_dpm_solver.load(args.dpm_solver)
        )
    if args.quick:
        libraries = {lib: dict(list(c.items())[:2]) for lib, c in libraries.items()}
    return libraries


def toy(args, kd):
    n, seeds, nfes = (512, (0,), (10,)) if args.quick else (args.n, (0, 1, 2), NFES)
    w = Workload(n, seeds)
    libraries = toy_libraries(args, kd)
    fitted = libraries["sdescore fitted grid"]["Auto(), fitted"]
    print(
        f"eight Gaussians, VPSDE(0.1, 20), exact score, n={n} x {len(seeds)} seeds, eps={EPS}; "
        "solver error = mean |x - x_ref| vs a converged PF-ODE solve, max over seeds\n"
        f"fitted grids: optimize_schedule(Auto()) on {fitted.fit_n} float64 prior draws of seed "
        f"{FIT_SEED} (held out), at most min(40 * NFE, {fitted.max_solves}) fitting solves"
    )
    if args.all:
        print(f"  {'configuration':<52}" + "".join(f"{k:>9}" for k in nfes))
    best = error_table(w, libraries, nfes, args.all)
    print(
        f"\nbest configuration of each library per NFE\n{'library':<24}"
        + "".join(f"{k:>9}" for k in nfes)
    )
    for lib, row in best.items():
        print(f"{lib:<24}" + "".join(f"{row[k][0]:9.1e}" for k in nfes))
    if not args.dpm_solver:
        print(
            f"{'official DPM-Solver':<24}"
            + "".join(f"{OFFICIAL_DPM_SOLVER[k]:9.1e}" if k in OFFICIAL_DPM_SOLVER
                      else f"{'-':>9}" for k in nfes)
            + f"\n  ^ {OFFICIAL_LABEL}"
        )  # fmt: skip
    print(
        f"{'fitting time (s)':<24}" + "".join(f"{fitted.seconds[k]:9.1f}" for k in nfes)
        + "\n  ^ wall time of each optimize_schedule call, this process (one thread)"
    )  # fmt: skip
    for lib, row in best.items():
        if not lib.startswith("sdescore"):
            print(f"  {lib} best configs: " + "; ".join(f"{k}: {row[k][1]}" for k in nfes))
    if not args.quick:
        solve = libraries["sdescore default"]["Auto()"]
        reach = next(
            (k for k in range(4, 51) if max(w.errors(lambda z, m: solve(w, z, m), k)) <= 1e-2), None
        )
        print(
            f"\nsmallest NFE at which the default reaches solver error <= 1e-2 on all seeds: {reach}"
        )
    fastest = {
        lib: next(iter(c.items())) for lib, c in libraries.items() if lib != "sdescore fitted grid"
    }
    print("\nper-call overhead at batch 1024, free score (20 calls, best of 3), microseconds")
    for lib, cname, us in overhead(w, fastest):
        print(f"  {lib:<18} {cname:<40} {us:8.0f}")
    if args.figure:
        figure(best, nfes, args.figure)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--n-sde", type=int, default=8192, help="draws per seed of the --sde table")
    ap.add_argument("--fit-draws", type=int, default=512, help="fitting draws (seed 1000)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 512 draws, 1 seed, NFE 10 (--digits: 64 draws, NFE 5, 10, 100)",
    )
    ap.add_argument("--all", action="store_true", help="print every configuration's row")
    ap.add_argument("--figure", help="write the error-vs-NFE figure (png) here")
    ap.add_argument("--k-diffusion", help="directory holding an unpacked k_diffusion package")
    ap.add_argument(
        "--dpm-solver", help="Lu et al.'s dpm_solver_pytorch.py (benchmarks/official_dpm_solver.py)"
    )
    ap.add_argument(
        "--sde", action="store_true", help="the reverse-SDE table at 20-200 calls instead"
    )
    ap.add_argument("--digits", action="store_true", help="the image case (digits U-Net) instead")
    ap.add_argument("--model", help="--digits: a saved model file (default: pretrained digits8)")
    ap.add_argument("--digits-n", type=int, default=500, help="--digits: draws per seed")
    ap.add_argument(
        "--digits-fit-draws", type=int, default=32, help="--digits: fitting draws (seed 1000)"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.digits:
        return digits(args)
    kd = load_k_sampling(args.k_diffusion)
    if args.sde:
        if kd is None:
            print("k-diffusion not found (--k-diffusion DIR, see the docstring): skipped")
        n, seeds, calls = (512, (0,), (20,)) if args.quick else (args.n_sde, (0, 1, 2), SDE_CALLS)
        table, floor, se = sde_table(n, seeds, calls, kd)
        if args.figure:
            sde_figure(table, floor, se, calls, args.figure)
        return None
    return toy(args, kd)


def figure(best, nfes, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for lib, row in best.items():
        ax.loglog(
            nfes,
            [row[k][0] for k in nfes],
            "o-" if lib.startswith("sdescore") else "x:" if lib.startswith("official") else "s--",
            label=lib + ("" if lib.startswith("sdescore") else " (best config)"),
            **({"color": "black"} if lib.startswith("official") else {}),
        )
    if "official DPM-Solver" not in best:  # not run here (--dpm-solver): the fixed row
        off = [k for k in nfes if k in OFFICIAL_DPM_SOLVER]
        ax.loglog(
            off, [OFFICIAL_DPM_SOLVER[k] for k in off], "x:", color="black",
            label="official DPM-Solver file (best config; earlier run)",
        )  # fmt: skip
    ax.axhline(1e-2, color="gray", lw=0.8, ls="--")
    calls_axis(ax, nfes, "score calls (NFE)")
    ax.set_ylabel("solver error (mean |x - x_ref|)")
    ax.set_title("eight Gaussians, VPSDE(0.1, 20), exact score")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"figure written to {path}")


if __name__ == "__main__":
    main()
