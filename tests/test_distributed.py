"""Several processes on the CPU (gloo, 2 ranks, `torch.multiprocessing.spawn`).

One spawned job runs every multi-process scenario and saves what each rank saw; the tests compare
that with single-process references computed here. A second job checks that a rank that raises
ends the job promptly. Together about 15 s on 2 cores (most of it starting the workers).
"""

from __future__ import annotations

import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sdescore
import sdescore.training.checkpoint
from sdescore import EMAConfig, MLPScoreNet, OptimizerConfig, ScoreModel, Trainer, dsm_loss, train
from sdescore.distributed import (
    gather,
    process_group,
    rank_seed,
    shard,
    sharded_likelihood,
    sharded_sample,
)

WORLD = 2
GLOBAL_BATCH = 7  # shares of 3 and 4: the unequal-share weighting is exercised


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(fn, args) -> None:
    # forkserver: a clean single-threaded server imports torch and sdescore once, and forks the
    # workers from it. Plain fork from the pytest process can deadlock (a lock held by one of
    # its threads at fork time); spawn re-imports everything per worker (~5 s each, busy CI).
    mp.set_forkserver_preload(["torch", "sdescore"])
    mp.start_processes(fn, args=args, nprocs=WORLD, join=True, start_method="forkserver")


def _launch_env(rank: int, world: int, port: int) -> None:
    # What torchrun sets for each worker.
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )


def _model(seed: int = 0) -> ScoreModel:
    torch.manual_seed(seed)
    return ScoreModel(MLPScoreNet(2, hidden=16, depth=2), sdescore.VPSDE()).double()


def _data() -> torch.Tensor:
    return torch.randn(64, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def _fixed_loss(model, x, *, generator=None):
    """DSM with t and noise computed from x: no randomness, so DDP must equal one process."""
    t = 0.1 + 0.8 * torch.sigmoid(x[:, 0])
    return dsm_loss(model, x, t=t, noise=torch.cos(3 * x + 1))


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _job(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    _launch_env(rank, world, port)
    saved = {}
    writes = []
    real_save = sdescore.training.checkpoint.atomic_save
    sdescore.training.checkpoint.atomic_save = lambda state, path: (
        writes.append(path),
        real_save(state, path),
    )
    with process_group("cpu", timeout=60) as where:
        saved["env"] = (where.rank, where.world_size)
        # 1. DDP with a deterministic loss; rank 1 starts from other weights (DDP broadcasts).
        model = _model(seed=rank)
        tr = Trainer(
            model, _data(), loss=_fixed_loss, batch_size=GLOBAL_BATCH,
            optimizer=OptimizerConfig(lr=1e-2), ema=EMAConfig(0.9), seed=3,
        )  # fmt: skip
        tr.run(3, progress=False)
        saved["fixed"] = (_params(model), _params(tr.ema_model), list(tr.losses))
        # 2. DSM with random noise: checkpoints, and resume after a restart equals one run.
        ck_a, ck_b = os.path.join(out, "a.pt"), os.path.join(out, "b.pt")
        opts = dict(batch_size=8, lr=1e-2, progress=False, seed=1, checkpoint_every=2)
        full = train(_model(), _data(), steps=4, checkpoint_path=ck_a, **opts)
        writes_full = len(writes)
        train(_model(), _data(), steps=2, checkpoint_path=ck_b, **opts)
        resumed = train(_model(7), _data(), steps=4, checkpoint_path=ck_b, resume=True, **opts)
        saved["resume"] = (_params(full.model), _params(resumed.model), writes_full)
        saved["resume_losses"] = (full.losses, resumed.losses)
        # 3. Sharded likelihood: exactly one collective, after the solves.
        calls = []
        real_all_reduce = dist.all_reduce
        dist.all_reduce = lambda *a, **k: (calls.append(1), real_all_reduce(*a, **k))[1]
        try:
            res = sharded_likelihood(_model(), _data()[:9], estimator="exact", rtol=1e-7, atol=1e-7)
        finally:
            dist.all_reduce = real_all_reduce
        saved["nll"] = (res.bits_per_dim, res.log_prob, res.n, len(calls))
        # 4. Sharded sampling: reproducible, gathered in rank order.
        pf = sdescore.VPSDE().probability_flow(_model())
        kw = dict(method="euler", steps=5, dtype=torch.float64, device="cpu")
        saved["samples"] = [sharded_sample(pf, (5, 2), seed=3, **kw) for _ in range(2)]
        saved["gather"] = gather(torch.full((rank + 1, 2), float(rank)))
        # 5. Sharded evaluate: every collective after the last score call (adaptive dopri5).
        events = []
        spied = {name: getattr(dist, name) for name in ("all_reduce", "all_gather", "broadcast")}

        def spy(name):
            return lambda *a, **k: (events.append(name), spied[name](*a, **k))[1]

        def score(x, t):
            events.append("score")
            return _mixture_score(x, t)

        for name in spied:
            setattr(dist, name, spy(name))
        try:
            ev, xs = sdescore.evaluate(
                score, _data()[:11], sde=sdescore.VPSDE(), **_EVAL, return_samples=True
            )
        finally:
            for name, fn in spied.items():
                setattr(dist, name, fn)
        saved["evaluate"] = (ev, xs, events)
        # 6. Classifier-free training under DDP: the label-dropout loss sees the model's class.
        cond = sdescore.ConditionalScoreModel(
            sdescore.ConditionalMLPScoreNet(2, 3, hidden=8, depth=1), sdescore.VPSDE(), "eps",
            num_classes=3,
        )  # fmt: skip
        labels = torch.arange(64) % 3
        cf = train(
            cond.double(), _data(), labels=labels, loss=sdescore.label_dropout_loss, steps=2,
            batch_size=8, progress=False, seed=0,
        )  # fmt: skip
        saved["label_dropout"] = (list(cf.losses), _params(cf.model))
    saved["group_destroyed"] = not dist.is_initialized()
    torch.save(saved, os.path.join(out, f"rank{rank}.pt"))


def _mixture_score(x, t):
    mix = sdescore.toy.GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 0.5]]), 0.6)
    return mix.score_fn(sdescore.VPSDE())(x, t)


