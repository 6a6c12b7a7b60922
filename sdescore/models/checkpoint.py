"""Save and load a `ScoreModel` safely: tensors and plain data only, read with `weights_only=True`.

A checkpoint holds the state dict, the parameterization, the SDE's class name and parameters,
and, for the library's own networks, the network's class and configuration. `torch.load` is
always called with `weights_only=True`, so a checkpoint file cannot execute code.

**SDEs:** `VPSDE`, `SubVPSDE` and `VESDE` are rebuilt from their saved parameters. A
`LinearSDE` (or any other SDE) is made of arbitrary callables that cannot be stored safely, so
it must be passed again at load time (`load_model(path, sde=...)`); otherwise loading raises.
When `sde` is passed for a checkpoint of a built-in SDE, it must match the saved one.

**Networks:** `MLPScoreNet` and `UNet` are rebuilt from their saved configuration; any other
network must be passed at load time, constructed as it was when saved (`load_model(path, net=...)`).
"""

from __future__ import annotations

import os

import torch

from ..sdes import SDE, VESDE, VPSDE, SubVPSDE
from .mlp import MLPScoreNet
from .score_model import ScoreModel
from .unet import UNet

__all__ = ["load_model", "model_from_state", "model_state", "save_model"]

FORMAT = "sdescore.ScoreModel"
VERSION = 1
_SDES = {
    "VPSDE": (VPSDE, ("beta_min", "beta_max", "T")),
    "SubVPSDE": (SubVPSDE, ("beta_min", "beta_max", "T")),
    "VESDE": (VESDE, ("sigma_min", "sigma_max", "T")),
}
_NETS = {"MLPScoreNet": MLPScoreNet, "UNet": UNet}


def _sde_state(sde: SDE) -> dict:
    name = type(sde).__name__
    if type(sde) is _SDES.get(name, (None,))[0]:
        return {"class": name, "params": {k: getattr(sde, k) for k in _SDES[name][1]}}
    return {"class": name, "params": None}


def model_state(model: ScoreModel) -> dict:
    """Everything needed to rebuild `model`, as tensors and plain Python data."""
    if not isinstance(model, ScoreModel):
        raise TypeError(f"model must be a ScoreModel, got {type(model).__name__}")
    net = model.net
    known = type(net).__name__ in _NETS and type(net) is _NETS[type(net).__name__]
    floats = [p for p in model.state_dict().values() if p.is_floating_point()]
    return {
        "format": FORMAT,
        "version": VERSION,
        "sde": _sde_state(model.sde),
        "parameterization": model.parameterization,
        "scale_by_sigma": model.scale_by_sigma,
        "net": {
            "class": type(net).__name__ if known else None,
            "config": net.config if known else None,
        },
        "baseline_shape": list(model.baseline_mean.shape) if model.has_baseline else None,
        "dtype": str(floats[0].dtype).removeprefix("torch.") if floats else None,
        "state_dict": model.state_dict(),
    }


def _rebuild_sde(saved: dict, sde):
    name, params = saved["class"], saved["params"]
    if sde is not None:
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be an sdescore.SDE, got {type(sde).__name__}")
        if params is not None and (
            type(sde).__name__ != name or _sde_state(sde)["params"] != params
        ):
            raise ValueError(f"sde {sde!r} does not match the checkpoint's {name}({params})")
        return sde
    if params is None:
        raise ValueError(
            f"the checkpoint was saved with a {name}, whose callables cannot be stored safely; "
            "pass the same SDE again: load_model(path, sde=...)"
        )
    return _SDES[name][0](**params)


def model_from_state(state: dict, *, net=None, sde=None, map_location=None) -> ScoreModel:
    """Rebuild a `ScoreModel` from `model_state`'s dictionary (see `load_model`)."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"not an sdescore ScoreModel checkpoint (expected format {FORMAT!r})")
    if state.get("version") != VERSION:
        raise ValueError(
            f"unsupported checkpoint version {state.get('version')!r}, expected {VERSION}"
        )
    sde = _rebuild_sde(state["sde"], sde)
    if net is None:
        name = state["net"]["class"]
        if name is None:
            raise ValueError("the checkpoint's network is not a library network; pass it: net=...")
        net = _NETS[name](**state["net"]["config"])
    model = ScoreModel(net, sde, state["parameterization"], scale_by_sigma=state["scale_by_sigma"])
    if state["baseline_shape"] is not None:
        shape = tuple(state["baseline_shape"])
        model.set_baseline(torch.zeros(shape), torch.ones(shape))
    if state["dtype"] is not None:
        model.to(getattr(torch, state["dtype"]))
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint does not fit the network: {err}") from err
    if map_location is not None:
        model.to(map_location)
    return model


def save_model(model: ScoreModel, path) -> None:
    """Write `model` (weights, SDE parameters, parameterization, baseline) to `path`."""
    atomic_save(model_state(model), path)


def atomic_save(obj, path) -> None:
    """`torch.save` to a temporary file, then rename, so a crash never leaves half a file."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def safe_load(path, map_location=None):
    """`torch.load(weights_only=True)`, turning an unreadable file into a clear `ValueError`."""
    try:
        return torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # unpickling, truncated zip, disallowed global: all "corrupt"
        raise ValueError(
            f"{os.fspath(path)!r} is not a readable sdescore checkpoint: it is corrupt, truncated, "
            f"or holds more than tensors and plain data ({type(err).__name__})"
        ) from err


def load_model(path, *, net=None, sde=None, map_location=None) -> ScoreModel:
    """Load a `ScoreModel` saved by `save_model`; outputs are bit-identical to the saved model's.

    Args:
        path: the checkpoint file.
        net: the network, required when it is not an `MLPScoreNet` or `UNet`.
        sde: the SDE, required for a `LinearSDE` (or custom SDE); checked against the file otherwise.
        map_location: device to load onto.

    Raises:
        ValueError: for a corrupt file, a file that is not a ScoreModel checkpoint, a missing or
            mismatched SDE, or weights that do not fit the network.
    """
    return model_from_state(
        safe_load(path, map_location), net=net, sde=sde, map_location=map_location
    )
