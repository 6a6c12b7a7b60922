"""`sdescore.training.step`: one step on one batch, for a loop of one's own."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import sdescore
import sdescore.training
from sdescore import EMA, MLPScoreNet, ScoreModel, Trainer, dsm_loss, train_step
from sdescore.toy import gaussian

TARGET = gaussian(torch.tensor([1.0, -1.0], dtype=torch.float64), 0.5)


def _model():
    torch.manual_seed(0)
    return ScoreModel(MLPScoreNet(2, hidden=32, depth=2), sdescore.VPSDE())


def _held_out(score):
    x = TARGET.sample(2048, generator=torch.Generator().manual_seed(2)).float()
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        return dsm_loss(score, x, generator=g, reduction="mean", eps=1e-2).item()


def test_a_users_own_loop_calls_the_step_and_learns():
    model = _model()
    x = TARGET.sample(8192, generator=torch.Generator().manual_seed(1)).float()
    before = _held_out(model)
    # A loop of one's own: its data, its optimizer, its generator, its epochs.
    opt, ema, g = torch.optim.AdamW(model.parameters(), lr=3e-3), EMA(model, 0.9), torch.Generator()
    for _ in range(2):
        for batch in x.split(256):
            value = train_step(model, batch, opt, generator=g, ema=ema)
    after = _held_out(ema.model)
    # 64 steps take the held-out loss of the untrained network at least halfway down
    # (measured: 1.00 -> 0.25).
    assert isinstance(value, float) and after < 0.5 * before, (before, after)


def test_a_failed_step_changes_nothing():
    model = _model()
    opt, ema = torch.optim.AdamW(model.parameters(), lr=1e-2), EMA(model, 0.9)
    x = TARGET.sample(64, generator=torch.Generator().manual_seed(1)).float()
    train_step(model, x, opt, ema=ema)
    state = [p.detach().clone() for p in (*model.parameters(), *ema.model.parameters())]
    moments = {k: v["exp_avg"].clone() for k, v in opt.state.items()}

    def nan_loss(m, x, *, generator=None):
        return dsm_loss(m, x, generator=generator) * float("nan")

    with pytest.raises(FloatingPointError, match="the loss became nan"):
        train_step(model, x, opt, loss=nan_loss, ema=ema)
    after = [p.detach() for p in (*model.parameters(), *ema.model.parameters())]
    assert all(torch.equal(a, b) for a, b in zip(state, after, strict=True))
    assert all(torch.equal(moments[k], v["exp_avg"]) for k, v in opt.state.items())


def test_step_argument_checks():
    model = _model()
    x = torch.randn(8, 2)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer, got list"):
        train_step(model, x, [])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="ema must be an sdescore.EMA or None"):
        train_step(model, x, opt, ema=0.99)
    with pytest.raises(ValueError, match="grad_clip must be > 0"):
        train_step(model, x, opt, grad_clip=-1.0)


def test_the_loss_sees_the_model_itself():
    # Issue 21 item 6: under DDP a stand-in's `__class__` property made isinstance lie. Now the
    # loss always receives the real model; nothing in the package overrides `__class__`.
    seen = []

    def recording(model, x, *, generator=None):
        seen.append(model)
        return dsm_loss(model, x, generator=generator)

    model = _model()
    Trainer(model, TARGET.sample(64).float(), loss=recording).run(2, progress=False)
    assert all(m is model and type(m) is ScoreModel for m in seen)
    modules = [
        sdescore.training,
        *(m for _, m in inspect.getmembers(sdescore.training, inspect.ismodule)),
    ]
    classes = {c for mod in modules for _, c in inspect.getmembers(mod, inspect.isclass)}
    assert classes and not [c for c in classes if "__class__" in vars(c)]


def test_labels_reach_the_loss():
    from sdescore.models.conditional import ConditionalMLPScoreNet, ConditionalScoreModel

    torch.manual_seed(0)
    model = ConditionalScoreModel(
        ConditionalMLPScoreNet(2, 2, hidden=16), sdescore.VPSDE(), num_classes=2
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (32,), generator=g)
    x = torch.randn(32, 2, generator=g) + 3 * y[:, None]
    value = train_step(model, x, opt, loss=sdescore.label_dropout_loss, labels=y, generator=g)
    assert torch.isfinite(torch.tensor(value))
    with pytest.raises(TypeError, match="labels"):
        train_step(model, x, opt, loss=sdescore.label_dropout_loss)


def test_an_optimizer_over_none_of_the_models_parameters_is_refused():
    # Trial 3 item 1: an optimizer over another module's parameters trained nothing, silently,
    # and the model's gradients piled up from step to step.
    model = _model()
    x = TARGET.sample(64, generator=torch.Generator().manual_seed(1)).float()
    n = sum(1 for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match=rf"optimizer must optimize the model's parameters.*none of the model's {n} trainable"):  # fmt: skip
        train_step(model, x, opt, generator=torch.Generator().manual_seed(0))
    assert all(p.grad is None for p in model.parameters())


def test_an_optimizer_over_part_of_the_model_trains_that_part():
    # A model frozen in part on purpose: the optimizer holds the last layer only. Accepted:
    # that layer learns, the rest keeps its weights.
    model = _model()
    x = TARGET.sample(64, generator=torch.Generator().manual_seed(1)).float()
    head = list(model.net.out.parameters())
    rest = list(model.net.layers.parameters())
    before, head0 = [p.detach().clone() for p in rest], [p.detach().clone() for p in head]
    opt = torch.optim.SGD(head, lr=1e-2)
    for _ in range(3):
        assert math.isfinite(train_step(model, x, opt, generator=torch.Generator()))
    assert all(torch.equal(a, b) for a, b in zip(before, rest, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(head0, head, strict=True))


def test_the_frozen_parts_gradient_is_the_last_steps_only():
    # Before, the gradients of parameters the optimizer does not hold summed over the steps
    # (and entered the clipping norm): the step now zeroes the model's gradients.
    model = _model()
    torch.nn.init.normal_(model.net.out.weight, std=0.3)  # else no gradient reaches the layers
    x = TARGET.sample(64, generator=torch.Generator().manual_seed(1)).float()
    head = list(model.net.out.parameters())
    opt = torch.optim.SGD(head, lr=0.0)  # lr 0: the model is the same at every step
    for _ in range(3):
        train_step(model, x, opt, generator=torch.Generator().manual_seed(0))
    got = [p.grad.clone() for p in model.net.layers.parameters()]
    model.zero_grad(set_to_none=True)
    dsm_loss(model, x, generator=torch.Generator().manual_seed(0)).mean().backward()
    want = [p.grad for p in model.net.layers.parameters()]
    assert all(w.abs().sum() > 0 for w in want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_labels_or_a_loss_without_generator_give_the_losss_contract():
    # Trial 3 item 5: Python's raw "dsm_loss() got an unexpected keyword argument 'labels'".
    model = _model()
    x = TARGET.sample(64, generator=torch.Generator().manual_seed(1)).float()
    y = torch.zeros(64, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(TypeError, match=r"labels need a ConditionalScoreModel.*got a ScoreModel with loss dsm_loss, which takes no labels"):  # fmt: skip
        train_step(model, x, opt, labels=y)
    with pytest.raises(TypeError, match=r"labels .*ConditionalScoreModel.*got a ScoreModel"):
        sdescore.train(model, x, steps=2, labels=y, progress=False)

    def no_generator(model, x):
        return dsm_loss(model, x)

    with pytest.raises(TypeError, match=r"loss must be callable as loss\(model, x, \*, generator\).*no_generator"):  # fmt: skip
        train_step(model, x, opt, loss=no_generator)
    with pytest.raises(TypeError, match=r"loss must be callable as loss\(model, x, \*, generator\)"):  # fmt: skip
        Trainer(model, x, loss=no_generator)
    assert all(p.grad is None for p in model.parameters())


def test_a_loss_of_another_shape_is_refused():
    # Trial 3 item 8: a (B, D) loss was averaged; the contract is (B,) or a scalar.
    model = _model()
    x = TARGET.sample(64, generator=torch.Generator().manual_seed(1)).float()
    opt = torch.optim.AdamW(model.parameters())

    def per_coordinate(model, x, *, generator=None):
        return dsm_loss(model, x, generator=generator)[:, None].expand(-1, 2)

    with pytest.raises(ValueError, match=r"loss per_coordinate must return .* \(64,\).*got shape \(64, 2\)"):  # fmt: skip
        train_step(model, x, opt, loss=per_coordinate)
    with pytest.raises(ValueError, match=r"got shape \(32, 2\)"):
        Trainer(model, x, loss=per_coordinate, batch_size=32).run(1, progress=False)
    scalar = train_step(model, x, opt, loss=lambda m, b, generator=None: dsm_loss(m, b).mean())
    assert math.isfinite(scalar)


def test_a_nan_batch_says_to_check_the_data():
    # Trial 3 item 2: the NaN-loss message suggested lowering lr when the batch held NaN.
    model = _model()
    x = TARGET.sample(64, generator=torch.Generator().manual_seed(1)).float()
    x[3, 0] = float("nan")
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(FloatingPointError, match=r"batch itself holds NaN or Inf \(1 of 64 examples\), so check the data first"):  # fmt: skip
        train_step(model, x, opt)
