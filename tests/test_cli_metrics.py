"""The CLI glue every strategy shares: the metrics dict, the training settings, the summary."""

from __future__ import annotations

import inspect
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlcourse.cli import TRAIN_STRATEGIES, build_parser, summary
from dlcourse.commands import training_settings
from dlcourse.data_parallel import DataParallelConfig
from dlcourse.hybrid import HybridConfig
from dlcourse.metrics import run_metrics
from dlcourse.pipeline import PipelineConfig
from dlcourse.train import fit

TEST = {"loss": 0.3, "accuracy": 0.9, "macro_f1": 0.89}
# DESIGN.md: the keys every run writes
REQUIRED = "test_accuracy test_loss test_macro_f1 examples_per_s wall_s updates bytes_sent staleness".split()


def _args(*argv: str):
    return build_parser().parse_args(["train", *argv])


@given(
    updates=st.integers(0, 10_000),
    bytes_sent=st.integers(0, 2**40),
    wall_s=st.floats(0, 1e4),
    workers=st.integers(1, 64),
)
def test_run_metrics_is_the_design_dict_of_a_synchronous_run(updates, bytes_sent, wall_s, workers):
    """Every required key; a synchronous run's staleness is all zeros; details pass through; JSON-safe."""
    m = run_metrics(
        "ddp",
        TEST,
        examples_per_s=1.5,
        wall_s=wall_s,
        updates=updates,
        bytes_sent=bytes_sent,
        workers=workers,
    )
    assert all(key in m for key in REQUIRED) and m["strategy"] == "ddp" and m["workers"] == workers
    assert (m["test_accuracy"], m["test_loss"], m["test_macro_f1"]) == (0.9, 0.3, 0.89)
    assert (m["updates"], m["bytes_sent"], m["wall_s"]) == (updates, bytes_sent, wall_s)
    stale = m["staleness"]
    assert stale["max"] == 0 and stale["mean"] == 0.0
    assert sum(stale["histogram"].values()) == updates and set(stale["histogram"]) <= {"0"}
    assert json.loads(json.dumps(m)) == m


def test_run_metrics_keeps_a_given_staleness():
    stale = {"max": 3, "mean": 1.25, "histogram": {"0": 1, "1": 1, "3": 2}}
    m = run_metrics(
        "async-ps", TEST, examples_per_s=1.0, wall_s=1.0, updates=4, bytes_sent=0, staleness=stale
    )
    assert m["staleness"] == stale


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(test={"accuracy": 0.9}), "test must"),
        (dict(updates=-1), "updates"),
        (dict(updates=2.0), "updates"),
        (dict(bytes_sent=-5), "bytes_sent"),
        (dict(wall_s=math.nan), "wall_s"),
        (dict(examples_per_s=-1.0), "examples_per_s"),
    ],
)
def test_run_metrics_names_a_bad_argument(change, match):
    kwargs = dict(test=TEST, examples_per_s=1.0, wall_s=1.0, updates=1, bytes_sent=0) | change
    with pytest.raises(ValueError, match=match):
        run_metrics("ddp", **kwargs)


@pytest.mark.parametrize(
    "argv, default, optimizer, lr",
    [
        ([], "adam", "adam", 1e-3),
        ([], "sgd", "sgd", 0.1),
        (["--optimizer", "momentum"], "adam", "momentum", 0.1),
        (["--optimizer", "adam", "--lr", "0.01"], "sgd", "adam", 0.01),
    ],
)
def test_training_settings_fill_in_the_optimizer_and_its_lr(argv, default, optimizer, lr):
    settings = training_settings(_args(*argv, "--epochs", "3", "--batch-size", "40"), default)
    assert (settings["optimizer"], settings["lr"]) == (optimizer, lr)
    assert (settings["epochs"], settings["batch_size"]) == (3, 40)


def test_training_settings_are_named_as_fit_and_every_config_names_them():
    """fit() and the strategies' configs all take the settings as they are (no renaming glue)."""
    settings = training_settings(_args("--batch-size", "40"), "sgd")
    assert set(settings) <= set(inspect.signature(fit).parameters)
    for config in (DataParallelConfig, HybridConfig, PipelineConfig):
        assert config(**settings).batch_size == 40
    with pytest.raises(ValueError, match="default_optimizer"):
        training_settings(_args(), "lbfgs")


def test_batch_size_help_says_what_it_means_for_every_strategy():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    text = next(a.help for a in train._actions if "--batch-size" in a.option_strings)
    for name in [*TRAIN_STRATEGIES, "simulate"]:
        assert name in text, name


def test_summary_prints_every_workers_clocks_in_ms():
    """Rank 0 waits while rank 1 (the last executor) sleeps; a clock DDP cannot see prints "-"."""
    per_worker = [
        {"rank": 0, "steps": 10, "step_s": 0.100, "compute_s": 0.020, "sync_s": 0.080, "delay_s": 0.0},
        {"rank": 1, "steps": 10, "step_s": 0.101, "compute_s": None, "sync_s": None, "delay_s": 0.08},
    ]
    lines = summary({"strategy": "sync-sgd", "per_worker": per_worker}).splitlines()
    header, fast, slow = lines[-3:]
    assert header.split()[-8:] == ["step", "ms", "compute", "ms", "wait", "ms", "delay", "ms"]
    assert fast.split() == ["0", "10", "100.0", "20.0", "80.0", "0.0"]
    assert slow.split() == ["1", "10", "101.0", "-", "-", "80.0"]


def test_summary_without_per_worker_clocks_prints_no_table():
    base = {"strategy": "single", "updates": 3}
    assert summary(base) == summary({**base, "per_worker": [1, 2]}) == summary({**base, "per_worker": []})
    assert "per worker" not in summary(base)


def test_a_failed_run_is_reported_without_the_parents_traceback(monkeypatch, capsys):
    """A worker failure exits 1 with the rank and the worker's traceback, not the launcher's stack."""
    from dlcourse import cli, commands
    from dlcourse.launcher import WorkerError

    def failing(args):
        raise WorkerError(
            1, "KeyError: 'shard'", "Traceback (most recent call last):\n  in worker\nKeyError: 'shard'"
        )

    monkeypatch.setattr(commands, "single", failing)
    assert cli.main(["train", "--strategy", "single", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dlcourse train: error: worker rank 1 failed: KeyError")
    assert "in worker" in err and "cli.py" not in err

    def bug(args):
        raise RuntimeError("a bug in dlcourse itself")

    monkeypatch.setattr(commands, "single", bug)
    with pytest.raises(RuntimeError, match="a bug"):  # other errors keep their traceback
        cli.main(["train", "--strategy", "single", "--no-progress"])
