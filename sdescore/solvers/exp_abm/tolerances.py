"""What a user's tolerance means to `ExpABM`, and how its error estimate is formed.

Measured constants (the measurements: docs/likelihood.md and `benchmarks/likelihood.py`); the
tests they scale are in the package docstring (`sdescore.solvers.exp_abm`).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_TOLERANCE",
    "ERROR_FLOOR",
    "TARGET_TOLERANCE",
    "TOLERANCE_SCALE",
    "internal_tolerances",
]

# What a user's tolerance means: rtol' = TOLERANCE_SCALE * rtol on the tests of the module
# docstring. 100 is the one constant at which the 2021 code's rtol = atol = 1e-5 on eight
# Gaussians (4096 points, exact score) is at least as accurate as dopri5 at 1e-5 (mean and worst
# point against the oracle) in no more score calls (85 against 86; 200 took 77 calls for a mean
# error 1.5x dopri5's, 50 took 95): see docs/likelihood.md for the table at 1e-3..1e-6.
TOLERANCE_SCALE = 100.0
# The default rtol = atol on that scale: rtol' = 2e-3, the tolerance the solver was tuned at.
DEFAULT_TOLERANCE = 2e-5
# The error estimate (`ExpABMSolution.error`, `LikelihoodResult.log_prob_error`), per example:
# |S| + ERROR_FLOOR * A, with S the signed sum over the accepted steps of the predictor-corrector
# gaps that reach log p (the quadrature's and x's, in nats) and A the sum of their magnitudes.
# S follows the error's systematic part (near the data it has one sign); A alone overestimates
# 10-140x (the gap is the lower-order predictor's error, and magnitudes ignore cancellation);
# the floor covers the examples where S cancels by chance. 0.1 is the smallest of 0.05, 0.1,
# 0.2 at which the estimate covered the true error of >= 95 % of the examples of every
# workload of benchmarks/likelihood.py --error-estimate (docs/likelihood.md, "Error estimate").
ERROR_FLOOR = 0.1
# ExpABM(target=tau): step control per example at rtol = atol = TARGET_TOLERANCE * tau. Per
# example, the worst error came out near 100x the tolerance and the mean 25-50x (exact trace or
# fixed probes: eight Gaussians and the sharp mixtures under VP, sub-VP, VE at 2e-5, a digits
# U-Net at 1e-4 and 2e-4); 1/200 leaves a factor 2 (docs/likelihood.md has what it gave).
TARGET_TOLERANCE = 1.0 / 200.0


def internal_tolerances(rtol: float, atol: float) -> tuple[float, float]:
    r"""The solver's own `(rtol', atol')` for a user's `rtol`, `atol` on dopri5's scale.

    The step tests (module docstring) bound the worst example's predictor-corrector gap by
    `atol' + rtol' |x|` on $x$ and `atol' * d` nats on the log-density; dopri5 bounds the batch
    RMS of its embedded error by `atol + rtol |y|`. The two estimates relate differently to the
    error that results, so the user's values are scaled by `TOLERANCE_SCALE`, measured so that
    the same numbers give at least dopri5's accuracy on the 2021 setting (docs/likelihood.md).

    Args:
        rtol, atol: positive tolerances on dopri5's scale.

    Returns:
        `(TOLERANCE_SCALE * rtol, TOLERANCE_SCALE * atol)`.
    """
    return TOLERANCE_SCALE * rtol, TOLERANCE_SCALE * atol
