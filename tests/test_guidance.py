"""Guided scores against the Gaussian-mixture oracle (class = mixture component).

Exact references: component k diffused by the SDE is the class-conditional law, its
responsibility the exact noisy classifier (sdescore.toy.MixtureClassifier).
"""

import math

import pytest
import torch

import sdescore
from sdescore.guidance import ClassifierFreeGuidance, ClassifierGuidance
from sdescore.toy import (
    ExactConditionalScore,
    GaussianMixture,
    MixtureClassifier,
    mixture_component,
)
from tests.problems import make_sdes, mixture_2d, vp_as_linear

SDES = {**make_sdes(), "linear_vp": vp_as_linear()}
F64 = torch.float64


def _points(sde, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(n, 2, generator=g, dtype=F64)
    t = sde.T * (0.02 + 0.98 * torch.rand(n, generator=g, dtype=F64))
    return x, t


def _separated():
    """Two isotropic modes at (-1.5, 0) and (1.5, 0), std 0.6, equal weights."""
    means = torch.tensor([[-1.5, 0.0], [1.5, 0.0]], dtype=F64)
    return GaussianMixture(means, 0.6)


@pytest.mark.parametrize("name", list(SDES))
def test_exact_classifier_scale_one_is_component_score(name):
    # Bayes: s(x) + grad log p_t(k | x) = grad log p_t(x | k), exactly, at every t.
    sde, data = SDES[name], mixture_2d()
    x, t = _points(sde)
    clf = MixtureClassifier(data, sde)
    for k in range(data.num_components):
        guided = ClassifierGuidance(data.score_fn(sde), clf, k, scale=1.0)
        want = mixture_component(data, k).marginal_score(x, t, sde)
        got = guided(x, t)
        assert got.dtype == F64
        torch.testing.assert_close(got, want, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", ["vp", "ve", "linear_cosine"])
@pytest.mark.parametrize("w", [-1.0, 0.0, 0.5, 3.0])
def test_classifier_free_matches_tilted_density(name, w):
    # (1 + w) s(x, t, y) - w s(x, t, null) is the score of p_t(x | y)^(1+w) p_t(x)^(-w): checked
    # against autograd of the closed-form log-densities, at times across [0.02 T, T].
    sde, data = SDES[name], mixture_2d()
    x, t = _points(sde, seed=1)
    model = ExactConditionalScore(data, sde)
    for k in range(data.num_components):
        xg = x.clone().requires_grad_(True)
        logq = (1 + w) * mixture_component(data, k).marginal_log_prob(
            xg, t, sde
        ) - w * data.marginal_log_prob(xg, t, sde)
        (want,) = torch.autograd.grad(logq.sum(), xg)
        got = ClassifierFreeGuidance(model, k, w=w)(x, t)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_classifier_free_one_network_call_on_doubled_batch():
    sde, data = SDES["vp"], mixture_2d()
    exact = ExactConditionalScore(data, sde)
    calls = []

    def model(x, t, y):
        calls.append((x.shape[0], y.tolist()))
        return exact(x, t, y)

    model.null_label, model.sde = 2, sde
    x, t = _points(sde, n=3)
    ClassifierFreeGuidance(model, 1, w=2.0)(x, t)
    assert calls == [(6, [1, 1, 1, 2, 2, 2])]
    calls.clear()
    ClassifierFreeGuidance(model, 1, w=0.0)(x, t)  # w = 0 is the conditional pass alone
    assert calls == [(3, [1, 1, 1])]


def test_classifier_guidance_gradient_only_through_classifier():
    sde, data = SDES["vp"], mixture_2d()
    x, t = _points(sde, n=5)
    x.requires_grad_(False)
    guided = ClassifierGuidance(data.score_fn(sde), MixtureClassifier(data, sde), 0)
    with torch.no_grad():  # samplers may run without grad; the classifier gradient still works
        out = guided(x, 0.5)
    assert not x.requires_grad and not out.requires_grad
    want = mixture_component(data, 0).marginal_score(x, 0.5, sde)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-8)
    # With x requiring grad in grad mode the result is differentiable (exact divergences).
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(guided(xg, 0.5).sum(), xg)
    assert torch.isfinite(g).all()


def _guided_samples(scale, n=4000, steps=200, seed=0):
    sde, data = SDES["vp"], _separated()
    guided = ClassifierGuidance(data.score_fn(sde), MixtureClassifier(data, sde), 0, scale=scale)
    g = torch.Generator().manual_seed(seed)
    rev = sde.reverse(guided)
    return data, rev.sample((n, 2), method="reverse_diffusion", steps=steps, generator=g, dtype=F64)


def test_guided_samples_reproduce_the_component_law():
    data, x = _guided_samples(1.0)
    n = x.shape[0]
    # Component 0 is N((-1.5, 0), 0.36 I). Standard errors: mean 0.6 / sqrt(n) = 0.0095; a
    # variance 0.36 * sqrt(2 / n) = 0.008. Bounds are 5 standard errors plus 0.01 for the
    # 200-step discretisation.
    torch.testing.assert_close(x.mean(0), torch.tensor([-1.5, 0.0], dtype=F64), rtol=0, atol=0.06)
    cov = torch.cov(x.T)
    torch.testing.assert_close(cov, 0.36 * torch.eye(2, dtype=F64), rtol=0, atol=0.05)
    # Mass on the other mode: exactly P(Z > 1.5 / 0.6) = 0.0062 under component 0; bound it
    # by that plus 5 binomial standard errors (0.0062 + 0.0062).
    p_other = 0.5 * math.erfc(2.5 / math.sqrt(2))
    other = (x[:, 0] > 0).double().mean().item()
    assert other < p_other + 5 * math.sqrt(p_other / n)


def test_larger_scale_concentrates_monotonically():
    # p(x) p(y|x)^gamma: raising gamma moves mass away from the other class. With common random
    # numbers (same seed), the mean responsibility of class 0 and the mean of x_1 are monotone.
    resp, mean = [], []
    for scale in (0.0, 1.0, 2.0, 4.0):
        data, x = _guided_samples(scale, n=1000, steps=100)
        r = MixtureClassifier(data, SDES["vp"]).log_prob(x, 1e-3).exp()[:, 0]
        resp.append(r.mean().item())
        mean.append(x[:, 0].mean().item())
    assert resp[0] < 0.6 and resp[1] > 0.98
    assert all(a < b for a, b in zip(resp[:-1], resp[1:], strict=True))
    assert all(a > b for a, b in zip(mean[:-1], mean[1:], strict=True))


def test_guided_likelihood_is_the_component_likelihood():
    # A guided score is a score: likelihood() of it (exact trace, which differentiates the
    # classifier gradient) gives the component's log-density.
    sde, data = SDES["vp"], _separated()
    comp = mixture_component(data, 0)
    x = comp.sample(6, generator=torch.Generator().manual_seed(3), dtype=F64)
    guided = ClassifierGuidance(data.score_fn(sde), MixtureClassifier(data, sde), 0)
    kw = dict(estimator="exact", rtol=1e-7, atol=1e-7)
    got = sdescore.likelihood(guided, x, **kw).log_prob
    # Same ODE with the component's own exact score: equal up to the solver tolerance.
    want = sdescore.likelihood(comp.score_fn(sde), x, sde=sde, **kw).log_prob
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # And both are the true log-density up to the prior mismatch at T (alpha(1) mu ~ 0.01 off).
    torch.testing.assert_close(got, comp.marginal_log_prob(x, 1e-5, sde), rtol=0, atol=0.03)


def test_bad_labels_are_refused():
    sde, data = SDES["vp"], mixture_2d()
    score, clf = data.score_fn(sde), MixtureClassifier(data, sde)
    x, t = _points(sde, n=4)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 1\]"):
        ClassifierGuidance(score, clf, 2)(x, t)
    with pytest.raises(ValueError, match="x has batch 4 but y holds 3"):
        ClassifierGuidance(score, clf, torch.tensor([0, 1, 0]))(x, t)
    with pytest.raises(TypeError, match="integer class labels"):
        ClassifierGuidance(score, clf, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(TypeError, match="integer class labels"):
        ClassifierGuidance(score, clf, torch.tensor([True]))
    with pytest.raises(TypeError, match="y must be an int"):
        ClassifierGuidance(score, clf, 1.0)
    with pytest.raises(ValueError, match="shape"):
        ClassifierGuidance(score, clf, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"must return logits \(4, K\)"):
        ClassifierGuidance(score, lambda x, t: x[:, 0], 0)(x, t)
    model = ExactConditionalScore(data, sde)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 1\]"):
        ClassifierFreeGuidance(model, 2, w=1.0)  # the null label is not a class to guide to
    with pytest.raises(TypeError, match="guidance_scale"):
        ClassifierFreeGuidance(model, 0, guidance_scale=7.5)
    with pytest.raises(ValueError, match="w must be finite"):
        ClassifierFreeGuidance(model, 0, w=float("nan"))