_EVAL = dict(
    num_samples=7,
    sampler=sdescore.TorchDiffEq("dopri5", rtol=1e-6, atol=1e-6),
    likelihood={"estimator": "exact", "rtol": 1e-7, "atol": 1e-7},
    elbo={"samples": 16},
    generator=torch.Generator().manual_seed(4),
)


def _failing_job(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    _launch_env(rank, world, port)
    with process_group("cpu", timeout=120):
        if rank == 1:
            raise RuntimeError("rank 1 fails on purpose")
        dist.all_reduce(torch.ones(1))  # rank 0 would wait here for the failed rank


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ddp"))
    _start(_job, (WORLD, _free_port(), out))
    return [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=False) for r in range(WORLD)]


def test_environment_and_clean_teardown(ranks):
    assert [r["env"] for r in ranks] == [(0, 2), (1, 2)]
    assert all(r["group_destroyed"] for r in ranks)
    expect = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    assert all(torch.equal(r["gather"], expect) for r in ranks)


def test_ddp_equals_single_process_on_the_global_batch(ranks):
    model = _model(seed=0)
    tr = Trainer(
        model, _data(), loss=_fixed_loss, batch_size=GLOBAL_BATCH,
        optimizer=OptimizerConfig(lr=1e-2), ema=EMAConfig(0.9), seed=3, distributed=False,
    )  # fmt: skip
    tr.run(3, progress=False)
    for r in ranks:
        params, ema, losses = r["fixed"]
        # float64: only the summation order of the gradient differs (all-reduce vs one batch).
        for a, b in zip(params, _params(model), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        for a, b in zip(ema, _params(tr.ema_model), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            torch.tensor(losses), torch.tensor(tr.losses), rtol=1e-12, atol=0
        )


def test_checkpoint_written_once_and_resume_exact(ranks):
    full0, resumed0, writes0 = ranks[0]["resume"]
    # rank 0 writes at steps 2 and 4 plus the final save; rank 1 never writes
    assert writes0 == 3 and ranks[1]["resume"][2] == 0
    for r in ranks:
        full, resumed, _ = r["resume"]
        assert all(torch.equal(a, b) for a, b in zip(full, resumed, strict=True))
        assert all(torch.equal(a, b) for a, b in zip(full, full0, strict=True))  # ranks agree
        assert torch.equal(*r["resume_losses"])


def test_resume_refuses_another_world_size(tmp_path):
    path = tmp_path / "ck.pt"
    tr = Trainer(_model(), _data(), batch_size=8)
    tr.run(1, progress=False)
    state = tr.state_dict()
    state["world_size"] = 2
    sdescore.models.checkpoint.atomic_save(state, path)
    with pytest.raises(ValueError, match="2 process.*this one has 1"):
        Trainer(_model(), _data(), batch_size=8).load(path)


def test_sharded_likelihood_equals_single_process(ranks):
    one = sdescore.likelihood(_model(), _data()[:9], estimator="exact", rtol=1e-7, atol=1e-7)
    for r in ranks:
        bpd, log_prob, n, collectives = r["nll"]
        assert n == 9 and collectives == 1
        # per-example values depend on the batch at the solver tolerance (shared steps)
        assert abs(bpd - one.bits_per_dim.mean().item()) < 1e-5
        assert abs(log_prob - one.log_prob.mean().item()) < 1e-5
    local = sharded_likelihood(_model(), _data()[:9], estimator="exact", rtol=1e-7, atol=1e-7)
    assert local.n == 9 and abs(local.bits_per_dim - one.bits_per_dim.mean().item()) < 1e-5


def test_sharded_sample_reproducible_and_rank_ordered(ranks):
    pf = sdescore.VPSDE().probability_flow(_model())
    kw = dict(method="euler", steps=5, dtype=torch.float64, device="cpu")
    parts = []
    for r in range(WORLD):
        s = shard(5, r, WORLD)
        g = torch.Generator().manual_seed(rank_seed(3, r))
        parts.append(pf.sample((s.stop - s.start, 2), generator=g, **kw))
    expect = torch.cat(parts)
    for r in ranks:
        a, b = r["samples"]
        assert torch.equal(a, b) and torch.equal(a, expect)
    assert not torch.equal(parts[0][:2], parts[1][:2])  # the ranks draw different streams


def test_a_failing_rank_ends_the_job_promptly():
    start = time.perf_counter()
    # Whichever is reported first: rank 1's own error, or rank 0's collective failing because
    # rank 1 left (gloo: connection reset/closed), never rank 0 waiting out the 120 s timeout.
    with pytest.raises(mp.ProcessRaisedException, match="fails on purpose|[Cc]onnection"):
        _start(_failing_job, (WORLD, _free_port()))
    assert time.perf_counter() - start < 30  # the group timeout is 120 s: nobody waited on it


def test_label_dropout_trains_under_ddp(ranks):
    (losses0, params0), (losses1, params1) = (r["label_dropout"] for r in ranks)
    assert len(losses0) == 2 and losses0 == losses1  # the global mean, on every rank
    # The loss ran through DDP, so the gradients were averaged: the ranks' weights agree.
    # (Before, the loss called the model's `labeled` outside DDP: no averaging, the ranks'
    # weights drifted apart.)
    assert all(torch.equal(a, b) for a, b in zip(params0, params1, strict=True))


def test_sharded_evaluate_equals_single_process(ranks):
    data = _data()[:11]
    one = sdescore.evaluate(_mixture_score, data, sde=sdescore.VPSDE(), **{
        **_EVAL, "generator": torch.Generator().manual_seed(4)})  # fmt: skip
    (ev0, xs0, _), (ev1, xs1, _) = (r["evaluate"] for r in ranks)
    assert torch.equal(xs0, xs1) and xs0.shape == (7, 2)
    for key in ev0:  # every rank returns the same figures (times aside)
        assert {k: v for k, v in ev0[key].items() if k != "seconds"} == {
            k: v for k, v in ev1[key].items() if k != "seconds"
        }, key
    assert set(ev0) == set(one) and ev0["sampling"]["world_size"] == 2
    # exact trace, rtol = atol = 1e-7: the batch-shared steps differ, the figure to ~1e-6
    for key in ("nll", "bits_per_dim"):
        assert abs(ev0[key]["value"] - one[key]["value"]) < 1e-5, key
        assert ev0[key]["stderr"] == pytest.approx(one[key]["stderr"], rel=1e-4), key
    # the ELBO draws other t's per rank: equal within its Monte Carlo error (4 sigma)
    se = (ev0["elbo_nll"]["stderr"] ** 2 + one["elbo_nll"]["stderr"] ** 2) ** 0.5
    assert abs(ev0["elbo_nll"]["value"] - one["elbo_nll"]["value"]) < 4 * se
    # samples: each rank its shard from rank_seed(one seed rank 0 drew from the generator)
    base = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(4)))
    pf = sdescore.VPSDE().probability_flow(_mixture_score)
    parts = []
    for r in range(WORLD):
        s = shard(7, r, WORLD)
        g = torch.Generator().manual_seed(rank_seed(base, r))
        solver = _EVAL["sampler"]
        parts.append(
            pf.sample((s.stop - s.start, 2), generator=g, dtype=torch.float64, method=solver)
        )
    torch.testing.assert_close(xs0, torch.cat(parts), rtol=0, atol=0)


