"""EDM / k-diffusion denoisers D(x, sigma) as scores and back (no k-diffusion dependency)."""

import pytest
import torch

import sdescore
from sdescore.interop import as_denoiser, from_denoiser
from sdescore.toy import GaussianMixture

F64 = {"dtype": torch.float64}
SDES = {
    "vp": sdescore.VPSDE(0.1, 20.0),
    "ve": sdescore.VESDE(0.01, 50.0),
    "discrete": sdescore.DiscreteVPSDE.linear(),
}


def _data():
    means = torch.tensor([[-0.5, 0.3], [0.4, -0.2]], **F64)
    return GaussianMixture(means, torch.tensor([0.2, 0.1]))


def _edm_denoiser(data):
    """The exact denoiser E[x0 | x + sigma z] of the data, written directly in the VE variable."""
    ve = sdescore.VESDE(1e-3, 100.0)

    def D(x, sigma):
        t = ve.t_from_log_snr(-sigma.log())
        return x + sigma.square()[:, None] * data.marginal_score(x, t, ve)

    return D


@pytest.mark.parametrize("name", sorted(SDES))
def test_exact_denoiser_gives_the_exact_score_on_any_sde(name):
    sde, data = SDES[name], _data()
    model = from_denoiser(_edm_denoiser(data), sde)
    x = torch.randn(32, 2, **F64, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.05, 0.95, 32, **F64)
    assert torch.allclose(model(x, t), data.marginal_score(x, t, sde), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", sorted(SDES))
def test_denoiser_round_trip(name):
    sde, data = SDES[name], _data()
    D = as_denoiser(data.score_fn(sde), sde, eps=1e-3)
    sigma = torch.logspace(-1, 1, 16, **F64)
    x = torch.randn(16, 2, **F64, generator=torch.Generator().manual_seed(1)) * (1 + sigma[:, None])
    exact = _edm_denoiser(data)(x, sigma)
    assert torch.allclose(D(x, sigma), exact, rtol=1e-7, atol=1e-7)
    # and back: a score from the denoiser of a score is that score
    back = from_denoiser(D, sde)
    t = torch.linspace(0.1, 0.9, 16, **F64)
    assert torch.allclose(back(x, t), data.marginal_score(x, t, sde), rtol=1e-6, atol=1e-6)


def _karras_sigmas(n, sigma_min, sigma_max, rho=7.0):
    # k-diffusion's get_sigmas_karras, written out (Karras et al. 2022, eq. (5)), ending at 0
    ramp = torch.linspace(0, 1, n, **F64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, **F64)])


def _heun(D, x, sigmas):
    # k-diffusion's sample_heun without churn: the PF ODE dx/dsigma = (x - D(x, sigma)) / sigma
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = (x - D(x, s)) / s
        x_next = x + d * (s_next - s)
        if s_next > 0:
            d2 = (x_next - D(x_next, s_next)) / s_next
            x_next = x + 0.5 * (d + d2) * (s_next - s)
        x = x_next
    return x


def test_a_k_diffusion_style_sampler_drives_an_sdescore_model():
    sde, data = SDES["vp"], _data()
    D = as_denoiser(data.score_fn(sde), sde, eps=1e-3)
    sigmas = _karras_sigmas(18, D.sigma_min, D.sigma_max)
    x = torch.randn(4000, 2, **F64, generator=torch.Generator().manual_seed(2)) * D.sigma_max
    out = _heun(D, x, sigmas)
    # 4000 draws: the mean's standard error is ~0.007 per coordinate; 5 of them
    assert torch.allclose(out.mean(0), data.mean(), atol=0.035)


def test_k_diffusion_sampler_if_installed():
    K = pytest.importorskip("k_diffusion", reason="k-diffusion is not installed (optional)")
    sde, data = SDES["vp"], _data()
    D = as_denoiser(data.score_fn(sde), sde, eps=1e-3)
    sigmas = K.sampling.get_sigmas_karras(18, D.sigma_min, D.sigma_max, dtype=torch.float64)
    x = torch.randn(4000, 2, **F64, generator=torch.Generator().manual_seed(2)) * D.sigma_max
    out = K.sampling.sample_heun(D, x, sigmas, disable=True)
    assert torch.allclose(out.mean(0), data.mean(), atol=0.035)


def test_bad_inputs_are_refused():
    sde = SDES["vp"]
    D = as_denoiser(lambda x, t: -x, sde, eps=1e-3)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"sigma must lie in \[sigma_min, sigma_max\]"):
        D(x, 1e5)
    with pytest.raises(ValueError, match=r"sigma must be a number or shaped \(2,\)"):
        D(x, torch.ones(3))
    with pytest.raises(TypeError, match="sde must be a GaussianSDE"):
        from_denoiser(lambda x, s: x, object())
    with pytest.raises(TypeError, match="denoiser must be callable"):
        from_denoiser("edm", sde)
