"""With the exact score every sampler reaches the right law: moments, KS and mode weights.

Targets are the laws at the end time eps (the data diffused to eps), which is what a sampler
that stops at eps produces. Seeds are fixed, so each assertion is deterministic; the tolerances
are stated as multiples of the Monte Carlo standard error (SE) plus, where a method has a known
discretisation bias at the step count used, an allowance for it.
"""

import math

import pytest
import torch
from scipy import stats

import sdescore

from problems import gaussian_1d, mixture_2d

EPS = 1e-3
N = 4000
MU, S0 = 0.7, 0.4

# name -> the options of sample (with "method" where it is a configured solver object)
SDE_RUNS = {
    "euler_maruyama": {"steps": 400},
    "reverse_diffusion": {"steps": 400},
    "ancestral": {"steps": 400},
    "pc": {"steps": 200},
    "annealed_langevin": {"steps": 50, "method": sdescore.AnnealedLangevin(corrector_steps=40)},
    "gotta_go_fast": {"method": sdescore.GottaGoFast(rtol=1e-3, atol=1e-3)},
    "euler": {"steps": 400},
    "srk": {"steps": 60},
    "heun": {"steps": 100},
}
ODE_RUNS = {
    "auto": {},
    "dpm_solver": {},
    "dpm_solver-multi": {"method": sdescore.DPMSolver(multistep=True, grid="logsnr")},
    "dopri5": {},
    "rk4": {"steps": 40},
}


def _target(sde):
    t = torch.tensor(EPS, dtype=torch.float64)
    alpha, sigma = sde.alpha(t).item(), sde.sigma(t).item()
    return alpha * MU, math.sqrt(alpha**2 * S0**2 + sigma**2)


def _check_gaussian_law(x, mean, std, bias=0.0):
    x = x.reshape(-1).double()
    se_mean, se_std = std / math.sqrt(N), std / math.sqrt(2 * N)
    assert abs(x.mean().item() - mean) <= 4 * se_mean + bias, (x.mean().item(), mean)
    assert abs(x.std().item() - std) <= 4 * se_std + bias, (x.std().item(), std)
    # KS at level 1e-3; with the seed fixed the outcome is deterministic.
    assert stats.kstest(x.numpy(), "norm", args=(mean, std)).pvalue > 1e-3


@pytest.mark.parametrize("kind", ["vp", "ve"])
@pytest.mark.parametrize("method", sorted(SDE_RUNS))
def test_reverse_sde_samplers_reach_the_gaussian_law(method, kind):
    sde = sdescore.VPSDE(0.1, 20.0) if kind == "vp" else sdescore.VESDE(0.01, 50.0)
    rs = sde.reverse(gaussian_1d(MU, S0).score_fn(sde))
    g = torch.Generator().manual_seed(1)
    opts = {"method": method, **SDE_RUNS[method]}
    x = rs.sample((N, 1), generator=g, dtype=torch.float64, **opts)
    # First-order methods at 400 steps carry an O(1/steps) bias; allow 0.01 (2.5% of S0).
    _check_gaussian_law(x, *_target(sde), bias=0.01)


@pytest.mark.parametrize("method", sorted(ODE_RUNS))
def test_probability_flow_samplers_reach_the_gaussian_law(method):
    sde = sdescore.VPSDE(0.1, 20.0)
    pf = sde.probability_flow(gaussian_1d(MU, S0).score_fn(sde))
    g = torch.Generator().manual_seed(1)
    opts = {"method": method.split("-")[0], **ODE_RUNS[method]}
    x = pf.sample((N, 1), generator=g, dtype=torch.float64, **opts)
    _check_gaussian_law(x, *_target(sde))


