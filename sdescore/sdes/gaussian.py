r"""SDEs with a Gaussian perturbation kernel: $dx = f(t)\,x\,dt + g(t)\,dw$.

For such linear SDEs the kernel is $p_t(x \mid x_0) = N(\alpha(t) x_0, \sigma(t)^2 I)$ with
$\alpha(t) = \exp\int_0^t f$ and $\sigma(t)^2 = \alpha(t)^2 \int_0^t g^2 / \alpha^2$
(Särkkä & Solin 2019, eq. (6.11)); `VPSDE`, `SubVPSDE`, `VESDE` and `LinearSDE` are leaves.
"""

from __future__ import annotations

import abc
import math
import warnings

import torch

from .._checks import as_time, as_time_only, check_generator, check_state, external_stacklevel
from .._shapes import append_dims
from .base import SDE

__all__ = ["GaussianSDE", "as_log_snr"]

# Warn when the kernel at T of a unit-scale datum is further than this from the prior (KL per
# dimension, nats): 0.01 is a VP alpha(T) of 0.14; the shipped defaults sit near 2e-5 (VP) and
# 2e-4 (VE), DiscreteVPSDE.linear(50) at 0.46.
PRIOR_MISMATCH_NATS = 0.01

# The kernel must be usable in float32, the working precision of most models: alpha(t) neither
# overflows nor flushes to zero, and sigma^2, g^2 and the prior variance stay below float32's max.
_F32 = torch.finfo(torch.float32)
_LOG_TINY, _LOG_MAX = math.log(_F32.tiny), math.log(_F32.max)
_SQRT_MAX = math.sqrt(_F32.max)


def as_log_snr(lam) -> torch.Tensor:
    """A log-SNR argument as a floating tensor (numbers get the default dtype, tensors keep theirs)."""
    if isinstance(lam, torch.Tensor):
        if not lam.is_floating_point():
            raise TypeError(f"lam must be a floating-point tensor, got dtype {lam.dtype}")
        return lam
    return torch.as_tensor(lam, dtype=torch.get_default_dtype())


