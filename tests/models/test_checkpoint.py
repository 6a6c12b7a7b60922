"""Checkpoints: bit-identical round trips, SDE reconstruction, and clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch

import sdescore
from sdescore import MLPScoreNet, ScoreModel, UNet, load_model, save_model

from problems import cosine_sde


def _mlp_model(sde, param="score", dtype=torch.float32, baseline=True):
    torch.manual_seed(0)
    net = MLPScoreNet(2, hidden=16, depth=2, out_dim=1 if param == "energy" else None)
    torch.nn.init.normal_(net.out.weight, std=0.3)
    model = ScoreModel(net, sde, param).to(dtype)
    if baseline:
        model.fit_baseline(torch.randn(100, 2, dtype=dtype) * 2 + 1)
    return model


@pytest.mark.parametrize("param", ["score", "eps", "x0", "v", "energy"])
@pytest.mark.parametrize(
    "sde", [sdescore.VPSDE(0.2, 15.0), sdescore.SubVPSDE(), sdescore.VESDE(0.02, 30.0, T=0.9)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_is_bit_identical(tmp_path, param, sde, dtype):
    model = _mlp_model(sde, param, dtype)
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    x = torch.randn(8, 2, dtype=dtype)
    assert type(loaded.sde) is type(sde) and repr(loaded.sde) == repr(sde)
    assert loaded.parameterization == param and loaded.has_baseline
    assert torch.equal(loaded(x, 0.37), model(x, 0.37))


def test_unet_round_trip(tmp_path):
    torch.manual_seed(0)
    net = UNet(1, channels=8, channel_mult=(1, 2))
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)
    model = ScoreModel(net, sdescore.VPSDE(), "eps")
    save_model(model, tmp_path / "u.pt")
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(load_model(tmp_path / "u.pt")(x, 0.5), model(x, 0.5))


def test_linear_sde_and_custom_net_must_be_passed_again(tmp_path):
    sde = cosine_sde()
    model = _mlp_model(sde)
    save_model(model, tmp_path / "lin.pt")
    with pytest.raises(ValueError, match="pass the same SDE again"):
        load_model(tmp_path / "lin.pt")
    x = torch.randn(4, 2)
    assert torch.equal(load_model(tmp_path / "lin.pt", sde=sde)(x, 0.3), model(x, 0.3))
    custom = ScoreModel(torch.nn.Sequential(), sdescore.VPSDE())  # not a library network
    custom.net = _CustomNet()
    save_model(custom, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="pass it: net="):
        load_model(tmp_path / "c.pt")
    torch.manual_seed(5)
    other = _CustomNet()
    loaded = load_model(tmp_path / "c.pt", net=other)
    assert torch.equal(loaded(x, 0.3), custom(x, 0.3))


class _CustomNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x, t):
        return self.lin(torch.cat([x, t[:, None]], dim=1))


def test_mismatch_and_corruption_errors(tmp_path):
    model = _mlp_model(sdescore.VPSDE())
    path = tmp_path / "m.pt"
    save_model(model, path)
    with pytest.raises(ValueError, match="does not match the checkpoint's VPSDE"):
        load_model(path, sde=sdescore.VPSDE(0.1, 10.0))
    with pytest.raises(ValueError, match="does not fit the network"):
        load_model(path, net=MLPScoreNet(2, hidden=8))
    raw = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a readable sdescore checkpoint"):
        load_model(tmp_path / "trunc.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable sdescore checkpoint"):
        load_model(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an sdescore ScoreModel checkpoint"):
        load_model(tmp_path / "other.pt")


class _Payload:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (exec, ("import sys; sys.modules['sdescore']._pwned = True",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_cannot_run_code(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "sdescore.ScoreModel", "x": _Payload()}, f)
    torch.save({"format": "sdescore.ScoreModel", "x": _Payload()}, tmp_path / "evil2.pt")
    for p in (path, tmp_path / "evil2.pt"):
        with pytest.raises(ValueError, match="not a readable sdescore checkpoint"):
            load_model(p)
    assert not hasattr(sdescore, "_pwned")


def _snapshot(module):
    return {k: (v.clone(), v.dtype) for k, v in module.state_dict().items()}


def _unchanged(module, snap):
    now = module.state_dict()
    return now.keys() == snap.keys() and all(
        torch.equal(now[k], v) and now[k].dtype == dt for k, (v, dt) in snap.items()
    )


def test_failed_load_leaves_the_callers_net_untouched(tmp_path):
    save_model(_mlp_model(sdescore.VPSDE()), tmp_path / "m.pt")  # float32, depth 2
    # a deeper float64 net: the first layers fit, the rest does not; nothing may be copied
    deeper = MLPScoreNet(2, hidden=16, depth=3).double()
    snap = _snapshot(deeper)
    with pytest.raises(ValueError, match="does not fit the network"):
        load_model(tmp_path / "m.pt", net=deeper)
    assert _unchanged(deeper, snap)


def test_load_keeps_the_callers_dtype(tmp_path):
    model = _mlp_model(sdescore.VPSDE(), dtype=torch.float64)
    save_model(model, tmp_path / "m.pt")
    net = MLPScoreNet(2, hidden=16, depth=2)  # float32
    with pytest.warns(UserWarning, match="float64.*float32"):
        loaded = load_model(tmp_path / "m.pt", net=net)
    assert all(p.dtype == torch.float32 for p in net.parameters()) and loaded.net is net
    x = torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(loaded(x.float(), 0.4).double(), model(x, 0.4), rtol=1e-5, atol=1e-5)


def test_load_model_returns_eval_mode(tmp_path):
    model = _mlp_model(sdescore.VPSDE()).train()
    save_model(model, tmp_path / "m.pt")
    assert not load_model(tmp_path / "m.pt").training
    net = MLPScoreNet(2, hidden=16, depth=2).train()
    assert not load_model(tmp_path / "m.pt", net=net).training and not net.training


def test_a_checkpoint_altered_in_the_middle_is_refused(tmp_path):
    model = _mlp_model(sdescore.VPSDE())
    path = tmp_path / "m.pt"
    save_model(model, path)
    raw = bytearray(path.read_bytes())
    # flip one byte inside the stored weights of the output layer (not in a zip header)
    where = raw.find(model.net.out.weight.detach().numpy().tobytes())
    assert where > 0
    raw[where + 5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        load_model(path)


class _DiskFull(RuntimeError):
    pass


@pytest.mark.parametrize("error", [_DiskFull, KeyboardInterrupt, OSError])
def test_failed_save_leaves_no_temporary_and_keeps_the_old_file(tmp_path, monkeypatch, error):
    model = _mlp_model(sdescore.VPSDE())
    path = tmp_path / "m.pt"
    save_model(model, path)
    real_save = torch.save

    def half_save(obj, f, *args, **kwargs):  # write part of the file, then fail like torch does
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as fh:
            fh.truncate(100)
        raise error("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", half_save)
    other = _mlp_model(sdescore.VPSDE(), baseline=False)
    with pytest.raises(KeyboardInterrupt if error is KeyboardInterrupt else OSError):
        save_model(other, path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    x = torch.randn(4, 2)
    assert torch.equal(load_model(path)(x, 0.3), model(x, 0.3))


def test_temporaries_of_killed_saves_are_removed(tmp_path):
    path = tmp_path / "m.pt"
    (tmp_path / "m.pt.tmp999999999").write_bytes(b"half a file")  # its writer was killed
    save_model(_mlp_model(sdescore.VPSDE()), path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


# Conditional models (issue 13): a ConditionalScoreModel must come back as one, with its
# number of classes and null label, and a checkpoint of one kind must never load into the other.


def _conditional_model(param="eps", classes=4, dtype=torch.float64):
    torch.manual_seed(0)
    net = sdescore.ConditionalMLPScoreNet(2, classes, hidden=16, depth=2)
    torch.nn.init.normal_(net.out.weight, std=0.3)
    torch.nn.init.normal_(net.label_embed.weight, std=0.5)
    model = sdescore.ConditionalScoreModel(net, sdescore.VPSDE(), param, num_classes=classes)
    return model.to(dtype)


@pytest.mark.parametrize("param", ["score", "eps"])
def test_conditional_model_round_trip(tmp_path, param):
    model = _conditional_model(param)
    model.fit_baseline(torch.randn(50, 2, dtype=torch.float64))
    save_model(model, tmp_path / "c.pt")
    loaded = load_model(tmp_path / "c.pt")
    assert type(loaded) is sdescore.ConditionalScoreModel
    assert loaded.num_classes == 4 and loaded.null_label == 4 and loaded.has_baseline
    assert type(loaded.net) is sdescore.ConditionalMLPScoreNet
    x, y = torch.randn(8, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 4, 0, 3, 4])
    assert loaded(x, 0.37, y).dtype == torch.float64
    for labels in (y, 2, None):  # per-example labels, one label, the null label
        assert torch.equal(loaded(x, 0.37, labels), model(x, 0.37, labels))
    # a network that is not a library one is passed again, as for a plain ScoreModel
    custom = sdescore.ConditionalScoreModel(
        _CustomConditionalNet(), sdescore.VPSDE(), num_classes=3
    ).double()
    save_model(custom, tmp_path / "cc.pt")
    with pytest.raises(ValueError, match="pass it: net="):
        load_model(tmp_path / "cc.pt")
    loaded = load_model(tmp_path / "cc.pt", net=_CustomConditionalNet().double())
    assert type(loaded) is sdescore.ConditionalScoreModel and loaded.num_classes == 3
    assert torch.equal(loaded(x, 0.2, 1), custom(x, 0.2, 1))


class _CustomConditionalNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.emb = torch.nn.Linear(3, 2), torch.nn.Embedding(4, 2)

    def forward(self, x, t, y):
        return self.lin(torch.cat([x, t[:, None]], dim=1)) + self.emb(y)


def test_conditional_mismatches_are_refused_before_anything_is_loaded(tmp_path):
    from sdescore.models.checkpoint import atomic_save, check_model_state, model_state, safe_load

    save_model(_conditional_model(), tmp_path / "c.pt")
    save_model(_mlp_model(sdescore.VPSDE(), "eps", torch.float64), tmp_path / "p.pt")
    plain = MLPScoreNet(2, hidden=16, depth=2).double()
    other_k = sdescore.ConditionalMLPScoreNet(2, 5, hidden=16, depth=2).double()
    cond = sdescore.ConditionalMLPScoreNet(2, 4, hidden=16, depth=2).double()
    cases = [
        ("c.pt", plain, "holds a ConditionalScoreModel with 4 classes .* without labels"),
        ("c.pt", other_k, "with 4 classes .* built for 5 classes"),
        ("p.pt", cond, "holds an unconditional ScoreModel, but net .* built for 4 classes"),
    ]
    for name, net, match in cases:
        snap = _snapshot(net)
        with pytest.raises(ValueError, match=match):
            load_model(tmp_path / name, net=net)
        assert _unchanged(net, snap)
    # a trainer resuming into the other kind of model is checked by check_model_state
    state = model_state(_mlp_model(sdescore.VPSDE(), "eps", torch.float64))
    with pytest.raises(ValueError, match="unconditional ScoreModel, but the model is a Cond"):
        check_model_state(state, _conditional_model())
    with pytest.raises(ValueError, match="4 classes .*, but the model is a .* with 5 classes"):
        check_model_state(model_state(_conditional_model()), _conditional_model(classes=5))
    # a damaged entry (checksum recomputed, so only the entry is wrong) is refused
    for bad in (
        {"class": "ConditionalScoreModel", "num_classes": 4, "null_label": 0},
        {"class": "ConditionalScoreModel", "num_classes": 0, "null_label": 0},
        {"class": "Other", "num_classes": 4, "null_label": 4},
        "yes",
    ):
        state = safe_load(tmp_path / "c.pt")
        atomic_save({**state, "conditional": bad}, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match="conditional entry is invalid"):
            load_model(tmp_path / "bad.pt")


# --- issue 25: tampering, crafted files, dtypes, devices -----------------------------------
def _resave_raw(state, path):
    """Write `state` as torch.save would, with no checksum of ours (a tamperer's file)."""
    torch.save(state, path)


def test_a_checkpoint_without_its_checksum_is_refused_whatever_its_version(tmp_path):
    from sdescore.models.checkpoint import safe_load

    save_model(_mlp_model(sdescore.VPSDE()), tmp_path / "m.pt")
    state = safe_load(tmp_path / "m.pt")  # verified, checksum removed
    state["state_dict"]["net.out.bias"] = state["state_dict"]["net.out.bias"] + 1.0  # tampered
    for version in (1, 2):
        _resave_raw({**state, "version": version}, tmp_path / "t.pt")
        with pytest.raises(ValueError, match="has no checksum"):
            load_model(tmp_path / "t.pt")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda s: s.pop("sde"), "'sde' entry is invalid: expected .* got nothing"),
        (lambda s: s.update(sde={"class": "Nope", "params": {"a": 1.0}}), "'sde' entry"),
        (lambda s: s.update(net={"class": "Transformer", "config": {}}), "'net' entry .*got"),
        (lambda s: s.pop("state_dict"), "'state_dict' entry is invalid"),
        (lambda s: s.update(scale_by_sigma="no"), "'scale_by_sigma' entry"),
        (lambda s: s.update(dtype="int8"), "'dtype' entry"),
        (lambda s: s["net"]["config"].update(colour=3), "MLPScoreNet configuration .* invalid"),
    ],
)
def test_a_crafted_checkpoint_raises_value_error_naming_the_entry(tmp_path, change, match):
    from sdescore.models.checkpoint import atomic_save, safe_load

    save_model(_mlp_model(sdescore.VPSDE()), tmp_path / "m.pt")
    state = safe_load(tmp_path / "m.pt")
    state["net"] = dict(state["net"], config=dict(state["net"]["config"]))
    change(state)
    atomic_save(state, tmp_path / "c.pt")  # a valid checksum: only the content is wrong
    with pytest.raises(ValueError, match=match):
        load_model(tmp_path / "c.pt")


