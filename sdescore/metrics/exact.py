r"""Metrics against a known density: `sdescore.toy.GaussianMixture` data.

For samples $x_i$ of a model of data $p = \sum_k w_k N(\mu_k, C_k)$:

- the mean exact log-density $\frac1N\sum_i \log p(x_i)$ (for exact samples its mean is
  $-H(p)$; a model that spreads mass off the data scores lower, one that collapses onto the
  modes can score higher, so read it together with the two below);
- per-mode weights $\hat w_k = \frac1N\sum_i r_k(x_i)$ with the exact responsibilities
  $r_k(x) = w_k N(x; \mu_k, C_k)/p(x)$ (unbiased for exact samples: $E[r_k(X)] = w_k$);
- within-mode spreads $\hat s_k = \big(\sum_i r_k(x_i)\|x_i - \mu_k\|^2 /
  (d\sum_i r_k(x_i))\big)^{1/2}$, consistent for $s_k = (\operatorname{tr}C_k / d)^{1/2}$.

Each floor is the same number for an exact sample of the same size from the mixture.
"""

from __future__ import annotations

import math

import torch

from ..toy.mixture import GaussianMixture
from ._common import SampleMetric, check_samples

__all__ = ["mixture_metrics", "mode_statistics"]


def _responsibilities(mixture: GaussianMixture, x: torch.Tensor):
    # GaussianMixture exposes log_prob but not its components; its per-component log-densities
    # at t = 0 (alpha = 1, sigma = 0) are the exact responsibilities' logits.
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    logits, shift, _, _ = mixture._relative_components(x, ones, torch.zeros_like(ones))
    return torch.softmax(logits, dim=1), torch.logsumexp(logits, dim=1) + shift


def mode_statistics(samples: torch.Tensor, mixture: GaussianMixture) -> dict:
    """Per-mode weights and spreads of `samples: (N, *D)` under the exact responsibilities.

    Returns:
        dict of float64 tensors: `"weights"` `(K,)`, `"spreads"` `(K,)` (per-coordinate RMS
        distance to the mode's mean; NaN for a mode with less than one sample's worth of
        responsibility), `"true_weights"`, `"true_spreads"`, and `"log_prob"`
        `(N,)` the exact log-density of each sample.

    Raises:
        TypeError: if `mixture` is not a `GaussianMixture`.
        ValueError: for a shape that is not `(N, *mixture.event_shape)`, N < 2, NaN, or a
            sample so far out that its log-density is below float64's range.
    """
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(
            f"mixture must be a sdescore.toy.GaussianMixture, got {type(mixture).__name__}"
        )
    check_samples(samples, "samples")
    if tuple(samples.shape[1:]) != mixture.event_shape:
        raise ValueError(
            f"samples must have shape (N, {', '.join(map(str, mixture.event_shape))}), "
            f"got {tuple(samples.shape)}"
        )
    x = samples.to(torch.float64)
    r, logp = _responsibilities(mixture, x)
    if not bool(torch.isfinite(logp).all()):
        i = int((~torch.isfinite(logp)).nonzero()[0])
        raise ValueError(
            f"samples[{i}] lies so far from the mixture (largest |coordinate| "
            f"{x[i].abs().max().item():.3g}) that its log-density is below float64's range; "
            "the samples are not on the data's scale"
        )
    mu, lam = mixture._base["mu"].to(x.device), mixture._base["lam"].to(x.device)
    diff = x.reshape(x.shape[0], 1, -1) - mu  # (N, K, d)
    # Squared distances in units of a power of two: finite for any finite samples.
    c = math.ldexp(1.0, math.frexp(diff.abs().max().item())[1])
    d2 = (diff / c).square().sum(-1)  # (N, K), in units of c^2
    mass = r.sum(0)
    spreads = c * ((r * d2).sum(0) / (mixture.dim * mass.clamp(min=1e-300))).sqrt()
    # A mode holding less than one sample's worth of responsibility has no spread to speak of
    # (its estimate would be set by far-away points); its weight already shows it is missing.
    spreads = torch.where(mass >= 1, spreads, torch.full_like(spreads, float("nan")))
    return {
        "weights": mass / x.shape[0],
        "spreads": spreads,
        "true_weights": mixture.weights.to(x.device),
        "true_spreads": (lam.sum(-1) / mixture.dim).sqrt(),
        "log_prob": logp,
    }


def _summaries(stats: dict):
    # The mean and spread of the log-densities in units of a power of two: finite for any
    # finite log-densities (samples far out have log-densities near -1e300).
    top = stats["log_prob"].abs().max().item()
    c = 1.0 if top == 0 else math.ldexp(1.0, math.frexp(top)[1])
    lp = stats["log_prob"] / c
    tv = 0.5 * (stats["weights"] - stats["true_weights"]).abs().sum().item()
    rel = (stats["spreads"] / stats["true_spreads"] - 1).abs().nan_to_num(nan=0.0).max().item()
    return lp.mean().item() * c, lp.std().item() * c / math.sqrt(lp.shape[0]), tv, rel


def mixture_metrics(
    samples: torch.Tensor, mixture: GaussianMixture, *, generator: torch.Generator | None = None
) -> dict[str, SampleMetric]:
    """Exact-density metrics of `samples: (N, *D)` for data drawn from `mixture`.

    Args:
        samples: `(N, *D)` model samples, N >= 2.
        mixture: the data law, a `sdescore.toy.GaussianMixture`.
        generator: for the exact reference sample of size N behind the floors.

    Returns:
        `{"log_density": ..., "mode_weights": ..., "mode_spreads": ...}`, `SampleMetric`s with
        floors: the mean exact log-density (nats, with its standard error); the total-variation
        distance $\\frac12\\sum_k|\\hat w_k - w_k|$ between the per-mode weights and the true
        ones (`extra` holds both); the largest relative spread error
        $\\max_k|\\hat s_k/s_k - 1|$ over the modes that hold samples (`extra` holds both).

    Raises:
        TypeError, ValueError: as for `mode_statistics`.
    """
    stats = mode_statistics(samples, mixture)
    n = samples.shape[0]
    exact = mixture.sample(n, generator=generator, dtype=torch.float64)
    lp, se, tv, rel = _summaries(stats)
    flp, fse, ftv, frel = _summaries(mode_statistics(exact, mixture))
    w = {"weights": stats["weights"], "true_weights": stats["true_weights"]}
    s = {"spreads": stats["spreads"], "true_spreads": stats["true_spreads"]}
    return {
        "log_density": SampleMetric("log_density", lp, flp, se, n, {"floor_stderr": fse}),
        "mode_weights": SampleMetric("mode_weights", tv, ftv, None, n, w),
        "mode_spreads": SampleMetric("mode_spreads", rel, frel, None, n, s),
    }
