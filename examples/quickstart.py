"""Quickstart: a forward SDE, its exact marginals, and the reverse-time SDE and PF ODE derived from it.

Run: python examples/quickstart.py
"""

import torch

import sdescore

torch.manual_seed(0)
sde = sdescore.VPSDE(0.1, 20.0)
data = sdescore.toy.eight_gaussians(radius=4.0, std=0.5)  # a mixture with an exact score at every t
score_fn = data.score_fn(sde)

x0 = data.sample(4096, dtype=torch.float64)
t = torch.full((x0.shape[0],), 0.5, dtype=torch.float64)
mean, std = sde.marginal_prob(x0, t)
xt, noise, _ = sde.perturb(x0, t)
print(f"VP at t=0.5: alpha={sde.alpha(0.5).item():.6f} sigma={std[0].item():.6f}")
print(f"mean log p_t of perturbed samples: {data.marginal_log_prob(xt, t, sde).mean().item():.4f}")

reverse = sde.reverse(score_fn)  # dx = [f - g^2 score] dt + g dw, on the forward clock
flow = sde.probability_flow(score_fn)  # dx/dt = f - 1/2 g^2 score
print(
    "reverse drift",
    tuple(reverse.drift(xt, t).shape),
    "PF-ODE drift",
    tuple(flow.drift(xt, t).shape),
)

# A plain Euler walk of the PF ODE from the prior back to t = 1e-3 with the exact score.
steps = 200
ts = torch.linspace(sde.T, 1e-3, steps + 1, dtype=torch.float64)
x = sde.prior_sampling((4096, 2), dtype=torch.float64)
for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
    x = x + (t1 - t0) * flow.drift(x, t0.item())
gap = data.log_prob(x).mean() - data.log_prob(data.sample(4096, dtype=torch.float64)).mean()
print(
    f"Euler PF ODE, {steps} steps: mean log p0(samples) - mean log p0(exact samples) = {gap.item():+.4f} nats"
)
