"""The real parameter server: its rules match their definitions, and it fails well.

Multi-process runs use the MLP on slices of the MNIST subset so that each takes seconds;
one slow test trains the lecture's CNN.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse.data import shard, shared_order
from dlcourse.launcher import WorkerError
from dlcourse.models import make_model
from dlcourse.parameter_server import (
    PSConfig,
    assign_shards,
    parameter_shapes,
    run_parameter_server,
    worker_schedule,
)
from dlcourse.parameter_server.protocol import flatten_shard, unflatten_shard

SMALL = dict(
    model="mlp", train_examples=600, test_examples=200, batch_size=50, timeout=20.0, run_timeout=120.0
)


# ------------------------------------------------------------------ no processes


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(num_workers=2, softsync=3), "softsync must be <= 2"),
        (dict(num_servers=0), "num_servers must be >= 1"),
        (dict(num_servers=5, model="mlp"), "num_servers must be <= 4"),
        (dict(num_servers=9, model="cnn"), "num_servers must be <= 8"),
        (dict(staleness_bound=-1), "staleness_bound must be >= 0"),
        (dict(max_staleness=-1), "max_staleness must be >= 0"),
        (dict(reduce="max"), "reduce must be one of"),
        (dict(num_workers=2, softsync=2, shared_batches=True), "shared_batches needs an asynchronous mode"),
        (dict(shared_batches=1), "shared_batches must be True, False or None"),
        (dict(reduce="sum", aggregate=lambda p, u, l: p), "reduce must be 'mean' with an aggregate"),
        (dict(num_workers=3, softsync=2, max_staleness=1), "max_staleness needs softsync 1"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(lr_policy="fancy"), "lr_policy must be one of"),
        (dict(kill_worker=2, num_workers=2), "kill_worker must be <= 1"),
        (dict(train_examples=1, num_workers=2), "train_examples must be >= num_workers"),
    ],
)
def test_bad_arguments_are_refused_before_any_process_starts(fields, message):
    with pytest.raises(ValueError, match=message):
        PSConfig(**fields)


@pytest.mark.parametrize(
    "argv, word",
    [
        (["--workers", "2", "--softsync", "3"], "softsync"),
        (["--servers", "0"], "--servers"),
        (["--servers", "5", "--model", "mlp"], "num_servers"),
        (["--staleness-bound", "-1"], "--staleness-bound"),
        (
            ["--workers", "2", "--softsync", "2", "--shared-batches"],
            "shared_batches needs an asynchronous mode",
        ),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(argv, word):
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "dlcourse", "train", "--strategy", "async-ps", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and "Traceback" not in done.stderr
    assert time.monotonic() - start < 60  # refused up front, no workers waited on


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=12), st.data())
def test_shards_partition_the_tensors(sizes, data):
    k = data.draw(st.integers(1, len(sizes)))
    shards = assign_shards(sizes, k)
    assert len(shards) == k and all(shards)
    assert sorted(i for s in shards for i in s) == list(range(len(sizes)))
    assert all(s == sorted(s) for s in shards)
    assert assign_shards(sizes, k) == shards  # deterministic
    with pytest.raises(ValueError, match="num_servers"):
        assign_shards(sizes, len(sizes) + 1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=3), min_size=1, max_size=6), st.data())
def test_a_shard_travels_as_one_flat_vector_and_back(shapes, data):
    tensors = [torch.randn(*shape) for shape in shapes]
    index = sorted(data.draw(st.sets(st.integers(0, len(tensors) - 1), min_size=1)))
    flat = flatten_shard(tensors, index)
    assert flat.dtype == torch.float32 and flat.dim() == 1
    assert flat.numel() == sum(tensors[i].numel() for i in index)
    copies = [torch.zeros_like(t) for t in tensors]
    unflatten_shard(flat, copies, index)
    for i, (t, c) in enumerate(zip(tensors, copies)):
        assert torch.equal(c, t) if i in index else not c.any()  # only the shard's tensors are written
    with pytest.raises(ValueError, match="flat must have"):
        unflatten_shard(torch.cat([flat, flat[:1]]), copies, index)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_parameter_shapes_are_the_models(model):
    assert list(parameter_shapes(model)) == [p.shape for p in make_model(model).parameters()]
    with pytest.raises(ValueError, match="model"):
        parameter_shapes("resnet")


def test_config_repr_names_the_mode():
    assert "mode=sync" in repr(PSConfig(num_workers=3, softsync=3))
    assert "mode=bounded(b=2, S=1)" in repr(PSConfig(num_workers=3, staleness_bound=2))
    assert "mode=async" in repr(PSConfig(num_workers=3))


@pytest.mark.parametrize(
    "fields, effective",
    [
        (dict(num_workers=3), True),
        (dict(num_workers=3, softsync=2), True),
        (dict(num_workers=3, staleness_bound=0), True),
        (dict(num_workers=3, max_staleness=1), True),
        (dict(num_workers=3, softsync=3), False),
        (dict(num_workers=1), False),  # S = N = 1 is synchronous
        (dict(num_workers=3, shared_batches=False), False),
        (dict(num_workers=3, shared_batches=True), True),
    ],
)
def test_shared_batches_default_to_the_modes(fields, effective):
    """None (the default) means shared batches when asynchronous, a worker's own shard when synchronous."""
    config = PSConfig(**fields)
    assert config.effective_shared_batches is effective
    assert f"shared_batches={effective})" in repr(config)


