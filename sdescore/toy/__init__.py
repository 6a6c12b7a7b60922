"""Data with exact scores (Gaussians and Gaussian mixtures), 2-D toy datasets, the 8x8 digits.

Every dataset is an object with `.sample(n, *, generator=None, device=None, dtype=None)`.
"""

from .classifier import ExactConditionalScore, MixtureClassifier, mixture_component
from .datasets import (
    TOY_DATASETS,
    Checkerboard,
    Rings,
    SwissRoll,
    ToyDataset,
    TwoMoons,
    checkerboard,
    eight_gaussians,
    rings,
    sample_toy,
    swiss_roll,
    two_moons,
)
from .images import (
    DIGITS_SPLITS,
    DigitsData,
    digits,
    digits_data,
    digits_to_images,
    image_grid,
    save_image_grid,
)
from .mixture import ExactScore, GaussianMixture, gaussian

__all__ = [
    "DIGITS_SPLITS",
    "TOY_DATASETS",
    "Checkerboard",
    "DigitsData",
    "Rings",
    "SwissRoll",
    "ToyDataset",
    "TwoMoons",
    "ExactConditionalScore",
    "ExactScore",
    "MixtureClassifier",
    "mixture_component",
    "GaussianMixture",
    "checkerboard",
    "digits",
    "digits_data",
    "digits_to_images",
    "image_grid",
    "save_image_grid",
    "eight_gaussians",
    "gaussian",
    "rings",
    "sample_toy",
    "swiss_roll",
    "two_moons",
]
