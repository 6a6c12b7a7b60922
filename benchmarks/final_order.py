"""Multistep DPM-Solver++ of order 3: lower the final steps' order at every step count, or not?

    python benchmarks/final_order.py        (about two minutes on one core)

Issue 22, item 4. Today `DPMSolver(order=3, multistep=True)` ends in orders 2, 1 (the last two
steps) only below 15 steps (`low_final=15` in `sdescore.solvers.dpm_solver`). Measured here on
the closed-form Gaussian flow: data N(mu, s^2) under VPSDE(0.1, 20) keeps a linear PF-ODE flow
$x_t = \\alpha_t\\mu + \\sqrt{v_t / v_T}\\,(x_T - \\alpha_T\\mu)$, $v_t = \\alpha_t^2 s^2 + \\sigma_t^2$
(tests/solvers/test_sampling_orders.py), float64, 61 start points on [-3, 3], end time 1e-3,
error = max |x - x_exact|. Three rules for the last steps: "today" (orders 2, 1 below 15
steps), "always" (orders 2, 1 at every step count) and "never"; each with the exact and the
damped third-order term, on four grids and three Gaussians.
"""

from __future__ import annotations

import functools

import torch

import sdescore
import sdescore.solvers.dpm_solver as dpm
from sdescore.toy import gaussian

EPS = 1e-3
STEPS = (6, 8, 10, 12, 14, 15, 16, 20, 25, 30, 40, 50)
GRIDS = ("time_quadratic", "logsnr", "time_uniform", "karras")
DATA = ((0.7, 0.4), (0.0, 0.1), (1.5, 1.0))
RULES = {"today": 15, "always": 10**9, "never": 0}  # low_final: lower order when steps < it


def main() -> None:
    torch.set_num_threads(1)
    sde = sdescore.VPSDE(0.1, 20.0)
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)[:, None]
    original = dpm.dpm_solver_multistep
    worse_cases, total = 0, 0
    print("max |x - x_exact| at steps " + " ".join(str(n) for n in STEPS))
    for mu, s in DATA:
        pf = sde.probability_flow(
            gaussian(torch.tensor([mu], dtype=torch.float64), s).score_fn(sde)
        )
        t = torch.tensor([sde.T, EPS], dtype=torch.float64)
        v, a = sde.alpha(t) ** 2 * s**2 + sde.sigma(t) ** 2, sde.alpha(t)
        exact = a[1] * mu + (v[1] / v[0]).sqrt() * (z - a[0] * mu)
        for damped in (False, True):
            for grid in GRIDS:
                errs = {}
                for rule, low_final in RULES.items():
                    dpm.dpm_solver_multistep = functools.partial(original, low_final=low_final)
                    try:
                        solver = sdescore.DPMSolver(
                            order=3, multistep=True, damped=damped, grid=grid
                        )
                        errs[rule] = [
                            (pf.sample(x_T=z, steps=n, method=solver, eps=EPS) - exact)
                            .abs()
                            .max()
                            .item()
                            for n in STEPS
                        ]
                    finally:
                        dpm.dpm_solver_multistep = original
                print(f"N({mu}, {s}^2), damped={damped}, grid={grid}")
                for rule, row in errs.items():
                    print(f"  {rule:<7}" + "".join(f"{e:9.2e}" for e in row))
                ratio = [a / b for a, b in zip(errs["always"], errs["today"], strict=True)]
                worse = [n for n, r in zip(STEPS, ratio, strict=True) if r > 1.02]
                total += 1
                worse_cases += bool(worse)
                print(
                    f"  always/today: {min(ratio):.2f} .. {max(ratio):.2f}; "
                    f"worse (> 2 %) at steps {worse or 'none'}"
                )
    print(f"\n'always' is worse than 'today' at some step count in {worse_cases} of {total} cases")


if __name__ == "__main__":
    main()
