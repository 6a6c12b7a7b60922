"""Save and load a `ScoreModel` safely: tensors and plain data only, read with `weights_only=True`.

A checkpoint holds the state dict, the parameterization, the SDE's class name and parameters,
and, for the library's own networks, the network's class and configuration. `torch.load` is
always called with `weights_only=True`, so a checkpoint file cannot execute code.

**SDEs:** `VPSDE`, `SubVPSDE`, `VESDE` and `RectifiedFlowSDE` are rebuilt from their saved parameters. A
`LinearSDE` (or any other SDE) is made of arbitrary callables that cannot be stored safely, so
it must be passed again at load time (`load_model(path, sde=...)`); otherwise loading raises.
When `sde` is passed for a checkpoint of a built-in SDE, it must match the saved one.

**Networks:** `MLPScoreNet`, `ConditionalMLPScoreNet`, `UNet` and `ConditionalUNet` are rebuilt
from their saved configuration; any other network must be passed at load time, constructed as it was when saved
(`load_model(path, net=...)`).

**Conditional models:** a `ConditionalScoreModel` is saved with its class, its number of classes
K and its null label (K), and loads back as a `ConditionalScoreModel` with the same labels; a
checkpoint of one kind never loads into a model (or a passed `net` configured for a number of
classes) of the other kind or with another K.

**Integrity:** every file carries a SHA-256 checksum of its content (tensors' dtype, shape and
bytes and the plain data, in a canonical order), verified on load, so a file altered in place
raises instead of loading other weights. Saves go to a temporary file that is renamed over the
target, so an interrupted save leaves the previous checkpoint intact and no temporary behind.

**Validate first:** a checkpoint is checked completely against the objects it will be loaded
into (keys, shapes, settings) before anything is copied, so a failed load changes nothing.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import sys
import warnings

import torch
from torch import nn

from ..sdes import SDE, VESDE, VPSDE, RectifiedFlowSDE, SubVPSDE
from .conditional import ConditionalMLPScoreNet, ConditionalScoreModel
from .mlp import MLPScoreNet
from .score_model import PARAMETERIZATIONS, ScoreModel
from .unet import ConditionalUNet, UNet

__all__ = ["load_model", "load_solver", "model_from_state", "model_state", "save_model"]
_BASELINE = ("baseline_mean", "baseline_std")
WEIGHTS = ("ema", "raw")

FORMAT = "sdescore.ScoreModel"
TRAINER_FORMAT = "sdescore.Trainer"
VERSION = 2  # 2: with a checksum
_SDES = {
    "VPSDE": (VPSDE, ("beta_min", "beta_max", "T")),
    "SubVPSDE": (SubVPSDE, ("beta_min", "beta_max", "T")),
    "VESDE": (VESDE, ("sigma_min", "sigma_max", "T")),
    "RectifiedFlowSDE": (RectifiedFlowSDE, ("sigma_min", "T", "prior_std")),
}
_NETS = {
    "MLPScoreNet": MLPScoreNet,
    "UNet": UNet,
    "ConditionalMLPScoreNet": ConditionalMLPScoreNet,
    "ConditionalUNet": ConditionalUNet,
}
_CONDITIONAL = "ConditionalScoreModel"


def _sde_state(sde: SDE) -> dict:
    name = type(sde).__name__
    if type(sde) is _SDES.get(name, (None,))[0]:
        return {"class": name, "params": {k: getattr(sde, k) for k in _SDES[name][1]}}
    return {"class": name, "params": None}


def _conditional_state(model: ScoreModel) -> dict | None:
    if not isinstance(model, ConditionalScoreModel):
        return None
    return {"class": _CONDITIONAL, "num_classes": model.num_classes, "null_label": model.null_label}


def _saved_classes(state: dict) -> int | None:
    """K of a saved `ConditionalScoreModel`, `None` for a plain `ScoreModel` (checked entry)."""
    cond = state.get("conditional")  # absent in files written before conditional models
    if cond is None:
        return None
    k = cond.get("num_classes") if isinstance(cond, dict) else None
    if (
        not isinstance(cond, dict)
        or cond.get("class") != _CONDITIONAL
        or not isinstance(k, int)
        or isinstance(k, bool)
        or k < 1
        or cond.get("null_label") != k
    ):
        raise ValueError(
            f"the checkpoint's conditional entry is invalid: expected {{'class': {_CONDITIONAL!r}, "
            f"'num_classes': K >= 1, 'null_label': K}}, got {cond!r}"
        )
    return k


def _kind(classes: int | None) -> str:
    if classes is None:
        return "an unconditional ScoreModel"
    return f"a ConditionalScoreModel with {classes} classes (null label {classes})"


def _check_net_classes(net, classes: int | None) -> None:
    """A library network records its number of classes (none for an unconditional one): it
    must be the checkpoint's. Other networks are checked by their weights' keys and shapes."""
    if type(net) not in _NETS.values():
        return
    have = net.config.get("num_classes")
    if have != classes:
        raise ValueError(
            f"the checkpoint holds {_kind(classes)}, but net is a {type(net).__name__} "
            + (f"built for {have} classes" if have is not None else "without labels")
        )


def _net_dtype(net) -> str | None:
    """The floating dtype of the network's parameters (the baseline's buffers keep their own:
    a baseline fitted to float64 data must not turn a float32 network into a float64 one)."""
    if not isinstance(net, nn.Module):
        return None
    floats = [p for p in net.state_dict().values() if p.is_floating_point()]
    return str(floats[0].dtype).removeprefix("torch.") if floats else None


def model_state(model: ScoreModel) -> dict:
    """Everything needed to rebuild `model`, as tensors and plain Python data."""
    if not isinstance(model, ScoreModel):
        raise TypeError(f"model must be a ScoreModel, got {type(model).__name__}")
    net = model.net
    known = type(net).__name__ in _NETS and type(net) is _NETS[type(net).__name__]
    return {
        "format": FORMAT,
        "version": VERSION,
        "sde": _sde_state(model.sde),
        "parameterization": model.parameterization,
        "scale_by_sigma": model.scale_by_sigma,
        "conditional": _conditional_state(model),
        "net": {
            "class": type(net).__name__ if known else None,
            "config": net.config if known else None,
        },
        "baseline_shape": list(model.baseline_mean.shape) if model.has_baseline else None,
        "dtype": _net_dtype(net),
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


def _check_header(state) -> None:
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"not an sdescore ScoreModel checkpoint (expected format {FORMAT!r})")
    if state.get("version") not in (1, VERSION):
        raise ValueError(
            f"unsupported checkpoint version {state.get('version')!r}, expected {VERSION}"
        )
    _check_entries(state)


def _invalid(key: str, expected: str, got) -> ValueError:
    got = "nothing (the entry is missing)" if got is _MISSING else repr(got)[:200]
    return ValueError(f"the checkpoint's {key!r} entry is invalid: expected {expected}, got {got}")


_MISSING = object()
_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _check_entries(state: dict) -> None:
    """Every entry `model_from_state` reads, with its type, before anything is built: a crafted
    or damaged file raises a `ValueError` naming the entry instead of a `KeyError` deep inside."""
    sde = state.get("sde", _MISSING)
    names = sorted(_SDES)
    if not isinstance(sde, dict) or not isinstance(sde.get("class"), str):
        raise _invalid("sde", "{'class': name, 'params': dict or None}", sde)
    params = sde.get("params", _MISSING)
    if params is not None:
        keys = _SDES[sde["class"]][1] if sde["class"] in _SDES else None
        if keys is None or not isinstance(params, dict) or set(params) != set(keys):
            raise _invalid(
                "sde", f"one of {names} with its parameters, or params None for another SDE", sde
            )
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in params.values()):
            raise _invalid("sde", f"numbers for {list(keys)}", sde)
    if state.get("parameterization", _MISSING) not in PARAMETERIZATIONS:
        got = state.get("parameterization", _MISSING)
        raise _invalid("parameterization", f"one of {PARAMETERIZATIONS}", got)
    if not isinstance(state.get("scale_by_sigma"), bool):
        raise _invalid("scale_by_sigma", "a bool", state.get("scale_by_sigma", _MISSING))
    net = state.get("net", _MISSING)
    if (
        not isinstance(net, dict)
        or not (net.get("class") is None or net.get("class") in _NETS)
        or not (net.get("class") is None or isinstance(net.get("config"), dict))
    ):
        raise _invalid(
            "net", f"{{'class': one of {sorted(_NETS)} or None, 'config': dict or None}}", net
        )
    sd = state.get("state_dict", _MISSING)
    if not isinstance(sd, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()
    ):
        raise _invalid("state_dict", "a dict of names to tensors", type(sd).__name__)
    shape = state.get("baseline_shape", _MISSING)
    if shape is not None and (
        not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape)
    ):
        raise _invalid("baseline_shape", "None or a list of sizes", shape)
    if state.get("dtype", _MISSING) is not None and state.get("dtype") not in _DTYPES:
        raise _invalid("dtype", f"None or one of {_DTYPES}", state.get("dtype", _MISSING))


def _check_weights_finite(state_dict: dict, what: str) -> None:
    """Refuse NaN/Inf weights: a model holding them answers NaN everywhere (one host sync each)."""
    bad = [
        k
        for k, v in state_dict.items()
        if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise ValueError(
            f"{what} non-finite values (NaN or Inf) in {len(bad)} tensor(s): {bad[:5]}"
            + (" ..." if len(bad) > 5 else "")
            + "; such a model returns NaN for every input (training diverged: resume from an "
            "earlier checkpoint, lower the learning rate or clip gradients)"
        )


def check_fits(saved: dict, module: nn.Module, what: str, *, ignore=()) -> None:
    """Raise a `ValueError` listing every key or shape in `saved` that `module` lacks.

    Args:
        saved: a state dict (name -> tensor).
        module: the module it is meant for.
        what: how the error names the checkpoint part ("the network", "the EMA").
        ignore: names checked elsewhere (the optional baseline buffers).
    """
    have = {k: v for k, v in module.state_dict().items() if k not in ignore}
    got = {k: v for k, v in saved.items() if k not in ignore}
    missing, extra = sorted(have.keys() - got.keys()), sorted(got.keys() - have.keys())
    shapes = [
        f"{k}: {tuple(got[k].shape)} saved, {tuple(v.shape)} here"
        for k, v in have.items()
        if k in got and (not torch.is_tensor(got[k]) or got[k].shape != v.shape)
    ]
    if missing or extra or shapes:
        parts = [f"missing {missing}"] * bool(missing) + [f"unexpected {extra}"] * bool(extra)
        raise ValueError(
            f"checkpoint does not fit the network ({what}): "
            + "; ".join(parts + [f"other shapes {shapes}"] * bool(shapes))
            + "; build it as it was when saved (same class, sizes and depth)"
        )


def check_model_state(state: dict, model: ScoreModel) -> None:
    """Check that `model_state`'s dictionary loads into `model` (nothing is modified)."""
    _check_header(state)
    classes = _saved_classes(state)
    have = model.num_classes if isinstance(model, ConditionalScoreModel) else None
    if classes != have:
        raise ValueError(f"the checkpoint holds {_kind(classes)}, but the model is {_kind(have)}")
    saved = (state["parameterization"], state["scale_by_sigma"])
    if saved != (model.parameterization, model.scale_by_sigma):
        raise ValueError(
            f"checkpoint parameterization {saved[0]!r} (scale_by_sigma={saved[1]}) does not "
            f"match the model's {model.parameterization!r} (scale_by_sigma={model.scale_by_sigma})"
        )
    _rebuild_sde(state["sde"], model.sde)
    check_fits(state["state_dict"], model, "the network", ignore=_BASELINE)
    _check_weights_finite(state["state_dict"], "the checkpoint holds")
    shape = state["baseline_shape"]
    sd = state["state_dict"]
    if shape is not None and any(
        k not in sd or not torch.is_tensor(sd[k]) or list(sd[k].shape) != shape for k in _BASELINE
    ):
        raise ValueError(f"checkpoint baseline does not have its recorded shape {shape}")


