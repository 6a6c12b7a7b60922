"""Exact and Hutchinson divergence against Jacobians computed by torch.func."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sdescore
from sdescore.divergence import divergence_exact, divergence_hutchinson, draw_probes

F64 = torch.float64


class Field:
    """A nonlinear field acting per example on states of any shape, with a non-symmetric J."""

    def __init__(self, shape, seed=0):
        g = torch.Generator().manual_seed(seed)
        d = math.prod(shape)
        self.A = torch.randn(d, d, generator=g, dtype=F64) / math.sqrt(d)
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        y = torch.tanh(x.reshape(x.shape[0], -1) @ self.A.T) * (1 + t[:, None])
        return (y + 0.3 * x.reshape(x.shape[0], -1).square()).reshape(x.shape)

    def jacobian(self, x, t):
        def one(xi, ti):
            return self(xi[None], ti[None])[0].reshape(-1)

        j = torch.func.vmap(torch.func.jacrev(one))(x, t)
        return j.reshape(x.shape[0], j.shape[1], -1)


@given(
    shape=st.sampled_from([(1,), (3,), (2, 2), (1, 3, 2), (2, 2, 2)]),
    batch=st.integers(1, 5),
    seed=st.integers(0, 1000),
)
def test_exact_divergence_is_the_trace(shape, batch, seed):
    f = Field(shape, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=g, dtype=F64)
    t = torch.rand(batch, generator=g, dtype=F64)
    v, div = divergence_exact(f, x, t)
    tr = f.jacobian(x, t).diagonal(dim1=1, dim2=2).sum(-1)
    torch.testing.assert_close(div, tr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(v, f(x, t))
    _, div2 = divergence_exact(f, x, t, chunk=3)
    torch.testing.assert_close(div2, tr, rtol=1e-12, atol=1e-12)


def test_one_forward_pass_per_call():
    f = Field((4,))
    x, t = torch.randn(3, 4, dtype=F64), torch.rand(3, dtype=F64)
    divergence_exact(f, x, t)
    divergence_hutchinson(f, x, t, draw_probes(x, 5))
    assert f.calls == 2


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_unbiased_with_the_known_variance(noise):
    """Mean within 4 SE of the trace; variance matches the closed form for each probe law.

    For J (not symmetric) and probes with E[e e^T] = I: Var(e^T J e) is
    sum_{i != j} J_ij (J_ij + J_ji) for Rademacher and sum_ij J_ij (J_ij + J_ji) for Gaussian.
    """
    f = Field((3,), seed=3)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.rand(2, generator=torch.Generator().manual_seed(2), dtype=F64)
    k = 20000
    probes = draw_probes(x, k, noise=noise, generator=torch.Generator().manual_seed(4))
    _, est = divergence_hutchinson(f, x, t, probes)
    J = f.jacobian(x, t)
    tr = J.diagonal(dim1=1, dim2=2).sum(-1)
    sym = (J * (J + J.transpose(1, 2))).sum((1, 2))
    var = sym - 2 * J.diagonal(dim1=1, dim2=2).square().sum(-1) if noise == "rademacher" else sym
    se = (var / k).sqrt()
    assert ((est.mean(0) - tr).abs() <= 4 * se).all()
    # Sample variance vs closed form: relative SE of a variance from 2e4 draws is < 3% here.
    torch.testing.assert_close(est.var(0), var, rtol=0.1, atol=0)


def test_variance_falls_like_one_over_k():
    f = Field((4,), seed=5)
    x = torch.randn(1, 4, generator=torch.Generator().manual_seed(6), dtype=F64)
    t = torch.full((1,), 0.3, dtype=F64)
    _, est = divergence_hutchinson(f, x, t, draw_probes(x, 16000, generator=torch.Generator()))
    v1 = est[:, 0].var()
    for k in (4, 16):
        vk = est[:, 0].reshape(-1, k).mean(1).var()
        # 16000/k groups: relative SE of the variance estimate <= sqrt(2 / 1000) * kurtosis ~ 6%
        assert 0.75 < float(vk * k / v1) < 1.25


def test_probes_reproducible_and_valid():
    x = torch.zeros(3, 2, 2)
    a = draw_probes(x, 4, generator=torch.Generator().manual_seed(0))
    b = draw_probes(x, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (4, 3, 2, 2) and a.dtype == x.dtype
    assert set(a.unique().tolist()) == {-1.0, 1.0}
    with pytest.raises(ValueError, match="noise must be one of .*rademacher.*gaussian"):
        draw_probes(x, 1, noise="uniform")
    with pytest.raises(ValueError, match="probes must be an int >= 1"):
        draw_probes(x, 0)
    with pytest.raises(ValueError, match="probes must have shape"):
        divergence_hutchinson(Field((2, 2)), x, torch.zeros(3), torch.ones(3, 2, 2))


def test_callers_tensor_untouched():
    f = Field((2,))
    x = torch.randn(3, 2, dtype=F64)
    keep = x.clone()
    divergence_exact(f, x, torch.zeros(3, dtype=F64))
    assert not x.requires_grad and torch.equal(x, keep)
    xr = x.clone().requires_grad_(True)
    _, div = divergence_exact(f, xr, torch.zeros(3, dtype=F64))
    assert xr.requires_grad and xr.grad is None and not div.requires_grad


def test_create_graph_differentiates_the_divergence():
    # d/da of div(a * tanh(x)) at x: sum_i (1 - tanh(x_i)^2)
    a = torch.tensor(2.0, dtype=F64, requires_grad=True)
    x = torch.randn(4, 3, dtype=F64)
    _, div = divergence_exact(lambda y, t: a * torch.tanh(y), x, torch.zeros(4), create_graph=True)
    (grad,) = torch.autograd.grad(div.sum(), a)
    torch.testing.assert_close(grad, (1 - torch.tanh(x).square()).sum())


def test_a_field_without_a_graph_is_named():
    """A field detached from x used to fail deep inside autograd ("element 0 of tensors does not
    require grad"); every consumer of the divergence (likelihood, elbo) now gets a TypeError
    that says why."""
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((3,), 0.5, dtype=torch.float64)
    probes = torch.ones(1, 3, 4, dtype=torch.float64)
    for call in (
        lambda: divergence_exact(lambda y, s: -y.detach(), x, t),
        lambda: divergence_hutchinson(lambda y, s: -y.detach(), x, t, probes),
        lambda: sdescore.elbo(lambda y, s: -y.detach(), x, sde=sdescore.VPSDE(), samples=4),
    ):
        with pytest.raises(TypeError, match="without an autograd graph to x"):
            call()


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_products_one_call_each_equal_the_batched_ones(monkeypatch, k):
    """On the CPU up to 4 vector-Jacobian products are taken one backward call each (faster
    than vmap's batched call there); both ways give the same numbers, graph kept or not."""
    from sdescore import _divergence

    g = torch.Generator().manual_seed(k)
    w = torch.randn(6, 6, dtype=torch.float64, generator=g)

    def fn(x, t):
        return torch.tanh(x @ w) * t[:, None]

    x = torch.randn(5, 6, dtype=torch.float64, generator=g)
    t = torch.rand(5, dtype=torch.float64, generator=g)
    probes = draw_probes(x, k, generator=g)
    loop = divergence_hutchinson(fn, x, t, probes)[1]
    exact = divergence_exact(fn, x, t, chunk=k)[1]
    monkeypatch.setattr(_divergence, "_LOOP_PRODUCTS", 0)
    torch.testing.assert_close(divergence_hutchinson(fn, x, t, probes)[1], loop, rtol=0, atol=1e-14)
    torch.testing.assert_close(divergence_exact(fn, x, t, chunk=k)[1], exact, rtol=0, atol=1e-14)
    # the exact trace of this field, from its Jacobian: t * sum_i (1 - tanh^2)_i w_ii
    ref = t * ((1 - torch.tanh(x @ w) ** 2) * torch.diagonal(w)).sum(1)
    torch.testing.assert_close(exact, ref, rtol=1e-12, atol=1e-12)
