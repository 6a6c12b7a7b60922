"""The training loop (`sdescore.training.loop`): exact resume, NaN detection, EMA, data sources,
callbacks, learning."""

from __future__ import annotations

import math

import pytest
import torch

import sdescore
from sdescore import (
    CheckpointConfig,
    EMAConfig,
    MLPScoreNet,
    OptimizerConfig,
    ScoreModel,
    Trainer,
    dsm_loss,
    load_model,
    train,
)
from sdescore.toy import gaussian

DATA = sdescore.toy.eight_gaussians().sample(4096, generator=torch.Generator().manual_seed(0))


def _model(dtype=torch.float32, baseline=True):
    torch.manual_seed(0)
    model = ScoreModel(MLPScoreNet(2, hidden=32, depth=2), sdescore.VPSDE()).to(dtype)
    return model.fit_baseline(DATA.to(dtype)) if baseline else model


OPTS = dict(lr=2e-3, batch_size=64, warmup_steps=5, grad_clip=1.0, ema_decay=0.9, progress=False)
# The same options as Trainer takes them (the loop's own, progress=, go to run).
OPTIMIZER = OptimizerConfig(lr=2e-3, warmup_steps=5, grad_clip=1.0)
TOPTS = dict(batch_size=64, optimizer=OPTIMIZER, ema=EMAConfig(0.9))


def _same(a, b):
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_resume_equals_uninterrupted_run(tmp_path):
    full = train(_model(), DATA, steps=30, **OPTS)
    path = tmp_path / "ckpt.pt"
    first = Trainer(_model(), DATA, **TOPTS)
    first.run(14, checkpoint=CheckpointConfig(path, every=7), progress=False)  # then "crash"
    resumed = train(_model(), DATA, steps=30, resume=True, checkpoint_path=path, **OPTS)
    assert _same(full.model, resumed.model) and _same(full.ema_model, resumed.ema_model)
    assert torch.equal(full.losses, resumed.losses) and resumed.steps == 30
    # an interrupted-and-resumed run differs from one that restarts from scratch at step 14
    assert not _same(full.model, train(_model(), DATA, steps=16, **OPTS).model)
    with pytest.raises(ValueError, match="not an sdescore Trainer checkpoint"):
        sdescore.save_model(full.model, tmp_path / "m.pt")
        Trainer(_model(), DATA, **TOPTS).load(tmp_path / "m.pt")


def test_nan_loss_raises_with_the_step():
    calls = {"n": 0}

    def flaky(model, x, *, generator=None):
        calls["n"] += 1
        loss = dsm_loss(model, x, generator=generator)
        return loss * float("nan") if calls["n"] == 4 else loss

    model = _model()
    trainer = Trainer(model, DATA, loss=flaky, **TOPTS)
    with pytest.raises(FloatingPointError, match="loss became nan at step 4"):
        trainer.run(10, progress=False)
    assert trainer.step == 3 and all(torch.isfinite(p).all() for p in model.parameters())
    # an iterable of data with Inf fails at its first step, and the message names the data
    bad = [torch.full((8, 2), float("inf"))]
    with pytest.raises(FloatingPointError, match="at step 1: the batch itself holds NaN or Inf"):
        train(_model(baseline=False), bad, steps=3, **OPTS)


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


def _snapshot(trainer):
    clone = lambda sd: {k: v.clone() if torch.is_tensor(v) else v for k, v in sd.items()}  # noqa: E731
    opt = trainer.optimizer.state_dict()
    return (
        clone(trainer.model.state_dict()),
        None if trainer.ema is None else clone(trainer.ema.model.state_dict()),
        {i: clone(s) for i, s in opt["state"].items()},
        trainer.step,
    )


def _same_state(a, b):
    def eq(x, y):
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(eq(x[k], y[k]) for k in x)
        if torch.is_tensor(x):
            return torch.equal(x, y) and x.dtype == y.dtype
        return x == y

    return all(eq(x, y) for x, y in zip(a, b, strict=True))


def _other_depth():
    torch.manual_seed(0)
    model = ScoreModel(MLPScoreNet(2, hidden=32, depth=3), sdescore.VPSDE())
    return model.fit_baseline(DATA)


def _eps_model():
    torch.manual_seed(0)
    return ScoreModel(MLPScoreNet(2, hidden=32, depth=2), sdescore.VPSDE(), "eps").fit_baseline(
        DATA
    )


