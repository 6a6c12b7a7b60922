r"""The solver base class: what a sampling method must provide, and the problem it is given.

A sampling method is a small object holding its own validated options (`DPMSolver(order=3)`,
`PC(corrector=Langevin(snr=0.16))`, ...) and passed as `method=` to `ReverseSDE.sample` or
`ProbabilityFlowODE.sample/encode/decode`. The abstract surface is small, after diffrax's
`AbstractSolver`: one class attribute saying which process the solver integrates, and one method,
`integrate(problem)`, that carries the start state from `problem.t0` to `problem.t1`. Everything
shared by all methods (the prior draw, shapes, counting and shape-checking score calls, the
progress bar, trajectories, the final denoising, the NaN check) is done by `sample` around it.
Concrete solvers are final: to change one, wrap it or write another `Solver`.

Example, a user's Euler solver of the probability-flow ODE:

    class MyEuler(sdescore.Solver):
        process = "ode"
        default_steps = 50

        def integrate(self, p):
            ts = torch.linspace(p.t0, p.t1, p.steps + 1, dtype=torch.float64)
            x = p.x
            for s, t in zip(ts[:-1], ts[1:]):
                tb = s.to(x.dtype).expand(x.shape[0])
                x = x + (t - s).item() * p.velocity(x, tb)
                p.record(t, x)
            return x
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .._shapes import append_dims
from ..sdes.base import SDE
from ._common import checked_drift

__all__ = ["Problem", "Solver"]


@dataclass(frozen=True)
class Problem:
    """One solve, as a `Solver` receives it.

    Attributes:
        sde: the forward `SDE`.
        score: the score function `(x: (B, *D), t: (B,)) -> (B, *D)`, counted and shape-checked
            (every call is one score evaluation in `SampleResult.nfe`).
        x: the start state `(B, *D)` at `t0` (float32 or float64; low precision is handled
            outside).
        t0: start time (T when sampling, the end time when encoding).
        t1: end time.
        steps: the step budget given to `sample` (`steps=`), or the solver's `default_steps`;
            `None` for solvers without one (adaptive methods).
        generator: the caller's `torch.Generator` for all noise (or `None`).
        record: call `record(t, x)` at the states to put in the trajectory (`t` a 0-d tensor);
            a no-op unless a trajectory was asked for (`record.enabled`).
        final_noise: reverse-SDE solvers: add noise on the last step too (`denoise="none"` or
            `"tweedie"`); `False` ends on the last step's mean.
        project: reverse-SDE solvers with `supports_inpaint`: a per-step projection
            `project(x, t)` to apply after every step (inpainting), or `None`.
    """

    sde: SDE
    score: Any
    x: torch.Tensor
    t0: float
    t1: float
    steps: int | None
    generator: torch.Generator | None
    record: Any
    final_noise: bool = False
    project: Any = None

    def velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r"""The probability-flow velocity $f(x, t) - \tfrac12 g(t)^2 s(x, t)$ at `t: (B,)`."""
        g2 = append_dims(self.sde.diffusion(t).square().to(x.dtype), x.ndim)
        return checked_drift(self.sde, x, t) - 0.5 * g2 * self.score(x, t)


class Solver(abc.ABC):
    r"""Abstract base of the sampling methods.

    Subclasses set `process` and implement `integrate`; they validate their options in
    `__init__` (keyword-only, raising `ValueError`/`TypeError` that names the option).

    Class attributes:
        process: `"ode"` (the probability-flow ODE) or `"sde"` (the reverse SDE).
        default_steps: the step budget used when `sample` gets no `steps=`; `None` means the
            solver takes no step count (adaptive methods), and `steps=` is then an error.
        supports_inpaint: whether `integrate` applies `problem.project` after every step.
        supports_likelihood: whether `likelihood` can integrate its $(x, \Delta\log p)$
            system with this solver (`TorchDiffEq`, `Dopri5`, `ExpABM`).
    """

    process: ClassVar[str]
    default_steps: ClassVar[int | None] = None
    supports_inpaint: ClassVar[bool] = False
    supports_likelihood: ClassVar[bool] = False

    def score_calls(self, steps: int | None) -> int | None:
        """Score evaluations a solve of `steps` steps makes, for the progress bar (or `None`)."""
        return steps

    def grid_steps(self) -> int | None:
        """The `steps` an explicit grid of times fixes (`self.grid`, a `Times`), or `None`.

        One step per interval of the grid; a solver whose `steps` counts something else per
        interval (singlestep `DPMSolver`: `order` score calls) overrides this.
        """
        grid = getattr(self, "grid", None)
        return None if grid is None else grid.steps

    def projection(self, sde: SDE, x: torch.Tensor, generator):
        """A per-step projection bound to a solve from `x` (`Problem.project`), or `None`: a
        reverse-SDE wrapper such as `Inpainting` returns one; `ReverseSDE.sample` asks."""
        return None

    def describe(self, steps: int | None) -> str:
        """What runs for a budget of `steps`: the algorithm, its options and grid (the object's
        repr unless a solver chooses by budget, as `Auto` does); `SampleResult.solver`."""
        return repr(self) if steps is None else f"{self!r} with steps={steps}"

    def to_dict(self) -> dict:
        """A JSON-ready description of this solver and its options (grids included);
        `sdescore.solvers.solver_from_dict` rebuilds it.

        Raises:
            TypeError: an option that has no plain description (e.g. `Inpainting`'s tensors).
        """
        return {"solver": type(self).__name__, "options": _describe(vars(self))}

    @abc.abstractmethod
    def integrate(self, problem: Problem) -> torch.Tensor:
        """Carry `problem.x` from `problem.t0` to `problem.t1`; return the state `(B, *D)`."""

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted((k, repr(v)) for k, v in vars(self).items()))))


def with_calls(steps: int | None) -> str:
    """ " with N score calls" for a `describe` given the budget; nothing without one."""
    return "" if steps is None else f" with {steps} score calls"


def _describe(options: dict) -> dict:
    out = {}
    for k, v in options.items():
        if k.startswith("_"):
            continue
        if v is None or isinstance(v, (bool, int, float, str)):
            out[k] = v
        elif hasattr(v, "to_dict"):  # a Grid, a Langevin corrector, a nested solver
            out[k] = v.to_dict()
        else:
            raise TypeError(
                f"option {k}={type(v).__name__} has no plain description; it cannot be saved"
            )
    return out
