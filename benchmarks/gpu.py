"""Benchmark: throughput of the hot paths on one device, with and without `torch.compile`.

For the package's `UNet` (3 channels, default width) under a VP SDE (eps parameterization) at
32x32 and 64x64, on whatever device it gets, it reports:
- sampling: images/s with `auto` at 20 score calls (probability-flow ODE); for the eager
  network also under `torch.autocast` in bfloat16 (the state stays float32; the accuracy of
  that is measured in tests/test_mixed_precision.py, not here: these networks are untrained);
- likelihood: bits/dim per second (Hutchinson, one Rademacher probe, the default solver
  `ExpABM` at rtol = atol = 1e-5), with its NFE;
- training: optimizer steps per second of `sdescore.Trainer` (DSM, AdamW, EMA);
- network: milliseconds per score call, and the solver's overhead per call beyond the network,
  (time of a sample - NFE x time of one call) / NFE.
Each row is measured with the eager network and with `torch.compile(net)`; a compile that fails
on the platform is reported as such (the eager row still counts). The networks are untrained: the
figures are speeds, not quality. Adaptive likelihood NFE depends on the weights, so it is
reported with the rate.

Run:  python benchmarks/gpu.py                        (CUDA if available; < 4 min on an H200)
      python benchmarks/gpu.py --quick --device cpu --threads 1   (smoke run, < 1 min on a CPU)
      python benchmarks/gpu.py --out results.json     (where the JSON goes; default gpu.json)
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time

import torch

import sdescore
from sdescore import EMAConfig, ScoreModel, Trainer, UNet, likelihood

print = functools.partial(print, flush=True)  # noqa: A001 (progress when piped)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int) -> float:
    """Median wall time of `fn()` in seconds over `repeats` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _model(res: int, device, compiled: bool, quick: bool) -> ScoreModel:
    torch.manual_seed(0)
    # --quick: a narrow UNet (a smoke run of every path, in seconds on a CPU)
    net = UNet(3, channels=8 if quick else 32).to(device)
    if compiled:
        net = torch.compile(net)
    return ScoreModel(net, sdescore.VPSDE(), "eps")


def measure(row: dict, device, compiled: bool, quick: bool) -> None:
    """Fill `row` (res, batch) section by section, so a late failure keeps the earlier figures."""
    res, batch = row["res"], row["batch"]
    model = _model(res, device, compiled, quick)
    x = torch.rand(batch, 3, res, res, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x = x.to(device)
    t = torch.full((batch,), 0.5, device=device)
    repeats = 2 if quick else 5

    with torch.no_grad():
        _sync(device)
        start = time.perf_counter()
        model(x, t)  # compiled: this call compiles
        _sync(device)
        row["first_call_s"] = time.perf_counter() - start
        net_s = _timed(lambda: model(x, t), device, repeats)
    row["ms_per_call"] = 1e3 * net_s

    pf = model.sde.probability_flow(model)
    gen = torch.Generator(device).manual_seed(0)

    def sample():
        return pf.sample(x.shape, method="auto", steps=20, generator=gen, device=device,
                         return_info=True)  # fmt: skip

    nfe = sample().nfe
    sample_s = _timed(sample, device, repeats)
    row["sample_images_per_s"] = batch / sample_s
    row["sample_nfe"] = nfe
    row["solver_overhead_ms_per_call"] = 1e3 * (sample_s - nfe * net_s) / nfe
    if not compiled:  # bfloat16 autocast (a compiled net would compile again for it)

        def sample_bf16():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return sample()

        row["sample_bf16_images_per_s"] = batch / _timed(sample_bf16, device, repeats)

    # --quick: a 2-step rk4 grid (8 calls) instead of an adaptive solve of unknown length
    opts = (
        dict(solver=sdescore.TorchDiffEq("rk4", steps=2)) if quick else dict(rtol=1e-5, atol=1e-5)
    )
    info = {}

    def nll():
        res_ = likelihood(model, x, generator=torch.Generator(device), **opts)
        info["nfe"] = res_.nfe

    nll_s = _timed(nll, device, 1)
    row["likelihood_bpd_per_s"] = batch / nll_s
    row["likelihood_nfe"] = info["nfe"]
    row["likelihood_solver"] = "rk4, 2 steps" if quick else "default (ExpABM), rtol=atol=1e-5"

    steps = 3 if quick else 20
    data = x.repeat(4, 1, 1, 1)
    trainer = Trainer(model, data, batch_size=batch, ema=EMAConfig(0.999))
    trainer.run(2, progress=False)  # warm-up (and compilation of the backward pass)
    _sync(device)
    start = time.perf_counter()
    trainer.run(2 + steps, progress=False)
    _sync(device)
    row["train_steps_per_s"] = steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default)
    parser.add_argument("--quick", action="store_true", help="small batches, few repeats")
    parser.add_argument(
        "--compile", choices=("auto", "on", "off"), default="auto",
        help="auto: on, except --quick on a CPU (inductor's C++ build takes minutes there)",
    )  # fmt: skip
    parser.add_argument("--out", default="gpu.json", help="JSON file of the results")
    parser.add_argument(
        "--budget", type=float, default=150.0,
        help="seconds after which compiled rows not yet started are skipped (compilation time)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=None,
        help="CPU intra-op threads (on a loaded machine 1 is often far faster than the default)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    use_compile = args.compile == "on" or (
        args.compile == "auto" and not (args.quick and device.type == "cpu")
    )
    sizes = {32: 2, 64: 1} if args.quick else {32: 128, 64: 32}
    if args.quick and device.type == "cuda":
        sizes = {32: 16, 64: 4}
    rows = []
    start = time.perf_counter()
    for res, batch in sizes.items():
        for compiled in (False, True):
            row = {"res": res, "batch": batch, "compile": compiled}
            rows.append(row)
            if compiled and not use_compile:
                row["compile"] = "skipped (--quick on cpu)"
                continue
            if compiled and time.perf_counter() - start > args.budget:
                row["compile"] = f"skipped (past --budget {args.budget:.0f} s)"
                continue
            label = f"{res}x{res} batch {batch} {'compiled' if compiled else 'eager'}"
            print(f"measuring {label} ...")
            try:
                measure(row, device, compiled, args.quick)
            except Exception as err:  # a compiler missing on the platform: say so, go on
                if not compiled:
                    raise
                first = (str(err).splitlines() or [""])[0][:80]
                row["compile"] = f"failed: {type(err).__name__}: {first}"

    table(rows)
    meta = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "sdescore": sdescore.__version__,
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    print(f"wrote {args.out} ({meta['seconds']:.0f} s in all)")


def table(rows: list[dict]) -> None:
    cols = [
        ("res", "res", "{}"), ("batch", "batch", "{}"), ("compile", "compile", "{}"),
        ("first_call_s", "1st call s", "{:.1f}"), ("ms_per_call", "net ms/call", "{:.2f}"),
        ("sample_images_per_s", "sample img/s", "{:.1f}"),
        ("sample_bf16_images_per_s", "bf16 img/s", "{:.1f}"),
        ("solver_overhead_ms_per_call", "solver ms/call", "{:.3f}"),
        ("likelihood_bpd_per_s", "bpd/s", "{:.2f}"), ("likelihood_nfe", "nll NFE", "{}"),
        ("train_steps_per_s", "train steps/s", "{:.2f}"),
    ]  # fmt: skip
    cells = [[h for _, h, _ in cols]]
    for r in rows:
        cells.append([fmt.format(r[k]) if k in r else "-" for k, _, fmt in cols])
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    for i, line in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
