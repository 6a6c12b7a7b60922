"""Score models that ship inside the package: ready to sample, score and guide, offline.

    import sdescore
    sdescore.pretrained.list_pretrained()       # {"digits8": "8x8 digits ...", ...}
    model = sdescore.pretrained.load("digits8")  # a ScoreModel, eval mode, float32, on CPU
    x = model.sde.probability_flow(model).sample((16, 1, 8, 8), steps=20)

The weights are package data (float16 files, under 2 MB in all) read with `load_model`'s
checked path (`torch.load(weights_only=True)`, a SHA-256 checksum, keys and shapes): nothing is
downloaded. Each model's recipe, the command that retrains it from scratch, and its measured
numbers are in docs/pretrained.md; `sdescore.pretrained.recipes` holds the recipes.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from .recipes import DIGITS_BINS, DIGITS_RANGE, RECIPES

__all__ = ["DIGITS_BINS", "DIGITS_RANGE", "list_pretrained", "load", "weights_path"]

_WEIGHTS = Path(__file__).parent / "weights"


def list_pretrained() -> dict[str, str]:
    """The models that ship, `{name: one-line description}`, in a fixed order."""
    return {name: recipe.description for name, recipe in RECIPES.items()}


def weights_path(name: str) -> Path:
    """The file of the shipped model `name` (inside the installed package).

    Raises:
        TypeError: `name` is not a string.
        ValueError: no model of that name ships (the message lists those that do).
    """
    if not isinstance(name, str) or name.endswith((".pt", ".pth")):
        what = type(name).__name__ if not isinstance(name, str) else f"the file name {name!r}"
        raise TypeError(
            f"name must be a str, one of {list(RECIPES)}, got {what}; to load a model file "
            "(e.g. one written by python -m sdescore.pretrained.train), use sdescore.load_model(path)"
        )
    if name not in RECIPES:
        near = difflib.get_close_matches(name, list(RECIPES), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(
            f"name must be one of the shipped models {list(RECIPES)}, got {name!r}{hint}"
        )
    return _WEIGHTS / f"{name}.pt"


def load(name: str, *, map_location=None):
    """The shipped model `name`: a `ScoreModel` (a `ConditionalScoreModel` for `"digits8-cond"`)
    in eval mode, float32, with its SDE as `model.sde`.

    Args:
        name: one of `list_pretrained()`.
        map_location: the device to put it on, anything `torch.device` takes (`"cpu"`,
            `"cuda"`, `"cuda:1"`, a `torch.device`); default CPU.

    Returns:
        A fresh model on every call (changing one never changes another or the file).

    Raises:
        TypeError, ValueError: an unknown name (the message lists the shipped ones), a path
            given as the name (use `sdescore.load_model`), or a `map_location` this machine
            lacks (e.g. `"cuda"` without CUDA).
        FileNotFoundError: the package was installed without its weights.
        ValueError: a damaged or altered weights file (checksum, keys or shapes), as `load_model`.
    """
    from ..models import load_model

    path = weights_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"the weights of {name!r} are missing from the installed package ({path}); "
            f"reinstall sdescore, or retrain them: python -m sdescore.pretrained.train {name} "
            "--into-package"
        )
    return load_model(path, map_location=map_location).float().eval()
