r"""`ExpABM`'s adaptive solve with per-example step control (`ExpABM(per_example=True)`).

The scheme of `sdescore.solvers.exp_abm` (the package docstring), with every example on its own
clock: each carries its own log-SNR $\lambda_b$, step, PI-controller memory, shape constant and
last `order + 1` nodes, and accepts or rejects its own step by its own error test (the same
three tests, per example). A network pass evaluates only the examples not yet at T, each at its
own time (the score gets `t` of shape `(B_active,)`), so an easy example stops costing anything
once it has arrived and a hard one no longer shrinks everybody's steps. An example's result
does not depend on the rest of its batch (up to the floating-point reduction order of the
network).

The weights differ per example, so their quadrature and Vandermonde solves run batched in numpy
on the host (`weights.batched_node_weights`), together with the per-example bookkeeping; the
state, the nodes' values and the log-density stay on the device. One host synchronisation per
pass (the accept decisions), as in the shared-step solve.
"""

from __future__ import annotations

import numpy as np
import torch

from ..._divergence import value_and_divergence
from .._common import COLLAPSE, MaxStepsError, NonFiniteError, budget_exceeded, step_collapsed
from .step_control import STEP_CONTROL, AdaptiveOptions, StepControl
from .system import LikelihoodSystem, log_density_tolerance, with_outlier_hint
from .weights import batched_node_weights

__all__ = ["per_example_solve"]


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`(n,)` against `(n, *D)`."""
    return v.reshape(v.shape[0], *([1] * (like.dim() - 1)))


def _coefficients(system: LikelihoodSystem, lam: np.ndarray):
    """`(t, alpha, sigma)` at log-SNR `lam: (n,)`, float64 host arrays; the ends exact."""
    sde, eps, lam0, lam1 = system.sde, system.eps, system.lam0, system.lam1
    lt = torch.from_numpy(np.clip(lam, lam1, lam0))
    t = sde._t_from_log_snr(lt).clamp(eps, sde.T)
    t = torch.where(lt == lam0, eps, torch.where(lt == lam1, sde.T, t))
    return t.numpy(), sde._log_alpha(t).exp().numpy(), sde._sigma(t).numpy()


def _evaluate(system: LikelihoodSystem, y: torch.Tensor, idx: torch.Tensor, t, sigma):
    """Noise prediction and $h$ of the examples `idx` at `y: (n, *D)`, each at its own time
    `t: (n,)` (noise level `sigma: (n,)`); the fresh probes' rows stacked below the control's."""
    probes, fresh_probes, dev = system.probes, system.fresh_probes, y.device
    vecs = None if probes is None else probes[:, idx]
    if fresh_probes is not None:
        vecs = torch.cat([vecs, fresh_probes()[:, idx]])
    tb = torch.as_tensor(t, device=dev).to(system.in_dtype)
    s, div = value_and_divergence(
        system.score, y.to(system.in_dtype), tb, vecs, chunk=system.exact_chunk
    )
    sg = torch.as_tensor(sigma, device=dev, dtype=system.work)
    return s.to(system.work) * -_bcast(sg, s), div.to(system.work) * -(sg * sg)


def _noise_fraction(system: LikelihoodSystem, h: torch.Tensor) -> torch.Tensor:
    """Per example, $h/d$ averaged over the control probes."""
    return system.control(h).reshape(-1, h.shape[-1]).mean(0) / system.d


def _log_shape_constant(phi: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """`LikelihoodSystem.log_shape_constant`, per example."""
    phi = np.clip(phi, 1e-12, 1.0 - 1e-12)
    return np.log1p(-phi) - np.log(phi) - 2.0 * lam


def _nonfinite(where: str, n_bad: int, batch: int, t: float, evaluation: int) -> NonFiniteError:
    return NonFiniteError(
        f"{where}: the score or its divergence is NaN/Inf for {n_bad} of {batch} examples "
        f"at t = {t:.6g} (evaluation {evaluation}); check that the score function returns "
        "finite values for t in [eps, T]"
    )


def _weights_by_order(hist_lam, act, la, st, k, log_c):
    """The predictor's `(n_hist, n)` and the corrector's `(n_hist + 1, n)` weights (noise
    prediction, $h$) over the history slots of the active examples `act` (node log-SNRs
    `hist_lam`, newest first), computed per group of equal order `k: (n,)`; zero beyond
    an example's order."""
    n_hist, n_act = hist_lam.shape[0], len(act)
    wp_e, wp_h = np.zeros((n_hist, n_act)), np.zeros((n_hist, n_act))
    wc_e, wc_h = np.zeros((n_hist + 1, n_act)), np.zeros((n_hist + 1, n_act))
    for kk in np.unique(k):
        g = np.flatnonzero(k == kk)
        nodes = (hist_lam[:kk, act[g]] - la[g]).T  # (n, kk), newest first
        e, h = batched_node_weights(nodes, st[g], la[g], log_c[act[g]])
        wp_e[:kk, g], wp_h[:kk, g] = e.T, h.T
        nodes = np.concatenate([st[g][:, None], nodes], axis=1)
        e, h = batched_node_weights(nodes, st[g], la[g], log_c[act[g]])
        wc_e[: kk + 1, g], wc_h[: kk + 1, g] = e.T, h.T
    return wp_e, wp_h, wc_e, wc_h


