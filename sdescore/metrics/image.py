r"""FID, KID and Inception score over any feature network, by way of torchmetrics.

The only module that imports torchmetrics (the optional extra `metrics`). torchmetrics'
`FrechetInceptionDistance` (Heusel et al. 2017), `KernelInceptionDistance` (Bińkowski et al.
2018) and `InceptionScore` (Salimans et al. 2016) accept any `nn.Module` as the feature
extractor and keep the streaming statistics; this module feeds them images in the library's
convention, `(B, C, H, W)` in [-1, 1], in batches, and returns `SampleMetric`s with floors.

The `*_digits` functions use the shipped `DigitsFeatureNet` ("FID-digits"). To use Inception
instead, when its weights are available locally, pass torchmetrics' (torch-fidelity's) network
and a `transform` to its input convention (uint8 RGB in [0, 255]):

    from torchmetrics.image.fid import NoTrainInceptionV3
    inception = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
    to_uint8 = lambda x: ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1)
    fid(samples, real, feature_net=inception, transform=to_uint8)
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from types import SimpleNamespace

import torch
from torch import nn

from .._checks import check_callable, check_generator, check_int, external_stacklevel
from ..models.mode import evaluation_mode
from ._common import SampleMetric, check_pair, check_samples
from .digits import DigitsLogits, digits_feature_net

__all__ = ["fid", "fid_digits", "inception_score", "inception_score_digits", "kid", "kid_digits"]


def _torchmetrics_image():
    # The submodules themselves: torchmetrics.image only re-exports these classes when
    # torch-fidelity is installed, which a custom feature network does not need.
    try:
        from torchmetrics.image import fid, inception, kid
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            'FID, KID and the Inception score need torchmetrics: pip install "sdescore[metrics]"'
        ) from err
    return SimpleNamespace(
        FrechetInceptionDistance=fid.FrechetInceptionDistance,
        KernelInceptionDistance=kid.KernelInceptionDistance,
        InceptionScore=inception.InceptionScore,
    )


class _Features(nn.Module):
    """`transform`, then the user's network in eval mode, flattened to `(B, d)` in float64.

    The network is held outside this module's tree (in a tuple), so that torchmetrics'
    `set_dtype` and `.to` never reach it: the caller's module keeps its dtype, device and
    parameters. Each batch runs it in eval mode (dropout off, batch norm on its running
    statistics, which are then not updated) and restores every submodule's mode afterwards;
    a train-mode network made FID depend on the batch size. Floating inputs are cast to the
    network's dtype and device; the features come back on the images' device.
    """

    def __init__(self, net: nn.Module, transform):
        super().__init__()
        self._net, self.transform = (net,), transform
        if hasattr(net, "num_features"):
            self.num_features = net.num_features  # spares torchmetrics a probe pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net, device = self._net[0], x.device
        x = x if self.transform is None else self.transform(x)
        w = next((p for p in net.parameters() if p.is_floating_point()), None)
        if w is not None and isinstance(x, torch.Tensor) and x.is_floating_point():
            x = x.to(device=w.device, dtype=w.dtype)
        with torch.no_grad(), evaluation_mode(net):
            f = net(x)
        return f.reshape(f.shape[0], -1).to(device=device, dtype=torch.float64)


def _check_images(x, name: str, *, min_samples: int = 2) -> torch.Tensor:
    check_samples(x, name, min_samples=min_samples)
    if x.ndim != 4:
        raise ValueError(f"{name} must be images of shape (B, C, H, W), got {tuple(x.shape)}")
    return x


def _setup(feature_net, transform, batch_size, probe: torch.Tensor):
    if not isinstance(feature_net, nn.Module):
        raise TypeError(f"feature_net must be a torch.nn.Module, got {type(feature_net).__name__}")
    if transform is not None:
        check_callable("transform", transform)
    batch_size = check_int("batch_size", batch_size)
    feats = _Features(feature_net, transform)
    if not hasattr(feats, "num_features"):
        # torchmetrics would probe with a 299x299 RGB image; probe with the user's own data.
        feats.num_features = feats(probe[:2]).shape[1]
    return feats


def _paired_setup(samples, real, feature_net, transform, batch_size):
    """`fid`'s and `kid`'s checks of the two image sets and the extractor; the extractor."""
    _check_images(samples, "samples")
    _check_images(real, "real")
    feats = _setup(feature_net, transform, batch_size, real)
    check_pair(samples, real, ("samples", "real"))
    return feats


def _check_reference(reference, real) -> None:
    _check_images(reference, "reference")
    check_pair(reference, real, ("reference", "real"))


def _new(cls, **kw):
    # KID and IS announce that they "will save all extracted features in buffer": expected here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Metric .* will save all extracted features")
        return cls(**kw)


def _feed(metric, x, batch_size, **kw):
    for k in range(0, x.shape[0], batch_size):
        metric.update(x[k : k + batch_size], **kw)


def _seed(generator):
    # torchmetrics draws its subsets and shuffles from the global RNG: run it on a forked
    # global state seeded from `generator`, so results are reproducible and the caller's global
    # RNG is left as it was.
    if generator is None:
        return None
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def _fid_value(feats, x, y, batch_size):
    metric = _new(_torchmetrics_image().FrechetInceptionDistance, feature=feats, normalize=True)
    metric.set_dtype(torch.float64)
    _feed(metric, y, batch_size, real=True)
    _feed(metric, x, batch_size, real=False)
    return metric.compute().item()


def fid(
    samples: torch.Tensor,
    real: torch.Tensor,
    *,
    feature_net: nn.Module,
    reference: torch.Tensor | None = None,
    transform=None,
    batch_size: int = 500,
) -> SampleMetric:
    r"""Fréchet distance between the Gaussians fitted to the features of `samples` and `real`.

    torchmetrics' `FrechetInceptionDistance` with `feature_net` as the extractor; statistics
    and the distance in float64. FID is biased upwards at finite sizes (Bińkowski et al. 2018):
    compare values only at equal sizes, and against the floor.

    Args:
        samples: `(N, C, H, W)` model samples in [-1, 1], N >= 2.
        real: `(M, C, H, W)` real images in [-1, 1].
        feature_net: `nn.Module` mapping (transformed) images to features `(B, d)`.
        reference: optional real images independent of `real`; the floor is the FID between
            its first `min(R, N)` images and `real`.
        transform: optional callable applied to each batch before `feature_net`.
        batch_size: images per forward pass.

    Returns:
        `SampleMetric` named `"fid"` (`stderr` is `None`).

    Raises:
        ImportError: without torchmetrics (`pip install "sdescore[metrics]"`).
        ValueError, TypeError: for non-image inputs, different image shapes, < 2 images, NaN.
    """
    feats = _paired_setup(samples, real, feature_net, transform, batch_size)
    value = _fid_value(feats, samples, real, batch_size)
    floor, extra = None, {}
    if reference is not None:
        _check_reference(reference, real)
        floor = _fid_value(feats, reference[: samples.shape[0]], real, batch_size)
        extra["floor_n"] = min(reference.shape[0], samples.shape[0])
    return SampleMetric("fid", value, floor, None, samples.shape[0], extra)


def _kid_value(feats, x, y, batch_size, subsets, subset_size, seed):
    image = _torchmetrics_image()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        metric = _new(
            image.KernelInceptionDistance,
            feature=feats,
            subsets=subsets,
            subset_size=subset_size,
            normalize=True,
        )
        _feed(metric, y, batch_size, real=True)
        _feed(metric, x, batch_size, real=False)
        mean, std = metric.compute()
    return mean.item(), std.item()


def kid(
    samples: torch.Tensor,
    real: torch.Tensor,
    *,
    feature_net: nn.Module,
    reference: torch.Tensor | None = None,
    transform=None,
    subsets: int = 100,
    subset_size: int | None = None,
    batch_size: int = 500,
    generator: torch.Generator | None = None,
) -> SampleMetric:
    r"""Kernel Inception distance: unbiased MMD² with the cubic polynomial kernel on features.

    torchmetrics' `KernelInceptionDistance` (Bińkowski et al. 2018), averaged over `subsets`
    random subsets of `subset_size` features from each set. Unbiased, so its floor is near 0.

    `stderr` is the standard deviation of KID over the subsets, i.e. the spread of a KID
    computed from `subset_size` samples: an error bar for the value only when subsets differ,
    which is why the default `subset_size` is half the smaller set (up to 1000). With
    `subset_size = min(N, M)` every subset of the smaller set is the whole set, the spread
    misses its sampling variation (it was ~1e-16 for N = M), and `stderr` is `None` with a
    warning. docs/metrics.md compares it with the spread over independent sample sets.

    Args:
        samples: `(N, C, H, W)` model samples in [-1, 1], N >= 2.
        real: `(M, C, H, W)` real images in [-1, 1].
        feature_net: `nn.Module` mapping (transformed) images to features `(B, d)`.
        reference: optional real images independent of `real`, for the floor.
        transform: optional callable applied to each batch before `feature_net`.
        subsets: number of random subsets.
        subset_size: their size, >= 2; default `min(N, M) // 2` capped at 1000 (`min(N, M)` below
            4 images).
        batch_size: images per forward pass.
        generator: `torch.Generator` seeding the subsets.

    Returns:
        `SampleMetric` named `"kid"`, `stderr` the standard deviation over the subsets (`None`
        when `subset_size = min(N, M)`).

    Raises:
        ImportError: without torchmetrics (`pip install "sdescore[metrics]"`).
        ValueError, TypeError: for bad images, or `subset_size` above either set's size.
    """
    check_generator("generator", generator)
    feats = _paired_setup(samples, real, feature_net, transform, batch_size)
    subsets = check_int("subsets", subsets)
    n = min(samples.shape[0], real.shape[0])
    if subset_size is None:
        subset_size = min(n // 2, 1000) if n >= 4 else n
    subset_size = check_int("subset_size", subset_size, minimum=2)
    if subset_size > n:
        raise ValueError(f"subset_size must be <= min(N, M) = {n}, got {subset_size}")
    seed = _seed(generator)
    value, std = _kid_value(feats, samples, real, batch_size, subsets, subset_size, seed)
    if subset_size == n:
        # Every subset of the smaller set is that whole set: the spread over subsets misses its
        # sampling variation (all of it when N = M, where it is ~1e-16).
        warnings.warn(
            f"kid: subset_size = {subset_size} = min(N, M), so every subset of the smaller set "
            "is the whole set and the spread over subsets is no error bar; stderr is None. "
            "Use subset_size <= min(N, M) // 2 (the default) for a spread",
            stacklevel=2,
        )
        std = None
    floor, extra = None, {"subset_size": subset_size}
    if reference is not None:
        _check_reference(reference, real)
        ref = reference[: samples.shape[0]]
        size = min(subset_size, ref.shape[0])
        floor = _kid_value(feats, ref, real, batch_size, subsets, size, seed)[0]
        extra["floor_n"] = ref.shape[0]
    return SampleMetric("kid", value, floor, std, samples.shape[0], extra)


def _is_value(logits_net, x, batch_size, splits, seed):
    image = _torchmetrics_image()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        metric = _new(image.InceptionScore, feature=logits_net, splits=splits)
        _feed(metric, x, batch_size)
        mean, std = metric.compute()
    return mean.item(), std.item()


def inception_score(
    samples: torch.Tensor,
    *,
    logits_net: nn.Module,
    reference: torch.Tensor | None = None,
    transform=None,
    splits: int = 10,
    batch_size: int = 500,
    generator: torch.Generator | None = None,
) -> SampleMetric:
    r"""Inception score $\exp E_x[\mathrm{KL}(p(y\mid x)\,\|\,p(y))]$ (Salimans et al. 2016).

    torchmetrics' `InceptionScore` with `logits_net` giving class logits; the mean over
    `splits` groups. Higher is better, at most the number of classes.

    Args:
        samples: `(N, C, H, W)` images in [-1, 1], N >= `splits`.
        logits_net: `nn.Module` mapping (transformed) images to class logits `(B, classes)`.
        reference: optional real images: the "floor" is their score at the samples' size
            (what real data scores, a ceiling in value).
        transform: optional callable applied to each batch before `logits_net`.
        splits: number of groups.
        batch_size: images per forward pass.
        generator: `torch.Generator` seeding the shuffle into groups.

    Returns:
        `SampleMetric` named `"inception_score"`, `stderr` the standard deviation over splits.

    Raises:
        ImportError: without torchmetrics (`pip install "sdescore[metrics]"`).
        ValueError, TypeError: for non-image inputs, fewer images than `splits`, NaN.
    """
    check_generator("generator", generator)
    splits = check_int("splits", splits)
    _check_images(samples, "samples", min_samples=max(2, splits))
    net = _setup(logits_net, transform, batch_size, samples)
    seed = _seed(generator)
    value, std = _is_value(net, samples, batch_size, splits, seed)
    floor, extra = None, {}
    if reference is not None:
        _check_images(reference, "reference", min_samples=max(2, splits))
        check_pair(samples, reference, ("samples", "reference"))
        floor = _is_value(net, reference[: samples.shape[0]], batch_size, splits, seed)[0]
        extra["floor_n"] = min(reference.shape[0], samples.shape[0])
    return SampleMetric("inception_score", value, floor, std, samples.shape[0], extra)


_DIGITS_LIMIT = 1.5  # samples overshoot [-1, 1] a little; beyond this the scale is wrong


def _check_digits_range(x, name: str, *, refuse: bool = True) -> None:
    """The `DigitsFeatureNet` reads [-1, 1]: refuse values clearly outside, warn on [0, 1].

    Model samples overshoot [-1, 1] slightly, so only values beyond [-1.5, 1.5] are refused
    (0..255 pixels gave FID 1.8e7). A set whose every value is >= 0 looks scaled to [0, 1]
    (which gave FID 297 where [-1, 1] gave 1.7): a `UserWarning`. Other checks (shape, NaN)
    are left to `fid`/`kid`/`inception_score`.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if lo != lo or hi != hi:  # NaN: the metric's own check names it
        return
    if lo < -_DIGITS_LIMIT or hi > _DIGITS_LIMIT:
        if refuse:
            raise ValueError(
                f"{name} must be images in [-1, 1] (the digits feature network's range; up to "
                f"+-{_DIGITS_LIMIT} for samples that overshoot), got values from {lo:g} to "
                f"{hi:g}; rescale, e.g. x / 127.5 - 1 for 0..255 pixels or 2 * x - 1 for [0, 1]"
            )
        # a model's own samples (in `evaluate`): the metric of what it drew, with a warning
        warnings.warn(
            f"{name} reach values from {lo:g} to {hi:g}, beyond [-{_DIGITS_LIMIT}, "
            f"{_DIGITS_LIMIT}]: the digits metrics read [-1, 1], so these samples score as badly "
            "scaled images; was the model trained on data in [-1, 1]?",
            UserWarning,
            stacklevel=external_stacklevel(),
        )
        return
    if lo >= 0:
        warnings.warn(
            f"{name} holds only values >= 0 (from {lo:g} to {hi:g}): it looks scaled to [0, 1], "
            "but the digits feature network reads [-1, 1] and the metric is then wrong; "
            "rescale with 2 * x - 1",
            UserWarning,
            stacklevel=external_stacklevel(),
        )