def test_a_crafted_network_size_is_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    from sdescore.models import checkpoint
    from sdescore.models.checkpoint import atomic_save, safe_load

    save_model(_mlp_model(sdescore.VPSDE()), tmp_path / "m.pt")
    state = safe_load(tmp_path / "m.pt")
    state["net"] = {"class": "MLPScoreNet", "config": {**state["net"]["config"], "hidden": 10**7}}
    atomic_save(state, tmp_path / "big.pt")
    built = []

    class Spy(MLPScoreNet):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self.layers[0].weight.device.type)

    monkeypatch.setitem(checkpoint._NETS, "MLPScoreNet", Spy)
    with pytest.raises(ValueError, match="does not fit the network"):
        load_model(tmp_path / "big.pt")
    assert built == ["meta"]  # the 10**7-wide layers were never allocated


def test_non_finite_weights_are_neither_saved_nor_loaded(tmp_path):
    from sdescore.models.checkpoint import atomic_save, model_state

    model = _mlp_model(sdescore.VPSDE())
    save_model(model, tmp_path / "m.pt")
    before = (tmp_path / "m.pt").read_bytes()
    with torch.no_grad():
        model.net.out.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite .* \['net.out.weight'\]"):
        save_model(model, tmp_path / "m.pt")
    assert (tmp_path / "m.pt").read_bytes() == before  # the old file is kept
    atomic_save(model_state(model), tmp_path / "nan.pt")  # written by other means
    with pytest.raises(ValueError, match="checkpoint holds non-finite"):
        load_model(tmp_path / "nan.pt")


