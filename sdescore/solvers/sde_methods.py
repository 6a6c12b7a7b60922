"""Solver objects for the reverse SDE: the native predictors, `PC` with a `Langevin` corrector,
`AnnealedLangevin`, `GottaGoFast` and `TorchSDE`.

Each holds its validated options and hands the solve to the algorithm module (`native.py`,
`langevin.py`, `adaptive.py`, `torchsde.py`); see `base.Solver` for the interface.
"""

from __future__ import annotations

from typing import ClassVar, final

import torch

from .._checks import check_bool, check_choice, check_int
from ._common import DEFAULT_MAX_STEPS, time_grid
from .adaptive import sample_gotta_go_fast
from .base import Problem, Solver
from .langevin import annealing_levels, sample_annealed_langevin, sample_pc
from .native import PREDICTORS, sample_predictor
from .options import check_positive
from .sde_dpm_solver import default_order, sample_sde_dpm_solver
from .torchsde import TORCHSDE_METHODS, sample_torchsde

__all__ = [
    "AnnealedLangevin",
    "Ancestral",
    "EulerMaruyama",
    "GottaGoFast",
    "Langevin",
    "PC",
    "ReverseDiffusion",
    "SDEDPMSolver",
    "TorchSDE",
]


def _grid(p: Problem) -> torch.Tensor:
    return time_grid(p.t0, p.t1, p.steps, p.x)


class _Predictor(Solver):
    """A fixed-step predictor of `native.py`, `steps` steps (default 1000), one call each."""

    process: ClassVar[str] = "sde"
    default_steps: ClassVar[int] = 1000
    supports_inpaint: ClassVar[bool] = True
    name: ClassVar[str]

    def integrate(self, p: Problem) -> torch.Tensor:
        return sample_predictor(
            p.sde,
            p.score,
            p.x,
            _grid(p),
            predictor=self.name,
            final_noise=p.final_noise,
            generator=p.generator,
            record=p.record,
            project=p.project,
        )


@final
class EulerMaruyama(_Predictor):
    r"""Euler–Maruyama on the reverse SDE, $x - [f - g^2 s]\,h + g\sqrt h\,z$ (Song et al. 2021,
    eq. (6)); any SDE."""

    name: ClassVar[str] = "euler_maruyama"


@final
class ReverseDiffusion(_Predictor):
    """Reverse diffusion (Song et al. 2021, eq. (46)); a `GaussianSDE`."""

    name: ClassVar[str] = "reverse_diffusion"


@final
class Ancestral(_Predictor):
    """Ancestral sampling, DDPM / SMLD (Ho et al. 2020, eq. (7); Song et al. 2021, eq. (47));
    a `GaussianSDE`."""

    name: ClassVar[str] = "ancestral"


_PREDICTOR_CLASSES = {c.name: c for c in (EulerMaruyama, ReverseDiffusion, Ancestral)}


@final
class SDEDPMSolver(Solver):
    r"""SDE-DPM-Solver++ (Lu et al. 2022b): exponential integrator of the reverse SDE.

    One score call per step; the linear part is integrated exactly and the noise comes from the
    caller's generator (see `sdescore.solvers.sde_dpm_solver`). Needs a `GaussianSDE`. The last step is noise-free
    unless `denoise="none"`.

    Args:
        order: 1 (SDE-DPM-Solver++1), 2 (SDE-DPM-Solver++(2M); the first step is first
            order) or 3 (SDE-DPM-Solver++(3M), Gonzalez et al. 2023; the first two steps of
            order 1 and 2). Default: chosen by budget (`plan`): 2 below 20 calls, 3 from 20.
        eta: stochasticity in [0, 1]: 1 (default) samples the reverse SDE, 0 is the
            probability-flow ODE's DPM-Solver++ (deterministic), in between a mixture.
        schedule: step boundaries `"time_quadratic"` (default, uniform in $\sqrt t$),
            `"logsnr"`, `"time_uniform"` or `"karras"` (Karras et al. 2022, eq. (5), $\rho = 7$).
        damped: order 3 only: `True` halves the second-derivative term, as k-diffusion's
            `sample_dpmpp_3m_sde` (order 2 at eta = 0); `False` (default) the exact term (order
            3 at eta = 0).

    Raises:
        ValueError, TypeError: a bad option, named in the message.
    """

    process: ClassVar[str] = "sde"
    default_steps: ClassVar[int] = 100

    def __init__(
        self,
        *,
        order: int | None = None,
        eta: float = 1.0,
        schedule: str = "time_quadratic",
        damped: bool = False,
    ):
        if order is not None and (order not in (1, 2, 3) or isinstance(order, bool)):
            raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
        self.order = order
        self.damped = check_bool("damped", damped)
        if damped and order != 3:
            raise ValueError(f"damped applies to order=3 only, got damped=True with order={order}")
        eta = float(eta) if isinstance(eta, (int, float)) and not isinstance(eta, bool) else eta
        if not isinstance(eta, float) or not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
        self.eta = eta
        self.schedule = check_choice(
            "schedule", schedule, ("logsnr", "time_quadratic", "time_uniform", "karras")
        )

    def plan(self, steps: int) -> int:
        """The order used for a budget of `steps` calls: `order`, or if unset
        `sde_dpm_solver.default_order(steps)` (2 below 20 calls, 3 from 20)."""
        return default_order(steps) if self.order is None else self.order

    def integrate(self, p: Problem) -> torch.Tensor:
        return sample_sde_dpm_solver(
            p.sde, p.score, p.x, p.t0, p.t1, p.steps, schedule=self.schedule,
            order=self.plan(p.steps),
            eta=self.eta, final_noise=p.final_noise, generator=p.generator, record=p.record,
            damped=self.damped,
        )  # fmt: skip


