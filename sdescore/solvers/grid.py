r"""Time grids: where a fixed-step solver puts its step boundaries.

A grid is a value given to a solver object (`DPMSolver(grid=...)`, `PC(grid=...)`, ...): a rule
that places `n + 1` boundaries between the start and end times of a solve (`TimeUniform`,
`TimeQuadratic`, `LogSNR`, `Karras`), or explicit times (`Times`, or simply a tensor or a list of
times, which `as_grid` wraps). The rules:

- `TimeUniform`: uniform in $t$;
- `TimeQuadratic`: uniform in $\sqrt t$ (Lu et al. 2022, Sec. 3.3, their "time quadratic");
- `LogSNR`: uniform in the half log-SNR $\lambda = \log(\alpha_t/\sigma_t)$ (Lu et al. 2022,
  their recommendation for DPM-Solver); needs a `GaussianSDE`;
- `Karras`: uniform in $\tilde\sigma^{1/\rho}$ with $\tilde\sigma = \sigma_t/\alpha_t$ (Karras et
  al. 2022, eq. (5)); needs a `GaussianSDE`.

Grids are computed in `grid_dtype` of the state (float64 for a float64 state, float32 otherwise;
never in reduced precision), on the state's device, with both end points exact. A grid given as
explicit times is checked once, when the solver object is built (finite, strictly monotone, at
least two times) and again when it is used (its ends must be the solve's start and end times,
its number of steps the solver's), and it gives bit-identical boundaries to a rule's when given
the times that rule produced (`grid.times(...)`).

Grids serialise to plain JSON-ready dictionaries (`to_dict`, `grid_from_dict`).
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar, final

import torch

from ..sdes.base import SDE

__all__ = [
    "GRIDS",
    "Grid",
    "Karras",
    "LogSNR",
    "TimeQuadratic",
    "TimeUniform",
    "Times",
    "as_grid",
    "grid_dtype",
    "grid_from_dict",
]


def grid_dtype(like: torch.Tensor) -> torch.dtype:
    """The dtype of time grids and step coefficients for a state like `like`: float64 for a
    float64 state, float32 otherwise.

    A float16/bfloat16 grid would be far too coarse (bfloat16 has 8 significant bits: half of
    1000 uniform steps on [1e-3, 1] would have zero length); the state may stay low precision.
    """
    return torch.float64 if like.dtype == torch.float64 else torch.float32


class Grid(abc.ABC):
    """Abstract base of the time grids: `times(sde, t0, t1, n, like)` gives `(n + 1,)` step
    boundaries from `t0` to `t1`.

    Class attributes:
        name: the grid's name in `GRIDS` and in `to_dict`.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def times(self, sde: SDE, t0: float, t1: float, n: int, like: torch.Tensor) -> torch.Tensor:
        """Boundaries `(n + 1,)` from `t0` to `t1` (either order), ends exact, on `like`'s
        device in `grid_dtype(like)`.

        Raises:
            ValueError: an explicit grid whose ends or length do not fit the solve.
            TypeError: a rule that needs a `GaussianSDE` given another SDE.
        """

    @property
    def steps(self) -> int | None:
        """The number of steps an explicit grid fixes, or `None` for a rule."""
        return None

    def to_dict(self) -> dict:
        """A JSON-ready description; `grid_from_dict` rebuilds the grid."""
        return {"grid": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))


def _opts(like: torch.Tensor) -> dict:
    return {"device": like.device, "dtype": grid_dtype(like)}


