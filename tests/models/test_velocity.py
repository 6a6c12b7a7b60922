"""The flow-matching velocity head, its exact conversions, the flow-matching loss as a DSM
weighting, and classifier-free guidance of a conditional velocity model."""

import pytest
import torch

import sdescore
from sdescore import VPSDE, ConditionalScoreModel, RectifiedFlowSDE, ScoreModel
from sdescore.losses import dsm_loss, flow_matching_loss, label_dropout_loss
from sdescore.toy import GaussianMixture

from problems import make_flow_sdes, mixture_2d

F64 = {"dtype": torch.float64}
SDES = {**make_flow_sdes(), "vp": VPSDE(0.1, 20.0)}


class OracleVelocity:
    """The exact velocity E[a' x0 + s' eps | x_t] of a mixture, as a network `(x, t)`."""

    def __init__(self, data, sde):
        self.data, self.sde = data, sde

    def __call__(self, x, t):
        s = self.data.marginal_score(x, t, self.sde)
        a, sig = self.sde.alpha(t)[:, None], self.sde.sigma(t)[:, None]
        da, ds = (c[:, None] for c in self.sde.alpha_sigma_derivatives(t))
        return da * (x + sig.square() * s) / a - ds * sig * s


def _xt(n=64, T=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(n, 2, **F64, generator=g)
    t = 0.01 + (T - 0.01) * torch.rand(n, **F64, generator=g)
    return x, t


@pytest.mark.parametrize("name", sorted(SDES))
def test_velocity_head_of_the_exact_velocity_is_the_exact_score(name):
    sde, data = SDES[name], mixture_2d()
    model = ScoreModel(OracleVelocity(data, sde), sde, "velocity")
    x, t = _xt(T=sde.T)
    exact = data.marginal_score(x, t, sde)
    assert torch.allclose(model(x, t), exact, rtol=1e-9, atol=1e-9)
    # velocity() is the network's output, and the probability-flow drift of the score
    assert torch.equal(model.velocity(x, t), model.net(x, t))
    pf = sde.probability_flow(data.score_fn(sde))
    assert torch.allclose(model.velocity(x, t), pf.drift(x, t), rtol=1e-9, atol=1e-9)
    # an eps-head model of the same score converts to the same velocity
    eps_net = lambda x, t: -sde.sigma(t)[:, None] * data.marginal_score(x, t, sde)  # noqa: E731
    eps_model = ScoreModel(eps_net, sde, "eps")
    assert torch.allclose(eps_model.velocity(x, t), model.velocity(x, t), rtol=1e-9, atol=1e-9)


def test_rectified_flow_velocity_is_noise_minus_data():
    # alpha = 1 - t, sigma = t: u = eps - x0, and the head's conversions are exact in closed form
    sde = RectifiedFlowSDE()
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(32, 3, **F64, generator=g), torch.randn(32, 3, **F64, generator=g)
    t = torch.rand(32, **F64, generator=g) * 0.99 + 0.005
    xt = (1 - t)[:, None] * x0 + t[:, None] * eps
    model = ScoreModel(lambda x, t: eps - x0, sde, "velocity")
    assert torch.allclose(model(xt, t), -eps / t[:, None], rtol=1e-10, atol=1e-10)
    # and it is not Salimans & Ho's v = alpha eps - sigma x0
    v_model = ScoreModel(lambda x, t: eps - x0, sde, "v")
    assert not torch.allclose(v_model(xt, t), model(xt, t), rtol=1e-3)


@pytest.mark.parametrize("name", ["rectified_flow", "alpha_sigma_cosine", "vp"])
@pytest.mark.parametrize("weighting", ["none", "likelihood", "callable"])
def test_flow_matching_is_dsm_with_weight_w_g4_over_2(name, weighting):
    sde = SDES[name]
    torch.manual_seed(0)
    net = sdescore.MLPScoreNet(2).double()
    x0 = mixture_2d().sample(128, generator=torch.Generator().manual_seed(2), **F64)
    t = torch.rand(128, **F64, generator=torch.Generator().manual_seed(3)) * (sde.T - 0.01) + 0.01
    noise = torch.randn(128, 2, **F64, generator=torch.Generator().manual_seed(4))
    g4 = lambda t: sde.diffusion(t).pow(4)  # noqa: E731
    w = {"none": lambda t: 1 + 0 * t, "likelihood": lambda t: 2 / sde.diffusion(t).square()}
    w["callable"] = lambda t: t.square()
    for head in ("velocity", "eps"):  # the raw-output path and the converted one
        model = ScoreModel(net, sde, head)
        fm = flow_matching_loss(
            model,
            x0,
            t=t,
            noise=noise,
            weighting=w[weighting] if weighting == "callable" else weighting,
        )
        dsm = dsm_loss(
            model, x0, t=t, noise=noise, weighting=lambda t: 0.5 * w[weighting](t) * g4(t)
        )
        assert torch.allclose(fm, dsm, rtol=1e-8, atol=1e-12), head
    # a plain score function takes the converted path too
    fm = flow_matching_loss(model.forward, x0, sde=sde, t=t, noise=noise)
    assert torch.allclose(fm, flow_matching_loss(model, x0, t=t, noise=noise), rtol=1e-9)


def test_flow_matching_loss_of_rectified_flow_in_closed_form_and_its_minimiser():
    sde = RectifiedFlowSDE()
    x0 = mixture_2d().sample(4096, generator=torch.Generator().manual_seed(5), **F64)
    noise = torch.randn(4096, 2, **F64, generator=torch.Generator().manual_seed(6))
    t = torch.rand(4096, **F64, generator=torch.Generator().manual_seed(7)) * 0.98 + 0.01
    zero = ScoreModel(lambda x, t: torch.zeros_like(x), sde, "velocity")
    loss = flow_matching_loss(zero, x0, t=t, noise=noise)
    assert torch.allclose(loss, (noise - x0).square().sum(1), rtol=1e-14)
    # the exact velocity E[u | x_t] is the minimiser: any perturbation raises the mean loss
    exact = ScoreModel(OracleVelocity(mixture_2d(), sde), sde, "velocity")
    base = flow_matching_loss(exact, x0, t=t, noise=noise).mean()
    for shift in (0.05, -0.05):
        off = ScoreModel(lambda x, t, c=shift: exact.net(x, t) + c, sde, "velocity")
        worse = flow_matching_loss(off, x0, t=t, noise=noise).mean()
        # E|u_hat + c - u|^2 = E|u_hat - u|^2 + d c^2 (+ a cross term of Monte Carlo size)
        assert worse - base == pytest.approx(2 * shift**2, abs=2e-3)


def test_flow_matching_loss_errors_are_named():
    sde = RectifiedFlowSDE()
    model = ScoreModel(lambda x, t: x, sde, "velocity")
    x0 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"weighting must be one of \('none', 'likelihood'\)"):
        flow_matching_loss(model, x0, weighting="sigma2")
    with pytest.raises(ValueError, match=r"weighting\(t\) must return a tensor shaped like t"):
        flow_matching_loss(model, x0, weighting=lambda t: 1.0)
    with pytest.raises(TypeError, match="sde must be a GaussianSDE"):
        flow_matching_loss(lambda x, t: x, x0, sde=3)
    bad = ScoreModel(lambda x, t: x[:, :1], sde, "velocity")
    with pytest.raises(ValueError, match="net\\(x, t\\) must return a tensor shaped like x"):
        flow_matching_loss(bad, x0)


