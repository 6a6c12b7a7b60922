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


# A stand-in for Lu et al.'s `dpm_solver_pytorch.py` with its interface (the real file is not on
# the package index): a first-order DPM-Solver (DDIM) step, whatever the configuration.
_STUB_OFFICIAL = """
import math
import torch


class NoiseScheduleVP:
    def __init__(self, schedule, continuous_beta_0, continuous_beta_1):
        self.b0, self.b1 = continuous_beta_0, continuous_beta_1

    def marginal_log_mean_coeff(self, t):
        return -0.25 * t**2 * (self.b1 - self.b0) - 0.5 * t * self.b0

    def marginal_std(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.marginal_log_mean_coeff(t)))


def model_wrapper(model, noise_schedule, model_type):
    return lambda x, t: model(x, t.expand(x.shape[0]))


class DPM_Solver:
    def __init__(self, model_fn, noise_schedule, algorithm_type):
        self.model, self.ns = model_fn, noise_schedule

    def sample(self, x, steps, t_start, t_end, order, skip_type, method, lower_order_final):
        ts = torch.linspace(t_start, t_end, steps + 1)
        for s, t in zip(ts[:-1], ts[1:]):
            a_s, a_t = self.ns.marginal_log_mean_coeff(s).exp(), self.ns.marginal_log_mean_coeff(t).exp()
            eps = self.model(x, s)
            x0 = (x - self.ns.marginal_std(s) * eps) / a_s
            x = a_t * x0 + self.ns.marginal_std(t) * eps
        return x
"""


@pytest.mark.slow  # runs a benchmark script (about 15 s)
def test_peers_runs_the_official_file_given_as_dpm_solver(tmp_path):
    stub = tmp_path / "dpm_solver_pytorch.py"
    stub.write_text(_STUB_OFFICIAL)
    out = _run("--quick", "--dpm-solver", str(stub))
    assert "not re-run" not in out  # the library row is measured, not the fixed one
    rows = {line[:24].strip(): line[24:].split() for line in out.splitlines()}
    # DDIM at 10 calls on a time-uniform grid: a finite error, far above the default's
    assert float(rows["official DPM-Solver"][0]) > float(rows["sdescore default"][0])
    assert "official DPM-Solver best configs: 10:" in out


def test_official_dpm_solver_file_must_exist(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import official_dpm_solver

    with pytest.raises(ValueError, match="--dpm-solver: no file at"):
        official_dpm_solver.load(str(tmp_path / "missing.py"))
    names = list(official_dpm_solver._config_names())
    assert len(names) == len(set(names)) == 42  # 2 algorithms x 3 grids x 7 solvers
