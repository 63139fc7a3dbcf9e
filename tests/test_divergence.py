"""Issue 17: a run that blows up stops promptly and says so, in every runtime and in the CLI.

Every run here is forced to diverge with lr 100 on the MLP and a few hundred examples; it
must stop within a few updates with :class:`~dlcourse.divergence.Diverged` naming the update.
The CLI turns it into exit status 1, one line, and JSON with ``"diverged": true``.
"""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch

from dlcourse import cli
from dlcourse.data import MnistSplit
from dlcourse.divergence import LOSS_LIMIT, Diverged, check_finite, find_diverged
from dlcourse.launcher import WorkerError, WorkerLost
from dlcourse.models import make_model

FEW = 5  # "within a few updates": every forced divergence below stops by this update


@pytest.fixture(scope="module")
def small(mnist) -> MnistSplit:
    """400 training and 200 test digits: enough for a few steps of every runtime."""
    return MnistSplit(mnist.train[:400], mnist.test[:200], source="subset")


def assert_prompt(e: Diverged, runtime: str) -> None:
    assert e.runtime == runtime
    assert 1 <= e.index <= FEW, f"stopped only at {e.where} {e.index}: {e}"
    assert f"diverged at {e.where} {e.index}" in str(e) and "Try" in str(e)
    assert not math.isfinite(e.value) or e.value > LOSS_LIMIT


# ---------------------------------------------------------------------------- the error type


def test_check_finite_passes_finite_values_through():
    assert check_finite(2.3, runtime="single", index=1) == 2.3
    grads = [torch.ones(3), torch.zeros(2)]
    assert check_finite(grads, runtime="async-ps", index=1, what="gradient") is grads


@pytest.mark.parametrize(
    "value, what",
    [(float("nan"), "loss"), (torch.tensor(float("inf")), "loss"), (LOSS_LIMIT + 1, "loss")]
    + [([torch.ones(2), torch.tensor([1.0, float("nan")])], "gradient")],
)
def test_check_finite_raises_diverged_naming_where(value, what):
    with pytest.raises(Diverged) as info:
        check_finite(value, runtime="ddp", where="update", index=7, worker=1, what=what)
    e = info.value
    assert (e.runtime, e.where, e.index, e.worker, e.what) == ("ddp", "update", 7, 1, what)
    assert str(e).startswith(f"ddp diverged at update 7 on worker 1: the {what} is ")
    assert isinstance(e, RuntimeError)  # the CLI's "a run failed": exit 1


def test_a_large_gradient_is_not_a_divergence():
    """Only a loss has a limit; a finite gradient or parameter of any size passes."""
    check_finite(torch.full((3,), 1e30), runtime="async-ps", index=1, what="gradient")


def test_diverged_survives_pickling_and_the_launchers_text():
    e = Diverged("async-ps", "step", 3, worker=2, value=float("nan"))
    again = pickle.loads(pickle.dumps(e))
    assert again.as_dict() == e.as_dict()
    assert "staleness" in e.hint  # what to try, in the lecture's terms
    # a worker's exception reaches the parent as text inside a WorkerError
    wrapped = WorkerError(3, f"Diverged: {e}", "Traceback ...")
    assert find_diverged(wrapped).as_dict() == e.as_dict()
    lost = WorkerError(0, "parameter server 0 failed", lost=[WorkerLost(5, f"Diverged: {e}")])
    assert find_diverged(lost).as_dict() == e.as_dict()
    assert find_diverged(WorkerError(1, "ValueError: x")) is None
    assert json.loads(json.dumps(e.as_dict()))["diverged"] is True


# ---------------------------------------------------------------------------- every runtime


def test_single_process_fit(small):
    from dlcourse.train import fit

    with pytest.raises(Diverged) as info:
        fit(make_model("mlp", seed=0), small.train, lr=100, optimizer="sgd", batch_size=50, progress=False)
    assert_prompt(info.value, "single")


def test_replicated(small):
    from dlcourse.replication import ReplicatedModel
    from dlcourse.train import fit

    model = ReplicatedModel(make_model("mlp", seed=0), ["cpu", "cpu"])
    with pytest.raises(Diverged) as info:
        fit(model, small.train, lr=100, optimizer="sgd", batch_size=50, progress=False, runtime="replicated")
    assert_prompt(info.value, "replicated")


@pytest.mark.parametrize("policy", ["sync", "async", "softsync", "bounded", "decentralized"])
def test_simulator_every_policy(small, policy):
    from dlcourse.sim import SimConfig, simulate

    extra = {"softsync": 2} if policy == "softsync" else {"staleness_bound": 1} if policy == "bounded" else {}
    config = SimConfig(policy=policy, num_workers=4, lr=100, batch_size=50, **extra)
    with pytest.raises(Diverged) as info:
        simulate(config, small)
    e = info.value
    assert_prompt(e, f"simulate {policy}")
    # what it recorded up to there comes with it: the curves stop before the blow-up
    assert e.partial is not None and all(math.isfinite(p.loss) for p in e.partial.evals)


def test_a_panel_shows_the_divergence_as_its_message(small):
    from dlcourse.sim import SimConfig
    from dlcourse.viz import StalenessExplorer

    # N = 16 workers by default: each must take a few steps, so batches of 10 on 400 digits
    panel = StalenessExplorer(base=SimConfig(lr=100, batch_size=10), data=small)
    assert "diverged at update" in panel.message.value
    assert panel.diverged is not None and panel.image.value  # drawn, up to the divergence
    assert all(math.isfinite(p.loss) for p in panel.result.evals)