def _grow(control: StepControl, r: np.ndarray, r_prev: np.ndarray, kp1: np.ndarray):
    """`StepControl.grow` per example (`r_prev` NaN before an example's first acceptance)."""
    factor = r ** (-control.pi_current / kp1)
    factor = np.where(np.isnan(r_prev), factor, factor * r_prev ** (control.pi_previous / kp1))
    return np.clip(control.safety * factor, control.min_shrink, control.max_growth)


def _shrink(control: StepControl, r: np.ndarray, kp1: np.ndarray):
    """`StepControl.shrink` per example."""
    return np.clip(control.safety * r ** (-1.0 / kp1), control.min_shrink, 1.0)


def per_example_solve(
    system: LikelihoodSystem,
    x: torch.Tensor,
    options: AdaptiveOptions,
    control: StepControl = STEP_CONTROL,
):
    r"""Integrate $(x, \Delta\log p)$ from `eps` to T with a step per example (see the module).

    Returns `(latent, delta, nfe, error)`: latent `(B, *D)` and `delta` (`(B,)`, or `(k, B)`
    per estimation probe, without the $d \log(\alpha_T/\alpha_\varepsilon)$ term) in the work
    dtype, the network passes, and the `(2, B)` accumulated gaps (signed, magnitudes; nats).
    The score sees the input dtype."""
    where = f"likelihood (exp_abm per example, rtol={options.rtol}, atol={options.atol})"
    rtol_s, atol_s = options.internal
    order, batch, d = options.order, system.batch, system.d
    dev, work, lam0, lam1 = x.device, system.work, system.lam0, system.lam1
    x = x.to(work, copy=True)  # updated in place below; never the caller's tensor
    n_hist = order + 1

    all_idx = torch.arange(batch, device=dev)
    t0, alpha0, sigma0 = _coefficients(system, np.full(batch, lam0))
    eps0, h0 = _evaluate(system, x, all_idx, t0, sigma0)
    bad0 = ~torch.isfinite(eps0).reshape(batch, -1).all(1)
    bad0 |= ~torch.isfinite(h0).reshape(-1, batch).all(0)
    if bool(bad0.any()):
        raise _nonfinite(where, int(bad0.sum()), batch, system.eps, 1)
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
    step = np.full(batch, -abs(options.first_step))
    r_prev = np.full(batch, np.nan)
    log_c = _log_shape_constant(_noise_fraction(system, h0).cpu().numpy(), lam)
    done = np.zeros(batch, dtype=bool)
    last = None  # (examples, noise predictions) of the last pass, to name outliers on failure
    while not done.all():
        act = np.flatnonzero(~done)
        st = np.maximum(step[act], -control.max_step)
        try:
            _check_limits(system, options, nfe, lam[act], st, where)
        except MaxStepsError as e:
            if last is None:
                raise
            running = np.isin(last[0], act)  # the last pass's examples still short of T
            rows = last[1][torch.as_tensor(running, device=dev)]
            raise with_outlier_hint(e, rows, last[0][running], d) from None
        la = lam[act]
        land = (la + st <= lam1) | (la + st - lam1 < 1e-3 * np.abs(st))
        st = np.where(land, lam1 - la, st)
        lam_t = np.where(land, lam1, la + st)
        t_t, alpha_t, sigma_t = _coefficients(system, lam_t)
        k = np.minimum(order, count[act])
        n_act = len(act)
        # Weights over the history slots (predictor: k nodes; corrector: the new one and k).
        weights = _weights_by_order(hist_lam, act, la, st, k, log_c)
        to_dev = {"device": dev, "dtype": work}
        idx = torch.as_tensor(act, device=dev)
        xa, he, hh = x[idx], hist_eps[:, idx], hist_h[..., idx]
        ratio = torch.as_tensor(alpha_t / alpha_s[act], **to_dev)
        scale = torch.as_tensor(alpha_t * np.exp(-la), **to_dev)
        wp_e, wp_h, wc_e, wc_h = (torch.as_tensor(w, **to_dev) for w in weights)
        ext = [1] * (xa.dim() - 1)
        ext_h = [1] * (hh.dim() - 2)
        lin = _bcast(ratio, xa) * xa
        x_pred = lin - _bcast(scale, xa) * (wp_e.reshape(n_hist, n_act, *ext) * he).sum(0)
        q_pred = (wp_h.reshape(n_hist, *ext_h, n_act) * hh).sum(0)
        eps_t, h_t = _evaluate(system, x_pred, idx, t_t, sigma_t)
        nfe += 1
        last = (act, eps_t)
        comb = (wc_e[1:].reshape(n_hist, n_act, *ext) * he).sum(0)
        x_corr = lin - _bcast(scale, xa) * (_bcast(wc_e[0], xa) * eps_t + comb)
        q_corr = wc_h[0] * h_t + (wc_h[1:].reshape(n_hist, *ext_h, n_act) * hh).sum(0)
        dx = x_corr - x_pred
        tol_x = atol_s + rtol_s * torch.maximum(xa.abs(), x_corr.abs())
        err_x = (dx / tol_x).reshape(n_act, -1).square().mean(1).sqrt()
        gap = system.control(q_corr - q_pred)
        phi_t = _noise_fraction(system, h_t)
        # An example's own h/d can be near 0 or negative between modes: at least the mean.
        tol, _ = log_density_tolerance(
            eps_t, torch.maximum(phi_t, phi_t.mean()), d, options.rtol, atol_s
        )
        err_q = (gap.abs() / tol).reshape(-1, n_act).amax(0)
        sg_t = torch.as_tensor(sigma_t, **to_dev)
        s_gap = (eps_t * dx).reshape(n_act, -1).sum(1) / sg_t
        err = torch.maximum(torch.maximum(err_x, err_q), s_gap.abs() / tol)
        # The one sync per pass: every active example's error ratio and noise fraction.
        r, phi = torch.stack([err, phi_t.to(err.dtype)]).cpu().numpy()
        if not np.isfinite(r).all():
            bad = ~np.isfinite(r)
            raise _nonfinite(where, int(bad.sum()), batch, float(t_t[bad][0]), nfe)
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
            log_c[b] = _log_shape_constant(phi[g], lam_t[g])
            grow = _grow(control, r[g], r_prev[b], k[g] + 1)
            r_prev[b] = np.maximum(r[g], 1e-4)
            step[b] = st[g] * grow
            done[b] = lam_t[g] <= lam1
        if (~ok).any():
            g = np.flatnonzero(~ok)
            step[act[g]] = st[g] * _shrink(control, r[g], k[g] + 1)
    return x, delta, nfe, error


def _check_limits(system, options, nfe, lam, st, where):
    """`MaxStepsError` past `max_steps` passes or `max_evals`, or for a step below `COLLAPSE`
    of the log-SNR interval; `lam`, `st`: the active examples' log-SNRs and steps."""
    span = system.span
    if nfe > options.max_steps:
        raise MaxStepsError(
            f"{where}: more than max_steps={options.max_steps} passes between lambda = "
            f"{system.lam0:.3g} and {system.lam1:.3g} ({len(lam)} examples not at T, the "
            f"furthest behind at lambda = {lam.max():.3g}); loosen the tolerances or raise "
            "max_steps"
        )
    if nfe >= options.max_evals or np.abs(st).min() < COLLAPSE * span:
        j = int(np.abs(st).argmin())
        t_at = float(_coefficients(system, lam[j : j + 1])[0][0])
        at = dict(nfe=nfe, t=t_at, t0=system.eps, t1=system.sde.T, dtype=system.in_dtype)
        if nfe >= options.max_evals:
            raise budget_exceeded(where, max_evals=options.max_evals, **at)
        moved = float(abs(st[j]))
        raise step_collapsed(where, moved=moved, over=f"one step in lambda (of {span:.3g})", **at)
