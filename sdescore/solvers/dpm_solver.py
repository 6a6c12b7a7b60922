r"""DPM-Solver: an exponential integrator for the probability-flow ODE in log-SNR time.

Lu et al. (2022), "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in
Around 10 Steps". For a Gaussian-kernel SDE with $\alpha_t$, $\sigma_t$ and half log-SNR
$\lambda_t = \log(\alpha_t/\sigma_t)$, the PF ODE has the exact solution (their eq. (3.4))

$$x_t = \frac{\alpha_t}{\alpha_s} x_s - \alpha_t \int_{\lambda_s}^{\lambda_t} e^{-\lambda}\,
\hat\epsilon(x_\lambda, \lambda)\,d\lambda, \qquad \hat\epsilon = -\sigma_t\,s(x, t),$$

whose linear part is integrated exactly and whose noise prediction is Taylor-expanded in
$\lambda$: orders 1–3 are their Algorithms 1 (DDIM), 4 and 5 (DPM-Solver-1/2/3, with
$r_1 = 1/2$; $r_1 = 1/3$, $r_2 = 2/3$). The formulas hold for $h = \lambda_t - \lambda_s$ of
either sign, so the same code runs data → prior (encoding) and prior → data (sampling).

DPM-Solver++ (Lu et al. 2022b, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models") expands the data prediction $\hat x_0 = (x + \sigma_t^2 s)/\alpha_t$
instead, in singlestep form (`prediction="data"`) or multistep form (`dpm_solver_multistep`).
All kernel coefficients are computed in one vectorised call before the loop, so each step costs
its score calls plus a few fused tensor operations.
"""

from __future__ import annotations

from typing import ClassVar, final

import torch

from .._checks import check_bool, check_choice, check_int
from ..sdes.gaussian import GaussianSDE
from ._common import check_order, require_gaussian
from .base import Problem, Solver, with_calls
from .grid import Grid, LogSNR, as_grid

__all__ = [
    "ALLOCATIONS",
    "DEFAULT_GRID",
    "DPMSolver",
    "PREDICTIONS",
    "dpm_orders",
    "dpm_solver",
    "dpm_solver_multistep",
    "multistep_update",
]

PREDICTIONS = ("data", "noise")
ALLOCATIONS = ("equal", "order")
SOLVER_TYPES = ("midpoint", "taylor")
DEFAULT_GRID = "time_quadratic"
# With the order chosen by budget, the multistep order 3 from this many score calls (2 below).
_THIRD_ORDER_FROM = 13
_STAGES = {1: (), 2: (0.5,), 3: (1 / 3, 2 / 3)}


