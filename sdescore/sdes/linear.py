r"""`LinearSDE`: any $dx = f(t)\,x\,dt + g(t)\,dw$ from two callables, marginals derived.

$\log\alpha(t) = \int_0^t f$ and $\sigma(t)^2 = \alpha(t)^2 I(t)$, $I(t) = \int_0^t g^2/\alpha^2$
(Särkkä & Solin 2019, eq. (6.11)). Both integrals are tabulated once, in float64, by 8-point
Gauss–Legendre on a uniform grid of panels; $\log\alpha$ between nodes comes from the cubic
Hermite interpolant (its derivative $f$ is known exactly at the nodes) and $I(t)$ from the node
value plus an 8-point Gauss–Legendre rule over the last partial panel. The partial-panel rule
keeps the *relative* error of $\sigma(t)$ at machine level even as $t \to 0$, where $I(t)$ may
vanish like $t^2$ (sub-VP) and an interpolant alone would lose digits.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._checks import check_callable, check_real
from .gaussian import GaussianSDE

__all__ = ["LinearSDE"]

# 8-point Gauss-Legendre nodes and weights on [0, 1]: exact for polynomials of degree 15.
_x, _w = np.polynomial.legendre.leggauss(8)
_GL_X, _GL_W = torch.as_tensor(0.5 * (_x + 1)), torch.as_tensor(0.5 * _w)


def _call(fn, t: torch.Tensor, name: str) -> torch.Tensor:
    """Evaluate a user schedule at a tensor of times, accepting scalar (constant) answers."""
    out = fn(t)
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(out, dtype=t.dtype, device=t.device)
    if out.shape != t.shape:
        if out.numel() != 1:
            raise ValueError(
                f"{name}(t) must return a tensor shaped like t {tuple(t.shape)}, "
                f"got {tuple(out.shape)}"
            )
        out = out.reshape(()).expand(t.shape)
    return out.to(t.dtype)


class LinearSDE(GaussianSDE):
    r"""Linear SDE $dx = f(t)\,x\,dt + g(t)\,dw$ with its Gaussian kernel derived numerically.

    Example: a cosine schedule, or VP written by hand,
    `LinearSDE(lambda t: -0.5 * (0.1 + 19.9 * t), lambda t: (0.1 + 19.9 * t).sqrt())`.

    Args:
        f: callable `f(t) -> tensor shaped like t` (float64 and float32 tensors of any shape),
            the drift coefficient.
        g: callable `g(t) -> tensor shaped like t`, the diffusion coefficient; $g(t)^2 > 0$ for
            $t > 0$ so that $\sigma(t) > 0$.
        T: end time.
        prior_std: std $s$ of the prior $N(0, s^2 I)$; default $\sqrt{\alpha(T)^2 + \sigma(T)^2}$,
            the marginal scale at T of unit-variance data (1 for VP, $\approx\sigma_{max}$ for VE).
        panels: number of quadrature panels on $[0, T]$.
    """

    def __init__(self, f, g, *, T: float = 1.0, prior_std: float | None = None, panels: int = 1024):
        super().__init__(T=T)
        check_callable("f", f)
        check_callable("g", g)
        if isinstance(panels, bool) or not isinstance(panels, int) or panels < 1:
            raise ValueError(f"panels must be a positive int, got {panels!r}")
        self.f, self.g, self.panels = f, g, panels
        self._h = self.T / panels
        self._cache: dict = {}
        self._build_tables()
        if prior_std is None:
            tT = torch.tensor([self.T], dtype=torch.float64)
            prior_std = math.sqrt(
                math.exp(2 * self._log_alpha(tT).item()) + self._sigma(tT).item() ** 2
            )
        self._prior_std = check_real("prior_std", prior_std, positive=True)

    def _build_tables(self) -> None:
        h = self._h
        nodes = torch.arange(self.panels + 1, dtype=torch.float64) * h
        f_nodes = _call(self.f, nodes, "f")
        g_nodes = _call(self.g, nodes, "g")
        if not (torch.isfinite(f_nodes).all() and torch.isfinite(g_nodes).all()):
            raise ValueError("f(t) and g(t) must be finite on [0, T]")
        if not bool((g_nodes[1:] ** 2 > 0).all()):
            raise ValueError("g(t) must be nonzero for t > 0 so that sigma(t) > 0")
        # log alpha at the nodes: exact Gauss-Legendre per panel, then a running sum.
        s = nodes[:-1, None] + h * _GL_X
        panel_f = h * (_call(self.f, s, "f") * _GL_W).sum(-1)
        zero = nodes.new_zeros(1)
        tab = {"la": torch.cat([zero, panel_f.cumsum(0)]), "f": f_nodes, "glx": _GL_X, "glw": _GL_W}
        # I at the nodes needs only the log-alpha interpolant, which is now complete.
        panel_i = self._partial_I(nodes[:-1], nodes[1:], tab)
        tab["I"] = torch.cat([zero, panel_i.cumsum(0)])
        if not bool(torch.isfinite(tab["I"]).all()):
            raise ValueError("the derived variance overflows: alpha(t) underflows on [0, T]")
        self._base = tab

    def _tables(self, like: torch.Tensor) -> dict:
        key = (like.device, like.dtype)
        if key not in self._cache:
            base = self._base.items()
            self._cache[key] = {k: v.to(device=like.device, dtype=like.dtype) for k, v in base}
        return self._cache[key]

    def _panel(self, t: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.floor(t / self._h), 0, self.panels - 1).long()

    def _la(self, t: torch.Tensor, tab: dict) -> torch.Tensor:
        """Cubic Hermite interpolant of log alpha (values and slopes f at the nodes)."""
        h = self._h
        k = self._panel(t)
        u = t / h - k.to(t.dtype)
        y0, y1 = tab["la"][k], tab["la"][k + 1]
        m0, m1 = tab["f"][k], tab["f"][k + 1]
        u2, u3 = u * u, u * u * u
        return (
            (2 * u3 - 3 * u2 + 1) * y0
            + (u3 - 2 * u2 + u) * h * m0
            + (-2 * u3 + 3 * u2) * y1
            + (u3 - u2) * h * m1
        )

    def _partial_I(self, a: torch.Tensor, b: torch.Tensor, tab: dict) -> torch.Tensor:
        """$\\int_a^b g^2 / \\alpha^2$ by 8-point Gauss-Legendre (a, b in one panel)."""
        width = (b - a)[..., None]
        s = a[..., None] + width * tab["glx"]
        integrand = _call(self.g, s, "g").square() * torch.exp(-2 * self._la(s, tab))
        return width.squeeze(-1) * (integrand * tab["glw"]).sum(-1)

    def _I(self, t: torch.Tensor) -> torch.Tensor:
        tab = self._tables(t)
        k = self._panel(t)
        return tab["I"][k] + self._partial_I(k.to(t.dtype) * self._h, t, tab)

    def _f(self, t):
        return _call(self.f, t, "f")

    def _g(self, t):
        return _call(self.g, t, "g")

    def _log_alpha(self, t):
        return self._la(t, self._tables(t))

    def _sigma(self, t):
        return self._log_alpha(t).exp() * self._I(t).sqrt()

    def _log_snr(self, t):
        return -0.5 * self._I(t).log()

    @property
    def prior_std(self) -> float:
        return self._prior_std

    def __repr__(self) -> str:
        return f"LinearSDE(f={self.f!r}, g={self.g!r}, T={self.T}, prior_std={self._prior_std})"
