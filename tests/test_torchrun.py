"""Scaling out: the same ``dlcourse train`` command on two torchrun "nodes" (loopback, c10d).

Each node is one ``torchrun --nnodes 2`` process with one worker; they meet at a c10d
rendezvous on 127.0.0.1. The run must give the training of the in-notebook launcher,
finish within bounds, and leave no process behind (on failure both nodes are killed
with their process groups).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dlcourse.data_parallel import DataParallelConfig, train_ddp

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(node_rank: int, port: int, json_path: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "2", "--node-rank", str(node_rank), "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"dlcourse-{port}",
        # on loopback both nodes match the endpoint's address and would each try to host the
        # store (the loser falling back to a client); say which one does, as on two machines
        "--rdzv-conf", f"is_host={'true' if node_rank == 0 else 'false'}",
        "-m", "dlcourse", "train", "--strategy", "ddp", "--model", "mlp", "--data-source", "subset",
        "--epochs", "1", "--batch-size", "200", "--timeout", "60", "--no-progress", "--json", str(json_path),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_torchrun_nodes_on_loopback_train_like_the_launcher(mnist, tmp_path, no_orphans):
    port = _free_port()
    paths = [tmp_path / "node0.json", tmp_path / "node1.json"]
    nodes = [_node(i, port, paths[i]) for i in range(2)]
    logs = []
    try:
        for node in nodes:
            out, _ = node.communicate(timeout=240)
            logs.append(out.decode(errors="replace"))
    finally:
        for node in nodes:  # bounded: whatever is left is killed with its workers
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=30)
    for node, log in zip(nodes, logs):
        assert node.returncode == 0, log[-3000:]
    node0, node1 = (json.loads(p.read_text()) for p in paths)
    assert node0["workers"] == node1["workers"] == 2  # the world spans both nodes
    assert node0["updates"] == 4000 // 200
    assert node0["test_loss"] == node1["test_loss"]  # rank 0 evaluated; every rank reports it
    # the same run through the launcher (2 processes on this machine)
    config = DataParallelConfig(model="mlp", epochs=1, batch_size=200, lr=1e-3, optimizer="adam")
    local = train_ddp(mnist.train, 2, config, test=mnist.test)
    assert node0["step_loss"] == pytest.approx(local.step_loss, abs=1e-5)
    assert node0["test_loss"] == pytest.approx(local.test["loss"], abs=1e-5)


def test_auto_backend_under_torchrun_counts_the_gpus_of_this_machine(monkeypatch):
    """8 ranks on 2 machines of 4 GPUs: each machine has a GPU per local rank, so NCCL."""
    import dlcourse.launcher as launcher

    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "node01"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(launcher.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(launcher.torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(launcher.dist, "is_nccl_available", lambda: True)
    monkeypatch.setattr(launcher, "_run_under_torchrun", lambda fn, args, kwargs, backend, timeout: backend)
    assert launcher.launch(lambda rank, world_size: None, 8) == "nccl"
    monkeypatch.setattr(launcher.torch.cuda, "device_count", lambda: 2)  # fewer GPUs than local ranks
    assert launcher.launch(lambda rank, world_size: None, 8) == "gloo"
