"""Two-dimensional toy datasets, one calling convention for all.

Every toy dataset is an object built by `sdescore.toy.<name>(...)` (its shape parameters only)
with `.sample(n, *, generator=None, device=None, dtype=None) -> (n, 2)`. `eight_gaussians()`
returns a `GaussianMixture`, which also has the exact score and log-density at every time; the
others are samplers only. `sample_toy(name, n)` draws from any of them by name.
"""

from __future__ import annotations

import abc
import math
import warnings

import torch

from .._checks import check_dtype, check_generator, check_int, check_real
from .mixture import GaussianMixture

__all__ = [
    "TOY_DATASETS",
    "Checkerboard",
    "Rings",
    "SwissRoll",
    "ToyDataset",
    "TwoMoons",
    "checkerboard",
    "eight_gaussians",
    "rings",
    "sample_toy",
    "swiss_roll",
    "two_moons",
]


def eight_gaussians(radius: float = 4.0, std: float = 0.5) -> GaussianMixture:
    """Eight equally weighted isotropic Gaussians evenly spaced on a circle (exact scores).

    Raises:
        ValueError: if `radius` or `std` is not a finite number > 0.
    """
    radius = check_real("radius", radius, positive=True)
    check_real("std", std, positive=True)
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return GaussianMixture(means, std)


def _uniform(n, generator, device, dtype):
    return torch.rand(n, generator=generator, device=device, dtype=dtype)


def _gauss(shape, generator, device, dtype):
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


class ToyDataset(abc.ABC):
    """A 2-D toy distribution: subclasses implement `_sample(n, generator, device, dtype)`."""

    event_shape = (2,)

    @abc.abstractmethod
    def _sample(self, n: int, generator, device, dtype: torch.dtype) -> torch.Tensor: ...

    def sample(self, n: int, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        """Draw `n` points, shape `(n, 2)`, in `dtype` (default: torch's default dtype).

        Raises:
            TypeError, ValueError: if `n` is not an int >= 1.
        """
        n = check_int("n", n)
        check_generator("generator", generator)
        dtype = check_dtype("dtype", dtype) or torch.get_default_dtype()
        return self._sample(n, generator, device, dtype)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class TwoMoons(ToyDataset):
    """Two interleaved half circles, centred and scaled to roughly [-4, 4]^2, plus Gaussian noise."""

    def __init__(self, noise: float = 0.1):
        self.noise = check_real("noise", noise, nonnegative=True)

    def _sample(self, n, generator, device, dtype):
        theta = math.pi * _uniform(n, generator, device, dtype)
        upper = _uniform(n, generator, device, dtype) < 0.5
        x = torch.where(upper, theta.cos(), 1 - theta.cos())
        y = torch.where(upper, theta.sin(), 0.5 - theta.sin())
        pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 2.5
        return pts + self.noise * _gauss((n, 2), generator, device, dtype)


class Checkerboard(ToyDataset):
    """Uniform on the dark squares of a 4 x 4 board covering [-4, 4]^2."""

    def _sample(self, n, generator, device, dtype):
        col = torch.randint(0, 4, (n,), generator=generator, device=device)
        # dark squares: column parity picks rows {0, 2} or {1, 3}
        row = 2 * torch.randint(0, 2, (n,), generator=generator, device=device) + col % 2
        cell = torch.stack([col, row], dim=1).to(dtype)
        return 2 * (cell + _uniform(2 * n, generator, device, dtype).reshape(n, 2)) - 4


class SwissRoll(ToyDataset):
    """A planar spiral, scaled to roughly [-4, 4]^2, plus Gaussian noise."""

    def __init__(self, noise: float = 0.1):
        self.noise = check_real("noise", noise, nonnegative=True)

    def _sample(self, n, generator, device, dtype):
        theta = 1.5 * math.pi * (1 + 2 * _uniform(n, generator, device, dtype))
        pts = torch.stack([theta * theta.cos(), theta * theta.sin()], dim=1) / 3.5
        return pts + self.noise * _gauss((n, 2), generator, device, dtype)


class Rings(ToyDataset):
    """Four concentric circles of radii 1 to 4, points spread in proportion to circumference."""

    def __init__(self, noise: float = 0.08):
        self.noise = check_real("noise", noise, nonnegative=True)

    def _sample(self, n, generator, device, dtype):
        weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
        k = torch.multinomial(weights, n, replacement=True, generator=generator)
        radius = k.to(device=device, dtype=dtype) + 1
        theta = 2 * math.pi * _uniform(n, generator, device, dtype)
        pts = radius[:, None] * torch.stack([theta.cos(), theta.sin()], dim=1)
        return pts + self.noise * _gauss((n, 2), generator, device, dtype)


def _build(dataset: ToyDataset, name: str, n, generator, device, dtype):
    """The dataset object, or (old form `name(n)`, deprecated) `n` samples from it."""
    if n is None:
        if generator is not None or device is not None or dtype is not None:
            raise TypeError(
                f"generator, device and dtype belong to {name}().sample(n, ...), not to {name}()"
            )
        return dataset
    warnings.warn(
        f"{name}(n) returning a tensor is deprecated; use {name}().sample(n, ...), the one "
        "convention of every toy dataset",
        DeprecationWarning,
        stacklevel=3,
    )
    return dataset.sample(n, generator=generator, device=device, dtype=dtype)


def two_moons(n=None, *, noise: float = 0.1, generator=None, device=None, dtype=None):
    """The two-moons dataset: `two_moons(noise=0.1).sample(n)` gives `(n, 2)` points.

    `two_moons(n)` (a tensor) still works but is deprecated.
    """
    return _build(TwoMoons(noise), "two_moons", n, generator, device, dtype)


def checkerboard(n=None, *, generator=None, device=None, dtype=None):
    """The checkerboard dataset: `checkerboard().sample(n)` gives `(n, 2)` points.

    `checkerboard(n)` (a tensor) still works but is deprecated.
    """
    return _build(Checkerboard(), "checkerboard", n, generator, device, dtype)


def swiss_roll(n=None, *, noise: float = 0.1, generator=None, device=None, dtype=None):
    """The swiss-roll dataset: `swiss_roll(noise=0.1).sample(n)` gives `(n, 2)` points.

    `swiss_roll(n)` (a tensor) still works but is deprecated.
    """
    return _build(SwissRoll(noise), "swiss_roll", n, generator, device, dtype)


def rings(n=None, *, noise: float = 0.08, generator=None, device=None, dtype=None):
    """The four-rings dataset: `rings(noise=0.08).sample(n)` gives `(n, 2)` points.

    `rings(n)` (a tensor) still works but is deprecated.
    """
    return _build(Rings(noise), "rings", n, generator, device, dtype)


# Name -> factory with default parameters; each returns an object with `.sample(n, ...)`.
TOY_DATASETS = {
    "eight_gaussians": eight_gaussians,
    "two_moons": TwoMoons,
    "checkerboard": Checkerboard,
    "swiss_roll": SwissRoll,
    "rings": Rings,
}


def sample_toy(name: str, n: int, *, generator=None, device=None, dtype=None) -> torch.Tensor:
    """Draw `n` points `(n, 2)` from the toy dataset called `name` (see `TOY_DATASETS`).

    Same as `sdescore.toy.<name>().sample(n, ...)`.
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; expected one of {sorted(TOY_DATASETS)}")
    return TOY_DATASETS[name]().sample(n, generator=generator, device=device, dtype=dtype)
