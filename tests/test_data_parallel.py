"""Data parallelism: DDP, written-out sync SGD, in-process replication, the last executor, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse.averaging import parameter_distance, train_reference
from dlcourse.cli import main, summary
from dlcourse.data import Dataset
from dlcourse.data_parallel import DataParallelConfig, collect, ddp_worker, sync_sgd_worker, train_ddp
from dlcourse.environment import full_float32
from dlcourse.launcher import launch
from dlcourse.models import make_model
from dlcourse.replication import ReplicatedModel, replica_devices
from dlcourse.train import fit

BASE = dict(model="mlp", epochs=2, batch_size=20, lr=0.1)
DELAY = 0.08  # seconds the slow worker sleeps per step


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny in-process references


def _many(rank, world_size, train, test, runs):
    return [worker(rank, world_size, train, test, config, None) for worker, config in runs]


RUNS = {
    "ddp": (ddp_worker, DataParallelConfig(**BASE)),
    "sync-sgd": (sync_sgd_worker, DataParallelConfig(**BASE)),
    "ddp-adam": (ddp_worker, DataParallelConfig(**{**BASE, "lr": 1e-3}, optimizer="adam")),
    "sync-sgd-adam": (sync_sgd_worker, DataParallelConfig(**{**BASE, "lr": 1e-3}, optimizer="adam")),
    "sync-slow": (sync_sgd_worker, DataParallelConfig(**BASE, max_steps=10, slow_worker=1, slow_delay=DELAY)),
    "ddp-slow": (ddp_worker, DataParallelConfig(**BASE, max_steps=10, slow_worker=1, slow_delay=DELAY)),
}


@pytest.fixture(scope="module")
def runs(mnist):
    """Every configuration above on 2 real processes (one launch), keyed by name."""
    outputs = launch(_many, 2, mnist.train[:400], mnist.test[:200], list(RUNS.values()), run_timeout=240)
    return {name: collect(name, [o[i] for o in outputs]) for i, name in enumerate(RUNS)}


# ------------------------------------------------------------------- DDP and sync SGD


@pytest.mark.multiprocess
def test_ddp_equals_written_out_gradient_averaging(runs):
    """PyTorch's DistributedDataParallel is the oracle for our all-reduce of gradients."""
    for a, b in [("ddp", "sync-sgd"), ("ddp-adam", "sync-sgd-adam")]:
        assert runs[a].updates == runs[b].updates == 40
        assert parameter_distance(runs[a].parameters, runs[b].parameters) <= 1e-6


@pytest.mark.multiprocess
def test_sync_sgd_equals_single_machine_sgd_on_the_global_batch(runs, mnist):
    reference = train_reference(mnist.train[:400], 2, DataParallelConfig(**BASE))
    assert parameter_distance(runs["sync-sgd"].parameters, reference.parameters) <= 1e-6


@pytest.mark.multiprocess
def test_ddp_splits_the_global_batch_and_evaluates_on_rank_0(runs):
    result = runs["ddp"]
    assert [w["batch"] for w in result.per_worker] == [10, 10]  # global batch 20 over 2 ranks
    assert result.examples == 40 * 20
    assert set(result.test) == {"loss", "accuracy", "macro_f1"} and result.test["accuracy"] > 0.3
    assert result.step_loss[-1] < result.step_loss[0]


@pytest.mark.multiprocess
@pytest.mark.parametrize("name", ["sync-slow", "ddp-slow"])
def test_last_executor_every_step_waits_for_the_slowest_worker(runs, name):
    """Rank 1 sleeps DELAY per step; rank 0 has nothing to sleep for but its steps take as long."""
    fast, slow = runs[name].per_worker
    assert slow["delay_s"] == DELAY and fast["delay_s"] == 0.0
    assert fast["step_s"] >= 0.8 * DELAY and slow["step_s"] >= DELAY
    if name == "sync-slow":  # with the all-reduce written out, the wait shows where it is spent
        assert slow["compute_s"] >= DELAY  # the slow one computes (and sleeps) ...
        # ... while the fast worker waits in the all-reduce for most of the difference (relative:
        # a loaded machine slows both computes, and the wait is what is left of the difference)
        assert fast["sync_s"] >= 0.6 * (slow["compute_s"] - fast["compute_s"])
        assert slow["sync_s"] < fast["sync_s"]
    else:  # DDP hides the all-reduce inside backward: only whole steps are measured
        assert fast["sync_s"] is None and fast["compute_s"] is None
    # the terminal shows the same picture: one line per rank, wait in ms (rank, steps, step, compute, wait)
    rows = [line.split() for line in summary({"per_worker": runs[name].per_worker}).splitlines()[1:]]
    assert [row[:2] for row in rows] == [["0", "10"], ["1", "10"]]
    if name == "sync-slow":
        assert float(rows[0][4]) == pytest.approx(1000 * fast["sync_s"], abs=0.06)
    else:
        assert rows[0][3:5] == ["-", "-"]


