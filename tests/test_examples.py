"""The examples run end to end in their --quick mode (CI also runs toy_2d.py at full size).

Each example runs in a subprocess, as a user runs it, writing into a temporary --out; the test
checks the files it wrote and that metrics.json holds the promised keys with finite numbers.
Running an example puts a test in the slow tier; the in-process check of the example's arguments
(`test_toy_2d_rings_defaults`) stays in the fast loop.
"""

import importlib.util
import json
import math
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, out: Path, *args: str) -> dict:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(EXAMPLES / name), "--quick", "--out", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out / "stdout.txt").write_text(proc.stdout)  # for the tests of what the example says
    return json.loads((out / "metrics.json").read_text())


def finite_numbers(obj):
    """Every number inside a JSON value (dicts and lists walked)."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from finite_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from finite_numbers(v)
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield obj


@pytest.mark.slow
def test_quickstart_runs(capsys):
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "Euler PF ODE, 200 steps" in out


@pytest.mark.slow
def test_toy_2d_quick(tmp_path):
    m = run_example("toy_2d.py", tmp_path)
    for fig in ("samples", "score_field", "density", "trajectories", "loss"):
        assert (tmp_path / f"{fig}.png").stat().st_size > 10_000, fig
    for key in ("test_nll_nats", "test_nll_se_nats", "exact_nll_nats", "stages", "config"):
        assert key in m, key
    # issue 25 item 18: training counts optimizer steps, samplers and likelihood score calls
    assert set(m["stages"]["train"]) == {"optimizer_steps", "wall_seconds"}
    for stage in ("likelihood", "PF ODE, auto", "annealed Langevin"):
        assert set(m["stages"][stage]) == {"score_calls", "wall_seconds"}, stage
    assert m["stages"]["PF ODE, auto"]["score_calls"] == 20
    assert all(math.isfinite(v) for v in finite_numbers(m))
    # 300 quick steps from the fitted Gaussian baseline: within a few nats of the exact NLL
    assert abs(m["test_nll_nats"] - m["exact_nll_nats"]) < 8.0
    assert_units(m)
    # every phase said it started and how long it took; the quick run says so in each figure
    said = (tmp_path / "stdout.txt").read_text()
    for phase in ("sampling: PF ODE, auto", "likelihood: test NLL", "figure density.png"):
        assert re.search(re.escape(phase) + r".* \.\.\. \d+\.\d s", said), phase
    assert "[--quick run" in example_module("toy_2d.py").quick_mark(True)


def assert_units(m: dict) -> None:
    """Every number in toy_2d's metrics.json names its unit (issue 25 item 18), and the legend
    explains each suffix."""
    unit_words = ("_nats", "_seconds", "score_calls", "optimizer_steps", "_data_units")
    unit_words += ("_probability", "bits_per_dim", "final_loss", "seed", "world_size")

    def walk(obj, path):
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from walk(v, (*path, k))
        elif isinstance(obj, list):
            for v in obj:
                yield from walk(v, path)
        elif isinstance(obj, int | float) and not isinstance(obj, bool):
            yield path

    for path in walk({k: v for k, v in m.items() if k not in ("config", "units")}, ()):
        # mean/sd/pairs/points_per_set inside data_reference take the unit of their metric
        named = [p for p in path if p not in ("mean", "sd")]
        assert any(w in "/".join(named) for w in unit_words) or named[-1] in (
            "pairs",
            "points_per_set",
        ), path
    assert {"_nats", "_seconds", "_data_units", "_probability", "data_reference"} <= set(m["units"])


@pytest.mark.slow
def test_toy_2d_no_plots_other_sde(tmp_path):
    m = run_example(
        "toy_2d.py", tmp_path, "--dataset", "two_moons", "--sde", "cosine", "--no-plots"
    )
    assert not list(tmp_path.glob("*.png"))
    assert "exact_nll_nats" not in m and m["config"]["sde"] == "cosine"
    assert all(math.isfinite(v) for v in finite_numbers(m))


@pytest.mark.slow  # starts the example in a subprocess (about 2 s of start-up)
def test_toy_2d_rejects_bad_option(tmp_path):
    cmd = [
        sys.executable,
        str(EXAMPLES / "toy_2d.py"),
        "--dataset",
        "spiral",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_toy_2d_rings_defaults(monkeypatch):
    # Rings (width 0.08, 1 apart) need Fourier features of x in the MLP to resolve the inner two
    # rings (the full default runs are measured in docs/examples.md); so do the other datasets
    # with fine structure, eight Gaussians keep the plain MLP, and --x-features 0 turns them off.
    import importlib.util

    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location("toy_2d_example", EXAMPLES / "toy_2d.py")
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    a = toy.parse_args(["--dataset", "rings"])
    assert (a.parameterization, a.weighting, a.x_features, a.x_scale) == (
        "eps",
        "likelihood",
        64,
        0.5,
    )
    assert toy.parse_args(["--dataset", "rings", "--x-features", "0"]).x_features == 0
    assert toy.parse_args([]).x_features == 0  # eight Gaussians: the measured plain MLP
    for name in ("two_moons", "checkerboard", "swiss_roll"):
        assert toy.parse_args(["--dataset", name]).x_features == 64, name
    with pytest.raises(SystemExit):
        toy.parse_args(["--x-features", "-1"])


@pytest.mark.slow
def test_custom_sde_quick(tmp_path):
    m = run_example("custom_sde.py", tmp_path)
    assert (tmp_path / "samples.png").stat().st_size > 10_000
    assert (
        f"wrote {tmp_path}/metrics.json and {tmp_path}/samples.png"
        in (tmp_path / "stdout.txt").read_text()
    )  # issue 25 item 17: the figure it wrote is named
    assert m["alpha_sigma_max_abs_error"] < 1e-8  # derived kernel vs the cosine closed form
    # the exact score through the derived kernel gives the exact NLL (exact trace, float64)
    assert abs(m["exact_score_nll"] - m["exact_nll"]) < 1e-2
    assert len(m["samplers_trained"]) == len(m["samplers_exact_score"]) >= 8
    assert all(math.isfinite(v) for v in finite_numbers(m))


@pytest.mark.slow
def test_digits_quick(tmp_path):
    pytest.importorskip("sklearn")
    m = run_example("digits.py", tmp_path)
    for fig in ("samples", "trajectories", "nearest_train", "loss"):
        assert (tmp_path / f"{fig}.png").stat().st_size > 5_000, fig
    bpd = m["bits_per_dim"]
    assert {"score_model_pf_ode", "score_model_elbo", "gaussian"} <= set(bpd)
    assert any(k.startswith("gmm_") for k in bpd) and any("_iw_S" in k for k in bpd)
    for key in ("test_nll", "test_nll_se", "stages", "config", "version", "seed"):
        assert key in m, key
    assert all(math.isfinite(v) for v in finite_numbers(m))
    # Inpainting (issue 13): the known half is kept exactly; the figure is written.
    assert m["inpainting"]["known_half_max_abs_change"] == 0.0
    assert 0.0 <= m["inpainting"]["class_agreement"] <= 1.0
    assert (tmp_path / "inpainting.png").stat().st_size > 5_000
    # The sample-quality table of issue 10: floor, PF ODE at 10/20/50 calls, PC, the GMM.
    rows = {r["samples"]: r for r in m["sample_quality"]}
    assert len(rows) == 6 and any(name.startswith("PF ODE") for name in rows)
    # issue 25 item 17: what it says is what it did
    said = (tmp_path / "stdout.txt").read_text()
    files = (
        "metrics.json, samples.png, trajectories.png, nearest_train.png, loss.png, inpainting.png"
    )
    assert f"wrote to {tmp_path}: {files}" in said
    assert "first 48 of 450 test images" in said and "450 = full test split" not in said
    floor = rows["real train digits (floor)"]["fid_digits"]  # one floor, printed twice
    assert m["fid_digits"]["floor"] == pytest.approx(floor, rel=1e-9)


@pytest.mark.slow
def test_digits_pretrained_needs_no_training(tmp_path):
    # issue 24 item 4: the shipped models sample, inpaint, guide and score without training.
    pytest.importorskip("sklearn")
    m = run_example("digits.py", tmp_path, "--pretrained")
    assert m["stages"]["train"] == {"nfe": 0, "seconds": 0.0, "pretrained": "digits8"}
    assert m["train_final_loss"] is None and not (tmp_path / "loss.png").exists()
    # the shipped digits8 (PF ODE about 1.9 bits/dim on the test split) beats both baselines
    bpd = m["bits_per_dim"]
    assert bpd["score_model_pf_ode"]["mean"] < bpd["gaussian"]["mean"] - 0.5
    # guidance of digits8-cond: 98 % / 100 % measured on 80 samples; well above chance (10 %)
    assert m["guidance"]["class_accuracy_w2"] >= 0.9
    assert (tmp_path / "guidance.png").stat().st_size > 5_000
    assert "guidance.png" in (tmp_path / "stdout.txt").read_text()


@pytest.mark.slow
def test_toy_2d_under_torchrun(tmp_path):
    """Two CPU ranks (gloo): DDP training, sharded sampling and likelihood, rank 0 alone writes
    (about 15 s on 2 cores)."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(EXAMPLES / "toy_2d.py"), "--quick", "--no-plots", "--out", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # rank 1 printed nothing and wrote nothing: one summary, one write, one file
    assert proc.stdout.count("wrote ") == 1 and len(re.findall(r"test NLL \d", proc.stdout)) == 1
    assert proc.stdout.count("likelihood: test NLL") == 1  # the phase line, once
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["stages"]["PF ODE, auto"]["score_calls"] == 20
    assert all(math.isfinite(v) for v in finite_numbers(m))
    # A quick run (300 steps; the noise streams differ from one process's): sane, not tuned.
    assert abs(m["test_nll_nats"] - m["exact_nll_nats"]) < 20.0 and m["final_loss"] < 0.6
    sw = m["data_reference"]["sliced_w2_data_units"]["mean"]
    assert all(r["sliced_w2_data_units"] < 5 * sw + 0.5 for r in m["samplers"])


