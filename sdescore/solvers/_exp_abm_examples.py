r"""`ExpABM`'s adaptive solve with per-example step control (`ExpABM(per_example=True)`).

The scheme of `solvers.exp_abm` (module docstring there), with every example on its own clock:
each carries its own log-SNR $\lambda_b$, step, PI-controller memory, shape constant and last
`order + 1` nodes, and accepts or rejects its own step by its own error test (the same three
tests, per example). A network pass evaluates only the examples not yet at T, each at its own
time (the score gets `t` of shape `(B_active,)`), so an easy example stops costing anything
once it has arrived and a hard one no longer shrinks everybody's steps. An example's result
does not depend on the rest of its batch (up to the floating-point reduction order of the
network).

The weights differ per example, so their quadrature and Vandermonde solves run batched in numpy
on the host, together with the per-example bookkeeping; the state, the nodes' values and the
log-density stay on the device. One host synchronisation per pass (the accept decisions), as in
the shared-step solve.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .._divergence import value_and_divergence
from ._common import COLLAPSE, MaxStepsError, NonFiniteError, budget_exceeded, step_collapsed

__all__ = ["per_example_solve"]


def _log_shape(lam: np.ndarray, log_c: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, log_c + 2.0 * lam)


def _batched_weights(nodes, step, lam, log_c, gauss):
    r"""Per-example weights `(n, m)` for the noise prediction and for $h$ over the steps
    `step: (n,)` from `lam: (n,)`, through the `m` node offsets `nodes: (n, m)` (shape constant
    `log_c: (n,)`): `_moments` and `_weights` of `solvers.exp_abm`, batched over examples."""
    xg, wg = gauss
    n, m = nodes.shape
    u = 0.5 * step[:, None] * (xg + 1.0)  # (n, q)
    log_g = _log_shape(lam[:, None] + u, log_c[:, None])
    powers = np.ones((n, m, len(xg)))  # u^j, (n, m, q)
    for j in range(1, m):
        powers[:, j] = powers[:, j - 1] * u
    scale = 0.5 * step[:, None] * wg
    w_x = scale * np.exp(-u + 0.5 * log_g)
    w_h = scale * np.exp(log_g)
    moments = np.stack([np.einsum("nmq,nq->nm", powers, w) for w in (w_x, w_h)], axis=2)
    vander = np.ones((n, m, m))  # nodes^j, (n, m, m)
    for j in range(1, m):
        vander[:, :, j] = vander[:, :, j - 1] * nodes
    w = np.linalg.solve(np.transpose(vander, (0, 2, 1)), moments)  # (n, m, 2)
    log_g_nodes = _log_shape(lam[:, None] + nodes, log_c[:, None])
    return w[..., 0] * np.exp(-0.5 * log_g_nodes), w[..., 1] * np.exp(-log_g_nodes)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`(n,)` against `(n, *D)`."""
    return v.reshape(v.shape[0], *([1] * (like.dim() - 1)))


