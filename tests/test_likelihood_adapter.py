"""The torchdiffeq adapter `odeint_drift` on ODEs with closed-form solutions."""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq

from sdescore.solvers.torchdiffeq import odeint_drift

F64 = torch.float64


def lam(t):
    return -1.0 + 2.0 * t  # dx/dt = lam(t) x  =>  x(t) = x0 exp(-(t - t0) + t^2 - t0^2)


def flow(x0, t0, t1):
    return x0 * math.exp(-(t1 - t0) + t1**2 - t0**2)


class Recorder:
    """dx/dt = lam(t) x with aux rate |x|^2 per example; records the times it is called at."""

    def __init__(self, aux=False):
        self.aux, self.times, self.calls = aux, [], 0

    def __call__(self, x, t):
        self.calls += 1
        assert t.shape == (x.shape[0],) and t.dtype == x.dtype
        self.times.append(t)
        v = lam(t).reshape(-1, *([1] * (x.ndim - 1))) * x
        if not self.aux:
            return v
        return v, x.reshape(x.shape[0], -1).square().sum(1)


@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (1.0, 1e-5), (0.3, 0.30001)])
@pytest.mark.parametrize("shape", [(3,), (3, 2), (2, 1, 2, 2)])
def test_closed_form_both_directions(t0, t1, shape):
    x0 = torch.linspace(-1, 1, math.prod(shape), dtype=F64).reshape(shape)
    keep = x0.clone()
    f = Recorder()
    sol = odeint_drift(f, x0, t0, t1, rtol=1e-9, atol=1e-9)
    # tolerance 1e-7: dopri5 at rtol = atol = 1e-9 on a smooth scalar ODE
    torch.testing.assert_close(sol.x, flow(x0, t0, t1), rtol=0, atol=1e-7)
    assert sol.nfe == f.calls > 0 and sol.aux is None and sol.xs is None
    assert torch.equal(x0, keep)
    # Every evaluation inside [t0, t1]: the guard against evaluating the SDE beyond its ends.
    ts = torch.cat(f.times)
    assert ts.min() >= min(t0, t1) and ts.max() <= max(t0, t1)


def test_plain_torchdiffeq_overshoots_but_adapter_does_not():
    """Why the guard exists: torchdiffeq alone probes times beyond the end (t < 0 here)."""
    seen = []

    def f(t, y):
        seen.append(float(t))
        return -y

    y = torch.ones(3, 1, dtype=F64)
    torchdiffeq.odeint(f, y, torch.tensor([1.0, 1e-5], dtype=F64), rtol=1e-5, atol=1e-5)
    assert min(seen) < 0
    rec = Recorder()
    odeint_drift(rec, y, 1.0, 1e-5)
    assert float(torch.cat(rec.times).min()) >= 1e-5


def test_aux_channel_and_save_at():
    x0 = torch.tensor([[0.5, -1.0], [2.0, 0.1]], dtype=F64)
    aux0 = torch.zeros(2, dtype=F64)
    sol = odeint_drift(
        Recorder(aux=True), x0, 0.0, 1.0, aux0=aux0, save_at=[0.25, 0.5], rtol=1e-10, atol=1e-10
    )
    # int_0^1 |x(t)|^2 dt with x(t) = x0 exp(-t + t^2): |x0|^2 int exp(2(t^2 - t)) dt
    grid = torch.linspace(0, 1, 200001, dtype=F64)
    integral = torch.trapezoid(torch.exp(2 * (grid**2 - grid)), grid)
    torch.testing.assert_close(sol.aux, x0.square().sum(1) * integral, rtol=1e-8, atol=0)
    torch.testing.assert_close(sol.times, torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=F64))
    for i, t in enumerate([0.0, 0.25, 0.5, 1.0]):
        torch.testing.assert_close(sol.xs[i], flow(x0, 0.0, t), rtol=0, atol=1e-8)
    assert sol.auxs.shape == (4, 2)


def test_step_control_on_x_only_saves_evaluations():
    """A rough auxiliary channel steers the steps under "all" but not under "x"."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, 2, generator=g, dtype=F64)
    w = 1 + torch.rand(16, 64, generator=g, dtype=F64)  # oscillations in aux only

    def drift(x, t):
        return lam(t)[:, None] * x, torch.sin(40 * w * t[None])

    kw = dict(aux0=torch.zeros(16, 64, dtype=F64), rtol=1e-6, atol=1e-6)
    a = odeint_drift(drift, x0, 0.0, 1.0, step_control="x", **kw)
    b = odeint_drift(drift, x0, 0.0, 1.0, step_control="all", **kw)
    assert a.nfe < b.nfe
    torch.testing.assert_close(a.x, flow(x0, 0.0, 1.0), rtol=0, atol=1e-5)


def test_per_example_control_meets_the_tolerance_for_every_example():
    # One stiff-ish example among many easy ones: batch RMS control lets it carry a larger error.
    x0 = torch.ones(64, 1, dtype=F64)
    rate = torch.ones(64, 1, dtype=F64)
    rate[0] = 40.0

    def drift(x, t):
        return -rate * x * torch.cos(6 * t)[:, None]

    exact = torch.exp(-rate * math.sin(6.0) / 6)
    a = odeint_drift(drift, x0, 0.0, 1.0, rtol=1e-5, atol=1e-5)
    b = odeint_drift(drift, x0, 0.0, 1.0, rtol=1e-5, atol=1e-5, step_control="x_per_example")
    err_a, err_b = (a.x - exact).abs().max(), (b.x - exact).abs().max()
    assert b.nfe > a.nfe and err_b < err_a


def test_float32_in_float32_out_and_fixed_step_methods():
    x0 = torch.ones(4, 3)
    sol = odeint_drift(Recorder(), x0, 0.0, 1.0)
    assert sol.x.dtype == torch.float32
    torch.testing.assert_close(sol.x, flow(x0, 0.0, 1.0), rtol=1e-4, atol=0)
    rk4 = odeint_drift(Recorder(), x0.double(), 0.0, 1.0, method="rk4", options={"step_size": 0.01})
    torch.testing.assert_close(rk4.x, flow(x0.double(), 0.0, 1.0), rtol=1e-8, atol=0)


def test_bad_arguments():
    x0 = torch.ones(2, 2)
    with pytest.raises(ValueError, match="method must be one of .*dopri5"):
        odeint_drift(Recorder(), x0, 0.0, 1.0, method="rk45")
    with pytest.raises(ValueError, match="t0 and t1 must differ"):
        odeint_drift(Recorder(), x0, 0.5, 0.5)
    with pytest.raises(ValueError, match="save_at"):
        odeint_drift(Recorder(), x0, 0.0, 1.0, save_at=[0.5, 0.2])
    with pytest.raises(ValueError, match="step_control"):
        odeint_drift(Recorder(), x0, 0.0, 1.0, step_control="logp")
    with pytest.raises(ValueError, match=r"returned shape \(2, 1\), expected \(2, 2\)"):
        odeint_drift(lambda x, t: x[:, :1], x0, 0.0, 1.0)
    with pytest.raises(TypeError, match="must return a pair"):
        odeint_drift(lambda x, t: x, x0, 0.0, 1.0, aux0=torch.zeros(2))
    with pytest.raises(TypeError, match="drift must be callable"):
        odeint_drift(None, x0, 0.0, 1.0)


def test_blow_up_is_reported_as_runtime_error():
    x0 = torch.ones(2, 1, dtype=F64)
    with pytest.raises(RuntimeError, match="underflow|blows up"):
        odeint_drift(lambda x, t: x.square() * 1e3, x0, 0.0, 1.0)
