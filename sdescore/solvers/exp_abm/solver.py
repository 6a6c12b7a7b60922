"""`ExpABM`, the solver object of `likelihood` for the exponential Adams scheme (the scheme:
`sdescore.solvers.exp_abm`): its options, checked once, and its fixed nodes in log-SNR."""

from __future__ import annotations

from typing import ClassVar, final

import torch

from ..._checks import is_int
from ...sdes.gaussian import GaussianSDE
from .._common import DEFAULT_MAX_EVALS, DEFAULT_MAX_STEPS, check_adaptive, check_order
from ..base import Solver
from ..grid import Grid, TimeQuadratic, as_grid
from .tolerances import DEFAULT_TOLERANCE, TARGET_TOLERANCE

__all__ = ["ExpABM"]


@final
class ExpABM(Solver):
    r"""The adaptive exponential Adams predictor-corrector in log-SNR (see the module), as the
    solver of `likelihood` (its default for a `GaussianSDE`); it integrates the likelihood's
    $(x, \Delta\log p)$ system only, not sampling.

    Args:
        rtol: relative tolerance, on dopri5's scale (`internal_tolerances`; default 2e-5:
            docs/likelihood.md, "What a tolerance means", says what it buys).
        atol: absolute tolerance, likewise; scaled, it also bounds each step's log-density
            error (default 2e-5).
        order: predictor order k, 1 to 4 (default 4); the corrector has order k + 1.
        first_step: the first step in log-SNR, between 1e-6 and 1 (default 0.05).
        max_steps: the most step attempts before a `MaxStepsError` (default 10 000).
        max_evals: the most score calls (network passes) before a `MaxStepsError` (default
            `DEFAULT_MAX_EVALS`, 10 000: docs/likelihood.md); a step size that collapses (below
            1e-10 of the log-SNR interval) stops the solve sooner.
        steps: a fixed budget of score calls (network passes) per batch instead of step
            control: the evaluation at eps and `steps - 1` predictor-corrector steps between
            the nodes of `grid`; an int >= 2, or `None` (default: adaptive). The tolerances
            and limits are then unused, and the solve never synchronises with the device.
        grid: where the fixed steps go, a `Grid` or its name (`"time_quadratic"`, `"logsnr"`,
            `"time_uniform"`, `"karras"`) or explicit times from eps to T (`steps - 1`
            intervals); default `"time_quadratic"` (docs/likelihood.md, "A fixed budget").
            Only with `steps` (or explicit times, which fix it).
        per_example: step control per example (default: `False`, one step for the batch, or
            `True` with `target`; `False` with a target is refused): each
            example has its own clock, step size and error test, and a network pass evaluates
            only the examples not yet at T, each at its own time (the score gets `t: (B,)`
            with different values). An example's result no longer depends on its batch, and
            a hard example no longer shrinks the others' steps; at the same tolerance the
            mean error is larger than with one step for the batch (docs/likelihood.md,
            "Per-example step control and an accuracy target"). Adaptive only (not with
            `steps`).
        target: an accuracy target in bits/dim per example, a float in (0, 1), instead of
            rtol/atol: step control per example (implies `per_example`) at
            rtol = atol = `TARGET_TOLERANCE` * target (1/200 of it). Not a guarantee: an
            example can miss it (measured in docs/likelihood.md, "Per-example step control and
            an accuracy target"); `LikelihoodResult.bits_per_dim_error` estimates each
            example's error. Default `None` (the tolerances).

    Raises:
        ValueError, TypeError: a bad option, named in the message.
    """

    process: ClassVar[str] = "ode"
    supports_likelihood: ClassVar[bool] = True

    def __init__(
        self,
        *,
        rtol: float = DEFAULT_TOLERANCE,
        atol: float = DEFAULT_TOLERANCE,
        order: int = 4,
        first_step: float = 0.05,
        max_steps: int = DEFAULT_MAX_STEPS,
        max_evals: int = DEFAULT_MAX_EVALS,
        steps: int | None = None,
        grid=None,
        per_example: bool | None = None,
        target: float | None = None,
    ):
        self.rtol, self.atol, self.max_steps, self.max_evals = check_adaptive(
            rtol, atol, max_steps, max_evals
        )
        self.steps, self.grid = _check_budget(steps, grid)
        self.order = check_order(order, highest=4)
        if (
            isinstance(first_step, bool)
            or not isinstance(first_step, (int, float))
            or not 1e-6 <= first_step <= 1
        ):
            raise ValueError(
                "first_step must be a step in log-SNR between 1e-6 and 1 (the longest step; "
                f"default 0.05), got {first_step!r}"
            )
        self.first_step = float(first_step)
        if per_example is not None and not isinstance(per_example, bool):
            raise TypeError(
                f"per_example must be True or False (step control per example or for the "
                f"batch), got {type(per_example).__name__}"
            )
        if per_example and self.steps is not None:
            raise ValueError(
                f"per_example=True controls adaptive steps; a fixed budget (steps="
                f"{self.steps}) has none to control: give one or the other"
            )
        if target is not None:
            if isinstance(target, bool) or not isinstance(target, (int, float)):
                raise TypeError(
                    f"target must be an error target in bits/dim (a float in (0, 1)) or None, "
                    f"got {type(target).__name__}"
                )
            if not 0.0 < target < 1.0:
                raise ValueError(
                    f"target must be an error target in bits/dim in (0, 1) (e.g. 0.005), got "
                    f"{target!r}"
                )
            if self.steps is not None:
                raise ValueError(
                    f"target={target!r} controls adaptive steps; a fixed budget (steps="
                    f"{self.steps}) has none to control: give one or the other"
                )
            target = float(target)
            tol = TARGET_TOLERANCE * target
            if {rtol, atol} - {tol, DEFAULT_TOLERANCE}:
                raise ValueError(
                    f"target={target!r} sets the tolerances (rtol = atol = {tol:.3g}); give "
                    f"either target or rtol/atol, got rtol={rtol!r}, atol={atol!r} too"
                )
            if per_example is False:
                raise ValueError(
                    f"target={target!r} controls the steps of each example; per_example=False "
                    "(one step for the batch) contradicts it: leave per_example out"
                )
            self.rtol = self.atol = tol
            per_example = True
        self.per_example, self.target = bool(per_example), target

    def integrate(self, p) -> torch.Tensor:
        raise ValueError(
            "ExpABM integrates the likelihood's (x, log p) system from eps to T "
            "(sdescore.likelihood(..., solver=ExpABM())); to sample, use method='auto'"
        )

    def score_calls(self, steps: int | None) -> int | None:
        return self.steps

    def lambda_nodes(self, sde: GaussianSDE, eps: float) -> list[float] | None:
        """The fixed nodes in log-SNR from `eps` to T (`steps` of them, ends exact), or
        `None` when adaptive."""
        if self.steps is None:
            return None
        grid = TimeQuadratic() if self.grid is None else self.grid
        like = torch.empty(0, dtype=torch.float64)
        t = grid.times(sde, eps, sde.T, self.steps - 1, like).to(torch.float64)
        lam = sde.log_snr(t).tolist()
        lam[0] = float(sde.log_snr(torch.tensor(eps, dtype=torch.float64)))
        lam[-1] = float(sde.log_snr(torch.tensor(sde.T, dtype=torch.float64)))
        if any(b >= a for a, b in zip(lam[:-1], lam[1:], strict=True)):
            raise ValueError(
                f"grid={grid!r} gives times that do not increase strictly from eps = {eps} to "
                f"T = {sde.T} (log-SNR nodes {lam}); ExpABM(steps=...) needs distinct times"
            )
        return lam


