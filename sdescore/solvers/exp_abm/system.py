r"""One batch's $(x, \Delta\log p)$ system as `ExpABM` integrates it, in log-SNR $\lambda$."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import final

import torch

from ..._divergence import value_and_divergence
from ...sdes.gaussian import GaussianSDE
from .._common import MaxStepsError, NonFiniteError

__all__ = [
    "LikelihoodSystem",
    "OUTLIER_RATIO",
    "log_density_tolerance",
    "with_outlier_hint",
]

# An example whose noise prediction has |eps|^2 above this many times d is named as an outlier
# when a solve runs out of steps: in-distribution points have |eps|^2 near d (a chi-square).
# The same ratio, on the log-density scale below, decides where the log-density tests gain
# a relative part.
OUTLIER_RATIO = 100.0


def log_density_tolerance(
    eps_t: torch.Tensor, phi: torch.Tensor, d: int, rtol: float, atol_s: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per example `(B,)`: the tolerance of the log-density tests (nats) and whether it has a
    relative part. The tests are absolute, `atol' * d`, except for an example far outside the
    model's data, where $L = \tfrac12|\hat\epsilon|^2 / \varphi$ (for data locally
    $N(\mu, c^2 I)$, $\hat\epsilon = \sqrt{\varphi}\,z$ with $-\log p \approx \tfrac12|z|^2$:
    the size of its log-density, about $d/2$ in distribution) exceeds `OUTLIER_RATIO * d`;
    there it is `atol' * d + rtol * L`, with the user's `rtol` (dopri5's scale, unscaled: the
    gap overstates the error less on such a point; with `rtol'` a point at 1e5 nats came out
    2e-4 off, relative (3e5 nats), against dopri5's 1e-6; with `rtol`, 5e-6). Without it such a
    point's log-density (tens of thousands of nats) was held to `atol' * d` absolute: thousands
    of steps, or a failure in float32 (docs/likelihood.md, "Points far outside the model's
    data"). `phi`: the noise fraction $h/d$ (the batch's, or per example), clipped to (0, 1]."""
    e2 = eps_t.reshape(eps_t.shape[0], -1).square().sum(1)
    scale = 0.5 * e2 / phi.clamp(1e-12, 1.0)
    far = scale > OUTLIER_RATIO * d
    return torch.where(far, atol_s * d + rtol * scale, torch.full_like(scale, atol_s * d)), far


def with_outlier_hint(
    error: MaxStepsError, eps_t: torch.Tensor | None, examples, d: int
) -> MaxStepsError:
    r"""`error` with the outliers among `examples` named, from their last noise predictions
    `eps_t` (`(n, *D)`, one row per entry of `examples`; one host read, after the solve
    failed): an example with $|\hat\epsilon|^2 \gg d$ lies far outside what the model knows,
    where its score may be far from smooth, and in a shared-step solve it sets every example's
    steps."""
    if eps_t is None:
        return error
    sq = eps_t.detach().reshape(len(examples), -1).double().square().sum(1).cpu()
    far = (sq > OUTLIER_RATIO * d).nonzero().flatten().tolist()
    if not far:
        return error
    worst = max(far, key=lambda j: float(sq[j]))
    names = ", ".join(str(int(examples[j])) for j in far[:8]) + (" ..." if len(far) > 8 else "")
    return MaxStepsError(
        f"{error} The likely cause: example(s) {names} lie far outside the model's data "
        f"(|noise prediction|^2 = {float(sq[worst]):.3g} for example {int(examples[worst])}, "
        f"against about d = {d} in distribution), where the model's score need not be smooth. "
        "Score such points apart from the others (with one step for the batch they set every "
        "example's steps), or with solver='dopri5'."
    )