def _finish(ts: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    ts[0], ts[-1] = t0, t1
    return ts


def _log_snr_grid(sde: SDE, name: str, t0, t1, n, like, to_unit, from_unit) -> torch.Tensor:
    """Boundaries uniform in `to_unit(lambda)` between the ends (mapped back by `from_unit`)."""
    from ..sdes.gaussian import GaussianSDE

    if not isinstance(sde, GaussianSDE):
        raise TypeError(
            f"grid {name!r} is placed in log-SNR and needs a GaussianSDE (closed-form alpha, "
            f"sigma), got {type(sde).__name__}; use grid='time_uniform' or 'time_quadratic'"
        )
    opts = _opts(like)
    a, b = to_unit(sde.log_snr(torch.tensor([t0, t1], **opts))).unbind(0)
    u = torch.linspace(0, 1, n + 1, **opts)
    return _finish(sde.t_from_log_snr(from_unit(a + u * (b - a))).to(**opts), t0, t1)


@final
class TimeUniform(Grid):
    """Boundaries uniform in $t$."""

    name: ClassVar[str] = "time_uniform"

    def times(self, sde, t0, t1, n, like):
        return _finish(torch.linspace(t0, t1, n + 1, **_opts(like)), t0, t1)


@final
class TimeQuadratic(Grid):
    r"""Boundaries uniform in $\sqrt t$ (Lu et al. 2022, Sec. 3.3): dense near the data."""

    name: ClassVar[str] = "time_quadratic"

    def times(self, sde, t0, t1, n, like):
        ts = torch.linspace(math.sqrt(t0), math.sqrt(t1), n + 1, **_opts(like)).square()
        return _finish(ts, t0, t1)


@final
class LogSNR(Grid):
    r"""Boundaries uniform in the half log-SNR $\lambda_t = \log(\alpha_t/\sigma_t)$ (Lu et al.
    2022, Sec. 3.3); needs a `GaussianSDE`."""

    name: ClassVar[str] = "logsnr"

    def times(self, sde, t0, t1, n, like):
        return _log_snr_grid(sde, self.name, t0, t1, n, like, lambda v: v, lambda v: v)


@final
class Karras(Grid):
    r"""Boundaries uniform in $\tilde\sigma^{1/\rho}$, $\tilde\sigma = \sigma_t/\alpha_t =
    e^{-\lambda}$ (Karras et al. 2022, eq. (5)); needs a `GaussianSDE`.

    Args:
        rho: the exponent $\rho > 0$ (default 7, Karras et al.'s choice).

    Raises:
        ValueError, TypeError: `rho` not a positive finite number.
    """

    name: ClassVar[str] = "karras"

    def __init__(self, rho: float = 7.0):
        from .._checks import check_real

        self.rho = check_real("rho", rho, positive=True)

    def times(self, sde, t0, t1, n, like):
        rho = self.rho
        return _log_snr_grid(
            sde,
            self.name,
            t0,
            t1,
            n,
            like,
            lambda lam: (-lam / rho).exp(),
            lambda u: -rho * u.log(),
        )

    def to_dict(self) -> dict:
        return {"grid": self.name, "rho": self.rho}

    def __repr__(self) -> str:
        return f"Karras(rho={self.rho!r})"


@final
class Times(Grid):
    """Explicit step boundaries, e.g. another library's grid (`docs/sampling.md`).

    Args:
        times: a 1-d tensor, list or tuple of at least two finite times, strictly monotone
            (decreasing from T to the end time as a sampler runs, or increasing; a solve uses
            them in its own direction). Its ends must be the solve's: `times[0]` (or `[-1]`)
            equal to T and the other end equal to the `eps` given to `sample`. Stored in
            float64 on the CPU; used in the state's grid dtype on its device.

    Raises:
        TypeError: `times` not a tensor, list or tuple of real numbers.
        ValueError: fewer than two times, a non-finite time, or times not strictly monotone
            (the first offending index is named).
    """

    name: ClassVar[str] = "times"

    def __init__(self, times):
        if isinstance(times, torch.Tensor):
            if times.is_complex() or times.dtype == torch.bool:
                raise TypeError(f"times must be real numbers, got a {times.dtype} tensor")
            t = times.detach().to("cpu", torch.float64)
        elif isinstance(times, (list, tuple)):
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in times):
                raise TypeError(f"times must be real numbers, got {times!r}")
            t = torch.tensor([float(v) for v in times], dtype=torch.float64)
        else:
            raise TypeError(
                "grid times must be a 1-d tensor, list or tuple of times, got "
                f"{type(times).__name__}"
            )
        if t.ndim != 1 or t.numel() < 2:
            raise ValueError(
                f"grid times must be 1-d with at least 2 times, got shape {tuple(t.shape)}"
            )
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).nonzero()[0])
            raise ValueError(f"grid times must be finite, got {t[bad].item()} at index {bad}")
        d = t.diff()
        sign = 1.0 if float(d[0]) > 0 else -1.0
        bad = (d * sign <= 0).nonzero()
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                "grid times must be strictly monotone, got "
                f"times[{i}] = {t[i].item()!r} and times[{i + 1}] = {t[i + 1].item()!r}"
            )
        self._t = t

    @property
    def steps(self) -> int:
        return self._t.numel() - 1

    def times(self, sde, t0, t1, n, like):
        t = self._t if (float(self._t[-1]) > float(self._t[0])) == (t1 > t0) else self._t.flip(0)
        if n != self.steps:
            raise ValueError(
                f"the grid has {self.steps + 1} times ({self.steps} steps), but the solve takes "
                f"{n} steps"
            )
        for end, want, what in ((t[0], t0, "start"), (t[-1], t1, "end")):
            if abs(float(end) - want) > 1e-6 * abs(want) + 1e-12:
                hint = (
                    "; a solve ends at eps > 0, so replace the grid's last time 0 by eps "
                    "(times[-1] = eps), as for diffusers' grids that end at sigma = 0"
                    if float(end) == 0.0
                    else ""
                )
                raise ValueError(
                    f"the grid's {what} time is {float(end)!r}, but the solve's {what} time is "
                    f"{want!r} (T, or eps given to sample): the grid must run between them{hint}"
                )
        return _finish(t.to(**_opts(like)), t0, t1)

    def to_dict(self) -> dict:
        return {"grid": self.name, "times": self._t.tolist()}

    def __repr__(self) -> str:
        t = self._t.tolist()
        inner = ", ".join(f"{v:.6g}" for v in t) if len(t) <= 6 else f"{t[0]:.6g}, ..., {t[-1]:.6g}"
        return f"Times([{inner}], steps={self.steps})"