def test_sharded_evaluate_meets_only_after_the_solves(ranks):
    for r in ranks:
        events = r["evaluate"][2]
        calls = [e for e in events if e != "score"]
        # the seed broadcast before any solve; after the last score call one gather of the
        # samples (sizes, data) and the one all-reduce of sums and counts; nothing between
        assert calls == ["broadcast", "all_gather", "all_gather", "all_reduce"], calls
        last_score = max(i for i, e in enumerate(events) if e == "score")
        assert events[0] == "broadcast" and events.index("all_gather") > last_score
        assert events.count("score") > 20  # the adaptive solves ran here, between the two


def test_single_process_helpers():
    assert shard(7, 0, 2) == slice(0, 3) and shard(7, 1, 2) == slice(3, 7)
    assert rank_seed(11, 0) == 11 and rank_seed(11, 1) != 11
    with pytest.raises(ValueError, match="rank must be in"):
        shard(4, 2, 2)
    with pytest.raises(TypeError, match="seed="):
        sharded_likelihood(_model(), _data(), generator=torch.Generator())
    with pytest.raises(ValueError, match="distributed=True needs"):
        Trainer(_model(), _data(), distributed=True)
    with pytest.raises(ValueError, match="distributed=True needs"):
        sdescore.evaluate(_mixture_score, _data(), sde=sdescore.VPSDE(), distributed=True)
    with pytest.raises(TypeError, match="distributed must be None or a bool"):
        sdescore.evaluate(_mixture_score, _data(), sde=sdescore.VPSDE(), distributed="yes")
    assert sdescore.distributed.backend_for("cpu") == "gloo"
    assert sdescore.distributed.backend_for("cuda") == "nccl"


def test_bad_seed_timeout_and_process_are_refused():
    # Issue 25, items 15 and 16: rank_seed(2**70) wrapped onto seed 0's stream, a negative
    # timeout was accepted, and a score function failed with an AttributeError.
    assert rank_seed(2**64 - 1, 0) == 2**64 - 1
    for seed in (2**64, 2**70):
        with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*64\)"):
            rank_seed(seed, 0)
    for timeout in (-1, 0, float("inf")):
        with pytest.raises(ValueError, match="timeout must be"):
            with sdescore.distributed.process_group("cpu", timeout=timeout):
                pass
    with pytest.raises(TypeError, match="process must have a sample"):
        sdescore.distributed.sharded_sample(_mixture_score, (4, 2))