@final
class Langevin:
    r"""The Langevin corrector of `PC` (Song et al. 2021, Algs. 4–5).

    Args:
        snr: the signal-to-noise ratio $r$; the step is $2\alpha (r\sigma_t)^2$ (default 0.16).
        steps: Langevin steps per time step (default 1), one score call each.
    """

    def __init__(self, *, snr: float = 0.16, steps: int = 1):
        self.snr = check_positive("snr", snr)
        self.steps = check_int("corrector steps", steps)

    def __repr__(self) -> str:
        return f"Langevin(snr={self.snr!r}, steps={self.steps!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Langevin) and (self.snr, self.steps) == (other.snr, other.steps)

    def __hash__(self) -> int:
        return hash((self.snr, self.steps))


@final
class PC(Solver):
    """Predictor–corrector sampling (Song et al. 2021, Alg. 1): a predictor step, then Langevin.

    `steps` on `sample` is the number of time steps (default 1000); each costs
    `1 + corrector.steps` score calls.

    Args:
        predictor: `EulerMaruyama()`, `ReverseDiffusion()` (default) or `Ancestral()`, or its
            name.
        corrector: a `Langevin` corrector (default `Langevin(snr=0.16, steps=1)`).
    """

    process: ClassVar[str] = "sde"
    default_steps: ClassVar[int] = 1000
    supports_inpaint: ClassVar[bool] = True

    def __init__(self, *, predictor="reverse_diffusion", corrector: Langevin | None = None):
        if isinstance(predictor, _Predictor):
            predictor = predictor.name
        self.predictor = check_choice("predictor", predictor, PREDICTORS)
        corrector = Langevin() if corrector is None else corrector
        if not isinstance(corrector, Langevin):
            raise TypeError(
                f"corrector must be an sdescore.Langevin(snr=..., steps=...), got "
                f"{type(corrector).__name__}"
            )
        self.corrector = corrector

    def score_calls(self, steps: int | None) -> int | None:
        return None if steps is None else steps * (1 + self.corrector.steps)

    def integrate(self, p: Problem) -> torch.Tensor:
        return sample_pc(
            p.sde,
            p.score,
            p.x,
            _grid(p),
            predictor=self.predictor,
            snr=self.corrector.snr,
            corrector_steps=self.corrector.steps,
            final_noise=p.final_noise,
            generator=p.generator,
            record=p.record,
            project=p.project,
        )


