"""Models from other libraries as sdescore score functions, and sdescore models as theirs.

- `from_diffusers(unet, scheduler)`: a diffusers UNet (any `unet(x, timestep).sample`) with its
  DDPM-type scheduler as a `ScoreModel` on the scheduler's `DiscreteVPSDE` (ε, v or sample
  prediction); `from_diffusers_flow(net, scheduler)`: a flow-matching network with its
  `FlowMatchEulerDiscreteScheduler` as a `"velocity"` `ScoreModel` on `RectifiedFlowSDE`, and
  `flow_sampling_times` for the scheduler's (shifted) grid. Only `sdescore.interop.diffusers`
  may import diffusers, and only when given a scheduler *config* (a scheduler object is read by
  duck typing).
- `from_denoiser(D, sde)` / `as_denoiser(score_fn, sde)`: the EDM / k-diffusion convention
  $D(\\tilde x, \\tilde\\sigma)$, both ways, with no k-diffusion dependency.

See docs/interop.md ("bring your model").
"""

from .denoiser import Denoiser, DenoiserNet, as_denoiser, from_denoiser
from .diffusers import (
    PREDICTION_TYPES,
    FlowTimestepNet,
    TimestepNet,
    flow_sampling_times,
    from_diffusers,
    from_diffusers_flow,
    sde_from_scheduler,
)

__all__ = [
    "PREDICTION_TYPES",
    "Denoiser",
    "DenoiserNet",
    "FlowTimestepNet",
    "TimestepNet",
    "as_denoiser",
    "from_denoiser",
    "flow_sampling_times",
    "from_diffusers",
    "from_diffusers_flow",
    "sde_from_scheduler",
]
