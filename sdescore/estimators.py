r"""The divergence estimators of `likelihood` and `elbo`, as small option objects.

`likelihood(..., estimator=...)` takes `"hutchinson"`, `"exact"`, or one of these objects with
its options: `Hutchinson(probes=4)`, `ExactTrace(chunk=16)`. The mechanism itself (the
vector-Jacobian products) is `sdescore.divergence`.
"""

from __future__ import annotations

from typing import final

from ._checks import check_bool, check_choice, check_int

__all__ = ["ESTIMATORS", "ExactTrace", "Hutchinson", "as_estimator"]

NOISES = ("rademacher", "gaussian")


@final
class Hutchinson:
    r"""Hutchinson's estimator $\nabla\cdot v \approx \epsilon^\top (\partial v/\partial x)\,\epsilon$
    (Hutchinson 1989; Grathwohl et al. 2019, FFJORD), one vector-Jacobian product per probe.

    Args:
        probes: k probes per example, each integrated as its own channel; `log_prob` uses
            their mean and, for k > 1, `log_prob_stderr` their standard error (default 1).
        noise: the probe distribution, `"rademacher"` (default) or `"gaussian"`.
        resample: draw new probes at every evaluation instead of holding them fixed through
            the solve: the estimate becomes a quadrature of independent estimates, whose
            variance falls with the number of steps as well as with k, while one extra fixed
            probe steers the step control (so the steps never depend on the estimating probes
            and the estimate stays unbiased). Only the `ExpABM` solver supports it; `None`
            (default) means on with `ExpABM`, off otherwise. Measured gains: docs/likelihood.md.

    Raises:
        ValueError, TypeError: a bad option, named in the message.
    """

    name = "hutchinson"

    def __init__(self, probes: int = 1, *, noise: str = "rademacher", resample: bool | None = None):
        self.probes = check_int("probes", probes)
        self.noise = check_choice("noise", noise, NOISES)
        self.resample = None if resample is None else check_bool("resample", resample)

    def __repr__(self) -> str:
        return f"Hutchinson(probes={self.probes}, noise={self.noise!r}, resample={self.resample})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Hutchinson) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash(tuple(vars(self).values()))


@final
class ExactTrace:
    r"""The exact divergence $\sum_i \partial v_i/\partial x_i$: `prod(D)` vector-Jacobian
    products per evaluation (moderate dimension only).

    Args:
        chunk: basis vectors per batched backward call (default: all at once).

    Raises:
        ValueError, TypeError: a bad option, named in the message.
    """

    name = "exact"
    probes = 1

    def __init__(self, *, chunk: int | None = None):
        self.chunk = check_int("chunk", chunk, allow_none=True)

    def __repr__(self) -> str:
        return f"ExactTrace(chunk={self.chunk})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ExactTrace) and self.chunk == other.chunk

    def __hash__(self) -> int:
        return hash(("exact", self.chunk))


ESTIMATORS = {"hutchinson": Hutchinson, "exact": ExactTrace}


def as_estimator(value) -> Hutchinson | ExactTrace:
    """An estimator object from an object or its name (`ESTIMATORS`).

    Raises:
        ValueError: an unknown name. TypeError: another type.
    """
    if isinstance(value, (Hutchinson, ExactTrace)):
        return value
    if isinstance(value, str):
        return ESTIMATORS[check_choice("estimator", value, tuple(ESTIMATORS))]()
    raise TypeError(
        "estimator must be 'hutchinson', 'exact', sdescore.Hutchinson(...) or "
        f"sdescore.ExactTrace(...), got {type(value).__name__}"
    )
