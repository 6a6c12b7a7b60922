"""The 8x8 digits (as images with labels, and as a ready discrete data set) and image grids.

The digits are scikit-learn's bundled handwritten digits (1,797 images of 8x8 pixels with 17
intensity levels, no download), with one fixed train/test split (`digits_data`) that every user
shares: `sdescore.metrics` (the FID-digits feature network imports it from here),
`examples/digits.py` and the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import check_choice, check_dtype, check_int, check_state

__all__ = [
    "DIGITS_SPLITS",
    "DigitsData",
    "digits",
    "digits_data",
    "digits_to_images",
    "image_grid",
    "save_image_grid",
]

DIGITS_SPLITS = ("train", "test", "all")
_TEST_SIZE, _SPLIT_SEED = 450, 0


def digits_to_images(pixels) -> torch.Tensor:
    """Map digit pixels in the 17 grey levels $\\{0, \\dots, 16\\}$ to `(N, 1, 8, 8)` in [-1, 1].

    Args:
        pixels: `(N, 64)` or `(N, 8, 8)` array or tensor with values in [0, 16].

    Returns:
        `(N, 1, 8, 8)` float32 images, $x = 2p/16 - 1$ (the library's convention for images).
    """
    x = torch.as_tensor(pixels, dtype=torch.float32)
    return x.reshape(-1, 1, 8, 8) / 8.0 - 1.0


def digits_data(split: str = "train", *, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits as images in [-1, 1], with their labels.

    The split is fixed: `sklearn.model_selection.train_test_split(test_size=450,
    stratify=labels, random_state=0)`, so every user (the feature net, the digits example,
    the metrics' floors) sees the same 1,347 training and 450 held-out images.

    Args:
        split: `"train"` (1,347 images), `"test"` (450) or `"all"` (1,797).
        dtype: floating dtype of the images.

    Returns:
        `(images, labels)`: `(N, 1, 8, 8)` in [-1, 1] (17 levels, see `digits_to_images`) and
        `(N,)` int64 labels 0-9.

    Raises:
        ImportError: if scikit-learn is missing (`pip install "sdescore[examples]"`).
        ValueError: for an unknown split.
    """
    check_choice("split", split, DIGITS_SPLITS)
    dtype = check_dtype("dtype", dtype)
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            'the digits data need scikit-learn: pip install "sdescore[examples]"'
        ) from err
    data = load_digits()
    x, y = digits_to_images(data.data), torch.as_tensor(data.target, dtype=torch.int64)
    if split != "all":
        idx = torch.arange(len(y)).numpy()
        tr, te = train_test_split(
            idx, test_size=_TEST_SIZE, stratify=data.target, random_state=_SPLIT_SEED
        )
        keep = torch.as_tensor(tr if split == "train" else te)
        x, y = x[keep], y[keep]
    return x.to(dtype), y


@dataclass(frozen=True)
class DigitsData:
    """The 8x8 digits in the forms a score model needs.

    Attributes:
        levels: `(N, 1, 8, 8)` int64 levels `0 .. 16`, for `likelihood(..., dequantization=17)` and
            `train(..., dequantize=17)`.
        images: `(N, 1, 8, 8)` the bin centres on `data_range`, `-1 + (2k + 1)/17`, the points
            that `sdescore.dequantize` spreads uniformly over each bin.
        labels: `(N,)` int64 digit classes 0-9.
        bins: 17, the number of levels.
        data_range: `(-1.0, 1.0)`, the interval the dequantized data fill.
    """

    levels: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    bins: int = 17
    data_range: tuple[float, float] = (-1.0, 1.0)


def digits(split: str = "train", *, dtype: torch.dtype = torch.float32) -> DigitsData:
    """scikit-learn's 8x8 digits as a discrete data set (levels, bins and range included).

    Args:
        split: `"train"` (1,347 images), `"test"` (450) or `"all"` (1,797); the split of
            `digits_data`.
        dtype: floating dtype of `images`.

    Raises:
        ImportError: scikit-learn is missing (`pip install "sdescore[examples]"`).
        ValueError: an unknown split.
    """
    dtype = check_dtype("dtype", dtype)
    x, labels = digits_data(split, dtype=torch.float64)
    levels = ((x + 1) * 8).round().long()  # digits_data maps level k to k / 8 - 1
    centres = -1.0 + (2 * levels.to(torch.float64) + 1) / 17
    return DigitsData(levels=levels, images=centres.to(dtype), labels=labels)


def image_grid(
    images: torch.Tensor, nrow: int | None = None, *, padding: int = 1, pad_value: float = 1.0
) -> torch.Tensor:
    """Tile images `(B, C, H, W)` into one image `(C, rows (H + p) + p, nrow (W + p) + p)`.

    Row-major, `nrow` images per row (default about sqrt(B)); `padding` pixels of `pad_value`
    between and around them. Values are kept as they are (no rescaling).

    Raises:
        ValueError: images not `(B, C, H, W)`, or a bad `nrow`/`padding`.
    """
    check_state(images, "images")
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    nrow = check_int("nrow", math.ceil(math.sqrt(b)) if nrow is None else nrow)
    padding = check_int("padding", padding, minimum=0)
    rows = math.ceil(b / nrow)
    step_h, step_w = h + padding, w + padding
    grid = images.new_full((c, rows * step_h + padding, nrow * step_w + padding), pad_value)
    for i in range(b):
        r, col = divmod(i, nrow)
        top, left = padding + r * step_h, padding + col * step_w
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def save_image_grid(
    path, images: torch.Tensor, nrow: int | None = None, *, data_range=(-1.0, 1.0), title=None
) -> None:
    """Save a grid of images `(B, C, H, W)` on `data_range` as a PNG (matplotlib, grey or RGB).

    Raises:
        ImportError: matplotlib is missing (`pip install "sdescore[examples]"`).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            'saving images needs matplotlib: pip install "sdescore[examples]"'
        ) from err
    a, b = data_range
    grid = image_grid(images.detach().cpu().float(), nrow, pad_value=b)
    grid = ((grid - a) / (b - a)).clamp(0, 1).numpy()
    fig, ax = plt.subplots(figsize=(grid.shape[2] / 16 + 0.5, grid.shape[1] / 16 + 0.5))
    ax.imshow(
        grid[0] if grid.shape[0] == 1 else grid.transpose(1, 2, 0), cmap="gray_r", vmin=0, vmax=1
    )
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
