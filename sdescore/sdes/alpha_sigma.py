r"""`AlphaSigmaSDE`: the linear SDE whose kernel is given, $x_t = \alpha(t) x_0 + \sigma(t)\varepsilon$.

Flow matching and most modern schedules are stated by their marginal coefficients $\alpha(t)$ and
$\sigma(t)$ rather than by $f$ and $g$. Every such kernel with $\alpha > 0$ and a non-increasing
half log-SNR $\lambda = \log(\alpha/\sigma)$ is the kernel of exactly one linear SDE
$dx = f(t)\,x\,dt + g(t)\,dw$ (Kingma et al. 2021, App. A; Karras et al. 2022, eq. (28)):

$$f = \frac{\dot\alpha}{\alpha}, \qquad g^2 = \frac{d\sigma^2}{dt} - 2f\sigma^2
= 2\sigma\Big(\dot\sigma - \frac{\dot\alpha}{\alpha}\sigma\Big) = -2\sigma^2\dot\lambda,$$

the moment equations $\dot m = f m$, $\dot v = 2fv + g^2$ read backwards (Särkkä & Solin 2019,
eq. (5.51)). The derivatives are the user's, or taken by forward-mode autograd
(`torch.func.jvp`) of the given callables.
"""

from __future__ import annotations

import math

import torch

from .._checks import check_callable, check_real
from .gaussian import GaussianSDE
from .linear import _call

__all__ = ["AlphaSigmaSDE"]

# Relative slack for g^2 >= 0: rounding in 2 sigma (sigma' - f sigma) where lambda is flat.
_G2_SLACK = 1e-10


def _derivative(fn, t: torch.Tensor, name: str) -> torch.Tensor:
    """$d\\,fn/dt$ elementwise, by one forward-mode pass (fn must be elementwise in t)."""
    ones = torch.ones_like(t)
    _, tangent = torch.func.jvp(lambda u: _call(fn, u, name), (t.detach(),), (ones,))
    return tangent