def load_model_state(model: ScoreModel, state_dict: dict) -> None:
    """Copy a checked state dict into `model`: the baseline is set (or removed) as saved."""
    if "baseline_mean" in state_dict:
        model.set_baseline(state_dict["baseline_mean"], state_dict["baseline_std"])
    else:
        model.baseline_mean = model.baseline_std = None
    model.load_state_dict(state_dict)


def _build_net(state: dict, state_dict: dict | None) -> nn.Module:
    """The saved library network, built only once its configuration is known to fit the saved
    weights: a crafted configuration (`hidden=10**7`) is first built on the meta device, which
    allocates nothing, and compared key by key and shape by shape."""
    name, config = state["net"]["class"], state["net"]["config"]
    if name is None:
        raise ValueError("the checkpoint's network is not a library network; pass it: net=...")
    try:
        with torch.device("meta"):
            probe = _NETS[name](**config)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"the checkpoint's {name} configuration {config!r} is invalid: {err}"
        ) from err
    saved = state["state_dict"] if state_dict is None else state_dict
    net_part = {k[4:]: v for k, v in saved.items() if k.startswith("net.")}
    check_fits(net_part, probe, "the network")
    return _NETS[name](**config)


def model_from_state(
    state: dict, *, net=None, sde=None, map_location=None, state_dict=None
) -> ScoreModel:
    """Rebuild a `ScoreModel` from `model_state`'s dictionary (see `load_model`).

    `state_dict` replaces the saved weights (the EMA's, from a training checkpoint). The whole
    state is checked before a caller's `net` is touched; its dtype is kept.
    """
    _check_header(state)
    classes = _saved_classes(state)
    sde = _rebuild_sde(state["sde"], sde)
    fresh = net is None
    if fresh:
        net = _build_net(state, state_dict)
    _check_net_classes(net, classes)
    options = dict(scale_by_sigma=state["scale_by_sigma"])
    if classes is None:
        model = ScoreModel(net, sde, state["parameterization"], **options)
    else:
        model = ConditionalScoreModel(
            net, sde, state["parameterization"], num_classes=classes, **options
        )
    if state_dict is not None:
        state = {**state, "state_dict": state_dict}
    check_model_state(state, model)
    saved_dtype = state["dtype"]
    if fresh and saved_dtype is not None:
        net.to(getattr(torch, saved_dtype))  # the baseline keeps its own saved dtype
    elif saved_dtype is not None:
        floats = (
            [p for p in net.state_dict().values() if p.is_floating_point()]
            if isinstance(net, nn.Module)
            else []
        )
        if floats and floats[0].dtype != getattr(torch, saved_dtype):
            warnings.warn(
                f"the checkpoint holds {saved_dtype} weights and net is {floats[0].dtype}: they "
                "are loaded in the net's dtype, so outputs are not bit-identical to the saved "
                f"model's (pass net.to(torch.{saved_dtype}) for that)",
                stacklevel=3,
            )
    load_model_state(model, state["state_dict"])
    if map_location is not None:
        model.to(map_location)
    return model


