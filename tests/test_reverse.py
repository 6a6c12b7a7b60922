r"""The oracle's p_t solves the Fokker-Planck equation, and the derived processes keep p_t.

All three are checked pointwise with autograd derivatives, in float64, through one identity for
$\ell = \log p_t$:  $\partial_t \ell = -\nabla\cdot V - V\cdot\nabla\ell + c\,\tfrac12 g^2 (\Delta\ell + |\nabla\ell|^2)$
with $(V, c)$ = (forward drift, +1) for the forward SDE (Fokker-Planck), (PF-ODE drift, 0) for the
probability-flow ODE (continuity equation) and (reverse drift, -1) for the reverse-time SDE run
backwards from T (its Fokker-Planck equation in reversed time $\tau = T - t$).
"""

import pytest
import torch

import sdescore

from problems import image_gaussian, make_sdes, mixture_2d

SDES = make_sdes()


def _pde_residual(data, sde, field, c, x, t):
    x = x.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    ell = data.marginal_log_prob(x, t, sde)
    dl_dt, grad = torch.autograd.grad(ell.sum(), (t, x), create_graph=True)
    flat_grad = grad.reshape(x.shape[0], -1)
    lap = torch.zeros_like(ell)
    div = torch.zeros_like(ell)
    v = field(x, t).reshape(x.shape[0], -1)
    for i in range(flat_grad.shape[1]):
        lap = (
            lap
            + torch.autograd.grad(flat_grad[:, i].sum(), x, retain_graph=True)[0].reshape(
                x.shape[0], -1
            )[:, i]
        )
        div = (
            div
            + torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)[0].reshape(x.shape[0], -1)[
                :, i
            ]
        )
    g2 = sde.diffusion(t).square()
    rhs = -div - (v * flat_grad).sum(1) + c * 0.5 * g2 * (lap + flat_grad.square().sum(1))
    return (dl_dt - rhs).detach(), dl_dt.detach()


def _points(data, sde, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = (0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)) * sde.T
    x0 = data.sample(n, generator=g, dtype=torch.float64)
    return sde.perturb(x0, t, generator=g)[0], t


@pytest.mark.parametrize("name", sorted(SDES))
@pytest.mark.parametrize("process", ["forward", "probability_flow", "reverse"])
def test_marginals_are_preserved(name, process):
    sde, data = SDES[name], mixture_2d()
    score_fn = data.score_fn(sde)
    field, c = {
        "forward": (sde.drift, 1.0),
        "probability_flow": (sde.probability_flow(score_fn).drift, 0.0),
        "reverse": (sde.reverse(score_fn).drift, -1.0),
    }[process]
    x, t = _points(data, sde)
    residual, scale = _pde_residual(data, sde, field, c, x, t)
    # both sides are O(1)-O(100); 1e-8 relative to their size is far below any sign or factor error
    assert residual.abs().max() <= 1e-8 * (1 + scale.abs().max())


def test_wrong_factor_is_caught():
    # the same identity with the PF drift but c = 1 must fail: the check has power
    sde, data = SDES["vp"], mixture_2d()
    x, t = _points(data, sde)
    residual, _ = _pde_residual(
        data, sde, sde.probability_flow(data.score_fn(sde)).drift, 1.0, x, t
    )
    assert residual.abs().max() > 1e-2


def test_fokker_planck_on_image_shaped_states():
    sde, data = SDES["subvp"], image_gaussian((1, 3, 3))
    x, t = _points(data, sde, n=4)
    residual, scale = _pde_residual(data, sde, sde.reverse(data.score_fn(sde)).drift, -1.0, x, t)
    assert residual.abs().max() <= 1e-8 * (1 + scale.abs().max())


@pytest.mark.parametrize("shape", [(7,), (7, 3), (7, 2, 3, 3)])
def test_drift_identities_any_shape(shape):
    sde = sdescore.VESDE()
    score_fn = lambda x, t: -x / (1 + t.reshape(-1, *[1] * (x.ndim - 1)))  # noqa: E731
    x = torch.randn(shape, dtype=torch.float64)
    t = torch.rand(shape[0], dtype=torch.float64)
    rev, pf = sde.reverse(score_fn), sde.probability_flow(score_fn)
    f, g = sde.sde(x, t)
    s = score_fn(x, t)
    g2 = g.square().reshape(-1, *[1] * (x.ndim - 1))
    assert torch.allclose(rev.drift(x, t), f - g2 * s, rtol=1e-14)
    assert torch.allclose(pf.drift(x, t), f - 0.5 * g2 * s, rtol=1e-14)
    assert torch.equal(rev.diffusion(t), g) and torch.equal(pf.diffusion(t), torch.zeros_like(g))
    assert torch.allclose(2 * pf.drift(x, t) - rev.drift(x, t), f, rtol=1e-12, atol=1e-12)


def test_user_defined_nonlinear_sde_gets_reverse_and_flow():
    class DoubleWell(sdescore.SDE):
        """dx = (x - x^3) dt + 0.7 dw: no Gaussian kernel, still reversible."""

        def drift(self, x, t):
            return x - x**3

        def diffusion(self, t):
            return torch.full_like(t, 0.7)

    sde = DoubleWell(T=2.0)
    score_fn = lambda x, t: -x  # noqa: E731
    x, t = torch.randn(5, 1, dtype=torch.float64), torch.rand(5, dtype=torch.float64)
    assert torch.allclose(sde.reverse(score_fn).drift(x, t), x - x**3 + 0.49 * x, rtol=1e-14)
    assert torch.allclose(
        sde.probability_flow(score_fn).drift(x, t), x - x**3 + 0.245 * x, rtol=1e-14
    )
    assert sde.reverse(score_fn).T == 2.0