class GaussianSDE(SDE):
    r"""A linear SDE $dx = f(t)\,x\,dt + g(t)\,dw$ with kernel $N(\alpha(t) x_0, \sigma(t)^2 I)$.

    Subclasses implement, on a validated time tensor, `_f(t)`, `_g(t)`, `_log_alpha(t)` and
    `_sigma(t)`, and the property `prior_std`. Everything else is derived here: the drift, the
    marginals, perturbation of data, the prior, and the half log-SNR
    $\lambda(t) = \log\alpha(t) - \log\sigma(t)$ with its inverse (used by exponential integrators,
    Lu et al. 2022).
    """

    @abc.abstractmethod
    def _f(self, t: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def _g(self, t: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def _sigma(self, t: torch.Tensor) -> torch.Tensor: ...

    def _check_schedule(self, *, prior: bool = True) -> None:
        """Refuse, at construction, a schedule whose kernel does not fit float32 on $[0, T]$.

        Checks on a grid of 257 times (float64) that $\\alpha(t)$ is finite and within float32's
        normal range, that $\\sigma(t)$ and $g(t)$ are finite with squares below float32's max,
        and (with `prior`) the same for `prior_std`. Subclasses call it at the end of `__init__`.

        Raises:
            ValueError: naming the SDE, the quantity, its value and the time, and what to change.
        """
        t = torch.linspace(0.0, self.T, 257, dtype=torch.float64)
        with torch.no_grad():
            la, sigma, g = self._log_alpha(t), self._sigma(t), self._g(t)
        bad = ~torch.isfinite(la) | (la < _LOG_TINY) | (la > _LOG_MAX)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            v = la[i].item()
            problem = (
                "is not finite"
                if not math.isfinite(v)
                else "flushes to zero in float32 (below 1.2e-38)"
                if v < _LOG_TINY
                else "overflows float32 (above 3.4e38)"
            )
            self._schedule_error(f"alpha(t) = exp({v:.4g})", t[i], problem)
        for name, v in (("sigma(t)", sigma), ("g(t)", g)):
            bad = ~torch.isfinite(v) | (v.abs() > _SQRT_MAX)
            if bool(bad.any()):
                i = int(bad.nonzero()[0])
                self._schedule_error(
                    f"{name} = {v[i].item():.4g}",
                    t[i],
                    "is not finite or its square overflows float32 (must be <= 1.8e19)",
                )
        if prior:
            s = self.prior_std
            if not (math.isfinite(s) and 0 < s <= _SQRT_MAX):
                raise ValueError(
                    f"{self!r}: prior_std = {s:.4g} must be > 0 with a square that fits float32 "
                    "(<= 1.8e19), or prior_logp and the samplers would produce Inf/NaN"
                )
            self._check_prior_match()

    def _check_prior_match(self) -> None:
        """Warn when the marginal at T is far from the prior the samplers start from.

        For a datum $x_0$ of unit scale per coordinate, the kernel at T is
        $N(\\alpha(T) x_0, \\sigma(T)^2)$ per coordinate and the prior $N(0, s^2)$; their KL
        divergence, $\\tfrac12(\\alpha^2/s^2 + \\sigma^2/s^2 - 1 - \\log(\\sigma^2/s^2))$
        nats per coordinate, is zero only when the signal is gone and the variances match. Above
        `PRIOR_MISMATCH_NATS` a sampler started from the prior starts from the wrong law and
        its samples are biased (Lin et al. 2024 show the effect of a small leftover signal).
        """
        tT = torch.tensor([self.T], dtype=torch.float64)
        with torch.no_grad():
            alpha, sigma = self._log_alpha(tT).exp().item(), self._sigma(tT).item()
        s = self.prior_std
        r = (sigma / s) ** 2
        kl = 0.5 * ((alpha / s) ** 2 + r - 1 - math.log(r))
        if kl > PRIOR_MISMATCH_NATS:
            warnings.warn(
                f"{self!r}: the marginal at T = {self.T:.4g} is far from the prior N(0, {s:.4g}^2 I) "
                f"that samplers start from: alpha(T) = {alpha:.4g}, sigma(T) = {sigma:.4g}, so a "
                f"datum of unit scale keeps {100 * alpha**2 / (alpha**2 + sigma**2):.3g} % of its "
                f"variance at T, a KL divergence to the prior of {kl:.3g} nats per coordinate "
                f"(warned above {PRIOR_MISMATCH_NATS}). Samples drawn from the prior will be "
                f"biased; {self._prior_hint}",
                stacklevel=external_stacklevel(),
            )

    _prior_hint = (
        "choose parameters (or a longer T) for which alpha(T) -> 0 and sigma(T) -> the prior std"
    )

    def _schedule_error(self, what: str, t, problem: str):
        at = "" if t is None else f" at t = {float(t):.4g}"
        raise ValueError(
            f"{self!r}: {what}{at} {problem}, so solvers and losses would produce Inf/NaN; "
            f"{self._schedule_hint}"
        )

    _schedule_hint = "choose parameters (or a shorter T) for which the kernel stays in range"

    # Public coefficient functions of time: accept a float or a tensor, return a tensor.
    def drift_coeff(self, t) -> torch.Tensor:
        """The scalar drift coefficient $f(t)$, so that the drift is $f(t)\\,x$."""
        return self._f(as_time_only(t, self.T))

    def diffusion(self, t) -> torch.Tensor:
        """The diffusion coefficient $g(t)$, shaped like `t`."""
        return self._g(as_time_only(t, self.T))

    def log_alpha(self, t) -> torch.Tensor:
        """$\\log\\alpha(t)$, the log of the kernel's mean coefficient."""
        return self._log_alpha(as_time_only(t, self.T))

    def alpha(self, t) -> torch.Tensor:
        """The kernel's mean coefficient $\\alpha(t) = \\exp\\int_0^t f(s)\\,ds$."""
        return self._log_alpha(as_time_only(t, self.T)).exp()

    def sigma(self, t) -> torch.Tensor:
        """The kernel's standard deviation $\\sigma(t)$."""
        return self._sigma(as_time_only(t, self.T))

    def alpha_sigma_derivatives(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        r"""$(\dot\alpha(t), \dot\sigma(t))$, the time derivatives of the kernel's coefficients.

        From $d\alpha/dt = f\alpha$ and $d\sigma^2/dt = 2f\sigma^2 + g^2$ (Särkkä & Solin 2019,
        eq. (5.51)): $\dot\alpha = f\alpha$, $\dot\sigma = f\sigma + g^2/(2\sigma)$. The
        conditional flow-matching velocity is $\dot\alpha x_0 + \dot\sigma\varepsilon$
        (Lipman et al. 2023). Leaves with closed forms override `_alpha_sigma_dot`; the generic
        form needs $\sigma(t) > 0$.
        """
        return self._alpha_sigma_dot(as_time_only(t, self.T))

    def _alpha_sigma_dot(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f, sigma = self._f(t), self._sigma(t)
        return f * self._log_alpha(t).exp(), f * sigma + 0.5 * self._g(t).square() / sigma

    def log_snr(self, t) -> torch.Tensor:
        """Half log signal-to-noise ratio $\\lambda(t) = \\log\\alpha(t) - \\log\\sigma(t)$."""
        t = as_time_only(t, self.T)
        return self._log_snr(t)

    def _log_snr(self, t: torch.Tensor) -> torch.Tensor:
        return self._log_alpha(t) - self._sigma(t).log()

    def t_from_log_snr(self, lam) -> torch.Tensor:
        """Invert $\\lambda(t)$ (strictly decreasing) for $t \\in [0, T]$.

        Args:
            lam: half log-SNR values, a number or a floating tensor of any shape.

        Returns:
            Times shaped like `lam`, in its dtype (the default dtype for a number). Values of
            `lam` above $\\lambda(0)$ give 0 and values below $\\lambda(T)$ give T: the
            nearest end of the SDE's range, also for $\\pm\\infty$ (never NaN).

        Raises:
            ValueError: `lam` holds NaN (checked for numbers and CPU tensors; on an accelerator,
                where the check would synchronise, a NaN gives NaN, never a plausible time).
            TypeError: `lam` is an integer tensor.
        """
        lam = as_log_snr(lam)
        if lam.device.type == "cpu" and bool(torch.isnan(lam).any()):
            raise ValueError(f"lam must not be NaN, got NaN in t_from_log_snr of {self!r}")
        lo, hi = self._log_snr_range()
        t = self._t_from_log_snr(lam.clamp(min=lo, max=hi)).clamp(0.0, self.T)
        # The end points exactly (the inverse of a clamped value may be an ulp inside).
        t = torch.where(lam >= hi, torch.zeros_like(t), torch.where(lam <= lo, self.T, t))
        return torch.where(torch.isnan(lam), lam, t)

    def _log_snr_range(self) -> tuple[float, float]:
        """$(\\lambda(T), \\lambda(0))$ in float64; $\\lambda(0) = +\\infty$ where $\\sigma(0) = 0$."""
        with torch.no_grad():
            ends = self._log_snr(torch.tensor([self.T, 0.0], dtype=torch.float64)).tolist()
        lo, hi = (-math.inf if math.isnan(ends[0]) else ends[0]), ends[1]
        return lo, math.inf if math.isnan(hi) else hi

    def _t_from_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        """The inverse on `lam` already clamped to the range, by vectorised bisection.

        Subclasses with a closed form override this (not `t_from_log_snr`, which checks).
        """
        lo = torch.zeros_like(lam)
        hi = torch.full_like(lam, self.T)
        # 60 halvings take the bracket below float64 resolution on [0, T]; no host sync.
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            above = self._log_snr(mid) > lam
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    # The SDE and its marginals.
    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """The drift $f(t)\\,x$, shaped like `x: (B, *D)`."""
        check_state(x)
        t = as_time(t, x, self.T)
        return append_dims(self._f(t), x.ndim) * x

    def marginal_prob(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean $\\alpha(t)\\,x_0$ `(B, *D)` and std $\\sigma(t)$ `(B,)` of $p_t(x \\mid x_0)$."""
        check_state(x0, "x0")
        t = as_time(t, x0, self.T)
        mean = append_dims(self._log_alpha(t).exp(), x0.ndim) * x0
        return mean, self._sigma(t)

    def perturb(
        self, x0: torch.Tensor, t, *, noise: torch.Tensor | None = None, generator=None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw $x_t = \\alpha(t) x_0 + \\sigma(t) z$, $z \\sim N(0, I)$ (for training).

        Returns:
            `(x_t, z, std)`: the perturbed state `(B, *D)`, the noise `(B, *D)` and $\\sigma(t)$ `(B,)`.
        """
        mean, std = self.marginal_prob(x0, t)
        if noise is None:
            check_generator("generator", generator)
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        elif not isinstance(noise, torch.Tensor) or noise.shape != x0.shape:
            got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise must be a tensor shaped like x0 {tuple(x0.shape)}, got {got}")
        return mean + append_dims(std, x0.ndim) * noise, noise, std
