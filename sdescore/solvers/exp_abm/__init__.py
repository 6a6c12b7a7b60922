r"""Adaptive exponential Adams predictor-corrector in log-SNR for the likelihood ODE.

For a Gaussian-kernel SDE ($x_t = \alpha_t x_0 + \sigma_t \epsilon$, half log-SNR
$\lambda_t = \log(\alpha_t/\sigma_t)$) the probability-flow ODE in noise prediction
$\hat\epsilon = -\sigma_t s(x, t)$ has the exact variation-of-constants form (Lu et al. 2022,
DPM-Solver, eq. (3.4))

$$x_t = \frac{\alpha_t}{\alpha_s} x_s - \alpha_t \int_{\lambda_s}^{\lambda_t} e^{-\lambda}
\hat\epsilon(x_\lambda, \lambda)\,d\lambda ,$$

and the log-density change splits the same way (Song et al. 2021, eq. (39); $g^2 = -2\sigma^2
\,d\lambda/dt$ for these SDEs):

$$\Delta\log p = \int_\varepsilon^T \nabla\cdot v\,dt = d \log\frac{\alpha_T}{\alpha_\varepsilon}
+ \int_{\lambda_T}^{\lambda_\varepsilon} h(\lambda)\,d\lambda, \qquad
h = -\sigma^2\,\nabla\cdot s \in [0, d] \text{ (for a log-concave kernel part)} .$$

The linear part is exact; only $\hat\epsilon$ and $h$ are approximated. Each is written as a
known shape times a polynomial in $\lambda$ through the last values, and the product is
integrated exactly over the step. The shape is the one a Gaussian gives: for data
$N(\mu, c^2 I)$, with $g(\lambda) = 1/(1 + c^2 e^{2\lambda})$,

$$h = d\,g(\lambda), \qquad e^{-\lambda}\hat\epsilon \propto e^{-\lambda}\sqrt{g(\lambda)}
\text{ along the path},$$

so the polynomial factors are constant and any step is exact. For other data $c^2$ is
re-estimated at every step from the latest $h$ (the fraction $\varphi = h/d$ gives
$C = (1/\varphi - 1)e^{-2\lambda}$) and the polynomials carry the departure from the shape.
Where the noise dominates ($\varphi \to 1$) the shape is flat and the scheme is the plain
exponential Adams method in noise prediction (as DPM-Solver's multistep form); near the data
($\varphi \to 0$) it follows $h \propto e^{-2\lambda}$ and $\hat\epsilon \propto e^{-\lambda}$,
which polynomials in $\lambda$ fit poorly (they cost the plain method a dozen steps from
$\sigma(\varepsilon) \approx 10^{-6}$ under sub-VP). The weights stay linear in the values of
$h$ and depend on the step-control channel only, so resampled Hutchinson probes stay unbiased.

Each step is one network pass: an Adams-Bashforth-type predictor of order $k$ gives $x^P_t$;
the score and divergence are evaluated there; an Adams-Moulton-type corrector of order $k + 1$,
through the new value, gives the accepted $x_t$ and the step's share of $\Delta\log p$ (the
evaluation at $x^P_t$ is reused, as in UniPC, Zhao et al. 2023). The difference between
predictor and corrector estimates the local error. A step is accepted when, for the worst
example, (i) $x$ is within `atol' + rtol' * |x|`, (ii) the step's $\int h\,d\lambda$ is within
`atol' * d` nats, and (iii) so is the error of $x$ *as it reaches the log-density*: a path moved
by $\delta$ at time $t$ yields $\log p_t(x_t + \delta)$ instead of $\log p_t(x_t)$, an error of
$\nabla\log p_t \cdot \delta = -\hat\epsilon\cdot\delta/\sigma_t$ nats, which near the data
(score $\sim 1/\sigma$) is far larger than (i) suggests. The next step is sized by a PI
controller on the error ratios (Gustafsson 1991; Hairer & Wanner, Sec. IV.2) and never exceeds
one unit of $\lambda$, so that no feature of the path as wide as that falls between two nodes
unseen (a narrower one can, as with any solver that samples the path: a bump 0.1 wide in
$\lambda$ was missed at some tolerances, as by dopri5).

The user's `rtol`, `atol` are on dopri5's scale: `rtol' = TOLERANCE_SCALE * rtol` (and so for
atol) are what the tests above compare with (`internal_tolerances`). Both controllers bound an
estimate of the local error, but not the same estimate of the same error (dopri5 the RMS over
the batch of its embedded pair's difference; here the worst example's predictor-corrector gap
on three channels), so the same numbers gave different accuracies. The scale is measured
(`benchmarks/likelihood.py --tolerances`, docs/likelihood.md): with it the user's rtol = atol =
1e-5 gives at least dopri5's accuracy at 1e-5, mean and worst point, in no more score calls
on eight Gaussians (the 2021 code's setting) and on a trained MLP; on image-like mixtures it
takes fewer calls than dopri5 at every tolerance but is at the same value often less accurate
(up to 10x under VE): no one constant serves both.

Why this and not dopri5 in $t$: on data as sharp as 8-bit images the divergence varies on a time
scale $\sigma_{data}^2/\beta$ near the data and in short bursts where a path leaves its mode;
dopri5 spends 6 network passes per step there and needs a tight tolerance on both channels.
Here a step costs one pass, the linear part is exact and the error of the log-density channel
is controlled directly (measured in `benchmarks/likelihood.py`).

The package, one concept a module: `tolerances` (what a user's tolerance means, the error
estimate's floor), `step_control` (the step controller's constants and the adaptive options),
`weights` (the quadrature weights of the shape-times-polynomial fits), `system` (one batch's
$(x, \Delta\log p)$ system: coefficients, network evaluation, control rows), `multistep` (one
predictor-corrector step for the batch), `shared_step` (the adaptive and fixed-step loops with one
step for the batch), `per_example` (a step per example), `solve` (`exp_abm_likelihood`, which
dispatches between them), `solution` (`ExpABMSolution`) and `solver` (the `ExpABM` solver object).
"""

from .solution import ExpABMSolution
from .solve import exp_abm_likelihood
from .solver import ExpABM
from .tolerances import (
    DEFAULT_TOLERANCE,
    ERROR_FLOOR,
    TARGET_TOLERANCE,
    TOLERANCE_SCALE,
    internal_tolerances,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "ERROR_FLOOR",
    "ExpABM",
    "ExpABMSolution",
    "TARGET_TOLERANCE",
    "TOLERANCE_SCALE",
    "exp_abm_likelihood",
    "internal_tolerances",
]
