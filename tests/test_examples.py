"""The examples run end to end (with small sizes here; CI also runs toy_2d.py at full size)."""

import runpy
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs(capsys):
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "Euler PF ODE, 200 steps" in out


def test_toy_2d_runs_small(tmp_path, monkeypatch):
    sys.path.insert(0, str(EXAMPLES))
    try:
        import toy_2d
    finally:
        sys.path.remove(str(EXAMPLES))
    out = tmp_path / "toy.png"
    report = toy_2d.main(
        ["--steps", "30", "--samples", "256", "--test-points", "64", "--out", str(out)]
    )
    assert out.stat().st_size > 10_000
    # 30 steps from the fitted Gaussian baseline: a finite NLL within a few nats of the exact one
    assert abs(report["test_nll"] - report["exact_nll"]) < 3.0
