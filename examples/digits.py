"""A score model on real images: scikit-learn's 8x8 handwritten digits (17 grey levels).

    python examples/digits.py               # UNet, VP SDE, ~15 min on 2 CPU cores
    python examples/digits.py --quick       # CI-sized (< 90 s)
    python examples/digits.py --pretrained  # no training: the shipped models (~100 s, 1 core)

Trains `ScoreModel(UNet, VPSDE, "eps")` with `sdescore.train` (every batch dequantized afresh,
EMA, checkpoints in --out), or with `--pretrained` loads the shipped `sdescore.pretrained`
models instead (and guides the class-conditional one, `"digits8-cond"`, to each digit), and
reports, on the fixed test split (450 images; the first 64 with `--pretrained`):

* bits/dim through the PF ODE with uniform dequantization, on one dequantized draw of the test
  set shared with the baselines, and importance-weighted over S draws (Burda et al. 2016);
* the ELBO-based bits/dim (a bound: larger than the PF-ODE number);
* the baselines a user tries first, on the same dequantized test set: a full-covariance
  Gaussian and scikit-learn's GaussianMixture with the component count chosen on a validation
  split of the training images;
* with `sdescore.metrics` present, FID-digits of the samples against its real-data floor.

Bits/dim of discrete data: $-\\log_2 P(k)/d \\le (-\\log p(y) - d\\log w)/(d\\ln 2)$ for
$y = a + w(k + u)$, bin width $w = 2/17$ on [-1, 1] (see `sdescore.dequantization`).
Writes samples.png (samples beside real test digits), trajectories.png, nearest_train.png,
loss.png and metrics.json into --out (default outputs/digits/).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from _common import add_run_options, launch, quick_mark

import sdescore
from sdescore.dequantization import dequantize

BINS, RANGE, D = 17, (-1.0, 1.0), 64
LOG_W = math.log((RANGE[1] - RANGE[0]) / BINS)  # log bin width
TEST_SPLIT = 450  # the fixed stratified test split


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=None, help="training steps (default 6000)")
    add_run_options(p, out="outputs/digits", quick="CI-sized run (< 90 s on 2 cores)")
    p.add_argument(
        "--dequantization-samples", type=int, default=None, help="S for the IW bound (default 4)"
    )
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="skip training: sample, inpaint, guide and score the shipped models (~100 s)",
    )
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda requested but torch.cuda.is_available() is False")
    q = args.quick
    args.steps = args.steps or (150 if q else 6000)
    args.S = args.dequantization_samples or (2 if q else 4)
    args.batch, args.n_test, args.n_samples, args.elbo_samples = (
        (64, 48, 64, 8)
        if q
        else (128, 64, 64, 8)
        if args.pretrained
        else (128, TEST_SPLIT, 256, 64)
    )
    args.channels, args.attention = (16, False) if q else (32, True)
    args.max_seconds = 40 if q else 600  # a budget, so that a slow machine still finishes
    return args


def unconverged(args) -> bool:
    """Whether the figures show a CI-sized model (`--quick` without `--pretrained`: the shipped
    model is the converged one, only the evaluation is smaller)."""
    return args.quick and not args.pretrained


def load_levels(seed: int):
    """Integer levels 0..16 `(N, 1, 8, 8)` (float32) of the fixed train/validation/test split."""
    try:
        from sdescore.toy import digits_data  # the split the FID-digits network also uses

        x_train, x_test = digits_data("train")[0], digits_data("test")[0]
        x_train, x_test = (x_train + 1.0) * 8.0, (x_test + 1.0) * 8.0  # p/8 - 1 -> p
    except ImportError:  # pragma: no cover - the same split, by hand
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        data = load_digits()
        pix = torch.as_tensor(data.data, dtype=torch.float32).reshape(-1, 1, 8, 8)
        tr, te = train_test_split(
            np.arange(len(pix)), test_size=TEST_SPLIT, stratify=data.target, random_state=0
        )
        x_train, x_test = pix[tr], pix[te]
    x_train, x_test = x_train.round(), x_test.round()
    perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    n_val = len(x_train) // 5  # validation split for the baselines' model selection
    return x_train, x_train[perm[n_val:]], x_train[perm[:n_val]], x_test


def to_bpd(log_prob: torch.Tensor) -> torch.Tensor:
    """Per-image bits/dim of the bins from the density of the dequantized points (nats)."""
    return -(log_prob.double() + D * LOG_W) / (D * math.log(2))


def mean_se(v: torch.Tensor) -> tuple[float, float]:
    v = v.double()
    return v.mean().item(), (v.std() / len(v) ** 0.5).item()


def baselines(train_y: torch.Tensor, val_y: torch.Tensor, test_y: torch.Tensor, quick: bool):
    """Per-image log-densities (nats) of the test points under the two baselines."""
    from sklearn.mixture import GaussianMixture

    flat = [y.reshape(len(y), -1).double() for y in (train_y, val_y, test_y)]
    mean = flat[0].mean(0)
    cov = torch.cov(flat[0].T) + 1e-6 * torch.eye(D, dtype=torch.float64)
    gauss = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    out = {"gaussian": gauss.log_prob(flat[2])}
    best, scores = None, {}
    for k in (1, 2, 4) if quick else (1, 2, 4, 8, 16, 32):
        gmm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=0)
        gmm.fit(flat[0].numpy())
        scores[k] = float(gmm.score(flat[1].numpy()))  # mean validation log-density
        if best is None or scores[k] > scores[best[0]]:
            best = (k, gmm)
    out["gmm"] = torch.as_tensor(best[1].score_samples(flat[2].numpy()))
    out["gmm_model"] = best[1]  # for the sample-quality table (its samples)
    return out, best[0], scores


def main(argv=None) -> dict:
    args = parse_args(argv)
    with launch(args.device) as job:  # one process, or one rank of torchrun
        return run_example(args, job)


def run_example(args, job) -> dict:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if job.is_main:  # only rank 0 writes (the checkpoints too)
        out.mkdir(parents=True, exist_ok=True)
    dev = job.device
    torch.manual_seed(args.seed)  # network initialisation
    gen = torch.Generator().manual_seed(args.seed)
    all_train, fit_train, val, test = load_levels(args.seed)
    test = test[: args.n_test]
    print(f"digits: {len(all_train)} train ({len(val)} of them for validation), {len(test)} test")

    if args.pretrained:  # the shipped model: nothing to train
        ema = sdescore.pretrained.load("digits8", map_location=dev)
        sde, result = ema.sde, None
        stages = {"train": {"nfe": 0, "seconds": 0.0, "pretrained": "digits8"}}
        print("loaded sdescore.pretrained 'digits8' (docs/pretrained.md has its card)")
    else:
        ema, sde, result = train_model(args, all_train, gen, out, dev)
        stages = {"train": {"nfe": result.steps, "seconds": result.seconds}}
        print(f"trained {result.steps} steps in {result.seconds:.0f} s ({result.stop_reason})")

    # One dequantized draw of the test set, shared by the model and the baselines.
    # float32 throughout: the UNet in float64 was over 10x slower on a CPU, for differences far
    # below the standard errors; the whole test split is one ODE solve (one batch).
    test_y = dequantize(test, BINS, RANGE, generator=gen)[0]
    t0 = time.perf_counter()
    lik = job.sharded(sdescore.likelihood, ema, test_y.to(dev), generator=gen)
    stages["pf_ode_likelihood"] = {"nfe": lik.nfe, "seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    iw = job.sharded(
        sdescore.likelihood,
        ema,
        test.to(dev),
        dequantization=sdescore.Dequantization(BINS, data_range=RANGE, samples=args.S),
        # >= 2 Hutchinson probes per draw let the IW bound remove their noise's bias
        estimator=sdescore.Hutchinson(probes=2),
        generator=gen,
    )
    stages["pf_ode_likelihood_iw"] = {"nfe": iw.nfe, "seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    bound = job.sharded(
        sdescore.elbo, ema, test_y.to(dev), samples=args.elbo_samples, generator=gen
    )
    stages["elbo"] = {"nfe": args.elbo_samples, "seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    y_train = dequantize(fit_train, BINS, RANGE, generator=gen)[0]
    y_val = dequantize(val, BINS, RANGE, generator=gen)[0]
    base, k_best, gmm_scores = baselines(y_train, y_val, test_y, args.quick)
    stages["baselines"] = {"nfe": 0, "seconds": time.perf_counter() - t0}

    bpd = {
        "score_model_pf_ode": to_bpd(lik.log_prob.cpu()),
        "score_model_elbo": to_bpd(-bound.nll_bound.cpu()),
        "gaussian": to_bpd(base["gaussian"]),
        f"gmm_{k_best}": to_bpd(base["gmm"]),
    }
    table = {name: mean_se(v) for name, v in bpd.items()}
    # the IW number uses its own S draws; its bits_per_dim already includes the bin width
    table[f"score_model_pf_ode_iw_S{args.S}"] = mean_se(iw.bits_per_dim.cpu())
    best_base = min(("gaussian", f"gmm_{k_best}"), key=lambda n: table[n][0])
    diff = mean_se(bpd["score_model_pf_ode"] - bpd[best_base])  # paired: same images, same draw

    with torch.no_grad():
        t0 = time.perf_counter()
        g = torch.Generator(dev).manual_seed(args.seed + 1)
        res = job.sample(
            sde.probability_flow(ema),
            (args.n_samples, 1, 8, 8),
            method="auto",
            steps=20,
            generator=g,
            return_info="trajectory",
            device=dev,
        )
        stages["sampling_pf_ode"] = {"nfe": res.nfe, "seconds": time.perf_counter() - t0}
    samples = res.samples.cpu().clamp(*RANGE)
    # Nearest training image (L2 in pixel space) of each sample and of each test image.
    train_x = (all_train / 8.0 - 1.0).reshape(len(all_train), -1)
    as_pix = ((samples + 1) * BINS / 2).floor().clamp(0, BINS - 1) / 8.0 - 1.0  # levels -> p/8-1
    d_s, idx_s = torch.cdist(as_pix.reshape(len(as_pix), -1), train_x).min(1)
    d_t, _ = torch.cdist((test / 8.0 - 1.0).reshape(len(test), -1), train_x).min(1)

    report = {
        "bits_per_dim": {k: {"mean": m, "se": s} for k, (m, s) in table.items()},
        "test_nll": table["score_model_pf_ode"][0],
        "test_nll_se": table["score_model_pf_ode"][1],
        "test_nll_units": "bits/dim",
        "best_baseline": best_base,
        "improvement_over_best_baseline": {"mean": -diff[0], "se": diff[1]},
        "gmm_validation_log_density": {str(k): v for k, v in gmm_scores.items()},
        "nearest_train_distance": {
            "samples_median": d_s.median().item(),
            "test_median": d_t.median().item(),
            "samples_min": d_s.min().item(),
        },
        "train_final_loss": None if result is None else float(result.losses[-100:].mean()),
        "stages": stages,
        "config": {k: v for k, v in vars(args).items()},
        "version": sdescore.__version__,
        "seed": args.seed,
        "world_size": job.world_size,
    }
    report.update(sample_metrics(samples, as_pix, test, all_train))
    report["inpainting"] = inpainting(ema, sde, test, args, dev, out if job.is_main else None)
    if args.pretrained:
        report["guidance"] = guidance(args, dev, out if job.is_main else None)
    quality = sample_quality_table(ema, sde, base["gmm_model"], test, all_train, args, job)
    if quality:
        report["sample_quality"] = quality

    split = f"all {TEST_SPLIT}" if len(test) == TEST_SPLIT else f"first {len(test)} of {TEST_SPLIT}"
    print(f"\n{'test bits/dim (' + split + ' test images)':<38}{'mean':>8}{'± se':>8}")
    for name, (m, s) in table.items():
        print(f"{name:<38}{m:>8.3f}{s:>8.3f}")
    print(
        f"score model (PF ODE) beats {best_base} by {-diff[0]:.3f} ± {diff[1]:.3f} bits/dim "
        f"(paired over {len(test)} test images)"
    )
    nt = report["nearest_train_distance"]
    print(
        f"nearest-train L2 distance, median: samples {nt['samples_median']:.2f}, "
        f"test images {nt['test_median']:.2f} (samples are not copies when these are alike)"
    )
    if "fid_digits" in report:
        f = report["fid_digits"]
        print(
            f"FID-digits of {args.n_samples} PF-ODE samples {f['value']:.2f} (floor {f['floor']:.2f})"
        )
    if job.is_main:
        (out / "metrics.json").write_text(json.dumps(report, indent=2))
    written = ["metrics.json"]
    if job.is_main and not args.no_plots:
        written += figures(
            out, samples, res, test, all_train, idx_s, d_s, d_t, result, table, unconverged(args)
        )
        written += ["inpainting.png"] * ("class_agreement" in report["inpainting"])
        written += ["guidance.png"] * ("guidance" in report)
    print(f"wrote to {out}: " + ", ".join(written))
    return report


def train_model(args, all_train, gen, out, dev):
    """The example's recipe: `(EMA model, sde, TrainResult)`."""
    sde = sdescore.VPSDE(0.1, 20.0)
    net = sdescore.UNet(1, channels=args.channels, attention=args.attention)
    # Gaussian baseline fitted on dequantized data (the border pixels' levels are constant).
    y_fit = dequantize(all_train, BINS, RANGE, generator=gen)[0]
    model = sdescore.ScoreModel(net, sde, "eps").fit_baseline(y_fit).to(dev)
    result = sdescore.train(
        model,
        all_train.to(dev),
        dequantize=BINS,
        data_range=RANGE,
        steps=args.steps,
        max_seconds=args.max_seconds,
        batch_size=args.batch,
        lr=1e-3,
        warmup_steps=100,
        grad_clip=1.0,
        ema_decay=0.99 if args.quick else 0.999,
        seed=args.seed,
        checkpoint_path=out / "checkpoint.pt",
        checkpoint_every=1000,
        progress=True,
    )
    return result.ema_model.eval(), sde, result


