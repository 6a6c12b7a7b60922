r"""diffusers models as sdescore score functions (the only module that imports diffusers).

A diffusers DDPM-type model is a network `unet(x, timestep).sample` trained on the integer
timesteps $k = 0..N-1$ of a scheduler's table $\bar\alpha_{k}$ (`scheduler.alphas_cumprod[k]`),
on data scaled to $[-1, 1]$, predicting one of (diffusers' `prediction_type`)

| diffusers | sdescore head | network output at $x_t = \alpha_t x_0 + \sigma_t\varepsilon$ |
|---|---|---|
| `"epsilon"` | `"eps"` | $\varepsilon$ (Ho et al. 2020) |
| `"v_prediction"` | `"v"` | $v = \alpha_t\varepsilon - \sigma_t x_0$ (Salimans & Ho 2022) |
| `"sample"` | `"x0"` | $x_0$ |

`from_diffusers` puts the table on the `DiscreteVPSDE` (timestep $k$ at $t = (k + 1)/N$, $\log\alpha$
linear in t between) and returns a `ScoreModel` with that head, so `sdescore.likelihood(model, x,
bins=256)` gives exact bits/dim and every sampler runs on it. A scheduler *object* is read by duck
typing (`alphas_cumprod`, `config.prediction_type`); only a scheduler *config* needs diffusers.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .._checks import check_callable, check_choice
from .._shapes import append_dims
from ..models.score_model import ScoreModel
from ..sdes.discrete import DiscreteVPSDE

__all__ = ["PREDICTION_TYPES", "TimestepNet", "from_diffusers", "sde_from_scheduler"]

# Timesteps this far below 0 (a fraction of one step) are rounding of t = 1/N, clamped to 0.
_ROUNDING = 1e-4
# diffusers' prediction_type -> ScoreModel parameterization
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


def _import_diffusers():
    try:
        import diffusers
    except ImportError as err:
        raise ImportError(
            "reading a diffusers scheduler config needs the optional dependency diffusers: "
            "pip install 'sdescore[diffusers]' (or pass the scheduler object itself, or "
            "DiscreteVPSDE(betas=...))"
        ) from err
    return diffusers


def _config(scheduler) -> Mapping:
    return scheduler if isinstance(scheduler, Mapping) else getattr(scheduler, "config", {})


def sde_from_scheduler(scheduler) -> DiscreteVPSDE:
    """The `DiscreteVPSDE` of a diffusers scheduler (DDPM, DDIM, DPM-Solver, ...) or its config.

    Args:
        scheduler: an object with an `alphas_cumprod` tensor `(N,)` (every diffusers scheduler
            built on a beta schedule), or a scheduler config (a dict, e.g. `scheduler.config` or
            the parsed `scheduler_config.json`; needs diffusers, which builds the betas from it
            exactly as at training time).

    Raises:
        TypeError: neither a scheduler with `alphas_cumprod` nor a config mapping.
        ImportError: a config was given and diffusers is not installed.
        ValueError: the table is not a valid DDPM schedule (see `DiscreteVPSDE`), e.g. zero
            terminal SNR.
    """
    if isinstance(scheduler, Mapping):
        cfg = {k: v for k, v in scheduler.items() if not k.startswith("_")}
        # DDPMScheduler reads every beta_schedule option the other schedulers share.
        scheduler = _import_diffusers().DDPMScheduler.from_config(cfg)
    acp = getattr(scheduler, "alphas_cumprod", None)
    if not isinstance(acp, torch.Tensor):
        raise TypeError(
            "scheduler must be a diffusers scheduler (with an alphas_cumprod tensor) or its "
            f"config dict, got {type(scheduler).__name__}"
        )
    return DiscreteVPSDE(alphas_cumprod=acp)


class TimestepNet(nn.Module):
    r"""A network trained on DDPM timesteps, `net(x, timestep)`, as an sdescore net `(x, t)`.

    Calls `net(x, t * N - 1)`: the integer timestep $k$ at the training times $t = (k+1)/N$,
    fractional between them (diffusers' sinusoidal embeddings accept any real timestep). The
    output may be a tensor, a diffusers output with `.sample`, or a tuple (`return_dict=False`).

    Times below the first training time $1/N$ (`min_time`; timestep $k < 0$) are refused: the
    network never saw less noise than at $k = 0$, and evaluating it at a negative timestep (or
    clamping to 0, which divides an $\varepsilon$ meant for $\sigma(1/N)$ by a smaller
    $\sigma(t)$) is an extrapolation with no error bound. On the CPU they raise `ValueError`; on
    an accelerator (no host sync) the output is NaN there, which the solvers report as a
    `NonFiniteError` naming the time. So solve from `eps = model.net.min_time` (docs/interop.md
    measures what that costs in bits/dim).

    Args:
        net: callable `net(x: (B, *D), timestep: (B,)) -> (B, *D)` (or `.sample`/tuple of it).
        sde: the `DiscreteVPSDE` of the net's training schedule.
    """

    def __init__(self, net, sde: DiscreteVPSDE):
        super().__init__()
        check_callable("net", net, example="unet(x, timestep)")
        if not isinstance(sde, DiscreteVPSDE):
            raise TypeError(f"sde must be a DiscreteVPSDE, got {type(sde).__name__}")
        self.net, self.sde = net, sde

    @property
    def min_time(self) -> float:
        """The first training time $t = 1/N$ (timestep 0): the network is refused below it."""
        return 1.0 / self.sde.num_timesteps

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        k = t * self.sde.num_timesteps - 1
        # Below timestep 0 the network was never trained (t = 0 would reach it as -1): refuse
        # rather than extrapolate. A 1e-4-step band absorbs the rounding of t = 1/N.
        below = k < -_ROUNDING
        if k.device.type == "cpu":
            if bool(below.any()):
                raise ValueError(
                    f"t = {t[below].min().item():.6g} lies below the first training time of this "
                    f"diffusers model, t = 1/N = {self.min_time:.6g} (timestep 0 of N = "
                    f"{self.sde.num_timesteps}): the network never saw less noise. Start or end "
                    f"the solve there: eps={self.min_time:.6g} (likelihood, elbo, samplers; "
                    "model.net.min_time)"
                )
            below = None
        out = self.net(x, k.clamp_min(0))
        if isinstance(out, tuple):
            out = out[0]
        out = getattr(out, "sample", out)
        if below is not None and isinstance(out, torch.Tensor):
            # On an accelerator, without a host sync: NaN where t is out of range, which every
            # solver reports (NonFiniteError naming the time) instead of using the value.
            out = torch.where(append_dims(below, out.ndim), torch.nan, out)
        return out


def from_diffusers(unet, scheduler, *, prediction_type: str | None = None) -> ScoreModel:
    """A `ScoreModel` from a diffusers UNet and its (training) scheduler.

    Example (no download needed for a local checkpoint directory)::

        unet = UNet2DModel.from_pretrained(path, subfolder="unet")
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        model = sdescore.interop.from_diffusers(unet, scheduler)
        sdescore.likelihood(model, images_uint8, bins=256).bits_per_dim  # data in [-1, 1]

    Args:
        unet: any callable `unet(x, timestep)` returning `(B, *D)` or an object with `.sample`
            (`UNet2DModel`, `UNet2DConditionModel` with fixed conditioning bound by a lambda).
        scheduler: a diffusers scheduler or its config (see `sde_from_scheduler`); its
            `alphas_cumprod` and `prediction_type` are those the model was trained with.
        prediction_type: `"epsilon"`, `"v_prediction"` or `"sample"`; default the scheduler's
            (`"epsilon"` if it has none).

    Returns:
        `ScoreModel(TimestepNet(unet, sde), sde, head)` with `sde = sde_from_scheduler(...)`.

    Raises:
        ValueError: an unknown prediction type. TypeError: see `sde_from_scheduler`.
    """
    sde = sde_from_scheduler(scheduler)
    if prediction_type is None:
        prediction_type = _config(scheduler).get("prediction_type", "epsilon")
    check_choice("prediction_type", prediction_type, tuple(PREDICTION_TYPES))
    return ScoreModel(TimestepNet(unet, sde), sde, PREDICTION_TYPES[prediction_type])
