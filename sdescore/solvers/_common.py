"""Plumbing shared by every sampler: the result type, score counting, time grids, Tweedie.

Nothing here knows a particular algorithm; solvers receive a `CountedScore` and a `Recorder` and
return a plain tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_output_shape
from .._shapes import append_dims
from ..sdes.base import SDE
from ..sdes.gaussian import GaussianSDE

__all__ = [
    "CountedScore",
    "Recorder",
    "SampleResult",
    "finish",
    "noise_like",
    "progress_bar",
    "time_grid",
    "tweedie",
]


@dataclass(frozen=True)
class SampleResult:
    """What a sampler returns with `return_info=True`.

    Attributes:
        samples: the final states `(B, *D)`.
        nfe: the number of score evaluations actually made (batched calls of `score_fn`).
        trajectory: with `trajectory=True`, the states visited, `(S, B, *D)`, first the start
            state and last the state before any final denoising; otherwise `None`.
        times: the forward times `(S,)` of the `trajectory` states, or `None`.
    """

    samples: torch.Tensor
    nfe: int
    trajectory: torch.Tensor | None = None
    times: torch.Tensor | None = None


class CountedScore:
    """Wrap a score function: check every output's shape and count the calls.

    The shape check compares metadata only (no device synchronisation). With a tqdm bar, each
    call advances it by one, so progress is measured in score evaluations for every method.
    """

    def __init__(self, score_fn, *, progress=None):
        self.score_fn = score_fn
        self.nfe = 0
        self.progress = progress

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = check_output_shape(self.score_fn(x, t), x, "score_fn(x, t)")
        self.nfe += 1
        if self.progress is not None:
            self.progress.update(1)
        return out


class Recorder:
    """Collect `(t, x)` pairs when a trajectory was asked for; a no-op otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.states: list[torch.Tensor] = []
        self.times: list[torch.Tensor] = []

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> None:
        if self.enabled:
            self.states.append(x.detach())
            self.times.append(t.detach().reshape(()))

    def stacked(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.enabled or not self.states:
            return None, None
        return torch.stack(self.states), torch.stack(self.times)


def time_grid(T: float, eps: float, steps: int, like: torch.Tensor) -> torch.Tensor:
    """Decreasing uniform grid `(steps + 1,)` from `T` to `eps`, on `like`'s device and dtype."""
    return torch.linspace(T, eps, steps + 1, device=like.device, dtype=like.dtype)


def batch_time(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Expand a 0-d time to the per-example `(B,)` that score functions receive."""
    return t.reshape(1).expand(x.shape[0])


def noise_like(x: torch.Tensor, generator) -> torch.Tensor:
    """Standard normal noise shaped like `x`, drawn from `generator` on `x`'s device and dtype."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def tweedie(sde: SDE, score, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""Tweedie's denoiser $E[x_0 \mid x_t] = (x_t + \sigma(t)^2 \nabla \log p_t(x_t)) / \alpha(t)$.

    Efron (2011); used as the final denoising step of Song et al. (2021), App. G. One score call.

    Args:
        sde: a `GaussianSDE` (the formula needs its kernel).
        score: a score function `(x, t) -> (B, *D)`.
        x: states `(B, *D)` at the 0-d forward time `t`.
    """
    if not isinstance(sde, GaussianSDE):
        raise TypeError(
            "denoise=True needs a GaussianSDE (VPSDE, SubVPSDE, VESDE, LinearSDE) for Tweedie's "
            f"formula, got {type(sde).__name__}"
        )
    tb = batch_time(t, x)
    s = score(x, tb)
    alpha, sigma = sde.alpha(tb), sde.sigma(tb)
    return (x + append_dims(sigma.square(), x.ndim) * s) / append_dims(alpha, x.ndim)


def progress_bar(enabled: bool, total: int | None, desc: str):
    """A tqdm bar counting score evaluations, or `None`."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="nfe")


def finish(x: torch.Tensor, score: CountedScore, record: Recorder, *, return_info: bool):
    """Close the progress bar; return `x` or a `SampleResult`."""
    if score.progress is not None:
        score.progress.close()
    if not return_info:
        return x
    trajectory, times = record.stacked()
    return SampleResult(samples=x, nfe=score.nfe, trajectory=trajectory, times=times)
