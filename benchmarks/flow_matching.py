"""Rectified flow: the samplers' low-step errors on eight Gaussians with the exact score.

    python benchmarks/flow_matching.py [--n 2048] [--quick]

SDE: `RectifiedFlowSDE()` (alpha = 1 - t, sigma = t, T = 0.999), end time eps = 1e-3. For each
probability-flow ODE method and budget: score calls (nfe) and the solver error, the mean over
draws of the Euclidean distance |x - x_ref| (not per coordinate) from the same prior draws
through a tight dopri5 solve (rtol = atol = 1e-10),
so the table measures the solver alone. A second table gives the likelihood's error against the
exact log-density (exact trace) and its score calls. Float64, CPU, seed 0; the numbers are
quoted in docs/flow_matching.md.
"""

from __future__ import annotations

import argparse
import math

import torch

import sdescore
from sdescore.toy import eight_gaussians

EPS = 1e-3
BUDGETS = (5, 10, 20, 50)
# (label, method, options): one row per configuration; budgets fill the columns.
FIXED = [
    ("auto (by budget)", "auto", {}),
    ("DPM-Solver++(2M), time-quadratic", sdescore.DPMSolver(order=2, multistep=True), {}),
    ("DPM-Solver++(2M), log-SNR", sdescore.DPMSolver(order=2, multistep=True, grid="logsnr"), {}),
    ("DPM-Solver++(2M), time-uniform", sdescore.DPMSolver(order=2, multistep=True, grid="time_uniform"), {}),
    ("DDIM = flow Euler, time-uniform", sdescore.DPMSolver(order=1, multistep=False, grid="time_uniform"), {}),
    ("UniPC-2, time-quadratic", "unipc", {}),
    ("UniPC-2, log-SNR", sdescore.UniPC(grid="logsnr"), {}),
    ("UniPC-3, time-uniform", sdescore.UniPC(order=3, grid="time_uniform"), {}),
    ("euler (torchdiffeq)", "euler", {}),
    ("heun2 (torchdiffeq, 2 calls/step)", "heun2", {"calls": 2}),
]  # fmt: skip
ADAPTIVE = [1e-3, 1e-4, 1e-5]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048, help="prior draws")
    ap.add_argument("--quick", action="store_true", help="256 draws, smoke-test size")
    args = ap.parse_args(argv)
    n = 256 if args.quick else args.n
    sde, data = sdescore.RectifiedFlowSDE(), eight_gaussians()
    pf = sde.probability_flow(data.score_fn(sde))
    z = sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = pf.sample(x_T=z, method=sdescore.TorchDiffEq("dopri5", rtol=1e-10, atol=1e-10), eps=EPS)

    def err(x):
        return (x - ref).norm(dim=1).mean().item()

    print(f"{sde!r}, eight Gaussians, exact score, {n} draws, eps = {EPS}")
    print("solver error: mean |x - x_ref| (x_ref: dopri5 at 1e-10); columns: score calls")
    print(f"| method | {' | '.join(str(b) for b in BUDGETS)} |")
    print(f"|---|{'---|' * len(BUDGETS)}")
    for label, method, opts in FIXED:
        cells = []
        for nfe in BUDGETS:
            steps = nfe // opts.get("calls", 1)
            r = pf.sample(x_T=z, method=method, steps=steps, eps=EPS, return_info=True)
            cells.append(f"{err(r.samples):.1e}" + ("" if r.nfe == nfe else f" ({r.nfe})"))
        print(f"| {label} | {' | '.join(cells)} |")
    for tol in ADAPTIVE:
        r = pf.sample(
            x_T=z,
            method=sdescore.TorchDiffEq("dopri5", rtol=tol, atol=tol),
            eps=EPS,
            return_info=True,
        )
        print(f"| dopri5, rtol = atol = {tol:g} | {err(r.samples):.1e} at {r.nfe} calls |")

    print("\nlikelihood (exact trace, the default solver): error of log p against the oracle")
    x = data.sample(256 if not args.quick else 64, generator=torch.Generator().manual_seed(1))
    x = x.double()
    print("| rtol = atol | mean abs error (nats) | max (nats) | score calls |")
    print("|---|---|---|---|")
    for tol in (1e-4, 1e-5, 1e-6):
        res = sdescore.likelihood(
            data.score_fn(sde), x, sde=sde, estimator="exact", rtol=tol, atol=tol, eps=1e-5
        )
        exact = (
            data.marginal_log_prob(x, 1e-5, sde)
            + sde.prior_logp(res.latent)
            - data.marginal_log_prob(res.latent, sde.T, sde)
        )
        e = (res.log_prob - exact).abs()
        print(f"| {tol:g} | {e.mean().item():.1e} | {e.max().item():.1e} | {res.nfe} |")
    bound = sde.prior_mismatch_bound(16.5, 2)
    print(
        f"\nprior mismatch at T: KL(p_T || prior) <= {bound:.1e} nats ({bound / math.log(2):.1e} bits)"
    )


if __name__ == "__main__":
    main()
