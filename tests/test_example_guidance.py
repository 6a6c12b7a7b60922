"""examples/guidance_2d.py runs end to end in its --quick mode, and guidance does what it says."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "guidance_2d.py"


@pytest.mark.slow  # runs an example
def test_guidance_2d_quick(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(EXAMPLE), "--quick", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert (tmp_path / "samples.png").stat().st_size > 10_000
    clf, cfg = m["results"]["classifier"], m["results"]["classifier_free"]
    # Unguided: about 1/8 of the samples in the target class; guided: most of them (quick
    # training, so loose bounds), and more guidance never lowers the accuracy much.
    assert clf["0.0"]["accuracy"] < 0.35 and cfg["-1.0"]["accuracy"] < 0.35
    assert clf["1.0"]["accuracy"] > 0.6 and cfg["0.0"]["accuracy"] > 0.6
    assert clf["10.0"]["accuracy"] > clf["1.0"]["accuracy"] - 0.05
    assert cfg["3.0"]["accuracy"] > cfg["0.0"]["accuracy"] - 0.05
    for rows in (clf, cfg):
        assert all(math.isfinite(r["accuracy"]) for r in rows.values())
