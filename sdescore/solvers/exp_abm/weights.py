r"""The quadrature weights of `ExpABM`'s steps (the scheme: `sdescore.solvers.exp_abm`).

Over a step `[lam, lam + h]` in log-SNR, the noise prediction and $h$ are each fitted as a known
shape ($\sqrt g$ and $g$, $g(\lambda) = 1/(1 + C e^{2\lambda})$) times the polynomial through the
node values, and the product is integrated exactly: the step's share is a weighted sum of the
node values. The weights come from Gauss-Legendre moments and a Vandermonde solve, on the host
(`node_weights`), on the device for a shape constant held there (`node_weights_on_device`), or
batched over examples (`batched_node_weights`).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "GAUSS_LEGENDRE",
    "batched_node_weights",
    "combine",
    "log_shape",
    "moments",
    "node_weights",
    "node_weights_on_device",
]

# Gauss-Legendre nodes for the moments of the shape-times-polynomial products over a step.
GAUSS_LEGENDRE = np.polynomial.legendre.leggauss(24)


def log_shape(lam: np.ndarray, log_c: float | np.ndarray) -> np.ndarray:
    r"""$\log g(\lambda) = -\log(1 + C e^{2\lambda})$, without overflow."""
    return -np.logaddexp(0.0, log_c + 2.0 * lam)


def moments(h: float, lam: float, log_c: float, n: int) -> np.ndarray:
    r"""`(n, 2)`: $\int_0^h w(u)\,u^k du$ for k < n of the two weight functions over the step
    `[lam, lam + h]`, $e^{-u}\sqrt g$ (noise prediction) and $g$ (for $h$); see the module."""
    xg, wg = GAUSS_LEGENDRE
    u = 0.5 * h * (xg + 1.0)
    log_g = log_shape(lam + u, log_c)
    powers = u[None, :] ** np.arange(n)[:, None]  # (n, quadrature nodes)
    w_x = 0.5 * h * wg * np.exp(-u + 0.5 * log_g)
    w_h = 0.5 * h * wg * np.exp(log_g)
    return np.stack([powers @ w_x, powers @ w_h], axis=1)


def node_weights(
    nodes: list[float], moments: np.ndarray, lam: float, log_c: float
) -> tuple[list[float], list[float]]:
    r"""Weights over the step for the noise prediction and for $h$, each fitted as the shape
    ($\sqrt g$ and $g$) times the polynomial through `nodes` (offsets from `lam`), from the
    first `len(nodes)` rows of `moments`.

    With $V$ the Vandermonde matrix of the nodes, $V^T w = m$; the node values are divided by
    the shape, so the weights are scaled by its reciprocal at each node. Both channels in one
    solve."""
    n = len(nodes)
    v = np.vander(np.asarray(nodes, dtype=np.float64), n, increasing=True)
    w = np.linalg.solve(v.T, moments[:n])
    log_g_nodes = log_shape(lam + np.asarray(nodes, dtype=np.float64), log_c)
    w_eps = w[:, 0] * np.exp(-0.5 * log_g_nodes)
    w_h = w[:, 1] * np.exp(-log_g_nodes)
    return w_eps.tolist(), w_h.tolist()


def node_weights_on_device(
    nodes: list[float], step: float, lam: float, log_c: torch.Tensor, n_moments: int
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""`moments` and `node_weights` for a shape constant `log_c` held on the device (a 0-d
    float64 tensor), so that a fixed-step solve never reads it back: the quadrature and the
    Vandermonde inverse (host numbers, the nodes are known) are applied to device tensors.
    Returns the weights `(n,)` for the noise prediction and for $h$."""
    xg, wg = GAUSS_LEGENDRE
    n = len(nodes)
    opts = {"dtype": log_c.dtype, "device": log_c.device}
    u = 0.5 * step * (xg + 1.0)
    log_g = -torch.logaddexp(
        torch.zeros((), **opts), log_c + 2.0 * (lam + torch.as_tensor(u, **opts))
    )
    powers = torch.as_tensor(u[None, :] ** np.arange(n_moments)[:, None], **opts)
    w_x = torch.as_tensor(0.5 * step * wg, **opts) * torch.exp(
        -torch.as_tensor(u, **opts) + 0.5 * log_g
    )
    w_h = torch.as_tensor(0.5 * step * wg, **opts) * torch.exp(log_g)
    moments = torch.stack([powers @ w_x, powers @ w_h], dim=1)[:n]  # (n, 2)
    inv_vt = np.linalg.inv(np.vander(np.asarray(nodes, dtype=np.float64), n, increasing=True).T)
    w = torch.as_tensor(inv_vt, **opts) @ moments
    log_g_nodes = -torch.logaddexp(
        torch.zeros((), **opts), log_c + 2.0 * (lam + torch.as_tensor(nodes, **opts))
    )
    return w[:, 0] * torch.exp(-0.5 * log_g_nodes), w[:, 1] * torch.exp(-log_g_nodes)


def batched_node_weights(nodes, step, lam, log_c):
    r"""Per-example weights `(n, m)` for the noise prediction and for $h$ over the steps
    `step: (n,)` from `lam: (n,)`, through the `m` node offsets `nodes: (n, m)` (shape constant
    `log_c: (n,)`): `moments` and `node_weights`, batched over examples."""
    xg, wg = GAUSS_LEGENDRE
    n, m = nodes.shape
    u = 0.5 * step[:, None] * (xg + 1.0)  # (n, q)
    log_g = log_shape(lam[:, None] + u, log_c[:, None])
    powers = np.ones((n, m, len(xg)))  # u^j, (n, m, q)
    for j in range(1, m):
        powers[:, j] = powers[:, j - 1] * u
    scale = 0.5 * step[:, None] * wg
    w_x = scale * np.exp(-u + 0.5 * log_g)
    w_h = scale * np.exp(log_g)
    moments = np.stack([np.einsum("nmq,nq->nm", powers, w) for w in (w_x, w_h)], axis=2)
    vander = np.ones((n, m, m))  # nodes^j, (n, m, m)
    for j in range(1, m):
        vander[:, :, j] = vander[:, :, j - 1] * nodes
    w = np.linalg.solve(np.transpose(vander, (0, 2, 1)), moments)  # (n, m, 2)
    log_g_nodes = log_shape(lam[:, None] + nodes, log_c[:, None])
    return w[..., 0] * np.exp(-0.5 * log_g_nodes), w[..., 1] * np.exp(-log_g_nodes)


def combine(weights: list, values: list[torch.Tensor]) -> torch.Tensor:
    """`sum_i weights[i] * values[i]`, in that order (host floats or 0-d device tensors)."""
    out = values[0] * weights[0]
    for w, v in zip(weights[1:], values[1:], strict=True):
        out = out + v * w
    return out