# ------------------------------------------------------------------ real processes


def _reference_parameter_averaging(config: PSConfig, train) -> list[torch.Tensor]:
    """One process: each step, average the N workers' gradients and take an SGD step (torch.optim)."""
    model = make_model(config.model, seed=config.seed)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=config.lr)
    shards = shard(train, config.num_workers)
    schedules = [worker_schedule(shards[n], config, n) for n in range(config.num_workers)]
    for step in range(len(schedules[0])):
        grads = []
        for n, data in enumerate(shards):
            idx = schedules[n][step]
            grads.append(torch.autograd.grad(F.cross_entropy(model(data.X[idx]), data.y[idx]), params))
        for i, p in enumerate(params):
            p.grad = torch.stack([g[i] for g in grads]).mean(0)
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.multiprocess
def test_sync_equals_parameter_averaging_and_shards_equal_one_server(mnist, no_orphans):
    config = dict(SMALL, num_workers=3, softsync=3, steps=4)
    reference = _reference_parameter_averaging(PSConfig(**config), mnist.train[: SMALL["train_examples"]])
    seen = []
    one = run_parameter_server(
        PSConfig(**config, num_servers=1), progress=lambda v, total: seen.append((v, total))
    )
    two = run_parameter_server(PSConfig(**config, num_servers=2))
    initial = list(make_model("mlp", seed=0).parameters())
    for w1, w2, ref, w0 in zip(one.parameters, two.parameters, reference, initial):
        assert (w1 - w0).abs().max() > 1e-4  # it trained at all
        assert torch.allclose(w1, ref, atol=1e-6, rtol=0)
        assert torch.allclose(w2, w1, atol=1e-6, rtol=0)
    assert one.staleness == [0] * 12 and one.versions == 4 and one.updates_per_worker == [3 * [4]][0]
    assert seen == [(v, 4) for v in range(1, 5)]
    assert len(two.shard_sizes) == 2 and sum(two.shard_sizes) == sum(p.numel() for p in initial)


