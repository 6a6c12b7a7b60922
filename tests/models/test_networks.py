"""Score networks: shapes, dtypes, determinism, validation, and the U-Net learning on a CPU."""

from __future__ import annotations

import math

import pytest
import torch

import sdescore
from sdescore.losses import dsm_loss
from sdescore.models import GaussianFourierFeatures, MLPScoreNet, UNet

from problems import image_gaussian


def test_fourier_features_are_seeded_and_bounded():
    a, b = GaussianFourierFeatures(16, seed=3), GaussianFourierFeatures(16, seed=3)
    assert torch.equal(a.W, b.W) and not torch.equal(a.W, GaussianFourierFeatures(16, seed=4).W)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    f = a(t)
    assert f.shape == (7, 16) and f.dtype == torch.float64
    torch.testing.assert_close(
        f[:, :8].square() + f[:, 8:].square(), torch.ones(7, 8, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="dim must be an even int"):
        GaussianFourierFeatures(5)


def test_mlp_shapes_and_zero_initial_output():
    net = MLPScoreNet(3, hidden=8, depth=2)
    x, t = torch.randn(4, 3), torch.rand(4)
    assert net(x, t).shape == (4, 3) and torch.equal(net(x, t), torch.zeros(4, 3))
    assert MLPScoreNet(3, hidden=8, out_dim=1)(x, t).shape == (4, 1)
    assert net.double()(x.double(), t.double()).dtype == torch.float64
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\), got \(4, 2\)"):
        net(torch.randn(4, 2), t)
    with pytest.raises(ValueError, match="hidden must be an int >= 1"):
        MLPScoreNet(3, hidden=0)


@pytest.mark.parametrize(
    "shape, mult, attention",
    [((1, 8, 8), (1, 2), True), ((3, 16, 16), (1, 2, 2), False), ((3, 32, 32), (1, 2, 2, 2), True)],
)
def test_unet_shapes(shape, mult, attention):
    net = UNet(shape[0], channels=8, channel_mult=mult, attention=attention)
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)
    x = torch.randn(2, *shape)
    out = net(x, torch.rand(2))
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0


def test_unet_validation():
    net = UNet(1, channels=8, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match=r"divisible by 4"):
        net(torch.randn(2, 1, 6, 6), torch.rand(2))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\)"):
        net(torch.randn(2, 3, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match="channel_mult must be a non-empty tuple"):
        UNet(1, channel_mult=())


def test_unet_learns_an_image_gaussian_on_cpu():
    # 100 AdamW steps on 4x4 images: the held-out DSM loss (fixed t and noise) falls from the
    # zero-score value 1/2 E|z|^2 = 8 to within 15% of the way to the exact-score value.
    data, sde = image_gaussian((1, 4, 4)), sdescore.VPSDE()
    g = torch.Generator().manual_seed(0)
    x_train = data.sample(4096, generator=g)
    torch.manual_seed(0)
    model = sdescore.ScoreModel(UNet(1, channels=8, channel_mult=(1, 2)), sde, "eps")
    res = sdescore.train(
        model, x_train, steps=100, batch_size=64, lr=3e-3, progress=False, ema_decay=None
    )
    x_test = data.sample(2048, generator=g)

    def held_out(score):
        kw = dict(sde=sde, reduction="mean", eps=1e-2)
        with torch.no_grad():
            return dsm_loss(score, x_test, generator=torch.Generator().manual_seed(1), **kw).item()

    zero, exact = held_out(lambda x, t: torch.zeros_like(x)), held_out(data.score_fn(sde))
    trained = held_out(res.model)
    assert math.isfinite(trained) and trained < exact + 0.15 * (zero - exact), (
        zero,
        trained,
        exact,
    )