def save_model(model: ScoreModel, path, *, solver=None) -> None:
    """Write `model` (weights, SDE parameters, parameterization, baseline) to `path`, and with
    `solver` the sampler to use with it (a solver object, its time grid included, e.g. one
    fitted to this model; `load_solver` reads it back).

    Raises:
        TypeError: `model` is not a `ScoreModel`, or `solver` is not a solver object with a
            plain description (`Solver.to_dict`).
        ValueError: a weight or baseline holds NaN or Inf (nothing is written; a file already
            at `path` is kept).
        OSError: the file could not be written (the previous file is kept).
    """
    from ..solvers.base import Solver

    state = model_state(model)
    if solver is not None:
        if not isinstance(solver, Solver):
            raise TypeError(
                f"solver must be an sdescore.Solver object (e.g. sdescore.UniPC(), with its "
                f"options and grid), got {type(solver).__name__} {solver!r}"
            )
        state["solver"] = solver.to_dict()
    _check_weights_finite(state["state_dict"], "refusing to save a model with")
    atomic_save(state, path)


def load_solver(path, *, map_location=None):
    """The solver object saved beside a model by `save_model(..., solver=...)`, or `None` when
    the file holds none. The file is verified as by `load_model`.

    Raises:
        ValueError: a corrupt or altered file, or a solver description that is not one.
    """
    from ..solvers.table import solver_from_dict

    state = safe_load(path, map_location)
    if isinstance(state, dict) and state.get("format") == TRAINER_FORMAT:
        state = state.get("model")
    saved = state.get("solver") if isinstance(state, dict) else None
    return None if saved is None else solver_from_dict(saved)


