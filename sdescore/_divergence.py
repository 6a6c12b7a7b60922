r"""Divergence $\nabla\cdot v(x) = \operatorname{tr} \partial v / \partial x$ of a vector field.

Two estimators, each returning the field value *and* the divergence from a single forward pass
of `fn` (the vector-Jacobian products reuse its graph):

- `divergence_hutchinson`: $\operatorname{tr} J = E[\epsilon^\top J \epsilon]$ for any probe with
  $E[\epsilon\epsilon^\top] = I$ (Hutchinson 1989; Grathwohl et al. 2019, FFJORD, eq. (7)).
  Rademacher probes minimise the variance among such probes, $2\sum_{i \ne j} J_{ij}^2$ (vs.
  $2\|J\|_F^2$ for Gaussian ones, for symmetric $J$).
- `divergence_exact`: the full trace, $\sum_i e_i^\top J e_i$, from `prod(D)` vector-Jacobian
  products batched with `torch.func` machinery (`is_grads_batched`), for moderate dimension.

Both assume `fn` treats the examples of a batch independently (no batch statistics), so that one
backward pass with a probe per example yields every example's product at once.

This is a mechanism below both the solvers (`solvers.exp_abm` takes the divergence inside its
steps) and the evaluation layer (`likelihood`, `elbo`), so it sits with `_checks` and `_shapes` and
imports nothing else from the package; the public module is `sdescore.divergence`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._checks import check_choice, check_generator, check_int, check_output_shape, check_state
from ._shapes import flat_dim

__all__ = [
    "NOISES",
    "check_graph",
    "divergence_exact",
    "divergence_hutchinson",
    "draw_probes",
    "value_and_divergence",
]

NOISES = ("rademacher", "gaussian")
# Up to this many vector-Jacobian products on the CPU are taken one backward call each.
_LOOP_PRODUCTS = 4


def draw_probes(
    x: torch.Tensor, probes: int = 1, *, noise: str = "rademacher", generator=None
) -> torch.Tensor:
    """Draw `probes` independent probe vectors per example, shape `(probes, B, *D)`.

    Args:
        x: a state `(B, *D)`; the probes take its shape, dtype and device.
        probes: number of probes k >= 1.
        noise: `"rademacher"` (entries +-1) or `"gaussian"` (standard normal).
        generator: optional `torch.Generator` (on `x`'s device) for reproducibility.
    """
    check_state(x)
    check_choice("noise", noise, NOISES)
    probes = check_int("probes", probes)
    check_generator("generator", generator)
    shape = (probes, *x.shape)
    if noise == "gaussian":
        return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
    bits = torch.randint(0, 2, shape, generator=generator, device=x.device)
    return bits.to(x.dtype).mul_(2).sub_(1)


def _leaf(x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    # A fresh leaf, so the caller's tensor keeps its requires_grad flag and its graph; when the
    # caller differentiates through the result (create_graph) and x already carries a graph,
    # use x itself so that graph is extended.
    if create_graph and x.requires_grad:
        return x
    return x.detach().requires_grad_(True)


def check_graph(value, x: torch.Tensor, what: str) -> None:
    """Raise `TypeError` when `value`, computed from `x` while its divergence is being taken
    (gradients on, `x` requiring grad), carries no autograd graph: detached, computed under
    `torch.no_grad()`, or constant in `x`, its divergence would otherwise count as zero or fail
    deep inside autograd."""
    if (
        torch.is_grad_enabled()
        and x.requires_grad
        and isinstance(value, torch.Tensor)
        and not value.requires_grad
    ):
        raise TypeError(
            f"{what} returned a tensor without an autograd graph to x (computed under "
            "torch.no_grad(), detached, or constant in x), so its divergence cannot be taken. "
            "Compute it with gradients enabled; a function that truly does not depend on x can "
            "return e.g. `0 * x`"
        )


def _vjps(v, xg, vectors: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """The products `vectors[j]^T (dv/dx)` for each `j`, `(k, B, *D)`, on one forward graph."""
    if vectors.shape[0] <= _LOOP_PRODUCTS and xg.device.type == "cpu":
        # A few products on the CPU: one backward call each beats vmap's batched backward
        # (measured, one thread: 2 products 20-25 % faster on a 2-D mixture score and an MLP,
        # B = 4096, and 10 % on an 8x8 UNet, B = 64; 4 products 10-15 %).
        return torch.stack(
            [
                torch.autograd.grad(v, xg, u, retain_graph=True, create_graph=create_graph)[0]
                for u in vectors
            ]
        )
    if vectors.shape[0] == 1:  # a single product needs no vmap (measured ~7% faster)
        (out,) = torch.autograd.grad(
            v, xg, vectors[0], retain_graph=True, create_graph=create_graph
        )
        return out[None]
    try:
        (out,) = torch.autograd.grad(
            v, xg, vectors, is_grads_batched=True, retain_graph=True, create_graph=create_graph
        )
    except RuntimeError:
        # Some operations have no vmap batching rule: fall back to a loop over the products.
        out = torch.stack(
            [
                torch.autograd.grad(v, xg, u, retain_graph=True, create_graph=create_graph)[0]
                for u in vectors
            ]
        )
    return out


def divergence_hutchinson(
    fn: Callable, x: torch.Tensor, t: torch.Tensor, probes: torch.Tensor, *, create_graph=False
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Value and Hutchinson estimates of the divergence of `fn(., t)` at `x`.

    For each probe $\epsilon_j$ the estimate is $\epsilon_j^\top (\partial v/\partial x)
    \epsilon_j$, unbiased when $E[\epsilon\epsilon^\top] = I$ (FFJORD, eq. (7)); average over `j`
    for the k-probe estimator, whose variance falls like 1/k.

    Args:
        fn: a vector field `fn(x, t) -> (B, *D)` acting on each example independently.
        x: the point `(B, *D)` (not modified; its `requires_grad` is not touched).
        t: time `(B,)`, passed through to `fn`.
        probes: `(k, B, *D)` probe vectors, e.g. from `draw_probes`.
        create_graph: keep the graph so the results can be differentiated (training).

    Returns:
        `(v, est)`: `v = fn(x, t)` `(B, *D)` and the per-probe estimates `est: (k, B)`.
    """
    check_state(x)
    if not isinstance(probes, torch.Tensor) or probes.shape[1:] != x.shape:
        got = tuple(probes.shape) if isinstance(probes, torch.Tensor) else type(probes).__name__
        raise ValueError(f"probes must have shape (k, *x.shape) = (k, {tuple(x.shape)}), got {got}")
    with torch.enable_grad():
        xg = _leaf(x, create_graph)
        v = check_output_shape(fn(xg, t), x, "fn(x, t)")
        check_graph(v, xg, "fn(x, t)")
        vjps = _vjps(v, xg, probes, create_graph)
    est = (vjps * probes).reshape(probes.shape[0], x.shape[0], -1).sum(-1)
    return (v if create_graph else v.detach()), est


def divergence_exact(
    fn: Callable, x: torch.Tensor, t: torch.Tensor, *, chunk: int | None = None, create_graph=False
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Value and exact divergence $\sum_i \partial v_i / \partial x_i$ of `fn(., t)` at `x`.

    Uses `d = prod(D)` vector-Jacobian products $e_i^\top J$ with the standard basis (the same
    basis vector for every example), batched through one backward call with `is_grads_batched`
    (torch.func's vmap), `chunk` basis vectors at a time. Cost: one forward pass and d
    vector-Jacobian products; memory about `chunk * B * d` numbers.

    Args:
        fn: a vector field `fn(x, t) -> (B, *D)` acting on each example independently.
        x: the point `(B, *D)` (not modified).
        t: time `(B,)`, passed through to `fn`.
        chunk: basis vectors per batched backward call; default all d (at most 4096 at a time).
        create_graph: keep the graph so the results can be differentiated.

    Returns:
        `(v, div)`: `v = fn(x, t)` `(B, *D)` and the divergence `(B,)`.
    """
    check_state(x)
    d = flat_dim(x)
    if chunk is None:
        chunk = min(d, 4096)
    chunk = check_int("chunk", chunk)
    b = x.shape[0]
    div = torch.zeros(b, dtype=x.dtype, device=x.device)
    with torch.enable_grad():
        xg = _leaf(x, create_graph)
        v = check_output_shape(fn(xg, t), x, "fn(x, t)")
        check_graph(v, xg, "fn(x, t)")
        for start in range(0, d, chunk):
            n = min(chunk, d - start)
            # basis[j, b] = e_{start + j}, the same basis vector for every example; built from
            # an identity block, not by index assignment (tensor indices sync with the device).
            eye = torch.eye(n, d, dtype=x.dtype, device=x.device).roll(start, dims=1)
            basis = eye[:, None, :].expand(n, b, d)
            vjps = _vjps(v, xg, basis.reshape(n, *x.shape), create_graph).reshape(n, b, d)
            # The j-th product's (start + j)-th coordinate is the diagonal entry J_ii.
            div = div + vjps[:, :, start : start + n].diagonal(dim1=0, dim2=2).sum(-1)
    return (v if create_graph else v.detach()), div


def value_and_divergence(
    fn: Callable,
    x: torch.Tensor,
    t: torch.Tensor,
    probes: torch.Tensor | None = None,
    *,
    chunk: int | None = None,
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(fn(x, t), div)` from one forward pass: the exact divergence `(B,)` when `probes` is
    `None` (`divergence_exact`, `chunk` basis vectors per backward call), else the per-probe
    Hutchinson estimates `(k, B)` for `probes: (k, B, *D)` (`divergence_hutchinson`);
    `create_graph` keeps both differentiable (to `fn`'s parameters and to `x`)."""
    if probes is None:
        return divergence_exact(fn, x, t, chunk=chunk, create_graph=create_graph)
    return divergence_hutchinson(fn, x, t, probes, create_graph=create_graph)
