"""Checkpoints: atomic writes, clear errors, and resume == a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlcourse.checkpoint as ck
from dlcourse.averaging import averaging_worker, parameter_distance, train_averaging
from dlcourse.checkpoint import Checkpoint, CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint
from dlcourse.data_parallel import DataParallelConfig, collect, ddp_worker, train_ddp
from dlcourse.launcher import WorkerError, launch

ROOT = Path(__file__).resolve().parent.parent


def _checkpoint(step: int = 3) -> Checkpoint:
    state = {
        "model": {"w": torch.arange(4.0)},
        "optimizer": {"state": {}, "param_groups": []},
        "losses": [1.0],
    }
    return Checkpoint("ddp", step, {"lr": 0.1, "seed": 0}, [state], {"note": "x"})


# ------------------------------------------------------------------- the file


def test_save_then_load_round_trips(tmp_path):
    path = save_checkpoint(tmp_path, _checkpoint())
    assert path == checkpoint_path(tmp_path) and os.listdir(tmp_path) == ["checkpoint.pt"]
    loaded = load_checkpoint(tmp_path, strategy="ddp", fingerprint={"lr": 0.1, "seed": 0})
    assert loaded.step == 3 and torch.equal(loaded.states[0]["model"]["w"], torch.arange(4.0))
    assert loaded.extra == {"note": "x"} and repr(loaded) == "Checkpoint(strategy='ddp', step=3, states=1)"


def test_a_write_that_fails_half_way_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _checkpoint(step=3))

    def dies_half_way(obj, f):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, _checkpoint(step=6))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path).step == 3  # the old one, intact
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # and no temporary file left behind


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0.0, 0.999))
def test_a_truncated_checkpoint_is_a_clear_error(tmp_path, fraction):
    path = save_checkpoint(tmp_path, _checkpoint())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_checkpoint(tmp_path)


def test_foreign_files_and_other_runs_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        load_checkpoint(tmp_path)
    torch.save({"model": {"w": torch.zeros(1)}}, checkpoint_path(tmp_path))  # someone else's .pt
    with pytest.raises(CheckpointError, match="not a dlcourse checkpoint"):
        load_checkpoint(tmp_path)
    checkpoint_path(tmp_path).write_text("hello")
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, _checkpoint())
    with pytest.raises(CheckpointError, match="written by strategy 'ddp'"):
        load_checkpoint(tmp_path, strategy="averaging")
    with pytest.raises(CheckpointError, match="it has lr=0.1, this run has lr=0.2"):
        load_checkpoint(tmp_path, fingerprint={"lr": 0.2, "seed": 0})
    assert issubclass(CheckpointError, ValueError)  # the CLI turns it into one line, exit 2
    with pytest.raises(ValueError, match="checkpoint must be a Checkpoint"):
        save_checkpoint(tmp_path, {"step": 1})


# ------------------------------------------------------------------- resume == uninterrupted

BASE = dict(model="mlp", epochs=2, batch_size=20)
# momentum / Adam: the optimizer state must come back too; K=2 with checkpoints every 3
# steps saves workers whose parameters differ (between two averages)
CONFIGS = {
    "averaging": (averaging_worker, dict(BASE, lr=0.1, optimizer="momentum", average_every=2)),
    "ddp": (ddp_worker, dict(BASE, lr=1e-3, optimizer="adam")),
}
KILL_AT = 5  # rank 1 is SIGKILLed after its 5th step; the last checkpoint is step 3


def _many(rank, world_size, train, runs):
    return [worker(rank, world_size, train, None, config, None) for worker, config in runs]


def _killed_after(rank, world_size, train, worker, config):
    """Run ``worker``; rank 1 kills itself (SIGKILL) right after step KILL_AT."""
    import dlcourse.data_parallel as dp

    real = dp.WorkerRun.record

    def record(self, loss):
        real(self, loss)
        if self.rank == 1 and self.step + 1 == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)

    dp.WorkerRun.record = record
    return worker(rank, world_size, train, None, config, None)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_killed_run_resumes_to_the_parameters_of_an_uninterrupted_one(mnist, tmp_path, no_orphans):
    train = mnist.train[:400]
    plain = [(w, DataParallelConfig(**c)) for w, c in CONFIGS.values()]
    uninterrupted = launch(_many, 2, train, plain, run_timeout=180)
    resumed_runs = []
    for name, (worker, kwargs) in CONFIGS.items():
        config = DataParallelConfig(**kwargs, checkpoint_dir=str(tmp_path / name), checkpoint_every=3)
        with pytest.raises(WorkerError, match="SIGKILL"):
            launch(_killed_after, 2, train, worker, config, run_timeout=120)
        assert load_checkpoint(tmp_path / name).step == 3
        resumed_runs.append(
            (worker, DataParallelConfig(**kwargs, checkpoint_dir=str(tmp_path / name), resume=True))
        )
    resumed = launch(_many, 2, train, resumed_runs, run_timeout=180)
    for i, name in enumerate(CONFIGS):
        a = collect(name, [o[i] for o in uninterrupted])
        b = collect(name, [o[i] for o in resumed])
        assert a.updates == b.updates == 40  # the history before the kill came back too
        assert parameter_distance(a.parameters, b.parameters) == 0.0, name
        assert b.per_worker[0]["steps"] == 40 - 3  # only the steps after the checkpoint ran again
        assert load_checkpoint(tmp_path / name).step == 40  # the final checkpoint


def test_resuming_with_other_settings_fails_in_the_caller(mnist, tmp_path):
    save_checkpoint(tmp_path, _checkpoint())
    config = DataParallelConfig(**BASE, lr=0.1, checkpoint_dir=str(tmp_path), resume=True)
    with pytest.raises(CheckpointError, match="strategy 'ddp'"):
        train_averaging(mnist.train[:400], 2, config)
    with pytest.raises(CheckpointError, match="belongs to another run"):
        train_ddp(mnist.train[:400], 2, config)


# ------------------------------------------------------------------- the command line, killed


def _cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "dlcourse", "train", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: we can kill it with its workers
        **kwargs,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_cli_killed_with_sigkill_then_resumed(mnist, tmp_path, no_orphans):
    """``dlcourse train --strategy ddp`` killed mid-run, then ``--resume``: the same final weights."""
    folder = tmp_path / "ckpt"
    args = ["--strategy", "ddp", "--model", "mlp", "--workers", "2", "--epochs", "1", "--batch-size", "200"]
    args += ["--data-source", "subset"]
    args += ["--no-progress", "--checkpoint-dir", str(folder), "--checkpoint-every", "4"]
    # the slow worker stretches 20 steps over seconds, so the kill lands mid-run
    proc = _cli([*args, "--slow-worker", "1", "--slow-delay", "0.3"])
    try:
        deadline = time.monotonic() + 120
        while not checkpoint_path(folder).exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
    finally:
        _kill_group(proc)
    step = load_checkpoint(folder).step
    assert 4 <= step < 20  # killed mid-run, after a checkpoint
    resumed = _cli([*args, "--resume"])
    out, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, out.decode()
    final = load_checkpoint(folder)
    assert final.step == 20
    config = DataParallelConfig(model="mlp", epochs=1, batch_size=200, lr=1e-3, optimizer="adam")
    uninterrupted = train_ddp(mnist.train, 2, config)
    assert parameter_distance(final.states[0]["model"], uninterrupted.parameters) == 0.0


def _averaging_runs(rank, world_size, train, configs):
    return [averaging_worker(rank, world_size, train, None, config, None) for config in configs]


@pytest.mark.multiprocess
def test_averaging_that_ends_between_two_averages_resumes_with_more_epochs_exactly(
    mnist, tmp_path, no_orphans
):
    # 10 steps per epoch and K = 4: the run ends two steps after an average and averages once
    # more to end on one model. That last average used to be in the final checkpoint, so a
    # resume with a second epoch started from averaged parameters an uninterrupted run never had.
    train = mnist.train[:200]
    common = dict(model="mlp", batch_size=20, lr=0.1, average_every=4)
    folder = str(tmp_path / "ckpt")
    first = [
        DataParallelConfig(**common, epochs=2),
        DataParallelConfig(**common, epochs=1, checkpoint_dir=folder),
    ]
    outputs = launch(_averaging_runs, 2, train, first, run_timeout=120, threads_per_worker=1)
    assert load_checkpoint(folder).step == 10
    resumed = launch(
        _averaging_runs,
        2,
        train,
        [DataParallelConfig(**common, epochs=2, checkpoint_dir=folder, resume=True)],
        run_timeout=120,
        threads_per_worker=1,
    )
    uninterrupted = collect("averaging", [o[0] for o in outputs])
    after_resume = collect("averaging", [o[0] for o in resumed])
    assert after_resume.updates == uninterrupted.updates == 20
    assert parameter_distance(uninterrupted.parameters, after_resume.parameters) == 0.0