@final
class LikelihoodSystem:
    r"""The score, the SDE, the probes and the ends in log-SNR of one solve from `eps` to T,
    with what both step-control modes ask of them.

    The state, the nodes and the log-density accumulate in the work dtype, float64 where the
    device has it; the score sees x's own dtype. A float32 state rounds x by ~6e-8 at every
    step, which near the data (sigma ~ 1e-6 under sub-VP) moved log p by up to 0.1 bits/dim.

    Args:
        score: the score function `(x, t) -> (B, *D)`, `t: (B,)`.
        sde: a `GaussianSDE` (it supplies $\alpha, \sigma, \lambda$ and $t(\lambda)$).
        x: the data `(B, *D)` at time `eps` (read for its shape, dtype and device only).
        eps: start time in `(0, T)`.
        probes: `(k, B, *D)` Hutchinson probes held fixed (the step control's), or `None`
            for the exact trace.
        fresh_probes: a callable returning new `(k, B, *D)` probes for every evaluation, or
            `None`.
        exact_chunk: basis vectors per backward call for the exact trace.
    """

    def __init__(
        self,
        score: Callable,
        sde: GaussianSDE,
        x: torch.Tensor,
        *,
        eps: float,
        probes: torch.Tensor | None,
        fresh_probes: Callable[[], torch.Tensor] | None,
        exact_chunk: int | None,
    ):
        f64 = torch.float64
        self.score, self.sde, self.eps = score, sde, eps
        self.probes, self.fresh_probes, self.exact_chunk = probes, fresh_probes, exact_chunk
        self.batch, self.d = x.shape[0], x[0].numel()
        self.in_dtype = x.dtype
        self.work = f64 if x.device.type != "mps" else x.dtype
        self.lam0 = float(sde.log_snr(torch.tensor(eps, dtype=f64)))
        self.lam1 = float(sde.log_snr(torch.tensor(sde.T, dtype=f64)))
        self.span = self.lam0 - self.lam1
        self.n_control = 0 if probes is None else probes.shape[0]
        self._cache: dict[float, tuple[float, float, float]] = {}

    def coefficients(self, lam: float) -> tuple[float, float, float]:
        """`(t, alpha, sigma)` at log-SNR `lam`, in float64 on the host (no device sync);
        cached, since each step needs them twice (the inversion of lambda may be a bisection).
        Strictly inside (lam1, lam0) the public `t_from_log_snr`'s clamps and checks are
        no-ops, so the SDE's own inverse and coefficients are called directly (the same
        numbers, without a range computation and a NaN check per call)."""
        cache, sde = self._cache, self.sde
        if lam not in cache:
            if lam == self.lam0:
                t = self.eps
            elif lam == self.lam1:
                t = sde.T
            else:
                lt = torch.tensor(lam, dtype=torch.float64)
                t = float(sde._t_from_log_snr(lt).clamp(self.eps, sde.T))
            tt = torch.tensor(t, dtype=torch.float64)
            if len(cache) > 1:
                cache.clear()  # only the current step's two points are ever needed again
            cache[lam] = (t, float(sde._log_alpha(tt).exp()), float(sde._sigma(tt)))
        return cache[lam]

    def evaluate(self, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise prediction and $h$ at `y` (every example at `lam`); with `fresh_probes`, $h$
        stacks the fixed probes' rows (control) above the fresh ones' (estimate)."""
        t, _, sigma = self.coefficients(lam)
        probes = self.probes
        vecs = probes if self.fresh_probes is None else torch.cat([probes, self.fresh_probes()])
        tb = torch.full((self.batch,), t, dtype=self.in_dtype, device=y.device)
        s, div = value_and_divergence(
            self.score, y.to(self.in_dtype), tb, vecs, chunk=self.exact_chunk
        )
        return s.to(self.work) * -sigma, div.to(self.work) * -(sigma * sigma)

    def control(self, h: torch.Tensor) -> torch.Tensor:
        """The step-control rows of $h$ (`(B,)` or `(k, B)`; never the fresh probes)."""
        return h if self.fresh_probes is None else h[: self.n_control]

    def noise_fraction(self, h: torch.Tensor) -> torch.Tensor:
        r"""The batch mean of $h/d$ on the step-control rows (never the fresh probes)."""
        return self.control(h).mean() / self.d

    @staticmethod
    def log_shape_constant(phi: float, lam: float) -> float:
        r"""$\log C$ of the shape $g = 1/(1 + C e^{2\lambda})$ through $g(\lambda) = \varphi$;
        $\varphi$ outside (0, 1) (a Hutchinson estimate, a mode switch) is clipped."""
        phi = min(max(phi, 1e-12), 1.0 - 1e-12)
        return math.log1p(-phi) - math.log(phi) - 2.0 * lam

    def local_error(
        self, gap: torch.Tensor, eps_t: torch.Tensor, dx: torch.Tensor, sigma_t: float
    ) -> torch.Tensor:
        r"""`(2, B)` nats: the step's signed gap (the log-density quadrature's, mean over the
        control probes, plus x's as it reaches log p, $\hat\epsilon\cdot\delta/\sigma$)
        and the sum of the two gaps' magnitudes; see `ERROR_FLOOR`."""
        batch = self.batch
        q = gap.reshape(-1, batch).mean(0)
        s = (eps_t * dx).reshape(batch, -1).sum(1) / sigma_t
        return torch.stack([q + s, q.abs() + s.abs()])

    def nonfinite(self, bad: torch.Tensor, lam: float, evaluation: int) -> NonFiniteError:
        """The error for NaN/Inf in the examples `bad` (`(B,)`, or `(n, B)` rows of channels or
        probes: an example counts once) at log-SNR `lam`."""
        t_bad = self.coefficients(lam)[0]
        count = int(bad.reshape(-1, self.batch).any(0).sum())
        return NonFiniteError(
            f"likelihood (exp_abm): the score or its divergence is NaN/Inf for "
            f"{count} of {self.batch} examples at t = {t_bad:.6g} (lambda = {lam:.4g}, "
            f"evaluation {evaluation}); check that the score function returns finite values "
            "for t in [eps, T]"
        )
