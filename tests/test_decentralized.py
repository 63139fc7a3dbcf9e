"""Decentralized async SGD with compressed updates on real processes (Strom 2015)."""

from __future__ import annotations

import json
import time

import pytest
import torch
import torch.nn.functional as F

from dlcourse import cli
from dlcourse.compression import Compressor
from dlcourse.data import Dataset, MnistSplit, batch_order, batch_stream
from dlcourse.decentralized import DecentralizedConfig, train_decentralized
from dlcourse.launcher import WorkerError
from dlcourse.models import count_parameters, make_model
from dlcourse.sim import simulate
from dlcourse.sim.decentralized import DecentralizedSimConfig
from dlcourse.train import evaluate


@pytest.fixture(scope="module")
def small(mnist):
    """A small slice of the default data: fast runs for the mechanics."""
    return mnist.train[:400], mnist.test[:200]


@pytest.mark.multiprocess
def test_one_worker_uncompressed_is_plain_sgd(small, no_orphans):
    """With one worker and no compression the run is single-process SGD (PyTorch's as oracle)."""
    train, test = small
    config = DecentralizedConfig(epochs=2, batch_size=50, lr=0.1, seed=3)
    result = train_decentralized(config, 1, train=train, test=test)
    model = make_model("mlp", seed=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(2):  # the same batches: the one batch order of every runtime
        for idx in batch_order(len(train), 50, epoch=epoch, seed=3, worker=0):
            opt.zero_grad()
            F.cross_entropy(model(train.X[idx]), train.y[idx]).backward()
            opt.step()
    want = evaluate(model, test)
    assert result.updates == 16
    assert result.elements_sent == 16 * count_parameters(model)  # uncompressed: every element, every step
    assert result.test_loss == pytest.approx(want["loss"], abs=1e-5)
    assert result.test_accuracy == pytest.approx(want["accuracy"], abs=0.006)


@pytest.mark.multiprocess
@pytest.mark.parametrize("topology", ["all", "ring"])
def test_every_replica_applies_every_update(small, topology, no_orphans):
    """3 workers: each applies all 2 x 4 peer updates (forwarded round the ring), and the replicas agree."""
    train, test = small
    config = DecentralizedConfig(tau=0.003, topology=topology, batch_size=33, epochs=1)
    result = train_decentralized(config, 3, train=train, test=test, timeout=30)
    steps = 5  # ceil(133 / 33) per worker
    assert result.updates == 3 * steps
    assert result.examples == 3 * 133  # each worker's last batch holds one example, not 33
    assert len(result.staleness) == 3 * 2 * steps
    assert result.replica_divergence < 1e-5
    assert result.messages == (3 * 2 * steps)  # all: 2 peers each; ring: 2 hops each
    assert len(result.bytes_per_step) == steps


@pytest.mark.multiprocess
def test_fewer_workers_early(small, no_orphans):
    """warmup_workers=1 for half of the first epoch: the late worker skips those steps, then joins."""
    train, test = small
    config = DecentralizedConfig(tau=0.003, batch_size=20, warmup_workers=1, warmup_fraction=0.5)
    result = train_decentralized(config, 2, train=train, test=test, timeout=30)
    assert result.updates == 10 + (10 - 5)
    assert result.replica_divergence < 1e-5


@pytest.mark.multiprocess
def test_a_students_quantizer_and_residual_step_run_in_the_workers(small, no_orphans):
    """Rules equal to the library's give the same run, one that drops the residual does not.

    One worker, so that the run is deterministic (with peers, when their updates arrive varies);
    it applies its own compressed update, so what its compressor sends decides its model."""
    from dlcourse.compression import quantize

    def residual_step(residual, update, tau):
        r = residual + update
        sent = quantize(r, tau)
        return sent, r - sent

    def drops_the_residual(residual, update, tau):
        return quantize(residual + update, tau), torch.zeros_like(residual)

    train, test = small
    runs = {
        name: train_decentralized(
            DecentralizedConfig(tau=0.003, batch_size=50, seed=2, **rules),
            1,
            train=train,
            test=test,
            timeout=30,
        )
        for name, rules in [
            ("library", {}),
            ("own", dict(quantizer=quantize, residual_fn=residual_step)),
            ("dropped", dict(residual_fn=drops_the_residual)),
        ]
    }
    lib, own, dropped = runs["library"], runs["own"], runs["dropped"]
    assert own.elements_sent == lib.elements_sent and own.test_loss == pytest.approx(lib.test_loss, abs=1e-6)
    assert dropped.elements_sent < lib.elements_sent  # what stayed below tau is never sent
    config = own.metrics()["config"]
    assert (config["quantizer"], config["residual_fn"]) == ("quantize", "residual_step")
    json.dumps(own.metrics())  # a student's functions travel by name only


@pytest.mark.slow
@pytest.mark.multiprocess
def test_residual_keeps_accuracy_without_it_is_worse(mnist, no_orphans):
    """The lecture's claim: with the residual, ~200x less traffic costs little accuracy; without, much.

    Two workers, the MLP, 2 epochs on the default data (160 steps in all): the compressed
    run with the residual lands within 0.04 of the uncompressed one, the 1-bit run
    without the residual at least 0.15 below it.
    """
    runs = {}
    for name, kwargs in {
        "dense": {},
        "residual": {"tau": 0.003},
        "no residual": {"tau": 0.003, "variant": "onebit"},
    }.items():
        config = DecentralizedConfig(epochs=2, batch_size=50, **kwargs)
        runs[name] = train_decentralized(config, 2, train=mnist.train, test=mnist.test, timeout=60)
    dense, full, onebit = runs["dense"], runs["residual"], runs["no residual"]
    assert dense.test_accuracy > 0.8
    assert full.test_accuracy >= dense.test_accuracy - 0.04, runs
    assert onebit.test_accuracy <= full.test_accuracy - 0.15, runs
    assert full.bytes_sent * 50 < dense.bytes_sent
    assert full.compression_ratio > 100


@pytest.mark.multiprocess
def test_a_crashing_worker_is_reported_quickly(small, no_orphans):
    """Labels out of range on rank 1's shard: WorkerError names rank 1 within seconds, no hang."""
    train, test = small
    y = train.y.clone()
    y[200:] = 99  # rank 1's shard of 2
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        train_decentralized(
            DecentralizedConfig(tau=0.003), 2, train=Dataset(train.X, y), test=test, timeout=20
        )
    assert info.value.rank == 1
    assert time.monotonic() - start < 40


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau": 0.0}, "tau must be > 0"),
        ({"tau": float("nan")}, "tau must be finite"),
        ({"topology": "star"}, "topology must be one of 'all', 'ring'"),
        ({"variant": "2bit"}, "variant must be one of"),
        ({"warmup_fraction": 1.5}, "warmup_fraction must be <= 1.0"),
        ({"warmup_workers": 0}, "warmup_workers must be >= 1"),
        ({"lr": -0.1}, "lr must be > 0"),
    ],
)
def test_bad_config(kwargs, match):
    """Every bad setting names itself, its value and what is allowed."""
    with pytest.raises(ValueError, match=match):
        DecentralizedConfig(**kwargs)