def test_a_missing_file_and_an_absent_device_say_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nope.pt"):
        load_model(tmp_path / "nope.pt")
    save_model(_mlp_model(sdescore.VPSDE()), tmp_path / "m.pt")
    absent = "cuda:99" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ValueError, match="not a device available on this machine"):
        load_model(tmp_path / "m.pt", map_location=absent)
    with pytest.raises(ValueError, match="not a device available"):
        load_model(tmp_path / "m.pt", map_location="gpu")


def test_a_float64_baseline_leaves_a_float32_network_float32(tmp_path):
    # fit_baseline on float64 (numpy-born) data stores float64 buffers next to float32 weights;
    # the reloaded model must take the float32 inputs the saved one took, with equal outputs.
    torch.manual_seed(0)
    net = MLPScoreNet(2, hidden=16, depth=2)
    torch.nn.init.normal_(net.out.weight, std=0.3)
    model = ScoreModel(net, sdescore.VPSDE()).fit_baseline(torch.randn(50, 2, dtype=torch.float64))
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert all(p.dtype == torch.float32 for p in loaded.net.parameters())
    assert loaded.baseline_mean.dtype == torch.float64
    x = torch.randn(4, 2)
    assert torch.equal(loaded(x, 0.3), model(x, 0.3))


def test_a_float64_baseline_does_not_block_resuming_a_float32_run(tmp_path):
    # the same kind in training checkpoints: the saved dtype was the baseline's (float64), so
    # resuming the float32 run was refused as "checkpoint dtype float64 differs"
    def fresh():
        torch.manual_seed(0)
        net = MLPScoreNet(2, hidden=16, depth=2)
        return ScoreModel(net, sdescore.VPSDE()).fit_baseline(
            torch.randn(64, 2, dtype=torch.float64)
        )

    data = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    ck = sdescore.CheckpointConfig(path=tmp_path / "ck.pt")
    sdescore.Trainer(fresh(), data, batch_size=32).run(3, checkpoint=ck, progress=False)
    resumed = sdescore.train(
        fresh(), data, steps=5, resume=True, batch_size=32, progress=False, checkpoint=ck
    )
    assert resumed.steps == 5 and resumed.model.baseline_mean.dtype == torch.float64


