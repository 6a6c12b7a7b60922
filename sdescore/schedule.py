r"""Time grids fitted to a model: `optimize_schedule`.

A fixed-step solver's error at a small budget depends strongly on where its few steps go; the
built-in rules (`TimeQuadratic`, `LogSNR`, `Karras`, ...) are fixed guesses. Following LD3
(Tong et al., ICLR 2025, "Learning to Discretize Denoising Diffusion ODEs"), the grid is fitted
by minimising the solver's own final error against a teacher: prior draws are carried to the
end time once by an accurate solve (the teacher), then the step boundaries are moved so that
the fixed-step solver, run with exactly those boundaries, lands as close as possible to the
teacher's end points. The boundaries are parameterised monotone by construction (softmax
increments of the half log-SNR $\lambda_t$ between the fixed ends, or of $t$ for an SDE that is
not a `GaussianSDE`, so every candidate is a valid grid), and the objective is the benchmarks' metric, the mean of $|x - x_\text{teacher}|$ over
draws and coordinates.

Why not backpropagation, as in LD3: UniPC and iPNDM (and so `Auto`) compute their step
coefficients as Python floats before their loop (one host read, none inside it), so they are
not differentiable in the grid; and the parameters are few (one per step). A quasi-Newton search (L-BFGS-B) on
finite-difference gradients of the actual solver's error works with every fixed-step ODE solver
unchanged, multistep and predictor-corrector ones included, with no approximation of their
local error. GITS (Chen et al., ICML 2024: dynamic programming over a fine grid with a
first-order local cost) was measured as an initial grid and not kept: for the higher-order
solvers its grids are worse than the built-in rules (docs/sampling.md, "Fitting a grid to the
model"). The search starts from the best of the solver's own grid and the built-in rules.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize

from ._checks import check_end_time, check_int
from .reverse import ProbabilityFlowODE, ReverseSDE
from .sdes.gaussian import GaussianSDE
from .solvers import Auto, Dopri5, NonFiniteError, Solver, get_solver, solver_from_dict
from .solvers.grid import GRIDS, Times
from .solvers.sample import _start
from .solvers.unipc import UniPC

__all__ = ["optimize_schedule"]

_LOGIT_BOUND = 8.0  # neighbouring steps differ at most e^16-fold in log-SNR length


def optimize_schedule(
    process: ProbabilityFlowODE,
    nfe: int,
    *,
    shape=None,
    x_T: torch.Tensor | None = None,
    solver: str | Solver | None = None,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
    teacher: str | Solver | None = None,
    max_solves: int | None = None,
    device=None,
    dtype: torch.dtype | None = None,
) -> Solver:
    r"""Fit the time grid of a fixed-step ODE solver to `process` for a budget of `nfe` calls.

    Draws `shape` from the prior (or takes `x_T`), solves them accurately with `teacher`, then
    moves the solver's `n` step boundaries (interior ones; the ends stay at T and `eps`) to
    minimise the mean $|x - x_\text{teacher}|$ of the solver's end points (the objective of
    LD3, Tong et al., ICLR 2025: the student's distance to the teacher at the end; searched by
    a derivative-free quasi-Newton method on the log-SNR increments instead of
    backpropagation, see the module docstring). The search
    starts from the best of the solver's own grid and the built-in rules, and the result is
    never worse than that start on the fitting draws. Measure the result on other draws
    (`benchmarks/fit_schedule.py` does).

    Cost: the teacher's solve plus at most `max_solves` solves of `nfe` score calls on the
    fitting draws, all without gradients (measured in docs/sampling.md, "Fitting a grid to the
    model").

    Args:
        process: the `ProbabilityFlowODE` (`sde.probability_flow(score_fn)`) whose score the
            grid is fitted to.
        nfe: the budget in score calls, >= 1 (`nfe` steps for the one-call-per-step solvers;
            `nfe / order` for singlestep `DPMSolver`, which must divide it).
        shape: `(B, *D)` of the fitting prior draws (e.g. `(512, 2)`); or give `x_T`.
        x_T: the fitting start states `(B, *D)` at time T instead of prior draws.
        solver: the fixed-step ODE solver whose grid is fitted, an object or its name (default
            `Auto()`, the default sampler); any solver with a `grid` option (`Auto`,
            `DPMSolver`, `UniPC`, `IPNDM`, `TorchDiffEq` fixed-step methods). Its other options
            are kept.
        generator: `torch.Generator` for the prior draws; a fixed seed gives the same grid.
        eps: end time, in (0, T); the fitted grid ends there, so `sample` must get the same
            `eps` (its default, 1e-3, is this default).
        teacher: the accurate solver of the reference solve (default: UniPC-3 with 200 calls on
            the log-SNR grid for a `GaussianSDE`, `Dopri5(rtol=atol=1e-7)` otherwise).
        max_solves: the most fitting solves the search may make (default `40 * nfe`).
        device: of the prior draws (without `x_T`).
        dtype: of the prior draws (without `x_T`; default float64: the search compares
            nearby grids, and float32 rounding would blur the differences).

    Returns:
        A copy of `solver` whose `grid` is the fitted `sdescore.Times` (`steps` unset: the grid
        fixes the budget); `process.sample(shape, method=fitted, eps=eps)`. It serialises with
        `to_dict()` / `sdescore.solvers.solver_from_dict`.

    Raises:
        TypeError: `process` is not a `ProbabilityFlowODE` (a `ReverseSDE` is named as such), a
            `solver` or `teacher` of the wrong type, a solver without a `grid` option.
        ValueError: `nfe < 1`; an adaptive solver (it chooses its own steps); a reverse-SDE
            solver; `nfe` not spent on whole steps of the solver; a bad `shape`, `x_T` or `eps`.
        NonFiniteError: the teacher's solve met NaN/Inf.
    """
    if isinstance(process, ReverseSDE):
        raise TypeError(
            "process must be a ProbabilityFlowODE, got a ReverseSDE: grids are fitted on the "
            "probability-flow ODE, sde.probability_flow(score_fn)"
        )
    if not isinstance(process, ProbabilityFlowODE):
        raise TypeError(
            "process must be a ProbabilityFlowODE (sde.probability_flow(score_fn)), got "
            f"{type(process).__name__}"
        )
    nfe = check_int("nfe", nfe)
    eps = check_end_time(eps, process.T)
    max_solves = 40 * nfe if max_solves is None else check_int("max_solves", max_solves)
    base = _fixed_step(Auto() if solver is None else solver)
    sde = process.sde
    if teacher is None:
        teacher = _default_teacher(sde)
    else:
        teacher = get_solver(teacher, "ode", what="teacher")
    if x_T is None and dtype is None:
        dtype = torch.float64
    z = _start(sde, shape, x_T, generator=generator, device=device, dtype=dtype)
    with torch.no_grad():
        ref = process.sample(x_T=z, method=teacher, eps=eps)
        n = _intervals(process, base, nfe, z[:1], eps)
        fit = _Fit(process, base, z, ref, eps, n)
        theta = fit.search(max_solves)
    return fit.solver(theta)


def _default_teacher(sde) -> Solver:
    if isinstance(sde, GaussianSDE):
        return UniPC(order=3, grid="logsnr", steps=200)
    return Dopri5(rtol=1e-7, atol=1e-7)


def _fixed_step(solver) -> Solver:
    """`solver` as a fixed-step ODE solver object with a `grid` option, or raise."""
    if isinstance(solver, Solver) and solver.process != "ode":
        raise ValueError(
            f"solver {solver!r} integrates the reverse SDE; optimize_schedule fits the grids of "
            "probability-flow ODE solvers (a stochastic sample has no per-draw teacher to match)"
        )
    solver = get_solver(solver, "ode", what="solver")
    if solver.default_steps is None:
        raise ValueError(
            f"solver {solver!r} is adaptive (it chooses its own steps), so it has no grid to fit; "
            "give a fixed-step solver such as sdescore.Auto(), DPMSolver(), UniPC() or IPNDM()"
        )
    try:
        options = solver.to_dict()["options"]
    except TypeError as err:
        raise TypeError(f"solver {solver!r} cannot be copied with a new grid: {err}") from None
    if "grid" not in options:
        raise TypeError(
            f"solver {solver!r} has no grid option; give one that takes grid= (Auto, DPMSolver, "
            "UniPC, IPNDM, TorchDiffEq fixed-step methods)"
        )
    return solver


def with_grid(solver: Solver, times) -> Solver:
    """A copy of `solver` with `grid=Times(times)` and `steps` unset (the grid fixes it)."""
    d = solver.to_dict()
    d["options"]["grid"] = Times(times).to_dict()
    if "steps" in d["options"]:
        d["options"]["steps"] = None
    return solver_from_dict(d)


class _CountCalls:
    def __init__(self, score_fn):
        self.score_fn, self.calls = score_fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.score_fn(x, t)


def _calls(process, solver: Solver, n: int, x: torch.Tensor, eps: float) -> int:
    """Score calls of one solve with an `n`-interval grid (on one draw)."""
    counted = _CountCalls(process.score_fn)
    times = torch.linspace(process.T, eps, n + 1, dtype=torch.float64)
    ProbabilityFlowODE(process.sde, counted).sample(x_T=x, method=with_grid(solver, times), eps=eps)
    return counted.calls


def _intervals(process, solver: Solver, nfe: int, x: torch.Tensor, eps: float) -> int:
    """The number of grid intervals on which `solver` makes exactly `nfe` score calls."""
    calls = _calls(process, solver, nfe, x, eps)
    if calls == nfe:
        return nfe
    per_step = calls / nfe
    n = round(nfe / per_step)
    if n < 1 or _calls(process, solver, n, x, eps) != nfe:
        raise ValueError(
            f"nfe={nfe} score calls cannot be spent on whole steps of {solver!r} (it makes "
            f"{per_step:g} calls a step); give a multiple of that"
        )
    return n


class _BudgetSpent(Exception):
    """`max_solves` fitting solves made: the search stops with the best grid seen."""


class _Fit:
    """The fitting problem: parameters `theta` (n - 1 logits) -> grid -> solver's error."""

    def __init__(self, process, solver, z, ref, eps, n):
        self.process, self.base, self.z, self.ref, self.eps, self.n = (
            process,
            solver,
            z,
            ref,
            eps,
            n,
        )
        sde = process.sde
        # The coordinate the increments live in: the half log-SNR where it exists (it spreads
        # the steps by the solvers' own variable), else the time itself.
        self.gaussian = isinstance(sde, GaussianSDE)
        ends = torch.tensor([process.T, eps], dtype=torch.float64)
        self.ends = self._coord(ends).tolist()
        self.best = (math.inf, None)
        self.solves, self.max_solves = 0, math.inf

    def _coord(self, t: torch.Tensor) -> torch.Tensor:
        return self.process.sde.log_snr(t) if self.gaussian else t

    def times(self, theta: np.ndarray) -> torch.Tensor:
        logits = torch.as_tensor(theta, dtype=torch.float64)
        w = torch.softmax(torch.cat([logits, logits.new_zeros(1)]), 0)
        a, b = self.ends
        u = a + (b - a) * torch.cat([torch.zeros(1, dtype=torch.float64), w.cumsum(0)])
        t = self.process.sde.t_from_log_snr(u) if self.gaussian else u.clone()
        t[0], t[-1] = self.process.T, self.eps
        return t

    def theta(self, times: torch.Tensor) -> np.ndarray:
        d = self._coord(times.to(torch.float64)).diff()
        d = (d / d.sum()).clamp_min(1e-300).log()
        return (d[:-1] - d[-1]).clamp(-_LOGIT_BOUND, _LOGIT_BOUND).numpy()

    def solver(self, theta) -> Solver:
        return with_grid(self.base, self.times(theta))

    def error(self, theta) -> float:
        if self.solves >= self.max_solves:
            raise _BudgetSpent
        self.solves += 1
        try:
            x = self.process.sample(x_T=self.z, method=self.solver(theta), eps=self.eps)
            err = (x - self.ref).abs().mean().item()
        except NonFiniteError:
            err = math.inf
        if err < self.best[0]:
            self.best = (err, np.array(theta, copy=True))
        # A candidate that blows up gets a large finite value, so the line search backtracks.
        return err if math.isfinite(err) else 1e6

    def start(self) -> np.ndarray:
        """The best of the solver's own grid and the built-in rules, on the fitting draws."""
        own = self.base.grid  # None for torchdiffeq's default (uniform in t, among the rules)
        rules = [own] if own is not None and own.steps is None else []
        rules += [g() for g in GRIDS.values() if all(type(r) is not g for r in rules)]
        for rule in rules:
            try:
                times = rule.times(self.process.sde, self.process.T, self.eps, self.n, self.ref)
            except TypeError:  # a log-SNR rule on a non-Gaussian SDE
                continue
            self.error(self.theta(times.to(torch.float64)))
        return self.best[1]

    def search(self, max_solves: int) -> np.ndarray:
        """The best logits found within `max_solves` solves (`n - 1` of them)."""
        if self.n == 1:
            return np.zeros(0)
        self.max_solves = max_solves
        # Finite differences in the logits: 1e-4 resolves the error's change in float64;
        # float32 rounding needs a wider step.
        step = 1e-4 if self.z.dtype == torch.float64 else 3e-3
        try:
            start = self.start()
            bounds = [(-_LOGIT_BOUND, _LOGIT_BOUND)] * len(start)
            minimize(self.error, start, method="L-BFGS-B", bounds=bounds, options={"eps": step})
        except _BudgetSpent:
            pass
        return self.best[1]