def test_bad_run_arguments(small):
    """More warm-up workers than workers, or fewer examples than workers, are refused up front."""
    train, test = small
    with pytest.raises(ValueError, match=r"warmup_workers must be <= num_workers \(2\)"):
        train_decentralized(DecentralizedConfig(warmup_workers=3), 2, train=train, test=test)
    with pytest.raises(ValueError, match="at least num_workers"):
        train_decentralized(DecentralizedConfig(), 4, train=train[:3], test=test)
    with pytest.raises(ValueError, match="num_workers must be >= 1"):
        train_decentralized(DecentralizedConfig(), 0, train=train, test=test)
    with pytest.raises(ValueError, match="test must be a Dataset or None, got tuple"):
        train_decentralized(DecentralizedConfig(), 2, train=train, test=(test.X, test.y))


@pytest.mark.multiprocess
def test_cli_runs_and_writes_the_metrics(tmp_path, capsys, no_orphans):
    """dlcourse train --strategy decentralized writes the common metrics to --json."""
    out = tmp_path / "run.json"
    argv = "train --strategy decentralized --model mlp --workers 2 --tau 0.01 --topology ring"
    code = cli.main([*argv.split(), "--batch-size", "200", "--json", str(out)])
    assert code == 0
    metrics = json.loads(out.read_text())
    for key in ("test_accuracy", "test_loss", "test_macro_f1", "examples_per_s", "wall_s", "updates"):
        assert isinstance(metrics[key], (int, float))
    assert metrics["updates"] == 20 and metrics["topology"] == "ring"
    dense = metrics["updates"] * count_parameters(make_model("mlp")) * 4
    assert 0 < metrics["bytes_sent"] < dense / 20  # far below dense float32
    assert set(metrics["staleness"]) == {"max", "mean", "histogram"}
    assert "decentralized" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        "--tau 0",
        "--topology star",
        "--compression 2bit",
        "--warmup-fraction 2",
        "--warmup-workers 3",
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(argv, capsys):
    """Bad decentralized options exit 2 with one line on stderr, no traceback."""
    try:
        code = cli.main(["train", "--strategy", "decentralized", "--workers", "2", *argv.split()])
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_config_without_tau_means_compression_off():
    """tau=None sends uncompressed updates; with tau the variant decides."""
    config = DecentralizedConfig()
    assert config.compressor_variant == "dense"
    assert DecentralizedConfig(tau=0.1, variant="onebit").compressor_variant == "onebit"
    assert "tau=None" in repr(config)


# --------------------------------------------------------------------------------------
# The same policy in the simulated cluster


@pytest.fixture(scope="module")
def small_split(mnist):
    return MnistSplit(mnist.train[:800], mnist.test[:300], "subset")


