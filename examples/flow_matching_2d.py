"""Train a flow-matching (rectified flow) model on eight Gaussians and sample it with every ODE solver.

    python examples/flow_matching_2d.py            # ~1 min on 2 cores
    python examples/flow_matching_2d.py --quick    # CI-sized (< 30 s)

The model is an MLP predicting the velocity u = eps - x0 (`ScoreModel(..., "velocity")` on
`RectifiedFlowSDE()`), trained with `flow_matching_loss` (plain conditional flow matching, i.e.
DSM with the weighting g^4 / 2). Since a velocity model is a score model, every sampler of the
library applies unchanged: the probability-flow ODE by each ODE method at a fixed budget, and
the likelihood of test points by the exact trace. Eight Gaussians have an exact score, so each
sampler is also run with it, which separates the solver's error from the model's. Prints a
table; writes metrics.json (and samples.png unless --no-plots) into --out.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from _common import quick_mark

import sdescore
from sdescore.metrics import sliced_wasserstein
from sdescore.toy import eight_gaussians

# method -> solver object for ~20-50 score calls (adaptive methods: tolerances)
SOLVERS = {
    "auto": sdescore.Auto(steps=20),
    "unipc": sdescore.UniPC(steps=20),
    "euler": sdescore.TorchDiffEq("euler", steps=50),
    "midpoint": sdescore.TorchDiffEq("midpoint", steps=25),
    "heun2": sdescore.TorchDiffEq("heun2", steps=25),
    "rk4": sdescore.TorchDiffEq("rk4", steps=12),
    "dopri5": sdescore.TorchDiffEq("dopri5", rtol=1e-4, atol=1e-4),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=None, help="training steps (default 3000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/flow_matching_2d", help="output directory")
    p.add_argument("--quick", action="store_true", help="CI-sized run")
    p.add_argument("--no-plots", action="store_true", help="write metrics.json only")
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 300 if args.quick else 3000
    args.samples, args.test_points = (512, 64) if args.quick else (4096, 512)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    data = eight_gaussians()
    train_data = data.sample(50_000, generator=gen, dtype=torch.float32)
    test_data = data.sample(args.test_points, generator=gen, dtype=torch.float32)

    sde = sdescore.RectifiedFlowSDE()
    model = sdescore.ScoreModel(sdescore.MLPScoreNet(2), sde, "velocity")
    result = sdescore.train(
        model,
        train_data,
        steps=args.steps,
        batch_size=512,
        progress=False,
        lr=2e-3,
        warmup_steps=100,
        loss=sdescore.flow_matching_loss,
        ema_decay=0.99 if args.quick else 0.999,
        seed=args.seed,
    )
    ema = result.ema_model.eval()
    print(f"{sde!r}, velocity MLP, {args.steps} steps of flow matching in {result.seconds:.1f} s")

    fresh = data.sample(args.samples, generator=gen, dtype=torch.float32)
    reference = data.sample(args.samples, generator=gen, dtype=torch.float32)

    def sw2(x):
        return sliced_wasserstein(x, fresh, generator=torch.Generator().manual_seed(0)).value

    floor = sw2(reference)
    exact = data.score_fn(sde)
    rows = {}
    print(
        f"\nSW2 to fresh data (floor {floor:.3f}); true mean log p(x) of data: {data.log_prob(fresh.double()).mean().item():.3f}"
    )
    print("| method | calls | SW2 (model) | true log p of model samples | SW2 (exact score) |")
    print("|---|---|---|---|---|")
    with torch.no_grad():
        for method, solver in SOLVERS.items():
            cells = {}
            for name, score in (("model", ema), ("exact", exact)):
                pf = sde.probability_flow(score)
                r = pf.sample(
                    (args.samples, 2),
                    method=solver,
                    generator=torch.Generator().manual_seed(args.seed + 1),
                    return_info=True,
                )
                x = r.samples.float()
                cells[name] = {
                    "nfe": r.nfe,
                    "sw2": sw2(x),
                    "log_p": data.log_prob(x.double()).mean().item(),
                }
            rows[method] = cells
            m, e = cells["model"], cells["exact"]
            print(f"| {method} | {m['nfe']} | {m['sw2']:.3f} | {m['log_p']:.3f} | {e['sw2']:.3f} |")

    nll = -sdescore.likelihood(ema, test_data, estimator="exact").log_prob.mean().item()
    true_nll = -data.log_prob(test_data.double()).mean().item()
    print(f"\ntest NLL (exact trace): model {nll:.3f} nats, true density {true_nll:.3f} nats")
    metrics = {
        "train_seconds": result.seconds,
        "final_loss": float(result.losses[-1]),
        "sw2_floor": floor,
        "samplers": rows,
        "test_nll": nll,
        "true_nll": true_nll,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if not args.no_plots:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(8, 4))
        with torch.no_grad():
            x = sde.probability_flow(ema).sample((args.samples, 2), steps=20, generator=gen)
        for ax, pts, title in ((axes[0], fresh, "data"), (axes[1], x, "flow matching, 20 calls")):
            ax.scatter(pts[:, 0], pts[:, 1], s=1)
            ax.set(title=title, xlim=(-6, 6), ylim=(-6, 6), aspect="equal")
            ax.set(xlabel="$x_1$", ylabel="$x_2$")
        fig.suptitle(f"{args.samples} points per panel" + quick_mark(args.quick))
        fig.savefig(out / "samples.png", dpi=100, bbox_inches="tight")
    assert all(math.isfinite(v["model"]["sw2"]) for v in rows.values())
    return metrics


if __name__ == "__main__":
    main()
