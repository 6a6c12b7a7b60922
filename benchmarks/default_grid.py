"""Why the default sampler's grid is quadratic in t: the toy and the digits U-Net disagree.

    python benchmarks/default_grid.py [--quick]
    python benchmarks/default_grid.py --mixture   (a third workload: image-like mixtures)
    python benchmarks/default_grid.py --solvers   (the default against the 2M, four workloads)

Issue 22 asks that the unfitted default, `Auto()`, be nowhere behind the official DPM-Solver
row of `benchmarks/peers.py` (eight Gaussians, exact score); it is behind at 6, 8 and 15 calls.
Grids denser near the data than the default's, boundaries uniform in $t^{1/p}$ for p > 2 (p = 2
is `TimeQuadratic`, the default), close that gap on the toy. This script measures what they
do on both workloads, with the default's order rule (UniPC-2 below 16 calls, UniPC-3 from 16)
and with UniPC-3 throughout:

- toy: the workload of `benchmarks/peers.py` (VPSDE(0.1, 20), exact score, 16384 prior draws for
  each of seeds 0-2, solver error = mean |x - x_ref| against a 900-call solve from the same
  draws, max over seeds);
- digits: the shipped `digits8` U-Net (float32), 200 prior draws for each of seeds 0 and 1,
  solver error = mean |x - x_ref| per pixel against a 200-call UniPC-3 solve on the log-SNR
  grid, max over seeds (as `peers.py --digits`, with fewer draws).

Prints one table per workload: solver error by grid exponent and score calls, with the
official row for the toy. About 7 minutes of one core (`--quick`: 2048 toy draws, 50 digits).

`--mixture`: instead, a third workload for the exponents 2 and 2.25 (the candidate): an
image-like mixture, 8 modes with std 0.05 at uniform means on [-1, 1]^(1x8x8), the exact score,
VP(0.1, 20) and sub-VP(0.1, 20), float64, 2000 prior draws for each of seeds 0 and 1, against a
600-call singlestep DPM-Solver-3 solve on the log-SNR grid; with the default's order rule and
with UniPC-3 from 15 calls. About 3 minutes of one core.

`--solvers`: instead, on all four workloads (toy, digits, mixture under VP and sub-VP), the
default `Auto()` against the multistep DPM-Solver++(2M) in its two forms (`solver_type`
"midpoint", Lu et al.'s Alg. 2 and the default, and "taylor"), UniPC-2 and the singlestep
DPM-Solver-3 as Lu et al.'s code allocates it, at 5-50 calls: the measurement behind the
default's choice at low budgets (docs/sampling.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import sdescore
from sdescore.solvers.grid import Times
from sdescore.toy import eight_gaussians

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import OFFICIAL_DPM_SOLVER as OFFICIAL  # noqa: E402  (the benchmark next to this one)

EPS = 1e-3
EXPONENTS = (2.0, 2.25, 2.5, 2.75, 3.0, 3.5)


def power_grid(sde, nfe: int, p: float) -> Times:
    """`nfe` steps with boundaries uniform in t^(1/p) from T down to EPS (p = 2: TimeQuadratic)."""
    u = torch.linspace(0, 1, nfe + 1, dtype=torch.float64)
    return Times(((1 - u) * sde.T ** (1 / p) + u * EPS ** (1 / p)) ** p)


def solver_error(pf, draws, refs, solver, steps=None) -> float:
    """Max over the seeds' draws of the mean |x - x_ref| of `solver` (`steps` calls, or as
    many as its explicit grid holds)."""
    return max(
        (pf.sample(x_T=z, method=solver, steps=steps, eps=EPS) - r).abs().mean().item()
        for z, r in zip(draws, refs, strict=True)
    )


def rows(pf, draws, refs, nfes):
    table = {}
    for p in EXPONENTS:
        for rule in ("Auto order rule", "UniPC-3"):
            errs = []
            for nfe in nfes:
                order = 3 if rule == "UniPC-3" or nfe >= 16 else 2
                solver = sdescore.UniPC(order=order, grid=power_grid(pf.sde, nfe, p))
                errs.append(solver_error(pf, draws, refs, solver))
            table[f"p = {p:g}, {rule}" + (" (default)" if p == 2 and rule[0] == "A" else "")] = errs
    return table


def show(title, nfes, table, extra=None):
    print(f"\n# {title}\n")
    print("| grid, orders | " + " | ".join(str(n) for n in nfes) + " |")
    print("|---" * (len(nfes) + 1) + "|")
    for name, errs in {**table, **(extra or {})}.items():
        cells = ("-" if e is None else f"{e:.2e}" for e in errs)
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def mixture_workloads():
    """{name: (pf, draws, refs)} of the image-like mixture under VP and sub-VP (see above)."""
    from sdescore.toy import GaussianMixture

    g = torch.Generator().manual_seed(0)
    data = GaussianMixture(torch.rand(8, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1, 0.05)
    out = {}
    for name, sde in (("VP", sdescore.VPSDE(0.1, 20.0)), ("sub-VP", sdescore.SubVPSDE(0.1, 20.0))):
        pf = sde.probability_flow(data.score_fn(sde))
        draws = [
            sde.prior_sampling(
                (2000, 1, 8, 8), generator=torch.Generator().manual_seed(s), dtype=torch.float64
            )
            for s in (0, 1)
        ]
        ref = sdescore.DPMSolver(order=3, multistep=False, grid="logsnr", steps=600)
        out[name] = (pf, draws, [pf.sample(x_T=z, method=ref, eps=EPS) for z in draws])
    return out


def mixture():
    """The `--mixture` tables (see the module docstring)."""
    nfes = (5, 6, 8, 10, 12, 15, 20, 30)
    for name, (pf, draws, refs) in mixture_workloads().items():
        sde = pf.sde
        table = {}
        for p in (2.0, 2.25):
            for first3 in (16, 15):
                errs = []
                for nfe in nfes:
                    order = 3 if nfe >= first3 else 2
                    solver = sdescore.UniPC(order=order, grid=power_grid(sde, nfe, p))
                    errs.append(solver_error(pf, draws, refs, solver))
                rule = "default order rule" if first3 == 16 else "UniPC-3 from 15 calls"
                table[f"p = {p:g}, {rule}" + (" (default)" if p == 2 and first3 == 16 else "")] = (
                    errs
                )
        show(f"image-like mixture (std 0.05, 1x8x8), {name}: solver error per pixel", nfes, table)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer draws (a smoke run)")
    ap.add_argument("--mixture", action="store_true", help="the third workload (see above)")
    ap.add_argument("--solvers", action="store_true", help="the default against the 2M (above)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.mixture:
        mixture()
        return
    if args.solvers:
        solvers(args.quick)
        return

    nfes = (6, 8, 10, 12, 15, 20, 30, 50)
    pf, draws, refs = toy_workload(args.quick)
    official = {
        "official DPM-Solver file, best configuration (fixed row of peers.py)": [
            OFFICIAL[k] for k in nfes
        ]
    }
    show("eight Gaussians, exact score: solver error", nfes, rows(pf, draws, refs, nfes), official)
    pf, draws, refs = digits_workload(args.quick)
    with torch.no_grad():
        nfes = (5, 6, 8, 10, 15, 20, 30)
        show("digits8 U-Net: solver error per pixel", nfes, rows(pf, draws, refs, nfes))


def toy_workload(quick: bool):
    """(pf, draws, refs) of the toy (see the module docstring)."""
    sde = sdescore.VPSDE(0.1, 20.0)
    pf = sde.probability_flow(eight_gaussians(radius=4.0, std=0.5).score_fn(sde))
    n = 2048 if quick else 16384
    draws = [
        sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(s)) for s in (0, 1, 2)
    ]
    ref = sdescore.DPMSolver(order=3, multistep=False, grid="logsnr", steps=900)
    return pf, draws, [pf.sample(x_T=z, method=ref, eps=EPS) for z in draws]


def digits_workload(quick: bool):
    """(pf, draws, refs) of the digits U-Net (see the module docstring)."""
    from sdescore.pretrained import load

    model = load("digits8").requires_grad_(False)
    pf = model.sde.probability_flow(model)
    n = 50 if quick else 200
    draws = [
        model.sde.prior_sampling((n, 1, 8, 8), generator=torch.Generator().manual_seed(s))
        for s in (0, 1)
    ]
    ref = sdescore.UniPC(order=3, grid="logsnr", steps=200)
    with torch.no_grad():
        return pf, draws, [pf.sample(x_T=z, method=ref, eps=EPS) for z in draws]


# `--solvers`: the default against the 2M at the low budgets, on all four workloads.
SOLVERS = {
    "Auto() (default)": sdescore.Auto(),
    "DPM-Solver++(2M), midpoint (Alg. 2)": sdescore.DPMSolver(order=2, multistep=True),
    "DPM-Solver++(2M), taylor": sdescore.DPMSolver(order=2, multistep=True, solver_type="taylor"),
    "UniPC-2": sdescore.UniPC(order=2),
    "DPM-Solver-3, Lu et al.'s allocation": sdescore.DPMSolver(
        order=3, multistep=False, allocation="order"
    ),
}


def solvers(quick: bool):
    """The `--solvers` tables (see the module docstring)."""
    workloads = {"eight Gaussians": toy_workload(quick), "digits8 U-Net": digits_workload(quick)}
    workloads.update({f"image-like mixture, {k}": w for k, w in mixture_workloads().items()})
    nfes = (5, 6, 7, 8, 10, 12, 15, 20, 30, 50)
    for name, (pf, draws, refs) in workloads.items():
        table = {}
        with torch.no_grad():
            for label, solver in SOLVERS.items():
                table[label] = [solver_error(pf, draws, refs, solver, nfe) for nfe in nfes]
        extra = None
        if name == "eight Gaussians":
            extra = {
                "official DPM-Solver (fixed row of peers.py, not run here)": [
                    OFFICIAL.get(k) for k in nfes
                ]
            }
        show(f"{name}: solver error", nfes, table, extra)


if __name__ == "__main__":
    main()
