"""The training loop: exact resume, NaN detection, EMA, data sources, callbacks, learning."""

from __future__ import annotations

import math

import pytest
import torch

import sdescore
from sdescore import EMA, MLPScoreNet, ScoreModel, Trainer, dsm_loss, load_model, train
from sdescore.toy import gaussian

DATA = sdescore.toy.eight_gaussians().sample(4096, generator=torch.Generator().manual_seed(0))


def _model(dtype=torch.float32, baseline=True):
    torch.manual_seed(0)
    model = ScoreModel(MLPScoreNet(2, hidden=32, depth=2), sdescore.VPSDE()).to(dtype)
    return model.fit_baseline(DATA.to(dtype)) if baseline else model


OPTS = dict(lr=2e-3, batch_size=64, warmup_steps=5, grad_clip=1.0, ema_decay=0.9, progress=False)


def _same(a, b):
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_resume_equals_uninterrupted_run(tmp_path):
    full = train(_model(), DATA, steps=30, **OPTS)
    path = tmp_path / "ckpt.pt"
    first = Trainer(_model(), DATA, checkpoint_path=path, checkpoint_every=7, **OPTS)
    first.run(14)  # checkpoints at 7 and 14; then "crash"
    resumed = train(_model(), DATA, steps=30, resume=True, checkpoint_path=path, **OPTS)
    assert _same(full.model, resumed.model) and _same(full.ema_model, resumed.ema_model)
    assert torch.equal(full.losses, resumed.losses) and resumed.steps == 30
    # an interrupted-and-resumed run differs from one that restarts from scratch at step 14
    assert not _same(full.model, train(_model(), DATA, steps=16, **OPTS).model)
    # the saved trainer holds a ScoreModel state, but is not itself a ScoreModel file
    with pytest.raises(ValueError, match="not an sdescore ScoreModel checkpoint"):
        load_model(path)
    with pytest.raises(ValueError, match="not an sdescore Trainer checkpoint"):
        sdescore.save_model(full.model, tmp_path / "m.pt")
        Trainer(_model(), DATA, **OPTS).load(tmp_path / "m.pt")


def test_nan_loss_raises_with_the_step():
    calls = {"n": 0}

    def flaky(model, x, *, generator=None):
        calls["n"] += 1
        loss = dsm_loss(model, x, generator=generator)
        return loss * float("nan") if calls["n"] == 4 else loss

    model = _model()
    trainer = Trainer(model, DATA, loss=flaky, **OPTS)
    with pytest.raises(FloatingPointError, match="loss became nan at step 4"):
        trainer.run(10)
    assert trainer.step == 3 and all(torch.isfinite(p).all() for p in model.parameters())
    bad = DATA.clone()
    bad[:] = float("inf")
    with pytest.raises(FloatingPointError, match="at step 1"):
        train(_model(baseline=False), bad, steps=3, **OPTS)


def test_ema_matches_the_recurrence():
    lin = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(lin, decay=0.5, warmup=False)
    expected = lin.weight.detach().clone()
    for w in (1.0, 3.0, -2.0):
        with torch.no_grad():
            lin.weight.fill_(w)
        ema.update(lin)
        expected = 0.5 * expected + 0.5 * w
    torch.testing.assert_close(ema.model.weight, expected)
    with pytest.raises(ValueError, match=r"decay must be a number in \[0, 1\)"):
        EMA(lin, decay=1.0)


def test_iterable_data_callback_and_dtype_from_model():
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(DATA[:100]), batch_size=32)
    seen = []

    def callback(trainer):
        seen.append(trainer.step)
        return trainer.step == 9  # stop early

    model = _model(torch.float64)
    res = train(model, loader, steps=20, callback=callback, **OPTS)  # 4 batches/epoch: cycles
    assert seen == list(range(1, 10)) and res.steps == 9 and res.losses.shape == (9,)
    assert all(p.dtype == torch.float64 for p in res.model.parameters())
    assert res.ema_model is not res.model and res.ema_model.has_baseline


def test_training_approaches_the_exact_score():
    # Gaussian data: held-out DSM loss (fixed t, noise) falls from the baseline-free zero-score
    # value towards the exact-score value, the minimum of the objective.
    data = gaussian(torch.tensor([1.0, -1.0], dtype=torch.float64), 0.5)
    x = data.sample(4096, generator=torch.Generator().manual_seed(1))
    res = train(_model(baseline=False), x, steps=300, lr=3e-3, batch_size=256, progress=False)
    x_test = data.sample(4096, generator=torch.Generator().manual_seed(2))
    sde = sdescore.VPSDE()

    def held_out(score):
        with torch.no_grad():
            g = torch.Generator().manual_seed(3)
            return dsm_loss(score, x_test, sde=sde, generator=g, reduction="mean", eps=1e-2).item()

    zero, exact = held_out(lambda y, t: torch.zeros_like(y)), held_out(data.score_fn(sde))
    trained = held_out(res.ema_model)
    assert math.isfinite(trained) and trained < exact + 0.1 * (zero - exact), (zero, trained, exact)


def test_validation_messages():
    with pytest.raises(TypeError, match="model must be a ScoreModel"):
        train(lambda x, t: x, DATA, steps=1)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(ScoreModel(lambda x, t: x, sdescore.VPSDE()), DATA, steps=1)
    with pytest.raises(TypeError, match="data must be a tensor"):
        train(_model(), 3, steps=1)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        train(_model(), DATA, steps=0)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_path"):
        train(_model(), DATA, steps=1, resume=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rate'"):
        train(_model(), DATA, steps=1, learning_rate=1e-3)
    with pytest.raises(ValueError, match="lr must be > 0"):
        train(_model(), DATA, steps=1, lr=-1.0)
