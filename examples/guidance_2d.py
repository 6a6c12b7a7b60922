"""Classifier guidance and classifier-free guidance on eight Gaussians with labels.

Trains (1) a class-conditional score model with label dropout (Ho & Salimans 2022), which also
gives the unconditional score through its null label, and (2) a noise-conditional classifier on
data perturbed by the same VP SDE. Then samples class 0 at several guidance scales with both
methods and scores the samples with the exact posterior of the mixture (class = component):
`accuracy` is the fraction of samples whose most likely component is the target.

    python examples/guidance_2d.py            # ~1 min on a laptop CPU
    python examples/guidance_2d.py --quick    # CI-sized

Writes `samples.png` (rows: classifier guidance, classifier-free; columns: scales) and
`metrics.json` into `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import add_run_options, launch

import sdescore
from sdescore.toy import MixtureClassifier, eight_gaussians, mixture_component

CLASSIFIER_SCALES = (0.0, 1.0, 3.0, 10.0)  # gamma: s + gamma * grad log p_t(y | x)
CFG_WEIGHTS = (-1.0, 0.0, 1.0, 3.0)  # w: (1 + w) s(x, t, y) - w s(x, t, null)


def labelled_data(data, n: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` points of each component with their component index as the label."""
    xs = [mixture_component(data, k).sample(n, generator=generator) for k in range(8)]
    return torch.cat(xs), torch.arange(8).repeat_interleave(n)


def train_conditional(model, x, y, *, steps, batch_size, seed):
    """Classifier-free training: `sdescore.train` with labels and the label-dropout loss."""
    result = sdescore.train(
        model, x, labels=y, steps=steps, batch_size=batch_size, lr=2e-3, ema_decay=None,
        loss=sdescore.label_dropout_loss, loss_kwargs={"p_uncond": 0.2}, seed=seed,
        progress=False,
    )  # fmt: skip
    model.eval()
    return [float(v) for v in result.losses]


def evaluate(samples, exact, target=0) -> dict:
    post = exact.log_prob(samples, 1e-3)
    return {
        "accuracy": (post.argmax(1) == target).float().mean().item(),
        "mean_posterior": post[:, target].exp().mean().item(),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=None, help="training steps (default 3000)")
    add_run_options(p, out="outputs/guidance_2d", device=False, threads=1)
    args = p.parse_args(argv)
    with launch("cpu") as job:  # one process, or one rank of torchrun
        return run_example(args, job)


def run_example(args, job) -> dict:
    torch.set_num_threads(args.threads)
    # Network initialisation: reproducible, and the same classifier on every rank of torchrun
    # (it trains outside DDP, identically on each).
    torch.manual_seed(args.seed)
    out = Path(args.out)
    if job.is_main:  # only rank 0 writes
        out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or (300 if args.quick else 3000)
    n_samples, sample_steps = (400, 60) if args.quick else (2000, 250)

    sde = sdescore.VPSDE()
    data = eight_gaussians()
    g = torch.Generator().manual_seed(args.seed)
    x, y = labelled_data(data, 1000, g)

    t0 = time.perf_counter()
    net = sdescore.ConditionalMLPScoreNet(2, 8, hidden=128, depth=3)
    model = sdescore.ConditionalScoreModel(net, sde, "eps", num_classes=8)
    model_losses = train_conditional(model, x, y, steps=steps, batch_size=256, seed=args.seed)
    clf = sdescore.MLPScoreNet(2, hidden=64, depth=2, out_dim=8)
    clf_losses = sdescore.train_classifier(
        clf, x, y, sde=sde, steps=steps, batch_size=256, lr=2e-3, seed=args.seed
    )
    train_s = time.perf_counter() - t0

    exact = MixtureClassifier(data, sde)
    unconditional = model.conditioned(model.null_label)
    results: dict = {"classifier": {}, "classifier_free": {}}
    samples: dict = {"classifier": {}, "classifier_free": {}}
    t0 = time.perf_counter()
    for kind, scales in (("classifier", CLASSIFIER_SCALES), ("classifier_free", CFG_WEIGHTS)):
        for s in scales:
            if kind == "classifier":
                score = sdescore.ClassifierGuidance(unconditional, clf, 0, scale=s)
            else:
                score = sdescore.ClassifierFreeGuidance(model, 0, w=s)
            gen = torch.Generator().manual_seed(args.seed + 1)
            with torch.no_grad():
                xs = job.sample(  # each rank its share under torchrun
                    sde.reverse(score), (n_samples, 2), method="reverse_diffusion",
                    steps=sample_steps, generator=gen,
                )  # fmt: skip
            samples[kind][s] = xs
            results[kind][str(s)] = evaluate(xs.double(), exact)
    sample_s = time.perf_counter() - t0

    print(f"trained {steps} steps in {train_s:.1f} s; sampled in {sample_s:.1f} s")
    print(f"{'method':<16} {'scale':>6} {'accuracy':>9} {'mean p(y|x)':>12}")
    for kind, rows in results.items():
        name = "classifier (g)" if kind == "classifier" else "cfg (w)"
        for s, r in rows.items():
            print(f"{name:<16} {s:>6} {r['accuracy']:>9.3f} {r['mean_posterior']:>12.3f}")

    metrics = {
        "results": results,
        "final_model_loss": sum(model_losses[-50:]) / len(model_losses[-50:]),
        "final_classifier_loss": sum(clf_losses[-50:]) / len(clf_losses[-50:]),
        "seconds": {"train": train_s, "sample": sample_s},
        "config": {"steps": steps, "samples": n_samples, "sample_steps": sample_steps},
        "seed": args.seed,
        "world_size": job.world_size,
        "version": sdescore.__version__,
    }
    if job.is_main:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if job.is_main and not args.no_plots:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 4, figsize=(14, 7), sharex=True, sharey=True)
        for row, (kind, label) in enumerate((("classifier", "gamma"), ("classifier_free", "w"))):
            for col, (s, xs) in enumerate(samples[kind].items()):
                ax = axes[row, col]
                ax.scatter(*xs.T.numpy(), s=2, alpha=0.5)
                acc = results[kind][str(s)]["accuracy"]
                title = "classifier" if kind == "classifier" else "classifier-free"
                ax.set_title(f"{title}, {label} = {s:g} (acc {acc:.2f})")
                ax.set_aspect("equal")
                if row == 1:
                    ax.set_xlabel("$x_1$")
                if col == 0:
                    ax.set_ylabel("$x_2$")
        fig.suptitle(
            "guided samples of one class (acc: share whose most likely mixture component is it)"
        )
        fig.tight_layout()
        fig.savefig(out / "samples.png", dpi=100)
    return metrics


if __name__ == "__main__":
    main()
