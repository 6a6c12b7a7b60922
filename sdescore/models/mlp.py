"""A time-conditioned MLP score network for points `(B, d)`."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_int
from .embeddings import GaussianFourierFeatures

__all__ = ["MLPScoreNet"]


class MLPScoreNet(nn.Module):
    r"""MLP $(x, t) \mapsto$ `(B, out_dim)` for points `x: (B, dim)`.

    The time enters through Gaussian Fourier features, a linear map to `hidden` units, and is
    added to the input of every hidden layer (as the time embedding is added inside the residual
    blocks of Song et al. 2021's networks). SiLU activations keep the output smooth in $x$, which
    the exact-trace likelihood and the `"energy"` parameterization differentiate.

    Args:
        dim: data dimension d.
        hidden: width of each hidden layer.
        depth: number of hidden layers.
        embed_dim: size of the Fourier time embedding.
        fourier_scale: std of the Fourier frequencies.
        out_dim: output size; default `dim` (a score-like output); 1 for an energy.
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden: int = 256,
        depth: int = 3,
        embed_dim: int = 64,
        fourier_scale: float = 16.0,
        out_dim: int | None = None,
    ):
        super().__init__()
        self.config = {
            "dim": check_int("dim", dim),
            "hidden": check_int("hidden", hidden),
            "depth": check_int("depth", depth),
            "embed_dim": embed_dim,
            "fourier_scale": float(fourier_scale),
            "out_dim": dim if out_dim is None else check_int("out_dim", out_dim),
        }
        self.embed = GaussianFourierFeatures(embed_dim, fourier_scale)
        self.time_proj = nn.Linear(embed_dim, hidden * depth)
        dims = [dim] + [hidden] * depth
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.out = nn.Linear(hidden, self.config["out_dim"])
        # Start at output 0: the model starts at its Gaussian baseline (or at score 0).
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.config["dim"]:
            raise ValueError(f"x must have shape (B, {self.config['dim']}), got {tuple(x.shape)}")
        temb = self.time_proj(self.act(self.embed(t.to(x.dtype)))).chunk(len(self.layers), dim=-1)
        h = x
        for layer, te in zip(self.layers, temb, strict=True):
            h = self.act(layer(h) + te)
        return self.out(h)