@pytest.mark.multiprocess
def test_real_sync_gives_the_simulators_parameters(mnist, no_orphans):
    """Real == simulated: S = N = 2, the same configuration, seed and batch order give the same
    parameters, so the same test loss within 1e-5. Batch size 100 is passed to both (it is
    also both libraries' and the CLI's default)."""
    from dlcourse.data import MnistSplit
    from dlcourse.sim import SimConfig, simulate

    common = dict(model="mlp", epochs=1, lr=0.1, batch_size=100, seed=0)
    real = run_parameter_server(
        PSConfig(**common, num_workers=2, softsync=2, train_examples=600, test_examples=200, snapshots=0)
    )
    data = MnistSplit(mnist.train[:600], mnist.test[:200], "subset")
    sim = simulate(SimConfig(**common, num_workers=2, policy="sync", evals_per_epoch=1), data)
    assert sim.updates == real.updates == 2 * 3 and real.versions == sim.server_steps == 3
    assert abs(real.test["loss"] - sim.test.loss) < 1e-5
    flat = torch.cat([p.reshape(-1) for p in real.parameters])
    torch.testing.assert_close(flat, sim.params, rtol=0, atol=1e-6)


@pytest.mark.multiprocess
def test_real_async_takes_the_simulators_batches_and_parameters(mnist, no_orphans):
    """Real == simulated for async too, where the order of the updates is forced: with the
    staleness gate at sigma_max = 0 one update is in flight at a time, so both runs are sequential
    SGD on the items of the shared order (the async default in both runtimes) in the order dealt,
    whoever computes each: the same items and the same parameters."""
    from dlcourse.data import MnistSplit
    from dlcourse.sim import SimConfig, simulate

    common = dict(model="mlp", epochs=2, lr=0.1, batch_size=50, seed=0, max_staleness=0)
    real = run_parameter_server(
        PSConfig(**common, num_workers=3, train_examples=600, test_examples=200, snapshots=0)
    )
    data = MnistSplit(mnist.train[:600], mnist.test[:200], "subset")
    sim = simulate(SimConfig(**common, num_workers=3, policy="async", evals_per_epoch=1), data)
    assert real.config.effective_shared_batches and sim.config.effective_shared_batches
    assert [i for _, i in real.handed] == [i for _, i in sim.handed] == list(range(24))  # 3 x 4 x 2
    assert sorted(b for w in real.worker_stats for b in w["batches"]) == list(range(24))
    assert real.staleness == sim.staleness == [0] * 24
    flat = torch.cat([p.reshape(-1) for p in real.parameters])
    torch.testing.assert_close(flat, sim.params, rtol=0, atol=1e-6)
    assert abs(real.test["loss"] - sim.test.loss) < 1e-5


@pytest.mark.multiprocess
def test_every_update_staleness_is_recorded_and_bounded(no_orphans):
    # worker 0 is slow: without a bound its gradients would be several updates stale
    config = PSConfig(**SMALL, num_workers=3, staleness_bound=1, steps=20, slow_worker=0, slow_delay=0.03)
    bounded = run_parameter_server(config)
    assert sum(bounded.updates_per_worker) == 60 and len(bounded.update_times) == 60
    for taus in bounded.shard_staleness:  # staleness in versions, as for every rule
        assert len(taus) == 60 and max(taus) <= (2 * 1 + 1) * (3 - 1)
    assert len(bounded.clock_lag) == 60 and max(bounded.clock_lag) <= 1  # the gate's own figure
    free = run_parameter_server(PSConfig(**SMALL, num_workers=3, steps=20, slow_worker=0, slow_delay=0.03))
    assert len(free.staleness) == 60 and free.bytes_sent > 0
    assert max(free.staleness) > 1  # the slow worker's gradients: others pushed meanwhile


@pytest.mark.multiprocess
@pytest.mark.parametrize("num_servers", [1, 2])
def test_the_staleness_gate_keeps_sigma_max_on_real_processes(num_servers, no_orphans):
    """sigma_max = 1 with a straggler: every shard applies every update at most 1 version stale
    (ungated, the same run goes beyond it: see test_every_update_staleness_is_recorded_and_bounded).
    With the shared order, waiting workers are answered least-answered first, so the gate
    cannot starve one (answered in worker order, worker 2 got no batch: [18, 18, 0]); at
    sigma_max = 1 the fast ones wait for the straggler, and the three take turns."""
    config = PSConfig(
        **SMALL,
        num_workers=3,
        num_servers=num_servers,
        max_staleness=1,
        steps=12,
        slow_worker=0,
        slow_delay=0.03,
    )
    gated = run_parameter_server(config)
    steps = gated.updates_per_worker
    assert sum(steps) == 36 and max(steps) - min(steps) <= 1, steps
    for sigmas in gated.shard_staleness:
        assert len(sigmas) == 36 and max(sigmas) <= 1
    assert max(v - p for v, p in gated.update_versions) <= 1
    assert gated.metrics()["max_staleness"] == 1 and "sigma_max=1" in gated.config.mode


