"""Train a score model on a 2-D toy dataset, sample it four ways, and measure its test likelihood.

    python examples/toy_2d.py                             # eight Gaussians, VP SDE (~2 min, 2 cores)
    python examples/toy_2d.py --dataset rings --sde cosine
    python examples/toy_2d.py --quick                     # CI-sized (< 30 s)

Trains an MLP score network (denoising score matching, EMA) with a progress bar; samples with
the probability-flow ODE (DPM-Solver, 20 score calls), the reverse SDE (predictor-corrector and
Euler-Maruyama) and annealed Langevin dynamics; computes test NLL through the PF ODE with the
exact trace; prints a summary table. Writes into --out (default outputs/toy_2d/): samples.png,
score_field.png, density.png, trajectories.png, loss.png and metrics.json. For eight Gaussians
the exact density and score are known and shown beside the model's.

A sample-quality check compares each sampler's sliced Wasserstein-2 distance (and histogram TV)
to fresh data with what exact data scores: the same metric between independent data sets of the
samplers' size, its mean and sd over 8 pairs (a reference to match, not a floor: a value below
it is chance), and warns when a run is clearly off. Every phase prints a line with its time.
metrics.json names each field with its unit (`_nats`, `_seconds`, `_data_units`, ...) and
holds a `units` legend.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import warnings
from pathlib import Path

import torch
from _common import Phase, add_run_options, data_reference, histogram_tv, launch, quick_mark

import sdescore
from sdescore.metrics import sliced_wasserstein
from sdescore.toy import TOY_DATASETS, eight_gaussians, sample_toy

# Training steps per dataset: the sharper the structure, the longer it takes to learn.
DEFAULT_STEPS = {
    "eight_gaussians": 2000,
    "two_moons": 2000,
    "checkerboard": 3000,
    "swiss_roll": 3000,
    "rings": 6000,
}
# Rings (width 0.08, 1 apart) need the score at small noise: the eps head and likelihood
# weighting with importance-sampled t (measured at 3000 steps: histogram TV 0.28 against 0.41
# for score + sigma2, which learns a disc; at 8000 steps the outer two rings are resolved).
DEFAULT_OBJECTIVE = {"rings": ("eps", "likelihood")}
# Structure finer than a plain MLP learns in a few thousand steps (its spectral bias): random
# Fourier features of x, 64 frequencies of std 0.5 per unit (the rings 1 apart, the moons and
# the roll blurred by noise of std 0.1, the squares' sharp edges). Measured at the default steps, 1 thread, seed 0
# (PF ODE histogram TV / test NLL, plain MLP -> with features): two moons 0.187 / 2.033 ->
# 0.134 / 1.988, checkerboard 0.258 / 3.728 -> 0.212 / 3.599, swiss roll 0.174 / 2.426 ->
# 0.141 / 2.365; rings at 3000 steps: 0.30 -> 0.21, the inner ring's radial spread 0.28 -> 0.13
# (data 0.08), all four rings instead of two. Eight Gaussians (smooth) keep the plain MLP and
# their measured NLL gap.
X_FEATURES = (64, 0.5)
DEFAULT_X_FEATURES = {"eight_gaussians": (0, X_FEATURES[1])}
# metrics.json: every number's unit (a suffix in its name, and this legend in the file).
UNITS = {
    "_nats": "natural-log units of (log-)density",
    "test_bits_per_dim": "bits per dimension (test NLL / (2 ln 2))",
    "_seconds": "wall-clock seconds",
    "score_calls": "score-network evaluations (batched; one per solver stage)",
    "optimizer_steps": "optimizer (Adam) steps of training",
    "_data_units": "units of the data's coordinates (the toy data span about 8)",
    "_probability": "probability mass, in [0, 1] (total variation of 30 x 30 histograms)",
    "final_loss": "mean training loss of the last 100 steps (the --weighting DSM objective, "
    "dimensionless)",
    "data_reference": "each sampler metric for exact data: mean and sd over independent pairs of "
    "sets of points_per_set points (what a perfect sampler scores; not a floor)",
}
# The summary's columns: sampler metric -> its header.
TABLE = {
    "sliced_w2_data_units": "SW2",
    "hist_tv_probability": "hist TV",
    "exact_log_prob_nats": "E log p",
}
LIMIT = 6.0  # plots cover [-LIMIT, LIMIT]^2; every toy dataset lies in about [-4.5, 4.5]^2


def cosine_sde() -> sdescore.LinearSDE:
    """Cosine schedule (Nichol & Dhariwal 2021) as a `LinearSDE`: $\\alpha(t) = \\cos(\\frac{\\pi}{2}
    \\frac{t + s}{1 + s}) / \\cos(\\frac{\\pi}{2}\\frac{s}{1 + s})$, $s = 0.008$, variance preserving.

    $f(t) = d\\log\\alpha/dt$ and $g(t)^2 = -2 f(t)$; stopped at T = 0.99 where $\\tan$ is finite.
    """
    s = 0.008

    def rate(t):  # -d log alpha / dt
        return 0.5 * math.pi * torch.tan(0.5 * math.pi * (t + s) / (1 + s)) / (1 + s)

    return sdescore.LinearSDE(f=lambda t: -rate(t), g=lambda t: (2 * rate(t)).sqrt(), T=0.99)


SDES = {
    "vp": lambda: sdescore.VPSDE(0.1, 20.0),
    "subvp": lambda: sdescore.SubVPSDE(0.1, 20.0),
    "ve": lambda: sdescore.VESDE(0.01, 10.0),  # sigma_max ~ the data's diameter (Song & Ermon 2020)
    "cosine": cosine_sde,
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="eight_gaussians", choices=sorted(TOY_DATASETS))
    p.add_argument("--sde", default="vp", choices=sorted(SDES))
    p.add_argument("--steps", type=int, default=None, help="training steps (default per dataset)")
    p.add_argument(
        "--parameterization",
        default=None,
        choices=["score", "eps", "x0", "v"],
        help="what the network predicts (sdescore.ScoreModel); default score (rings: eps)",
    )
    p.add_argument(
        "--weighting",
        default=None,
        choices=["sigma2", "likelihood"],
        help="DSM weighting: sigma2 (NCSN; default) or likelihood with importance-sampled t "
        "(rings' default)",
    )
    p.add_argument(
        "--x-features",
        type=int,
        default=None,
        help="random Fourier features of x in the MLP (MLPScoreNet x_features); 0 for none; "
        "default 64 (eight_gaussians: none)",
    )
    p.add_argument(
        "--x-scale",
        type=float,
        default=None,
        help="std of those frequencies, cycles per data unit (default 0.5)",
    )
    add_run_options(p, out="outputs/toy_2d", quick="CI-sized run (< 30 s on 2 cores)")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda requested but torch.cuda.is_available() is False")
    if args.steps is None:
        args.steps = 300 if args.quick else DEFAULT_STEPS[args.dataset]
    param, weighting = DEFAULT_OBJECTIVE.get(args.dataset, ("score", "sigma2"))
    args.parameterization = args.parameterization or param
    args.weighting = args.weighting or weighting
    features, scale = DEFAULT_X_FEATURES.get(args.dataset, X_FEATURES)
    args.x_features = features if args.x_features is None else args.x_features
    args.x_scale = scale if args.x_scale is None else args.x_scale
    if args.x_features < 0 or not args.x_scale > 0:
        p.error(
            f"--x-features must be >= 0 and --x-scale > 0, got {args.x_features}, {args.x_scale}"
        )
    # Sizes: batch, samples per sampler, test points, density grid per axis, PC/EM steps, levels.
    sizes = (256, 512, 128, 24, 100, 50) if args.quick else (1024, 4096, 1024, 60, 500, 200)
    args.batch, args.samples, args.test_points, args.grid, args.sde_steps, args.levels = sizes
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    with launch(args.device) as job:  # one process, or one rank of torchrun
        return run_example(args, job)


def run_example(args, job) -> dict:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if job.is_main:
        out.mkdir(parents=True, exist_ok=True)
    dev = job.device
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)  # network initialisation

    train_data = sample_toy(args.dataset, 50_000, generator=gen).to(dev)
    test_data = sample_toy(args.dataset, args.test_points, generator=gen).to(dev)
    exact = eight_gaussians() if args.dataset == "eight_gaussians" else None
    sde = SDES[args.sde]()
    print(f"dataset {args.dataset}, SDE {args.sde} ({sde!r}), {args.steps} steps, seed {args.seed}")

    # The network learns the residual to the score of a Gaussian fitted to the data.
    net = sdescore.MLPScoreNet(2, x_features=args.x_features, x_scale=args.x_scale)
    model = sdescore.ScoreModel(net, sde, args.parameterization)
    model = model.fit_baseline(train_data).to(dev)
    result = sdescore.train(
        model,
        train_data,
        steps=args.steps,
        batch_size=args.batch,
        lr=1e-3,
        warmup_steps=100,
        loss_kwargs=(
            {"weighting": "likelihood", "importance_sampling": True}
            if args.weighting == "likelihood"
            else None
        ),
        ema_decay=0.99 if args.quick else 0.999,
        seed=args.seed,
        progress=True,
    )
    ema = result.ema_model.eval()
    stages = {"train": {"optimizer_steps": args.steps, "wall_seconds": result.seconds}}

    # Four samplers on the same model; a fresh generator each so they are comparable.
    n = args.samples
    samplers = {
        "PF ODE, auto": lambda g: job.sample(
            sde.probability_flow(ema),
            (n, 2),
            method="auto",
            steps=20,
            generator=g,
            return_info=True,
            device=dev,
        ),
        "reverse SDE, pc": lambda g: job.sample(
            sde.reverse(ema),
            (n, 2),
            method="pc",
            steps=args.sde_steps,
            generator=g,
            return_info=True,
            device=dev,
        ),
        "reverse SDE, euler_maruyama": lambda g: job.sample(
            sde.reverse(ema),
            (n, 2),
            method="euler_maruyama",
            steps=args.sde_steps,
            generator=g,
            return_info=True,
            device=dev,
        ),
        "annealed Langevin": lambda g: job.sample(
            sde.reverse(ema),
            (n, 2),
            method=sdescore.AnnealedLangevin(corrector_steps=5),
            steps=args.levels,
            generator=g,
            return_info=True,
            device=dev,
        ),
    }
    gen_dev = torch.Generator(dev).manual_seed(args.seed + 1)
    # Sample quality against fresh data (n points, as many as each sampler draws); the reference
    # is what exact data of that size scores on the same metrics (mean and sd over 8 pairs).
    reference = sample_toy(args.dataset, n, generator=gen)
    metrics = {
        "sliced_w2_data_units": lambda a, b: (
            sliced_wasserstein(a, b, generator=torch.Generator().manual_seed(0)).value
        ),
        "hist_tv_probability": histogram_tv,
    }
    if exact is not None:
        metrics["exact_log_prob_nats"] = lambda a, b: exact.log_prob(a.double().cpu()).mean()
    samples, rows = {}, []
    with torch.no_grad():
        for name, run in samplers.items():
            gen_dev.manual_seed(args.seed + 1)
            with Phase(f"sampling: {name}, {n} points") as ph:
                info = run(gen_dev)
            x = info.samples.cpu()
            row = {"method": name, "score_calls": info.nfe, "wall_seconds": ph.seconds}
            row.update({key: float(fn(x, reference)) for key, fn in metrics.items()})
            samples[name], rows = x, [*rows, row]
            stages[name] = {"score_calls": info.nfe, "wall_seconds": ph.seconds}
    with Phase("reference: the same metrics for exact data, 8 pairs of independent sets"):
        data_ref = data_reference(
            lambda k: sample_toy(args.dataset, k, generator=gen), n, metrics, pairs=8
        )

    # Test NLL in float64 through the PF ODE with the exact divergence (d = 2: two extra passes).
    ema64 = copy.deepcopy(ema).double()
    with Phase(f"likelihood: test NLL of {args.test_points} points (PF ODE, exact trace)") as ph:
        lik = job.sharded(
            sdescore.likelihood, ema64, test_data.double(), estimator="exact", batch_size=1024
        )
    nll = -lik.log_prob.mean().item()
    se = lik.log_prob.std().item() / args.test_points**0.5
    stages["likelihood"] = {"score_calls": lik.nfe, "wall_seconds": ph.seconds}
    report = {
        "units": UNITS,
        "test_nll_nats": nll,
        "test_nll_se_nats": se,
        "test_bits_per_dim": lik.bits_per_dim.mean().item(),
        "final_loss": float(result.losses[-100:].mean()),
        "samplers": rows,
        "data_reference": data_ref,
        "stages": stages,
        "config": {k: v for k, v in vars(args).items()},
        "version": sdescore.__version__,
        "seed": args.seed,
        "world_size": job.world_size,
    }
    if exact is not None:
        report["exact_nll_nats"] = -exact.log_prob(test_data.double().cpu()).mean().item()
        report["nll_gap_nats"] = nll - report["exact_nll_nats"]

    print_summary(report, args)
    warn_if_off(report, args)
    if job.is_main and not args.no_plots:  # only rank 0 writes
        figures(out, args, sde, ema, ema64, exact, reference, samples, report, result)
    if job.is_main:
        (out / "metrics.json").write_text(json.dumps(report, indent=2))
    names = "" if args.no_plots else ", " + ", ".join(f"{f}.png" for f in FIGURES)
    print(f"wrote to {out}: metrics.json{names}")
    return report


def print_summary(report: dict, args) -> None:
    keys = [k for k in TABLE if k in report["samplers"][0]]
    head = f"{'stage':<30}{'score calls':>12}{'seconds':>9}" + "".join(
        f"{TABLE[k]:>9}" for k in keys
    )
    print("\n" + head + "\n" + "-" * len(head))
    train = report["stages"]["train"]
    print(f"{'train (optimizer steps)':<30}{train['optimizer_steps']:>12}", end="")
    print(f"{train['wall_seconds']:>9.1f}")
    for r in report["samplers"]:
        line = f"{r['method']:<30}{r['score_calls']:>12}{r['wall_seconds']:>9.1f}"
        print(line + "".join(f"{r[k]:>9.3f}" for k in keys))
    ref = report["data_reference"]
    print(
        f"{'exact data (mean of 8 pairs)':<30}{'':>21}"
        + "".join(f"{ref[k]['mean']:>9.3f}" for k in keys)
    )
    print(
        f"{'  its sd (chance spread)':<30}{'':>21}" + "".join(f"{ref[k]['sd']:>9.3f}" for k in keys)
    )
    lik = report["stages"]["likelihood"]
    print(
        f"{'likelihood (exact trace)':<30}{lik['score_calls']:>12}{lik['wall_seconds']:>9.1f}\n\n"
        f"test NLL {report['test_nll_nats']:.4f} ± {report['test_nll_se_nats']:.4f} nats "
        f"({report['test_bits_per_dim']:.4f} bits/dim) on {args.test_points} points"
    )
    if "exact_nll_nats" in report:
        print(
            f"exact NLL of the same points {report['exact_nll_nats']:.4f} nats: "
            f"gap {report['nll_gap_nats']:+.4f}"
        )
    print(
        f"each against {ref['points_per_set']} fresh data points. SW2: sliced Wasserstein-2 "
        "(data units); hist TV: total variation between 2-D histograms (30 x 30 bins); "
        "E log p: mean exact log-density of the samples (nats). Exact data scores the reference "
        "row give or take its sd: a sampler below it is chance, not better than data (for "
        "E log p, above it means samples crowd the modes)."
    )


def warn_if_off(report: dict, args) -> None:
    """Warn when a sampler is many sds from what exact data scores, or the NLL gap is large."""
    ref = report["data_reference"]
    sw, tv = ref["sliced_w2_data_units"], ref["hist_tv_probability"]
    for r in report["samplers"]:
        # 3x the data's value plus 0.05 (in data units, the data span ~8): clearly visible in
        # samples.png, and far beyond chance (the sd is ~0.01 at 4,096 points).
        if r["sliced_w2_data_units"] > 3 * sw["mean"] + 0.05:
            warnings.warn(
                f"{r['method']}: sliced W2 {r['sliced_w2_data_units']:.3f} is far from exact "
                f"data's {sw['mean']:.3f} ± {sw['sd']:.3f}; the samples do not match the data "
                f"(train longer than --steps {args.steps}?)",
                stacklevel=2,
            )
        # Sliced distances miss structure finer than the data's spread (rings vs a uniform disc:
        # TV 0.52 against exact data's 0.17); the histogram sees it. A blurred but recognisable
        # checkerboard stays below this line (TV 0.27, exact data 0.17).
        if r["hist_tv_probability"] > 2 * tv["mean"] + 0.05:
            warnings.warn(
                f"{r['method']}: histogram TV {r['hist_tv_probability']:.3f} is far from exact "
                f"data's {tv['mean']:.3f} ± {tv['sd']:.3f}; the samples miss the data's structure "
                f"(look at samples.png; train longer than --steps {args.steps}?)",
                stacklevel=2,
            )
    if "nll_gap_nats" in report and report["nll_gap_nats"] > 0.1 and not args.quick:
        warnings.warn(
            f"test NLL is {report['nll_gap_nats']:.3f} nats above the exact NLL (expected < 0.05)",
            stacklevel=2,
        )


FIGURES = ("samples", "score_field", "density", "trajectories", "loss")


def figures(out, args, sde, ema, ema64, exact, data, samples, report, result) -> None:
    """The five figures, each a phase with its time; `data` has as many points as each sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mark = quick_mark(args.quick)

    def square(ax, title):
        ax.set_xlim(-LIMIT, LIMIT)
        ax.set_ylim(-LIMIT, LIMIT)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")

    def save(fig, name):
        # bbox "tight": axis labels of equal-aspect panels are never cut at the edge
        fig.savefig(out / f"{name}.png", dpi=90, bbox_inches="tight", pad_inches=0.1)
        plt.close(fig)

    with Phase("figure samples.png"):
        samples_figure(plt, square, save, args, data, samples, report, mark)
    with Phase("figure score_field.png"):
        score_figure(plt, square, save, sde, ema, exact, mark)
    # the model's log-density on a grid: a likelihood solve per point, the longest figure
    with Phase(f"figure density.png (likelihood on a {args.grid} x {args.grid} grid)"):
        grid_map = density_figure(plt, square, save, args, ema64, exact, mark)
    with Phase("figure trajectories.png"):
        trajectories_figure(plt, save, args, sde, ema, grid_map, mark)
    with Phase("figure loss.png"):
        loss_figure(plt, save, args, result, mark)


