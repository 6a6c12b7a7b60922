"""Data with exact scores (Gaussians and Gaussian mixtures) and 2-D toy datasets."""

from .datasets import (
    TOY_DATASETS,
    checkerboard,
    eight_gaussians,
    rings,
    sample_toy,
    swiss_roll,
    two_moons,
)
from .mixture import ExactScore, GaussianMixture, gaussian

__all__ = [
    "TOY_DATASETS",
    "ExactScore",
    "GaussianMixture",
    "checkerboard",
    "eight_gaussians",
    "gaussian",
    "rings",
    "sample_toy",
    "swiss_roll",
    "two_moons",
]
