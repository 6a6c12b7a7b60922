"""Train the digits feature network and write the weights shipped with sdescore.

    python -m sdescore.metrics.train_digits_features [--out PATH] [--epochs 40] [--seed 0]

Trains `DigitsFeatureNet` on the 1,347 training digits (Adam, cross-entropy, random one-pixel
shifts as augmentation), prints the held-out accuracy on the 450 test digits and the time, and
saves the float32 state dict (about 0.3 MB) with `torch.save`, to be read back with
`torch.load(weights_only=True)`. Takes well under a minute on one CPU core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .digits import _WEIGHTS, DigitsFeatureNet, digits_data


def _shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Random translation by up to one pixel (zero = background -1 padding): digits are not
    # centred identically, and a shift-tolerant net gives features that track shape, not position.
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    i, j = torch.randint(0, 3, (2,), generator=generator).tolist()
    return padded[:, :, i : i + 8, j : j + 8]


def accuracy(net: DigitsFeatureNet, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of `x: (N, 1, 8, 8)` classified as `y: (N,)`."""
    with torch.no_grad():
        return (net.logits(x).argmax(1) == y).double().mean().item()


def train(*, epochs: int = 40, batch_size: int = 64, lr: float = 2e-3, seed: int = 0):
    """Train a fresh `DigitsFeatureNet`; returns `(net, test_accuracy, seconds)`."""
    g = torch.Generator().manual_seed(seed)
    x, y = digits_data("train")
    xt, yt = digits_data("test")
    net = DigitsFeatureNet()
    with torch.no_grad():  # seeded initialisation, independent of the global RNG
        for p in net.parameters():
            bound = 1.0 / max(1, p[0].numel()) ** 0.5 if p.ndim > 1 else 0.05
            p.uniform_(-bound, bound, generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    start = time.perf_counter()
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(y), generator=g)
        for k in range(0, len(y), batch_size):
            idx = perm[k : k + batch_size]
            loss = F.cross_entropy(net.logits(_shift(x[idx], g)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    return net, accuracy(net, xt, yt), time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name(_WEIGHTS))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # Dropout draws from the global RNG; seed it here, in the script, never in the library.
    torch.manual_seed(args.seed)
    net, acc, seconds = train(epochs=args.epochs, seed=args.seed)
    x, y = digits_data("train")
    print(f"train accuracy    {accuracy(net, x, y):.4f}")
    print(f"held-out accuracy {acc:.4f}  (450 test digits)")
    print(f"training time     {seconds:.1f} s")
    torch.save({k: v.detach().float().contiguous() for k, v in net.state_dict().items()}, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
