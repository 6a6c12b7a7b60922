"""`sdescore.pretrained`: the shipped models load offline, match their fingerprints and cards,
and a damaged file is refused."""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import sys

import pytest
import torch

import sdescore
from sdescore import pretrained
from sdescore.pretrained.card import floored_bits_per_dim

NAMES = ["digits8", "digits8-cond", "eight_gaussians"]

# Each model's output at fixed inputs (float32): sum, sum of squares and three entries of
# model(x, t) for x, t drawn with seed 0 (see _probe). Measured when the files were written.
FINGERPRINTS = {
    "digits8": [-2496.2847, 1034938.48, 58.844349, -2.0119607, -0.40469807],
    "digits8-cond": [-2477.7090, 1077646.05, 57.599518, 4.3227797, -0.40821213],
    "eight_gaussians": [-3.9119340, 17.956918, -0.18799962, 0.84378415, -0.84973741],
}


def _probe(name, model):
    g = torch.Generator().manual_seed(0)
    shape = (4, 2) if name == "eight_gaussians" else (4, 1, 8, 8)
    x = torch.randn(shape, generator=g)
    t = torch.tensor([0.01, 0.1, 0.5, 0.9])
    with torch.no_grad():
        out = model(x, t, torch.tensor([0, 3, 7, 10])) if name == "digits8-cond" else model(x, t)
    flat = out.flatten().double()
    return [flat.sum().item(), flat.square().sum().item(), *flat[[0, 5, -1]].tolist()]


def test_list_names_every_shipped_model_with_one_line():
    listed = pretrained.list_pretrained()
    assert list(listed) == NAMES
    assert all(isinstance(d, str) and d and "\n" not in d for d in listed.values())


def test_the_weights_fit_in_two_megabytes():
    sizes = {n: pretrained.weights_path(n).stat().st_size for n in NAMES}
    assert sum(sizes.values()) <= 2 * 1024**2, sizes


@pytest.mark.parametrize("name", NAMES)
def test_each_model_loads_offline_ready_to_use(name, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("sdescore.pretrained.load touched the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    model = pretrained.load(name)
    assert isinstance(model, sdescore.ScoreModel) and not model.training
    assert isinstance(model.sde, sdescore.VPSDE)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    assert isinstance(model, sdescore.ConditionalScoreModel) == (name == "digits8-cond")


@pytest.mark.parametrize("name", NAMES)
def test_outputs_match_the_stored_fingerprint(name):
    got = _probe(name, pretrained.load(name))
    assert got == pytest.approx(FINGERPRINTS[name], rel=1e-4, abs=1e-4)


def test_every_load_is_a_fresh_model():
    a, b = pretrained.load("eight_gaussians"), pretrained.load("eight_gaussians")
    with torch.no_grad():
        next(a.parameters()).add_(1.0)
    assert _probe("eight_gaussians", b) == pytest.approx(FINGERPRINTS["eight_gaussians"], rel=1e-4)


def test_bad_names_are_named():
    with pytest.raises(ValueError, match=r"did you mean 'digits8'"):
        pretrained.load("digit8")
    with pytest.raises(ValueError, match=r"one of the shipped models \['digits8'"):
        pretrained.load("cifar10")
    with pytest.raises(TypeError, match="name must be a str"):
        pretrained.load(3)
    # a retrained file's path is not a name: point to load_model
    with pytest.raises(TypeError, match=r"use sdescore.load_model\(path\)"):
        pretrained.load("retrained/digits8.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a CPU-only machine")
def test_a_device_this_machine_lacks_is_named():
    with pytest.raises(ValueError, match="map_location='cuda' is not a device available"):
        pretrained.load("eight_gaussians", map_location="cuda")


def test_the_conditional_network_checks_its_labels():
    net = pretrained.load("digits8-cond").net
    x, t = torch.zeros(2, 1, 8, 8), torch.full((2,), 0.5)
    with pytest.raises(TypeError, match=r"y must be a \(B,\) integer tensor of labels, got int"):
        net(x, t, 3)
    with pytest.raises(TypeError, match="got torch.float32 tensor"):
        net(x, t, torch.zeros(2))


def test_a_damaged_or_missing_file_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "digits8.pt"
    shutil.copy(pretrained.weights_path("digits8"), bad)
    data = bytearray(bad.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 8] = bytes(8 * [0x5A])  # inside the weights
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "_WEIGHTS", tmp_path)
    with pytest.raises(ValueError, match="checksum|not a readable"):
        pretrained.load("digits8")
    with pytest.raises(FileNotFoundError, match="python -m sdescore.pretrained.train digits8-cond"):
        pretrained.load("digits8-cond")


def test_the_floor_bounds_an_image_and_barely_moves_a_typical_one():
    log_p = torch.tensor([150.0, -3000.0], dtype=torch.float64)  # typical, and hopeless
    plain = -(log_p + 64 * math.log(2 / 17)) / (64 * math.log(2))
    floored = floored_bits_per_dim(log_p, 64)
    assert floored[0] - plain[0] == pytest.approx(-math.log2(1 - 1e-3) / 64, rel=1e-3)
    assert floored[1] == pytest.approx(math.log2(17) - math.log2(1e-3) / 64, rel=1e-6)


@pytest.mark.slow
def test_digits8_bits_per_dim_on_a_test_subset_is_the_cards():
    # The first 16 test images, one dequantization draw (seed 0), exact trace: measured at
    # 16 images when the file was written (docs/pretrained.md has the whole split); 0.01
    # bits/dim is far above the solver tolerance and float differences across machines.
    from sdescore.pretrained.recipes import digits_levels

    model = pretrained.load("digits8")
    levels = digits_levels("test")[0][:16]
    y = sdescore.dequantize(levels, 17, (-1.0, 1.0), generator=torch.Generator().manual_seed(0))[0]
    res = sdescore.likelihood(model, y, estimator="exact")
    bpd = -(res.log_prob.double() + 64 * math.log(2 / 17)) / (64 * math.log(2))
    assert bpd.mean().item() == pytest.approx(SUBSET_BPD, abs=0.01)


SUBSET_BPD = 1.9007  # 123 calls of the default solver when measured


@pytest.mark.slow
def test_the_retrain_command_writes_a_loadable_model(tmp_path):
    # A short run of the shipped recipe through the documented command.
    cmd = [sys.executable, "-m", "sdescore.pretrained.train", "eight_gaussians"]
    subprocess.run([*cmd, "--steps", "20", "--out", str(tmp_path)], check=True, timeout=300)
    model = sdescore.load_model(tmp_path / "eight_gaussians.pt")
    assert next(model.net.parameters()).dtype == torch.float16  # shipped in half precision
    assert (tmp_path / "eight_gaussians.train.json").is_file()