@pytest.mark.multiprocess
def test_a_notebook_defined_rule_runs_in_the_server(tmp_path, no_orphans):
    record = tmp_path / "calls.txt"

    def frozen(lr, tau):  # a closure, as a notebook cell would define it: pickled by value
        with open(record, "a") as f:
            f.write(f"{os.getpid()} {tau}\n")
        return 0.0  # observable: the model must not move

    result = run_parameter_server(PSConfig(**SMALL, num_workers=2, steps=5, lr_policy=frozen))
    initial = list(make_model("mlp", seed=0).parameters())
    assert all(torch.equal(w, w0) for w, w0 in zip(result.parameters, initial))
    calls = [line.split() for line in record.read_text().splitlines()]
    assert len(calls) == 10  # once per applied update
    assert {int(pid) for pid, _ in calls} == set(result.server_pids) != {os.getpid()}
    assert sorted(int(t) for _, t in calls) == sorted(result.staleness)


def _mean_step(params, updates, lrs):  # soft sync as a student writes it: new tensors, inputs unchanged
    return [w - sum(lam * u[i] for u, lam in zip(updates, lrs)) / len(updates) for i, w in enumerate(params)]


@pytest.mark.multiprocess
def test_a_students_staleness_aggregate_and_gate_run_in_the_server(mnist, tmp_path, no_orphans):
    from dlcourse.staleness import staleness

    config = dict(SMALL, num_workers=3, softsync=3, steps=3)
    reference = _reference_parameter_averaging(PSConfig(**config), mnist.train[: SMALL["train_examples"]])
    sync = run_parameter_server(PSConfig(**config, staleness_fn=staleness, aggregate=_mean_step))
    for w, ref in zip(sync.parameters, reference):
        torch.testing.assert_close(w, ref, rtol=0, atol=1e-6)
    assert "staleness_fn=staleness, aggregate=_mean_step" in repr(sync.config)

    record = tmp_path / "gate.txt"

    def ignores_the_bound(clocks, worker, bound):  # a wrong gate: it never holds anyone back
        with open(record, "a") as f:
            f.write(f"{bound}\n")
        return True

    free = run_parameter_server(
        PSConfig(
            **dict(SMALL, num_workers=3, steps=12, staleness_bound=0, slow_worker=0, slow_delay=0.05),
            staleness_fn=lambda v, p: v - p + 1,
            gate=ignores_the_bound,
        )
    )
    assert len(free.update_versions) == len(free.staleness) == 36
    assert free.staleness == [v - p + 1 for v, p in free.update_versions]  # the student's count
    assert set(record.read_text().split()) == {"0"}  # asked, in the server, with the bound
    # with the library's gate bound 0 keeps tau <= N - 1 = 2; this gate let the slow worker fall behind
    assert max(v - p for v, p in free.update_versions) > 2


@pytest.mark.multiprocess
def test_async_survives_a_killed_worker(no_orphans):
    start = time.monotonic()
    config = PSConfig(**SMALL, num_workers=3, steps=30, kill_worker=1, kill_after=5)
    result = run_parameter_server(config, progress=True)  # the notebook's progress bar (tqdm)
    assert time.monotonic() - start < 90
    assert result.lost_workers == {1: 5}
    # the others take the rest of the shared order; only the batch handed to the dead one is lost
    assert result.updates_per_worker[1] == 5 and result.updates == 3 * 30 - 1
    assert result.test_accuracy > 0.5  # the others finished the training


