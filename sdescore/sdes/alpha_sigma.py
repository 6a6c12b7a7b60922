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
from .linear import _call, _derivative, _first_call

__all__ = ["AlphaSigmaSDE"]

# Relative slack for g^2 >= 0: rounding in 2 sigma (sigma' - f sigma) where lambda is flat.
_G2_SLACK = 1e-10

# Smallest alpha(t) accepted on [0, T]. A kernel that reaches alpha = 0 (cosine, rectified flow)
# does so through a cancelling expression such as cos(pi t / 2) near t = 1, whose float32 value
# carries an absolute error of about float32's eps (1.2e-7): below 1e-6 alpha has >= 10% relative
# error and f = alpha'/alpha and the log-SNR are garbage (at T = 1 float64 gives 6e-17, float32 0).
# The documented cosine example stops at T = 0.999, alpha(T) = 1.6e-3, 1500 times above it.
_ALPHA_MIN = 1e-6

# Given alpha' / sigma' are compared with central differences of alpha / sigma at the interior
# grid points, step h = 1e-5 T. In float64 the difference's truncation error is ~ (h/t)^2 / 8
# relative for a sigma ~ sqrt(t) at the first interior point t = T/256 (< 1e-6), its rounding
# ~ eps / h ~ 2e-11 absolute: the tolerance, 1e-4 of max(|d_fd(t)|, 1e-2 max_s |d_fd(s)|),
# passes a correct derivative with a margin of 100 and refuses any derivative of another schedule.
_FD_STEP = 1e-5
_FD_RTOL = 1e-4


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
            with $\alpha(0) = 1$ and $\alpha(t) \ge 10^{-6}$ on $[0, T]$.
        sigma: callable `sigma(t)`, with $\sigma(t) > 0$ for $t > 0$ and $\sigma(0) \ge 0$.
        alpha_prime: optional callable $\dot\alpha(t)$; default: forward-mode autograd of `alpha`.
            Checked against central differences of `alpha` (relative tolerance 1e-4).
        sigma_prime: optional callable $\dot\sigma(t)$; default: autograd of `sigma`. Checked
            likewise.
        T: end time; $\alpha(T) \ge 10^{-6}$ (a kernel with $\alpha(T) = 0$ has
            $f(T) = -\infty$, and float32 cannot resolve a smaller $\alpha$: stop short of it,
            as `RectifiedFlowSDE` does, e.g. T = 0.999 for the cosine schedule).
        prior_std: std $s$ of the prior $N(0, s^2 I)$; default $\sqrt{\alpha(T)^2 + \sigma(T)^2}$,
            the marginal scale at $T$ of unit-variance data (as `LinearSDE`).

    Raises:
        TypeError: a coefficient is not callable, or fails on a float64 tensor of times (not
            written with torch operations, or not differentiable by autograd); the original
            error is chained.
        ValueError: $\alpha(0) \ne 1$; on 257 points of $[0, T]$, ends included, a value or
            derivative that is not finite, $\alpha < 10^{-6}$, $\sigma < 0$ (or $= 0$ for
            $t > 0$), a given `alpha_prime` / `sigma_prime` that is not the derivative,
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
            a, s = _first_call(self.alpha_fn, t, "alpha"), _first_call(self.sigma_fn, t, "sigma")
        da, ds = self._first_derivatives(t)
        a0 = a[0].item()
        if not abs(a0 - 1.0) <= 1e-12:
            raise ValueError(
                f"alpha(0) must be 1 (t = 0 is the data), got alpha(0) = {a0!r}; divide alpha "
                "and sigma by alpha(0) to rescale the data instead"
            )
        checks = (
            (
                "alpha(t)",
                a,
                ~(a >= _ALPHA_MIN),
                f"must be finite and >= {_ALPHA_MIN:g} on [0, T] (f = alpha'/alpha diverges as "
                "alpha -> 0, and float32 cannot resolve a smaller alpha): stop at a smaller T, "
                "e.g. T = 0.999 for the cosine schedule (alpha(T) = 1.6e-3)",
            ),
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

    def _first_derivatives(self, t):
        """`_alpha_sigma_dot` at construction: user errors named, given derivatives checked."""
        out = []
        for name, fn, prime in (
            ("alpha", self.alpha_fn, self.alpha_prime),
            ("sigma", self.sigma_fn, self.sigma_prime),
        ):
            if prime is None:
                out.append(_first_call(fn, t, name, derivative=True))
                continue
            with torch.no_grad():
                given = _first_call(prime, t, f"{name}_prime")
                inner = t[1:-1]
                h = _FD_STEP * self.T
                fd = (_call(fn, inner + h, name) - _call(fn, inner - h, name)) / (2 * h)
            scale = torch.maximum(fd.abs(), 1e-2 * fd.abs().max())
            err = (given[1:-1] - fd).abs()
            bad = ~(err <= _FD_RTOL * scale)
            if bool(bad.any()):
                i = int((err / scale).nan_to_num(math.inf).argmax())
                raise ValueError(
                    f"{name}_prime is not the derivative of {name}: at t = {inner[i].item():.6g} "
                    f"{name}_prime(t) = {given[i + 1].item():.8g} but the central difference of "
                    f"{name} gives {fd[i].item():.8g} (relative tolerance {_FD_RTOL:g}); fix "
                    f"{name}_prime or leave it out to differentiate {name} by autograd"
                )
            out.append(given)
        return tuple(out)

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
