"""iPNDM (Zhang & Chen 2023, DEIS App. B): Adams-Bashforth of order k on dy/d(sigma/alpha) =
eps-hat converges at order k on a grid uniform in sigma/alpha (log-log fit), costs one score
call per step, and is accurate at a small budget on the default grid."""

import math

import numpy as np
import pytest
import torch

import sdescore
from sdescore.solvers import Problem
from sdescore.solvers._common import CountedScore, Recorder

from problems import make_sdes

VP = make_sdes()["vp"]
EPS = 1e-3
F64 = {"dtype": torch.float64}
DATA = sdescore.toy.eight_gaussians()
PF = VP.probability_flow(DATA.score_fn(VP))


def _solve(solver, x, n):
    """The PF ODE from t = 0.5 to 0.1 by `solver` (a stretch where sigma/alpha runs over
    [0.1, 1.2]: smooth enough for the asymptotic regime at a few dozen steps)."""
    score = CountedScore(DATA.score_fn(VP), progress=None)
    p = Problem(sde=VP, score=score, x=x, t0=0.5, t1=0.1, steps=n, generator=None,
                record=Recorder(False))  # fmt: skip
    out = solver.integrate(p)
    return out, score.nfe


def _errors(order):
    x = VP.prior_sampling((256, 2), generator=torch.Generator().manual_seed(0), **F64)
    x = x * VP.sigma(torch.tensor(0.5, **F64))  # a state of the right scale at t = 0.5
    exact, _ = _solve(sdescore.TorchDiffEq("dopri5", rtol=1e-13, atol=1e-13), x, None)
    sb = torch.exp(-VP.log_snr(torch.tensor([0.5, 0.1], **F64)))
    errs = []
    for n in NS:
        s = torch.linspace(float(sb[0]), float(sb[1]), n + 1, **F64)
        solver = sdescore.IPNDM(order=order, grid=VP.t_from_log_snr(-s.log()))
        out, nfe = _solve(solver, x, n)
        assert nfe == n  # one score call per step
        errs.append((out - exact).abs().mean().item())
    return np.array(errs)


NS = [16, 32, 64, 128]


def test_convergence_orders_on_equal_steps():
    """Orders 1 and 2 converge at their order (log-log slope within 0.3). The warm start's
    first step is Euler's, whose local error h^2 enters once, so orders 3 and 4 converge at
    order 2 asymptotically (measured slopes 3.2 and 2.9 over 16-128 steps: the h^2 term is
    small) and are more accurate than order 2 at every step count."""
    errs = {k: _errors(k) for k in (1, 2, 3, 4)}
    slope = {k: -np.polyfit(np.log(NS), np.log(e), 1)[0] for k, e in errs.items()}
    assert slope[1] == pytest.approx(1, abs=0.3) and slope[2] == pytest.approx(2, abs=0.3), slope
    for k in (3, 4):
        assert slope[k] > 1.8, slope
        assert (errs[k] < errs[2]).all(), errs


def test_small_budgets_on_the_default_grid():
    # measured (4096 draws): 1.1e-1, 3.1e-2, 1.5e-2 at 6, 8, 10 calls; bounds with headroom
    z = VP.prior_sampling((1024, 2), generator=torch.Generator().manual_seed(0), **F64)
    ref = PF.sample(x_T=z, method=sdescore.TorchDiffEq("dopri5", rtol=1e-10, atol=1e-10))
    for n, bound in ((6, 0.2), (8, 0.06), (10, 0.03)):
        info = PF.sample(x_T=z, method="ipndm", steps=n, return_info=True)
        assert info.nfe == n and "iPNDM" in info.solver
        err = (info.samples - ref).norm(dim=1).mean().item()
        assert err < bound, (n, err)
    assert math.isfinite(err)


def test_bad_options():
    with pytest.raises(ValueError, match="order must be 1, 2, 3 or 4"):
        sdescore.IPNDM(order=5)
    with pytest.raises(ValueError, match="grid must be one of"):
        sdescore.IPNDM(grid="edm")