@final
class AnnealedLangevin(Solver):
    r"""Annealed Langevin dynamics (NCSN; Song & Ermon 2019, Alg. 1) on a `GaussianSDE`.

    `steps` on `sample` is the number of noise levels (default 1000).

    Args:
        step_size: $\epsilon$ in $\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2$; default
            $0.2\,\sigma_L^2$ (their 2e-5 at $\sigma_L = 0.01$), stable for any schedule.
        corrector_steps: Langevin steps per noise level (default 1).
    """

    process: ClassVar[str] = "sde"
    default_steps: ClassVar[int] = 1000
    supports_inpaint: ClassVar[bool] = True

    def __init__(self, *, step_size: float | None = None, corrector_steps: int = 1):
        self.step_size = None if step_size is None else check_positive("step_size", step_size)
        self.corrector_steps = check_int("corrector_steps", corrector_steps)

    def score_calls(self, steps: int | None) -> int | None:
        return None if steps is None else steps * self.corrector_steps

    def integrate(self, p: Problem) -> torch.Tensor:
        levels = annealing_levels(p.sde, p.t1, p.steps, p.x)  # checks that sde has a kernel
        step_size = self.step_size
        if step_size is None:
            # Song & Ermon's eps = 2e-5 was tuned for sigma_L = 0.01; rescaled to this SDE's
            # sigma_L it keeps alpha_i / sigma_i^2 = 0.2, stable whatever the schedule.
            step_size = 0.2 * float(p.sde.sigma(torch.tensor(p.t1, dtype=torch.float64))) ** 2
        return sample_annealed_langevin(
            p.sde,
            p.score,
            p.x,
            levels,
            step_size=step_size,
            corrector_steps=self.corrector_steps,
            final_noise=p.final_noise,
            generator=p.generator,
            record=p.record,
            project=p.project,
        )


@final
class GottaGoFast(Solver):
    """Adaptive reverse-SDE solver of Jolicoeur-Martineau et al. (2021); no `steps`.

    Args:
        rtol: relative tolerance (default 1e-2).
        atol: absolute tolerance (default 1e-2).
        dt: the initial step (default 0.01 T).
        max_steps: the most steps before a `MaxStepsError` (default 10 000).
    """

    process: ClassVar[str] = "sde"

    def __init__(
        self,
        *,
        rtol: float = 1e-2,
        atol: float = 1e-2,
        dt: float | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
    ):
        self.rtol, self.atol = check_positive("rtol", rtol), check_positive("atol", atol)
        self.dt = None if dt is None else check_positive("dt", dt)
        self.max_steps = check_int("max_steps", max_steps)

    def score_calls(self, steps: int | None) -> int | None:
        return None

    def integrate(self, p: Problem) -> torch.Tensor:
        return sample_gotta_go_fast(
            p.sde,
            p.score,
            p.x,
            t0=p.t0,
            t1=p.t1,
            rtol=self.rtol,
            atol=self.atol,
            dt=self.dt,
            max_steps=self.max_steps,
            generator=p.generator,
            record=p.record,
        )


@final
class TorchSDE(Solver):
    """A torchsde method on the reverse SDE (`"euler"`, `"milstein"`, `"srk"`, `"midpoint"`,
    `"heun"`, `"euler_heun"`, `"log_ode"`), Brownian motion seeded from the caller's generator.

    `steps` on `sample` sets `dt = (T - eps) / steps` (default 1000) unless `dt` is given.

    Args:
        method: the torchsde method (default `"euler"`).
        dt: the step (or the initial step when `adaptive`).
        adaptive: torchsde's adaptive step-size control (default `False`).
        rtol: relative tolerance of adaptive stepping (default 1e-5).
        atol: absolute tolerance of adaptive stepping (default 1e-4).
        max_steps: with `adaptive=True`, the most steps before a `MaxStepsError` (default
            10 000); setting it without `adaptive=True` is an error.
    """

    process: ClassVar[str] = "sde"
    default_steps: ClassVar[int] = 1000

    def __init__(
        self,
        method: str = "euler",
        *,
        dt: float | None = None,
        adaptive: bool = False,
        rtol: float = 1e-5,
        atol: float = 1e-4,
        max_steps: int | None = None,
    ):
        self.method = check_choice("method", method, TORCHSDE_METHODS)
        self.dt = None if dt is None else check_positive("dt", dt)
        self.adaptive = check_bool("adaptive", adaptive)
        self.rtol, self.atol = check_positive("rtol", rtol), check_positive("atol", atol)
        if max_steps is not None and not self.adaptive:
            raise ValueError(
                f"max_steps bounds adaptive stepping; with method {method!r} it needs "
                f"adaptive=True, got max_steps={max_steps!r} with adaptive=False"
            )
        self.max_steps = check_int(
            "max_steps", DEFAULT_MAX_STEPS if max_steps is None else max_steps
        )

    def score_calls(self, steps: int | None) -> int | None:
        return None

    def integrate(self, p: Problem) -> torch.Tensor:
        ts = _grid(p)
        dt = (p.t0 - p.t1) / p.steps if self.dt is None else self.dt
        return sample_torchsde(
            p.sde,
            p.score,
            p.x,
            ts if p.record.enabled else ts[[0, -1]],
            method=self.method,
            dt=dt,
            adaptive=self.adaptive,
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
            generator=p.generator,
            record=p.record,
        )
