r"""`ScoreModel`: a network, its SDE and the parameterization that turns its output into a score.

For a Gaussian kernel $x_t = \alpha(t) x_0 + \sigma(t)\varepsilon$ the network may predict

| parameterization | network output | score $s(x, t)$ |
|---|---|---|
| `"score"` | $s$ (or $\sigma s$ with `scale_by_sigma`) | the output (divided by $\sigma$) |
| `"eps"` | $\hat\varepsilon$ (Ho et al. 2020) | $-\hat\varepsilon / \sigma$ |
| `"x0"` | $\hat x_0 = E[x_0 \mid x_t]$ | $(\alpha \hat x_0 - x_t) / \sigma^2$ (Tweedie's formula) |
| `"v"` | $\hat v = \alpha\varepsilon - \sigma x_0$ (Salimans & Ho 2022) | $-(\sigma x_t + \alpha \hat v) / (\sigma(\alpha^2 + \sigma^2))$ |
| `"velocity"` | $\hat u = \dot\alpha x_0 + \dot\sigma\varepsilon$ (flow matching, Lipman et al. 2023) | $-(\alpha\hat u - \dot\alpha x_t) / (\sigma(\alpha\dot\sigma - \dot\alpha\sigma))$ |
| `"energy"` | a scalar $E_\theta(x, t)$ per example | $-\nabla_x E_\theta$ |

(Tweedie: $E[x_0 \mid x_t] = (x_t + \sigma^2 \nabla\log p_t(x_t)) / \alpha$, Efron 2011. For `"v"`,
$\sigma x_t + \alpha v = (\alpha^2 + \sigma^2)\varepsilon$, which is $\varepsilon$ for VP SDEs.
For `"velocity"`, solving $x_t = \alpha x_0 + \sigma\varepsilon$, $u = \dot\alpha x_0 +
\dot\sigma\varepsilon$ for $\varepsilon$ gives $\varepsilon = (\alpha u - \dot\alpha x_t)/D$ with
$D = \alpha\dot\sigma - \dot\alpha\sigma = \alpha g^2/(2\sigma) > 0$; the exact velocity
$E[u \mid x_t] = f x_t - \tfrac12 g^2\nabla\log p_t$ is the probability-flow drift. It is not
the `"v"` of Salimans & Ho: for rectified flow ($\alpha = 1 - t$, $\sigma = t$, $D = 1$)
$u = \varepsilon - x_0$.)

`"score"` with `scale_by_sigma=True` *is* the `"eps"` parameterization with the sign flipped: its
network learns $\sigma s = -\varepsilon$, so a net $n$ there and the net $-n$ under `"eps"` give
bit-identical scores, losses and gradients (tested).

Every head except plain `"score"` divides by $\sigma(t)$, so it refuses times where
$\sigma(t) = 0$ (t = 0 for VP, sub-VP and `LinearSDE`; VE has $\sigma(0) = \sigma_{min} > 0$)
with a `ValueError`; the score it stands for is infinite there.

With a *Gaussian baseline* (`fit_baseline`) the network only learns the residual to the score of
$N(\mu, \operatorname{diag}(c^2))$ fitted to the data and diffused by the SDE:
$s = -(x - \alpha\mu) / (\alpha^2 c^2 + \sigma^2) + s_{\text{net}}$.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import (
    as_time,
    check_bool,
    check_callable,
    check_real,
    check_sigma_positive,
    check_state,
)
from .._shapes import append_dims
from ..sdes.base import SDE
from ..sdes.gaussian import GaussianSDE

__all__ = ["PARAMETERIZATIONS", "ScoreModel"]

PARAMETERIZATIONS = ("score", "eps", "x0", "v", "velocity", "energy")
# The tensor/module method that casts to each dtype, for the dtype-mismatch message.
_CAST = {torch.float32: "float", torch.float64: "double", torch.float16: "half"}
_CAST[torch.bfloat16] = "bfloat16"


class ScoreModel(nn.Module):
    r"""A score function $s_\theta(x, t) \approx \nabla_x \log p_t(x)$ built from a network.

    Callable as `model(x, t) -> (B, *D)` with `x: (B, *D)` and `t` a float or `(B,)`, so it can be
    passed anywhere a score function is expected; `model.sde` is the SDE it was trained for.

    Args:
        net: any callable `net(x, t)`; for `"energy"` it returns `(B,)` or `(B, 1)`, otherwise a
            tensor shaped like `x`. An `nn.Module` is registered as a submodule.
        sde: the forward `SDE`. Every parameterization except `"score"` (without baseline or
            `scale_by_sigma`) needs a `GaussianSDE` for $\alpha(t)$ and $\sigma(t)$.
        parameterization: one of `"score"`, `"eps"`, `"x0"`, `"v"`, `"velocity"`, `"energy"`.
        scale_by_sigma: with `"score"`, return `net(x, t) / sigma(t)` (Song et al. 2021, App. H),
            so that the network output has unit scale at every noise level; this is `"eps"`
            with the sign flipped (bit-identical training with the negated net).

    Raises:
        TypeError: `net` not callable, `sde` not an `SDE`, or a head that needs
            $\alpha(t), \sigma(t)$ without a `GaussianSDE`.
        ValueError: an unknown parameterization, or `scale_by_sigma` with another head.
    """

    def __init__(self, net, sde: SDE, parameterization: str = "score", *, scale_by_sigma=False):
        super().__init__()
        check_callable("net", net)
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be an sdescore.SDE, got {type(sde).__name__}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
            )
        check_bool("scale_by_sigma", scale_by_sigma)
        if scale_by_sigma and parameterization != "score":
            raise ValueError(
                "scale_by_sigma=True applies to parameterization='score' only, "
                f"got parameterization={parameterization!r}"
            )
        if (parameterization != "score" or scale_by_sigma) and not isinstance(sde, GaussianSDE):
            raise TypeError(
                f"parameterization={parameterization!r} needs a GaussianSDE (alpha(t), sigma(t)), "
                f"got {type(sde).__name__}"
            )
        self.net = net
        self.sde = sde
        self.parameterization = parameterization
        self.scale_by_sigma = scale_by_sigma
        self.register_buffer("baseline_mean", None)
        self.register_buffer("baseline_std", None)

    # -- Gaussian baseline ------------------------------------------------------------------
    @property
    def has_baseline(self) -> bool:
        return self.baseline_mean is not None

    def fit_baseline(self, data: torch.Tensor, *, min_std: float | None = None) -> ScoreModel:
        """Fit the Gaussian baseline $N(\\mu, \\operatorname{diag}(c^2))$ to `data: (N, *D)`.

        Stores the per-coordinate mean and std as buffers (saved in checkpoints) on the data's
        device and dtype; returns `self` so that `ScoreModel(net, sde).fit_baseline(x)` chains.

        Args:
            data: `(N, *D)` training data, N >= 2.
            min_std: floor for the per-coordinate std $c$. A constant coordinate (the border
                pixels of digits, as bin centres) has $c = 0$, which would make the baseline
                score $-(x - \\alpha\\mu)/\\sigma^2$ diverge as $t \\to 0$. For data dequantized
                with bin width $w$ use $w/\\sqrt{12}$, the std of the uniform noise in one bin:
                the exact std of the dequantized data along a constant coordinate.

        Raises:
            ValueError: a coordinate has zero variance and `min_std` is not given.
        """
        check_state(data, "data")
        if data.shape[0] < 2:
            raise ValueError(f"data must hold at least 2 examples, got shape {tuple(data.shape)}")
        if not isinstance(self.sde, GaussianSDE):
            raise TypeError(
                f"the Gaussian baseline needs a GaussianSDE, got {type(self.sde).__name__}"
            )
        if min_std is not None:
            min_std = check_real("min_std", min_std, positive=True)
        d = data.detach()
        std = d.std(dim=0)
        if min_std is not None:
            std = std.clamp_min(min_std)
        elif not bool((std > 0).all()):
            n = int((std == 0).sum())
            raise ValueError(
                f"data has {n} constant coordinate(s) (zero variance), e.g. border pixels; pass "
                "min_std= (for dequantized levels the bin width / sqrt(12)), or fit the baseline "
                "to dequantized data"
            )
        self.set_baseline(d.mean(dim=0), std)
        return self

    def set_baseline(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the baseline from a mean and per-coordinate std, both shaped `(*D)`."""
        if not isinstance(mean, torch.Tensor) or not isinstance(std, torch.Tensor):
            raise TypeError("mean and std must be tensors shaped like one example (*D)")
        if mean.shape != std.shape:
            raise ValueError(
                f"mean and std must have the same shape, got {mean.shape}, {std.shape}"
            )
        self.baseline_mean = mean.detach().clone()
        self.baseline_std = std.detach().clone()

    def _baseline_var(self, x, alpha, sigma):
        if tuple(x.shape[1:]) != tuple(self.baseline_mean.shape):
            raise ValueError(
                f"x has example shape {tuple(x.shape[1:])} but the baseline was fitted to "
                f"{tuple(self.baseline_mean.shape)}"
            )
        mu = self.baseline_mean.to(x.device, x.dtype)
        c2 = self.baseline_std.to(x.device, x.dtype).square()
        a = append_dims(alpha, x.ndim)
        return x - a * mu, a.square() * c2 + append_dims(sigma, x.ndim).square()

    # -- evaluation ---------------------------------------------------------------------------
    def _coeffs(self, t: torch.Tensor):
        return self.sde.log_alpha(t).exp(), self.sde.sigma(t)

    def _check_dtype(self, x: torch.Tensor) -> None:
        # Up front, so a float32 net fed float64 data says what to do instead of torch's matmul
        # dtype error from deep inside the network. Autocast mixes dtypes on purpose: skip it.
        if not isinstance(self.net, nn.Module) or torch.is_autocast_enabled(x.device.type):
            return
        w = next((p for p in self.net.parameters() if p.is_floating_point()), None)
        if w is not None and w.dtype != x.dtype:
            raise TypeError(
                f"x has dtype {x.dtype} but the network's parameters are {w.dtype}; convert the "
                f"data with x.{_CAST.get(w.dtype, 'to')}() or the model with "
                f"model.{_CAST.get(x.dtype, 'to')}()"
            )

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        """The score $s_\\theta(x, t)$, shaped like `x: (B, *D)`.

        Raises:
            TypeError: if `x`'s dtype differs from the network's parameters (outside autocast).
            ValueError: for a bad `x` or `t`, a net output of the wrong shape, or a time where
                $\\sigma(t) = 0$ with a head that divides by it.
        """
        check_state(x)
        self._check_dtype(x)
        return self._score(x, as_time(t, x, self.sde.T))

    def _score(self, x: torch.Tensor, t: torch.Tensor, extra: tuple = ()) -> torch.Tensor:
        # `extra` are further network inputs after (x, t), e.g. the label of a conditional model.
        if self.parameterization == "energy":
            return self._energy_score(x, t, extra)
        out = self.net(x, t, *extra)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"net(x, t) must return a tensor shaped like x {tuple(x.shape)}, got {got}"
            )
        p = self.parameterization
        if p == "score" and not self.scale_by_sigma and not self.has_baseline:
            return out
        alpha, sigma = self._coeffs(t)
        if p != "score" or self.scale_by_sigma:
            # Every other head divides by sigma(t): at sigma = 0 the score it stands for is
            # infinite, so refuse rather than return Inf/NaN.
            check_sigma_positive(
                sigma,
                t,
                self.sde,
                f"the score of parameterization {self._head()} (it divides by sigma(t))",
            )
        a, s = append_dims(alpha, x.ndim), append_dims(sigma, x.ndim)
        if p == "score":
            score = out / s if self.scale_by_sigma else out
        elif p == "eps":
            score = -out / s
        elif p == "x0":
            score = (a * out - x) / s.square()
        elif p == "v":
            score = -(s * x + a * out) / (s * (a.square() + s.square()))
        else:  # "velocity"
            da, ds = (append_dims(c, x.ndim) for c in self.sde.alpha_sigma_derivatives(t))
            score = -(a * out - da * x) / (s * (a * ds - da * s))
        if self.has_baseline:
            r, v = self._baseline_var(x, alpha, sigma)
            score = score - r / v
        return score

    def velocity(self, x: torch.Tensor, t) -> torch.Tensor:
        r"""The flow-matching velocity $\hat u(x, t) = f(t)x - \tfrac12 g(t)^2 s_\theta(x, t)$.

        For the `"velocity"` head (without baseline) this is the network's output itself, not a
        round trip through the score; for the others it is converted from the score. It is the
        probability-flow drift, and the quantity `sdescore.losses.flow_matching_loss` regresses.

        Shapes: `x: (B, *D)`, `t` a float or `(B,)`; returns `(B, *D)`.

        Raises:
            TypeError: the model's SDE is not a `GaussianSDE` (and the head is not `"velocity"`
                without baseline), or a dtype mismatch as in `forward`.
            ValueError: as in `forward`.
        """
        check_state(x)
        self._check_dtype(x)
        t = as_time(t, x, self.sde.T)
        return self._velocity(x, t)

    def _velocity(self, x: torch.Tensor, t: torch.Tensor, extra: tuple = ()) -> torch.Tensor:
        if self.parameterization == "velocity" and not self.has_baseline:
            out = self.net(x, t, *extra)
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(
                    f"net(x, t) must return a tensor shaped like x {tuple(x.shape)}, got {got}"
                )
            return out
        if not isinstance(self.sde, GaussianSDE):
            raise TypeError(f"velocity() needs a GaussianSDE, got {type(self.sde).__name__}")
        g2 = append_dims(self.sde.diffusion(t).square(), x.ndim)
        return self.sde.drift(x, t) - 0.5 * g2 * self._score(x, t, extra)

    def _head(self) -> str:
        if self.scale_by_sigma:
            return "'score' with scale_by_sigma=True"
        return repr(self.parameterization)

    def energy(self, x: torch.Tensor, t) -> torch.Tensor:
        """The energy $E_\\theta(x, t)$ `(B,)` (parameterization `"energy"` only).

        $-E_\\theta$ is an unnormalised log-density of $p_t$; with a baseline it includes the
        baseline's quadratic energy $\\tfrac12\\sum (x - \\alpha\\mu)^2 / (\\alpha^2 c^2 + \\sigma^2)$.
        """
        if self.parameterization != "energy":
            raise ValueError(
                f"energy() needs parameterization='energy', this model uses {self.parameterization!r}"
            )
        check_state(x)
        self._check_dtype(x)
        return self._energy(x, as_time(t, x, self.sde.T))

    def _energy(self, x, t, extra: tuple = ()):
        e = self.net(x, t, *extra)
        if not isinstance(e, torch.Tensor) or e.numel() != x.shape[0]:
            got = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
            raise ValueError(
                f"with parameterization='energy', net(x, t) must return shape ({x.shape[0]},) "
                f"or ({x.shape[0]}, 1), got {got}"
            )
        e = e.reshape(x.shape[0])
        if self.has_baseline:
            r, v = self._baseline_var(x, *self._coeffs(t))
            e = e + 0.5 * (r.square() / v).reshape(x.shape[0], -1).sum(1)
        return e

    def _energy_score(self, x, t, extra: tuple = ()):
        # Keep the graph when the caller differentiates (training, exact divergence); detach
        # otherwise. Never flip requires_grad on the caller's tensor.
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if (x.requires_grad and create_graph) else x.detach().requires_grad_(True)
            e = self._energy(xg, t, extra)
            (grad,) = torch.autograd.grad(e.sum(), xg, create_graph=create_graph)
        return -grad

    def extra_repr(self) -> str:
        return (
            f"sde={self.sde!r}, parameterization={self.parameterization!r}, "
            f"scale_by_sigma={self.scale_by_sigma}, baseline={self.has_baseline}"
        )
