r"""Gaussian-mixture data with exact scores and densities under any Gaussian-kernel SDE.

If $p_0 = \sum_k w_k N(\mu_k, C_k)$ and the kernel is $N(\alpha(t) x_0, \sigma(t)^2 I)$, then
$p_t = \sum_k w_k N(\alpha\mu_k, \alpha^2 C_k + \sigma^2 I)$ exactly, with an exact score. With
$C_k = U_k \operatorname{diag}(\lambda_k) U_k^\top$ computed once, every time needs only the
diagonal $\alpha^2\lambda_k + \sigma^2$. This is the reference for samplers and likelihoods.
"""

from __future__ import annotations

import math

import torch

from .._checks import as_time, check_dtype, check_generator, check_int, check_state
from ..sdes.gaussian import GaussianSDE

__all__ = ["ExactScore", "GaussianMixture", "gaussian"]


class GaussianMixture:
    r"""Mixture $\sum_k w_k N(\mu_k, C_k)$ on states of shape `event_shape`.

    Every parameter is checked at construction: NaN or Inf means, stds, covariances or weights
    raise `ValueError` naming the argument (rather than NaN samples and scores later).

    Args:
        means: `(K, *D)` component means.
        stds: isotropic component standard deviations, a float or `(K,)` (so $C_k = s_k^2 I$).
        covariances: alternatively full covariances `(K, d, d)` with `d = prod(D)`.
        weights: `(K,)` positive mixture weights (normalised here); default uniform.
    """

    def __init__(self, means: torch.Tensor, stds=None, *, covariances=None, weights=None):
        check_state(means, "means")
        if means.ndim < 2:
            raise ValueError(f"means must have shape (K, *D), got {tuple(means.shape)}")
        means = means.detach().to(torch.float64)
        if not bool(torch.isfinite(means).all()):
            raise ValueError("means must be finite, got NaN or Inf entries")
        K = means.shape[0]
        self.event_shape = tuple(means.shape[1:])
        self.dim = math.prod(self.event_shape)
        flat = means.reshape(K, self.dim)
        if (stds is None) == (covariances is None):
            raise ValueError("give exactly one of stds (isotropic) or covariances (full)")
        if stds is not None:
            stds = torch.as_tensor(stds, dtype=torch.float64)
            if stds.ndim > 1 or stds.numel() not in (1, K):
                raise ValueError(
                    f"stds must be a float or one per component, shape ({K},) (isotropic: "
                    f"C_k = s_k^2 I), got shape {tuple(stds.shape)}; for a standard deviation "
                    "per dimension give covariances=torch.diag_embed(s ** 2), s of shape (K, d)"
                )
            stds = stds.expand(K).clone()
            if not bool((stds > 0).all()) or not bool(torch.isfinite(stds).all()):
                raise ValueError(f"stds must be finite and > 0, got {stds.tolist()}")
            lam, U = stds.square()[:, None].expand(K, self.dim).clone(), None
        else:
            cov = torch.as_tensor(covariances, dtype=torch.float64)
            if not bool(torch.isfinite(cov).all()):
                raise ValueError("covariances must be finite, got NaN or Inf entries")
            if cov.shape != (K, self.dim, self.dim):
                raise ValueError(
                    f"covariances must have shape {(K, self.dim, self.dim)}, got {tuple(cov.shape)}"
                )
            if not bool(torch.allclose(cov, cov.transpose(-1, -2))):
                raise ValueError("covariances must be symmetric")
            lam, U = torch.linalg.eigh(cov)
            if not bool((lam > 0).all()):
                raise ValueError("covariances must be positive definite")
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,) or not bool(((weights > 0) & torch.isfinite(weights)).all()):
            raise ValueError(f"weights must be {K} finite positive numbers, got {weights}")
        self._base = {"mu": flat, "lam": lam, "logw": (weights / weights.sum()).log()}
        if U is not None:
            self._base["U"] = U
        self._cache: dict = {}

    @property
    def num_components(self) -> int:
        return self._base["mu"].shape[0]

    @property
    def weights(self) -> torch.Tensor:
        return self._base["logw"].exp()

    def _params(self, like: torch.Tensor) -> dict:
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = {k: v.to(like.device, like.dtype) for k, v in self._base.items()}
        return self._cache[key]

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        check_state(x)
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"x must have shape (B, {', '.join(map(str, self.event_shape))}), "
                f"got {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.dim)

    def _relative_components(self, x, alpha, sigma):
        """Per-component log-densities split as `logits (B, K) + shift (B,)`, and the whitened
        residuals `(B, K, d)` for the score.

        `logits[:, k] + shift` is $\\log w_k + \\log N(x; \\alpha\\mu_k, \\alpha^2 C_k + \\sigma^2 I)$.
        `shift` $= -\\tfrac12 \\min_k q_k$ (with $q_k$ the Mahalanobis square) carries the size of
        $x$; `logits` carry the differences between components, which are what responsibilities
        and scores need. Both are computed without forming $q_k$ itself: squares are summed in
        units of a power of two per example (no overflow for points far out, e.g. 1e20 in
        float32), and for isotropic components the differences use
        $q_k - q_j = a(\\mu_j - \\mu_k)\\cdot(2x - a\\mu_k - a\\mu_j)/v_k + q_j (v_j - v_k)/v_k$,
        exact where $q_k$ and $q_j$ agree to more digits than the working precision holds (far
        from every mode, where a difference of squares would round every component to a tie).
        """
        p = self._params(x)
        xf = self._flat(x)
        m = alpha[:, None, None] * p["mu"]  # (B, K, d)
        y = xf[:, None, :] - m
        if "U" in p:
            y = torch.einsum("bkd,kde->bke", y, p["U"])
        v = alpha[:, None, None] ** 2 * p["lam"] + sigma[:, None, None] ** 2
        w = y / v.sqrt()
        top = w.detach().abs().amax(dim=(1, 2))
        scale = torch.exp2(torch.frexp(top)[1].to(top.dtype))[:, None]  # (B, 1), exact division
        qs = (w / scale[..., None]).square().sum(-1)  # q / scale^2, (B, K)
        j = qs.detach().argmin(dim=1, keepdim=True)  # the nearest component, (B, 1)
        qs_j = qs.gather(1, j)
        if "U" in p:
            dq = ((qs - qs_j) * scale) * scale
        else:
            vk = v[..., 0]  # isotropic: one variance per example and component
            vj = vk.gather(1, j)
            mj = m.gather(1, j[..., None].expand(-1, 1, m.shape[2]))
            lin = ((mj - m) * (2 * xf[:, None, :] - m - mj)).sum(-1) / vk
            dq = lin + ((qs_j * (vj - vk) / vk) * scale) * scale
        logits = p["logw"] - 0.5 * dq - 0.5 * torch.log(2 * math.pi * v).sum(-1)
        shift = -0.5 * (qs_j.squeeze(1) * scale.squeeze(1)) * scale.squeeze(1)
        return logits, shift, y / v, p

    def _components(self, x, alpha, sigma):
        """Per-component log-densities `(B, K)` and whitened residuals for the score."""
        logits, shift, z, p = self._relative_components(x, alpha, sigma)
        return logits + shift[:, None], z, p

    def _log_prob(self, x, alpha, sigma):
        logits, shift, _, _ = self._relative_components(x, alpha, sigma)
        return torch.logsumexp(logits, dim=1) + shift

    def _score(self, x, alpha, sigma):
        logits, _, z, p = self._relative_components(x, alpha, sigma)
        r = torch.softmax(logits, dim=1)[..., None]  # (B, K, 1)
        if "U" in p:
            z = torch.einsum("bke,kde->bkd", z, p["U"])
        return -(r * z).sum(1).reshape(x.shape)

    def _coeffs(self, x, t, sde):
        if not isinstance(sde, GaussianSDE):
            raise TypeError(
                f"sde must be a GaussianSDE (VPSDE, SubVPSDE, VESDE, LinearSDE), got {type(sde).__name__}"
            )
        t = as_time(t, check_state(x), sde.T)
        return sde.alpha(t), sde.sigma(t)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Data log-density $\\log p_0(x)$, `(B,)`."""
        ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        return self._log_prob(x, ones, torch.zeros_like(ones))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Data score $\\nabla \\log p_0(x)$, shaped like `x`."""
        ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        return self._score(x, ones, torch.zeros_like(ones))

    def marginal_log_prob(self, x: torch.Tensor, t, sde: GaussianSDE) -> torch.Tensor:
        """$\\log p_t(x)$ `(B,)` of the data diffused by `sde` to time t."""
        return self._log_prob(x, *self._coeffs(x, t, sde))

    def marginal_score(self, x: torch.Tensor, t, sde: GaussianSDE) -> torch.Tensor:
        """Exact score $\\nabla_x \\log p_t(x)$, shaped like `x`."""
        return self._score(x, *self._coeffs(x, t, sde))

    def score_fn(self, sde: GaussianSDE) -> ExactScore:
        """The exact score of $p_t$ under `sde` as a score function `(x, t) -> (B, *D)`."""
        return ExactScore(self, sde)

    def sample(self, n: int, *, generator=None, device=None, dtype=None) -> torch.Tensor:
        """Draw `n` exact samples, shape `(n, *D)`."""
        n = check_int("n", n)
        check_generator("generator", generator)
        dtype = check_dtype("dtype", dtype) or torch.get_default_dtype()
        like = torch.empty(0, device=device, dtype=dtype)
        p = self._params(like)
        k = torch.multinomial(p["logw"].exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, device=device, dtype=dtype)
        z = z * p["lam"][k].sqrt()
        if "U" in p:
            z = torch.einsum("kde,ke->kd", p["U"][k], z)
        return (p["mu"][k] + z).reshape(n, *self.event_shape)

    def mean(self) -> torch.Tensor:
        """Mean of the data, `(d,)` in float64."""
        return self.weights @ self._base["mu"]

    def covariance(self) -> torch.Tensor:
        """Covariance of the data, `(d, d)` in float64."""
        w, mu, lam = self.weights, self._base["mu"], self._base["lam"]
        if "U" in self._base:
            U = self._base["U"]
            cov_k = U @ torch.diag_embed(lam) @ U.transpose(-1, -2)
        else:
            cov_k = torch.diag_embed(lam)
        m = self.mean()
        dev = mu - m
        return (w[:, None, None] * (cov_k + dev[:, :, None] * dev[:, None, :])).sum(0)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.num_components}, event_shape={self.event_shape})"