@pytest.mark.multiprocess
def test_bounded_staleness_survives_a_killed_worker(no_orphans):
    """The lost worker's clock stops; the gate retires it, so it does not hold the others back."""
    start = time.monotonic()
    config = PSConfig(**SMALL, num_workers=3, steps=20, staleness_bound=1, kill_worker=1, kill_after=5)
    result = run_parameter_server(config)
    assert time.monotonic() - start < 90
    assert result.lost_workers == {1: 5}
    assert result.updates_per_worker[1] == 5 and result.updates == 3 * 20 - 1
    assert max(result.clock_lag) <= 1


@pytest.mark.multiprocess
@pytest.mark.parametrize("num_servers", [1, 2])
def test_a_dead_server_stops_the_workers_with_a_clear_error(num_servers, no_orphans):
    config = PSConfig(**SMALL, num_workers=2, num_servers=num_servers, steps=40, kill_server=num_servers - 1)
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        run_parameter_server(config)
    assert time.monotonic() - start < config.timeout + 60
    message = str(info.value)
    assert info.value.rank == num_servers - 1 and "SIGKILL" in message
    # both workers noticed by themselves and said which server they lost
    assert message.count(f"lost parameter server rank {num_servers - 1}") == 2


@pytest.mark.multiprocess
def test_sync_with_a_dead_worker_fails_clearly(no_orphans):
    config = PSConfig(**SMALL, num_workers=3, softsync=3, steps=30, kill_worker=2, kill_after=5)
    start = time.monotonic()
    with pytest.raises(WorkerError, match="last executor never arrives") as info:
        run_parameter_server(config)
    assert time.monotonic() - start < config.timeout + 60
    assert info.value.rank == 3 and "SIGKILL" in str(info.value)  # worker 2 is rank k + 2


@pytest.mark.multiprocess
def test_sync_with_a_stalled_worker_fails_within_the_timeout(no_orphans):
    # worker 1 sleeps far longer than the timeout in its first step: stalled, not dead
    config = PSConfig(
        **dict(SMALL, timeout=4.0), num_workers=2, softsync=2, steps=5, slow_worker=1, slow_delay=120.0
    )
    start = time.monotonic()
    with pytest.raises(WorkerError, match="last executor never arrives") as info:
        run_parameter_server(config)
    assert time.monotonic() - start < 60  # not the 120 s of the stall
    assert "lost worker 1 (rank 2)" in str(info.value) and "timeout" in str(info.value).lower()


@pytest.mark.multiprocess
def test_cli_writes_the_metrics(tmp_path, capsys, no_orphans):
    from dlcourse.cli import main

    path = tmp_path / "ps.json"
    argv = ["train", "--strategy", "async-ps", "--model", "mlp", "--workers", "3", "--servers", "2"]
    argv += ["--softsync", "2", "--lr-policy", "staleness", "--no-progress", "--json", str(path)]
    assert main(argv) == 0
    metrics = json.loads(path.read_text())
    # 1,333 examples per worker in batches of 100: 14 steps each, 42 pushes, in groups of S = 2;
    # a group that can no longer fill is applied as it is, so a version applies 1 or 2 pushes
    # (how many groups end short depends on timing: no tighter range is promised)
    seen = {k: metrics[k] for k in ("updates", "versions", "servers", "staleness", "test_accuracy", "wall_s")}
    assert metrics["updates"] == 42 and 21 <= metrics["versions"] <= 42 and metrics["servers"] == 2, seen
    assert sum(metrics["staleness"]["histogram"].values()) == 42, seen
    assert metrics["test_accuracy"] > 0.6 and metrics["bytes_sent"] > 0, seen
    assert metrics["shared_batches"] is True  # S < N: the default
    assert "batches: one shared order" in capsys.readouterr().out


