"""The one table of method names: each a shorthand for a default-configured solver object.

Every entry point that takes `method=` (`ReverseSDE.sample`, `ProbabilityFlowODE.sample`,
`encode`, `decode`, `Inpainting(solver=...)`) resolves it here, so a name means the same object
everywhere and a name of the other process gets the same pointer wherever it is used. Adding a
solver is one file, one line below and one re-export.
"""

from __future__ import annotations

import difflib
import warnings
from functools import partial

from .adaptive import GottaGoFast
from .auto import Auto
from .base import Solver
from .dpm_solver import DPMSolver
from .exp_abm import ExpABM
from .grid import grid_from_dict
from .ipndm import IPNDM
from .langevin import PC, AnnealedLangevin, Langevin
from .native import Ancestral, EulerMaruyama, ReverseDiffusion
from .sde_dpm_solver import SDEDPMSolver
from .torchdiffeq_sample import ODE_ADAPTIVE, ODE_FIXED, Dopri5, TorchDiffEq
from .torchsde import TORCHSDE_METHODS, TorchSDE
from .unipc import UniPC

__all__ = ["METHODS", "ODE_METHODS", "SDE_METHODS", "get_solver", "solver_from_dict"]

# process -> name -> the default-configured object's factory.
METHODS = {
    "ode": {
        "auto": Auto,
        "dpm_solver": DPMSolver,
        "unipc": UniPC,
        "ipndm": IPNDM,
        **{m: partial(TorchDiffEq, m) for m in (*ODE_ADAPTIVE, *ODE_FIXED)},
    },
    "sde": {
        "euler_maruyama": EulerMaruyama,
        "reverse_diffusion": ReverseDiffusion,
        "ancestral": Ancestral,
        "pc": PC,
        "annealed_langevin": AnnealedLangevin,
        "sde_dpm_solver": SDEDPMSolver,
        "gotta_go_fast": GottaGoFast,
        **{m: partial(TorchSDE, m) for m in TORCHSDE_METHODS},
    },
}
ODE_METHODS = tuple(METHODS["ode"])
SDE_METHODS = tuple(METHODS["sde"])

_PROCESS = {"ode": "the probability-flow ODE", "sde": "the reverse SDE"}
_WHERE = {
    "ode": "sde.probability_flow(score_fn).sample(...)",
    "sde": "sde.reverse(score_fn).sample(...)",
}


def get_solver(method, process: str, *, what: str = "method") -> Solver:
    """The solver object for `method` (an object, or a name in `METHODS[process]`).

    Raises:
        TypeError: neither a name nor an `sdescore.Solver`.
        ValueError: an unknown name (the valid ones and the closest listed), a name or object
            of the other process (with where it belongs).
    """
    other = "sde" if process == "ode" else "ode"
    if isinstance(method, Solver):
        if method.process != process:
            raise ValueError(
                f"{what} {method!r} integrates {_PROCESS[method.process]}, not "
                f"{_PROCESS[process]}; use {_WHERE[method.process]} for it, or one of "
                f"{list(METHODS[process])}"
            )
        return method
    if not isinstance(method, str):
        raise TypeError(
            f"{what} must be a method name or an sdescore.Solver, got {type(method).__name__}"
        )
    if method in METHODS[process]:
        return METHODS[process][method]()
    if method in METHODS[other]:
        raise ValueError(
            f"{what} {method!r} is a method of {_PROCESS[other]}; use {_WHERE[other]} for it, or "
            f"one of {list(METHODS[process])} here"
        )
    near = difflib.get_close_matches(method, list(METHODS[process]), n=1)
    if not near:  # a class name given as a string ("UniPC"), or another case
        by_class = {type(f()).__name__.lower(): n for n, f in METHODS[process].items()}
        near = [by_class[method.lower()]] if method.lower() in by_class else []
        near = near or difflib.get_close_matches(method.lower(), list(METHODS[process]), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise ValueError(f"{what} must be one of {list(METHODS[process])}, got {method!r}{hint}")


# Every solver class, for `solver_from_dict`: those of the table, and the two that have no name
# of their own there (`Dopri5` is TorchDiffEq("dopri5"); `ExpABM` integrates likelihoods only).
_CLASSES = {
    type(build()).__name__: type(build()) for table in METHODS.values() for build in table.values()
} | {c.__name__: c for c in (Dopri5, ExpABM)}


def solver_from_dict(d: dict) -> Solver:
    """The solver object that `Solver.to_dict` described (grids and correctors included).

    Raises:
        ValueError: not a solver description, or an unknown solver class.
    """
    if not isinstance(d, dict) or "solver" not in d or not isinstance(d.get("options"), dict):
        raise ValueError(f"not a solver description (a dict with 'solver' and 'options'): {d!r}")
    cls = _CLASSES.get(d["solver"])
    if cls is None:
        raise ValueError(f"unknown solver {d['solver']!r}; known: {sorted(_CLASSES)}")
    opts = dict(d["options"])
    if isinstance(opts.get("grid"), dict):
        opts["grid"] = grid_from_dict(opts["grid"])
    if isinstance(opts.get("corrector"), dict):
        opts["corrector"] = Langevin(**opts["corrector"])
    if cls is TorchSDE and not opts.get("adaptive"):
        opts.pop("max_steps", None)  # set only with adaptive stepping
        opts.pop("max_evals", None)
    positional = [opts.pop("method")] if "method" in opts else []
    if cls is DPMSolver and "solver_type" not in opts:
        return _legacy_dpm_solver(opts)
    return cls(*positional, **opts)


def _legacy_dpm_solver(opts: dict) -> DPMSolver:
    """A `DPMSolver` saved before `solver_type` existed: its order-2 multistep steps were the
    Taylor form, so it loads as that (with a warning), and gives the samples it gave then."""
    solver = DPMSolver(**opts)
    if solver.plan(solver.default_steps)[1]:  # multistep: the order-2 form concerns it only
        warnings.warn(
            "this DPMSolver was saved before solver_type existed; it is loaded with "
            "solver_type='taylor', the form of its order-2 steps then, so that it gives the same "
            "samples (the default is now 'midpoint', Lu et al.'s Alg. 2)",
            UserWarning,
            stacklevel=3,
        )
        solver = DPMSolver(**opts, solver_type="taylor")
    return solver
