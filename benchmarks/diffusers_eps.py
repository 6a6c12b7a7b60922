"""Benchmark: a diffusers-type model below its first training time (issue 25, docs/interop.md).

With the exact eps-network of a sharp 16-D mixture (8 components at random 8-bit levels, std
0.004) under `DiscreteVPSDE.linear(1000)`, 64 dequantized points (bins=256):
closed-form bits/dim of the model's density at eps = 1e-5, 1e-4 and 1/N (what starting at the
first training time costs), and the PF-ODE bits/dim at eps = 1e-5 of the exact score against the
score with the network's timestep clamped to 0 below 1/N (what clamping would have cost).

Run:  python benchmarks/diffusers_eps.py      (about 15 s on a CPU)
"""

import math

import torch

import sdescore
from sdescore import DiscreteVPSDE
from sdescore.dequantization import dequantize
from sdescore.toy import GaussianMixture

torch.manual_seed(0)
F = torch.float64
N, d, bins = 1000, 16, 256
sde = DiscreteVPSDE.linear(N)
w = 2 / (bins - 1)
# image-like: 8 components at random bin centres, std 0.004 (as benchmarks/likelihood.py)
levels = torch.randint(0, bins, (8, d))
means = -1 + levels.to(F) * w
data = GaussianMixture(means, torch.full((8,), 0.004, dtype=F))
g = torch.Generator().manual_seed(1)
x = data.sample(64, generator=g, dtype=F)
k = ((x + 1) / w).round().clamp(0, bins - 1)
y, log_w = dequantize(k, bins, (-1.0, 1.0), generator=g, dtype=F)


def bpd(logp):
    return (-(logp + d * log_w) / (d * math.log(2))).mean().item()


for eps in (1e-5, 1e-4, 1.0 / N):
    print(f"closed form, eps={eps:g}: {bpd(data.marginal_log_prob(y, eps, sde)):.4f} bits/dim")


# clamping: the oracle eps-network evaluated at timestep max(k, 0)
class Clamped:
    def __call__(self, x, t):
        tc = t.clamp_min(1.0 / N)
        s = sde.sigma(tc)[:, None]
        eps_hat = -s * data.marginal_score(x, tc, sde)
        return -eps_hat / sde.sigma(t)[:, None]


exact = data.score_fn(sde)
kw = dict(sde=sde, estimator="exact", eps=1e-5, rtol=1e-4, atol=1e-4)
r_exact = sdescore.likelihood(exact, y, **kw)
r_clamp = sdescore.likelihood(Clamped(), y, **kw)
print(f"ODE exact score eps=1e-5: {bpd(r_exact.log_prob):.4f} (nfe {r_exact.nfe})")
print(f"ODE clamped timestep eps=1e-5: {bpd(r_clamp.log_prob):.4f} (nfe {r_clamp.nfe})")
