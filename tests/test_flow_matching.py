"""Flow matching end to end: the likelihood of a tiny velocity model against the raw
flow-matching ODE, and (slow) the example and the benchmark."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sdescore

ROOT = Path(__file__).resolve().parents[1]
F64 = {"dtype": torch.float64}


def _rk4_log_prob(model, x, eps, T, steps=50):
    """log p_eps(x) from dx/dt = u(x, t), d log p/dt = -div u, integrated eps -> T by RK4 with
    the exact trace of du/dx (torch.func), using the network's velocity directly (a smooth
    random MLP: 50 steps agree with 400 to 1e-12)."""
    sde = model.sde

    def rhs(t, y):
        xs = y[:, :-1]
        tb = torch.full((xs.shape[0],), t, **F64)
        u = model.net(xs, tb)
        jac = torch.func.vmap(torch.func.jacrev(lambda v, s: model.net(v[None], s[None])[0]))(
            xs, tb
        )
        div = jac.diagonal(dim1=-2, dim2=-1).sum(-1)
        return torch.cat([u, div[:, None]], 1)

    y = torch.cat([x, torch.zeros(x.shape[0], 1, **F64)], 1)
    h = (T - eps) / steps
    for i in range(steps):
        t = eps + i * h
        k1 = rhs(t, y)
        k2 = rhs(t + h / 2, y + h / 2 * k1)
        k3 = rhs(t + h / 2, y + h / 2 * k2)
        k4 = rhs(t + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    z, delta = y[:, :-1], y[:, -1]
    return sde.prior_logp(z) + delta, z


def test_likelihood_of_a_tiny_velocity_model_matches_the_flow_matching_ode():
    torch.manual_seed(0)
    net = sdescore.MLPScoreNet(2, hidden=32, depth=2, fourier_scale=1.0).double()
    sde = sdescore.RectifiedFlowSDE()
    model = sdescore.ScoreModel(net, sde, "velocity")
    x = torch.randn(8, 2, **F64, generator=torch.Generator().manual_seed(1))
    eps = 1e-3
    ref, z_ref = _rk4_log_prob(model, x, eps, sde.T)
    res = sdescore.likelihood(model, x, estimator="exact", eps=eps, rtol=1e-9, atol=1e-9)
    # measured: 7e-8 (latent), 1.1e-7 (log p); at rtol = atol = 1e-9, 1.2e-9 for both, so the
    # score round trip and the PF drift f x - g^2 s / 2 recover u to the solver's tolerance
    assert torch.allclose(res.latent, z_ref, rtol=0, atol=1e-6)
    assert torch.allclose(res.log_prob, ref, rtol=0, atol=1e-6)
    bpd = res.bits_per_dim
    assert torch.allclose(bpd, -res.log_prob / (2 * torch.log(torch.tensor(2.0, **F64))))


@pytest.mark.slow
def test_flow_matching_example_runs(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(ROOT / "examples" / "flow_matching_2d.py"), "--quick"]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["samplers"]) >= {"auto", "unipc", "dopri5", "euler"}
    # the quick model is rough but lands on the modes: SW2 within 3x the floor
    for cells in metrics["samplers"].values():
        assert cells["exact"]["sw2"] < 2 * metrics["sw2_floor"]
        assert cells["model"]["sw2"] < 3 * metrics["sw2_floor"]
    assert (tmp_path / "samples.png").exists()


@pytest.mark.slow
def test_flow_matching_benchmark_runs():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "flow_matching.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| auto (by budget) |" in proc.stdout and "likelihood" in proc.stdout
