"""Resume (issue 25 item 10): each option honoured or refused, a missing file refused, Ctrl-C
saves. See `sdescore.training.checkpoint`."""

from __future__ import annotations

import signal

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
    train,
)

DATA = sdescore.toy.eight_gaussians().sample(1024, generator=torch.Generator().manual_seed(0))
OPTS = dict(lr=2e-3, batch_size=32, ema_decay=0.9, progress=False)


def _model():
    torch.manual_seed(0)
    return ScoreModel(MLPScoreNet(2, hidden=16, depth=2), sdescore.VPSDE()).fit_baseline(DATA)


def _params(model):
    return [p.detach().clone() for p in model.state_dict().values()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(_params(a), _params(b), strict=True))


def test_a_changed_lr_is_honoured_and_said(tmp_path):
    path = tmp_path / "ck.pt"
    train(_model(), DATA, steps=4, checkpoint_path=path, **OPTS)
    opt, ema = OptimizerConfig(lr=5e-4), EMAConfig(0.9)
    trainer = Trainer(_model(), DATA, batch_size=32, optimizer=opt, ema=ema)
    with pytest.warns(UserWarning, match=r"lr 0.0005 \(saved 0.002\): honoured"):
        trainer.load(path)
    trainer.run(6, progress=False)
    # Before: the checkpoint's param groups (lr 2e-3) replaced the new lr silently.
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [5e-4]
    same_lr = train(_model(), DATA, steps=6, resume=True, checkpoint_path=path, **OPTS)
    assert not _same(trainer.model, same_lr.model)


def test_a_changed_batch_size_is_honoured_and_said(tmp_path):
    path = tmp_path / "ck.pt"
    train(_model(), DATA, steps=2, checkpoint_path=path, **OPTS)
    sizes = []

    def recording(model, x, *, generator=None):
        sizes.append(x.shape[0])
        return sdescore.dsm_loss(model, x, generator=generator)

    with pytest.warns(UserWarning, match=r"batch_size 48 \(saved 32\)"):
        train(_model(), DATA, steps=4, resume=True, checkpoint_path=path, loss=recording,
              **{**OPTS, "batch_size": 48})  # fmt: skip
    assert sizes == [48, 48]


def test_an_unchanged_resume_says_nothing(tmp_path, recwarn):
    path = tmp_path / "ck.pt"
    train(_model(), DATA, steps=2, checkpoint_path=path, **OPTS)
    train(_model(), DATA, steps=4, resume=True, checkpoint_path=path, **OPTS)
    assert not [w for w in recwarn if "resuming" in str(w.message)]


@pytest.mark.parametrize(
    "change, match",
    [({"seed": 1}, "seed=0 and this trainer has seed=1"), ({"dequantize": 17}, "dequantize=None")],
)
def test_options_resume_cannot_honour_are_refused(tmp_path, change, match):
    path = tmp_path / "ck.pt"
    data = (DATA.clamp(-0.99, 0.99) * 8 + 8).long() if "dequantize" in change else DATA
    train(_model(), DATA, steps=2, checkpoint_path=path, **OPTS)
    model = _model()
    before = _params(model)
    with pytest.raises(ValueError, match=match):
        train(model, data, steps=4, resume=True, checkpoint_path=path, **{**OPTS, **change})
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model), strict=True))


def test_resume_true_needs_the_file_and_auto_does_not(tmp_path):
    path = tmp_path / "ck.pt"
    model = _model()
    before = _params(model)
    # Before: a mistyped path trained from scratch without a word.
    with pytest.raises(FileNotFoundError, match="resume=True but there is no checkpoint at"):
        train(model, DATA, steps=4, resume=True, checkpoint_path=tmp_path / "ckk.pt", **OPTS)
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model), strict=True))
    first = train(_model(), DATA, steps=2, resume="auto", checkpoint_path=path, **OPTS)
    assert first.steps == 2 and path.exists()
    again = train(_model(), DATA, steps=4, resume="auto", checkpoint_path=path, **OPTS)
    full = train(_model(), DATA, steps=4, **OPTS)
    assert again.steps == 4 and _same(full.model, again.model)
    with pytest.raises(ValueError, match="resume must be False, True or 'auto'"):
        train(_model(), DATA, steps=4, resume="yes", checkpoint_path=path, **OPTS)


def _interrupt_at(step):
    """A loss that sends this process SIGINT (Ctrl-C) while computing step `step`."""
    calls = {"n": 0}

    def loss(model, x, *, generator=None):
        calls["n"] += 1
        value = sdescore.dsm_loss(model, x, generator=generator)
        if calls["n"] == step:
            signal.raise_signal(signal.SIGINT)
        return value

    return loss


def test_ctrl_c_saves_the_last_complete_step_and_resumes_exactly(tmp_path):
    path = tmp_path / "ck.pt"
    full = train(_model(), DATA, steps=8, **OPTS)
    # Before: KeyboardInterrupt left no checkpoint (none here at all: no checkpoint_every).
    with pytest.raises(KeyboardInterrupt):
        train(_model(), DATA, steps=8, checkpoint_path=path, loss=_interrupt_at(5), **OPTS)
    assert sdescore.load_model(path, weights="raw") is not None
    resumed = train(_model(), DATA, steps=8, resume=True, checkpoint_path=path, **OPTS)
    assert _same(full.model, resumed.model) and _same(full.ema_model, resumed.ema_model)
    assert torch.equal(full.losses, resumed.losses)


def test_ctrl_c_during_the_update_waits_for_it_to_finish(tmp_path):
    # SIGINT inside the optimizer step (after the weights moved, before the step count): the
    # update completes, then KeyboardInterrupt; the checkpoint holds a whole step.
    path = tmp_path / "ck.pt"
    handler = signal.getsignal(signal.SIGINT)
    full = train(_model(), DATA, steps=8, **OPTS)
    opt, ema = OptimizerConfig(lr=2e-3), EMAConfig(0.9)
    trainer = Trainer(_model(), DATA, batch_size=32, optimizer=opt, ema=ema)
    trainer.run(3, progress=False)
    hook = trainer.optimizer.register_step_post_hook(lambda *a: signal.raise_signal(signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        trainer.run(8, checkpoint=CheckpointConfig(path), progress=False)
    hook.remove()
    assert trainer.step == 4 and len(trainer.losses) == 4
    assert signal.getsignal(signal.SIGINT) is handler  # the run's own handler is gone
    resumed = train(_model(), DATA, steps=8, resume=True, checkpoint_path=path, **OPTS)
    assert _same(full.model, resumed.model) and _same(full.ema_model, resumed.ema_model)


def test_resume_past_steps_warns_that_nothing_was_trained(tmp_path):
    # Trial 3 item 7: steps=30 from a 100-step checkpoint returned 100 steps without a word.
    path = tmp_path / "ck.pt"
    train(_model(), DATA, steps=6, checkpoint_path=path, **OPTS)
    with pytest.warns(UserWarning, match=r"already at step 6 .*past steps=3: nothing was trained"):
        res = train(_model(), DATA, steps=3, resume=True, checkpoint_path=path, **OPTS)
    assert res.steps == 6 and res.losses.shape == (6,)