@pytest.mark.parametrize(
    "live, options, match",
    [
        (_eps_model, {}, "parameterization"),
        (_other_depth, {}, "does not fit"),
        (_model, {"ema": None}, "EMA"),
        (_model, {"ema": EMAConfig(0.99)}, "EMA decay"),
        (_model, {"ema": EMAConfig(0.9, warmup=False)}, "warmup=False"),
        (lambda: _model(torch.float64), {}, "dtype"),
    ],
)
def test_a_failed_resume_changes_nothing(tmp_path, live, options, match):
    path = tmp_path / "ckpt.pt"
    Trainer(_model(), DATA, **TOPTS).run(5, checkpoint=CheckpointConfig(path), progress=False)
    trainer = Trainer(live(), DATA, **{**TOPTS, **options})
    trainer.run(3, progress=False)  # optimizer state and EMA exist
    before = _snapshot(trainer)
    with pytest.raises(ValueError, match=match):
        trainer.load(path)
    assert _same_state(before, _snapshot(trainer))
    with pytest.raises(ValueError, match=match):
        train(
            live(),
            DATA,
            steps=8,
            resume=True,
            checkpoint_path=path,
            progress=False,
            **{**TOPTS, **options},
        )


def test_resume_when_the_live_model_has_another_baseline(tmp_path):
    full = train(_model(), DATA, steps=12, **OPTS)
    path = tmp_path / "ckpt.pt"
    Trainer(_model(), DATA, **TOPTS).run(6, checkpoint=CheckpointConfig(path), progress=False)
    for live in (_model(baseline=False), _model().fit_baseline(DATA[:100])):
        resumed = train(live, DATA, steps=12, resume=True, checkpoint_path=path, **OPTS)
        assert _same(full.model, resumed.model) and _same(full.ema_model, resumed.ema_model)
        path.write_bytes(b"")  # next round: rewrite the 6-step checkpoint
        Trainer(_model(), DATA, **TOPTS).run(6, checkpoint=CheckpointConfig(path), progress=False)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_a_nan_gradient_stops_before_the_step(tmp_path, clip):
    calls = {"n": 0}

    def finite_loss_nan_grad(model, x, *, generator=None):
        calls["n"] += 1
        loss = dsm_loss(model, x, generator=generator)
        if calls["n"] == 4:  # sqrt at 0 is finite, its derivative is not: 0 * inf = nan
            w = next(model.parameters())
            loss = loss + 0.0 * torch.sqrt(w.sum() * 0.0)
        return loss

    path = tmp_path / "ckpt.pt"
    opts = {**TOPTS, "optimizer": OptimizerConfig(lr=2e-3, warmup_steps=5, grad_clip=clip)}
    trainer = Trainer(_model(), DATA, loss=finite_loss_nan_grad, **opts)
    every = CheckpointConfig(path, every=1)
    trainer.run(3, checkpoint=every, progress=False)
    before = _snapshot(trainer)
    with pytest.raises(FloatingPointError, match="gradient .* at step 4"):
        trainer.run(10, checkpoint=every, progress=False)
    assert _same_state(before, _snapshot(trainer))
    saved = load_model(path, weights="raw")
    assert all(torch.isfinite(v).all() for v in saved.state_dict().values())


class _DropoutNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = MLPScoreNet(2, hidden=16, depth=2)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x, t):
        return self.drop(self.mlp(x, t))


def _dropout_model():
    torch.manual_seed(0)
    return ScoreModel(_DropoutNet(), sdescore.VPSDE()).fit_baseline(DATA)


def test_resume_with_dropout_is_bit_identical(tmp_path):
    full = train(_dropout_model(), DATA, steps=12, **OPTS)
    path = tmp_path / "ckpt.pt"
    Trainer(_dropout_model(), DATA, **TOPTS).run(
        6, checkpoint=CheckpointConfig(path), progress=False
    )
    torch.rand(17)  # a new process: the global RNG is elsewhere
    resumed = train(_dropout_model(), DATA, steps=12, resume=True, checkpoint_path=path, **OPTS)
    assert _same(full.model, resumed.model) and _same(full.ema_model, resumed.ema_model)
    # the seed, not the global RNG, drives dropout, and training leaves the global RNG alone
    model = _dropout_model()
    torch.manual_seed(123)
    mark = torch.get_rng_state()
    again = train(model, DATA, steps=12, **OPTS)
    assert _same(full.model, again.model) and torch.equal(mark, torch.get_rng_state())


