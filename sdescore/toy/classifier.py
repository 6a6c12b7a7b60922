r"""Exact noisy classifier and exact conditional scores of a `GaussianMixture` (class = component).

With $p_0 = \sum_k w_k N(\mu_k, C_k)$ diffused by a Gaussian-kernel SDE,
$p_t(x \mid y = k) = N(x; \alpha\mu_k, \alpha^2 C_k + \sigma^2 I)$ and Bayes' rule gives the
component responsibility $p_t(y = k \mid x) = \operatorname{softmax}_k(\log w_k + \log
p_t(x \mid k))$: the exact time-dependent classifier of classifier guidance (Song et al. 2021,
Sec. 5; Dhariwal & Nichol 2021). These are the references for `sdescore.guidance`.
"""

from __future__ import annotations

import torch

from .._checks import check_int, check_label_range
from ..sdes.gaussian import GaussianSDE
from .mixture import GaussianMixture

__all__ = ["ExactConditionalScore", "MixtureClassifier", "mixture_component"]


def mixture_component(data: GaussianMixture, k: int) -> GaussianMixture:
    """Component `k` of `data` as a one-component `GaussianMixture` (its class-conditional law)."""
    if not isinstance(data, GaussianMixture):
        raise TypeError(f"data must be a GaussianMixture, got {type(data).__name__}")
    k = check_int("k", k, minimum=0)
    if k >= data.num_components:
        raise ValueError(f"k must lie in [0, {data.num_components - 1}], got {k}")
    base = data._base
    mean = base["mu"][k].reshape(data.event_shape)
    if "U" in base:
        U, lam = base["U"][k], base["lam"][k]
        return GaussianMixture(mean[None], covariances=(U * lam) @ U.T[None])
    return GaussianMixture(mean[None], base["lam"][k, 0].sqrt())


class MixtureClassifier:
    r"""Exact noisy classifier of a `GaussianMixture` under a `GaussianSDE`.

    Callable as `classifier(x, t) -> logits (B, K)` with `x: (B, *D)`: the logits are
    $\log w_k + \log p_t(x \mid k)$ up to a constant per example (which keeps them finite far
    from the data), so `log_softmax(logits)` is exactly $\log p_t(y = k \mid x)$.
    """

    def __init__(self, data: GaussianMixture, sde: GaussianSDE):
        if not isinstance(data, GaussianMixture):
            raise TypeError(f"data must be a GaussianMixture, got {type(data).__name__}")
        if not isinstance(sde, GaussianSDE):
            raise TypeError(f"sde must be a GaussianSDE, got {type(sde).__name__}")
        self.data, self.sde = data, sde

    @property
    def num_classes(self) -> int:
        return self.data.num_components

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        logits, _, _, _ = self.data._relative_components(x, *self.data._coeffs(x, t, self.sde))
        return logits

    def log_prob(self, x: torch.Tensor, t) -> torch.Tensor:
        r"""$\log p_t(y = k \mid x)$ for every class, `(B, K)`."""
        return torch.log_softmax(self(x, t), dim=-1)

    def __repr__(self) -> str:
        return f"MixtureClassifier({self.data!r}, {self.sde!r})"


class ExactConditionalScore:
    r"""Exact conditional score $\nabla_x \log p_t(x \mid y)$ of a mixture, with a null label.

    Callable as `score(x, t, y)` with `y: (B,)` integer labels in `[0, K]`: label `k < K` gives
    component k's marginal score, the null label `K` (`self.null_label`) the mixture's score
    $\nabla_x \log p_t(x)$. The exact counterpart of a conditional `ScoreModel` trained with
    label dropout, for testing classifier-free guidance.
    """

    def __init__(self, data: GaussianMixture, sde: GaussianSDE):
        MixtureClassifier(data, sde)  # the same argument checks
        self.data, self.sde = data, sde
        self.null_label = data.num_components

    def __call__(self, x: torch.Tensor, t, y: torch.Tensor) -> torch.Tensor:
        data = self.data
        check_label_range(y, data.num_components)
        logits, _, z, p = data._relative_components(x, *data._coeffs(x, t, self.sde))
        if "U" in p:
            z = torch.einsum("bke,kde->bkd", z, p["U"])
        # Per-component scores -z_k (B, K, d), then the mixture score as the null "component".
        r = torch.softmax(logits, dim=1)[..., None]
        per = torch.cat([-z, -(r * z).sum(1, keepdim=True)], dim=1)
        idx = y.to(device=x.device, dtype=torch.long).reshape(-1, 1, 1).expand(-1, 1, data.dim)
        return per.gather(1, idx).reshape(x.shape)

    def __repr__(self) -> str:
        return f"ExactConditionalScore({self.data!r}, {self.sde!r})"
