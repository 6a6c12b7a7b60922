"""Fitted time grids (`sdescore.optimize_schedule`) against the built-in ones, on held-out draws.

    python benchmarks/fit_schedule.py [--n 16384] [--fit-draws 512] [--quick]

Workload and error as `benchmarks/peers.py`: eight Gaussians (radius 4, std 0.5), VPSDE(0.1, 20),
the exact score, end time eps = 1e-3; solver error = mean |x - x_ref| per coordinate against a
converged PF-ODE solve (singlestep DPM-Solver-3 on the log-SNR grid, 900 calls) from the same
`n` float32 prior draws, for each of seeds 0-2; the table gives the max over the seeds.

The grids are fitted on other draws: `--fit-draws` float64 prior draws from seed 1000, never
used for evaluation. Rows: the default sampler `Auto()` on its built-in grid (uniform in
sqrt t) and with a grid fitted for each budget; `IPNDM()` likewise. The last rows give the
fitting wall time per budget (one process; set OMP_NUM_THREADS=1 for one core).
"""

from __future__ import annotations

import argparse
import time

import torch

import sdescore
from sdescore.toy import eight_gaussians

EPS = 1e-3
NFES = (6, 8, 10, 12, 15, 20)
SEEDS = (0, 1, 2)
FIT_SEED = 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=16384, help="evaluation draws per seed")
    ap.add_argument("--fit-draws", type=int, default=512, help="fitting draws (seed 1000)")
    ap.add_argument("--quick", action="store_true", help="n = 2048, budgets 8 and 10 only")
    args = ap.parse_args()
    n, nfes = (2048, (8, 10)) if args.quick else (args.n, NFES)

    sde = sdescore.VPSDE(0.1, 20.0)
    pf = sde.probability_flow(eight_gaussians(radius=4.0, std=0.5).score_fn(sde))
    draws = [sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(s)) for s in SEEDS]
    ref_solver = sdescore.DPMSolver(order=3, multistep=False, grid="logsnr")
    refs = [pf.sample(x_T=z, method=ref_solver, steps=900, eps=EPS) for z in draws]

    def error(method, nfe) -> float:
        steps = None if isinstance(method.grid, sdescore.Times) else nfe
        return max(
            (pf.sample(x_T=z, method=method, steps=steps, eps=EPS) - r).abs().mean().item()
            for z, r in zip(draws, refs, strict=True)
        )

    rows: dict[str, list[str]] = {}
    for name, solver in (("Auto", sdescore.Auto()), ("iPNDM", sdescore.IPNDM())):
        plain, fitted, wall = [], [], []
        for nfe in nfes:
            start = time.perf_counter()
            fit = sdescore.optimize_schedule(
                pf,
                nfe,
                shape=(args.fit_draws, 2),
                solver=solver,
                generator=torch.Generator().manual_seed(FIT_SEED),
                eps=EPS,
            )
            wall.append(f"{time.perf_counter() - start:.1f} s")
            plain.append(f"{error(solver, nfe):.2e}")
            fitted.append(f"{error(fit, nfe):.2e}")
        rows[f"{name}, sqrt t grid"] = plain
        rows[f"{name}, fitted grid"] = fitted
        rows[f"fitting time, {name}"] = wall

    print(
        f"eight Gaussians, VPSDE(0.1, 20), exact score: max over seeds {SEEDS} of mean |x - x_ref| "
        f"({n} draws each); grids fitted on {args.fit_draws} draws of seed {FIT_SEED}\n"
    )
    print("| calls | " + " | ".join(str(k) for k in nfes) + " |")
    print("|---|" + "---|" * len(nfes))
    for label, cells in rows.items():
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