GRIDS = {g.name: g for g in (TimeUniform, TimeQuadratic, LogSNR, Karras)}


def as_grid(value, name: str = "grid") -> Grid:
    """A `Grid` from a grid object, a rule's name (`GRIDS`) or explicit times.

    Raises:
        ValueError: an unknown name (the valid ones listed) or bad times (see `Times`).
        TypeError: any other type.
    """
    if isinstance(value, Grid):
        return value
    if isinstance(value, str):
        if value not in GRIDS:
            import difflib

            near = difflib.get_close_matches(value.lower(), list(GRIDS), n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ValueError(
                f"{name} must be one of {sorted(GRIDS)}, a Grid or times, got {value!r}{hint}"
            )
        return GRIDS[value]()
    if isinstance(value, (torch.Tensor, list, tuple)):
        return Times(value)
    raise TypeError(
        f"{name} must be a Grid, one of {sorted(GRIDS)} or a tensor of times, got "
        f"{type(value).__name__}"
    )


def grid_from_dict(d: dict) -> Grid:
    """The grid that `Grid.to_dict` described.

    Raises:
        ValueError: not a grid description.
    """
    if not isinstance(d, dict) or "grid" not in d:
        raise ValueError(f"not a grid description (a dict with 'grid'): {d!r}")
    opts = {k: v for k, v in d.items() if k != "grid"}
    if d["grid"] == "times":
        return Times(opts["times"])
    if d["grid"] not in GRIDS:
        raise ValueError(f"unknown grid {d['grid']!r}; known: {sorted(GRIDS)} and 'times'")
    return GRIDS[d["grid"]](**opts)
