"""`ExpABM`'s step control: the controller's constants and a solve's adaptive options."""

from __future__ import annotations

from dataclasses import dataclass

from .tolerances import internal_tolerances

__all__ = ["STEP_CONTROL", "AdaptiveOptions", "StepControl"]


@dataclass(frozen=True)
class StepControl:
    """The constants of the step-size controller (the same for both step-control modes)."""

    # Growth of the step after an accepted step is capped (multistep methods lose stability and
    # accuracy on strongly varying step ratios); shrinking after a rejection is floored.
    max_growth: float = 2.0
    min_shrink: float = 0.2
    safety: float = 0.9
    # PI step-size control (Gustafsson 1991; Hairer & Wanner, Sec. IV.2): exponents on the
    # current and the previous accepted error ratio, over k + 1. Against the plain rule it cut
    # the rejected steps by half and, at a looser tolerance for the same errors, the evaluations
    # by 5-10 %.
    pi_current: float = 0.7
    pi_previous: float = 0.4
    # The longest step in lambda: the error estimate sees only the nodes, so a feature of the
    # path (where it switches modes) between two far-apart nodes can pass unnoticed. Without the
    # cap sub-VP crossed a sharp 16-D mixture in 11 evaluations at the default tolerance, 0.19
    # bits/dim off; with it, looser tolerances degrade gracefully (1e-2: 2e-3 bits/dim at most
    # on average; tests/test_likelihood_exp_abm.py).
    max_step: float = 1.0

    def grow(self, r: float, r_prev: float | None, k: int) -> float:
        """The factor on the step after an accepted step with error ratio `r` (the previous
        accepted one `r_prev`, or `None` at the first), predictor order `k`: the PI rule,
        growth capped, shrinking floored."""
        factor = r ** (-self.pi_current / (k + 1))
        if r_prev is not None:
            factor *= r_prev ** (self.pi_previous / (k + 1))
        return min(self.max_growth, max(self.min_shrink, self.safety * factor))

    def shrink(self, r: float, k: int) -> float:
        """The factor on the step after a rejected step with error ratio `r`: the plain rule,
        never growing."""
        return min(1.0, max(self.min_shrink, self.safety * r ** (-1.0 / (k + 1))))


STEP_CONTROL = StepControl()


@dataclass(frozen=True)
class AdaptiveOptions:
    """A solve's step-control options, as `exp_abm_likelihood` takes them: the user's
    tolerances on dopri5's scale, the predictor order, the first step in log-SNR and the
    limits on step attempts and network passes."""

    rtol: float
    atol: float
    order: int
    first_step: float
    max_steps: int
    max_evals: int

    @property
    def internal(self) -> tuple[float, float]:
        """`(rtol', atol')`, the scaled tolerances the step tests use (`internal_tolerances`)."""
        return internal_tolerances(self.rtol, self.atol)
