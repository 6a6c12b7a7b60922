"""Measure a pretrained model's card numbers: `python -m sdescore.pretrained.card NAME`.

For the digits models, on the fixed test split (450 images, `sdescore.toy.digits_data`):

* bits/dim through the PF ODE on one uniform dequantization draw (seed 0), with Hutchinson
  probes (the estimator's standard error is printed beside it), and the same with the density
  floor of `floored_bits_per_dim` (a mixture with the uniform density, weight 1e-3);
* the importance-weighted PF-ODE bound over S = 4 dequantization draws, and the ELBO bound;
* FID-digits of 450 PF-ODE samples (the default sampler, `"auto"`) at 10/20/50/100 calls
  against the test images, and its floor (450 real training digits).

For the toy model: the test NLL (exact trace) of 4096 fresh points against the data's exact
log-density. Writes `NAME.card.json` into `--out` and prints it; `--weights PATH` measures a
file other than the shipped one (e.g. one written by `sdescore.pretrained.train`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from .recipes import DIGITS_BINS, DIGITS_RANGE, digits_levels

__all__ = ["digits_card", "floored_bits_per_dim", "main", "toy_card"]

_LOG_W = math.log((DIGITS_RANGE[1] - DIGITS_RANGE[0]) / DIGITS_BINS)  # log bin width


def _levels_bpd(log_prob: torch.Tensor, dim: int) -> torch.Tensor:
    """Bits/dim of the 17 levels from the density of their dequantized points (nats)."""
    from ..dequantization import bits_per_dim

    return bits_per_dim(log_prob.double() + dim * _LOG_W, dim)


def floored_bits_per_dim(log_prob: torch.Tensor, dim: int, *, weight: float = 1e-3) -> torch.Tensor:
    r"""Bits/dim of the 17-level digits under the mixture $(1 - w)\,p + w\,u$ of the model's
    density $p$ (`log_prob`, nats, of the dequantized points) and the uniform density $u$ on
    $[-1, 1]^d$: no image costs more than $\log_2 17 - \log_2(w) / d$ bits/dim (4.24 for d = 64
    and $w = 10^{-3}$), and a typical one at most $-\log_2(1 - w)/d$ more ($2 \cdot 10^{-5}$).

    The mixture is a density in its own right, so its dequantized bound is as valid as the
    model's (Theis et al. 2016); it keeps an atypical image's cost bounded instead of dropping
    the image.
    """
    log_u = -dim * math.log(DIGITS_RANGE[1] - DIGITS_RANGE[0])
    lp = log_prob.double()
    mix = torch.logaddexp(lp + math.log1p(-weight), torch.full_like(lp, log_u + math.log(weight)))
    return _levels_bpd(mix, dim)


def _mean_se(v: torch.Tensor) -> dict:
    v = v.double()
    return {
        "mean": round(v.mean().item(), 4),
        "se": round((v.std() / len(v) ** 0.5).item(), 4),
        "median": round(v.median().item(), 4),
        "max": round(v.max().item(), 3),
    }


def digits_card(model, *, quick: bool = False, probes: int = 8, seed: int = 0) -> dict:
    """The card numbers of a digits model (see the module docstring) with `probes` Hutchinson
    probes per image; `quick` uses 64 test images, 2 probes and 64 samples (for tests)."""
    import sdescore
    from sdescore.dequantization import dequantize

    conditional = isinstance(model, sdescore.ConditionalScoreModel)
    score = model.conditioned(model.null_label) if conditional else model
    test, _ = digits_levels("test")
    train, _ = digits_levels("train")
    n = 64 if quick else len(test)
    test = test[:n]
    gen = torch.Generator().manual_seed(seed)
    y = dequantize(test, DIGITS_BINS, DIGITS_RANGE, generator=gen)[0]
    card: dict = {"test_images": n}
    t0 = time.perf_counter()
    probes = 2 if quick else probes
    lik = sdescore.likelihood(
        score, y, sde=model.sde, estimator=sdescore.Hutchinson(probes=probes), generator=gen
    )
    d = y[0].numel()
    bpd = _levels_bpd(lik.log_prob, d)
    card["pf_ode_bits_per_dim"] = _mean_se(bpd)
    card["pf_ode_probe_stderr_bits_per_dim"] = round(
        (lik.log_prob_stderr.double() ** 2).mean().sqrt().item() / (d * math.log(2)) / n**0.5, 5
    )
    card["pf_ode_calls"] = lik.nfe
    card["pf_ode_probes"] = probes
    card["worst_images"] = [
        {"index": int(i), "bits_per_dim": round(bpd[i].item(), 2)} for i in bpd.argsort()[-3:]
    ]
    card["pf_ode_floored_bits_per_dim"] = _mean_se(floored_bits_per_dim(lik.log_prob, d))
    card["pf_ode_seconds"] = round(time.perf_counter() - t0, 1)
    iw = sdescore.likelihood(
        score,
        test,
        sde=model.sde,
        dequantization=sdescore.Dequantization(DIGITS_BINS, data_range=DIGITS_RANGE, samples=4),
        estimator=sdescore.Hutchinson(probes=2),
        generator=gen,
    )
    card["pf_ode_iw_s4_bits_per_dim"] = _mean_se(iw.bits_per_dim)
    bound = sdescore.elbo(score, y, sde=model.sde, samples=8 if quick else 64, generator=gen)
    elbo_bpd = _levels_bpd(-bound.nll_bound, d)
    card["elbo_bits_per_dim"] = _mean_se(elbo_bpd)
    card["fid_digits"] = _fid_rows(model, score, test, train, 64 if quick else n, seed)
    return card


def _fid_rows(model, score, test, train, n, seed) -> dict:
    import sdescore

    try:
        from sdescore.metrics import fid_digits
    except ImportError as err:  # pragma: no cover - the metrics extra
        return {"skipped": str(err)}
    real = test / 8.0 - 1.0
    ref = (train / 8.0 - 1.0)[
        torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]
    ]
    rows = {"floor": round(fid_digits(ref, real).value, 3), "sampler": "auto (PF ODE)"}
    g = torch.Generator().manual_seed(seed + 1)
    ode = model.sde.probability_flow(score)
    with torch.no_grad():
        for calls in (10, 20, 50, 100):
            x = ode.sample((n, 1, 8, 8), steps=calls, generator=g)
            pix = sdescore.quantize(x.float(), DIGITS_BINS, DIGITS_RANGE, out_of_range="clamp")
            pix = pix.float() / 8.0 - 1.0
            rows[str(calls)] = round(fid_digits(pix, real).value, 3)
    return rows


def toy_card(model, *, quick: bool = False, seed: int = 0) -> dict:
    """Test NLL (nats, exact trace) of fresh eight-Gaussians points and its gap to the exact
    log-density of the data."""
    import sdescore
    from sdescore.toy import eight_gaussians

    exact = eight_gaussians()
    x = exact.sample(512 if quick else 4096, generator=torch.Generator().manual_seed(seed + 7))
    m64 = model.double()
    lik = sdescore.likelihood(m64, x.double(), estimator="exact")
    nll = -lik.log_prob
    gap = nll - (-exact.log_prob(x.double()))
    return {
        "test_points": len(x),
        "test_nll_nats": _mean_se(nll),
        "gap_to_exact_nats": _mean_se(gap),
        "calls": lik.nfe,
    }


def main(argv=None) -> None:
    import sdescore

    from . import load
    from .recipes import RECIPES

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("name", choices=sorted(RECIPES))
    p.add_argument("--weights", default=None, help="a model file (default: the shipped one)")
    p.add_argument("--out", default=".", help="folder for NAME.card.json")
    p.add_argument("--quick", action="store_true", help="a small subset (seconds)")
    p.add_argument("--probes", type=int, default=8, help="Hutchinson probes per image (8)")
    args = p.parse_args(argv)
    if args.weights is None:
        model = load(args.name)
    else:
        model = sdescore.load_model(args.weights).float().eval()
    t0 = time.perf_counter()
    card = (
        toy_card(model, quick=args.quick)
        if args.name == "eight_gaussians"
        else digits_card(model, quick=args.quick, probes=args.probes)
    )
    card["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
