"""Likelihood benchmark: image-like sharp mixtures and eight Gaussians, exact scores, rtol = atol = 1e-5.

    OPENBLAS_NUM_THREADS=1 python benchmarks/likelihood.py [--quick] [--repeats 3]
    OPENBLAS_NUM_THREADS=1 python benchmarks/likelihood.py --issue23   (the tables of issue 23:
        toy wall time, fixed budget, error estimate; a few minutes)

Side by side in one run:

* **ref-2021**: our re-implementation of the 2021 method (score_sde `likelihood.py`, described,
  not copied): scipy `solve_ivp(method="RK45")` on the flattened state `[x, log p]`, the batch
  moved through numpy at every evaluation, one Rademacher probe, the drift evaluated once for the
  velocity and once more inside the divergence (two score calls per evaluation), and scipy's RMS
  error norm over the whole state, log p included.
* **sdescore**: `sdescore.likelihood` with its default solver (`exp_abm`, probes resampled at
  every evaluation) or torchdiffeq dopri5 (one score pass per evaluation, error control on
  (x, log p) unless stated), with Hutchinson (Rademacher / Gaussian) or the exact trace.

The first table is the case that resembles real use: Gaussian mixtures with component std 0.004
on [-1, 1]^D (as sharp as 8-bit images), D = 2, 16, 64 and 3x8x8, under VP, sub-VP, VE and a
cosine `LinearSDE`, float64, exact trace; error in bits/dim against the oracle (time-eps marginal
plus the prior mismatch at the returned latent), for the default (step control on x and log p)
and for step control on x alone.

Columns of the toy tables: wall and process-CPU time (each the minimum over repeats run round-robin, so every
method sees the same background load; one intra-op thread for every method, so nobody is
handicapped by oversubscription), ODE evaluations, score calls, and the per-point error of log p
against the exact log p0 of the mixture (mean and worst point). A second table times a 3x256 MLP
score network (random weights; time only). A third measures how much a point's log p moves when
the rest of its batch changes (adaptive steps are shared across a batch).
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from functools import partial

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy/scipy load BLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402
from torch import nn  # noqa: E402

import sdescore  # noqa: E402
from sdescore.toy import eight_gaussians  # noqa: E402

EPS, TOL = 1e-5, 1e-5


class Counting:
    """A score function that counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


class CountingImages:
    """A model wrapper that counts the examples it evaluates (per-example step control passes
    only the unfinished ones)."""

    def __init__(self, fn):
        self.fn, self.images = fn, 0

    def __call__(self, x, t):
        self.images += x.shape[0]
        return self.fn(x, t)


class MLPScore(nn.Module):
    """3 hidden layers of 256 with SiLU, input (x, t), output shaped like x."""

    def __init__(self, dim=2, width=256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim + 1, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, dim),
        )  # fmt: skip

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], dim=1))


def likelihood(model, x, **kw):
    """`sdescore.likelihood` with this file's compact configurations (dicts of `method`,
    tolerances, `step_control`, `options`, `max_steps`, `noise`, `probes`, `resample_probes`)
    turned into the solver and estimator objects the library takes."""
    kw = dict(kw)
    solver_opts = {
        k: kw.pop(k) for k in ("rtol", "atol", "max_steps", "step_control", "options") if k in kw
    }
    method = kw.pop("method", None)
    hutch = {k: kw.pop(k) for k in ("noise", "probes", "resample_probes") if k in kw}
    if method == "exp_abm" or (method is None and solver_opts):
        opts = dict(solver_opts.pop("options", None) or {})
        kw["solver"] = sdescore.ExpABM(**solver_opts, **opts)
    elif method is not None:
        kw["solver"] = sdescore.TorchDiffEq(method, **solver_opts)
    if hutch:
        if "resample_probes" in hutch:
            hutch["resample"] = hutch.pop("resample_probes")
        kw["estimator"] = sdescore.Hutchinson(hutch.pop("probes", 1), **hutch)
    return sdescore.likelihood(model, x, **kw)


def ref_2021(score, sde, x, seed):
    """The 2021 method re-implemented: scipy RK45 over numpy, two score calls per evaluation."""
    pf = sde.probability_flow(score)
    shape, dtype = x.shape, x.dtype
    b = shape[0]
    g = torch.Generator().manual_seed(seed)
    probe = torch.randint(0, 2, shape, generator=g).to(dtype) * 2 - 1

    def ode_func(t, y):
        xs = torch.from_numpy(y[:-b].reshape(shape)).to(dtype)
        vt = torch.full((b,), t, dtype=dtype)
        with torch.no_grad():
            drift = pf.drift(xs, vt)  # score call 1
        with torch.enable_grad():  # score call 2: the drift again, for its VJP
            xg = xs.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad((pf.drift(xg, vt) * probe).sum(), xg)
        div = (grad * probe).reshape(b, -1).sum(1)
        return np.concatenate([drift.numpy().reshape(-1), div.numpy()])

    y0 = np.concatenate([x.numpy().reshape(-1), np.zeros(b)])
    sol = solve_ivp(ode_func, (EPS, sde.T), y0, rtol=TOL, atol=TOL, method="RK45")
    z = torch.from_numpy(sol.y[:-b, -1].reshape(shape)).to(dtype)
    delta = torch.from_numpy(sol.y[-b:, -1]).to(dtype)
    return sde.prior_logp(z) + delta, sol.nfev


