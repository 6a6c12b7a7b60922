"""A compact time-conditioned U-Net for small images (8x8 to 32x32) that trains on a CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import (
    check_bool,
    check_input_dtype,
    check_int,
    check_label_range,
    check_label_tensor,
    check_real,
    is_int,
)
from .embeddings import GaussianFourierFeatures

__all__ = ["ConditionalUNet", "UNet"]


def _norm(ch: int) -> nn.GroupNorm:
    groups = max(g for g in (1, 2, 4, 8) if ch % g == 0)
    return nn.GroupNorm(groups, ch)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding added in between (Ho et al. 2020, App. B)."""

    def __init__(self, c_in: int, c_out: int, temb: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(temb, c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]  # image-only module: (B, C) -> (B, C, 1, 1)
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm, self.qkv, self.proj = _norm(ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C)
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    """Time-conditioned U-Net `(B, C, H, W), (B,) -> (B, C, H, W)`.

    One residual block per resolution on the way down and up, skip connections between them,
    and a middle block at the lowest resolution with optional self-attention. With the default
    `channels=32, channel_mult=(1, 2)` it has about 0.5M parameters.

    Args:
        in_channels: image channels C.
        channels: base width.
        channel_mult: width multiplier per resolution; H and W must be divisible by
            `2 ** (len(channel_mult) - 1)`.
        attention: self-attention in the middle block.
        embed_dim: size of the Fourier time embedding.
        fourier_scale: std of the Fourier frequencies.
        dropout: dropout rate inside residual blocks, in [0, 1).

    Raises:
        TypeError, ValueError: a size not an int >= 1, `attention` not a bool, `fourier_scale`
            not a finite number > 0, `dropout` outside [0, 1); in `forward`, `x` not shaped
            `(B, in_channels, H, W)` or of another dtype than the parameters.
    """

    def __init__(
        self,
        in_channels: int = 1,
        *,
        channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2),
        attention: bool = True,
        embed_dim: int = 64,
        fourier_scale: float = 16.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        in_channels = check_int("in_channels", in_channels)
        channels = check_int("channels", channels)
        check_bool("attention", attention)
        embed_dim = check_int("embed_dim", embed_dim, minimum=2)
        fourier_scale = check_real("fourier_scale", fourier_scale, positive=True)
        dropout = check_real("dropout", dropout, nonnegative=True)
        if dropout >= 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        mult = tuple(channel_mult)
        if not mult or any(not is_int(m) or m < 1 for m in mult):
            raise ValueError(f"channel_mult must be a non-empty tuple of positive ints, got {mult}")
        mult = tuple(int(m) for m in mult)
        self.config = {
            "in_channels": in_channels,
            "channels": channels,
            "channel_mult": list(mult),
            "attention": bool(attention),
            "embed_dim": embed_dim,
            "fourier_scale": float(fourier_scale),
            "dropout": float(dropout),
        }
        temb = 4 * channels
        self.embed = nn.Sequential(
            GaussianFourierFeatures(embed_dim, fourier_scale),
            nn.Linear(embed_dim, temb),
            nn.SiLU(),
            nn.Linear(temb, temb),
        )
        chs = [channels * m for m in mult]
        self.conv_in = nn.Conv2d(in_channels, chs[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = chs[0]
        for i, c in enumerate(chs):
            self.down.append(_ResBlock(prev, c, temb, dropout))
            if i < len(chs) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            prev = c
        self.mid1 = _ResBlock(prev, prev, temb, dropout)
        self.attn = _Attention(prev) if attention else nn.Identity()
        self.mid2 = _ResBlock(prev, prev, temb, dropout)
        self.up = nn.ModuleList(_ResBlock(2 * c, c, temb, dropout) for c in chs)
        self.upsample = nn.ModuleList(
            nn.Conv2d(chs[i], chs[i - 1], 3, padding=1) for i in range(1, len(chs))
        )
        self.norm_out = _norm(chs[0])
        self.conv_out = nn.Conv2d(chs[0], in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # start at output 0, as Ho et al.'s code does
        nn.init.zeros_(self.conv_out.bias)
        self._factor = 2 ** (len(chs) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._unet(x, self.embed(t.to(x.dtype)))

    @property
    def event_shape(self) -> tuple[int | None, ...]:
        """The shape `D` of one input `x: (B, *D)`: `(in_channels, None, None)` (H, W free)."""
        return (self.config["in_channels"], None, None)

    def _check_input(self, x: torch.Tensor) -> None:
        C = self.config["in_channels"]
        if x.ndim != 4 or x.shape[1] != C:
            raise ValueError(f"x must have shape (B, {C}, H, W), got {tuple(x.shape)}")
        check_input_dtype(self, x)
        if x.shape[2] % self._factor or x.shape[3] % self._factor:
            raise ValueError(
                f"H and W must be divisible by {self._factor} for channel_mult "
                f"{tuple(self.config['channel_mult'])}, got {tuple(x.shape[2:])}"
            )

    def _unet(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """The network body for a checked `x` and its embedding `temb` `(B, 4 * channels)`."""
        h = self.conv_in(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, temb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid2(self.attn(self.mid1(h, temb)), temb)
        for i in reversed(range(len(self.up))):
            h = self.up[i](torch.cat([h, skips.pop()], dim=1), temb)
            if i > 0:
                h = self.upsample[i - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class ConditionalUNet(UNet):
    r"""`UNet` with a learned label embedding: $(x, t, y) \mapsto$ `(B, C, H, W)`.

    The label (K classes plus the null label K, for classifier-free guidance) enters like the
    time: its embedding is added to the time embedding that every residual block receives
    (Ho & Salimans 2022; Dhariwal & Nichol 2021, Sec. 4).

    Args:
        in_channels: image channels C.
        num_classes: K; the embedding has K + 1 rows, the last for the null label.
        **options: `channels`, `channel_mult`, `attention`, `embed_dim`, `fourier_scale`,
            `dropout` of `UNet`.

    Raises:
        TypeError, ValueError: as `UNet`; `num_classes` not an int >= 1; in `forward`, a label
            outside `[0, K]`.
    """

    def __init__(self, in_channels: int = 1, *, num_classes: int, **options):
        super().__init__(in_channels, **options)
        self.config["num_classes"] = check_int("num_classes", num_classes)
        self.label_embed = nn.Embedding(num_classes + 1, 4 * self.config["channels"])

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The network's output `(B, C, H, W)` for images `x: (B, C, H, W)`, times `t: (B,)` (a
        tensor, as `ConditionalScoreModel` passes it) and labels `y: (B,)` integers in `[0, K]`
        (K: the null label). Call the model, not the network, for floats and scalar labels."""
        self._check_input(x)
        check_label_tensor("y", y, "a (B,) integer tensor of labels")
        check_label_range(y, self.config["num_classes"])
        return self._unet(x, self.embed(t.to(x.dtype)) + self.label_embed(y))