class ConditionalOracleVelocity:
    """Exact velocity of component y of a mixture, and of the whole mixture for the null label."""

    def __init__(self, sde):
        self.sde = sde
        self.parts = [
            OracleVelocity(GaussianMixture(m[None], s), sde)
            for m, s in zip(MEANS, STDS, strict=True)
        ]
        self.full = OracleVelocity(_two_blobs(), sde)

    def __call__(self, x, t, y):
        out = self.full(x, t)
        for k, part in enumerate(self.parts):
            out = torch.where((y == k)[:, None], part(x, t), out)
        return out


MEANS = torch.tensor([[-2.0, 0.0], [2.0, 1.0]], **F64)
STDS = torch.tensor([0.3, 0.5], **F64)


def _two_blobs():
    return GaussianMixture(MEANS, STDS)


def test_classifier_free_guidance_of_a_conditional_velocity_model():
    sde = RectifiedFlowSDE()
    net = ConditionalOracleVelocity(sde)
    model = ConditionalScoreModel(net, sde, "velocity", num_classes=2)
    x, t = _xt(T=sde.T, seed=8)
    y = torch.ones(64, dtype=torch.long)
    # guidance of scores is guidance of velocities: u = f x - g^2 s / 2 is affine in s
    w = 1.5
    guided = sdescore.ClassifierFreeGuidance(model, 1, w=w)
    u_c, u_u = net(x, t, y), net(x, t, torch.full_like(y, 2))
    g2 = sde.diffusion(t).square()[:, None]
    u_guided = sde.drift(x, t) - 0.5 * g2 * guided(x, t)
    assert torch.allclose(u_guided, (1 + w) * u_c - w * u_u, rtol=1e-9, atol=1e-9)
    # w = 0 samples class 1 exactly: the mean of N((2, 1), 0.5^2)
    pf = sde.probability_flow(sdescore.ClassifierFreeGuidance(model, 1, w=0.0))
    s = pf.sample(
        (2000, 2), method="auto", steps=20, generator=torch.Generator().manual_seed(9), **F64
    )
    # 2000 draws of std 0.5: standard error 0.011; 4 of them, plus the solver's error
    assert torch.allclose(s.mean(0), torch.tensor([2.0, 1.0], **F64), atol=0.05)
    assert torch.allclose(s.std(0), torch.full((2,), 0.5, **F64), rtol=0.05)
    # guidance sharpens class 1 away from class 0: the guided mean moves further along (4, 1)
    g = sde.probability_flow(sdescore.ClassifierFreeGuidance(model, 1, w=2.0))
    sg = g.sample(
        (2000, 2), method="auto", steps=20, generator=torch.Generator().manual_seed(9), **F64
    )
    assert (sg.mean(0) - s.mean(0)) @ torch.tensor([4.0, 1.0], **F64) > 0.05