def guidance(args, dev, out, w: float = 2.0, per_class: int = 8) -> dict:
    """Classifier-free guidance of the shipped class-conditional model to each digit 0-9
    (Ho & Salimans 2022): how often the digits classifier gives a guided sample its requested
    class, at w = 0 (conditional, unguided) and at `w`; writes guidance.png unless `out` is None."""
    cond = sdescore.pretrained.load("digits8-cond", map_location=dev)
    labels = torch.arange(10, device=dev).repeat_interleave(per_class)
    report = {"w": w, "samples_per_class": per_class}
    grids = {}
    for weight in (0.0, w):
        g = torch.Generator(dev).manual_seed(args.seed + 5)
        guided = sdescore.ClassifierFreeGuidance(cond, labels, w=weight)
        with torch.no_grad():
            x = cond.sde.probability_flow(guided).sample(
                (len(labels), 1, 8, 8), steps=20, generator=g, device=dev
            )
        grids[weight] = x.cpu()
        try:
            from sdescore.metrics import digits_feature_net
        except ImportError:
            continue
        with torch.no_grad():
            hit = digits_feature_net().logits(to_pixels(x.cpu())).argmax(1) == labels.cpu()
        report[f"class_accuracy_w{weight:g}"] = hit.float().mean().item()
    if "class_accuracy_w0" in report:
        print(
            f"classifier-free guidance ('digits8-cond', PF ODE, 20 calls): the classifier gives "
            f"{report['class_accuracy_w0']:.0%} of the samples their requested digit at w = 0, "
            f"{report[f'class_accuracy_w{w:g}']:.0%} at w = {w:g}"
        )
    if out is not None and not args.no_plots:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(8, 5), layout="constrained")
        for ax, (weight, x) in zip(axes, grids.items(), strict=True):
            grid = sdescore.toy.image_grid(x.clamp(*RANGE), nrow=per_class, pad_value=-1.0)
            ax.imshow(grid[0], cmap="gray_r", vmin=-1, vmax=1)
            ax.set_title(f"w = {weight:g} (one row per digit 0-9)", fontsize=9)
            ax.set_axis_off()
        fig.suptitle("digits8-cond, classifier-free guidance, PF ODE 20 calls", fontsize=10)
        fig.savefig(out / "guidance.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    return report


def inpainting(ema, sde, test, args, dev, out) -> dict:
    """Fill in the bottom half of test digits from the top half (Song et al. 2021, App. I).

    Reports how often the digits classifier gives the inpainted image the original's class, and
    the same for unconditional samples (chance level); writes inpainting.png (masked input,
    inpainted, original) unless `out` is None.
    """
    n = 8 if args.quick else 64
    levels = test[:n]
    observed = -1.0 + (2 * levels + 1) / BINS  # bin centres on RANGE
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, :4] = True  # the top four rows are known
    g = torch.Generator(dev).manual_seed(args.seed + 3)
    steps = 50 if args.quick else 200
    with torch.no_grad():
        fill = sde.reverse(ema).sample(
            x_T=None, shape=(n, 1, 8, 8), steps=steps, generator=g, device=dev,
            method=sdescore.Inpainting(observed.to(dev), mask.to(dev), solver="pc"),
        ).cpu()  # fmt: skip
        free = (
            sde.reverse(ema)
            .sample((n, 1, 8, 8), method="pc", steps=steps, generator=g, device=dev)
            .cpu()
        )
    known_err = (fill - observed)[:, mask].abs().max().item()
    report = {"images": n, "known_half_max_abs_change": known_err}
    try:
        from sdescore.metrics import digits_feature_net
    except ImportError:
        return report
    net = digits_feature_net()
    with torch.no_grad():
        label = net.logits(levels / 8.0 - 1.0).argmax(1)
        agree = (net.logits(to_pixels(fill)).argmax(1) == label).float().mean().item()
        chance = (net.logits(to_pixels(free)).argmax(1) == label).float().mean().item()
    report.update({"class_agreement": agree, "class_agreement_unconditional": chance})
    print(
        f"inpainting the bottom half of {n} test digits (PC, {steps} steps): the classifier gives "
        f"the original's class to {agree:.0%} of them ({chance:.0%} for unconditional samples); "
        f"known half changed by at most {known_err:.1e}"
    )
    if out is not None and not args.no_plots:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        k = min(n, 8)
        shown = observed[:k].clone()
        shown[:, ~mask] = 0.0  # unknown pixels mid-grey
        rows = [("masked input", shown), ("inpainted", fill[:k]), ("original", observed[:k])]
        # constrained layout keeps the two-line title clear of the first row's title
        fig, axes = plt.subplots(3, 1, figsize=(k * 0.8, 3.6), layout="constrained")
        for ax, (title, imgs) in zip(axes, rows, strict=True):
            ax.imshow(sdescore.toy.image_grid(imgs, nrow=k, pad_value=-1.0)[0], cmap="gray_r",
                      vmin=-1, vmax=1)  # fmt: skip
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
        mark = quick_mark(unconverged(args)).replace(" [", "\n[")
        fig.suptitle("inpainting: the top half is known" + mark, fontsize=9)
        fig.savefig(out / "inpainting.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
    return report


def to_pixels(samples: torch.Tensor) -> torch.Tensor:
    """Continuous samples on [-1, 1] -> their levels k (`sdescore.quantize`) -> k / 8 - 1."""
    return sdescore.quantize(samples.float(), BINS, RANGE, out_of_range="clamp").float() / 8.0 - 1.0


def sample_quality_table(ema, sde, gmm, test, train, args, job) -> list[dict]:
    """FID-digits and the Inception-style score of real digits, the model's samples (PF ODE at
    10/20/50 calls, reverse SDE with PC; each rank of torchrun draws its share) and the
    Gaussian-mixture baseline's samples."""
    dev = job.device
    try:
        from sdescore.metrics import fid_digits, inception_score_digits

        fid_digits(test[:4] / 8.0 - 1.0, test[4:8] / 8.0 - 1.0)  # torchmetrics present?
    except ImportError as err:
        print(f"sample-quality table skipped: {err}")
        return []
    n = args.n_samples
    real = test / 8.0 - 1.0
    ref = floor_reference(train, n)
    candidates = {"real train digits (floor)": (ref, 0)}
    g = torch.Generator(dev).manual_seed(args.seed + 2)
    with torch.no_grad():
        for calls in (10, 20, 50):
            res = job.sample(
                sde.probability_flow(ema), (n, 1, 8, 8), method="auto", steps=calls,
                generator=g, return_info=True, device=dev,
            )  # fmt: skip
            candidates[f"PF ODE, auto, {calls} calls"] = (
                to_pixels(res.samples.cpu()),
                res.nfe,
            )
        pc_steps = 50 if args.quick else 100
        res = job.sample(
            sde.reverse(ema), (n, 1, 8, 8), method="pc", steps=pc_steps, generator=g,
            return_info=True, device=dev,
        )  # fmt: skip
        candidates[f"reverse SDE, pc, {pc_steps} steps"] = (to_pixels(res.samples.cpu()), res.nfe)
    y, _ = gmm.sample(n)
    gmm_x = torch.as_tensor(y, dtype=torch.float32).reshape(n, 1, 8, 8)
    candidates[f"Gaussian mixture ({gmm.n_components} comp.)"] = (to_pixels(gmm_x), 0)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for name, (x, nfe) in candidates.items():
        fid = fid_digits(x, real)
        score = inception_score_digits(x, splits=5, generator=gen)
        rows.append({"samples": name, "nfe": nfe, "fid_digits": fid.value, "is": score.value,
                     "is_se": score.stderr})  # fmt: skip
    print(f"\n{'samples (' + str(n) + ' each, vs ' + str(len(real)) + ' test digits)':<44}"
          f"{'NFE':>6}{'FID-digits':>12}{'IS':>8}")  # fmt: skip
    for r in rows:
        print(f"{r['samples']:<44}{r['nfe']:>6}{r['fid_digits']:>12.2f}{r['is']:>8.2f}")
    return rows


def floor_reference(train: torch.Tensor, n: int) -> torch.Tensor:
    """The n real training digits (as pixels in [-1, 1]) that every FID floor here uses, so the
    summary line and the sample-quality table print the same floor."""
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]
    return (train / 8.0 - 1.0)[pick]


