r"""A small classifier of the 8x8 digits whose features define "FID-digits".

The digits themselves (scikit-learn's 1,797 images of 8x8 pixels with 17 grey levels and their
fixed 1,347/450 split) are data and live in `sdescore.toy.images`; `digits_data`,
`digits_to_images` and `DIGITS_SPLITS` are re-exported here, so both import paths work.
`DigitsFeatureNet` is a small CNN trained on the training split by
`python -m sdescore.metrics.train_digits_features`; its weights ship in the package
(`digits_features.pt`, loaded with `torch.load(weights_only=True)`). Its penultimate layer plays
the role of Inception's pool features for the Fréchet distance (Heusel et al. 2017) and its
softmax that of Inception's class posterior for the Inception score (Salimans et al. 2016).
"""

from __future__ import annotations

from importlib import resources

import torch
from torch import nn

from .._checks import check_state
from ..toy.images import DIGITS_SPLITS, digits_data, digits_to_images

__all__ = [
    "DIGITS_SPLITS",
    "DigitsFeatureNet",
    "digits_data",
    "digits_feature_net",
    "digits_to_images",
]

_WEIGHTS = "digits_features.pt"
_cache: dict = {}


class DigitsFeatureNet(nn.Module):
    """Small CNN for `(B, 1, 8, 8)` digits in [-1, 1]: `forward` gives features, `logits` classes.

    Two 3x3 convolutions (32 and 64 channels, the second followed by 2x2 max-pooling), then a
    `num_features`-wide hidden layer (the features, after ReLU) and a 10-way linear classifier.
    The input is cast to the weights' dtype and the features are returned in the input's dtype.

    Args:
        num_features: width of the penultimate layer (the FID feature dimension).
    """

    def __init__(self, num_features: int = 64):
        super().__init__()
        self.num_features = num_features  # torchmetrics reads this instead of probing the net
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(64 * 4 * 4, num_features),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.25), nn.Linear(num_features, 10))

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        check_state(x)
        if tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"x must be 8x8 digits of shape (B, 1, 8, 8), got {tuple(x.shape)}")
        return x.to(self.head[1].weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features `(B, num_features)` of images `x: (B, 1, 8, 8)` in [-1, 1]."""
        return self.body(self._check(x)).to(x.dtype)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits `(B, 10)` of images `x: (B, 1, 8, 8)` in [-1, 1]."""
        return self.head(self.body(self._check(x))).to(x.dtype)


class DigitsLogits(nn.Module):
    """The classifier's logits as a module (what torchmetrics' `InceptionScore` expects)."""

    def __init__(self, net: DigitsFeatureNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.logits(x)


def digits_feature_net(*, device=None) -> DigitsFeatureNet:
    """The shipped, pretrained `DigitsFeatureNet` in eval mode, with gradients off.

    Loaded once per device from the package file `digits_features.pt` with
    `torch.load(weights_only=True)` (no pickled code runs); retrain it with
    `python -m sdescore.metrics.train_digits_features`. Its held-out accuracy is checked by the
    tests (>= 97 %).

    Args:
        device: where to put the network (default CPU).

    Returns:
        The network; treat it as read-only (it is shared between calls).
    """
    key = str(torch.device(device or "cpu"))
    if key not in _cache:
        path = resources.files(__package__) / _WEIGHTS
        with resources.as_file(path) as p:
            state = torch.load(p, map_location="cpu", weights_only=True)
        net = DigitsFeatureNet(num_features=state["head.1.weight"].shape[1])
        net.load_state_dict(state)
        net.eval().requires_grad_(False)
        _cache[key] = net.to(key)
    return _cache[key]
