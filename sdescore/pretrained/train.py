"""Retrain a pretrained model from scratch: `python -m sdescore.pretrained.train NAME`.

Runs the model's recipe (`sdescore.pretrained.recipes.RECIPES`) and writes the EMA weights, in
float16 (the shipped files, half the size; the baseline stays float32 and `load` returns
float32), with `save_model` to `--out` (default: the
current directory, `NAME.pt`), and a JSON record of the run beside it (steps, seconds, seed,
threads, final loss). `--into-package` writes into the installed package's weights folder
instead, replacing the shipped file (for maintainers).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from .recipes import RECIPES

__all__ = ["main", "train_recipe"]


def _half(model):
    """A copy of `model` with its network's weights in float16 (the baseline stays float32)."""
    model = copy.deepcopy(model)
    model.net.half()
    return model


def train_recipe(name: str, *, steps: int | None = None, progress: bool = True, snapshots=()):
    """Train the recipe `name`; returns `(ema model in float32, record dict)`.

    `snapshots`: `{step: path}`; the EMA model at that step is written there (float16), and the
    record gives the wall time at which it was reached.
    """
    from .. import label_dropout_loss, save_model, train

    recipe = RECIPES[name]
    torch.manual_seed(recipe.seed)  # network initialisation
    model = recipe.build()
    data, labels, data_options = recipe.data()
    options = dict(recipe.options)
    if labels is not None:
        p_uncond = options.pop("p_uncond")
        options.update(labels=labels, loss=label_dropout_loss, loss_kwargs={"p_uncond": p_uncond})
    steps = recipe.steps if steps is None else steps
    t0 = time.perf_counter()
    reached = {}

    def snapshot(trainer):
        if trainer.step in snapshots:
            reached[trainer.step] = round(time.perf_counter() - t0, 1)
            save_model(_half(trainer.ema_model), snapshots[trainer.step])

    result = train(
        model,
        data,
        steps=steps,
        seed=recipe.seed,
        progress=progress,
        callback=snapshot if snapshots else None,
        **data_options,
        **options,
    )
    record = {
        "name": name,
        "steps": result.steps,
        "seconds": round(time.perf_counter() - t0, 1),
        "seed": recipe.seed,
        "threads": torch.get_num_threads(),
        "final_loss": float(result.losses[-100:].mean()),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "snapshot_seconds": {str(k): v for k, v in reached.items()},
    }
    return result.ema_model.eval(), record


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("name", choices=sorted(RECIPES))
    p.add_argument("--out", default=".", help="folder for NAME.pt and NAME.train.json")
    p.add_argument("--into-package", action="store_true", help="replace the shipped weights")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--snapshot", type=int, action="append", default=[], help="also write the EMA at step N"
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from .. import save_model

    out = Path(__file__).parent / "weights" if args.into_package else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    snaps = {n: out / f"{args.name}.step{n}.pt" for n in args.snapshot}
    model, record = train_recipe(args.name, steps=args.steps, snapshots=snaps)
    save_model(_half(model), out / f"{args.name}.pt")
    (out / f"{args.name}.train.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(f"wrote {out / (args.name + '.pt')}")


if __name__ == "__main__":
    main()