def test_fitting_the_baseline_after_the_ema_exists():
    model = _model(baseline=False)
    trainer = Trainer(model, DATA, **TOPTS)
    trainer.run(2, progress=False)
    model.fit_baseline(DATA)
    trainer.run(4, progress=False)
    assert torch.equal(trainer.ema_model.baseline_mean, model.baseline_mean)
    x = DATA[:8]
    assert torch.isfinite(trainer.ema_model(x, 0.5)).all()


LEVELS = torch.randint(0, 17, (512, 2), generator=torch.Generator().manual_seed(0))


def test_dequantize_each_batch_afresh_with_exact_resume(tmp_path):
    seen = []

    def recording(model, x, *, generator=None):
        seen.append(x.clone())
        return dsm_loss(model, x, generator=generator)

    opts = {**OPTS, "batch_size": 512, "dequantize": 17, "loss": recording}
    full = train(_model(), LEVELS, steps=6, **opts)
    a, b = seen[0], seen[1]
    width = 2 / 17
    assert a.dtype == torch.float32 and ((a + 1) / width).floor().sort(0).values.shape == (512, 2)
    assert not torch.equal(a, b)  # fresh noise each batch
    levels = ((a + 1) / width).floor()
    assert levels.min() >= 0 and levels.max() <= 16
    path = tmp_path / "ckpt.pt"
    topts = {**TOPTS, "batch_size": 512, "dequantize": 17, "loss": recording}
    Trainer(_model(), LEVELS, **topts).run(3, checkpoint=CheckpointConfig(path), progress=False)
    resumed = train(_model(), LEVELS, steps=6, resume=True, checkpoint_path=path, **opts)
    assert _same(full.model, resumed.model)
    with pytest.raises(ValueError, match="dequantize"):
        train(_model(), LEVELS, steps=1, **OPTS)  # integer levels without dequantize=


def test_max_seconds_stops_and_checkpoints(tmp_path):
    path = tmp_path / "ckpt.pt"
    res = train(_model(), DATA, steps=10_000, max_seconds=1e-9, checkpoint_path=path, **OPTS)
    assert res.steps == 1 and res.stop_reason == "max_seconds"
    assert load_model(path, weights="raw") is not None
    res = train(_model(), DATA, steps=3, max_seconds=60, **OPTS)
    assert res.steps == 3 and res.stop_reason == "steps"
    with pytest.raises(ValueError, match="max_seconds must be > 0"):
        train(_model(), DATA, steps=3, max_seconds=-1.0)


def test_fit_baseline_with_constant_coordinates():
    data = DATA[:100].clone()
    data[:, 1] = 0.25  # e.g. the bin centre of a border pixel
    model = ScoreModel(MLPScoreNet(2, hidden=8, depth=1), sdescore.VPSDE())
    with pytest.raises(ValueError, match="min_std"):
        model.fit_baseline(data)
    model.fit_baseline(data, min_std=0.05)
    assert model.baseline_std[1] == 0.05 and model.baseline_std[0] == data[:, 0].std()


def test_load_model_reads_training_checkpoints(tmp_path):
    path = tmp_path / "ckpt.pt"
    res = train(_model(), DATA, steps=5, checkpoint_path=path, **OPTS)
    x = DATA[:8]
    ema, raw = load_model(path), load_model(path, weights="raw")
    assert torch.equal(ema(x, 0.3), res.ema_model(x, 0.3)) and not ema.training
    assert torch.equal(raw(x, 0.3), res.model(x, 0.3))
    res = train(_model(), DATA, steps=2, checkpoint_path=path, **{**OPTS, "ema_decay": None})
    assert torch.equal(load_model(path)(x, 0.3), res.model(x, 0.3))
    with pytest.raises(ValueError, match="weights must be one of"):
        load_model(path, weights="best")


def test_labels_travel_with_their_examples_to_the_loss():
    """`labels=` are drawn with the same indices as the examples and reach the loss."""
    seen = []

    def recording_loss(model, x, *, labels, generator=None):
        seen.append((x.detach().clone(), labels.clone()))
        return model(x, torch.full((x.shape[0],), 0.5)).square().mean(1)

    x = torch.arange(40, dtype=torch.float32).repeat(2, 1).T  # example i is (i, i)
    y = torch.arange(40) % 7
    model = sdescore.ScoreModel(sdescore.MLPScoreNet(2, hidden=16), sdescore.VPSDE())
    sdescore.train(model, x, labels=y, steps=3, batch_size=8, loss=recording_loss, progress=False)
    assert len(seen) == 3
    for xb, yb in seen:
        assert torch.equal(xb[:, 0].long() % 7, yb)
    # An iterable of (x, y) batches with labels=True.
    seen.clear()
    batches = [(x[:8], y[:8]), (x[8:16], y[8:16])]
    sdescore.train(model, batches, labels=True, steps=2, loss=recording_loss, progress=False)
    assert torch.equal(seen[1][1], y[8:16])