def test_the_law_checks_have_power():
    # Euler-Maruyama with 3 steps is visibly wrong: the same checks must reject it.
    sde = sdescore.VPSDE(0.1, 20.0)
    rs = sde.reverse(gaussian_1d(MU, S0).score_fn(sde))
    x = rs.sample((N, 1), steps=3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with pytest.raises(AssertionError):
        _check_gaussian_law(x, *_target(sde), bias=0.01)


def test_errors_shrink_as_steps_grow():
    sde = sdescore.VPSDE(0.1, 20.0)
    mean, std = _target(sde)
    rs = sde.reverse(gaussian_1d(MU, S0).score_fn(sde))
    for method in ("euler_maruyama", "ancestral", "reverse_diffusion"):
        errs = []
        for steps in (4, 16, 64):
            x = rs.sample(
                (N, 1),
                method=method,
                steps=steps,
                dtype=torch.float64,
                generator=torch.Generator().manual_seed(2),
            )
            errs.append(abs(x.std().item() - std))
        # SE of the std is 0.0045; the coarse errors are far above it.
        assert errs[0] > errs[2] and errs[0] > 0.03, (method, errs)


def test_gotta_go_fast_tolerance_knob():
    # Tighter tolerance: more score calls and a smaller error in the std (target 0.400).
    sde = sdescore.VPSDE(0.1, 20.0)
    rs = sde.reverse(gaussian_1d(MU, S0).score_fn(sde))
    std, nfe = [], []
    for tol in (1e-1, 1e-3):
        res = rs.sample(
            (N, 1),
            method=sdescore.GottaGoFast(rtol=tol, atol=tol),
            return_info=True,
            generator=torch.Generator().manual_seed(1),
            dtype=torch.float64,
        )
        std.append(abs(res.samples.std().item() - _target(sde)[1]))
        nfe.append(res.nfe)
    assert nfe[1] > 2 * nfe[0] and std[1] < 0.5 * std[0], (nfe, std)


def _component_fraction(data, x):
    """Fraction of samples whose nearest component (by posterior at t=0) is component 0."""
    logits, _, _ = data._components(
        x, torch.ones(len(x), dtype=x.dtype), torch.zeros(len(x), dtype=x.dtype)
    )
    return (logits.argmax(1) == 0).double().mean().item()


@pytest.mark.parametrize(
    ("kind", "method", "opts"),
    [
        ("sde", "euler_maruyama", {"steps": 300}),
        ("sde", "ancestral", {"steps": 200}),
        ("sde", "pc", {"steps": 150}),
        ("sde", "srk", {"steps": 60}),
        ("sde", sdescore.GottaGoFast(rtol=1e-3, atol=1e-3), {}),
        ("ode", "auto", {}),
        ("ode", "dpm_solver", {}),
        ("ode", sdescore.TorchDiffEq("dopri5", rtol=1e-4, atol=1e-4), {}),
    ],
    ids=[
        "euler_maruyama",
        "ancestral",
        "pc",
        "srk",
        "gotta_go_fast",
        "auto",
        "dpm_solver",
        "dopri5",
    ],
)
def test_mixture_mode_weights(kind, method, opts):
    sde = sdescore.VPSDE(0.1, 20.0)
    data = mixture_2d()  # weights 0.3 / 0.7, anisotropic components
    proc = (
        sde.reverse(data.score_fn(sde))
        if kind == "sde"
        else sde.probability_flow(data.score_fn(sde))
    )
    x = proc.sample(
        (N, 2),
        method=method,
        generator=torch.Generator().manual_seed(5),
        dtype=torch.float64,
        **opts,
    )
    exact = sde.perturb(
        data.sample(200_000, generator=torch.Generator().manual_seed(6), dtype=torch.float64),
        EPS,
        generator=torch.Generator().manual_seed(7),
    )[0]
    p_ref = _component_fraction(data, exact)
    se = math.sqrt(p_ref * (1 - p_ref) / N)  # ~0.0073; the reference's own SE is 10x smaller
    assert abs(_component_fraction(data, x) - p_ref) <= 4 * se
    # and the second moments match the exact law's
    torch.testing.assert_close(x.std(0), exact.std(0), rtol=0.05, atol=0)


def test_tweedie_denoise_is_the_posterior_mean():
    sde = sdescore.VPSDE(0.1, 20.0)
    score = gaussian_1d(MU, S0).score_fn(sde)
    pf = sde.probability_flow(score)
    z = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    x = pf.sample(x_T=z, steps=12)
    x0 = pf.sample(x_T=z, steps=12, denoise=True)
    t = torch.tensor(EPS, dtype=torch.float64)
    alpha, sigma = sde.alpha(t), sde.sigma(t)
    # E[x0 | x_t] for Gaussian data: mu + alpha s0^2 (x - alpha mu) / (alpha^2 s0^2 + sigma^2)
    expected = MU + alpha * S0**2 * (x - alpha * MU) / (alpha**2 * S0**2 + sigma**2)
    torch.testing.assert_close(x0, expected, rtol=0, atol=1e-12)
