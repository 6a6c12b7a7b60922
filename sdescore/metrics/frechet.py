r"""The Fréchet (2-Wasserstein) distance between Gaussians, in pure torch and float64.

$$d^2 = \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
      - 2\operatorname{tr}\big(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}\big)^{1/2}$$

(Dowson & Landau 1982; the FID of Heusel et al. 2017 applies it to feature statistics). Both
square roots are taken by symmetric eigendecompositions, so every matrix stays symmetric and the
trace term is real; eigenvalues that come out slightly negative from round-off (sample
covariances with fewer points than features are singular) are clipped to zero and reported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .._checks import check_bool, check_finite_tensor
from ._common import check_pair, check_samples

__all__ = ["FrechetResult", "feature_statistics", "frechet_distance", "frechet_distance_features"]

# An eigenvalue below -_NEG_TOL * (largest |eigenvalue|) is not round-off: the input is not a
# covariance, and the user is warned (it is still clipped).
_NEG_TOL = 1e-8


@dataclass(frozen=True)
class FrechetResult:
    """`frechet_distance(..., return_info=True)`.

    Attributes:
        distance: 0-d float64 tensor, the squared Fréchet distance $d^2$.
        clipped: how many negative eigenvalues (of $\\Sigma_1$ and of
            $\\Sigma_1^{1/2}\\Sigma_2\\Sigma_1^{1/2}$) were set to zero.
        min_eigenvalue: the most negative eigenvalue clipped (0.0 when none was).
    """

    distance: torch.Tensor
    clipped: int
    min_eigenvalue: float


def _check_stats(mu, cov, name: str) -> None:
    for arg, what in ((mu, f"mu{name}"), (cov, f"cov{name}")):
        if not isinstance(arg, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(arg).__name__}")
        if not arg.is_floating_point():
            raise TypeError(f"{what} must be a floating-point tensor, got dtype {arg.dtype}")
    d = mu.shape[0] if mu.ndim == 1 else None
    if d is None:
        raise ValueError(f"mu{name} must have shape (d,), got {tuple(mu.shape)}")
    if cov.shape != (d, d):
        raise ValueError(
            f"cov{name} must have shape ({d}, {d}) to match mu{name}, got {tuple(cov.shape)}"
        )
    check_finite_tensor(mu, f"mu{name}")
    check_finite_tensor(cov, f"cov{name}")


def _psd_eigh(a: torch.Tensor):
    """Eigendecomposition of the symmetric part of `a`, negatives clipped: `(lam, U, n, min)`."""
    lam, U = torch.linalg.eigh(0.5 * (a + a.T))
    neg = lam < 0
    low = lam.min().item() if bool(neg.any()) else 0.0
    scale = lam.abs().max().item()
    if low < -_NEG_TOL * max(scale, 1e-300):
        warnings.warn(
            f"a covariance in frechet_distance has eigenvalue {low:.3g} (largest {scale:.3g}): "
            "not positive semi-definite beyond round-off; clipped to 0",
            stacklevel=3,
        )
    return lam.clamp(min=0), U, int(neg.sum()), low


def frechet_distance(
    mu1: torch.Tensor,
    cov1: torch.Tensor,
    mu2: torch.Tensor,
    cov2: torch.Tensor,
    *,
    return_info: bool = False,
):
    r"""Squared Fréchet distance between $N(\mu_1, \Sigma_1)$ and $N(\mu_2, \Sigma_2)$.

    Computed in float64 whatever the input dtype (the FID convention): with
    $\Sigma_1 = U\Lambda U^\top$ and $S = U\Lambda^{1/2}U^\top$, the trace of
    $(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})^{1/2}$ is $\sum_i \sqrt{\lambda_i(S\Sigma_2S)}$;
    negative eigenvalues are clipped to 0 and counted (warned about when larger than
    round-off). The result is clamped at 0. Symmetric in its two Gaussians up to round-off.

    Args:
        mu1: `(d,)` mean of the first Gaussian.
        cov1: `(d, d)` its covariance (symmetric positive semi-definite).
        mu2: `(d,)` mean of the second Gaussian.
        cov2: `(d, d)` its covariance.
        return_info: return a `FrechetResult` (distance, clipped count, most negative
            eigenvalue) instead of the distance alone.

    Returns:
        0-d float64 tensor $d^2$ on `mu1`'s device, or a `FrechetResult`.

    Raises:
        TypeError: if an argument is not a floating-point tensor.
        ValueError: for mismatched shapes or NaN/Inf entries.
    """
    _check_stats(mu1, cov1, "1")
    _check_stats(mu2, cov2, "2")
    check_bool("return_info", return_info)
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"mu1 and mu2 must have the same feature size, got {mu1.shape[0]} and {mu2.shape[0]}"
        )
    f64 = dict(dtype=torch.float64, device=mu1.device)
    mu1, cov1, mu2, cov2 = (a.to(**f64) for a in (mu1, cov1, mu2, cov2))
    lam1, U1, n1, low1 = _psd_eigh(cov1)
    s1 = (U1 * lam1.sqrt()) @ U1.T
    lam, _, n2, low2 = _psd_eigh(s1 @ cov2 @ s1)
    d2 = (mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * lam.sqrt().sum()
    d2 = d2.clamp(min=0)
    if return_info:
        return FrechetResult(d2, n1 + n2, min(low1, low2))
    return d2


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean `(d,)` and unbiased covariance `(d, d)` of `features: (N, d)`, in float64.

    Raises:
        ValueError, TypeError: if `features` is not a finite `(N, d)` float tensor, N >= 2.
    """
    check_samples(features, "features")
    if features.ndim != 2:
        raise ValueError(f"features must have shape (N, d), got {tuple(features.shape)}")
    f = features.to(torch.float64)
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (f.shape[0] - 1)


def frechet_distance_features(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`frechet_distance` between the Gaussians fitted to `x: (N, d)` and `y: (M, d)` (float64).

    Raises:
        ValueError, TypeError: for non-2-d inputs, different feature sizes, N or M < 2, NaN.
    """
    for a, name in ((x, "x"), (y, "y")):
        if isinstance(a, torch.Tensor) and a.ndim != 2:
            raise ValueError(f"{name} must be features of shape (N, d), got {tuple(a.shape)}")
    check_pair(x, y)
    return frechet_distance(*feature_statistics(x), *feature_statistics(y))
