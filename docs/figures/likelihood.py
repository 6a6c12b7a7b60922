"""Regenerate docs/figures/likelihood.png: how the PF ODE turns a score into log p.

    python docs/figures/likelihood.py        # a few seconds on one CPU thread

Eight Gaussians under VPSDE(0.1, 20) with the exact score, so every quantity has a closed form.
Left: along the probability-flow trajectory of a few data points, the exact marginal log-density
$\\log p_t(x(t))$ (lines) and what the ODE gives for it, $\\log p_\\varepsilon(x) - \\int_\\varepsilon^t
\\nabla\\cdot v\\,ds$ (dots, one `sdescore.likelihood` solve ending at each t); dashed, the prior's
$\\log\\pi(x(t))$, which matches only near T: that is why the prior term is evaluated at T.
Right: per point, `likelihood`'s log p against the exact $\\log p_\\varepsilon(x)$, with the exact
trace and with Hutchinson's estimator (1 and 8 Rademacher probes).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import sdescore  # noqa: E402

torch.set_num_threads(1)
data = sdescore.toy.eight_gaussians()
eps, f64 = 1e-3, torch.float64
g = torch.Generator().manual_seed(0)

# Left: log p along PF-ODE time. A VPSDE with end time t has the same beta(s) for s <= t, so a
# likelihood solve with it ends at x(t) and returns delta_log_prob = int_eps^t div v ds.
x = data.sample(5, generator=g, dtype=f64)
sde = sdescore.VPSDE(0.1, 20.0)
log_p0 = data.marginal_log_prob(x, eps, sde)
times = torch.logspace(-2.7, 0, 20, dtype=f64).tolist()
exact, ode, prior = [], [], []
for t in times:
    sde_t = sdescore.VPSDE(0.1, 20.0, T=t)
    res = sdescore.likelihood(data.score_fn(sde_t), x, sde=sde_t, estimator="exact", eps=eps)
    exact.append(data.marginal_log_prob(res.latent, t, sde))
    ode.append(log_p0 - res.delta_log_prob)
    prior.append(sde.prior_logp(res.latent))
exact, ode, prior = (torch.stack(v, 1) for v in (exact, ode, prior))

# Right: per point, PF ODE (exact trace, Hutchinson 1 and 8 probes) against the exact log p_eps.
pts = data.sample(256, generator=g, dtype=f64)
truth = data.marginal_log_prob(pts, eps, sde)
score = data.score_fn(sde)
estimates = {
    "exact trace": sdescore.likelihood(score, pts, sde=sde, estimator="exact", eps=eps),
    "Hutchinson, 1 probe": sdescore.likelihood(score, pts, sde=sde, eps=eps, generator=g),
    "Hutchinson, 8 probes": sdescore.likelihood(
        score, pts, sde=sde, eps=eps, probes=8, generator=g
    ),
}

fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
ax = axes[0]
for i in range(len(x)):
    color = f"C{i}"
    ax.plot(times, exact[i], color=color, lw=1.5)
    ax.plot(times, ode[i], "o", color=color, ms=3.5)
    ax.plot(times, prior[i], "--", color=color, lw=0.8)
ax.plot([], [], "k-", label=r"exact $\log p_t(x(t))$")
ax.plot(
    [],
    [],
    "ko",
    ms=3.5,
    label=r"ODE: $\log p_\varepsilon(x) - \int_\varepsilon^t \nabla\cdot v\,ds$",
)
ax.plot([], [], "k--", lw=0.8, label=r"prior $\log \pi(x(t))$")
ax.set_xscale("log")
ax.set_xlabel("forward time t (PF ODE from the data at t = ε to the latent at T = 1)")
ax.set_ylabel("log-density [nats]")
ax.set_title("log p along probability-flow trajectories (5 data points)", fontsize=10)
ax.legend(fontsize=8, loc="center left")

ax = axes[1]
lo, hi = truth.min().item() - 0.5, truth.max().item() + 0.5
ax.plot([lo, hi], [lo, hi], color="gray", lw=0.8)
for (name, res), marker in zip(estimates.items(), ["o", "x", "+"], strict=True):
    mae = (res.log_prob - truth).abs().mean().item()
    ax.plot(truth, res.log_prob, marker, ms=3.5, alpha=0.7, label=f"{name} (MAE {mae:.2g} nats)")
ax.set_xlabel(r"exact $\log p_\varepsilon(x)$ [nats]")
ax.set_ylabel("sdescore.likelihood log p [nats]")
ax.set_title("per point: PF-ODE log p against the exact value (256 points)", fontsize=10)
ax.legend(fontsize=8)
ax.set_aspect("equal")
fig.tight_layout()
out = Path(__file__).with_suffix(".png")
fig.savefig(out, dpi=90)
print(f"wrote {out}")
for name, res in estimates.items():
    err = res.log_prob - truth
    print(
        f"{name:<22} mean |error| {err.abs().mean():.2e}  max {err.abs().max():.2e}  NFE {res.nfe}"
    )
gap = (ode - exact).abs().max().item()
print(f"trajectory identity: max |ODE - exact log p_t(x(t))| = {gap:.1e} nats")
print(
    f"prior mismatch at T: max |log pi(z) - log p_T(z)| = {(prior - exact)[:, -1].abs().max():.1e}"
)