def _check_budget(steps, grid) -> tuple[int | None, Grid | None]:
    """`ExpABM`'s `steps` (an int >= 2 or None) and `grid` (only with a budget)."""
    if grid is not None:
        grid = as_grid(grid)
        if steps is None and grid.steps is not None:
            steps = grid.steps + 1
    if steps is not None:
        if not is_int(steps):
            raise TypeError(
                f"steps must be an int >= 2 (score calls per batch: the evaluation at eps and "
                f"steps - 1 steps) or None (adaptive), got {type(steps).__name__}"
            )
        if steps < 2:
            raise ValueError(
                f"steps must be an int >= 2 (score calls per batch: the evaluation at eps and "
                f"steps - 1 steps) or None (adaptive), got {steps}"
            )
        steps = int(steps)
        if grid is not None and grid.steps is not None and grid.steps != steps - 1:
            raise ValueError(
                f"steps={steps} takes {steps - 1} steps, but the grid's times fix {grid.steps} "
                f"({grid.steps + 1} times): give steps={grid.steps + 1} or leave it out"
            )
    elif grid is not None:
        raise ValueError(
            f"grid={grid!r} places fixed steps; give their budget too (ExpABM(steps=40, "
            "grid=...)), or leave grid out for the adaptive solver"
        )
    return steps, grid