def test_a_null_label_other_than_the_models_is_refused():
    # Issue 25, items 15 and 16: null_label=99 reached the embedding (an IndexError), and a
    # null label inside the class range guided silently against a real class.
    sde = SDES["vp"]
    net = sdescore.ConditionalMLPScoreNet(2, 3, hidden=16, depth=2).double()
    model = sdescore.ConditionalScoreModel(net, sde, "eps", num_classes=3)
    exact = ExactConditionalScore(mixture_2d(), sde)
    for m, k in ((model, 3), (exact, 2)):
        for bad in (99, 1, k + 1):
            with pytest.raises(ValueError, match=f"must be the model's own null label {k}"):
                ClassifierFreeGuidance(m, 0, w=1.0, null_label=bad)
        assert ClassifierFreeGuidance(m, 0, w=1.0, null_label=k).null_label == k
    # A network called directly (no model to ask) says which labels it has, on the CPU.
    x, t = _points(sde, n=4)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 3\] .* got labels from 0 to 99"):
        net(x, t, torch.tensor([0, 1, 2, 99]))
    with pytest.raises(ValueError, match=r"y must lie in \[0, 2\] .* from -1 to 0"):
        exact(x, t, torch.tensor([0, -1, 0, 0]))
    # A null label below 1 is a bad value (ValueError), a non-integer a bad type.
    for bad, error in ((0, ValueError), (-2, ValueError), (1.0, TypeError), ("1", TypeError)):
        with pytest.raises(error, match="null_label must be an int >= 1"):
            ClassifierFreeGuidance(lambda x, t, y: net(x, t, y), 0, w=1.0, null_label=bad)
    plain = ClassifierFreeGuidance(lambda x, t, y: net(x, t, y), 0, w=1.0, null_label=99)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 3\]"):
        plain(x, t)