def test_bad_labels_are_refused():
    x = torch.randn(10, 2)
    model = sdescore.ScoreModel(sdescore.MLPScoreNet(2, hidden=16), sdescore.VPSDE())
    with pytest.raises(ValueError, match="one entry per example"):
        sdescore.train(model, x, labels=torch.zeros(9, dtype=torch.long), steps=1)
    with pytest.raises(TypeError, match="integer tensor"):
        sdescore.train(model, x, labels=torch.zeros(10), steps=1)
    with pytest.raises(ValueError, match="labels=True is for iterables"):
        sdescore.train(model, x, labels=True, steps=1)


def test_classifier_free_training_with_label_dropout_through_train():
    """Issue 13's objective through `train`: a conditional model, label dropout, labels=."""
    from sdescore.losses.conditional import label_dropout_loss
    from sdescore.models.conditional import ConditionalMLPScoreNet, ConditionalScoreModel

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (256,), generator=g)
    x = torch.randn(256, 2, generator=g) * 0.3 + (y[:, None] * 4.0 - 2.0)
    net = ConditionalMLPScoreNet(2, 2, hidden=32)
    model = ConditionalScoreModel(net, sdescore.VPSDE(), num_classes=2)
    result = sdescore.train(
        model, x, labels=y, steps=60, batch_size=64, lr=3e-3, loss=label_dropout_loss,
        loss_kwargs={"p_uncond": 0.2}, progress=False,
    )  # fmt: skip
    losses = torch.as_tensor(result.losses)
    assert torch.isfinite(losses).all()
    assert losses[-10:].sum() < losses[:10].sum()


def test_non_finite_tensor_data_is_refused_up_front():
    # Trial 3 item 2: NaN rows were found only when a minibatch first drew one, with a message
    # that suggested lowering lr.
    bad = DATA.clone()
    bad[[7, 50, 51]] = float("nan")
    bad[60, 1] = float("inf")
    msg = r"data contains NaN or Inf values in 4 of 4096 rows \(the first at index 7\)"
    with pytest.raises(ValueError, match=msg):
        Trainer(_model(), bad, **TOPTS)
    with pytest.raises(ValueError, match=msg):
        train(_model(), bad, steps=2, **OPTS)


def test_an_iterable_batch_with_nan_names_the_data():
    # An iterable cannot be checked up front: the step's NaN loss says the batch holds NaN.
    batches = [DATA[:32], DATA[32:64].clone()]
    batches[1][5] = float("nan")
    trainer = Trainer(_model(), batches, **TOPTS)
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 2: the batch itself holds NaN or Inf \(1 of 32 examples\), so check the data first"):  # fmt: skip
        trainer.run(3, progress=False)
    assert trainer.step == 1


@pytest.mark.parametrize(
    "data, match",
    [
        (torch.randn(100, 3), r"data must have shape \(N, 2\) for this model's MLPScoreNet, got \(100, 3\)"),
        (torch.randn(100, 2, 1), r"got \(100, 2, 1\)"),
    ],
)  # fmt: skip
def test_data_of_another_shape_is_refused_naming_the_users_shape(data, match):
    # Trial 3 item 6: "x must have shape (B, 2), got (128, 3)", the minibatch's, from mlp.py.
    with pytest.raises(ValueError, match=match):
        train(_model(), data, steps=2, **OPTS)
    with pytest.raises(ValueError, match=match):
        Trainer(_model(), data, **TOPTS)


def test_image_data_of_another_channel_count_is_refused():
    model = ScoreModel(
        sdescore.UNet(1, channels=8, channel_mult=(1,), attention=False), sdescore.VPSDE()
    )
    with pytest.raises(ValueError, match=r"data must have shape \(N, 1, H, W\) for this model's UNet, got \(10, 3, 8, 8\)"):  # fmt: skip
        Trainer(model, torch.randn(10, 3, 8, 8), **TOPTS)
    Trainer(model, torch.randn(10, 1, 8, 8), **TOPTS)  # any H, W: the network's own check