def samples_figure(plt, square, save, args, data, samples, report, mark) -> None:
    """samples.png: fresh data beside each sampler, as many points each, same axes."""
    rows, ref = report["samplers"], report["data_reference"]["sliced_w2_data_units"]
    fig, axes = plt.subplots(1, 5, figsize=(20, 4.8), layout="constrained")
    data_title = f"fresh data\nanother data set: SW2 {ref['mean']:.3f} ± {ref['sd']:.3f}"
    panels = [(data_title, data)] + [
        (
            f"{r['method']}\n{r['score_calls']} score calls, SW2 {r['sliced_w2_data_units']:.3f}",
            samples[r["method"]],
        )
        for r in rows
    ]
    for ax, (title, pts) in zip(axes, panels, strict=True):
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        square(ax, title)
    fig.suptitle(
        f"{args.dataset}, {args.sde} SDE, {args.steps} training steps; {len(data)} points per "
        f"panel; SW2: sliced Wasserstein-2 to fresh data{mark}"
    )
    save(fig, "samples")


def score_figure(plt, square, save, sde, ema, exact, mark) -> None:
    """score_field.png: learned score at 3 noise levels, beside the exact one where known."""
    times = [0.05 * sde.T, 0.2 * sde.T, 0.5 * sde.T]
    ticks = torch.linspace(-LIMIT + 0.5, LIMIT - 0.5, 17)
    gx, gy = torch.meshgrid(ticks, ticks, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    rows_fig = 2 if exact is not None else 1
    fig, axes = plt.subplots(
        rows_fig, 3, figsize=(13, 4.6 * rows_fig), squeeze=False, layout="constrained"
    )
    for j, t in enumerate(times):
        sigma = sde.marginal_prob(torch.zeros(1, 2), torch.tensor([t]))[1].item()
        fields = [("model", ema.cpu())]
        if exact is not None:
            fields.append(("exact", exact.score_fn(sde)))
        with torch.no_grad():
            values = [fn(pts, torch.full((pts.shape[0],), t)) for _, fn in fields]
        top = max(v.norm(dim=1).max().item() for v in values)  # one colour scale per column
        for i, ((label, _), s) in enumerate(zip(fields, values, strict=True)):
            norm = s.norm(dim=1, keepdim=True)
            ax = axes[i, j]
            # unit arrows show the direction everywhere; colour carries the magnitude
            u = s / norm.clamp_min(1e-12)
            q = ax.quiver(pts[:, 0], pts[:, 1], u[:, 0], u[:, 1], norm[:, 0], cmap="viridis")
            q.set_clim(0, top)
            fig.colorbar(q, ax=ax, label="|score|")
            square(ax, f"{label} score at t = {t:.2f} (σ = {sigma:.2f})")
    fig.suptitle(f"score field: arrows its direction, colour its norm{mark}")
    save(fig, "score_field")


def density_figure(plt, square, save, args, ema64, exact, mark):
    """density.png: model log-density on a grid from the likelihood, beside the exact one;
    returns `(gx, gy, model map, top)` for the trajectories' background."""
    ticks = torch.linspace(-LIMIT, LIMIT, args.grid, dtype=torch.float64)
    gx, gy = torch.meshgrid(ticks, ticks, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    dev = next(ema64.parameters()).device
    logp = sdescore.likelihood(ema64, grid.to(dev), estimator="exact", batch_size=4096)
    maps = [("model log-density (PF ODE, exact trace)", logp.log_prob.cpu())]
    if exact is not None:
        maps.append(("exact log-density", exact.log_prob(grid)))
    top = max(m.max().item() for _, m in maps)
    fig, axes = plt.subplots(
        1, len(maps), figsize=(5.6 * len(maps), 5.0), squeeze=False, layout="constrained"
    )
    for ax, (title, m) in zip(axes[0], maps, strict=True):
        im = ax.pcolormesh(
            gx, gy, m.reshape(gx.shape).clamp_min(top - 12), vmin=top - 12, vmax=top, cmap="magma"
        )
        fig.colorbar(im, ax=ax, label="log p(x) [nats]")
        square(ax, title)
    if mark:
        fig.suptitle(mark.strip())
    save(fig, "density")
    return gx, gy, maps[0][1].reshape(gx.shape), top


def trajectories_figure(plt, save, args, sde, ema, grid_map, mark) -> None:
    """trajectories.png: PF-ODE paths from the prior to the data over the model density."""
    gx, gy, model_map, top = grid_map
    g = torch.Generator().manual_seed(args.seed + 2)
    with torch.no_grad():
        traj = sde.probability_flow(ema.cpu()).sample(
            (48, 2), method="rk4", steps=50, generator=g, return_info="trajectory"
        )
    paths = traj.trajectory
    start_spread = paths[0].abs().max().item()
    fig, ax = plt.subplots(figsize=(6, 5.4), layout="constrained")
    im = ax.pcolormesh(gx, gy, model_map.clamp_min(top - 12), vmin=top - 12, vmax=top, cmap="magma")
    fig.colorbar(im, ax=ax, label="model log p(x) [nats]")
    for k in range(paths.shape[1]):
        ax.plot(paths[:, k, 0], paths[:, k, 1], color="white", lw=0.6, alpha=0.7)
    ax.scatter(paths[0, :, 0], paths[0, :, 1], s=8, color="cyan", label="prior draw (t = T)")
    ax.scatter(paths[-1, :, 0], paths[-1, :, 1], s=8, color="lime", label="sample (t = ε)")
    ax.legend(loc="lower left", fontsize=8)
    lim = max(LIMIT, start_spread)  # VE's prior is wide: show where the paths start
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title("PF-ODE trajectories (RK4, 50 steps)" + mark.replace(" [", "\n["), fontsize=10)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    save(fig, "trajectories")


def loss_figure(plt, save, args, result, mark) -> None:
    """loss.png: training loss per step and its exponential moving average."""
    losses = torch.as_tensor(result.losses, dtype=torch.float64)
    smooth, acc = torch.empty_like(losses), losses[0].item()
    for i, v in enumerate(losses.tolist()):
        acc = 0.98 * acc + 0.02 * v
        smooth[i] = acc
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.plot(losses, lw=0.5, alpha=0.4, label="loss per step")
    ax.plot(smooth, lw=1.5, label="EMA (0.98)")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("denoising score-matching loss")
    ax.set_title(
        f"training loss, {args.dataset}, {args.sde}" + mark.replace(" [", "\n["), fontsize=10
    )
    ax.legend()
    save(fig, "loss")


if __name__ == "__main__":
    main()
