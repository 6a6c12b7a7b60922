r"""Random Fourier features for score networks, of the time and of the input.

Gaussian random Fourier features (Tancik et al. 2020), as used for continuous-time score models
by Song et al. (2021), App. H: $\gamma(t) = [\sin(2\pi W t), \cos(2\pi W t)]$ with fixed
$W_i \sim N(0, s^2)$. The same map of a point $x \in \mathbb{R}^d$,
$\gamma(x) = [\sin(2\pi x B), \cos(2\pi x B)]$ with $B \in \mathbb{R}^{d \times m}$, lets a small
MLP fit functions with detail finer than its spectral bias allows (Tancik et al. 2020, Sec. 4).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_int, check_real, check_seed, is_int

__all__ = ["GaussianFourierFeatures", "RandomFourierFeatures"]


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
        if not is_int(dim) or dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even int >= 2, got {dim!r}")
        dim = int(dim)
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        g = torch.Generator().manual_seed(check_seed("seed", seed))
        self.register_buffer("W", torch.randn(dim // 2, generator=g) * scale)
        self.dim, self.scale = dim, float(scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if t.ndim != 1:
            raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
        proj = 2 * math.pi * t[:, None] * self.W.to(t.dtype)[None, :]
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale}"


class RandomFourierFeatures(nn.Module):
    r"""Map points `x: (B, in_dim)` to `(B, 2 m)` features $[\sin 2\pi x B, \cos 2\pi x B]$.

    Tancik et al. (2020), eq. (5) with Gaussian $B$: the entries of $B$ `(in_dim, m)` are drawn
    once, $N(0, s^2)$, from a private generator seeded with `seed` and stored as a buffer (saved
    with the model). $s$ is in cycles per unit of $x$: features vary on length scales down to
    about $1 / (2\pi s)$, so $s$ should match the finest structure the network must resolve.

    Args:
        in_dim: input dimension d.
        features: number of frequencies m (the output has 2 m columns).
        scale: std $s$ of the frequencies, in cycles per unit of `x`.
        seed: seed for the frequencies.

    Raises:
        TypeError, ValueError: `in_dim` or `features` not an int >= 1, `scale` not a finite
            number > 0; in `forward`, `x` not shaped `(B, in_dim)`.
    """

    def __init__(self, in_dim: int, features: int, scale: float = 1.0, *, seed: int = 0):
        super().__init__()
        in_dim = check_int("in_dim", in_dim)
        features = check_int("features", features)
        scale = check_real("scale", scale, positive=True)
        g = torch.Generator().manual_seed(check_seed("seed", seed))
        self.register_buffer("B", torch.randn(in_dim, features, generator=g) * scale)
        self.in_dim, self.features, self.scale = in_dim, features, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x must have shape (B, {self.in_dim}), got {tuple(x.shape)}")
        proj = 2 * math.pi * (x @ self.B.to(x.dtype))
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, features={self.features}, scale={self.scale}"
