"""FID-digits, KID and the Inception-style score: the shipped feature net and torchmetrics glue."""

import pytest
import torch

pytest.importorskip("sklearn", reason="the digits come from scikit-learn (test extra)")
pytest.importorskip("torchmetrics", reason="FID/KID/IS wrap torchmetrics (metrics extra)")

from sdescore.metrics import (  # noqa: E402
    digits_data,
    digits_feature_net,
    fid,
    fid_digits,
    frechet_distance_features,
    inception_score_digits,
    kid_digits,
)


@pytest.fixture(scope="module")
def digits():
    return digits_data("train")[0], *digits_data("test")


def test_feature_net_held_out_accuracy(digits):
    _, x, y = digits
    net = digits_feature_net()
    acc = (net.logits(x).argmax(1) == y).double().mean().item()
    assert acc >= 0.97  # shipped weights: 0.9933 on the 450 held-out digits
    assert net(x.double()).dtype == torch.float64 and net(x).shape == (450, 64)


def test_fid_halves_near_floor_and_monotone_in_noise(digits):
    train, test, _ = digits
    half1, half2 = train[:673], train[673:1346]
    res = fid_digits(half2[:450], half1, reference=test)
    # Two real sets vs the same real set: equal up to finite-sample noise. FID-digits of 450 vs
    # 673 real digits over 20 random splits: mean 4.8, sd 1.4 (range 3.3-9.2); 3 sd allowed.
    assert abs(res.value - res.floor) < 3 * 1.4
    net = digits_feature_net()
    f1 = net(half1.double())
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(half2.shape, generator=g)
    vals = [
        frechet_distance_features(net((half2 + s * noise).clamp(-1, 1).double()), f1).item()
        for s in (0.0, 0.1, 0.3, 0.6)
    ]
    assert vals == sorted(vals) and vals[-1] > 10 * vals[0]
    # The torchmetrics path and the pure-torch one agree on the same features.
    ours = frechet_distance_features(net(half2.double()), f1).item()
    theirs = fid(half2, half1, feature_net=net).value
    assert theirs == pytest.approx(ours, rel=1e-6)


def test_kid_and_inception_score(digits):
    train, test, _ = digits
    g = torch.Generator().manual_seed(1)
    kid = kid_digits(test, train[:900], reference=train[900:], subsets=20, generator=g)
    noise = torch.rand(450, 1, 8, 8, generator=g) * 2 - 1
    bad = kid_digits(noise, train[:900], subsets=20, generator=g)
    assert bad.value > 10 * abs(kid.value) + 3 * bad.stderr
    real = inception_score_digits(test, generator=g)
    junk = inception_score_digits(noise, reference=test, generator=g)
    assert real.value > 8 and junk.value < 0.5 * real.value
    assert junk.floor == pytest.approx(real.value, rel=0.1)


def test_bad_image_inputs(digits):
    _, test, _ = digits
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        fid_digits(test.reshape(450, 64), test.reshape(450, 64))
    with pytest.raises(ValueError, match="same point shape"):
        fid(test, torch.zeros(10, 1, 4, 4), feature_net=digits_feature_net())
    with pytest.raises(ValueError, match="at least 2 samples"):
        fid_digits(test[:1], test)
    with pytest.raises(ValueError, match="NaN"):
        fid_digits(torch.full_like(test, float("nan")), test)
    with pytest.raises(TypeError, match="nn.Module"):
        fid(test, test, feature_net=lambda x: x)
    with pytest.raises(ValueError, match="8x8 digits"):
        digits_feature_net()(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="split must be one of"):
        digits_data("validation")


def test_fid_leaves_a_users_network_as_it_was_and_evaluates_it_in_eval_mode(digits):
    # Issue 25, item 9 (torchmetrics #1620): fid turned the caller's float32 network into a
    # float64 one in place (so float32 images then failed) and ran it in train mode, so dropout
    # and batch statistics made FID depend on batch_size (0.099-0.122 against 0.0235).
    train, test, _ = digits
    torch.manual_seed(0)  # the network's initial weights only
    net = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 32),
        torch.nn.BatchNorm1d(32),
        torch.nn.Dropout(0.5),
        torch.nn.ReLU(),
    )
    net[2].running_mean.normal_()  # running statistics unlike any one batch's
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    values = [fid(test, train, feature_net=net, batch_size=b).value for b in (16, 64, 500)]
    # Float32 features: a batch's matmul blocking moves them by an ulp (1e-9 relative here);
    # train mode moved FID by 20 % and more.
    assert values[0] == pytest.approx(values[2], rel=1e-6)
    assert values[1] == pytest.approx(values[2], rel=1e-6)
    assert net.training and all(m.training for m in net.modules())
    assert all(p.dtype == torch.float32 for p in net.state_dict().values() if p.is_floating_point())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    # The eval-mode features are what a caller computes with net.eval().
    net.eval()
    ours = frechet_distance_features(net(test).double(), net(train).double()).item()
    assert values[2] == pytest.approx(ours, rel=1e-6)


def test_kid_stderr_is_a_spread_not_round_off(digits):
    # Issue 25, item 8 (torch-fidelity #8, #45): with N = M = 50 every subset was the whole set
    # and the stderr was ~5e-14, while KID over 20 independent sample sets of 50 spreads by 15
    # (docs/metrics.md). The default subsets are half the set; their spread is no smaller.
    train, test, _ = digits
    g = torch.Generator().manual_seed(3)
    res = kid_digits(train[:50], test[:50], subsets=50, generator=g)
    assert res.extra["subset_size"] == 25 and res.stderr > 5.0
    with pytest.warns(UserWarning, match="every subset of the smaller set is the whole set"):
        whole = kid_digits(train[:50], test[:50], subset_size=50, subsets=50, generator=g)
    assert whole.stderr is None and whole.value == pytest.approx(res.value, abs=3 * res.stderr)


def test_digits_metrics_refuse_images_outside_their_range_and_warn_on_0_1(digits):
    # Trial 3 item 3: (x + 1) * 127.5 gave FID 1.8e7 and (x + 1) / 2 gave 296.6 (1.7 on
    # [-1, 1]), silently: the digits network reads [-1, 1].
    train, test, _ = digits
    pixels = (test + 1) * 127.5
    msg = r"samples must be images in \[-1, 1\] .* got values from 0 to 255"
    with pytest.raises(ValueError, match=msg):
        fid_digits(pixels, train)
    with pytest.raises(ValueError, match=msg):
        kid_digits(pixels, train)
    with pytest.raises(ValueError, match=msg):
        inception_score_digits(pixels)
    with pytest.raises(ValueError, match=r"real must be images in \[-1, 1\]"):
        fid_digits(test, train * 2)
    with pytest.raises(ValueError, match=r"reference must be images in \[-1, 1\]"):
        fid_digits(test[:100], train, reference=train * 3)
    with pytest.warns(UserWarning, match=r"samples holds only values >= 0 .* looks scaled to \[0, 1\]"):  # fmt: skip
        fid_digits((test + 1) / 2, train)
    with pytest.warns(UserWarning, match=r"real holds only values >= 0"):
        kid_digits(test[:100], (train + 1) / 2, generator=torch.Generator().manual_seed(0))
    # model samples overshoot [-1, 1] a little: accepted without a warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = fid_digits(test * 1.2, train).value
    assert value == value
