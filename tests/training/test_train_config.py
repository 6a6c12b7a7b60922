"""`sdescore.training.config`: the option groups, their checks, and where old keywords went."""

from __future__ import annotations

import inspect

import pytest
import torch

import sdescore
import sdescore.training
from sdescore import (
    CheckpointConfig,
    EMAConfig,
    MLPScoreNet,
    OptimizerConfig,
    ScoreModel,
    Trainer,
    train,
)

DATA = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))


def _model():
    torch.manual_seed(0)
    return ScoreModel(MLPScoreNet(2, hidden=8, depth=1), sdescore.VPSDE())


PUBLIC = [
    sdescore.Trainer,
    sdescore.Trainer.run,
    sdescore.Trainer.save,
    sdescore.Trainer.load,
    sdescore.train,
    sdescore.train_step,
    sdescore.OptimizerConfig,
    sdescore.EMAConfig,
    sdescore.CheckpointConfig,
    sdescore.training.DistributedLoss,
    sdescore.TrainResult,
    sdescore.EMA,
]


@pytest.mark.parametrize("fn", PUBLIC, ids=lambda f: f.__qualname__)
def test_no_public_callable_takes_more_than_12_parameters(fn):
    # Issue 21 item 6: Trainer took 20.
    assert len(inspect.signature(fn).parameters) <= 12


def test_optimizer_options_are_checked_by_us():
    # Issue 25 item 15: these reached torch.optim.AdamW and came back as torch's errors.
    with pytest.raises(ValueError, match="weight_decay must be >= 0, got -1.0"):
        train(_model(), DATA, steps=1, weight_decay=-1, progress=False)
    with pytest.raises(ValueError, match=r"betas must each lie in \[0, 1\), got \(1.5, 0.9\)"):
        train(_model(), DATA, steps=1, betas=(1.5, 0.9), progress=False)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        OptimizerConfig(weight_decay=-1, betas=(1.5, 0.9))
    with pytest.raises(TypeError, match=r"betas must be a pair"):
        OptimizerConfig(betas=0.9)
    with pytest.raises(ValueError, match="lr must be > 0"):
        OptimizerConfig(lr=0.0)
    with pytest.raises(ValueError, match="warmup_steps must be an int >= 0"):
        OptimizerConfig(warmup_steps=-1)
    with pytest.raises(ValueError, match="grad_clip must be > 0"):
        OptimizerConfig(grad_clip=0.0)
    with pytest.raises(TypeError, match="every must be an int"):
        CheckpointConfig("ck.pt", every=2.5)
    with pytest.raises(TypeError, match="path must be a str or path-like"):
        CheckpointConfig(None, every=5)


def test_checkpoint_every_without_a_path_is_refused():
    # Issue 25 item 16: it was accepted and never wrote anything.
    with pytest.raises(ValueError, match="checkpoint_every=5 needs checkpoint_path="):
        train(_model(), DATA, steps=1, checkpoint_every=5, progress=False)


def test_a_missing_checkpoint_directory_fails_before_training(tmp_path):
    trainer = Trainer(_model(), DATA)
    with pytest.raises(FileNotFoundError, match="checkpoint directory .* does not exist"):
        trainer.run(3, checkpoint=CheckpointConfig(tmp_path / "nope" / "ck.pt"), progress=False)
    assert trainer.step == 0


@pytest.mark.parametrize(
    "old, value, says",
    [
        ("lr", 1e-3, r"optimizer=OptimizerConfig\(lr=...\)"),
        ("betas", (0.9, 0.99), r"optimizer=OptimizerConfig\(betas=...\)"),
        ("weight_decay", 0.1, r"optimizer=OptimizerConfig\(weight_decay=...\)"),
        ("warmup_steps", 10, r"optimizer=OptimizerConfig\(warmup_steps=...\)"),
        ("grad_clip", 1.0, r"optimizer=OptimizerConfig\(grad_clip=...\)"),
        ("ema_decay", 0.99, r"ema=EMAConfig\(decay=...\)"),
        ("checkpoint_path", "ck.pt", r"trainer.run\(steps, checkpoint=CheckpointConfig\(path"),
        ("checkpoint_every", 5, r"checkpoint=CheckpointConfig\(every=...\)"),
        ("loss_kwargs", {}, r"loss=functools.partial\(loss, \*\*loss_kwargs\)"),
        ("callback", print, r"trainer.run\(steps, callback=...\)"),
        ("progress", False, r"trainer.run\(steps, progress=...\)"),
    ],
)
def test_trainer_names_where_a_moved_keyword_went(old, value, says):
    with pytest.raises(TypeError, match=says):
        Trainer(_model(), DATA, **{old: value})


def test_unknown_keywords_and_wrong_groups_are_refused():
    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rate'"):
        Trainer(_model(), DATA, learning_rate=1e-3)
    with pytest.raises(TypeError, match="optimizer must be an OptimizerConfig, got dict"):
        Trainer(_model(), DATA, optimizer={"lr": 1e-3})
    with pytest.raises(TypeError, match="ema must be an EMAConfig or None, got float"):
        Trainer(_model(), DATA, ema=0.99)
    with pytest.raises(TypeError, match="give optimizer= or lr=, not both"):
        train(_model(), DATA, steps=1, lr=1e-3, optimizer=OptimizerConfig())
    with pytest.raises(TypeError, match="give ema= or ema_decay=, not both"):
        train(_model(), DATA, steps=1, ema_decay=0.9, ema=EMAConfig())


def test_flat_shorthands_build_the_same_trainer_state():
    a = train(_model(), DATA, steps=4, lr=1e-3, warmup_steps=2, ema_decay=0.9, progress=False)
    b = train(
        _model(), DATA, steps=4, optimizer=OptimizerConfig(lr=1e-3, warmup_steps=2),
        ema=EMAConfig(0.9), progress=False,
    )  # fmt: skip
    for x, y in zip(a.ema_model.parameters(), b.ema_model.parameters(), strict=True):
        assert torch.equal(x, y)
    assert torch.equal(a.losses, b.losses)