@pytest.mark.multiprocess
def test_cli_no_shared_batches_gives_each_worker_its_own_shard(tmp_path, capsys, no_orphans):
    """--no-shared-batches: each worker its own shard's steps (14 each), whatever the timing."""
    from dlcourse.cli import main

    path = tmp_path / "ps.json"
    argv = ["train", "--strategy", "async-ps", "--model", "mlp", "--workers", "3", "--slow-worker", "0"]
    argv += ["--slow-delay", "0.02", "--no-shared-batches", "--no-progress", "--json", str(path)]
    assert main(argv) == 0
    metrics = json.loads(path.read_text())
    assert metrics["shared_batches"] is False and metrics["updates_per_worker"] == [14, 14, 14]
    assert "batches: each worker its own shard" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.multiprocess
def test_async_trains_the_lecture_cnn(no_orphans):
    config = PSConfig(
        model="cnn", num_workers=2, batch_size=50, epochs=2, lr=0.1, test_examples=500, timeout=60.0
    )
    result = run_parameter_server(config)
    assert result.updates == 2 * 2 * 40
    assert result.test_accuracy >= 0.85, result
    assert result.accuracy_over_time[0][2] < 0.3  # it started untrained


@pytest.mark.gpu
@pytest.mark.multiprocess
def test_workers_on_gpu_talk_to_the_server_in_cpu_tensors(mnist, no_orphans):
    config = dict(SMALL, num_workers=2, softsync=2, steps=3)
    reference = _reference_parameter_averaging(PSConfig(**config), mnist.train[: SMALL["train_examples"]])
    result = run_parameter_server(PSConfig(**config, device="cuda"))
    for w, ref in zip(result.parameters, reference):
        assert w.device.type == "cpu" and torch.allclose(w, ref, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ shared batches


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 4),
    length=st.integers(1, 40),
    batch=st.integers(1, 12),
    epochs=st.integers(1, 3),
    seed=st.integers(0, 5),
)
def test_shared_order_uses_every_example_of_every_shard_once_per_epoch(n, length, batch, epochs, seed):
    """The shared order deals the N shards' own batch orders round-robin: the first N items are
    one of each shard, each shard's items in order are that worker's worker_schedule, and each
    epoch's block of items holds every example of every shard exactly once."""
    config = PSConfig(num_workers=n, batch_size=batch, epochs=epochs, seed=seed, softsync=1)
    per_shard = epochs * -(-length // batch)
    order = shared_order(length, batch, n, per_shard, seed=seed)
    assert len(order) == n * per_shard
    assert [s for s, _ in order[:n]] == list(range(n))
    for w in range(n):  # each shard's items, in order, are that worker's own schedule
        mine = [idx for s, idx in order if s == w]
        expected = worker_schedule(shard_stub(length), config, w)
        assert len(mine) == len(expected) and all(torch.equal(a, b) for a, b in zip(mine, expected))
    for e in range(epochs):
        block = order[e * n * per_shard // epochs : (e + 1) * n * per_shard // epochs]
        for w in range(n):
            used = torch.cat([idx for s, idx in block if s == w]).sort().values
            assert torch.equal(used, torch.arange(length))


def shard_stub(length: int):
    from dlcourse.data import Dataset

    return Dataset(torch.zeros(length, 1), torch.zeros(length, dtype=torch.long))


@pytest.mark.multiprocess
@pytest.mark.parametrize("rule", [dict(), dict(staleness_bound=2), dict(softsync=2)])
def test_shared_batches_let_fast_workers_take_more_of_the_epoch(mnist, no_orphans, rule):
    """Async with a straggler and shared batches (the default): the fast workers do more steps, every item of
    the shared order (so every example of each epoch) is used exactly once, and the run makes
    as many updates as the simulator's shared budget for the same settings."""
    from dlcourse.data import MnistSplit
    from dlcourse.sim import SimConfig, simulate

    config = PSConfig(
        **SMALL,
        num_workers=3,
        epochs=2,
        slow_worker=0,
        slow_delay=0.1,
        snapshots=0,
        **rule,
    )
    result = run_parameter_server(config)
    steps = [w["steps"] for w in result.worker_stats]
    used = sorted(b for w in result.worker_stats for b in w["batches"])
    assert used == list(range(2 * 3 * 4)), used  # 200 examples a shard, batches of 50, 2 epochs
    assert sorted(b for _, b in result.handed) == used
    assert steps == result.updates_per_worker and sum(steps) == result.updates
    if "staleness_bound" not in rule:  # the bound keeps the fast ones within 2 steps of the straggler
        assert steps[0] < min(steps[1:]), steps
    else:
        assert steps[0] <= min(steps[1:]) and steps[0] < max(steps[1:]), steps
    assert result.examples == 2 * 600
    policy = "softsync" if "softsync" in rule else "bounded" if "staleness_bound" in rule else "async"
    sim = simulate(
        SimConfig(
            model="mlp",
            num_workers=3,
            epochs=2,
            batch_size=50,
            policy=policy,
            worker_speeds=(0.25, 1.0, 1.0),
            evals_per_epoch=1,
            **rule,
        ),
        MnistSplit(mnist.train[:600], mnist.test[:200], "subset"),
    )
    assert result.updates == sim.updates == 24


@pytest.mark.multiprocess
def test_shared_batches_go_on_without_a_killed_worker(no_orphans):
    """A worker killed mid-run with shared batches: the others take the rest of the order; only the
    mini-batch handed to the dead worker is lost, and the run ends (no hang)."""
    config = PSConfig(**SMALL, num_workers=3, epochs=3, kill_worker=1, kill_after=3)
    result = run_parameter_server(config)
    assert result.lost_workers == {1: 3}
    assert sorted(b for _, b in result.handed) == list(range(36))  # 3 shards x 4 batches x 3 epochs
    assert result.updates == 35 and result.updates_per_worker[1] == 3
    live = sorted(b for w in result.worker_stats if w is not None for b in w["batches"])
    assert len(live) == 32 and len(set(live)) == 32


@pytest.mark.multiprocess
def test_updates_name_their_workers_and_steps_their_times(no_orphans):
    """Server 0 records the worker of every update it applies (it agrees with the pushes it
    counted and, async with one server, with whom it handed the next batch to), and each worker
    records per step monotone times whose compute part is its step_compute_s."""
    config = PSConfig(**SMALL, num_workers=3, epochs=2, slow_worker=0, slow_delay=0.02, snapshots=0)
    result = run_parameter_server(config)
    N, workers = 3, result.update_workers
    assert len(workers) == len(result.staleness) == len(result.update_versions) == result.updates == 24
    assert [workers.count(w) for w in range(N)] == result.updates_per_worker
    assert result.updates_per_worker[0] < min(result.updates_per_worker[1:])  # the straggler's fewer
    # S = 1: a push is answered right after it is applied, so after the first N answers (the start)
    # the i-th update's worker is the one the next batch went to
    assert [w for w, _ in result.handed[N:]] == workers[: len(result.handed) - N]
    for w, stats in enumerate(result.worker_stats):
        times = stats["step_times"]
        assert len(times) == stats["steps"] == len(stats["step_compute_s"])
        flat = [t for step in times for t in step]
        assert flat[0] >= 0 and flat == sorted(flat), (w, times)  # answered <= the next compute_start
        for (start, end, _, _), compute in zip(times, stats["step_compute_s"]):
            assert end - start == pytest.approx(compute, abs=1e-9)
        outside = sum(answered - end for _, end, _, answered in times)
        assert outside == pytest.approx(stats["wait_s"], abs=1e-6)
    # the straggler's compute includes its sleep
    assert all(end - start >= 0.02 for start, end, _, _ in result.worker_stats[0]["step_times"])


@pytest.mark.multiprocess
def test_soft_sync_names_each_pushs_worker_once(no_orphans):
    """Soft sync S = 2 applies two pushes per version: each is recorded, in worker order."""
    config = PSConfig(**SMALL, num_workers=2, softsync=2, steps=6, snapshots=0)
    result = run_parameter_server(config)
    assert result.update_workers == [0, 1] * 6
    assert [v for v, _ in result.update_versions] == [v for v in range(6) for _ in range(2)]
    last = result.worker_stats[0]["step_times"][-1]
    assert last[3] != last[3]  # the LAST push is not answered: NaN