def cosine_sde():
    """The cosine schedule (Nichol & Dhariwal 2021) as a LinearSDE; T = 0.99 keeps tan finite."""

    def f(t):
        return -0.5 * math.pi / 1.008 * torch.tan(0.5 * math.pi * (t + 0.008) / 1.008)

    return sdescore.LinearSDE(f, lambda t: (-2 * f(t)).sqrt(), T=0.99)


def sharp_problem(shape, n_points):
    """An 8-mode mixture with std 0.004 on [-1, 1]^shape and its points (fewer for images)."""
    g = torch.Generator().manual_seed(0)
    means = torch.rand(8, *shape, generator=g, dtype=torch.float64) * 2 - 1
    data = sdescore.toy.GaussianMixture(means, 0.004)
    n = n_points if len(shape) == 1 else max(4, n_points // 4)
    return data, data.sample(n, generator=g, dtype=torch.float64)


def oracle_error_bpd(data, sde, x, r):
    """exact - computed log p in bits/dim; the exact value for the returned latent (the prior
    mismatch log pi(z) - log p_T(z) added back)."""
    exact = (
        data.marginal_log_prob(x, EPS, sde)
        + sde.prior_logp(r.latent)
        - data.marginal_log_prob(r.latent, sde.T, sde)
    )
    return (exact - r.log_prob) / (x[0].numel() * math.log(2))


def sharp_table(shapes, n_points):
    """Mean / worst error in bits/dim and NFE of the default and of step control on x alone."""
    sdes = {
        "vp": sdescore.VPSDE(0.1, 20.0),
        "subvp": sdescore.SubVPSDE(0.1, 20.0),
        "ve": sdescore.VESDE(0.01, 50.0),
        "cosine": cosine_sde(),
    }
    rows = []
    for shape in shapes:
        data, x = sharp_problem(shape, n_points)
        n = len(x)
        for name, sde in sdes.items():
            for ctl in ("all", "x"):
                t0 = time.perf_counter()
                r = likelihood(
                    data.score_fn(sde), x, sde=sde, estimator="exact", step_control=ctl,
                    method="dopri5",
                )  # fmt: skip
                sec = time.perf_counter() - t0
                err = oracle_error_bpd(data, sde, x, r)  # + means bits/dim too low
                label = "dopri5, ctl all" if ctl == "all" else "dopri5, step ctl x"
                rows.append(
                    ("x".join(map(str, shape)), name, label, n, r.nfe, sec,
                     err.mean().item(), err.abs().max().item())
                )  # fmt: skip
    return rows


def exact_trace_cost(repeats=3):
    """Seconds per ODE evaluation of the exact trace and of Hutchinson (1 and 4 probes) with the
    package's UNet (untrained, eps head, VP) on 64 images of growing size: where the exact
    trace stops being affordable (the warning in `likelihood` starts above 128 coordinates)."""
    from sdescore.divergence import divergence_exact, divergence_hutchinson, draw_probes

    sde = sdescore.VPSDE(0.1, 20.0)
    rows = []
    for shape in [(1, 4, 4), (1, 8, 8), (3, 8, 8)]:
        torch.manual_seed(0)  # benchmark script: fixed random weights
        net = sdescore.UNet(shape[0], channels=32).eval()
        model = sdescore.ScoreModel(net, sde, "eps")
        x = torch.randn(64, *shape)
        t = torch.full((64,), 0.5)
        fns = {
            "exact": partial(divergence_exact, model, x, t),
            "hutchinson k=1": partial(divergence_hutchinson, model, x, t, draw_probes(x, 1)),
            "hutchinson k=4": partial(divergence_hutchinson, model, x, t, draw_probes(x, 4)),
        }
        best = {}
        for name, fn in fns.items():
            fn()  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            best[name] = min(times)
        rows.append((math.prod(shape), best))
    return rows


def joint_rms(y):
    """scipy's error norm: RMS over every component of (x, log p) together. With a smooth log p
    channel this is ~sqrt(2/3) of the RMS over x for 2-D data, i.e. a looser effective tolerance."""
    return torch.cat([v.reshape(-1) for v in y]).square().mean().sqrt()


# The reference's step control reproduced in torchdiffeq: joint RMS norm, growth up to 10x.
REF_NORM = {"norm": joint_rms, "ifactor": 10.0}


def run_one(kw, score, sde, x):
    """One likelihood evaluation: the 2021 re-implementation (kw None) or sdescore's."""
    score.calls = 0
    if kw is None:
        return ref_2021(score, sde, x, seed=1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        r = likelihood(score, x, sde=sde, generator=g, **kw)
    return r.log_prob, r.nfe


def timed_round_robin(fns, repeats):
    """Run each of `fns` once per round, `repeats` rounds, so that every method sees the same
    background load; per method the minimum wall and process-CPU seconds and the last output."""
    wall = [float("inf")] * len(fns)
    cpu = [float("inf")] * len(fns)
    outs = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            w0, c0 = time.perf_counter(), time.process_time()
            outs[i] = fn()
            wall[i] = min(wall[i], time.perf_counter() - w0)
            cpu[i] = min(cpu[i], time.process_time() - c0)
    return wall, cpu, outs


def accuracy_table(batches, repeats, dtype):
    sde, data = sdescore.VPSDE(0.1, 20.0), eight_gaussians()
    rows = []
    for b in batches:
        x = data.sample(b, generator=torch.Generator().manual_seed(0), dtype=dtype)
        exact = data.log_prob(x.double())
        configs = [
            ("ref-2021 rademacher", None),
            ("default exp_abm, 1 probe resampled", dict()),
            ("dopri5 hutch. rad.", DOPRI),
            ("dopri5 hutch. gaussian", dict(DOPRI, noise="gaussian")),
            ("dopri5 hutch. rad., step ctl x", dict(DOPRI, step_control="x")),
            ("default exp_abm, exact trace", dict(estimator="exact")),
            ("dopri5 exact trace", dict(DOPRI, estimator="exact")),
            ("dopri5 exact, step ctl x", dict(DOPRI, estimator="exact", step_control="x")),
        ]
        scores = [Counting(data.score_fn(sde)) for _ in configs]
        fns = [
            partial(run_one, kw, sc, sde, x) for (_, kw), sc in zip(configs, scores, strict=True)
        ]
        wall, cpu, outs = timed_round_robin(fns, repeats)
        for (name, _), sc, w, c, (logp, nfe) in zip(configs, scores, wall, cpu, outs, strict=True):
            err = (logp.double() - exact).abs()
            rows.append((name, b, w, c, nfe, sc.calls, err.mean().item(), err.max().item()))
    return rows


ABM = dict(method="exp_abm")  # its default tolerance, 2e-5 (on dopri5's scale)
DOPRI = dict(method="dopri5", rtol=TOL, atol=TOL)
# Plain torchdiffeq dopri5: its own step growth (ifactor 10; sdescore's default caps it at 4),
# error control on (x, Delta log p) as a mixed norm (max over the two channels' RMS).
PLAIN = dict(method="dopri5", rtol=1e-5, atol=1e-5, options={"ifactor": 10.0})
LIMIT_CONFIGS = [
    ("plain dopri5 1e-5, ctl (x, log p)", PLAIN),
    ("sdescore dopri5 1e-5 (growth cap 4)", dict(method="dopri5")),
    ("exp_abm 2e-5 (the default)", ABM),
    ("exp_abm 5e-6", dict(method="exp_abm", rtol=5e-6, atol=5e-6)),
]


def limit_table(shapes, n_points):
    """Issue 12's table: score calls, wall-time ratio and error (bits/dim) of plain dopri5, the
    default and exp_abm, side by side on the same points, exact scores and exact trace."""
    sdes = {
        "vp": sdescore.VPSDE(0.1, 20.0),
        "subvp": sdescore.SubVPSDE(0.1, 20.0),
        "ve": sdescore.VESDE(0.01, 50.0),
    }
    rows = []
    for shape in shapes:
        data, x = sharp_problem(shape, n_points)
        n = len(x)
        for name, sde in sdes.items():
            base_nfe = base_sec = None
            for label, kw in LIMIT_CONFIGS:
                t0 = time.perf_counter()
                r = likelihood(data.score_fn(sde), x, sde=sde, estimator="exact", **kw)
                sec = time.perf_counter() - t0
                err = oracle_error_bpd(data, sde, x, r)
                if base_nfe is None:
                    base_nfe, base_sec = r.nfe, sec
                rows.append(
                    ("x".join(map(str, shape)), name, label, n, r.nfe, r.nfe / base_nfe,
                     sec / base_sec, err.mean().item(), err.abs().max().item())
                )  # fmt: skip
    return rows


TOLERANCES = (1e-3, 1e-4, 1e-5, 1e-6)


def tolerance_workloads(quick):
    """(name, score, sde, x, reference log p or an oracle) for the tolerance table: eight
    Gaussians with the exact score (4096 points), the sharp mixtures under VP, sub-VP and VE
    (16 points at d = 16, 4 images at 1x8x8), and the trained MLP (32 points, float64,
    against dopri5 at 1e-10: it has no closed form)."""
    sdes = {
        "vp": sdescore.VPSDE(0.1, 20.0),
        "subvp": sdescore.SubVPSDE(0.1, 20.0),
        "ve": sdescore.VESDE(0.01, 50.0),
    }
    data = eight_gaussians()
    x = data.sample(256 if quick else 4096, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)  # fmt: skip
    yield "eight Gaussians, VP", data.score_fn(sdes["vp"]), sdes["vp"], x, data
    for shape in [(16,)] if quick else [(16,), (1, 8, 8)]:
        data, x = sharp_problem(shape, 16)
        for name, sde in sdes.items():
            label = f"sharp {'x'.join(map(str, shape))}, {name}"
            yield label, data.score_fn(sde), sde, x, data
    model, x = trained_toy_model(300 if quick else 1500)
    model, x = model.double(), x.double()
    ref = likelihood(
        model, x, estimator="exact", method="dopri5", rtol=1e-10, atol=1e-10, max_steps=100_000
    ).log_prob
    yield "trained MLP, VP", model, model.sde, x, ref


def tolerance_table(quick):
    """Issue 21: the same rtol = atol for dopri5 and the default solver (exp_abm), score calls
    and error in bits/dim (mean |error| and worst point; exact trace, float64), against the
    oracle (exact marginal at eps, prior mismatch at the returned latent added back) or, for
    the MLP, against dopri5 at 1e-10."""
    rows = []
    for label, score, sde, x, ref in tolerance_workloads(quick):
        d = x[0].numel()
        for tol in TOLERANCES:
            row = [label, tol]
            for method in ("dopri5", "exp_abm"):
                counted = Counting(score)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # exp_abm warns above 2e-3
                    r = likelihood(
                        counted, x, sde=sde, estimator="exact", method=method, rtol=tol, atol=tol
                    )
                if isinstance(ref, torch.Tensor):
                    err = (ref - r.log_prob) / (d * math.log(2))
                else:
                    err = oracle_error_bpd(ref, sde, x, r)
                row += [counted.calls, err.abs().mean().item(), err.abs().max().item()]
            rows.append(row)
    return rows


def trained_toy_model(steps=1500):
    """A 3x128 MLPScoreNet trained on eight Gaussians (eps parameterization), float32."""
    sde, data = sdescore.VPSDE(0.1, 20.0), eight_gaussians()
    torch.manual_seed(0)  # benchmark script: fixed initialisation
    x = data.sample(8192, generator=torch.Generator().manual_seed(0))
    model = sdescore.ScoreModel(sdescore.MLPScoreNet(2, hidden=128), sde, "eps")
    res = sdescore.train(model, x, steps=steps, batch_size=512, progress=False, seed=0)
    return res.ema_model, data.sample(32, generator=torch.Generator().manual_seed(5))


def variance_table(model, x, repeats):
    """Per-point standard deviation of Hutchinson log p over `repeats` probe seeds, against
    probes and evaluations, and the bias of the mean against the exact trace."""
    exact = likelihood(model, x, estimator="exact", method="exp_abm").log_prob.double()
    configs = [
        ("dopri5, fixed probes", dict(method="dopri5"), (1, 2, 4)),
        ("exp_abm, fixed probes", dict(method="exp_abm", resample_probes=False), (1, 2, 4)),
        ("exp_abm, resampled (+1 control)", dict(method="exp_abm", resample_probes=True), (1, 3)),
    ]
    rows = []
    for label, kw, ks in configs:
        for k in ks:
            vals, nfe = [], 0
            for r in range(repeats):
                g = torch.Generator(device=x.device).manual_seed(1000 + r)
                res = likelihood(model, x, probes=k, generator=g, **kw)
                vals.append(res.log_prob.double())
                nfe += res.nfe
            v = torch.stack(vals)
            std = v.std(0).mean().item()
            bias = (v.mean(0) - exact).mean().item()
            se = (v.std(0) / math.sqrt(repeats)).pow(2).mean().sqrt().item() / math.sqrt(len(x))
            vjps = k + (1 if kw.get("resample_probes") else 0)
            rows.append((label, k, vjps, nfe / repeats, std, bias, se))
    return rows


def mlp_table(batches, repeats, dtype):
    sde = sdescore.VPSDE(0.1, 20.0)
    torch.manual_seed(0)  # benchmark script, not library code: fixed random weights
    net = MLPScore().to(dtype)
    rows = []
    for b in batches:
        x = eight_gaussians().sample(b, generator=torch.Generator().manual_seed(0), dtype=dtype)
        configs = [
            ("ref-2021 rademacher", None),
            ("default exp_abm, 1 probe resampled", dict()),
            ("dopri5 hutchinson rademacher", DOPRI),
            ("dopri5 exact trace", dict(DOPRI, estimator="exact")),
            ("dopri5 hutch., ref-2021 error norm", dict(DOPRI, options=REF_NORM)),
        ]
        scores = [Counting(net) for _ in configs]
        fns = [
            partial(run_one, kw, sc, sde, x) for (_, kw), sc in zip(configs, scores, strict=True)
        ]
        wall, cpu, outs = timed_round_robin(fns, repeats)
        for (name, _), sc, w, c, (_, nfe) in zip(configs, scores, wall, cpu, outs, strict=True):
            rows.append((name, b, w, c, nfe, sc.calls))
    return rows


def batch_dependence(dtype, n_shared=64, b=4096):
    """|change| of the same points' log p across different batch companions."""
    sde, data = sdescore.VPSDE(0.1, 20.0), eight_gaussians()
    shared = data.sample(n_shared, generator=torch.Generator().manual_seed(10), dtype=dtype)
    rows = []
    configs = [
        ("dopri5, ctl x", dict(method="dopri5", step_control="x")),
        ("dopri5, ctl x_per_example", dict(method="dopri5", step_control="x_per_example")),
        ("dopri5, ctl all", dict(method="dopri5", step_control="all")),
        ("exp_abm", dict(method="exp_abm")),
    ]
    for label, kw in configs:
        vals = []
        for seed in (11, 12):
            rest = data.sample(
                b - n_shared, generator=torch.Generator().manual_seed(seed), dtype=dtype
            )
            batch = torch.cat([shared, rest])
            r = likelihood(data.score_fn(sde), batch, sde=sde, estimator="exact", **kw)
            vals.append(r.log_prob[:n_shared])
        alone = likelihood(data.score_fn(sde), shared, sde=sde, estimator="exact", **kw).log_prob
        d_batches = (vals[0] - vals[1]).abs()
        d_alone = (vals[0] - alone).abs()
        rows.append(
            (label, d_batches.mean().item(), d_batches.max().item(), d_alone.max().item())
        )  # fmt: skip
    return rows


def toy_wall_table(repeats=3, n=4096):
    """Issue 23, item 1: wall time of the default against the 2021 method on eight Gaussians
    (B = 4096, float32, exact score, one thread). The configurations run round-robin, `repeats`
    rounds, so that each sees the same background load; the median wall seconds, and the ratio
    of medians to the reference's."""
    sde, data = sdescore.VPSDE(0.1, 20.0), eight_gaussians()
    x = data.sample(n, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    exact = data.log_prob(x.double())
    from sdescore import _divergence

    # The rows "vmap" take the vector-Jacobian products as before (one batched backward call
    # through vmap) instead of one backward call each: the same numbers, another speed.
    loop = _divergence._LOOP_PRODUCTS
    configs = [
        ("ref-2021, 1 Rademacher probe", None, loop),
        ("default exp_abm, 1 probe resampled", dict(), loop),
        ("default exp_abm, 1 probe resampled, vmap", dict(), 0),
        ("default exp_abm, exact trace", dict(estimator="exact"), loop),
        ("default exp_abm, exact trace, vmap", dict(estimator="exact"), 0),
        ("dopri5 1e-5, exact trace", dict(DOPRI, estimator="exact"), loop),
    ]
    walls = [[] for _ in configs]
    outs = [None] * len(configs)
    try:
        for _ in range(repeats):
            for j, (_, kw, products) in enumerate(configs):
                _divergence._LOOP_PRODUCTS = products
                score = Counting(data.score_fn(sde))
                t0 = time.perf_counter()
                outs[j] = run_one(kw, score, sde, x)
                walls[j].append(time.perf_counter() - t0)
    finally:
        _divergence._LOOP_PRODUCTS = loop
    rows, base = [], None
    for (name, _, _), w, (logp, nfe) in zip(configs, walls, outs, strict=True):
        med = sorted(w)[len(w) // 2]
        base = med if base is None else base
        err = (logp.double() - exact).abs()
        rows.append((name, nfe, med, med / base, err.mean().item(), err.max().item()))
    return rows


def _estimate_workloads(quick):
    """(label, data, sde, x): eight Gaussians (512 points) and the sharp mixtures (32 points
    at d = 16, 8 images at 1x8x8) under VP, sub-VP and VE; float64, oracle available."""
    sdes = {
        "vp": sdescore.VPSDE(0.1, 20.0),
        "subvp": sdescore.SubVPSDE(0.1, 20.0),
        "ve": sdescore.VESDE(0.01, 50.0),
    }
    data = eight_gaussians()
    x = data.sample(512, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    yield "eight Gaussians, vp", data, sdes["vp"], x
    for shape in [(16,)] if quick else [(16,), (1, 8, 8)]:
        data, x = sharp_problem(shape, 32)
        for name, sde in sdes.items():
            yield f"sharp {'x'.join(map(str, shape))}, {name}", data, sde, x


def error_estimate_table(quick):
    """Issue 23, items 2a, 2b and 3: per workload and solver (the default, rtol = atol = 1e-6,
    fixed budgets of 20, 40, 80 calls, per-example steps and targets), the calls, the mean / worst error (bits/dim, exact
    trace, against the oracle), the share of examples whose |error| is below the estimate,
    and mean estimate / mean |error| (how far from vacuous)."""
    solvers = [
        ("default", sdescore.ExpABM()),
        ("1e-6", sdescore.ExpABM(rtol=1e-6, atol=1e-6)),
        ("steps=20", sdescore.ExpABM(steps=20)),
        ("steps=40", sdescore.ExpABM(steps=40)),
        ("steps=80", sdescore.ExpABM(steps=80)),
        ("steps=40 logsnr", sdescore.ExpABM(steps=40, grid="logsnr")),
        ("per_example", sdescore.ExpABM(per_example=True)),
        ("target=0.02", sdescore.ExpABM(target=0.02)),
        ("target=0.005", sdescore.ExpABM(target=0.005)),
    ]
    rows = []
    for label, data, sde, x in _estimate_workloads(quick):
        for name, solver in solvers:
            r = likelihood(data.score_fn(sde), x, sde=sde, estimator="exact", solver=solver)
            err = oracle_error_bpd(data, sde, x, r).abs()
            est = r.bits_per_dim_error
            covered = (est >= err).double().mean().item()
            rows.append((label, name, len(x), r.nfe, err.mean().item(), err.max().item(),
                         covered, (est.mean() / err.mean()).item()))  # fmt: skip
    return rows


DIGITS_SOLVERS = [
    ("steps=40 time_quadratic", dict(steps=40)),
    ("steps=40 logsnr", dict(steps=40, grid="logsnr")),
    ("steps=40 time_quadratic order=2", dict(steps=40, order=2)),
    ("steps=40 logsnr order=2", dict(steps=40, grid="logsnr", order=2)),
    ("default (rtol = atol = 2e-5)", dict()),
    ("per_example", dict(per_example=True)),
    ("target=0.02", dict(target=0.02)),
    ("target=0.015", dict(target=0.015)),
    ("target=0.01", dict(target=0.01)),
]


def digits_table(path, quick):
    """Issue 23, items 2a, 2b, 3 on the trained digits U-Net: the 450 test images in batches of
    64, one dequantization draw (seed 0), one fixed Rademacher probe per image (the same draw,
    seed 100 + batch, in every solve: the ODE solved is the same, so differences are solver
    error, not probe noise); reference dopri5 at rtol = atol = 1e-7, step control on (x, log p)
    (the issue's 1e-6 was itself 0.26 bits/dim off on one test image; it is a row here).
    Per batch and solver: score calls, mean / worst |error| (bits/dim), share of images with
    |error| <= the estimate, mean estimate / mean |error|; and the wall seconds."""
    from sdescore.pretrained.recipes import digits_levels

    model = sdescore.load_model(path).float().eval()
    levels, _ = digits_levels("test")
    y = sdescore.dequantize(levels, 17, (-1.0, 1.0), generator=torch.Generator().manual_seed(0))[0]
    batches = y.split(64)[: 2 if quick else None]
    d = y[0].numel()
    est = sdescore.Hutchinson(1, resample=False)
    for i, xb in enumerate(batches):

        def run(solver, i=i, xb=xb):
            g = torch.Generator().manual_seed(100 + i)
            counted = CountingImages(model)
            t0 = time.perf_counter()
            with torch.no_grad():
                r = sdescore.likelihood(
                    counted, xb, sde=model.sde, estimator=est, solver=solver, generator=g
                )
            return r, time.perf_counter() - t0, counted.images / len(xb)

        ref, ref_sec, work = run(sdescore.TorchDiffEq("dopri5", rtol=1e-7, atol=1e-7))
        yield (i, len(xb), "dopri5 1e-7 (reference)", ref.nfe, work, 0.0, 0.0, None, None,
               ref_sec)  # fmt: skip

        solvers = [("dopri5 1e-6", sdescore.TorchDiffEq("dopri5", rtol=1e-6, atol=1e-6))]
        solvers += [(name, sdescore.ExpABM(**opts)) for name, opts in DIGITS_SOLVERS]
        for name, solver in solvers:
            r, sec, work = run(solver)
            err = ((r.log_prob.double() - ref.log_prob.double()) / (d * math.log(2))).abs()
            if r.bits_per_dim_error is None:  # dopri5 has no estimate
                yield (
                    i,
                    len(xb),
                    name,
                    r.nfe,
                    work,
                    err.mean().item(),
                    err.max().item(),
                    None,
                    None,
                    sec,
                )
                continue
            e = r.bits_per_dim_error.double()
            cov = (e >= err).double().mean().item()
            yield (i, len(xb), name, r.nfe, work, err.mean().item(), err.max().item(), cov,
                   (e.mean() / err.mean()).item(), sec)  # fmt: skip


def mlp_equal_error_table(quick):
    """Issue 23, item 2c: the trained MLP (`trained_toy_model`, 32 test points, float64, exact
    trace), score calls against mean |error| (bits/dim, against dopri5 at 1e-10) for dopri5 and
    the default solver at several tolerances and targets; for each ExpABM row, dopri5's calls
    at the same mean error (log-log interpolation between its rows) and the ratio."""
    model, x = trained_toy_model(300 if quick else 1500)
    model, x = model.double(), x.double()
    d = x[0].numel()
    ref = likelihood(
        model, x, estimator="exact", method="dopri5", rtol=1e-10, atol=1e-10, max_steps=100_000
    ).log_prob

    def run(solver):
        r = sdescore.likelihood(model, x, estimator="exact", solver=solver)
        err = ((r.log_prob - ref) / (d * math.log(2))).abs()
        return r.nfe, err.mean().item(), err.max().item()

    dopri = [(tol, *run(sdescore.TorchDiffEq("dopri5", rtol=tol, atol=tol)))
             for tol in (1e-4, 1e-5, 1e-6, 1e-7)]  # fmt: skip
    lc = np.log([c for _, c, _, _ in dopri])
    le = np.log([e for _, _, e, _ in dopri])
    rows = [(f"dopri5 {tol:.0e}", c, e, w, None, None) for tol, c, e, w in dopri]
    abm = [
        (f"exp_abm {tol:.0e}", sdescore.ExpABM(rtol=tol, atol=tol)) for tol in (1e-4, 1e-5, 1e-6)
    ]
    abm.append(("exp_abm default (2e-5)", sdescore.ExpABM()))
    abm += [(f"exp_abm target={t}", sdescore.ExpABM(target=t)) for t in (1e-3, 1e-4, 1e-5)]
    for name, solver in abm:
        c, e, w = run(solver)
        # dopri5's error falls with its calls: interpolate log calls against log error.
        c_d = float(np.exp(np.interp(np.log(e), le[::-1], lc[::-1])))
        inside = le.min() <= np.log(e) <= le.max()
        rows.append((name, c, e, w, c_d if inside else None, c / c_d if inside else None))
    return rows


def issue23(args):
    print("# Issue 23, item 1: eight Gaussians, B = 4096, float32, exact score, one thread;")
    print("# the configurations round-robin, 3 rounds, median wall seconds; vmap: the")
    print("# vector-Jacobian products batched through vmap (as before), else one call each")
    print()
    print("| method | evals | median wall s | / ref-2021 | MAE nats | worst nats |")
    print("|---|---|---|---|---|---|")
    for name, nfe, med, ratio, mae, worst in toy_wall_table(1 if args.quick else 3):
        print(f"| {name} | {nfe} | {med:.3f} | {ratio:.2f} | {mae:.2e} | {worst:.2e} |",
              flush=True)  # fmt: skip
    print()
    print("# Issue 23, item 2c: the trained MLP (eight Gaussians, 32 points, float64, exact")
    print("# trace), mean / worst |error| in bits/dim against dopri5 at 1e-10; dopri5 calls at")
    print("# equal error: log-log interpolation between the dopri5 rows (blank outside them)")
    print()
    print("| solver | calls | mean err | worst err | dopri5 calls at that error | ratio |")
    print("|---|---|---|---|---|---|")
    for name, c, e, w, c_d, ratio in mlp_equal_error_table(args.quick):
        cd = "" if c_d is None else f"{c_d:.0f}"
        q = "" if ratio is None else f"{ratio:.2f}"
        print(f"| {name} | {c} | {e:.1e} | {w:.1e} | {cd} | {q} |", flush=True)
    print()
    print("# Issue 23, items 2a and 3: fixed budgets and the error estimate (exact trace,")
    print("# float64, error against the oracle in bits/dim; covered = share of examples with")
    print("# |error| <= estimate; est / err = mean estimate / mean |error|)")
    print()
    print("| workload | solver | B | calls | mean err | worst err | covered | est / err |")
    print("|---|---|---|---|---|---|---|---|")
    for label, name, n, nfe, mean, worst, cov, ratio in error_estimate_table(args.quick):
        print(f"| {label} | {name} | {n} | {nfe} | {mean:.1e} | {worst:.1e} | {cov:.2f} "
              f"| {ratio:.1f} |", flush=True)  # fmt: skip


def digits(args):
    if not os.path.exists(args.digits):
        print(f"# {args.digits}: no such file; the digits U-Net tables are skipped")
        return
    print(f"# Issue 23 on the trained digits U-Net ({args.digits}): test images in batches")
    print("# of 64, one dequantization draw, one fixed Rademacher probe per image (the same in")
    print("# every solve); error against dopri5 at rtol = atol = 1e-7, bits/dim; covered: share")
    print("# of images with |error| <= estimate; est / err: mean estimate / mean |error|;")
    print(f"# torch threads {torch.get_num_threads()}")
    print()
    print("# work: images evaluated / B (per-example step control evaluates only the images")
    print("# not yet at T)")
    print()
    print("| batch | B | solver | calls | work | mean err | worst err | covered | est / err "
          "| wall s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = digits_table(args.digits, args.quick)
    for i, n, name, nfe, work, mean, worst, cov, ratio, sec in rows:
        c = "" if cov is None else f"{cov:.2f}"
        q = "" if ratio is None else f"{ratio:.1f}"
        print(f"| {i} | {n} | {name} | {nfe} | {work:.0f} | {mean:.1e} | {worst:.1e} | {c} "
              f"| {q} | {sec:.1f} |", flush=True)  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 256 only, one repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--float64", action="store_true", help="run in float64 (default float32)")
    ap.add_argument(
        "--exact-cost", action="store_true", help="only the exact-trace cost table (UNet)"
    )
    ap.add_argument(
        "--skip-limit", action="store_true", help="skip the issue-12 tables (exp_abm, variance)"
    )
    ap.add_argument(
        "--tolerances", action="store_true",
        help="only the table of dopri5 and exp_abm at the same rtol = atol (issue 21)",
    )  # fmt: skip
    ap.add_argument(
        "--issue23", action="store_true",
        help="only issue 23's tables: toy wall time, fixed budgets, error estimate",
    )  # fmt: skip
    ap.add_argument(
        "--digits", metavar="PATH", nargs="?", const="pretrained",
        help="only issue 23's tables on the trained digits U-Net: the shipped "
        "sdescore.pretrained 'digits8' (no PATH), or a file saved by save_model at PATH",
    )  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.digits == "pretrained":
        args.digits = str(sdescore.pretrained.weights_path("digits8"))
    if args.digits:
        digits(args)
        return
    if args.issue23:
        issue23(args)
        return
    if args.tolerances:
        print(
            "# The same rtol = atol for dopri5 and the default (exp_abm): score calls, mean |err| /"
        )
        print("# worst point in bits/dim (exact trace, float64; the MLP against dopri5 at 1e-10)")
        print()
        print("| workload | rtol = atol | dopri5 calls | dopri5 mean / worst | exp_abm calls "
              "| exp_abm mean / worst |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for label, tol, n_d, m_d, w_d, n_e, m_e, w_e in tolerance_table(args.quick):
            print(f"| {label} | {tol:.0e} | {n_d} | {m_d:.1e} / {w_d:.1e} | {n_e} "
                  f"| {m_e:.1e} / {w_e:.1e} |", flush=True)  # fmt: skip
        return
    if args.exact_cost:
        print("UNet (32 channels, untrained), 64 images, seconds per ODE evaluation")
        print("| d | exact | hutchinson k=1 | hutchinson k=4 | exact / k=4 |")
        print("|---|---|---|---|---|")
        for d, b in exact_trace_cost():
            ratio = b["exact"] / b["hutchinson k=4"]
            print(
                f"| {d} | {b['exact']:.3f} | {b['hutchinson k=1']:.3f} "
                f"| {b['hutchinson k=4']:.3f} | {ratio:.1f} |"
            )
        return
    dtype = torch.float64 if args.float64 else torch.float32
    if not args.skip_limit:
        limit_shapes = [(16,)] if args.quick else [(16,), (64,), (1, 8, 8)]
        print("# Likelihood at the limit (issue 12): image-like 8-mode mixtures, std 0.004 on")
        print("# [-1, 1]^D, exact scores, exact trace, float64; evals and wall time relative to")
        print("# plain torchdiffeq dopri5 at rtol = atol = 1e-5 with control on (x, log p)")
        print()
        print("| D | SDE | method | B | evals | evals / plain | wall / plain | mean err bpd "
              "| worst bpd |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for shape, name, label, n, nfe, rn, rw, mean, worst in limit_table(limit_shapes, 16):
            print(
                f"| {shape} | {name} | {label} | {n} | {nfe} | {rn:.2f} | {rw:.2f} "
                f"| {mean:+.1e} | {worst:.1e} |"
            )
        print()
        reps = 4 if args.quick else 10
        model, xv = trained_toy_model(300 if args.quick else 1500)
        print("# Hutchinson variance: a trained 3x128 MLP on eight Gaussians (float32), 32 test")
        print(f"# points, {reps} probe seeds each; bias = mean over seeds - exact trace (nats)")
        print()
        print("| solver, probes | k | VJPs / eval | evals | per-point std (nats) | bias +- se |")
        print("|---|---|---|---|---|---|")
        for label, k, vjps, nfe, std, bias, se in variance_table(model, xv, reps):
            print(f"| {label} | {k} | {vjps} | {nfe:.0f} | {std:.3f} | {bias:+.3f} +- {se:.3f} |")
        print()
    batches = [256] if args.quick else [512, 4096]
    repeats = 1 if args.quick else args.repeats
    shapes = [(16,), (1, 8, 8)] if args.quick else [(2,), (16,), (64,), (3, 8, 8)]
    print("# Image-like data: 8-mode mixtures, std 0.004 on [-1, 1]^D, float64, exact trace,")
    print("# error = exact - computed log p in bits/dim (positive: bits/dim too low)")
    print()
    print("| D | SDE | step control | B | ODE evals | wall s | mean err bpd | worst bpd |")
    print("|---|---|---|---|---|---|---|---|")
    for shape, name, label, n, nfe, sec, mean, worst in sharp_table(shapes, 32):
        print(
            f"| {shape} | {name} | {label} | {n} | {nfe} | {sec:.2f} | {mean:+.1e} | {worst:.1e} |"
        )
    print()
    print(f"# eight Gaussians, VPSDE(0.1, 20), exact score, eps={EPS}, {dtype}; ref-2021 and")
    print(f"# dopri5 at rtol=atol={TOL}, the default (exp_abm) at its own 2e-5")
    print(f"# torch threads 1, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    print()
    hdr = (
        f"| {'method':36s} | {'B':>4s} | {'wall s':>7s} | {'CPU s':>7s} | {'ODE evals':>9s} "
        f"| {'score calls':>11s}"
    )
    print(hdr + " | MAE nats | worst nats |")
    print("|" + "|".join("-" * n for n in (38, 6, 9, 9, 11, 13, 10, 12)) + "|")
    for name, b, sec, cpu, nfe, calls, mae, worst in accuracy_table(batches, repeats, dtype):
        print(
            f"| {name:36s} | {b:4d} | {sec:7.3f} | {cpu:7.3f} | {nfe:9d} | {calls:11d} "
            f"| {mae:8.2e} | {worst:10.2e} |"
        )
    print()
    print("3x256 MLP score network (random weights), time only")
    print()
    print(hdr + " |")
    print("|" + "|".join("-" * n for n in (38, 6, 9, 9, 11, 13)) + "|")
    for name, b, sec, cpu, nfe, calls in mlp_table(batches, repeats, dtype):
        print(f"| {name:36s} | {b:4d} | {sec:7.3f} | {cpu:7.3f} | {nfe:9d} | {calls:11d} |")
    print()
    bd = 256 if args.quick else 4096
    print(f"Batch dependence (exact trace, B = {bd}, 64 shared points): |delta log p| in nats")
    print()
    print("| solver, step control | other batch: mean | other batch: max | vs alone (64): max |")
    print("|---|---|---|---|")
    for ctl, mean, worst, alone in batch_dependence(dtype, b=bd):
        print(f"| {ctl} | {mean:.2e} | {worst:.2e} | {alone:.2e} |")


if __name__ == "__main__":
    main()