def test_a_classifier_whose_logits_ignore_x_is_refused():
    # Issue 25, item 15: torch's "does not require grad" from inside autograd before.
    sde, data = SDES["vp"], mixture_2d()
    x, t = _points(sde, n=4)
    logits = torch.zeros(4, 2, dtype=F64)
    for clf in (
        lambda x, t: logits,
        lambda x, t: x.detach()[:, :2] * 2,
        lambda x, t: 0 * t[:, None] + logits,
    ):
        guided = ClassifierGuidance(data.score_fn(sde), clf, 0)
        with pytest.raises(ValueError, match="logits that do not depend on x"):
            guided(x, t)
        with pytest.raises(ValueError, match="logits that do not depend on x"):
            guided.log_prob_grad(x.clone().requires_grad_(True), t)


def test_conditional_score_model_and_label_dropout():
    sde = SDES["vp"]
    net = sdescore.ConditionalMLPScoreNet(2, 3, hidden=16, depth=2).double()
    model = sdescore.ConditionalScoreModel(net, sde, "eps", num_classes=3)
    x, t = _points(sde, n=4)
    torch.testing.assert_close(model(x, t), model(x, t, 3))  # None is the null label
    assert model(x, t, torch.tensor([0, 1, 2, 3])).shape == x.shape
    with pytest.raises(ValueError, match=r"\[0, 3\] \(3 is the null label\)"):
        model(x, t, 4)
    with pytest.raises(TypeError, match="integer class labels"):
        model(x, t, torch.zeros(4))
    # Plain ScoreModel behaviour is unchanged: the conditioned model is a score function.
    torch.testing.assert_close(model.conditioned(1)(x, t), model(x, t, 1))
    seen = []
    labeled = model.labeled

    def spy(x, t, y):
        seen.append(y)
        return labeled(x, t, y)

    model.labeled = spy
    x0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    y = torch.zeros(4000, dtype=torch.long)
    g = torch.Generator().manual_seed(1)
    loss = sdescore.label_dropout_loss(model, x0, labels=y, p_uncond=0.2, generator=g)
    assert loss.shape == (4000,)
    # Dropout fraction 0.2 +- 5 standard errors (sqrt(0.16 / 4000) = 0.0063).
    assert abs((seen[0] == 3).double().mean().item() - 0.2) < 0.032
    assert set(seen[0].tolist()) == {0, 3}
    with pytest.raises(ValueError, match="p_uncond must lie in"):
        sdescore.label_dropout_loss(model, x0, labels=y, p_uncond=1.5)
    with pytest.raises(TypeError, match="ConditionalScoreModel"):
        sdescore.label_dropout_loss(data_score := (lambda x, t: x), x0, labels=y)
    del data_score


def test_classifier_loss_is_cross_entropy_of_perturbed_data():
    sde, data = SDES["ve"], mixture_2d()
    clf = MixtureClassifier(data, sde)
    g = torch.Generator().manual_seed(0)
    x0 = data.sample(8, generator=g, dtype=F64)
    y = torch.tensor([0, 1] * 4)
    noise = torch.randn(8, 2, generator=g, dtype=F64)
    loss = sdescore.classifier_loss(clf, x0, y, sde=sde, t=0.3, noise=noise)
    x_t = (
        x0 * sde.alpha(torch.tensor(0.3, dtype=F64))
        + sde.sigma(torch.tensor(0.3, dtype=F64)) * noise
    )
    want = -clf.log_prob(x_t, 0.3).gather(1, y[:, None])[:, 0]
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 1\]"):
        sdescore.classifier_loss(clf, x0, y + 1, sde=sde)
