"""Smoke tests of `benchmarks/peers.py`'s rows added for issue 22: the fitted grid, iPNDM, the
official DPM-Solver row, and the digits image case (`--digits`)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sdescore

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=180):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "peers.py"), *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow  # runs a benchmark script (about 12 s)
def test_peers_toy_quick_has_the_new_rows():
    out = _run("--quick")
    for row in ("sdescore fitted grid", "sdescore iPNDM", "official DPM-Solver", "fitting time"):
        assert row in out, row
    assert "not re-run: not on the package index" in out
    # The fitted grid's held-out error is a number, below the unfitted default's at 10 calls
    # (measured 1.0e-2 vs 1.6e-2 with the quick mode's 64 fitting draws and 40 solves).
    rows = {line[:24].strip(): line[24:].split() for line in out.splitlines()}
    fitted, default = float(rows["sdescore fitted grid"][0]), float(rows["sdescore default"][0])
    assert fitted < default, (fitted, default)


@pytest.mark.slow  # runs a benchmark script (about 25 s with a tiny untrained U-Net)
def test_peers_digits_quick_runs_on_a_saved_model(tmp_path):
    pytest.importorskip("sklearn")
    torch.manual_seed(0)
    net = sdescore.UNet(1, channels=8, channel_mult=(1,), attention=False, embed_dim=16)
    model = sdescore.ScoreModel(net, sdescore.VPSDE(0.1, 20.0), "eps")
    path = tmp_path / "tiny.pt"
    sdescore.save_model(model, path)
    out = _run("--digits", "--quick", "--model", str(path), "--figure", str(tmp_path / "f.png"))
    for text in ("solver error", "FID-digits", "sdescore Auto(), fitted grid", "target:"):
        assert text in out, text
    assert (tmp_path / "f.png").stat().st_size > 0
