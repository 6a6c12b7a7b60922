"""The digits as a ready discrete data set, and image grids (issue 16, item 6)."""

from __future__ import annotations

import pytest
import torch

import sdescore


def test_digits_levels_bins_and_range():
    pytest.importorskip("sklearn", reason="the digits ship with scikit-learn (examples extra)")
    train, test = sdescore.toy.digits("train"), sdescore.toy.digits("test")
    assert train.levels.shape == (1347, 1, 8, 8) and test.levels.shape == (450, 1, 8, 8)
    assert train.levels.dtype == torch.int64 and int(train.levels.min()) == 0
    assert int(train.levels.max()) == 16 and train.bins == 17 and train.data_range == (-1.0, 1.0)
    # The images are the bin centres of the levels: quantize maps them back exactly.
    assert torch.equal(sdescore.quantize(train.images, 17), train.levels)
    assert set(train.labels.unique().tolist()) == set(range(10))
    with pytest.raises(ValueError, match="split"):
        sdescore.toy.digits("validation")


def test_image_grid_places_each_image():
    imgs = torch.arange(5, dtype=torch.float32).reshape(5, 1, 1, 1).expand(5, 1, 2, 3)
    grid = sdescore.toy.image_grid(imgs, nrow=3, padding=1, pad_value=-1.0)
    assert grid.shape == (1, 2 * 3 + 1, 3 * 4 + 1)
    assert grid[0, 1, 1] == 0 and grid[0, 1, 5] == 1 and grid[0, 4, 5] == 4  # row 2, column 2
    assert grid[0, 4, 9] == -1  # the empty sixth cell stays padding
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        sdescore.toy.image_grid(torch.zeros(2, 8, 8))


def test_save_image_grid_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="saving needs matplotlib (examples extra)")
    path = tmp_path / "grid.png"
    sdescore.toy.save_image_grid(path, torch.rand(6, 1, 8, 8) * 2 - 1, nrow=3, title="six")
    assert path.stat().st_size > 500
