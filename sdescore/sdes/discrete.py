r"""`DiscreteVPSDE`: the continuous-time VP SDE of a discrete DDPM schedule.

A DDPM (Ho et al. 2020) is trained on $N$ noise levels $\bar\alpha_n = \prod_{m \le n}(1 - \beta_m)$,
$x_n = \sqrt{\bar\alpha_n} x_0 + \sqrt{1 - \bar\alpha_n}\,\varepsilon$, $n = 1..N$. Put level $n$ at
time $t_n = n / N$ and interpolate $\log\alpha(t)$ *linearly in t* between the nodes, with the data
at $t_0 = 0$ ($\log\alpha = 0$). This is the "discrete" noise schedule of DPM-Solver (Lu et al.
2022, App. D and their `NoiseScheduleVP('discrete')`, which puts $\bar\alpha_n$ at $t_n = n/N$
too), except on $[0, 1/N]$: DPM-Solver extrapolates the first segment linearly, we anchor
$\alpha(0) = 1$ so that $t = 0$ is the data. Hence, on step $n$ ($t \in (t_{n-1}, t_n]$):

$$f(t) = \frac{d\log\alpha}{dt} = \frac N2 \log(1 - \beta_n), \qquad
\sigma(t)^2 = 1 - \alpha(t)^2, \qquad g(t)^2 = \frac{d\sigma^2}{dt} - 2f\sigma^2 = -2f(t)
= -N\log(1 - \beta_n),$$

so the SDE $dx = f x\,dt + g\,dw$ has exactly these marginals and $\alpha(t_n)^2 = \bar\alpha_n$
at the training times. $f$ and $g$ are piecewise constant, discontinuous at the nodes; at a node
$t_n$ they take the value of step $n$ (the step a reverse-time solver enters from $t_n$). For small
$\beta$, $g^2 \approx N\beta_n$: the linear DDPM schedule is close to, but not the same as,
`VPSDE(N * beta_1, N * beta_N)` (Song et al. 2021, Sec. 3.4); `benchmarks/interop.py` measures
the difference in bits/dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import as_time_only, check_int, check_real
from .gaussian import GaussianSDE

__all__ = ["DiscreteVPSDE"]


def _as_table(name: str, value) -> torch.Tensor:
    """A 1-d finite float64 CPU tensor from a tensor, array or sequence."""
    try:
        v = torch.as_tensor(value).detach()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"{name} must be a 1-d tensor or array of numbers, got {type(value).__name__}"
        ) from err
    if v.ndim != 1 or v.numel() < 1:
        raise ValueError(f"{name} must be a non-empty 1-d tensor (N,), got shape {tuple(v.shape)}")
    if not (v.is_floating_point() or v.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold real numbers, got dtype {v.dtype}")
    v = v.to("cpu", torch.float64)
    if not bool(torch.isfinite(v).all()):
        raise ValueError(
            f"{name} must be finite, got NaN or Inf at index {_first(~torch.isfinite(v))}"
        )
    return v


def _first(mask: torch.Tensor) -> int:
    return int(mask.nonzero()[0])


class DiscreteVPSDE(GaussianSDE):
    r"""VP SDE interpolating a discrete DDPM schedule; see the module docstring for the formulas.

    Give exactly one of `betas` or `alphas_cumprod` (as a diffusers scheduler stores them: index
    `n - 1` holds level $n$). $T = 1$, prior $N(0, I)$. Time $t$ and the network's integer
    timestep $k \in \{0, .., N-1\}$ correspond by $t = (k + 1)/N$ (`t_from_timestep`,
    `timestep`); between the nodes a network gets the fractional timestep $tN - 1$.

    Args:
        betas: `(N,)` DDPM betas, each in $(0, 1)$. Need not be monotone: any such betas give a
            decreasing $\bar\alpha$. $\log\alpha$ is accumulated as
            $\tfrac12\sum\log(1 - \beta_m)$ with `log1p`, in float64.
        alphas_cumprod: `(N,)` cumulative products $\bar\alpha_n$, strictly decreasing in
            $(0, 1)$. Used as given (also float32 values, as diffusers stores them), so that
            $\alpha(t_n)^2$ reproduces the table to float64 rounding.

    Raises:
        ValueError: both or neither given, not 1-d, non-finite, betas outside $(0, 1)$,
            `alphas_cumprod` outside $(0, 1)$ or not strictly decreasing (the index is named).
        TypeError: not a tensor/array of real numbers.
    """

    def __init__(self, betas=None, *, alphas_cumprod=None):
        super().__init__(T=1.0)
        if (betas is None) == (alphas_cumprod is None):
            raise ValueError("give exactly one of betas or alphas_cumprod")
        if betas is not None:
            b = _as_table("betas", betas)
            bad = (b <= 0) | (b >= 1)
            if bool(bad.any()):
                i = _first(bad)
                hint = (
                    " (beta = 1 is zero terminal SNR, which has no finite log-SNR; clip it, e.g."
                    " to 0.999 as Nichol & Dhariwal 2021 do)"
                    if b[i] >= 1
                    else " (beta <= 0 adds no noise at that step, so the log-SNR does not decrease"
                    "; every step must add noise, e.g. betas from 1e-4 as in Ho et al. 2020)"
                )
                raise ValueError(
                    f"betas must lie in the open interval (0, 1), got betas[{i}] = "
                    f"{b[i].item():.6g}{hint}"
                )
            dla = 0.5 * torch.log1p(-b)
            la = torch.cumsum(dla, 0)
        else:
            a = _as_table("alphas_cumprod", alphas_cumprod)
            bad = (a <= 0) | (a >= 1)
            if bool(bad.any()):
                i = _first(bad)
                hint = (
                    " (alphas_cumprod = 1 is a step without noise, an infinite log-SNR)"
                    if a[i] >= 1
                    else " (alphas_cumprod = 0 is zero terminal SNR, which has no finite log-SNR;"
                    " clip it to a small positive value)"
                )
                raise ValueError(
                    "alphas_cumprod must lie in the open interval (0, 1), got "
                    f"alphas_cumprod[{i}] = {a[i].item():.6g}{hint}"
                )
            la = 0.5 * torch.log(a)
            dla = torch.diff(la, prepend=la.new_zeros(1))
            bad = dla >= 0
            if bool(bad.any()):
                i = _first(bad)
                raise ValueError(
                    "alphas_cumprod must be strictly decreasing, got "
                    f"alphas_cumprod[{i}] = {a[i].item():.8g} after "
                    f"{1.0 if i == 0 else a[i - 1].item():.8g}"
                )
        self.num_timesteps = int(dla.numel())
        # log alpha at the N + 1 nodes t_n = n / N (from the table itself when one is given, so
        # alpha(t_n)^2 reproduces it), and the per-step increments (from log1p(-beta) when betas
        # are given, so that f is accurate even where beta is tiny).
        self._base = {"la": torch.cat([la.new_zeros(1), la]), "dla": dla}
        self._cache: dict = {}
        self._check_schedule()

    _schedule_hint = "the schedule's last alphas_cumprod is too small for float32; use fewer steps"
    _prior_hint = "use more timesteps or larger betas, e.g. DiscreteVPSDE.linear(1000)"

    @classmethod
    def linear(
        cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> DiscreteVPSDE:
        """The linear DDPM schedule of Ho et al. (2020): `linspace(beta_start, beta_end, N)`."""
        n = check_int("num_timesteps", num_timesteps)
        start = check_real("beta_start", beta_start)
        end = check_real("beta_end", beta_end)
        return cls(torch.linspace(start, end, n, dtype=torch.float64))

    # -- tables -----------------------------------------------------------------------------
    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """$\\bar\\alpha_n$, `(N,)` float64, as this SDE represents it: $\\alpha(t_n)^2$."""
        return torch.exp(2 * self._base["la"][1:])

    @property
    def betas(self) -> torch.Tensor:
        """$\\beta_n = 1 - \\bar\\alpha_n / \\bar\\alpha_{n-1}$, `(N,)` float64."""
        return -torch.expm1(2 * self._base["dla"])

    def _tables(self, like: torch.Tensor) -> dict:
        key = (like.device, like.dtype)
        if key not in self._cache:
            opts = {"device": like.device, "dtype": like.dtype}
            self._cache[key] = {k: v.to(**opts) for k, v in self._base.items()}
        return self._cache[key]

    def _step(self, t: torch.Tensor):
        """Tables, 0-based step index k (step k + 1 covers $(t_k, t_{k+1}]$) and $u = tN - k$."""
        tab = self._tables(t)
        s = t * self.num_timesteps
        k = torch.clamp(torch.ceil(s) - 1, 0, self.num_timesteps - 1).long()
        return tab, k, s - k.to(t.dtype)

    # -- the kernel ---------------------------------------------------------------------------
    def _log_alpha(self, t):
        tab, k, u = self._step(t)
        return tab["la"][k] + u * tab["dla"][k]

    def _f(self, t):
        tab, k, _ = self._step(t)
        return self.num_timesteps * tab["dla"][k]

    def _g(self, t):
        return torch.sqrt(-2 * self._f(t))

    def _sigma(self, t):
        return torch.sqrt(-torch.expm1(2 * self._log_alpha(t)))

    def _log_snr(self, t):
        la = self._log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2 * la))

    def _t_from_log_snr(self, lam) -> torch.Tensor:
        # Closed form: log alpha = -softplus(-2 lambda) / 2, then the linear piece that holds it
        # (vectorised, no host sync); `t_from_log_snr` has clamped lam to the range.
        tab = self._tables(lam)
        la = -0.5 * F.softplus(-2 * lam)
        # -la is increasing along the nodes: the first node at or below la ends its step.
        pos = torch.searchsorted(-tab["la"], (-la).contiguous())
        k = torch.clamp(pos - 1, 0, self.num_timesteps - 1)
        u = ((la - tab["la"][k]) / tab["dla"][k]).clamp(0.0, 1.0)
        return (k.to(lam.dtype) + u) / self.num_timesteps

    # -- the network's timestep -----------------------------------------------------------------
    def timestep(self, t) -> torch.Tensor:
        """The network timestep $tN - 1$ of time $t$ (integer $k$ at $t = (k + 1)/N$), `(B,)`."""
        return as_time_only(t, self.T) * self.num_timesteps - 1

    def t_from_timestep(self, timestep) -> torch.Tensor:
        """The time $t = (k + 1)/N$ of network timestep $k$ (ints give the default float dtype).

        Raises:
            ValueError: a timestep outside $[-1, N - 1]$ (t outside [0, 1]).
        """
        k = torch.as_tensor(timestep)
        if not k.is_floating_point():
            k = k.to(torch.get_default_dtype())
        if bool(((k < -1) | (k > self.num_timesteps - 1)).any()):
            raise ValueError(
                f"timestep must lie in [-1, {self.num_timesteps - 1}] (t in [0, 1]), got "
                f"{k.min().item()} .. {k.max().item()}"
            )
        return (k + 1) / self.num_timesteps

    @property
    def prior_std(self) -> float:
        return 1.0

    def _parameters(self) -> dict:
        return {**super()._parameters(), "log_alpha": self._base["la"]}

    def __repr__(self) -> str:
        last = math.exp(2 * self._base["la"][-1].item())
        return f"DiscreteVPSDE(num_timesteps={self.num_timesteps}, alphas_cumprod[-1]={last:.4g})"