def example_module(name: str):
    """An example script as a module, its `_common` import found on the path."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(
            name.removesuffix(".py") + "_ex", EXAMPLES / name
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


def test_data_reference_is_what_exact_data_scores():
    """Issue 25 item 18: toy_2d's "floor" was one draw of the metric between two data sets, which a
    correct sampler undercut by chance, and E log p's "floor" is no floor at all. The reference is
    now the metric's mean and sd over independent pairs of exact data sets of the samplers' size:
    exact samples (a perfect sampler) land within its spread, a wrong sampler many sds above."""
    import torch

    from sdescore.metrics import sliced_wasserstein
    from sdescore.toy import eight_gaussians

    common = example_module("_common.py")
    data = eight_gaussians()
    g = torch.Generator().manual_seed(0)

    def draw(n):
        return data.sample(n, generator=g, dtype=torch.float64)

    metrics = {
        "sw2": lambda a, b: (
            sliced_wasserstein(a, b, generator=torch.Generator().manual_seed(0)).value
        ),
        "tv": common.histogram_tv,
    }
    ref = common.data_reference(draw, 1024, metrics, pairs=16)
    assert ref["pairs"] == 16 and ref["points_per_set"] == 1024
    fresh = draw(1024)
    # shrunk to radius 3 and blurred (std 0.5 -> 0.75): visibly wrong, like an undertrained model
    blurred = 0.75 * draw(1024) + 0.47 * torch.randn(1024, 2, generator=g, dtype=torch.float64)
    for name, fn in metrics.items():
        mean, sd = ref[name]["mean"], ref[name]["sd"]
        assert 0 < sd < mean, name
        # exact samples: within 4 sd of the reference (seeded; about 3e-5 to fail by chance)
        assert abs(fn(draw(1024), fresh) - mean) < 4 * sd, name
        assert fn(blurred, fresh) > mean + 5 * sd, name