def test_the_split_modules_are_re_exported_by_data_parallel():
    """Old imports keep working and name the very objects (tests patch WorkerRun through them)."""
    import dlcourse.collectives as collectives
    import dlcourse.data_parallel as dp
    import dlcourse.worker_run as worker_run

    assert dp.WorkerRun is worker_run.WorkerRun and dp.collect is worker_run.collect
    assert dp.DataParallelConfig is worker_run.DataParallelConfig
    assert dp.broadcast_parameters is collectives.broadcast_parameters


def test_run_workers_checks_its_arguments_in_the_caller(mnist):
    from dlcourse.worker_run import run_workers

    train = mnist.train[:100]
    with pytest.raises(ValueError, match="worker must be a function"):
        run_workers("ddp", "ddp", train, 2)
    with pytest.raises(ValueError, match="config must be a DataParallelConfig"):
        run_workers(ddp_worker, "ddp", train, 2, dict(BASE))
    with pytest.raises(ValueError, match="train must be a dlcourse.data.Dataset"):
        run_workers(ddp_worker, "ddp", train.X, 2)
    with pytest.raises(ValueError, match="divisible by num_workers"):
        train_ddp(train, 3, DataParallelConfig(**BASE))


# ------------------------------------------------------------------- replication


def _data(n: int, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    return Dataset(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


@settings(max_examples=25, deadline=None)
@given(replicas=st.integers(1, 4), n=st.integers(1, 23), seed=st.integers(0, 1000))
def test_replication_equals_the_single_model_on_the_full_batch(replicas, n, seed):
    """Scatter, replicate, gather, merge: outputs and gradients of the one model, within 1e-6."""
    data = _data(n, seed)
    single = make_model("mlp", seed=seed)
    pmodel = ReplicatedModel(make_model("mlp", seed=seed), ["cpu"] * replicas)
    y_hat_single, y_hat = single(data.X), pmodel(data.X)
    assert torch.allclose(y_hat, y_hat_single, atol=1e-6)
    F.cross_entropy(y_hat_single, data.y).backward()
    F.cross_entropy(y_hat, data.y).backward()
    for p, q in zip(single.parameters(), pmodel.module.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)


def test_replicas_are_copies_and_gradients_merge_on_the_hosted_weights(monkeypatch):
    import dlcourse.replication as dp

    model = make_model("mlp", seed=0)
    pmodel = ReplicatedModel(model, ["cpu", "cpu"])
    seen, real = [], dp.functional_call

    def spy(module, params, args):  # record which tensor each replica's first layer uses
        seen.append(params["1.weight"].data_ptr())
        return real(module, params, args)

    monkeypatch.setattr(dp, "functional_call", spy)
    pmodel(_data(6, 0).X).sum().backward()
    host = model[1].weight
    assert len(seen) == 2 and host.data_ptr() not in seen and seen[0] != seen[1]
    assert host.grad is not None and host.grad.device.type == "cpu"


def test_training_with_replication_follows_single_model_training(mnist):
    data = mnist.train[:300]
    single = make_model("mlp", seed=3)
    pmodel = ReplicatedModel(make_model("mlp", seed=3), ["cpu"] * 3)
    for model in (single, pmodel):
        fit(model, data, epochs=1, batch_size=50, lr=0.1, optimizer="momentum", progress=False)
    for p, q in zip(single.parameters(), pmodel.module.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_replication_arguments_and_repr():
    with pytest.raises(ValueError, match="devices"):
        ReplicatedModel(make_model("mlp"), [])
    with pytest.raises(ValueError, match="model"):
        ReplicatedModel("mlp", ["cpu"])
    with pytest.raises(ValueError, match="num_replicas"):
        replica_devices(0)
    text = repr(ReplicatedModel(make_model("mlp"), ["cpu", "cpu"]))
    assert "devices=['cpu', 'cpu']" in text and "weights on cpu" in text
    if not torch.cuda.is_available():
        assert replica_devices(2) == ["cpu", "cpu"]


# ------------------------------------------------------------------- the command line


@pytest.mark.multiprocess
@pytest.mark.parametrize("strategy", ["ddp", "averaging"])
def test_cli_writes_the_metrics(tmp_path, capsys, no_orphans, strategy):
    out = tmp_path / "run.json"
    argv = ["train", "--strategy", strategy, "--model", "mlp", "--workers", "2", "--epochs", "1"]
    assert main([*argv, "--batch-size", "200", "--no-progress", "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    for key in ("test_accuracy", "test_loss", "test_macro_f1", "examples_per_s", "wall_s", "updates"):
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["updates"] == 4000 // 200 and metrics["workers"] == 2
    assert metrics["staleness"] == {"max": 0, "mean": 0.0, "histogram": {"0": 20}}
    assert metrics["bytes_sent"] > 0 and len(metrics["per_worker"]) == 2
    assert metrics["test_accuracy"] > 0.5
    printed = capsys.readouterr().out
    assert "test_accuracy" in printed and "per worker" in printed  # every rank's clocks in the terminal
    phases = metrics["phases"]  # where the seconds went (worker_run.run_phases), in the JSON and printed
    assert set(phases) == {"startup_s", "training_s", "evaluation_s", "other_s", "teardown_s"}
    assert all(v >= 0 for v in phases.values()) and phases["training_s"] == metrics["wall_s"]
    assert phases["evaluation_s"] > 0  # rank 0 evaluated the test data
    assert f"training {metrics['wall_s']:.2f} s" in printed


def test_cli_replicated_runs_in_one_process(tmp_path):
    out = tmp_path / "run.json"
    argv = ["train", "--strategy", "replicated", "--model", "mlp", "--workers", "2", "--epochs", "1"]
    assert main([*argv, "--batch-size", "200", "--no-progress", "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["devices"] == replica_devices(2) and metrics["updates"] == 20
    assert metrics["test_accuracy"] > 0.5


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--workers", "3", "--batch-size", "100"], "divisible by num_workers"),
        (["--slow-worker", "5"], "slow_worker"),
        (["--slow-delay", "0.1"], "--slow-worker"),
        (["--resume"], "checkpoint_dir"),
        (["--checkpoint-every", "0"], "--checkpoint-every"),
        (["--average-every", "4"], "--average-every applies to --strategy averaging"),
        (["--strategy", "replicated", "--slow-worker", "1"], "--slow-worker: not available"),
        (["--strategy", "replicated", "--checkpoint-dir", "/tmp"], "--checkpoint-dir: not available"),
        (["--strategy", "averaging", "--resume", "--checkpoint-dir", "/nonexistent"], "no checkpoint"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(capsys, extra, match):
    with pytest.raises(SystemExit) as info:
        code = main(["train", "--strategy", "ddp", "--model", "mlp", *extra])
        raise SystemExit(code)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------- GPUs


@pytest.mark.gpu
@pytest.mark.multiprocess
def test_ddp_over_nccl(no_orphans):
    """DDP on NCCL (one rank per GPU) gives the CPU reference's parameters."""
    data = _data(240, 0)
    world = min(2, torch.cuda.device_count())
    config = DataParallelConfig(**{**BASE, "batch_size": 20 * world}, dtype="float64")
    result = train_ddp(data, world, config, backend="nccl")
    reference = train_reference(data, world, config)
    assert parameter_distance(result.parameters, reference.parameters) <= 1e-6


@pytest.mark.gpu
@full_float32()  # full float32, as on the CPU (dlcourse.environment)
def test_replication_on_cuda_with_weights_hosted_on_the_cpu():
    """multi_gpu_model(..., cpu_relocation=True): replica on cuda:0, weights and merge on the CPU."""
    data = _data(64, 1)
    single = make_model("cnn", seed=0)
    pmodel = ReplicatedModel(make_model("cnn", seed=0), ["cuda:0"] * 2, output_device="cpu")
    F.cross_entropy(single(data.X), data.y).backward()
    F.cross_entropy(pmodel(data.X), data.y).backward()
    for p, q in zip(single.parameters(), pmodel.module.parameters()):
        assert q.device.type == "cpu" and q.grad.device.type == "cpu"
        assert torch.allclose(p.grad, q.grad, atol=1e-4)
