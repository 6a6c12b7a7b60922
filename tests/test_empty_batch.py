"""One behaviour for an empty batch (B = 0) at every public entry point: a clear ValueError.

The shared `check_state` refuses it, so each entry point below must reach that check (or, for
the ones that take a shape or a count, `check_shape` / `check_int`) before doing any work.
"""

import pytest
import torch

import sdescore
from sdescore import losses
from sdescore.toy import eight_gaussians

SDE = sdescore.VPSDE(0.1, 20.0)
DATA = eight_gaussians()
EMPTY = torch.empty(0, 2, dtype=torch.float64)
SCORE = DATA.score_fn(SDE)


def _model(parameterization="eps"):
    net = sdescore.MLPScoreNet(2, hidden=16, depth=1).double()
    return sdescore.ScoreModel(net, SDE, parameterization)


ENTRY_POINTS = {
    "sde.drift": lambda: SDE.drift(EMPTY, 0.5),
    "sde.sde": lambda: SDE.sde(EMPTY, 0.5),
    "sde.marginal_prob": lambda: SDE.marginal_prob(EMPTY, 0.5),
    "sde.perturb": lambda: SDE.perturb(EMPTY, 0.5),
    "sde.prior_logp": lambda: SDE.prior_logp(EMPTY),
    "sde.prior_sampling": lambda: SDE.prior_sampling((0, 2)),
    "ScoreModel": lambda: _model()(EMPTY, 0.5),
    "ScoreModel.energy": lambda: _model("energy").energy(EMPTY, 0.5),
    "ScoreModel.fit_baseline": lambda: _model().fit_baseline(EMPTY),
    "dsm_loss": lambda: losses.dsm_loss(_model(), EMPTY),
    "dsm_loss(importance_sampling)": lambda: losses.dsm_loss(
        _model(), EMPTY, weighting="likelihood", importance_sampling=True
    ),
    "ncsn_loss": lambda: losses.ncsn_loss(_model(), EMPTY, t_min=0.01),
    "ddpm_loss": lambda: losses.ddpm_loss(_model(), EMPTY),
    "ism_loss": lambda: losses.ism_loss(_model(), EMPTY),
    "ssm_loss": lambda: losses.ssm_loss(_model(), EMPTY),
    "toy.sample": lambda: DATA.sample(0),
    "toy.log_prob": lambda: DATA.log_prob(EMPTY),
    "toy.score": lambda: DATA.score(EMPTY),
    "toy.marginal_score": lambda: DATA.marginal_score(EMPTY, 0.5, SDE),
    "toy.ExactScore": lambda: SCORE(EMPTY, 0.5),
    "toy.GaussianMixture(K=0)": lambda: sdescore.toy.GaussianMixture(EMPTY, 1.0),
    "toy.sample_toy": lambda: sdescore.toy.sample_toy("two_moons", 0),
    "reverse.sample": lambda: SDE.reverse(SCORE).sample((0, 2), steps=2),
    "reverse.drift": lambda: SDE.reverse(SCORE).drift(EMPTY, 0.5),
    "pf.sample": lambda: SDE.probability_flow(SCORE).sample((0, 2), steps=2),
    "pf.sample(x_T)": lambda: SDE.probability_flow(SCORE).sample(x_T=EMPTY, steps=2),
    "pf.encode": lambda: SDE.probability_flow(SCORE).encode(EMPTY),
    "pf.decode": lambda: SDE.probability_flow(SCORE).decode(EMPTY),
    "likelihood": lambda: sdescore.likelihood(SCORE, EMPTY, sde=SDE),
    "elbo": lambda: sdescore.elbo(SCORE, EMPTY, sde=SDE, samples=2),
}
ENTRY_POINTS["train"] = lambda: sdescore.train(_model(), EMPTY, steps=1, batch_size=2)


@pytest.mark.parametrize("call", list(ENTRY_POINTS.values()), ids=list(ENTRY_POINTS))
def test_empty_batch_is_refused_clearly(call):
    # The shared message from check_state; shapes and counts are refused by check_shape
    # ("tuple of positive ints") and check_int (">= 1, got 0").
    with pytest.raises(ValueError, match=r"at least one example \(B >= 1\)|>= 1, got 0|positive"):
        call()


def test_empty_batch_message_names_the_shape():
    with pytest.raises(
        ValueError, match=r"x must have at least one example \(B >= 1\), got shape \(0, 2\)"
    ):
        SDE.drift(EMPTY, 0.5)
