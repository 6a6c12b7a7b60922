"""Sampler benchmark: eight Gaussians under VPSDE(0.1, 20) with the exact score.

    python benchmarks/samplers.py [--n 16384] [--quick] [--nfe-table]

For each method and step count: score calls (nfe), wall time, the mean exact log p0 of the
samples minus that of exact samples, and the within-mode std (exact: 0.5). "Exact samples" are
drawn from p_eps (data diffused to t = eps = 1e-3, sigma(eps) ~ 0.0105), which is the law every
sampler targets at its end time. A second table checks the default sampler's (`Auto()`) target
over several seeds, and a third measures the overhead of each sampler beyond its score calls at
batch 4096.
"""

from __future__ import annotations

import argparse
import time

import torch

import sdescore
from sdescore.toy import eight_gaussians

EPS = 1e-3


class TimedScore:
    """The exact score, timing its own calls so that solver overhead can be separated."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, x, t):
        t0 = time.perf_counter()
        out = self.fn(x, t)
        self.seconds += time.perf_counter() - t0
        return out


def metrics(data, x, ref_logp):
    x = x.double()
    logp = data.log_prob(x).mean().item() - ref_logp
    means = data._base["mu"]  # (8, 2)
    k = torch.cdist(x, means).argmin(1)
    within = (x - means[k]).square().mean().sqrt().item()
    return logp, within


def run(sde, data, method, kind, n, seed, **kw):
    score = TimedScore(data.score_fn(sde))
    proc = sde.reverse(score) if kind == "sde" else sde.probability_flow(score)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    res = proc.sample((n, 2), method=method, eps=EPS, generator=g, return_info=True, **kw)
    wall = time.perf_counter() - t0
    return res, wall, score.seconds


def sde_table(sde, data, n, seeds=(0, 1, 2)):
    """Reverse-SDE samplers at equal score calls: mean exact log p0 of the samples minus its
    expectation (from 2^18 exact draws), mean over seeds, with the Monte Carlo standard error.
    SDE-DPM-Solver rows on the time-quadratic grid unless stated."""
    rev = sde.reverse(data.score_fn(sde))
    big = data.sample(2**18, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    target = data.log_prob(big).mean().item()
    se = data.log_prob(big).std().item() / (n * len(seeds)) ** 0.5
    methods = [
        ("euler_maruyama", "euler_maruyama", 1),
        ("pc (1 corrector step)", "pc", 2),
        ("SDE-DPM-Solver++1", sdescore.SDEDPMSolver(order=1), 1),
        ("2M, log-SNR (old default)", sdescore.SDEDPMSolver(order=2, grid="logsnr"), 1),
        ("2M", sdescore.SDEDPMSolver(order=2), 1),
        ("3M damped", sdescore.SDEDPMSolver(order=3, damped=True), 1),
        ("SDEDPMSolver() (3M here)", sdescore.SDEDPMSolver(), 1),
    ]
    print(f"eight Gaussians, VPSDE(0.1, 20), exact score, n={n} x {len(seeds)} seeds, float64")
    print(f"mean log p0 of samples minus its expectation; Monte Carlo SE {se:.3f}")
    print(f"{'method':<30}" + "".join(f"{c:>9}" for c in (20, 50, 100, 200)) + "  (score calls)")
    for name, method, per_step in methods:
        row = []
        for calls in (20, 50, 100, 200):
            vals = []
            for seed in seeds:
                g = torch.Generator().manual_seed(seed)
                x = rev.sample(
                    (n, 2), method=method, steps=calls // per_step, generator=g,
                    dtype=torch.float64,
                )  # fmt: skip
                vals.append(data.log_prob(x).mean().item())
            row.append(sum(vals) / len(vals) - target)
        print(f"{name:<30}" + "".join(f"{v:>+9.3f}" for v in row))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--quick", action="store_true", help="fewer configurations")
    ap.add_argument("--overhead", action="store_true", help="only the overhead table")
    ap.add_argument("--nfe-table", action="store_true", help="only the DPM-Solver NFE table")
    ap.add_argument(
        "--sde-table", action="store_true", help="only the reverse-SDE table at 20-200 calls"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)  # small ops; 2 threads on a busy box add barrier waits
    sde, data = sdescore.VPSDE(0.1, 20.0), eight_gaussians(radius=4.0, std=0.5)
    if args.nfe_table:
        return nfe_table(sde, data, args.n)
    if args.sde_table:
        return sde_table(sde, data, args.n)
    g = torch.Generator().manual_seed(12345)
    exact = sde.perturb(data.sample(args.n, generator=g, dtype=torch.float64), EPS, generator=g)[0]
    ref_logp = data.log_prob(exact).mean().item()
    _, ref_std = metrics(data, exact, ref_logp)

    # (label, process, step counts, the method: a name or a solver object)
    configs = [
        ("euler_maruyama", "sde", [20, 100, 1000], "euler_maruyama"),
        ("reverse_diffusion", "sde", [20, 100, 1000], "reverse_diffusion"),
        ("ancestral", "sde", [1, 20, 100, 1000], "ancestral"),
        ("pc", "sde", [20, 100, 1000], "pc"),
        ("annealed_langevin", "sde", [100, 1000], "annealed_langevin"),
        ("gotta_go_fast", "sde", [None], "gotta_go_fast"),
        ("GottaGoFast(rtol=1e-3, atol=1e-3)", "sde", [None],
         sdescore.GottaGoFast(rtol=1e-3, atol=1e-3)),
        ("euler", "sde", [100], "euler"),
        ("srk", "sde", [100], "srk"),
        ("dopri5", "ode", [None], "dopri5"),
        ("rk4", "ode", [10, 25], "rk4"),
        ("auto", "ode", [10, 12, 15, 18, 20, 50], "auto"),
        ("dpm_solver", "ode", [20], "dpm_solver"),
        ("DPMSolver(multistep=True)", "ode", [20], sdescore.DPMSolver(multistep=True)),
        ("DPMSolver(multistep=True, grid='logsnr')", "ode", [20],
         sdescore.DPMSolver(multistep=True, grid="logsnr")),
        ("Auto(grid='logsnr')", "ode", [20], sdescore.Auto(grid="logsnr")),
        ("DPMSolver(prediction='noise')", "ode", [20], sdescore.DPMSolver(prediction="noise")),
        ("DPMSolver(order=2)", "ode", [20], sdescore.DPMSolver(order=2)),
        ("DPMSolver(order=1)", "ode", [20], sdescore.DPMSolver(order=1)),
    ]  # fmt: skip
    if args.overhead:
        configs = []
    if args.quick:
        # the native samplers' references and every DPM-Solver / UniPC / Auto row
        configs = [
            c
            for c in configs
            if c[0] in ("euler_maruyama", "ancestral")
            or (c[1] == "ode" and c[0] not in ("dopri5", "rk4"))
        ]
    print(f"eight Gaussians, VPSDE(0.1, 20), exact score, n={args.n}, eps={EPS}, float32")
    print(f"exact samples (p_eps): mean log p0 = {ref_logp:.4f}, within-mode std = {ref_std:.4f}")
    head = f"{'method':<42}{'steps':>6}{'nfe':>7}{'wall s':>8}{'dlogp0':>9}{'w-std':>8}"
    print(head)
    print("-" * len(head))
    for name, kind, steps_list, method in configs:
        for steps in steps_list:
            opts = {} if steps is None else {"steps": steps}
            res, wall, _ = run(sde, data, method, kind, args.n, 0, **opts)
            dlogp, within = metrics(data, res.samples, ref_logp)
            st = "-" if steps is None else str(steps)
            print(f"{name:<42}{st:>6}{res.nfe:>7}{wall:>8.2f}{dlogp:>+9.4f}{within:>8.4f}")

    print(
        "\nDefault sampler (Auto()) target: |dlogp0| <= 0.02 and |w-std - exact| <= 0.01, "
        "seeds 0-9.\n'solver' columns compare with a converged PF-ODE solve (900 score calls) "
        "from the same prior draw (seeds 0-2), which removes the Monte Carlo noise."
    )
    print(
        f"{'nfe':>6}{'max|dlogp0|':>13}{'max|dw-std|':>13}{'solver|dlogp0|':>16}"
        f"{'solver|dw-std|':>16}  met"
    )
    floor_lp = floor_sd = 0.0
    for seed in range(10):
        gs = torch.Generator().manual_seed(1000 + seed)
        other = data.sample(args.n, generator=gs, dtype=torch.float64)
        lp, sd = metrics(data, sde.perturb(other, EPS, generator=gs)[0], ref_logp)
        floor_lp, floor_sd = max(floor_lp, abs(lp)), max(floor_sd, abs(sd - ref_std))
    print(f"{'exact':>6}{floor_lp:>13.4f}{floor_sd:>13.4f}{'':>32}  (noise floor)")
    converged = {}
    for seed in () if args.overhead else range(3):
        conv, _, _ = run(sde, data, sdescore.Auto(grid="logsnr"), "ode", args.n, seed, steps=900)
        converged[seed] = metrics(data, conv.samples, ref_logp)
    for nfe in () if args.overhead else (10, 12, 15, 18, 20):
        worst_lp = worst_sd = solver_lp = solver_sd = 0.0
        for seed in range(10):
            res, _, _ = run(sde, data, "auto", "ode", args.n, seed, steps=nfe)
            dlogp, within = metrics(data, res.samples, ref_logp)
            worst_lp, worst_sd = max(worst_lp, abs(dlogp)), max(worst_sd, abs(within - ref_std))
            if seed in converged:
                c_lp, c_sd = converged[seed]
                solver_lp = max(solver_lp, abs(dlogp - c_lp))
                solver_sd = max(solver_sd, abs(within - c_sd))
        met = "yes" if worst_lp <= 0.02 and worst_sd <= 0.01 else "no"
        print(
            f"{nfe:>6}{worst_lp:>13.4f}{worst_sd:>13.4f}{solver_lp:>16.4f}{solver_sd:>16.4f}  {met}"
        )

    print("\nOverhead beyond score calls, batch 4096 (best of 3): (wall - score time) / score time")
    for method, kind, opts in [
        ("euler_maruyama", "sde", {"steps": 100}),
        ("ancestral", "sde", {"steps": 100}),
        ("pc", "sde", {"steps": 100}),
        ("euler", "sde", {"steps": 100}),
        ("srk", "sde", {"steps": 100}),
        ("auto", "ode", {"steps": 20}),
    ]:
        best = None
        for rep in range(3):
            res, wall, score_s = run(sde, data, method, kind, 4096, rep, **opts)
            over = (wall - score_s) / score_s
            best = over if best is None else min(best, over)
        print(f"{method:<16} nfe={res.nfe:<5} overhead = {100 * best:5.1f} %")


NFES = (5, 6, 8, 10, 12, 15, 20, 30, 50)
VARIANTS = {
    "default Auto()": sdescore.Auto(),
    "DPMSolver() (2M, 3M from 13)": sdescore.DPMSolver(),
    "3S equal (old default)": sdescore.DPMSolver(order=3, multistep=False),
    "3S allocation=order": sdescore.DPMSolver(order=3, multistep=False, allocation="order"),
    "2M": sdescore.DPMSolver(order=2, multistep=True),
    "2M taylor (old 2M)": sdescore.DPMSolver(order=2, multistep=True, solver_type="taylor"),
    "3M exact": sdescore.DPMSolver(order=3, multistep=True, damped=False),
    "3M damped": sdescore.DPMSolver(order=3, multistep=True, damped=True),
    "3M damped, taylor 2M steps": sdescore.DPMSolver(
        order=3, multistep=True, damped=True, solver_type="taylor"
    ),
    "3M damped logsnr": sdescore.DPMSolver(order=3, multistep=True, damped=True, grid="logsnr"),
    "3M damped karras": sdescore.DPMSolver(order=3, multistep=True, damped=True, grid="karras"),
    "UniPC-2 bh2": sdescore.UniPC(order=2),
    "UniPC-2 bh1": sdescore.UniPC(order=2, variant="bh1"),
    "UniPC-3 bh2": sdescore.UniPC(order=3),
    "UniPC-3 bh2 no low final": sdescore.UniPC(order=3, lower_order_final=False),
    "UniPC-2 bh2 logsnr": sdescore.UniPC(order=2, grid="logsnr"),
    "UniPC-2 bh2 karras": sdescore.UniPC(order=2, grid="karras"),
    "UniPC-3 bh2 karras": sdescore.UniPC(order=3, grid="karras"),
}


def nfe_table(sde, data, n):
    """Solver error: max over seeds 0-2 of mean |x - x_ref| per coordinate, x_ref a converged
    PF-ODE solve (900 calls, log-SNR grid) from the same prior draws."""
    score = data.score_fn(sde)
    pf = sde.probability_flow(score)
    draws = [
        sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(s)) for s in range(3)
    ]
    ref = sdescore.DPMSolver(order=3, multistep=False, grid="logsnr")
    refs = [pf.sample(x_T=z, method=ref, steps=900, eps=EPS) for z in draws]
    print(f"solver error vs converged PF ODE, n={n}, max over 3 seeds")
    print(f"{'variant':<29}" + "".join(f"{k:>9}" for k in NFES))
    for name, solver in VARIANTS.items():
        errs = []
        for nfe in NFES:
            e = [
                (pf.sample(x_T=z, method=solver, steps=nfe, eps=EPS) - r).abs().mean().item()
                for z, r in zip(draws, refs, strict=True)
            ]
            errs.append(max(e))
        print(f"{name:<29}" + "".join(f"{v:9.1e}" for v in errs), flush=True)


if __name__ == "__main__":
    main()
