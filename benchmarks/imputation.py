"""Imputation benchmark: bias against the exact conditional Gaussian versus cost (issue 13).

    OPENBLAS_NUM_THREADS=1 python benchmarks/imputation.py [--n 20000] [--quick]

Data: a 2-D Gaussian, mean (0.5, -1), unit variances, correlation 0.8; $x_1 = 1.5$ known, so the
exact $x_2 \\mid x_1$ is N(-0.20, 0.36). VP SDE, exact score, float64, end time 1e-3, one seed.
Each row prints the mean and variance of the imputed $x_2$ with their bias against the closed
form and the standard error of each estimate, the score calls (forward passes), the backward
passes through the score, and the wall time on one thread.

Rows:
* `replace`: `Inpainting(method="replace")`, Song et al. (2021), App. I, with reverse diffusion
  or PC (Langevin corrector steps on the joint, then the known part redrawn; candidate (c)).
* `repaint U`: resampling of Lugmayr et al. (2022) with jump length 1, written here on the
  library's reverse-diffusion step (not offered by the library): after each step and
  replacement, re-noise with the forward transition back to $t_i$ and redo the step, U times.
* `reconstruction`: the conditional term with Ho et al. (2022, Sec. 3.1)'s isotropic covariance
  $C = \\sigma^2/\\alpha^2 I$ and weight 1, written here as a score wrapper (not offered).
* `tweedie`: `Inpainting(method="tweedie")`, the same term with Tweedie's covariance.
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

import sdescore  # noqa: E402
from sdescore.solvers import Inpainting  # noqa: E402
from sdescore.solvers.native import Predictor, StepCoefficients  # noqa: E402
from sdescore.toy import gaussian  # noqa: E402

F64 = torch.float64
RHO, X1 = 0.8, 1.5
MEAN = torch.tensor([0.5, -1.0], dtype=F64)
OBS, MASK = torch.tensor([X1, 0.0], dtype=F64), torch.tensor([True, False])
EXACT_MEAN, EXACT_VAR = MEAN[1].item() + RHO * (X1 - MEAN[0].item()), 1 - RHO**2


class Counted:
    """Count forward calls of a score, and the backward passes through it (via a hook)."""

    def __init__(self, fn):
        self.fn, self.calls, self.backward = fn, 0, 0

    def __call__(self, x, t):
        self.calls += 1
        out = self.fn(x, t)
        if out.requires_grad:
            out.register_hook(self._count)
        return out

    def _count(self, grad):
        self.backward += 1


class Reconstruction:
    """Ho et al. (2022) reconstruction guidance on the unknown part, C = sigma^2/alpha^2 I."""

    def __init__(self, score, sde):
        self.score, self.sde = score, sde

    def __call__(self, x, t):
        alpha, sigma = self.sde.alpha(t)[:, None], self.sde.sigma(t)[:, None]
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            s = self.score(xg, t)
            x0 = (xg + sigma**2 * s) / alpha
            r = torch.where(MASK, OBS - x0.detach(), 0.0) * alpha**2 / sigma**2
            (g,) = torch.autograd.grad(x0, xg, r)
        return (s + torch.where(MASK, 0.0, g)).detach()


def repaint(sde, score, n, steps, resample, generator):
    """Reverse diffusion with replacement and RePaint resampling (jump length 1)."""
    x = sde.prior_sampling((n, 2), generator=generator, dtype=F64)
    ts = torch.linspace(sde.T, 1e-3, steps + 1, dtype=F64)
    proj = Inpainting(OBS, MASK).bind(sde, x, generator)
    c = StepCoefficients(sde, ts)
    step = Predictor("reverse_diffusion", sde, score, c, n)
    a, G = c.log_a.exp().tolist(), c.G2.sqrt().tolist()
    x = proj(x, ts[0])
    for i in range(steps):
        for u in range(resample):
            last = i == steps - 1 and u == resample - 1
            z = None if last else torch.randn(x.shape, generator=generator, dtype=F64)
            new = proj(step(x, i, z), ts[i + 1])
            if u < resample - 1:  # forward transition t_{i+1} -> t_i, then redo the step
                x = a[i] * new + G[i] * torch.randn(x.shape, generator=generator, dtype=F64)
            else:
                x = new
    return proj.finish(x)


def run(name, n, fn):
    sde = sdescore.VPSDE()
    data = gaussian(MEAN, covariance=torch.tensor([[1.0, RHO], [RHO, 1.0]], dtype=F64))
    score = Counted(data.score_fn(sde))
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    x2 = fn(sde, score, g)[:, 1]
    wall = time.perf_counter() - start
    m, v = x2.mean().item(), x2.var().item()
    se_m, se_v = math.sqrt(v / n), v * math.sqrt(2 / (n - 1))
    print(
        f"| {name:<28} | {m:+.3f} | {m - EXACT_MEAN:+.3f} ± {se_m:.3f} | {v:.3f} | "
        f"{v - EXACT_VAR:+.3f} ± {se_v:.3f} | {score.calls:>5} | {score.backward:>5} | "
        f"{wall:5.1f} |"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="samples per row")
    parser.add_argument("--quick", action="store_true", help="2000 samples, a few rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = 2000 if args.quick else args.n

    def lib(solver, steps, inpaint="replace"):
        def fn(sde, score, g):
            return sde.reverse(score).sample(
                (n, 2), steps=steps, generator=g, dtype=F64,
                method=Inpainting(OBS, MASK, method=inpaint, solver=solver),
            )  # fmt: skip

        return fn

    def rp(steps, resample):
        return lambda sde, score, g: repaint(sde, score, n, steps, resample, g)

    def recon(steps):
        def fn(sde, score, g):
            wrapped = Reconstruction(score, sde)
            return sde.reverse(wrapped).sample(
                (n, 2), steps=steps, generator=g, dtype=F64,
                method=Inpainting(OBS, MASK, solver="reverse_diffusion"),
            )  # fmt: skip

        return fn

    rows = [
        ("replace, RD 200", lib("reverse_diffusion", 200)),
        ("replace, RD 1000", lib("reverse_diffusion", 1000)),
        ("replace, PC 200 (1 corr.)", lib("pc", 200)),
        ("replace, PC 200 (5 corr.)", lib(sdescore.PC(corrector=sdescore.Langevin(steps=5)), 200)),
        ("repaint U=5, RD 40", rp(40, 5)),
        ("repaint U=5, RD 200", rp(200, 5)),
        ("repaint U=20, RD 100", rp(100, 20)),
        ("reconstruction, RD 200", recon(200)),
        ("tweedie, RD 20", lib("reverse_diffusion", 20, "tweedie")),
        ("tweedie, RD 50", lib("reverse_diffusion", 50, "tweedie")),
        ("tweedie, RD 200", lib("reverse_diffusion", 200, "tweedie")),
        ("tweedie, EM 200", lib("euler_maruyama", 200, "tweedie")),
        ("tweedie, PC 200 (1 corr.)", lib("pc", 200, "tweedie")),
    ]
    if args.quick:
        rows = [rows[0], rows[4], rows[7], rows[10]]
    print(
        f"exact x2 | x1 = {X1}: mean {EXACT_MEAN:+.3f}, variance {EXACT_VAR:.3f}; {n} samples, "
        "VP, float64, one thread\n"
    )
    print("| method | mean | bias ± SE | var | bias ± SE | score calls | backward | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, fn in rows:
        run(name, n, fn)


if __name__ == "__main__":
    main()
