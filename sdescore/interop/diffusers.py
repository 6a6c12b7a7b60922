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
dequantization=256, eps=model.net.min_time)` gives exact bits/dim (`eps` at the first training
time $1/N$, which such models require) and every sampler runs on it. A scheduler *object* is read by duck
typing (`alphas_cumprod`, `config.prediction_type`); only a scheduler *config* needs diffusers.

A diffusers *flow-matching* model (`FlowMatchEulerDiscreteScheduler`: Stable Diffusion 3, Flux,
...) is trained on $x_\sigma = (1 - \sigma)x_0 + \sigma\varepsilon$ to predict
$\varepsilon - x_0$ at timestep $1000\sigma$: that is `RectifiedFlowSDE` with time $t = \sigma$
and the `"velocity"` head (`from_diffusers_flow`). The scheduler's `shift`
($\sigma \mapsto s\sigma/(1 + (s - 1)\sigma)$), dynamic shifting and Karras/exponential/beta
sigmas change only the *sampling grid*, not the SDE: `flow_sampling_times` returns that grid as
sdescore times. diffusers' Euler step $x + (\sigma_{i+1} - \sigma_i)\hat u$ is exactly
DPM-Solver++(1) (DDIM) on this SDE: with $\alpha = 1 - t$, $\sigma = t$ its update
$\frac{\sigma_t}{\sigma_s}x + (\alpha_t - \frac{\sigma_t}{\sigma_s}\alpha_s)\hat x_0$, with
$\hat x_0 = x - s\hat u$, reduces to $x + (t - s)\hat u$.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from .._checks import check_callable, check_choice, check_int, check_real
from .._shapes import append_dims
from ..models.score_model import ScoreModel
from ..sdes.discrete import DiscreteVPSDE
from ..sdes.flow import RectifiedFlowSDE

__all__ = [
    "PREDICTION_TYPES",
    "FlowTimestepNet",
    "TimestepNet",
    "flow_sampling_times",
    "from_diffusers",
    "from_diffusers_flow",
    "sde_from_scheduler",
]

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
        # levels 0..255 dequantized onto [-1, 1]; eps: the first training time 1/N (required)
        res = sdescore.likelihood(
            model, images_uint8, dequantization=256, eps=model.net.min_time
        )
        res.bits_per_dim

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


# -- flow matching ---------------------------------------------------------------------------
def _flow_config(scheduler) -> Mapping:
    cfg = _config(scheduler)
    if not isinstance(cfg, Mapping) or "shift" not in cfg or "num_train_timesteps" not in cfg:
        raise TypeError(
            "scheduler must be a diffusers FlowMatchEulerDiscreteScheduler (or its config, with "
            f"'shift' and 'num_train_timesteps'), got {type(scheduler).__name__}"
        )
    if cfg.get("invert_sigmas", False):
        raise ValueError(
            "invert_sigmas=True (Mochi) runs time the other way round, x = sigma x0 + "
            "(1 - sigma) eps; it is not supported"
        )
    return cfg


class FlowTimestepNet(nn.Module):
    r"""A diffusers flow-matching network `net(x, timestep)` as an sdescore net `(x, t)`.

    Calls `net(x, t * timestep_scale)`: diffusers' flow schedulers hand the network
    `timestep = 1000 σ` (`num_train_timesteps` σ; Stable Diffusion 3), and time here is
    $t = \sigma$. Pipelines whose transformer rescales internally (Flux passes `timestep / 1000`)
    need `timestep_scale=1`. The output may be a tensor, have `.sample`, or be a tuple.

    Args:
        net: callable `net(x: (B, *D), timestep: (B,))`; bind other inputs (text embeddings)
            with a lambda.
        timestep_scale: the network's timestep per unit of $\sigma$, > 0.
    """

    def __init__(self, net, timestep_scale: float = 1000.0):
        super().__init__()
        check_callable("net", net, example="transformer(x, timestep)")
        self.net = net
        self.timestep_scale = check_real("timestep_scale", timestep_scale, positive=True)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.net(x, t * self.timestep_scale)
        if isinstance(out, tuple):
            out = out[0]
        return getattr(out, "sample", out)


def from_diffusers_flow(
    net, scheduler, *, T: float = 0.999, timestep_scale: float | None = None
) -> ScoreModel:
    r"""A `ScoreModel` on `RectifiedFlowSDE(T=T)` from a diffusers flow-matching network.

    Example (the SD3 transformer with its text conditioning bound)::

        sched = FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler")
        net = lambda x, k: transformer(x, encoder_hidden_states=c, pooled_projections=p,
                                       timestep=k).sample
        model = sdescore.interop.from_diffusers_flow(net, sched)
        pf = model.sde.probability_flow(model)
        latents = pf.sample(shape, method="dpm_solver", steps=20)

    Args:
        net: callable `net(x, timestep)` predicting the velocity $\varepsilon - x_0$.
        scheduler: a `FlowMatchEulerDiscreteScheduler` or its config (`shift` and
            `num_train_timesteps` are read; `shift` only matters for `flow_sampling_times`).
        T: end time of the SDE, < 1 (see `RectifiedFlowSDE` for why and what it costs).
        timestep_scale: default the scheduler's `num_train_timesteps`.

    Raises:
        TypeError: not a flow-matching scheduler (or config), `net` not callable.
        ValueError: `invert_sigmas=True`, a bad `T` or `timestep_scale`.
    """
    cfg = _flow_config(scheduler)
    scale = cfg["num_train_timesteps"] if timestep_scale is None else timestep_scale
    sde = RectifiedFlowSDE(T=T)
    return ScoreModel(FlowTimestepNet(net, scale), sde, "velocity")


def flow_sampling_times(
    scheduler, num_inference_steps: int, *, T: float = 0.999, mu: float | None = None
) -> torch.Tensor:
    r"""The scheduler's sampling grid as sdescore times `(num_inference_steps + 1,)`, float64.

    Runs `set_timesteps` on a copy of the scheduler (the caller's is left as it was) and reads
    its sigmas, shift, dynamic shifting and sigma conversions included: $t_i = \sigma_i$,
    decreasing, ending at 0 (diffusers' last step, to $\hat x_0$). Sigmas above `T` (diffusers
    starts at $\sigma = 1$) are clamped to `T`, where `RectifiedFlowSDE(T=T)` starts. A sampler
    ends at `eps > 0`: set `times[-1] = eps` before giving the grid to a solver object.

    Args:
        scheduler: a `FlowMatchEulerDiscreteScheduler` (a config is built into one; needs
            diffusers).
        num_inference_steps: steps, >= 1.
        T: the SDE's end time.
        mu: the resolution-dependent shift, for schedulers with `use_dynamic_shifting`.

    Raises:
        TypeError: not a flow-matching scheduler.
    """
    cfg = _flow_config(scheduler)
    num_inference_steps = check_int("num_inference_steps", num_inference_steps)
    if isinstance(scheduler, Mapping):
        options = {k: v for k, v in cfg.items() if not k.startswith("_")}
        scheduler = _import_diffusers().FlowMatchEulerDiscreteScheduler.from_config(options)
    else:
        scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(num_inference_steps, mu=mu)
    sigmas = torch.as_tensor(scheduler.sigmas, dtype=torch.float64).cpu()
    return sigmas.clamp(max=check_real("T", T, positive=True))