@pytest.mark.multiprocess
@pytest.mark.parametrize("strategy", ["ddp", "sync-sgd", "averaging"])
def test_data_parallel(small, strategy, no_orphans):
    from dlcourse.averaging import train_averaging
    from dlcourse.data_parallel import DataParallelConfig, train_ddp, train_sync_sgd

    train_fn = {"ddp": train_ddp, "sync-sgd": train_sync_sgd, "averaging": train_averaging}[strategy]
    config = DataParallelConfig(model="mlp", lr=100, batch_size=50)
    with pytest.raises(Diverged) as info:
        train_fn(small.train, 2, config, test=small.test, backend="gloo", timeout=120)
    assert_prompt(info.value, strategy)
    assert info.value.worker in (0, 1)


@pytest.mark.multiprocess
@pytest.mark.parametrize("extra", [{}, {"softsync": 2}, {"staleness_bound": 1}])
def test_parameter_server(extra, no_orphans):
    from dlcourse.parameter_server import PSConfig, run_parameter_server

    config = PSConfig(num_workers=2, lr=100, steps=40, train_examples=400, test_examples=200, **extra)
    with pytest.raises(Diverged) as info:
        run_parameter_server(config)
    assert_prompt(info.value, "async-ps")


@pytest.mark.multiprocess
def test_decentralized(small, no_orphans):
    from dlcourse.decentralized import DecentralizedConfig, train_decentralized

    with pytest.raises(Diverged) as info:
        train_decentralized(DecentralizedConfig(lr=100), 2, train=small.train, test=small.test, timeout=120)
    assert_prompt(info.value, "decentralized")


@pytest.mark.multiprocess
@pytest.mark.parametrize("microbatches, runtime", [(1, "model-parallel"), (4, "pipeline")])
def test_model_parallel_and_pipeline(small, microbatches, runtime, no_orphans):
    from dlcourse.pipeline import PipelineConfig, train_stages

    config = PipelineConfig(num_microbatches=microbatches, lr=100)
    with pytest.raises(Diverged) as info:
        train_stages(make_model("mlp", seed=0), small.train, 2, config, timeout=120)
    assert_prompt(info.value, runtime)


@pytest.mark.multiprocess
def test_hybrid(small, no_orphans):
    from dlcourse.hybrid import HybridConfig, run_hybrid

    with pytest.raises(Diverged) as info:
        run_hybrid(
            make_model("mlp", seed=0), small.train.X, small.train.y, 2, HybridConfig(lr=100), timeout=120
        )
    assert_prompt(info.value, "hybrid")


# ---------------------------------------------------------------------------- the command line


def test_cli_train_diverged_exits_1_with_one_line_and_json(tmp_path, capsys):
    out = tmp_path / "run.json"
    argv = ["train", "--strategy", "single", "--model", "mlp", "--lr", "100", "--optimizer", "sgd"]
    assert cli.main([*argv, "--no-progress", "--json", str(out)]) == 1
    err = capsys.readouterr().err
    assert "single diverged at update" in err and "Traceback" not in err
    metrics = json.loads(out.read_text())
    assert metrics["diverged"] is True and metrics["strategy"] == "single"
    assert metrics["diverged_at"]["where"] == "update" and metrics["diverged_at"]["index"] <= FEW


def test_cli_simulate_diverged_json_has_the_curve_up_to_there(tmp_path, capsys):
    out = tmp_path / "sim.json"
    assert (
        cli.main(["simulate", "--policy", "async", "--workers", "4", "--lr", "100", "--json", str(out)]) == 1
    )
    assert "simulate async diverged at update" in capsys.readouterr().err
    metrics = json.loads(out.read_text())
    assert metrics["diverged"] is True and metrics["policy"] == "async"
    assert metrics["diverged_at"]["index"] <= FEW and metrics["evals"]


def test_cli_simulate_honours_progress(capsys):
    argv = ["simulate", "--policy", "sync", "--workers", "2", "--batch-size", "500"]
    assert cli.main([*argv, "--progress"]) == 0
    assert "simulate sync" in capsys.readouterr().err  # tqdm writes to stderr
    assert cli.main([*argv, "--no-progress"]) == 0
    assert "simulate sync" not in capsys.readouterr().err


def test_epochs_zero_is_a_bad_argument(capsys):
    for command in (["train", "--strategy", "single"], ["simulate"]):
        with pytest.raises(SystemExit) as info:
            cli.main([*command, "--epochs", "0"])
        assert info.value.code == 2
        assert "--epochs: must be >= 1, got 0" in capsys.readouterr().err


def test_summary_names_lost_and_slowed_workers():
    text = cli.summary(
        {"strategy": "async-ps", "lost_workers": {"3": 29}, "slow_worker": 1, "slow_delay": 0.05}
    )
    assert "worker 3 after 29 updates" in text
    assert "worker 1, 0.05 s added to each of its steps" in text
    # the data-parallel strategies keep the slowed worker in their config
    assert "worker 0, 0.2 s" in cli.summary({"config": {"slow_worker": 0, "slow_delay": 0.2}})
    assert "lost" not in cli.summary({"strategy": "ddp", "lost_workers": {}})


@pytest.mark.multiprocess
def test_a_killed_async_worker_appears_in_the_printed_summary(no_orphans):
    from dlcourse.parameter_server import PSConfig, run_parameter_server

    config = PSConfig(
        num_workers=3, steps=12, kill_worker=2, kill_after=4, train_examples=600, test_examples=200
    )
    result = run_parameter_server(config)
    assert result.lost_workers == {2: 4}
    assert "lost worker: worker 2 after 4 updates" in cli.summary(result.metrics())


def test_help_states_the_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse would wrap "async-ps" at its hyphen
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Default: staleness (with lr 0.2) for train --strategy async-ps" in text
    assert "default: adam (lr 1e-3) for single" in text
