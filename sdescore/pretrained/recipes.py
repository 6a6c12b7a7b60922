"""How each pretrained model is built and trained: one recipe per name, run by `train`.

A recipe fixes everything that decides the weights (data split, network, SDE, objective,
optimizer, steps, seed), so `python -m sdescore.pretrained.train NAME` regenerates the shipped
file up to the nondeterminism of float arithmetic across machines and thread counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

__all__ = ["DIGITS_BINS", "DIGITS_RANGE", "RECIPES", "Recipe", "digits_levels"]

DIGITS_BINS, DIGITS_RANGE = 17, (-1.0, 1.0)  # 17 grey levels on [-1, 1], as sdescore.toy.digits


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One pretrained model's recipe.

    Attributes:
        name: the name `load` takes.
        description: one line for `list_pretrained`.
        build: `() -> model`, the untrained model (seeded by `train`).
        data: `() -> (train_data, labels or None, train options)`.
        steps: optimizer steps.
        seed: the seed of the initialisation, the batches, the noise and the dequantization.
        options: `sdescore.train`'s keyword arguments.
    """

    name: str
    description: str
    build: Callable
    data: Callable
    steps: int
    seed: int = 0
    options: dict = dataclasses.field(default_factory=dict)


def digits_levels(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The grey levels 0..16 `(N, 1, 8, 8)` (a float32 tensor of whole numbers, what
    `dequantize` and `likelihood(..., dequantization=17)` take) and the labels `(N,)` of a split
    of `sdescore.toy.digits_data` (needs scikit-learn)."""
    from ..toy import digits_data

    x, y = digits_data(split)
    return ((x + 1.0) * 8.0).round(), y


def _digits_model(conditional: bool):
    from .. import VPSDE, ConditionalScoreModel, ConditionalUNet, ScoreModel, UNet
    from ..dequantization import dequantize

    sde = VPSDE(0.1, 20.0)
    levels, _ = digits_levels("train")
    # the residual to a Gaussian fitted to the dequantized training images (a fixed draw)
    y_fit = dequantize(
        levels, DIGITS_BINS, DIGITS_RANGE, generator=torch.Generator().manual_seed(0)
    )[0]
    if conditional:
        net = ConditionalUNet(1, num_classes=10, channels=24, attention=True)
        model = ConditionalScoreModel(net, sde, "eps", num_classes=10)
    else:
        model = ScoreModel(UNet(1, channels=32, attention=True), sde, "eps")
    return model.fit_baseline(y_fit)


def _digits_data(conditional: bool):
    levels, labels = digits_levels("train")
    options = {"dequantize": DIGITS_BINS, "data_range": DIGITS_RANGE}
    return levels, (labels.long() if conditional else None), options


def _toy_model():
    from .. import VPSDE, MLPScoreNet, ScoreModel
    from ..toy import sample_toy

    data = sample_toy("eight_gaussians", 50_000, generator=torch.Generator().manual_seed(0))
    return ScoreModel(MLPScoreNet(2), VPSDE(0.1, 20.0), "score").fit_baseline(data)


def _toy_data():
    from ..toy import sample_toy

    return (
        sample_toy("eight_gaussians", 50_000, generator=torch.Generator().manual_seed(0)),
        None,
        {},
    )


_LIKELIHOOD_WEIGHTING = {"weighting": "likelihood", "importance_sampling": True}
_DIGITS_OPTIONS = dict(batch_size=128, lr=1e-3, warmup_steps=100, grad_clip=1.0, ema_decay=0.999)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "digits8",
            "8x8 digits (17 grey levels on [-1, 1]), unconditional eps-UNet (0.49M params), VP SDE",
            lambda: _digits_model(False),
            lambda: _digits_data(False),
            steps=6000,
            options={**_DIGITS_OPTIONS, "loss_kwargs": _LIKELIHOOD_WEIGHTING},
        ),
        Recipe(
            "digits8-cond",
            "8x8 digits, class-conditional eps-UNet (labels 0-9, null label 10 for "
            "classifier-free guidance), VP SDE",
            lambda: _digits_model(True),
            lambda: _digits_data(True),
            steps=6000,
            options={**_DIGITS_OPTIONS, "p_uncond": 0.2},
        ),
        Recipe(
            "eight_gaussians",
            "2-D eight Gaussians (the toy_2d default), score-MLP (0.18M params), VP SDE",
            _toy_model,
            _toy_data,
            steps=2000,
            options=dict(batch_size=1024, lr=1e-3, warmup_steps=100, ema_decay=0.999),
        ),
    )
}
