"""Mixed precision in the samplers: a float32 state with the network under `torch.autocast`.

The network is the exact noise predictor of Gaussian data $N(\\mu, s^2 I)$ under the VP SDE,
computed through an `nn.Linear` (identity weights), so that autocast runs its matmul in bfloat16
(8 significant bits, relative rounding $2^{-9}$) while the exact answer stays known. The claims:
the state, the time grid and the samples stay float32 (float64 stays float64); the network's
bfloat16 output is cast back to the state's dtype before any solver arithmetic; the samples are
those of float32 to within the rounding that bfloat16 puts into every score call. All on the CPU
(bfloat16 autocast); about 2 s.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sdescore

MU = torch.tensor([0.7, -0.3])
S = 0.4
N = 256


class GaussianEpsNet(nn.Module):
    r"""$\varepsilon(x, t) = \sigma_t (x - \alpha_t\mu) / (\alpha_t^2 s^2 + \sigma_t^2)$, the
    exact noise predictor of $N(\mu, s^2 I)$ data, through a Linear layer."""

    def __init__(self, sde: sdescore.VPSDE):
        super().__init__()
        self.sde = sde
        self.lin = nn.Linear(2, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(2))
            self.lin.bias.zero_()
        self.outputs: list[torch.dtype] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, sig = self.sde.alpha(t)[:, None], self.sde.sigma(t)[:, None]
        h = self.lin(x - a * MU.to(x.dtype))
        self.outputs.append(h.dtype)  # bfloat16 under autocast
        return h * (sig / (a.square() * S**2 + sig.square()))


def _model(dtype=torch.float32) -> sdescore.ScoreModel:
    sde = sdescore.VPSDE()
    return sdescore.ScoreModel(GaussianEpsNet(sde), sde, "eps").to(dtype)


class Autocast:
    """A score function running its network in bfloat16 (what a user writes); records the
    dtypes of the state and time it receives."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def __call__(self, x, t):
        self.seen.append((x.dtype, t.dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(x, t)


# (process, method, steps, tolerance on the largest |bf16 - float32| over 256 samples).
# Measured largest differences: ODE 4.5e-3 (Euler) to 8.5e-3 (auto: UniPC-3 at 20 calls; 8.7e-3
# for DPM-Solver++(3M)); SDE 5e-4 to 1.3e-3
# (the reverse SDE contracts errors). The bounds are about twice those: far below the data's
# spread (s = 0.4), far above float32 rounding (~1e-7).
CASES = [
    ("ode", "auto", 20, 2e-2),
    ("ode", "euler", 50, 1e-2),
    ("sde", "euler_maruyama", 100, 3e-3),
    ("sde", "reverse_diffusion", 100, 3e-3),
    ("sde", "ancestral", 100, 3e-3),
    ("sde", "pc", 100, 3e-3),
    ("sde", "annealed_langevin", 100, 3e-3),
    ("sde", "sde_dpm_solver", 50, 3e-3),
    ("ode", "dpm_solver", 20, 2e-2),
]


def _sample(score, process, method, steps, dtype=torch.float32):
    sde = sdescore.VPSDE()
    proc = sde.probability_flow(score) if process == "ode" else sde.reverse(score)
    g = torch.Generator().manual_seed(0)
    return proc.sample((N, 2), method=method, steps=steps, generator=g, dtype=dtype)


@pytest.mark.parametrize(("process", "method", "steps", "tol"), CASES)
def test_bfloat16_network_float32_state(process, method, steps, tol):
    model = _model()
    ref = _sample(model, process, method, steps)
    score = Autocast(model)
    model.net.outputs.clear()
    x = _sample(score, process, method, steps)
    assert x.dtype == torch.float32
    # the network ran in bfloat16; the solver handed it a float32 state and a float32 time
    assert set(model.net.outputs) == {torch.bfloat16}
    assert set(score.seen) == {(torch.float32, torch.float32)}
    err = (x - ref).abs()
    assert 0 < err.max().item() < tol  # > 0: autocast did take effect
    assert err.mean().item() < tol / 5


@pytest.mark.parametrize(("process", "method", "steps", "tol"), [CASES[0], CASES[2]])
def test_a_bfloat16_score_is_cast_to_the_state_dtype(process, method, steps, tol):
    """A score function that answers in bfloat16 (e.g. a bare network under autocast) is cast
    back to the float32 state before any solver arithmetic: float32 samples, float32 accuracy
    but for the score's own rounding."""
    model = _model()
    ref = _sample(model, process, method, steps)
    x = _sample(lambda x, t: model(x, t).bfloat16(), process, method, steps)
    assert x.dtype == torch.float32
    assert 0 < (x - ref).abs().max().item() < tol


@pytest.mark.parametrize("method", ["auto", "dpm_solver", "dopri5", "pc", "euler_maruyama"])
def test_autocast_around_the_call_equals_autocast_in_the_network(method):
    """The solvers' own arithmetic is elementwise, which autocast leaves alone: wrapping the whole
    `sample` call is bit for bit wrapping only the network (no solver step runs in bfloat16)."""
    process = "ode" if method in ("auto", "dpm_solver", "dopri5") else "sde"
    steps = None if method == "dopri5" else 20
    model = _model()
    inside = _sample(Autocast(model), process, method, steps)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        around = _sample(model, process, method, steps)
    assert around.dtype == torch.float32
    assert torch.equal(inside, around)


def test_float64_is_untouched_by_autocast():
    """Autocast casts float32 only: a float64 model and state give float64, bit for bit."""
    model = _model(torch.float64)
    for process, method, steps, _ in CASES[:3]:
        ref = _sample(model, process, method, steps, dtype=torch.float64)
        x = _sample(Autocast(model), process, method, steps, dtype=torch.float64)
        assert x.dtype == torch.float64 and torch.equal(x, ref)


@pytest.mark.parametrize("method, tol", [("dopri5", 1e-4), ("exp_abm", None)])
def test_likelihood_with_a_bfloat16_network(method, tol):
    """`likelihood` with the network under autocast: the ODE state and the log-density
    accumulator stay float32 (the result is float32), and the log-densities are those of the
    float32 network to within the bfloat16 rounding of the score (measured: 3e-3 nats mean,
    5e-2 worst over 64 points). The divergence's vector-Jacobian products run through the same
    autocast graph."""
    model = _model()
    x = (MU + S * torch.randn(64, 2, generator=torch.Generator().manual_seed(0))).float()
    kw = dict(sde=model.sde, estimator="exact", method=method, rtol=tol, atol=tol)
    ref = sdescore.likelihood(model, x, **kw)
    fn = Autocast(model)
    res = sdescore.likelihood(fn, x, **kw)
    assert res.log_prob.dtype == torch.float32 and res.latent.dtype == torch.float32
    assert all(seen == (torch.float32, torch.float32) for seen in fn.seen)
    assert torch.bfloat16 in model.net.outputs  # the network really ran in bfloat16
    diff = (res.log_prob - ref.log_prob).abs()
    assert diff.mean() < 1e-2 and diff.max() < 0.1, diff
