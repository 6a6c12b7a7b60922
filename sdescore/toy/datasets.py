"""Two-dimensional toy datasets, as samplers `(n, 2)`; eight Gaussians also with exact scores."""

from __future__ import annotations

import math

import torch

from .._checks import check_int
from .mixture import GaussianMixture

__all__ = [
    "TOY_DATASETS",
    "checkerboard",
    "eight_gaussians",
    "rings",
    "sample_toy",
    "swiss_roll",
    "two_moons",
]


def eight_gaussians(radius: float = 4.0, std: float = 0.5) -> GaussianMixture:
    """Eight equally weighted isotropic Gaussians evenly spaced on a circle."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return GaussianMixture(means, std)


def _uniform(n, generator, device, dtype):
    return torch.rand(n, generator=generator, device=device, dtype=dtype)


def _gauss(shape, generator, device, dtype):
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def two_moons(
    n: int, *, noise: float = 0.1, generator=None, device=None, dtype=None
) -> torch.Tensor:
    """Two interleaved half circles, centred and scaled to roughly [-4, 4]^2."""
    theta = math.pi * _uniform(n, generator, device, dtype)
    upper = _uniform(n, generator, device, dtype) < 0.5
    x = torch.where(upper, theta.cos(), 1 - theta.cos())
    y = torch.where(upper, theta.sin(), 0.5 - theta.sin())
    pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 2.5
    return pts + noise * _gauss((n, 2), generator, device, dtype)


def checkerboard(n: int, *, generator=None, device=None, dtype=None) -> torch.Tensor:
    """Uniform on the dark squares of a 4 x 4 board covering [-4, 4]^2."""
    col = torch.randint(0, 4, (n,), generator=generator, device=device)
    # dark squares: column parity picks rows {0, 2} or {1, 3}
    row = 2 * torch.randint(0, 2, (n,), generator=generator, device=device) + col % 2
    cell = torch.stack([col, row], dim=1).to(dtype or torch.get_default_dtype())
    return 2 * (cell + _uniform(2 * n, generator, device, dtype).reshape(n, 2)) - 4


def swiss_roll(
    n: int, *, noise: float = 0.1, generator=None, device=None, dtype=None
) -> torch.Tensor:
    """A planar spiral, scaled to roughly [-4, 4]^2."""
    theta = 1.5 * math.pi * (1 + 2 * _uniform(n, generator, device, dtype))
    pts = torch.stack([theta * theta.cos(), theta * theta.sin()], dim=1) / 3.5
    return pts + noise * _gauss((n, 2), generator, device, dtype)


def rings(n: int, *, noise: float = 0.08, generator=None, device=None, dtype=None) -> torch.Tensor:
    """Four concentric circles of radii 1 to 4, points spread in proportion to circumference."""
    radius = (
        torch.multinomial(
            torch.tensor([1.0, 2.0, 3.0, 4.0]), n, replacement=True, generator=generator
        ).to(device=device, dtype=dtype or torch.get_default_dtype())
        + 1
    )
    theta = 2 * math.pi * _uniform(n, generator, device, dtype)
    pts = radius[:, None] * torch.stack([theta.cos(), theta.sin()], dim=1)
    return pts + noise * _gauss((n, 2), generator, device, dtype)


def _eight_gaussians_sampler(n: int, *, generator=None, device=None, dtype=None) -> torch.Tensor:
    return eight_gaussians().sample(n, generator=generator, device=device, dtype=dtype)


TOY_DATASETS = {
    "eight_gaussians": _eight_gaussians_sampler,
    "two_moons": two_moons,
    "checkerboard": checkerboard,
    "swiss_roll": swiss_roll,
    "rings": rings,
}


def sample_toy(name: str, n: int, *, generator=None, device=None, dtype=None) -> torch.Tensor:
    """Draw `n` points `(n, 2)` from the toy dataset called `name` (see `TOY_DATASETS`)."""
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; expected one of {sorted(TOY_DATASETS)}")
    check_int("n", n)
    return TOY_DATASETS[name](n, generator=generator, device=device, dtype=dtype)
