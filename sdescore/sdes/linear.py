r"""`LinearSDE`: any $dx = f(t)\,x\,dt + g(t)\,dw$ from two callables, marginals derived.

$\log\alpha(t) = \int_0^t f$ and $\sigma(t)^2 = \int_0^t g(s)^2 e^{2\int_s^t f}\,ds$
(Särkkä & Solin 2019, eq. (6.11)). Both are tabulated once, in float64, at the nodes of a uniform
grid of panels; between nodes the remainder over the last partial panel $[t_k, t]$ is computed by
8-point Gauss–Legendre (nested for the inner $\int_s^t f$), and the variance is carried across
a panel as $\sigma^2(t) = \sigma_k^2 e^{2\int_{t_k}^t f} + \int_{t_k}^t g^2 e^{2\int_s^t f}$.
No $1/\alpha^2$ appears, so strongly contracting schedules cannot overflow, and the *relative*
error of $\sigma(t)$ stays at machine level as $t \to 0$, where $\sigma^2$ may vanish like $t^2$
(sub-VP). Each evaluation costs 72 calls of `f` and 8 of `g` per time point, vectorised.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._checks import check_callable, check_int, check_real
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


def _first_call(fn, t: torch.Tensor, name: str, *, derivative: bool = False) -> torch.Tensor:
    """`_call` at construction, turning an error inside the user's callable into a TypeError.

    A callable written with `math` or numpy fails deep inside torch (e.g. "only one element
    tensors can be converted to Python scalars"); say what the argument must be instead, with the
    original error chained. `derivative`: the call is the forward-mode derivative of `fn`.
    """
    try:
        # The shape of the answer is checked outside, by `_call`: a ValueError of its own. (A
        # derivative is taken after the value's shape has been checked.)
        out = _derivative(fn, t, name) if derivative else fn(t)
    except Exception as e:
        how = (
            f"differentiable by torch autograd (or give its derivative as {name}_prime=)"
            if derivative
            else "elementwise"
        )
        raise TypeError(
            f"{name} must map a tensor of times t of shape (n,) to a tensor of the same shape, "
            f"written with torch operations (torch.exp, not math.exp or numpy) and {how}; "
            f"{'differentiating' if derivative else 'calling'} it on a float64 tensor of shape "
            f"{tuple(t.shape)} raised {type(e).__name__}: {e}"
        ) from e
    return _call(lambda _: out, t, name)


def _derivative(fn, t: torch.Tensor, name: str) -> torch.Tensor:
    r"""$d\,fn/dt$ elementwise, by one forward-mode pass (fn must be elementwise in t)."""
    ones = torch.ones_like(t)
    _, tangent = torch.func.jvp(lambda u: _call(fn, u, name), (t.detach(),), (ones,))
    return tangent


class LinearSDE(GaussianSDE):
    r"""Linear SDE $dx = f(t)\,x\,dt + g(t)\,dw$ with its Gaussian kernel derived numerically.

    Example: a cosine schedule, or VP written by hand,
    `LinearSDE(lambda t: -0.5 * (0.1 + 19.9 * t), lambda t: (0.1 + 19.9 * t).sqrt())`.

    Args:
        f: callable `f(t) -> tensor shaped like t` (float64 and float32 tensors of any shape),
            the drift coefficient.
        g: callable `g(t) -> tensor shaped like t`, the diffusion coefficient: $g(t) \ge 0$, and
            $g(t) > 0$ for $t > 0$ so that $\sigma(t) > 0$ (checked at the panel nodes).
        T: end time.
        prior_std: std $s$ of the prior $N(0, s^2 I)$; default $\sqrt{\alpha(T)^2 + \sigma(T)^2}$,
            the marginal scale at T of unit-variance data (1 for VP, $\approx\sigma_{max}$ for VE).
        panels: number of quadrature panels on $[0, T]$.

    Raises:
        TypeError: `f` or `g` is not callable, or fails on a float64 tensor of times (written
            with `math` or numpy rather than torch operations); the original error is chained.
        ValueError: `f(t)` or `g(t)` of the wrong shape, not finite, $g < 0$, $g = 0$ for
            $t > 0$, or a kernel out of float32's range on $[0, T]$.
    """

    def __init__(self, f, g, *, T: float = 1.0, prior_std: float | None = None, panels: int = 1024):
        super().__init__(T=T)
        check_callable("f", f)
        check_callable("g", g)
        panels = check_int("panels", panels)
        self.f, self.g, self.panels = f, g, panels
        self._h = self.T / panels
        self._cache: dict = {}
        self._build_tables()
        self._check_schedule(prior=False)  # before the default prior, which exponentiates
        if prior_std is None:
            tT = torch.tensor([self.T], dtype=torch.float64)
            prior_std = math.sqrt(
                math.exp(2 * self._log_alpha(tT).item()) + self._sigma(tT).item() ** 2
            )
        self._prior_std = check_real("prior_std", prior_std, positive=True)
        self._check_schedule()

    _schedule_hint = "rescale f and g or shorten T"
    _prior_hint = (
        "make f contract more (or lengthen T) so that alpha(T) -> 0, and give prior_std = sigma(T)"
    )

    def _build_tables(self) -> None:
        nodes = torch.arange(self.panels + 1, dtype=torch.float64) * self._h
        f_nodes = _first_call(self.f, nodes, "f")
        g_nodes = _first_call(self.g, nodes, "g")
        if not (torch.isfinite(f_nodes).all() and torch.isfinite(g_nodes).all()):
            raise ValueError("f(t) and g(t) must be finite on [0, T]")
        if bool((g_nodes < 0).any()):
            i = int((g_nodes < 0).nonzero()[0])
            raise ValueError(
                f"g(t) must be >= 0 (the diffusion coefficient), got g({nodes[i].item():.4g}) = "
                f"{g_nodes[i].item():.4g}; the kernel sees only g^2, so pass |g| for this SDE"
            )
        if not bool((g_nodes[1:] ** 2 > 0).all()):
            raise ValueError("g(t) must be nonzero for t > 0 so that sigma(t) > 0")
        tab = {"glx": _GL_X, "glw": _GL_W}
        panel_f = self._int_f(nodes[:-1], nodes[1:], tab).tolist()
        panel_v = self._partial_var(nodes[:-1], nodes[1:], tab).tolist()
        la, var = [0.0], [0.0]
        for df, dv in zip(panel_f, panel_v, strict=True):  # carry the kernel across each panel
            la.append(la[-1] + df)
            var.append(var[-1] * math.exp(2 * df) + dv)
        tab["la"] = torch.tensor(la, dtype=torch.float64)
        tab["var"] = torch.tensor(var, dtype=torch.float64)
        if not bool(torch.isfinite(tab["var"]).all()):
            raise ValueError("the derived variance overflows on [0, T]")
        self._base = tab

    def _tables(self, like: torch.Tensor) -> dict:
        key = (like.device, like.dtype)
        if key not in self._cache:
            base = self._base.items()
            self._cache[key] = {k: v.to(device=like.device, dtype=like.dtype) for k, v in base}
        return self._cache[key]

    def _int_f(self, a: torch.Tensor, b: torch.Tensor, tab: dict) -> torch.Tensor:
        """$\\int_a^b f$ by 8-point Gauss-Legendre, elementwise."""
        width = (b - a)[..., None]
        s = a[..., None] + width * tab["glx"]
        return width.squeeze(-1) * (_call(self.f, s, "f") * tab["glw"]).sum(-1)

    def _partial_var(self, a: torch.Tensor, b: torch.Tensor, tab: dict) -> torch.Tensor:
        """Variance gained on $[a, b]$: $\\int_a^b g(s)^2 e^{2\\int_s^b f} ds$, elementwise."""
        width = (b - a)[..., None]
        s = a[..., None] + width * tab["glx"]
        growth = torch.exp(2 * self._int_f(s, b[..., None].expand_as(s), tab))
        return width.squeeze(-1) * (_call(self.g, s, "g").square() * growth * tab["glw"]).sum(-1)

    def _split(self, t: torch.Tensor):
        """Tables, panel index k and panel start t_k for each time."""
        tab = self._tables(t)
        k = torch.clamp(torch.floor(t / self._h), 0, self.panels - 1).long()
        return tab, k, k.to(t.dtype) * self._h

    def _f(self, t):
        return _call(self.f, t, "f")

    def _g(self, t):
        return _call(self.g, t, "g")

    def _log_alpha(self, t):
        tab, k, tk = self._split(t)
        return tab["la"][k] + self._int_f(tk, t, tab)

    def _variance(self, t):
        tab, k, tk = self._split(t)
        return tab["var"][k] * torch.exp(2 * self._int_f(tk, t, tab)) + self._partial_var(
            tk, t, tab
        )

    def _sigma(self, t):
        return self._variance(t).sqrt()

    def _log_snr(self, t):
        return self._log_alpha(t) - 0.5 * self._variance(t).log()

    @property
    def prior_std(self) -> float:
        return self._prior_std

    def __repr__(self) -> str:
        # getattr: a schedule refused during __init__ is described before prior_std exists.
        prior = getattr(self, "_prior_std", None)
        return f"LinearSDE(f={self.f!r}, g={self.g!r}, T={self.T}, prior_std={prior})"