def gaussian(mean: torch.Tensor, std=None, *, covariance=None) -> GaussianMixture:
    """A single Gaussian $N(\\mu, C)$ as a one-component mixture; `mean: (*D)`, and either
    `std` (a float: $C = \\sigma^2 I$) or `covariance` (`(d, d)`); `ValueError` for a `std`
    per dimension (give `covariance=torch.diag(std ** 2)`)."""
    if not isinstance(mean, torch.Tensor):
        raise TypeError(f"mean must be a torch.Tensor, got {type(mean).__name__}")
    if std is not None and torch.as_tensor(std).numel() != 1:
        raise ValueError(
            f"std must be a float (an isotropic Gaussian, C = std^2 I), got a tensor of shape "
            f"{tuple(torch.as_tensor(std).shape)}; for a standard deviation per dimension give "
            "covariance=torch.diag(std ** 2)"
        )
    cov = None if covariance is None else torch.as_tensor(covariance)[None]
    return GaussianMixture(mean[None], std, covariances=cov)


class ExactScore:
    """Score function `(x, t) -> (B, *D)` of a `GaussianMixture` diffused by a `GaussianSDE`."""

    def __init__(self, data: GaussianMixture, sde: GaussianSDE):
        self.data, self.sde = data, sde

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        return self.data.marginal_score(x, t, self.sde)

    def log_prob(self, x: torch.Tensor, t) -> torch.Tensor:
        """$\\log p_t(x)$, `(B,)`."""
        return self.data.marginal_log_prob(x, t, self.sde)

    def __repr__(self) -> str:
        return f"ExactScore({self.data!r}, {self.sde!r})"
