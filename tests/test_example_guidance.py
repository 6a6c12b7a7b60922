"""examples/guidance_2d.py runs end to end in its --quick mode, and guidance does what it says."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
    # issue 25 item 18: each row has a distance to the class's own law, and the exact reference
    for rows in (clf, cfg):
        assert all(math.isfinite(r["class_log_prob_nats"]) for r in rows.values())
        assert all(r["sliced_w2_to_class_data_units"] >= 0 for r in rows.values())
    ref = m["exact_samples_reference"]
    assert ref["class_log_prob_nats"] == pytest.approx(
        -math.log(2 * math.pi * math.e * 0.25), abs=0.2
    )


def load_example():
    """examples/guidance_2d.py as a module (its `_common` import found on the path)."""
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        spec = importlib.util.spec_from_file_location("guidance_2d_example", EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    return module


def test_guidance_metrics_see_samples_off_their_mode():
    """Issue 25 item 18: accuracy is blind to samples far off their mode (the quick run's samples
    near x1 = 6 against a mode at 4 scored 1.00); the class's log-density and the sliced W2 to
    exact samples of the class are not."""
    from sdescore import VPSDE
    from sdescore.toy import MixtureClassifier, eight_gaussians, mixture_component

    example = load_example()
    data = eight_gaussians()
    exact = MixtureClassifier(data, VPSDE())
    law = mixture_component(data, 0)  # N(mu_0, 0.5^2 I)
    x = law.sample(400, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    shift = 2.0 * law.mean() / law.mean().norm()  # 2 units outward along the mode's direction
    good, off = example.evaluate(x, exact), example.evaluate(x + shift, exact)
    assert good["accuracy"] > 0.99 and off["accuracy"] > 0.99  # accuracy: blind to the shift
    # E log N(x; mu, s^2 I) = -log(2 pi e s^2) = -1.452 for exact samples, and that minus
    # |shift|^2 / (2 s^2) = 8 nats for the shifted ones; sd of log p is 1 (d/2 = 1), so the mean of
    # 400 has sd 0.05: 0.2 is 4 sd.
    exact_value = -math.log(2 * math.pi * math.e * 0.25)
    assert good["class_log_prob_nats"] == pytest.approx(exact_value, abs=0.2)
    assert off["class_log_prob_nats"] == pytest.approx(exact_value - 8.0, abs=0.3)
    # SW2 of a translation by v in 2-D is |v| / sqrt(2) = 1.41; exact samples against 400 others
    # score about 0.05 (finite-sample noise).
    assert good["sliced_w2_to_class_data_units"] < 0.15
    assert off["sliced_w2_to_class_data_units"] == pytest.approx(2.0 / math.sqrt(2), abs=0.15)
    ref = example.exact_reference(exact, 400)
    assert ref["class_log_prob_nats"] == pytest.approx(exact_value, abs=0.2)
