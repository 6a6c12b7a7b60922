r"""Noise-conditional classifier for classifier guidance: its loss and a small training helper.

The classifier $p_\phi(y \mid x_t, t)$ is trained by cross-entropy on data perturbed with the
SDE's own kernel, $x_t = \alpha(t) x_0 + \sigma(t) z$ with $t \sim U[\epsilon, T]$ (Song et al.
2021, Sec. 5 and App. I.1; Dhariwal & Nichol 2021), so that it estimates
$p_t(y \mid x)$ at every noise level the sampler visits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_callable, check_generator, check_int, check_real, check_seed
from ..models.conditional import check_labels
from ._common import reduce, resolve, sample_time

__all__ = ["classifier_loss", "train_classifier"]


def classifier_loss(
    classifier,
    x0: torch.Tensor,
    y,
    *,
    sde,
    eps: float = 1e-5,
    t=None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "none",
) -> torch.Tensor:
    r"""Cross-entropy $-\log p_\phi(y \mid x_t, t)$ of a classifier on SDE-perturbed data.

    Args:
        classifier: callable `(x, t) -> logits (B, K)`.
        x0: clean data `(B, *D)`.
        y: labels, an int or `(B,)` integer tensor in `[0, K-1]`.
        sde: the `GaussianSDE` whose kernel perturbs the data (the sampler's SDE).
        eps: smallest time drawn, $t \sim U[\epsilon, T]$.
        t: fixed times (float or `(B,)`) instead of random ones.
        noise: fixed noise `(B, *D)` instead of a draw.
        generator: for $t$ and $z$.
        reduction: `"none"` (per example, `(B,)`), `"mean"` or `"sum"`.

    Raises:
        ValueError: logits not of shape `(B, K)`, labels out of range or of the wrong shape.
        TypeError: labels that are not integers, an `sde` that is not a `GaussianSDE`.
    """
    sde = resolve(classifier, x0, sde)
    check_generator("generator", generator)
    t = sample_time(sde, x0, t, eps, generator)
    x_t, _, _ = sde.perturb(x0, t, noise=noise, generator=generator)
    logits = classifier(x_t, t)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x0.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"classifier(x, t) must return logits ({x0.shape[0]}, K), got {got}")
    y = check_labels(y, x0.shape[0], logits.shape[1], allow_null=False, device=x0.device)
    return reduce(F.cross_entropy(logits, y, reduction="none"), reduction)


def train_classifier(
    classifier: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sde,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    eps: float = 1e-5,
    seed: int = 0,
) -> list[float]:
    """Fit a noise-conditional classifier with Adam on `classifier_loss`; returns the losses.

    Minibatches are drawn with replacement from `(x, y)` by a generator seeded with `seed`
    (nothing global is seeded). The classifier is trained in place and left in eval mode.

    Args:
        classifier: an `nn.Module` `(x, t) -> logits (B, K)`.
        x: data `(N, *D)`; y: labels `(N,)` in `[0, K-1]`.
        sde: the `GaussianSDE` of the sampler.
        steps, batch_size, lr: optimisation settings.
        eps: smallest training time.
        seed: seeds the data and noise generator.
    """
    check_callable("classifier", classifier)
    if not isinstance(classifier, torch.nn.Module):
        raise TypeError(f"classifier must be an nn.Module, got {type(classifier).__name__}")
    if not isinstance(y, torch.Tensor) or y.shape != x.shape[:1]:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be a tensor of shape ({x.shape[0]},), got {got}")
    steps, batch_size = check_int("steps", steps), check_int("batch_size", batch_size)
    lr = check_real("lr", lr, positive=True)
    g = torch.Generator(x.device).manual_seed(check_seed("seed", seed))
    opt = torch.optim.Adam(classifier.parameters(), lr=lr)
    classifier.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(x.shape[0], (batch_size,), generator=g, device=x.device)
        loss = classifier_loss(classifier, x[idx], y[idx], sde=sde, eps=eps, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.mean().backward()
        opt.step()
        losses.append(loss.detach().mean())
    classifier.eval()
    return torch.stack(losses).tolist()