def _digest(obj) -> str:
    """SHA-256 of `obj` (nested dicts, lists, tuples, tensors, plain scalars) in a canonical order."""
    h = hashlib.sha256()

    def walk(o):
        if torch.is_tensor(o):
            t = o.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(o, dict):
            h.update(f"D{len(o)}".encode())
            for k in sorted(o, key=lambda k: (type(k).__name__, repr(k))):
                walk(k)
                walk(o[k])
        elif isinstance(o, (list, tuple)):
            h.update(f"{type(o).__name__[0]}{len(o)}".encode())
            for v in o:
                walk(v)
        elif o is None or isinstance(o, (bool, int, float, str, torch.dtype, torch.device)):
            h.update(f"{type(o).__name__}:{o!r};".encode())
        else:
            raise TypeError(f"cannot checkpoint a {type(o).__name__}: tensors and plain data only")

    walk(obj)
    return h.hexdigest()


def atomic_save(obj: dict, path) -> None:
    """Write `obj` plus its checksum to `path` atomically.

    `torch.save` writes to `path.tmp<pid>`, which is renamed over `path` only when complete, so a
    crash never leaves half a file and the previous checkpoint survives. A failed or interrupted
    write removes its temporary file; temporaries left by killed processes (which cannot clean
    up) are removed at the next successful save to the same path.

    Raises:
        OSError: the file could not be written (disk full, permissions, ...), including the
            `RuntimeError` that torch raises for a failed write.
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    obj = {**obj, "checksum": _digest(obj)}
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException as err:  # also KeyboardInterrupt: never leave the temporary behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, RuntimeError):  # torch's stream writer reports I/O failures this way
            raise OSError(f"could not write the checkpoint {path!r}: {err}") from err
        raise
    _remove_stale_temporaries(path)


def _remove_stale_temporaries(path: str) -> None:
    # Only temporaries whose writer no longer exists (POSIX: signal 0 probes a pid without
    # touching it; on Windows os.kill would terminate, so nothing is removed there).
    if sys.platform == "win32":
        return
    for tmp in glob.glob(glob.escape(path) + ".tmp*"):
        pid = tmp[len(path) + 4 :]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        except OSError:  # exists but is not ours (EPERM): leave it
            pass


def _check_map_location(map_location) -> None:
    """A device given as `map_location` must exist here: torch would otherwise fail inside the
    unpickler, where its error reads like a corrupt file."""
    if map_location is None or isinstance(map_location, dict) or callable(map_location):
        return
    if not isinstance(map_location, (str, torch.device)):
        raise TypeError(
            "map_location must be a device (a str or torch.device), a dict or a callable, got "
            f"{type(map_location).__name__}"
        )
    try:
        torch.empty(0, device=map_location)
    except (RuntimeError, AssertionError) as err:  # unknown name, no CUDA, index out of range
        raise ValueError(
            f"map_location={map_location!r} is not a device available on this machine "
            f"(CUDA available: {torch.cuda.is_available()}); pass map_location='cpu'. ({err})"
        ) from err


def safe_load(path, map_location=None):
    """`torch.load(weights_only=True)` and verify the checksum.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: an unreadable file, a `map_location` device this machine lacks, or an
            sdescore checkpoint without a checksum or failing it.
    """
    _check_map_location(map_location)
    name = os.fspath(path)
    if not os.path.isfile(name):
        what = "a directory" if os.path.isdir(name) else "no such file"
        raise FileNotFoundError(f"no checkpoint at {name!r}: {what}")
    try:
        state = torch.load(name, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling, truncated zip, disallowed global: all "corrupt"
        raise ValueError(
            f"{name!r} is not a readable sdescore checkpoint: it is corrupt, truncated, "
            f"or holds more than tensors and plain data ({type(err).__name__})"
        ) from err
    if isinstance(state, dict) and state.get("format") in (FORMAT, TRAINER_FORMAT):
        state = dict(state)
        saved = state.pop("checksum", None)
        # Whatever its version says: the version is inside the file, so a file whose checksum
        # was removed and version lowered would otherwise load unverified.
        if saved is None:
            raise ValueError(
                f"{name!r} has no checksum, so its content cannot be verified: it was altered, or "
                "written by a development version of sdescore older than checksums; it is not "
                "loaded (docs/training.md, 'Checkpoints', says how to re-admit a file you wrote)"
            )
        if saved != _digest(state):
            raise ValueError(
                f"{name!r} fails its checksum: the file was altered or damaged after "
                "it was written; use another copy"
            )
    return state


def load_model(path, *, net=None, sde=None, map_location=None, weights="ema") -> ScoreModel:
    """Load a `ScoreModel` saved by `save_model`, or the model in a `train` checkpoint.

    A saved `ConditionalScoreModel` comes back as a `ConditionalScoreModel` with the same
    number of classes and null label.

    Outputs are bit-identical to the saved model's (in the saved dtype). The model is returned
    in **eval mode** (dropout off), ready for sampling and likelihoods; call `.train()` to train
    it further. The file is verified (checksum, keys, shapes, settings) before anything is
    loaded, so a failed load leaves a passed `net` unchanged.

    Args:
        path: a file written by `save_model`, or a training checkpoint written by `train` /
            `Trainer.save` (its `checkpoint_path`).
        net: the network, required when it is not an `MLPScoreNet` or `UNet`. Its weights are
            overwritten in place, in its own dtype (a warning says when that differs from the
            saved dtype); it is set to eval mode.
        sde: the SDE, required for a `LinearSDE` (or custom SDE); checked against the file otherwise.
        map_location: device to load onto.
        weights: for a training checkpoint, `"ema"` (default) loads the EMA weights, the ones
            `TrainResult.ema_model` holds (the raw weights when training kept no EMA); `"raw"`
            loads the last optimizer weights (`TrainResult.model`). A `save_model` file holds
            one set of weights, the saved model's, which the default loads; `"raw"` is refused
            for it (the file cannot tell raw from EMA weights).

    Raises:
        ValueError: for a corrupt or altered file, a file that is not a ScoreModel or training
            checkpoint, a missing or mismatched SDE, weights that do not fit the network, a
            `net` built for another number of classes (or none) than the saved model's, or
            `weights="raw"` for a `save_model` file.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {list(WEIGHTS)}, got {weights!r}")
    state = safe_load(path, map_location)
    state_dict = None
    if isinstance(state, dict) and state.get("format") == TRAINER_FORMAT:
        ema = state.get("ema")
        if weights == "ema" and ema is not None:
            state_dict = ema["model"]
        state = state["model"]
    elif weights == "raw" and isinstance(state, dict) and state.get("format") == FORMAT:
        raise ValueError(
            f"weights='raw' selects the last optimizer weights of a training checkpoint, but "
            f"{os.fspath(path)!r} is a save_model file, which holds one set of weights (those "
            "of the model that was saved, raw or EMA); load it with the default weights='ema'"
        )
    model = model_from_state(
        state, net=net, sde=sde, map_location=map_location, state_dict=state_dict
    )
    return model.eval()