# Set by `evaluate` while it scores a model's own samples: beyond the limit they get a warning,
# not an error (the caller cannot rescale what the model drew; the data are still refused).
_MODEL_SAMPLES = contextvars.ContextVar("sdescore_digits_model_samples", default=False)


@contextlib.contextmanager
def model_samples():
    """Within it, the `*_digits` metrics warn (not raise) on `samples` beyond the limit."""
    token = _MODEL_SAMPLES.set(True)
    try:
        yield
    finally:
        _MODEL_SAMPLES.reset(token)


def _check_digits_sets(**sets) -> None:
    lenient = _MODEL_SAMPLES.get()
    for name, x in sets.items():
        if x is not None:
            _check_digits_range(x, name, refuse=not (lenient and name == "samples"))


def fid_digits(
    samples: torch.Tensor,
    real: torch.Tensor,
    *,
    reference: torch.Tensor | None = None,
    batch_size: int = 500,
) -> SampleMetric:
    """FID-digits: `fid` with the shipped `DigitsFeatureNet`'s 64 penultimate features.

    Args:
        samples: `(N, 1, 8, 8)` model samples in [-1, 1] (see `digits_to_images`).
        real: `(M, 1, 8, 8)` real digits, e.g. `digits_data("test")[0]`.
        reference: optional independent real digits (e.g. `digits_data("train")[0]`) for the
            floor.
        batch_size: images per forward pass.

    Returns:
        `SampleMetric` named `"fid"`.

    Raises:
        ValueError: an image set with values beyond [-1.5, 1.5] (the network reads [-1, 1];
            samples may overshoot it a little); a `UserWarning` when every value of a set is
            >= 0 (scaled to [0, 1]). Otherwise as `fid`.
    """
    _check_digits_sets(samples=samples, real=real, reference=reference)
    net = digits_feature_net(device=samples.device if isinstance(samples, torch.Tensor) else None)
    return fid(samples, real, feature_net=net, reference=reference, batch_size=batch_size)