def test_a_solver_with_its_grid_is_saved_beside_the_model(tmp_path):
    """Issue 21 item 4: a grid (here explicit times, as a fitted one would be) serialises with
    the model and comes back equal, giving bit-identical samples."""
    model = ScoreModel(MLPScoreNet(2, hidden=8, depth=1), sdescore.VPSDE())
    times = sdescore.TimeQuadratic().times(model.sde, 1.0, 1e-3, 7, torch.empty(0))
    solver = sdescore.UniPC(order=3, grid=times)
    path = tmp_path / "m.pt"
    sdescore.save_model(model, path, solver=solver)
    back = sdescore.load_solver(path)
    assert back == solver
    pf = model.sde.probability_flow(sdescore.load_model(path))
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        a = pf.sample((4, 2), method=solver, generator=gen())
        b = pf.sample((4, 2), method=back, generator=gen())
    assert torch.equal(a, b)
    sdescore.save_model(model, path)
    assert sdescore.load_solver(path) is None
    with pytest.raises(TypeError, match="solver must be an sdescore.Solver"):
        sdescore.save_model(model, path, solver="unipc")


def test_raw_weights_of_a_save_model_file_are_refused(tmp_path):
    # Trial 3 item 9: weights="raw" selects a training checkpoint's optimizer weights; a
    # save_model file holds one set and cannot tell raw from EMA, yet "raw" was accepted.
    model = _mlp_model(sdescore.VPSDE())
    save_model(model, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"weights='raw' .* is a save_model file, which holds one set of weights"):  # fmt: skip
        load_model(tmp_path / "m.pt", weights="raw")
    loaded = load_model(tmp_path / "m.pt")  # the default loads it
    x, t = torch.randn(4, 2), torch.full((4,), 0.3)
    assert torch.equal(loaded(x, t), model.eval()(x, t))