def sample_metrics(samples, as_pix, test, train) -> dict:
    """FID-digits against its floor, when `sdescore.metrics` (and torchmetrics) are available."""
    try:
        from sdescore.metrics import fid_digits
    except ImportError:
        return {}
    real = test / 8.0 - 1.0
    ref = floor_reference(train, len(samples))
    try:
        m = fid_digits(as_pix, real, reference=ref)
    except ImportError as err:  # torchmetrics (the `metrics` extra) missing
        print(f"FID-digits skipped: {err}")
        return {}
    return {"fid_digits": {"value": m.value, "floor": m.floor, "n": m.n}}


def figures(out, samples, res, test, train, idx_s, d_s, d_t, result, table, quick) -> list[str]:
    """Write the four summary figures; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mark = quick_mark(quick)

    def grid(imgs, rows, cols):
        # a one-pixel white border around each digit keeps neighbours apart
        imgs = torch.nn.functional.pad(imgs[: rows * cols, 0], (1, 1, 1, 1), value=-1.0)
        imgs = imgs.reshape(rows, cols, 10, 10).permute(0, 2, 1, 3)
        return imgs.reshape(rows * 10, cols * 10)

    real = test / 8.0 - 1.0
    n = min(64, len(samples), len(real))
    cols = 8
    rows = n // cols
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.8))
    for ax, (title, imgs) in zip(
        axes,
        [
            (f"PF-ODE samples (auto, {res.nfe} score calls)", samples),
            ("real test digits", real),
        ],
        strict=True,
    ):
        im = ax.imshow(grid(imgs, rows, cols), cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.colorbar(im, ax=axes, label="pixel value (-1 white, 1 black)", shrink=0.8)
    if mark:
        fig.suptitle(mark.strip(), fontsize=10)
    fig.savefig(out / "samples.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    traj, times = res.trajectory.cpu(), res.times.cpu()
    keep = torch.cat([torch.tensor([True]), times[1:] != times[:-1]])  # drop repeated times
    traj, times = traj[keep], times[keep]
    picks = torch.linspace(0, len(traj) - 1, 11).round().long()
    fig, axes = plt.subplots(4, len(picks), figsize=(1.2 * len(picks), 5.2))
    for j, s in enumerate(picks.tolist()):
        for i in range(4):
            axes[i, j].imshow(traj[s, i, 0], cmap="gray_r", vmin=-1.5, vmax=1.5)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[0, j].set_title(f"t={times[s].item():.2f}", fontsize=8)
    fig.suptitle(
        "PF-ODE trajectories: prior (t = T) to data (t = ε), 4 samples" + mark.replace(" [", "\n["),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out / "trajectories.png", dpi=100)
    plt.close(fig)

    train_img = train / 8.0 - 1.0
    k = min(8, len(samples))
    fig = plt.figure(figsize=(11, 4.2))
    for j in range(k):
        for i, (img, label) in enumerate(
            [(samples[j, 0], "sample"), (train_img[idx_s[j], 0], "nearest train")]
        ):
            ax = fig.add_subplot(2, k + 4, i * (k + 4) + j + 1)
            ax.imshow(img, cmap="gray_r", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
        fig.axes[-2].set_title(f"d={d_s[j]:.1f}", fontsize=7)
    ax = fig.add_axes([0.69, 0.15, 0.29, 0.7])
    bins = np.linspace(0, max(d_s.max(), d_t.max()).item() * 1.05, 25)
    ax.hist(d_t.numpy(), bins=bins, alpha=0.6, density=True, label="test image")
    ax.hist(d_s.numpy(), bins=bins, alpha=0.6, density=True, label="sample")
    ax.set_xlabel("L2 distance to nearest training image")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title("copies would sit near 0; test images show the spread to expect", fontsize=8)
    if mark:
        fig.suptitle(mark.strip(), fontsize=10)
    fig.savefig(out / "nearest_train.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    if result is None:  # --pretrained: no training curve
        return ["samples.png", "trajectories.png", "nearest_train.png"]
    fig, ax = plt.subplots(figsize=(6, 4))
    losses = np.asarray(result.losses)
    ax.plot(losses, lw=0.5, alpha=0.4, label="loss per step")
    w = max(1, len(losses) // 50)
    ax.plot(np.convolve(losses, np.ones(w) / w, mode="valid"), lw=1.5, label=f"mean of {w}")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("denoising loss (eps)")
    ax.set_title("training loss, 8x8 digits" + mark.replace(" [", "\n["), fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)
    return ["samples.png", "trajectories.png", "nearest_train.png", "loss.png"]


if __name__ == "__main__":
    main()
