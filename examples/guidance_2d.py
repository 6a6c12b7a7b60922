r"""Classifier guidance and classifier-free guidance on eight Gaussians with labels.

Trains (1) a class-conditional score model with label dropout (Ho & Salimans 2022), which also
gives the unconditional score through its null label, and (2) a noise-conditional classifier on
data perturbed by the same VP SDE. Then samples class 0 at several guidance scales with both
methods and scores the samples with the exact posterior of the mixture (class = component):
`accuracy` is the fraction of samples whose most likely component is the target. Accuracy is blind
to samples far off their mode (a sample at twice the mode's distance is still "class 0"), so each
row also gives a distance to the class's own law: `class_log_prob_nats`, the mean exact
log-density of the samples under the target component $N(\mu_0, 0.5^2 I)$ (exact samples score
$-\log(2\pi e\,0.5^2) = -1.45$), and `sliced_w2_to_class_data_units`, the sliced Wasserstein-2
distance to as many exact samples of the class (exact samples score its `reference` value).

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
from _common import add_run_options, launch, quick_mark

import sdescore
from sdescore.metrics import sliced_wasserstein
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


def evaluate(samples, exact, target=0, *, seed=0) -> dict:
    r"""How well `samples` `(N, 2)` (float64) of class `target` match it.

    `accuracy` and `mean_posterior` come from the exact posterior $p(y \mid x)$ of the mixture
    (at $t = 10^{-3}$): they say which component is most likely, not whether the samples lie
    where the component's mass is. `class_log_prob_nats` (mean exact log-density under the
    class's component law) and `sliced_w2_to_class_data_units` (to `N` exact samples of the
    component, drawn with `seed`) do.
    """
    post = exact.log_prob(samples, 1e-3)
    law = mixture_component(exact.data, target)
    g = torch.Generator().manual_seed(seed)
    truth = law.sample(samples.shape[0], generator=g, dtype=samples.dtype)
    sw = sliced_wasserstein(samples, truth, generator=torch.Generator().manual_seed(seed))
    return {
        "accuracy": (post.argmax(1) == target).float().mean().item(),
        "mean_posterior": post[:, target].exp().mean().item(),
        "class_log_prob_nats": law.log_prob(samples).mean().item(),
        "sliced_w2_to_class_data_units": sw.value,
    }


def exact_reference(exact, n: int, target=0, *, seed=0) -> dict:
    """`evaluate` on `n` exact samples of the class (independent of those it compares with):
    what a perfect sampler scores."""
    law = mixture_component(exact.data, target)
    x = law.sample(n, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return evaluate(x, exact, target, seed=seed)


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

    reference = exact_reference(exact, n_samples, seed=args.seed)
    print(f"trained {steps} steps in {train_s:.1f} s; sampled in {sample_s:.1f} s")
    head = f"{'method':<16} {'scale':>6} {'accuracy':>9} {'mean p(y|x)':>12}"
    print(head + f"{'E log p_y':>11}{'SW2 to y':>10}")

    def line(name, s, r):
        print(
            f"{name:<16} {s:>6} {r['accuracy']:>9.3f} {r['mean_posterior']:>12.3f}"
            f"{r['class_log_prob_nats']:>11.3f}{r['sliced_w2_to_class_data_units']:>10.3f}"
        )

    for kind, rows in results.items():
        name = "classifier (g)" if kind == "classifier" else "cfg (w)"
        for s, r in rows.items():
            line(name, s, r)
    line("exact samples", "", reference)
    print(
        "E log p_y: mean exact log-density of the samples under the class's own law (nats); "
        "SW2 to y: sliced Wasserstein-2 to as many exact samples of the class (data units)"
    )

    metrics = {
        "results": results,
        "exact_samples_reference": reference,
        "final_model_loss": sum(model_losses[-50:]) / len(model_losses[-50:]),
        "final_classifier_loss": sum(clf_losses[-50:]) / len(clf_losses[-50:]),
        "wall_seconds": {"train": train_s, "sample": sample_s},
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

        mode = mixture_component(data, 0).mean().tolist()
        fig, axes = plt.subplots(2, 4, figsize=(14, 7.4), sharex=True, sharey=True)
        for row, (kind, label) in enumerate((("classifier", "gamma"), ("classifier_free", "w"))):
            for col, (s, xs) in enumerate(samples[kind].items()):
                ax = axes[row, col]
                ax.scatter(*xs.T.numpy(), s=2, alpha=0.5)
                # where class 0's mass is: its mode and a circle of 2 sd (std 0.5)
                ax.add_patch(plt.Circle(mode, 1.0, fill=False, color="red", ls="--", lw=1))
                ax.plot(*mode, "r+", ms=10, label="class 0: mode, 2 sd")
                if row == 0 and col == 0:
                    ax.legend(loc="lower left", fontsize=8)
                r = results[kind][str(s)]
                title = "classifier" if kind == "classifier" else "classifier-free"
                ax.set_title(
                    f"{title}, {label} = {s:g}\nacc {r['accuracy']:.2f}, "
                    f"E log p_0 {r['class_log_prob_nats']:.2f}, "
                    f"SW2 {r['sliced_w2_to_class_data_units']:.2f}",
                    fontsize=10,
                )
                ax.set_aspect("equal")
                if row == 1:
                    ax.set_xlabel("$x_1$")
                if col == 0:
                    ax.set_ylabel("$x_2$")
        fig.suptitle(
            "guided samples of class 0" + quick_mark(args.quick) + "\nacc: share whose most "
            "likely component is 0; E log p_0: mean log-density under class 0's law (exact "
            f"samples {reference['class_log_prob_nats']:.2f}); SW2: to exact class-0 samples "
            f"(exact {reference['sliced_w2_to_class_data_units']:.2f})"
        )
        fig.tight_layout()
        fig.savefig(out / "samples.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    return metrics


if __name__ == "__main__":
    main()
