"""Decentralized async SGD with compressed updates on real processes (Strom 2015)."""

from __future__ import annotations

import json
import time

import pytest

from dlcourse import cli
from dlcourse.data import Dataset
from dlcourse.decentralized import DecentralizedConfig, train_decentralized
from dlcourse.launcher import WorkerError
from dlcourse.models import count_parameters, make_model
from dlcourse.train import evaluate, fit


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
    # same batches: the worker's shuffle generator is seeded with seed * 1000 + rank
    fit(model, train, epochs=2, batch_size=50, lr=0.1, optimizer="sgd", seed=3000, progress=False)
    want = evaluate(model, test)
    assert result.updates == 16
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
