"""`sdescore.EMA`: the recurrence, pairing by name, and its argument checks."""

from __future__ import annotations

import pytest
import torch

from sdescore import EMA, EMAConfig


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


class _Pair(torch.nn.Module):
    def __init__(self, first_a: bool):
        super().__init__()
        if first_a:
            self.a, self.b = torch.nn.Linear(2, 3), torch.nn.Linear(3, 1)
        else:
            self.b, self.a = torch.nn.Linear(3, 1), torch.nn.Linear(2, 3)


def test_ema_pairs_by_name_and_refuses_another_structure():
    ema = EMA(_Pair(True), decay=0.5, warmup=False)
    other = _Pair(False)  # same names, other registration order
    expected = {k: 0.5 * v + 0.5 * other.state_dict()[k] for k, v in ema.model.state_dict().items()}
    ema.update(other)
    for k, v in ema.model.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=1e-7)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with pytest.raises(
        ValueError,
        match=r"structure of the EMA's copy \(parameters differ: \['c.bias', 'c.weight'\]",
    ):
        wrong = _Pair(True)
        wrong.c = torch.nn.Linear(1, 1)
        ema.update(wrong)
    assert all(torch.equal(v, before[k]) for k, v in ema.model.state_dict().items())


def test_warmup_must_be_a_bool():
    # Issue 25 item 16: EMA(warmup="yes") was accepted (and meant True).
    lin = torch.nn.Linear(1, 1)
    with pytest.raises(TypeError, match="warmup must be a bool, got str"):
        EMA(lin, 0.9, warmup="yes")
    with pytest.raises(TypeError, match="warmup must be a bool, got str"):
        EMAConfig(0.9, warmup="yes")
    with pytest.raises(ValueError, match=r"decay must be a number in \[0, 1\)"):
        EMAConfig(1.0)


def test_a_bool_decay_is_a_type_error():
    # Trial 3 item 9: EMA(m, True) raised ValueError "got True".
    lin = torch.nn.Linear(1, 1)
    with pytest.raises(TypeError, match=r"decay must be a float in \[0, 1\) .*got bool True"):
        EMA(lin, True)
    with pytest.raises(TypeError, match=r"decay must be a float .*got str"):
        EMA(lin, "0.9")
