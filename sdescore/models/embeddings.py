r"""Time embeddings for score networks.

Gaussian random Fourier features (Tancik et al. 2020), as used for continuous-time score models
by Song et al. (2021), App. H: $\gamma(t) = [\sin(2\pi W t), \cos(2\pi W t)]$ with fixed
$W_i \sim N(0, s^2)$.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GaussianFourierFeatures"]


class GaussianFourierFeatures(nn.Module):
    r"""Map times `t: (B,)` to `(B, dim)` features $[\sin 2\pi W t, \cos 2\pi W t]$.

    The frequencies $W \sim N(0, s^2)$ are drawn once from a private generator seeded with
    `seed` (no global RNG is touched) and stored as a buffer, so they are saved with the model.

    Args:
        dim: output size, even.
        scale: std $s$ of the frequencies; 16 suits $t \in [0, 1]$ (Song et al. 2021).
        seed: seed for the frequencies.
    """

    def __init__(self, dim: int = 64, scale: float = 16.0, *, seed: int = 0):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even int >= 2, got {dim!r}")
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("W", torch.randn(dim // 2, generator=g) * scale)
        self.dim, self.scale = dim, float(scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if t.ndim != 1:
            raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
        proj = 2 * math.pi * t[:, None] * self.W.to(t.dtype)[None, :]
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale}"