class AlphaSigmaSDE(GaussianSDE):
    r"""The linear SDE with the Gaussian kernel $N(\alpha(t) x_0, \sigma(t)^2 I)$ given.

    $f = \dot\alpha/\alpha$ and $g^2 = 2\sigma(\dot\sigma - f\sigma)$ (see the module
    docstring). Example, a cosine schedule: `AlphaSigmaSDE(lambda t: torch.cos(0.5 * math.pi *
    t), lambda t: torch.sin(0.5 * math.pi * t), T=0.999)`; rectified flow has its own leaf,
    `RectifiedFlowSDE`.

    When $\sigma(0) > 0$ the kernel at $t = 0$ is $N(x_0, \sigma(0)^2 I)$: as for `VESDE`, it is
    the exact kernel of the SDE started from data smoothed by $N(0, \sigma(0)^2 I)$.

    Args:
        alpha: callable `alpha(t) -> tensor shaped like t` (float32/float64, any shape,
            elementwise, written in torch operations so that autograd can differentiate it),
            with $\alpha(0) = 1$ and $\alpha(t) > 0$ on $[0, T]$.
        sigma: callable `sigma(t)`, with $\sigma(t) > 0$ for $t > 0$ and $\sigma(0) \ge 0$.
        alpha_prime: optional callable $\dot\alpha(t)$; default: forward-mode autograd of `alpha`.
        sigma_prime: optional callable $\dot\sigma(t)$; default: autograd of `sigma`.
        T: end time; $\alpha(T) > 0$ (a kernel with $\alpha(T) = 0$ has $f(T) = -\infty$: stop
            short of it, as `RectifiedFlowSDE` does).
        prior_std: std $s$ of the prior $N(0, s^2 I)$; default $\sqrt{\alpha(T)^2 + \sigma(T)^2}$,
            the marginal scale at $T$ of unit-variance data (as `LinearSDE`).

    Raises:
        TypeError: a coefficient is not callable.
        ValueError: $\alpha(0) \ne 1$; on 257 points of $[0, T]$, ends included, a value or
            derivative that is not finite, $\alpha \le 0$, $\sigma < 0$ (or $= 0$ for $t > 0$),
            or $g^2 < 0$ (the half log-SNR increases: no SDE has this kernel); the message names
            the quantity, its value and the time.
    """

    def __init__(
        self,
        alpha,
        sigma,
        *,
        alpha_prime=None,
        sigma_prime=None,
        T: float = 1.0,
        prior_std: float | None = None,
    ):
        super().__init__(T=T)
        for name, fn in (("alpha", alpha), ("sigma", sigma)):
            check_callable(name, fn)
        for name, fn in (("alpha_prime", alpha_prime), ("sigma_prime", sigma_prime)):
            if fn is not None:
                check_callable(name, fn)
        self.alpha_fn, self.sigma_fn = alpha, sigma
        self.alpha_prime, self.sigma_prime = alpha_prime, sigma_prime
        self._validate()
        self._check_schedule(prior=False)
        if prior_std is None:
            tT = torch.tensor([self.T], dtype=torch.float64)
            prior_std = math.hypot(self.alpha(tT).item(), self.sigma(tT).item())
        self._prior_std = check_real("prior_std", prior_std, positive=True)
        self._check_schedule()

    _schedule_hint = "check alpha and sigma, or stop at a smaller T"

    def _validate(self) -> None:
        t = torch.linspace(0.0, self.T, 257, dtype=torch.float64)
        with torch.no_grad():
            a, s = _call(self.alpha_fn, t, "alpha"), _call(self.sigma_fn, t, "sigma")
            da, ds = self._alpha_sigma_dot(t)
        a0 = a[0].item()
        if not abs(a0 - 1.0) <= 1e-12:
            raise ValueError(
                f"alpha(0) must be 1 (t = 0 is the data), got alpha(0) = {a0!r}; divide alpha "
                "and sigma by alpha(0) to rescale the data instead"
            )
        checks = (
            ("alpha(t)", a, ~(a > 0), "must be finite and > 0 on [0, T]"),
            ("sigma(t)", s, ~(s >= 0) | ((s == 0) & (t > 0)), "must be >= 0, and > 0 for t > 0"),
            ("alpha'(t)", da, ~torch.isfinite(da), "must be finite"),
            ("sigma'(t)", ds, ~torch.isfinite(ds), "must be finite"),
        )
        for name, v, bad, problem in checks:
            bad = bad | ~torch.isfinite(v)
            if bool(bad.any()):
                i = int(bad.nonzero()[0])
                self._schedule_error(f"{name} = {v[i].item():.6g}", t[i], problem)
        f = da / a
        g2 = 2 * s * (ds - f * s)
        scale = 2 * s * (ds.abs() + f.abs() * s)
        bad = g2 < -_G2_SLACK * scale
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            self._schedule_error(
                f"g(t)^2 = 2 sigma (sigma' - alpha' sigma / alpha) = {g2[i].item():.6g}",
                t[i],
                "is negative: the log-SNR log(alpha/sigma) increases there, and no SDE has "
                "this kernel",
            )

    def _alpha_sigma_dot(self, t):
        da = (
            _derivative(self.alpha_fn, t, "alpha")
            if self.alpha_prime is None
            else _call(self.alpha_prime, t, "alpha_prime")
        )
        ds = (
            _derivative(self.sigma_fn, t, "sigma")
            if self.sigma_prime is None
            else _call(self.sigma_prime, t, "sigma_prime")
        )
        return da, ds

    def _f(self, t):
        da, _ = self._alpha_sigma_dot(t)
        return da / _call(self.alpha_fn, t, "alpha")

    def _g(self, t):
        da, ds = self._alpha_sigma_dot(t)
        s = _call(self.sigma_fn, t, "sigma")
        g2 = 2 * s * (ds - da / _call(self.alpha_fn, t, "alpha") * s)
        return g2.clamp_min(0).sqrt()  # rounding only: _validate refused g^2 < 0

    def _log_alpha(self, t):
        return _call(self.alpha_fn, t, "alpha").log()

    def _sigma(self, t):
        return _call(self.sigma_fn, t, "sigma")

    @property
    def prior_std(self) -> float:
        return self._prior_std

    def __repr__(self) -> str:
        prior = getattr(self, "_prior_std", None)
        return (
            f"AlphaSigmaSDE(alpha={self.alpha_fn!r}, sigma={self.sigma_fn!r}, T={self.T}, "
            f"prior_std={prior})"
        )
