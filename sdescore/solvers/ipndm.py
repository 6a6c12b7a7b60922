r"""iPNDM: the improved pseudo-numerical (linear multistep) solver of the probability-flow ODE.

Zhang & Chen (2023), "Fast Sampling of Diffusion Models with Exponential Integrator" (DEIS),
Sec. 4 and App. B, improving PNDM (Liu et al. 2022). For a Gaussian-kernel SDE the PF ODE in
the scaled state $y = x/\alpha_t$ and the noise level $\bar\sigma = \sigma_t/\alpha_t =
e^{-\lambda_t}$ is

$$\frac{dy}{d\bar\sigma} = \hat\epsilon(x, t), \qquad \hat\epsilon = -\sigma_t\,s(x, t)$$

(Song et al. 2021, eq. (13) with the linear part removed; the form of Karras et al. 2022,
eq. (4)). iPNDM integrates it with the explicit Adams–Bashforth formulas of orders 1 to 4 in
their constant-step form, the first steps of lower order (a warm start from the previous
predictions, no extra score call), one score call per step:

$$y_{n+1} = y_n + (\bar\sigma_{n+1} - \bar\sigma_n)\sum_j b_j\,\hat\epsilon_{n-j},\quad
b = (1),\ (\tfrac32, -\tfrac12),\ (\tfrac{23}{12}, -\tfrac{16}{12}, \tfrac5{12}),\
(\tfrac{55}{24}, -\tfrac{59}{24}, \tfrac{37}{24}, -\tfrac9{24}).$$

The warm start's first (Euler) step has local error $O(h^2)$ and enters once, so the global
order is 2 asymptotically whatever the order; at small budgets orders 3 and 4 are the more
accurate (tests/solvers/test_ipndm.py). As in the references the weights are those of equal
steps whatever the grid (DEIS, App. B;
Zhou et al. 2024, AMED, Sec. 3). The default grid is uniform in $\sqrt t$ (`TimeQuadratic`):
on eight Gaussians under `VPSDE(0.1, 20)` (exact score, eps = 1e-3, 4096 draws, mean distance
to a converged solve) it gave 1.1e-1, 3.1e-2, 1.5e-2, 1.1e-2 at 6, 8, 10, 15 calls, where
Karras et al.'s $\rho = 7$ grid gave 5.0e-1, 9.7e-2, 6.2e-2, 2.5e-2 (docs/sampling.md).
"""

from __future__ import annotations

from typing import ClassVar, final

import torch

from .._checks import check_int
from ._common import check_order, require_gaussian
from .base import Problem, Solver, with_calls
from .grid import TimeQuadratic, as_grid

__all__ = ["IPNDM"]

_ADAMS_BASHFORTH = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


@final
class IPNDM(Solver):
    r"""iPNDM (Zhang & Chen 2023, DEIS, App. B): Adams–Bashforth of order up to 4 on
    $dy/d\bar\sigma = \hat\epsilon$ with a lower-order warm start, one score call per step;
    needs a `GaussianSDE`.

    `steps` on `sample` is the number of score evaluations (default 20).

    Args:
        order: the highest Adams–Bashforth order, 1 to 4 (default 4).
        steps: the budget when `sample` gets no `steps=` (default 20).
        grid: the step boundaries: a `Grid` (default `TimeQuadratic()`; see the module), its
            name, or explicit times (one score call per interval).

    Raises:
        ValueError, TypeError: a bad option, named in the message.
    """

    process: ClassVar[str] = "ode"
    default_steps: ClassVar[int] = 20

    def __init__(self, *, order: int = 4, steps: int | None = None, grid=None):
        self.order = check_order(order, highest=4)
        self.steps = check_int("steps", steps, allow_none=True)
        self.grid = TimeQuadratic() if grid is None else as_grid(grid)

    def describe(self, steps: int | None) -> str:
        return f"iPNDM (Adams-Bashforth up to order {self.order}) on {self.grid!r}" + with_calls(
            steps
        )

    def integrate(self, p: Problem) -> torch.Tensor:
        require_gaussian(
            p.sde, f"method {self!r}", instead="use a torchdiffeq method such as 'dopri5'"
        )
        sde, x = p.sde, p.x
        ts = self.grid.times(sde, p.t0, p.t1, p.steps, x)
        tb = ts.to(x.dtype)[:, None].expand(len(ts), x.shape[0]).unbind(0)
        # All coefficients as float64 numbers: one host read before the loop, none inside it.
        alpha, sigma = sde.alpha(ts).tolist(), sde.sigma(ts).tolist()
        y = x / alpha[0]
        history: list[torch.Tensor] = []  # noise predictions, newest first
        p.record(ts[0], x)
        for i in range(p.steps):
            eps = -sigma[i] * p.score(alpha[i] * y, tb[i])
            history = [eps, *history][: self.order]
            weights = _ADAMS_BASHFORTH[len(history)]
            slope = sum(w * e for w, e in zip(weights, history, strict=True))
            y = y + (sigma[i + 1] / alpha[i + 1] - sigma[i] / alpha[i]) * slope
            p.record(ts[i + 1], alpha[i + 1] * y)
        return alpha[-1] * y