def _check_solver_type(value) -> str | None:
    """`DPMSolver`'s `solver_type`: None (the default, midpoint) or one of `SOLVER_TYPES`; the
    other libraries' names for them get a pointer."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"solver_type must be a str, one of {list(SOLVER_TYPES)}, got {value!r}")
    if value not in SOLVER_TYPES:
        whose, ours = {
            "heun": ("diffusers'", "taylor"),
            "dpmsolver": ("Lu et al.'s", "midpoint"),
        }.get(value, (None, None))
        hint = f" ({whose} {value!r} is our {ours!r})" if ours else ""
        raise ValueError(f"solver_type must be one of {list(SOLVER_TYPES)}, got {value!r}{hint}")
    return value


def dpm_orders(nfe: int, order: int, *, end_low: bool = False) -> list[int]:
    """Orders of the successive steps for a budget of exactly `nfe` score evaluations.

    As many steps of order `order` as fit, then the remainder as one lower-order step at the end
    (Lu et al. 2022, Sec. 3.4, "DPM-Solver-fast"). A budget divisible by 3 is spent on order-3
    steps only, unless `end_low`: then it ends with an order-2 and an order-1 step, as Lu et
    al.'s code does (their Sec. 3.4; `[3, ..., 3, 2, 1]`).
    """
    k, rem = divmod(nfe, order)
    if end_low and order == 3 and rem == 0 and k >= 2:
        return [3] * (k - 1) + [2, 1]
    return [order] * k + ([rem] if rem else [])


class _Point:
    """Kernel coefficients at one time: `t` as `(B,)` for the score, 0-d alpha, sigma, lambda;
    for the singlestep solver also `a`, `b`, `ell`, the roles its formulas give them (`_step`)."""

    __slots__ = ("t", "alpha", "sigma", "lam", "a", "b", "ell")

    def __init__(self, t, alpha, sigma, lam):
        self.t, self.alpha, self.sigma, self.lam = t, alpha, sigma, lam


def _points(
    sde: GaussianSDE, times: torch.Tensor, like: torch.Tensor, prediction: str | None = None
) -> list[_Point]:
    """`_Point`s for all `times` at once: a few vectorised calls before the loop, none inside.

    The coefficients stay 0-d in the grid's precision (a 0-d tensor does not promote the state's
    dtype); the score's times are in the state's dtype, `(B,)` for `like: (B, *D)`. With a
    `prediction`, each point also gets the roles `(a, b, ell)` of `_step` for it.
    """
    alpha, sigma, lam = sde.alpha(times), sde.sigma(times), sde.log_snr(times)
    tb = times.to(like.dtype)[:, None].expand(len(times), like.shape[0]).unbind(0)
    pts = [
        _Point(*v) for v in zip(tb, alpha.unbind(0), sigma.unbind(0), lam.unbind(0), strict=True)
    ]
    if prediction is not None:
        a, b, ell = (sigma, alpha, -lam) if prediction == "data" else (alpha, sigma, lam)
        for p, *roles in zip(pts, a.unbind(0), b.unbind(0), ell.unbind(0), strict=True):
            p.a, p.b, p.ell = roles
    return pts


def dpm_solver(
    p: Problem,
    *,
    order: int,
    grid: Grid,
    prediction: str,
    proportional: bool = False,
    end_low: bool = False,
) -> torch.Tensor:
    r"""Singlestep DPM-Solver for the problem `p`: the PF ODE from `p.t0` to `p.t1` with exactly
    `p.steps` score evaluations (Lu et al.'s NFE), split into steps by `dpm_orders`.

    Args:
        p: the `Problem` (a `GaussianSDE`, a counted score, the state at `t0`, the recorder of
            the states at step boundaries).
        order: 1, 2 or 3.
        grid: the step boundaries (`sdescore.solvers.grid`).
        prediction: Taylor-expand the data prediction `"data"` (DPM-Solver++, Lu et al. 2022b,
            the same expansion in $\hat x_0$ with $e^{-h}$ in place of $e^{h}$) or the noise
            prediction `"noise"` (Lu et al. 2022).
        proportional: as Lu et al.'s code: on a grid other than `LogSNR`, each step spans as
            many cells of the grid's `steps`-cell grid as it makes score calls, and its
            intermediate stages are the cells' boundaries inside it (so every score call is at
            a grid time); on `LogSNR` equal steps, as without it. `False`: equal steps whatever
            their order, stages at equal fractions of the step in log-SNR.
        end_low: see `dpm_orders`.
    """
    sde, score, x, t0, t1, steps = p.sde, p.score, p.x, p.t0, p.t1, p.steps
    grid = as_grid(grid)
    predict = _data if prediction == "data" else _eps
    orders = dpm_orders(steps, order, end_low=end_low)
    if proportional and not isinstance(grid, LogSNR):
        # Each step spans as many cells of an nfe-cell grid as it makes score calls, its stages
        # at the cells' inner boundaries (Lu et al.'s code, `get_orders_and_timesteps_for_
        # singlestep_solver` and the inner grid of its `sample`), so the last, low-order step is
        # short.
        fine = grid.times(sde, t0, t1, steps, x)
        cells = torch.tensor([0, *orders], device=fine.device).cumsum(0)
        ts = fine[cells]
        inner = [
            c + j for c, k in zip(cells[:-1].tolist(), orders, strict=True) for j in range(1, k)
        ]
        stage_t = fine[torch.tensor(inner, dtype=torch.long, device=fine.device)]
    else:
        ts = grid.times(sde, t0, t1, len(orders), x)
        stage_t = _log_snr_stages(sde, ts, orders)
    pts = _points(sde, torch.cat([ts, stage_t]), x, prediction)
    bounds, stages = pts[: len(ts)], pts[len(ts) :]
    p.record(ts[0], x)
    j = 0
    for i, k in enumerate(orders):
        x = _step(predict, score, x, bounds[i], bounds[i + 1], stages[j : j + k - 1])
        j += k - 1
        p.record(ts[i + 1], x)
    return x


def _log_snr_stages(sde: GaussianSDE, ts: torch.Tensor, orders: list[int]) -> torch.Tensor:
    """The intermediate stage times of steps `orders` between the boundaries `ts`, at the
    fractions `_STAGES` of each step in log-SNR (one vectorised `t_from_log_snr` call)."""
    rs = [r for k in orders for r in _STAGES[k]]
    if not rs:
        return ts[:0]
    lam_b = sde.log_snr(ts)
    idx = torch.tensor([i for i, k in enumerate(orders) for _ in _STAGES[k]], device=ts.device)
    r = torch.tensor(rs, device=ts.device, dtype=ts.dtype)
    stage_lam = lam_b[idx] + r * (lam_b[idx + 1] - lam_b[idx])
    return sde.t_from_log_snr(stage_lam).to(ts.dtype)


def _eps(score, x: torch.Tensor, p: _Point) -> torch.Tensor:
    """Noise prediction $\\hat\\epsilon = -\\sigma_t s(x, t)$."""
    return -p.sigma * score(x, p.t)


def _step(
    predict, score, x: torch.Tensor, s: _Point, t: _Point, mids: list[_Point]
) -> torch.Tensor:
    r"""One singlestep step s → t of order `1 + len(mids)`, `predict` being `_eps` or `_data`.

    Written for the noise prediction $\hat\epsilon$ with $(a, b, \ell) = (\alpha, \sigma,
    \lambda)$: Lu et al. (2022), Algs. 1 (DDIM), 4 and 5. The data prediction $\hat x_0$
    (DPM-Solver++, Lu et al. 2022b; its Alg. 1 is the order-2 case) runs the same lines with
    $(a, b, \ell) = (\sigma, \alpha, -\lambda)$: its exact solution (2022b, eq. (9)) is eq. (3.4)
    of 2022 with $\alpha$ and $\sigma$ exchanged and $\lambda$ negated, and so is every Taylor
    term of it.
    """
    e_s = predict(score, x, s)

    def first_order(p: _Point) -> torch.Tensor:
        # DDIM / DPM-Solver-1: exact linear part, constant prediction (eq. (3.7)).
        return (p.a / s.a) * x - (p.b * torch.expm1(p.ell - s.ell)) * e_s

    if not mids:
        return first_order(t)
    h = t.ell - s.ell
    if len(mids) == 1:
        m = mids[0]
        r1 = (m.ell - s.ell) / h
        d1 = predict(score, first_order(m), m) - e_s
        return first_order(t) - (t.b / (2 * r1) * torch.expm1(h)) * d1
    m1, m2 = mids
    r1, r2 = (m1.ell - s.ell) / h, (m2.ell - s.ell) / h
    d1 = predict(score, first_order(m1), m1) - e_s
    h2 = r2 * h
    u2 = first_order(m2) - (m2.b * r2 / r1 * (torch.expm1(h2) / h2 - 1)) * d1
    d2 = predict(score, u2, m2) - e_s
    return first_order(t) - (t.b / r2 * (torch.expm1(h) / h - 1)) * d2


def _data(score, x: torch.Tensor, p: _Point) -> torch.Tensor:
    """Data prediction (Tweedie) $\\hat x_0 = (x + \\sigma_t^2 s(x, t)) / \\alpha_t$."""
    return (x + p.sigma.square() * score(x, p.t)) / p.alpha


def dpm_solver_multistep(
    p: Problem,
    *,
    order: int,
    grid: Grid,
    damped: bool = False,
    low_final: int = 15,
    solver_type: str = "midpoint",
) -> torch.Tensor:
    r"""Multistep DPM-Solver in data prediction (DPM-Solver++; Lu et al. 2022b), one score call
    per step, for the problem `p` (`p.steps` steps).

    In data prediction the exact solution is $x_t = \frac{\sigma_t}{\sigma_s} x_s + \sigma_t
    \int_{\lambda_s}^{\lambda_t} e^{\lambda}\hat x_0\,d\lambda$ (Lu et al. 2022b, eq. (9)); with
    $\hat x_0$ Taylor-expanded at $\lambda_s$ the integrals are exact:
    $\alpha_t(1 - e^{-h})$, $\alpha_t h\,\varphi_2(h)$, $\alpha_t h^2\varphi_3(h)$ with
    $\varphi_2 = 1 + \mathrm{expm1}(-h)/h$ and $\varphi_3 = \tfrac12 - \varphi_2/h$. The
    derivatives come from divided differences of the previous predictions in $\lambda$
    (nonuniform spacing allowed); the first steps, and the last steps when `steps < 15`, use a
    lower order, as Lu et al. recommend for stability. With `damped`, the second-derivative
    term is halved, as in the 3M of Lu et al.'s code, diffusers and k-diffusion (their $D_2$ is
    $h^2 \hat x_0''/2$ where the exact term needs $h^2 \hat x_0''$): order 2 in practice, but
    measured more accurate below about 40 steps (docs/sampling.md). `solver_type` is the form of
    the order-2 steps (`multistep_update`).
    """
    x, steps = p.x, p.steps
    ts = as_grid(grid).times(p.sde, p.t0, p.t1, steps, x)
    pts = _points(p.sde, ts, x)
    p.record(ts[0], x)
    hist: list[tuple[torch.Tensor, torch.Tensor]] = []  # (lambda, x0-prediction), newest last
    for i in range(steps):
        s, t = pts[i], pts[i + 1]
        hist = (hist + [(s.lam, _data(p.score, x, s))])[-3:]
        k = min(order, len(hist), steps - i if steps < low_final else order)
        x = multistep_update(x, s, t, hist, k, damped=damped, solver_type=solver_type)
        p.record(ts[i + 1], x)
    return x


def multistep_update(
    x: torch.Tensor,
    s: _Point,
    t: _Point,
    hist: list,
    k: int,
    *,
    damped: bool = False,
    solver_type: str = "midpoint",
) -> torch.Tensor:
    r"""One multistep DPM-Solver++ step s → t of order `k` from `hist`, the last `k` or more
    `(lambda, x0-prediction)` pairs with the one at `s` last (see `dpm_solver_multistep`).

    An order-2 step takes the divided difference $\delta = (\hat x_0(\lambda_s) - \hat
    x_0(\lambda_{s-1}))/h_{s-1}$ with the weight $\alpha_t h\varphi_2(h)$ (`"taylor"`: the
    exact integral of the linear Taylor expansion, Lu et al. 2022b, eq. (9); diffusers'
    `solver_type="heun"`) or $-\tfrac12\alpha_t h\,\mathrm{expm1}(-h)$ (`"midpoint"`: the form
    of Lu et al. 2022b, Alg. 2, their code's default and diffusers'). They agree to $O(h^3)$;
    on long steps the midpoint form was more accurate on every workload measured
    (docs/sampling.md). Order 3 is the Taylor form in both.
    """
    h = t.lam - s.lam
    em = torch.expm1(-h)
    phi2 = 1 + em / h
    d0 = hist[-1][1]
    x_new = (t.sigma / s.sigma) * x - (t.alpha * em) * d0
    if k >= 2:
        (l1, d1), h1 = hist[-2], s.lam - hist[-2][0]
        delta1 = (d0 - d1) / h1
        if k == 2 and solver_type == "midpoint":
            return x_new - (0.5 * t.alpha * em * h) * delta1
        deriv, second = delta1, None
        if k >= 3:
            l2, d2 = hist[-3]
            delta2 = (d1 - d2) / (l1 - l2)
            second = 2 * (delta1 - delta2) / (s.lam - l2)
            deriv = delta1 + 0.5 * h1 * second
            if damped:  # the 3M of Lu et al.'s code, diffusers, k-diffusion: half the term
                second = 0.5 * second
        x_new = x_new + (t.alpha * h * phi2) * deriv
        if second is not None:
            x_new = x_new + (t.alpha * h * h * (0.5 - phi2 / h)) * second
    return x_new


@final
class DPMSolver(Solver):
    r"""DPM-Solver / DPM-Solver++ (Lu et al. 2022; 2022b) for a `GaussianSDE`.

    `steps` on `sample` is the number of score evaluations (default 20). With `order` and
    `multistep` unset this is multistep DPM-Solver++ (Lu et al. 2022b, Alg. 2), one score call
    per step: 2M below 13 calls and 3M from 13 (with the damped second-derivative term unless
    `damped=False`), as measured in docs/sampling.md. For the by-budget choice that also uses
    UniPC's corrector, the default sampler, see `Auto`.

    Args:
        steps: the budget when `sample` gets no `steps=` (score calls for the exponential
            integrators, time steps otherwise; default: the class's `default_steps`).
        order: 1, 2 or 3 (default: by budget, see above; 3 when `multistep` is set).
        multistep: `False`: singlestep, `order` calls per step; `True`: multistep DPM-Solver++
            with one call per step. Default: multistep when `order` is unset too, else
            singlestep.
        grid: the step boundaries: a `Grid` (`TimeQuadratic()`, the default, uniform in
            $\sqrt t$; `LogSNR()`; `TimeUniform()`; `Karras(rho)`), its name, or explicit
            times (one step per interval; see `sdescore.solvers.grid`).
        prediction: Taylor-expand the data prediction `"data"` (DPM-Solver++, default) or the
            noise prediction `"noise"` (singlestep only).
        damped: multistep order 3 only: `True` halves the second-derivative term, as the 3M of
            Lu et al.'s code, diffusers and k-diffusion do (order 2 in practice, more accurate
            below about 40 calls on a time-quadratic grid); `False` is the exact order-3 update.
            Default `True` when the order is chosen by budget.
        allocation: singlestep only: `"equal"` (default) steps of equal length on the grid,
            stages at equal fractions of each step in log-SNR; `"order"` as Lu et al.'s code
            (its "DPM-Solver-fast", the same samples): a budget divisible by 3 ends in orders 2,
            1, and on a grid other than `LogSNR` each step spans as many cells of the
            `steps`-cell grid as it makes calls, its stages at the cells' boundaries (on
            `LogSNR`, equal steps). Not with explicit grid times.
        solver_type: multistep only: the form of the order-2 steps, `"midpoint"` (the default;
            Lu et al. 2022b, Alg. 2; their code's `"dpmsolver"` and diffusers' `"midpoint"`) or
            `"taylor"` (the exact integral of the linear Taylor expansion; diffusers'
            `"heun"`; the 2M of sdescore before this option). See `multistep_update`.

    Raises:
        ValueError, TypeError: a bad option, named in the message.
    """

    process: ClassVar[str] = "ode"
    default_steps: ClassVar[int] = 20

    def __init__(
        self,
        *,
        steps: int | None = None,
        order: int | None = None,
        multistep: bool | None = None,
        grid=DEFAULT_GRID,
        prediction: str = "data",
        damped: bool | None = None,
        allocation: str = "equal",
        solver_type: str | None = None,
    ):
        self.steps = check_int("steps", steps, allow_none=True)
        self.order = None if order is None else check_order(order)
        self.multistep = None if multistep is None else check_bool("multistep", multistep)
        self.grid = as_grid(grid)
        self.prediction = check_choice("prediction", prediction, PREDICTIONS)
        self.damped = None if damped is None else check_bool("damped", damped)
        self.allocation = check_choice("allocation", allocation, ALLOCATIONS)
        self.solver_type = _check_solver_type(solver_type)
        if self.multistep and self.prediction != "data":
            raise ValueError(
                "multistep=True supports prediction='data' only (DPM-Solver++), got "
                f"prediction={prediction!r}"
            )
        if not self._by_budget() and not self.multistep:  # order or prediction alone: singlestep
            for name, value in (("damped", damped), ("solver_type", solver_type)):
                if value is not None:
                    raise ValueError(
                        f"{name} applies to the multistep solver only (multistep=True, or none "
                        f"of order, multistep and prediction given), got {name}={value!r} with "
                        f"order={order!r}, multistep={multistep!r}, prediction={prediction!r}"
                    )
        if self.damped and self.order is not None and self.order < 3:  # False: nothing to undo
            raise ValueError(
                f"damped applies to order 3 only (the second-derivative term), got "
                f"damped={damped!r} with order={order!r}"
            )
        if self.allocation == "order" and self.grid.steps is not None:
            raise ValueError(
                "allocation='order' places its own boundaries; with explicit grid times use "
                "allocation='equal' (one step per interval)"
            )

    def _by_budget(self) -> bool:
        """Whether the order (and multistep) is chosen by the budget (see the class)."""
        return self.order is None and self.multistep is None and self.prediction == "data"

    def plan(self, steps: int) -> tuple[int, bool, bool]:
        """`(order, multistep, damped)` for a budget of `steps` score calls (see the class)."""
        if self._by_budget():
            if steps < _THIRD_ORDER_FROM:
                return 2, True, False
            return 3, True, self.damped is not False
        multistep = bool(self.multistep)
        return (3 if self.order is None else self.order), multistep, bool(self.damped)

    def grid_steps(self) -> int | None:
        n = self.grid.steps
        if n is None:
            return None
        order, multistep, _ = self.plan(n)
        return n if multistep else n * order

    def describe(self, steps: int | None) -> str:
        name = "DPM-Solver++" if self.prediction == "data" else "DPM-Solver"
        form = ", taylor" if self.solver_type == "taylor" else ""
        if steps is None and self._by_budget():
            third = "damped 3M" if self.damped is not False else "3M"
            n, grid = _THIRD_ORDER_FROM, self.grid
            steps2 = " (order-2 steps in the Taylor form)" if form else ""
            return f"{name}: 2M below {n} score calls, {third} from {n}{steps2}, on {grid!r}"
        order, multistep, damped = self.plan(steps)
        extra = (", damped" if damped else "") + (form if order >= 2 else "")
        kind = f"({order}M{extra})" if multistep else f"-{order}"
        return f"{name}{kind} on {self.grid!r}" + with_calls(steps)

    def integrate(self, p: Problem) -> torch.Tensor:
        require_gaussian(
            p.sde, "method 'dpm_solver'", instead="use a torchdiffeq method such as 'dopri5'"
        )
        order, multistep, damped = self.plan(p.steps)
        if multistep:  # prediction="data" (checked by __init__)
            return dpm_solver_multistep(
                p, order=order, grid=self.grid, damped=damped,
                solver_type=self.solver_type or "midpoint",
            )  # fmt: skip
        reference = self.allocation == "order"
        return dpm_solver(
            p, order=order, grid=self.grid, prediction=self.prediction,
            proportional=reference, end_low=reference,
        )  # fmt: skip