def test_sim_one_worker_uncompressed_is_plain_sgd(small_split):
    """One simulated worker without compression is torch.optim.SGD on the same batches."""
    config = DecentralizedSimConfig(num_workers=1, epochs=2, batch_size=100, lr=0.1, seed=4)
    result = simulate(config, small_split)
    model = make_model("mlp", seed=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stream = batch_stream(800, 100, seed=4, worker=0)
    for _ in range(16):
        idx = next(stream)
        opt.zero_grad()
        F.cross_entropy(model(small_split.train.X[idx]), small_split.train.y[idx]).backward()
        opt.step()
    want = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    assert result.updates == 16
    assert torch.allclose(result.params, want, atol=1e-6)


def test_sim_traffic_falls_by_orders_of_magnitude(small_split):
    """Same run, compressed with the residual: >= 100x fewer bytes; without the residual, worse accuracy."""
    base = {"num_workers": 4, "epochs": 2, "batch_size": 50, "bandwidth": 1e9}
    dense = simulate(DecentralizedSimConfig(**base), small_split)
    full = simulate(DecentralizedSimConfig(**base, tau=0.003), small_split)
    onebit = simulate(DecentralizedSimConfig(**base, tau=0.003, variant="onebit"), small_split)
    assert dense.updates == full.updates == 4 * 2 * 4
    assert dense.bytes_sent > 100 * full.bytes_sent
    assert full.test.accuracy >= dense.test.accuracy - 0.1
    assert onebit.test.accuracy <= full.test.accuracy - 0.15


def test_sim_small_messages_win_on_a_slow_network(small_split):
    """At 100 kB/s a dense MLP update takes ~2 s per peer: compressed runs get far more examples/s."""
    base = {"num_workers": 4, "epochs": 1, "batch_size": 100, "bandwidth": 1e5}
    dense = simulate(DecentralizedSimConfig(**base), small_split)
    full = simulate(DecentralizedSimConfig(**base, tau=0.003), small_split)
    assert full.examples_per_s > 3 * dense.examples_per_s
    assert full.staleness_summary()["mean"] <= dense.staleness_summary()["mean"]


@pytest.mark.parametrize("topology", ["all", "ring"])
def test_sim_is_deterministic_and_delivers_every_update(small_split, topology):
    """Same config, same parameters; dense messages cross N - 1 links per update in both topologies."""
    config = DecentralizedSimConfig(num_workers=3, epochs=1, batch_size=100, topology=topology)
    a, b = simulate(config, small_split), simulate(config, small_split)
    assert torch.equal(a.params, b.params)
    steps = 3 * 3  # ceil(266 / 100) per worker
    message = len(Compressor(a.params.numel(), variant="dense").compress(torch.zeros(a.params.numel())))
    assert a.updates == steps
    assert a.bytes_sent == steps * 2 * message


def test_sim_fewer_workers_early(small_split):
    """warmup_workers=1 for half of the first epoch: the others wait, skip those steps, then join."""
    config = DecentralizedSimConfig(
        num_workers=4, tau=0.003, batch_size=50, warmup_workers=1, warmup_fraction=0.5
    )
    result = simulate(config, small_split)
    assert result.updates == 4 * 4 - 3 * 2  # 4 steps each, the 3 late workers skip 2
    first_compute = {
        w: min(e.start for e in result.trace if e.worker == w and e.kind == "compute") for w in range(4)
    }
    assert first_compute[0] == 0.0
    # the late workers start only after worker 0's two warm-up steps are done (on the virtual clock)
    warmup_done = sorted(e.end for e in result.trace if e.worker == 0 and e.kind == "compute")[1]
    assert all(first_compute[w] >= warmup_done for w in (1, 2, 3)), (first_compute, warmup_done)


def test_sim_bad_config():
    """Bad tau, topology or variant of the simulated policy are named."""
    with pytest.raises(ValueError, match="tau must be > 0"):
        DecentralizedSimConfig(tau=-1.0)
    with pytest.raises(ValueError, match="topology must be one of"):
        DecentralizedSimConfig(topology="mesh")
    with pytest.raises(ValueError, match="variant must be one of"):
        DecentralizedSimConfig(tau=0.1, variant="dense")
    with pytest.raises(ValueError, match=r"warmup_workers must be <= 4"):
        DecentralizedSimConfig(num_workers=4, warmup_workers=5)


def test_cli_simulate_decentralized(tmp_path, capsys):
    """dlcourse simulate --policy decentralized writes the common metrics and the compression."""
    out = tmp_path / "sim.json"
    argv = (
        "simulate --policy decentralized --model mlp --workers 4 --tau 0.01 --topology ring --batch-size 400"
    )
    assert cli.main([*argv.split(), "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["policy"] == "decentralized" and metrics["compression"] == "full"
    assert metrics["updates"] == 4 * 3  # 1000 examples per worker, batch 400
    assert metrics["config"]["topology"] == "ring" and metrics["config"]["tau"] == 0.01
    assert set(metrics["staleness"]) == {"max", "mean", "histogram"}
    capsys.readouterr()