def kid_digits(
    samples: torch.Tensor,
    real: torch.Tensor,
    *,
    reference: torch.Tensor | None = None,
    subsets: int = 100,
    subset_size: int | None = None,
    generator: torch.Generator | None = None,
) -> SampleMetric:
    """KID on the `DigitsFeatureNet` features; arguments and range checks as in `kid` and
    `fid_digits`."""
    _check_digits_sets(samples=samples, real=real, reference=reference)
    net = digits_feature_net(device=samples.device if isinstance(samples, torch.Tensor) else None)
    return kid(
        samples,
        real,
        feature_net=net,
        reference=reference,
        subsets=subsets,
        subset_size=subset_size,
        generator=generator,
    )


def inception_score_digits(
    samples: torch.Tensor,
    *,
    reference: torch.Tensor | None = None,
    splits: int = 10,
    generator: torch.Generator | None = None,
) -> SampleMetric:
    """Inception-style score from the `DigitsFeatureNet` classifier's softmax (10 classes).

    Args:
        samples: `(N, 1, 8, 8)` images in [-1, 1], N >= `splits`.
        reference: optional real digits, scored the same way at the samples' size.
        splits: number of groups.
        generator: `torch.Generator` seeding the shuffle into groups.

    Returns:
        `SampleMetric` named `"inception_score"`.

    Raises:
        ValueError: images beyond [-1.5, 1.5] (a `UserWarning` for all >= 0), as `fid_digits`.
    """
    _check_digits_sets(samples=samples, reference=reference)
    net = digits_feature_net(device=samples.device if isinstance(samples, torch.Tensor) else None)
    return inception_score(
        samples,
        logits_net=DigitsLogits(net),
        reference=reference,
        splits=splits,
        generator=generator,
    )