def per_example_solve(
    score: Callable,
    sde,
    x: torch.Tensor,
    *,
    eps: float,
    probes: torch.Tensor | None,
    fresh_probes: Callable[[], torch.Tensor] | None,
    exact_chunk: int | None,
    tolerances: tuple[float, float],
    order: int,
    first_step: float,
    max_steps: int,
    max_evals: int,
    consts: dict,
    where: str,
    in_dtype: torch.dtype,
):
    r"""Integrate $(x, \Delta\log p)$ from `eps` to T with a step per example (see the module).

    Returns `(latent, delta, nfe, error)`: latent `(B, *D)` and `delta` (`(B,)`, or `(k, B)`
    per estimation probe, without the $d \log(\alpha_T/\alpha_\varepsilon)$ term) in the work
    dtype, the network passes, and the `(2, B)` accumulated gaps (signed, magnitudes; nats).
    `consts` holds `solvers.exp_abm`'s step-control constants; the score sees `in_dtype`."""
    rtol_s, atol_s = tolerances
    batch, d = x.shape[0], x[0].numel()
    f64, dev = torch.float64, x.device
    work = f64 if dev.type != "mps" else in_dtype
    x = x.to(work, copy=True)  # updated in place below; never the caller's tensor
    lam0 = float(sde.log_snr(torch.tensor(eps, dtype=f64)))
    lam1 = float(sde.log_snr(torch.tensor(sde.T, dtype=f64)))
    span = lam0 - lam1
    n_hist = order + 1
    n_control = 0 if probes is None else probes.shape[0]

    def coefficients(lam: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(t, alpha, sigma)` at log-SNR `lam: (n,)`, float64 host arrays; the ends exact."""
        lt = torch.from_numpy(np.clip(lam, lam1, lam0))
        t = sde._t_from_log_snr(lt).clamp(eps, sde.T)
        t = torch.where(lt == lam0, eps, torch.where(lt == lam1, sde.T, t))
        return t.numpy(), sde._log_alpha(t).exp().numpy(), sde._sigma(t).numpy()

    def evaluate(y: torch.Tensor, idx: torch.Tensor, t: np.ndarray, sigma: np.ndarray):
        vecs = None if probes is None else probes[:, idx]
        if fresh_probes is not None:
            vecs = torch.cat([vecs, fresh_probes()[:, idx]])
        tb = torch.as_tensor(t, device=dev).to(in_dtype)
        s, div = value_and_divergence(score, y.to(in_dtype), tb, vecs, chunk=exact_chunk)
        sg = torch.as_tensor(sigma, device=dev, dtype=work)
        return s.to(work) * -_bcast(sg, s), div.to(work) * -(sg * sg)

    def control(h: torch.Tensor) -> torch.Tensor:
        return h if fresh_probes is None else h[:n_control]

    def phi_of(h: torch.Tensor) -> torch.Tensor:
        """Per example, $h/d$ averaged over the control probes."""
        return control(h).reshape(-1, h.shape[-1]).mean(0) / d

    def shape_constant(phi: np.ndarray, lam: np.ndarray) -> np.ndarray:
        phi = np.clip(phi, 1e-12, 1.0 - 1e-12)
        return np.log1p(-phi) - np.log(phi) - 2.0 * lam

    def nonfinite(n_bad: int, t: float, evaluation: int) -> NonFiniteError:
        return NonFiniteError(
            f"{where}: the score or its divergence is NaN/Inf for {n_bad} of {batch} examples "
            f"at t = {t:.6g} (evaluation {evaluation}); check that the score function returns "
            "finite values for t in [eps, T]"
        )

    all_idx = torch.arange(batch, device=dev)
    t0, alpha0, sigma0 = coefficients(np.full(batch, lam0))
    eps0, h0 = evaluate(x, all_idx, t0, sigma0)
    bad0 = ~torch.isfinite(eps0).reshape(batch, -1).all(1)
    bad0 |= ~torch.isfinite(h0).reshape(-1, batch).all(0)
    if bool(bad0.any()):
        raise nonfinite(int(bad0.sum()), eps, 1)
    nfe = 1
    # Nodes, newest first; a slot beyond an example's count is never read (weight 0 there).
    hist_eps = eps0.new_zeros(n_hist, *eps0.shape)
    hist_h = h0.new_zeros(n_hist, *h0.shape)
    hist_eps[0], hist_h[0] = eps0, h0
    hist_lam = np.zeros((n_hist, batch))
    hist_lam[0] = lam0
    count = np.ones(batch, dtype=np.int64)
    delta = torch.zeros_like(h0)
    error = x.new_zeros(2, batch)
    lam = np.full(batch, lam0)
    alpha_s = alpha0.copy()
    step = np.full(batch, -abs(first_step))
    r_prev = np.full(batch, np.nan)
    log_c = shape_constant(phi_of(h0).cpu().numpy(), lam)
    done = np.zeros(batch, dtype=bool)
    gauss = consts["gauss"]
    while not done.all():
        if nfe > max_steps:
            raise MaxStepsError(
                f"{where}: more than max_steps={max_steps} passes between lambda = {lam0:.3g} "
                f"and {lam1:.3g} ({int((~done).sum())} examples not at T, the furthest behind at "
                f"lambda = {lam[~done].max():.3g}); loosen the tolerances or raise max_steps"
            )
        act = np.flatnonzero(~done)
        st = np.maximum(step[act], -consts["max_step"])
        if nfe >= max_evals or np.abs(st).min() < COLLAPSE * span:
            j = int(np.abs(st).argmin())
            t_at = float(coefficients(lam[act][j : j + 1])[0][0])
            at = dict(nfe=nfe, t=t_at, t0=eps, t1=sde.T, dtype=in_dtype)
            if nfe >= max_evals:
                raise budget_exceeded(where, max_evals=max_evals, **at)
            moved = float(abs(st[j]))
            raise step_collapsed(
                where, moved=moved, over=f"one step in lambda (of {span:.3g})", **at
            )
        la = lam[act]
        land = (la + st <= lam1) | (la + st - lam1 < 1e-3 * np.abs(st))
        st = np.where(land, lam1 - la, st)
        lam_t = np.where(land, lam1, la + st)
        t_t, alpha_t, sigma_t = coefficients(lam_t)
        k = np.minimum(order, count[act])
        n_act = len(act)
        # Weights over the history slots (predictor: k nodes; corrector: the new one and k).
        wp_e, wp_h = np.zeros((n_hist, n_act)), np.zeros((n_hist, n_act))
        wc_e, wc_h = np.zeros((n_hist + 1, n_act)), np.zeros((n_hist + 1, n_act))
        for kk in np.unique(k):
            g = np.flatnonzero(k == kk)
            nodes = (hist_lam[:kk, act[g]] - la[g]).T  # (n, kk), newest first
            e, h = _batched_weights(nodes, st[g], la[g], log_c[act[g]], gauss)
            wp_e[:kk, g], wp_h[:kk, g] = e.T, h.T
            nodes = np.concatenate([st[g][:, None], nodes], axis=1)
            e, h = _batched_weights(nodes, st[g], la[g], log_c[act[g]], gauss)
            wc_e[: kk + 1, g], wc_h[: kk + 1, g] = e.T, h.T
        to_dev = {"device": dev, "dtype": work}
        idx = torch.as_tensor(act, device=dev)
        xa, he, hh = x[idx], hist_eps[:, idx], hist_h[..., idx]
        ratio = torch.as_tensor(alpha_t / alpha_s[act], **to_dev)
        scale = torch.as_tensor(alpha_t * np.exp(-la), **to_dev)
        wp_e, wp_h, wc_e, wc_h = (torch.as_tensor(w, **to_dev) for w in (wp_e, wp_h, wc_e, wc_h))
        ext = [1] * (xa.dim() - 1)
        ext_h = [1] * (hh.dim() - 2)
        lin = _bcast(ratio, xa) * xa
        x_pred = lin - _bcast(scale, xa) * (wp_e.reshape(n_hist, n_act, *ext) * he).sum(0)
        q_pred = (wp_h.reshape(n_hist, *ext_h, n_act) * hh).sum(0)
        eps_t, h_t = evaluate(x_pred, idx, t_t, sigma_t)
        nfe += 1
        comb = (wc_e[1:].reshape(n_hist, n_act, *ext) * he).sum(0)
        x_corr = lin - _bcast(scale, xa) * (_bcast(wc_e[0], xa) * eps_t + comb)
        q_corr = wc_h[0] * h_t + (wc_h[1:].reshape(n_hist, *ext_h, n_act) * hh).sum(0)
        dx = x_corr - x_pred
        tol_x = atol_s + rtol_s * torch.maximum(xa.abs(), x_corr.abs())
        err_x = (dx / tol_x).reshape(n_act, -1).square().mean(1).sqrt()
        gap = control(q_corr - q_pred)
        err_q = (gap.abs() / (atol_s * d)).reshape(-1, n_act).amax(0)
        sg_t = torch.as_tensor(sigma_t, **to_dev)
        s_gap = (eps_t * dx).reshape(n_act, -1).sum(1) / sg_t
        err = torch.maximum(torch.maximum(err_x, err_q), s_gap.abs() / (atol_s * d))
        # The one sync per pass: every active example's error ratio and noise fraction.
        r, phi = torch.stack([err, phi_of(h_t).to(err.dtype)]).cpu().numpy()
        if not np.isfinite(r).all():
            bad = ~np.isfinite(r)
            raise nonfinite(int(bad.sum()), float(t_t[bad][0]), nfe)
        r = np.maximum(r, 1e-10)
        ok = r <= 1.0
        if ok.any():
            g = np.flatnonzero(ok)
            gi, ai = torch.as_tensor(g, device=dev), torch.as_tensor(act[g], device=dev)
            q = gap.reshape(-1, n_act).mean(0)
            local = torch.stack([q + s_gap, q.abs() + s_gap.abs()])
            error[:, ai] += local[:, gi]
            x[ai] = x_corr[gi]
            delta[..., ai] -= q_corr[..., gi]
            hist_eps[:, ai] = torch.cat([eps_t[gi][None], hist_eps[:-1, ai]])
            hist_h[..., ai] = torch.cat([h_t[..., gi][None], hist_h[:-1][..., ai]])
            b = act[g]
            hist_lam[:, b] = np.concatenate([lam_t[g][None], hist_lam[:-1, b]])
            count[b] = np.minimum(count[b] + 1, n_hist)
            lam[b], alpha_s[b] = lam_t[g], alpha_t[g]
            log_c[b] = shape_constant(phi[g], lam_t[g])
            kp1 = k[g] + 1
            pi_cur, pi_prev = consts["pi"]
            factor = r[g] ** (-pi_cur / kp1)
            prev = r_prev[b]
            factor = np.where(np.isnan(prev), factor, factor * prev ** (pi_prev / kp1))
            r_prev[b] = np.maximum(r[g], 1e-4)
            grow = np.clip(consts["safety"] * factor, consts["min_shrink"], consts["max_growth"])
            step[b] = st[g] * grow
            done[b] = lam_t[g] <= lam1
        if (~ok).any():
            g = np.flatnonzero(~ok)
            shrink = np.clip(
                consts["safety"] * r[g] ** (-1.0 / (k[g] + 1)), consts["min_shrink"], 1.0
            )
            step[act[g]] = st[g] * shrink
    return x, delta, nfe, error