def test_label_dropout_trains_a_conditional_velocity_model_with_flow_matching():
    # The loss composes with label dropout; a few steps of Adam on a tiny MLP reduce it.
    sde = RectifiedFlowSDE()
    torch.manual_seed(0)
    net = sdescore.ConditionalMLPScoreNet(2, num_classes=2)
    model = ConditionalScoreModel(net, sde, "velocity", num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(10)
    comp = torch.randint(0, 2, (256,), generator=g)
    x0 = (MEANS[comp] + STDS[comp][:, None] * torch.randn(256, 2, **F64, generator=g)).float()

    def loss(seed):
        gen = torch.Generator().manual_seed(seed)
        return label_dropout_loss(
            model, x0, labels=comp, loss=flow_matching_loss, generator=gen
        ).mean()

    first = loss(0).item()
    for step in range(150):  # fresh t, noise and dropout every step
        opt.zero_grad()
        loss(step + 1).backward()
        opt.step()
    # measured: 6.98 untrained, 2.11 after 150 steps (the unconditional minimum is 3.32)
    assert loss(0).item() < 0.6 * first


def test_a_flow_matching_model_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    sde = RectifiedFlowSDE(0.01, T=0.99)
    model = ScoreModel(sdescore.MLPScoreNet(2), sde, "velocity")
    sdescore.save_model(model, tmp_path / "fm.pt")
    back = sdescore.load_model(tmp_path / "fm.pt")
    assert isinstance(back.sde, RectifiedFlowSDE) and back.parameterization == "velocity"
    assert (back.sde.sigma_min, back.sde.T, back.sde.prior_std) == (0.01, 0.99, sde.prior_std)
    x, t = torch.randn(5, 2), torch.rand(5) * 0.9 + 0.05
    assert torch.equal(back(x, t), model(x, t))
