"""Parameter averaging and the lecture's conditions for its equivalence to one machine.

All multi-process runs of one configuration family share one launch (a worker runs the
strategies one after another in the same process group): starting processes is the
slow part on 2 cores, not the training.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse.averaging import (
    averaging_worker,
    parameter_distance,
    train_averaging,
    train_reference,
)
from dlcourse.collectives import average_parameters
from dlcourse.data_parallel import (
    DataParallelConfig,
    average_gradients,
    collect,
    make_shards,
    steps_per_epoch,
    sync_sgd_worker,
    worker_batches,
)
from dlcourse.launcher import WorkerError, launch

TOL = 1e-6  # the tolerance for "equal"
MEASURABLE = 1e-3  # a broken condition must move the parameters by over 1000x that
N = 3
BASE = dict(model="mlp", epochs=5, batch_size=30, lr=0.1)  # 600 examples: 20 steps/epoch, 100 steps


def _many(rank, world_size, train, runs):
    """Run several (worker, config, shard_sizes) one after another in one process group."""
    return [worker(rank, world_size, train, None, config, sizes) for worker, config, sizes in runs]


RUNS = {
    "sgd": (averaging_worker, DataParallelConfig(**BASE), None),
    "sync-sgd": (sync_sgd_worker, DataParallelConfig(**BASE), None),
    "momentum": (averaging_worker, DataParallelConfig(**BASE, optimizer="momentum"), None),
    "adam": (averaging_worker, DataParallelConfig(**{**BASE, "lr": 1e-3}, optimizer="adam"), None),
    "unequal": (averaging_worker, DataParallelConfig(**BASE), [100, 200, 300]),
    "K=4": (averaging_worker, DataParallelConfig(**BASE, average_every=4), None),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny in-process references


@pytest.fixture(scope="module")
def train(mnist):
    return mnist.train[:600]


@pytest.fixture(scope="module")
def runs(train):
    """Every configuration above on N=3 real processes (one launch), keyed by name."""
    outputs = launch(_many, N, train, list(RUNS.values()), run_timeout=240)
    return {
        name: collect("sync-sgd" if name == "sync-sgd" else "averaging", [o[i] for o in outputs])
        for i, name in enumerate(RUNS)
    }


def _reference(train, name):
    _, config, sizes = RUNS[name]
    return train_reference(train, N, config, shard_sizes=sizes)


# ------------------------------------------------------------------- the equivalence


@pytest.mark.multiprocess
def test_averaging_every_step_equals_single_machine_sgd(runs, train):
    """N processes, K=1, plain SGD, equal shards == one process on the concatenated batch."""
    result, reference = runs["sgd"], _reference(train, "sgd")
    assert result.updates == reference.updates == 100
    assert parameter_distance(result.parameters, reference.parameters) <= TOL
    # and the model did move: equality is not two copies of the initial weights
    untrained = train_reference(train, N, DataParallelConfig(**{**BASE, "epochs": 0}))
    assert parameter_distance(result.parameters, untrained.parameters) > 0.05


@pytest.mark.multiprocess
def test_gradient_averaging_sync_sgd_equals_parameter_averaging(runs):
    assert parameter_distance(runs["sync-sgd"].parameters, runs["sgd"].parameters) <= TOL
    assert runs["sync-sgd"].step_loss == pytest.approx(runs["sgd"].step_loss, abs=1e-5)


@pytest.mark.multiprocess
@pytest.mark.parametrize("broken", ["adam", "unequal", "K=4"])
def test_breaking_a_condition_makes_a_measurable_difference(runs, train, broken):
    """Optimizer state (Adam), unequal shards, or averaging every K > 1 steps: no longer equal."""
    assert parameter_distance(runs[broken].parameters, _reference(train, broken).parameters) > MEASURABLE


@pytest.mark.multiprocess
def test_momentum_survives_averaging_every_step_because_it_is_linear(runs, train):
    """Heavy-ball momentum is linear in the gradients: at K=1 the mean of the buffers is the buffer."""
    assert parameter_distance(runs["momentum"].parameters, _reference(train, "momentum").parameters) <= TOL
    assert parameter_distance(runs["momentum"].parameters, runs["sgd"].parameters) > MEASURABLE


@pytest.mark.multiprocess
def test_result_reports_shards_bytes_and_losses(runs, train):
    result = runs["unequal"]
    # the smallest shard (100) makes 10 batches of 10 an epoch; bigger shards, bigger batches
    assert [w["batch"] for w in result.per_worker] == [10, 20, 30]
    assert result.updates == 5 * 10 and result.examples == 50 * 60
    nbytes = sum(p.numel() * 4 for p in result.parameters.values())
    # one broadcast (N-1 copies) + 50 ring all-reduces of 2 (N-1) copies each
    assert result.bytes_sent == (N - 1) * nbytes + 50 * 2 * (N - 1) * nbytes
    assert result.step_loss[-1] < result.step_loss[0]
    assert "averaging" in repr(result) and "updates=50" in repr(result)


# ------------------------------------------------------------------- the collectives


def _collectives(rank, world_size):
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(float(rank))
        model.bias.fill_(10.0 * rank)
    model.weight.grad = torch.full_like(model.weight, float(rank + 1))
    average_parameters(model)
    average_gradients(model)
    return model.weight.tolist(), model.bias.item(), model.weight.grad.tolist(), dist.get_world_size()


@pytest.mark.multiprocess
def test_average_parameters_and_gradients_are_means_over_workers(no_orphans):
    results = launch(_collectives, 3)
    for weight, bias, grad, world in results:
        assert weight == [[1.0, 1.0]] and bias == pytest.approx(10.0) and grad == [[2.0, 2.0]] and world == 3


# ------------------------------------------------------------------- faults and arguments


@pytest.mark.multiprocess
def test_a_stalled_worker_fails_at_the_timeout_without_orphans(no_orphans, train):
    """Rank 1 sleeps for minutes in its first step: rank 0's all-reduce gives up after 3 s."""
    config = DataParallelConfig(**{**BASE, "batch_size": 20}, slow_worker=1, slow_delay=600.0)
    start = time.monotonic()
    with pytest.raises(WorkerError, match="rank 0"):
        train_averaging(train, 2, config, timeout=3)
    assert time.monotonic() - start < 45


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(average_every=0), "average_every"),
        (dict(optimizer="rmsprop"), "optimizer"),
        (dict(lr=-1.0), "lr"),
        (dict(slow_delay=-1.0), "slow_delay"),
        (dict(dtype="float16"), "dtype"),
        (dict(checkpoint_every=5), "checkpoint_dir"),
        (dict(model="resnet"), "model"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataParallelConfig(**kwargs)


def test_bad_calls_fail_in_the_caller(train):
    with pytest.raises(ValueError, match="divisible by num_workers"):
        train_averaging(train, 4, DataParallelConfig(batch_size=30))
    with pytest.raises(ValueError, match="slow_worker"):
        train_averaging(train, 2, DataParallelConfig(batch_size=30, slow_worker=2))
    with pytest.raises(ValueError, match="shard_sizes"):
        train_averaging(train, 2, DataParallelConfig(batch_size=30), shard_sizes=[500, 500])
    with pytest.raises(ValueError, match="num_workers"):
        train_averaging(train, 0, DataParallelConfig(batch_size=30))
    with pytest.raises(ValueError, match="config"):
        train_averaging(train, 2, {"lr": 0.1})
    with pytest.raises(ValueError, match="same parameters"):
        parameter_distance({"a": torch.zeros(1)}, {"b": torch.zeros(1)})


# ------------------------------------------------------------------- batches (properties)


@settings(max_examples=60, deadline=None)
@given(
    shard_length=st.integers(1, 300),
    steps=st.integers(1, 20),
    epoch=st.integers(0, 5),
    seed=st.integers(0, 2**20),
    rank=st.integers(0, 7),
)
def test_worker_batches_are_equal_disjoint_and_reproducible(shard_length, steps, epoch, seed, rank):
    if steps > shard_length:
        steps = shard_length
    batches = worker_batches(shard_length, steps, epoch, seed, rank)
    assert len(batches) == steps
    assert {len(b) for b in batches} == {shard_length // steps}
    flat = torch.cat(batches)
    assert len(set(flat.tolist())) == len(flat) and (flat >= 0).all() and (flat < shard_length).all()
    again = worker_batches(shard_length, steps, epoch, seed, rank)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 50), min_size=1, max_size=5), batch_per_worker=st.integers(1, 10))
def test_unequal_shards_are_contiguous_and_every_worker_runs_the_same_steps(mnist, sizes, batch_per_worker):
    data = mnist.train[: sum(sizes)]
    shards = make_shards(data, len(sizes), sizes)
    assert [len(s) for s in shards] == sizes
    assert torch.equal(torch.cat([s.y for s in shards]), data.y)
    if min(sizes) < batch_per_worker:
        with pytest.raises(ValueError, match="smallest has"):
            steps_per_epoch(sizes, batch_per_worker * len(sizes), len(sizes))
    else:
        steps = steps_per_epoch(sizes, batch_per_worker * len(sizes), len(sizes))
        assert steps == min(sizes) // batch_per_worker


def test_reference_sees_the_concatenated_batches(train):
    """Two workers' batches concatenated: the reference's first loss is the mean of theirs."""
    config = DataParallelConfig(**{**BASE, "batch_size": 20}, max_steps=1)
    reference = train_reference(train, 2, config)
    assert reference.per_worker[0]["batch"] == 20 and reference.updates == 1
    from dlcourse.models import make_model

    model = make_model("mlp", seed=0)
    shards = make_shards(train, 2)
    steps = steps_per_epoch([300, 300], 20, 2)
    losses = []
    for n, s in enumerate(shards):
        idx = worker_batches(len(s), steps, 0, 0, n)[0]
        losses.append(torch.nn.functional.cross_entropy(model(s.X[idx]), s.y[idx]).item())
    assert reference.step_loss[0] == pytest.approx(sum(losses) / 2, abs=1e-6)


def test_helpers_reject_bad_arguments(train):
    from dlcourse.data_parallel import broadcast_parameters, parameter_bytes, ring_allreduce_bytes

    with pytest.raises(ValueError, match="steps must be <= 10"):
        worker_batches(10, 11, 0, 0, 0)
    with pytest.raises(ValueError, match="rank must be >= 0"):
        worker_batches(10, 2, 0, 0, -1)
    with pytest.raises(ValueError, match="batch_size must be >= 3"):
        steps_per_epoch([10, 10, 10], 2, 3)
    with pytest.raises(ValueError, match="train must be a dlcourse.data.Dataset"):
        make_shards(train.X, 2)
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        parameter_bytes("mlp")
    with pytest.raises(RuntimeError, match="no process group"):
        average_parameters(torch.nn.Linear(1, 1))  # outside launch(): say so, do not hang
    with pytest.raises(RuntimeError, match="no process group"):
        broadcast_parameters(torch.nn.Linear(1, 1))
    assert ring_allreduce_bytes(100, 4) == 600 and ring_allreduce_bytes(100, 1) == 0
    with pytest.raises(ValueError, match="nbytes"):
        ring_allreduce_bytes(-1, 2)
    with pytest.raises(ValueError, match="outputs"):
        collect("averaging", [])


@given(epochs=st.integers(0, 5), steps=st.integers(1, 50), max_steps=st.none() | st.integers(0, 300))
def test_total_steps_is_every_epoch_cut_short_at_max_steps(epochs, steps, max_steps):
    config = DataParallelConfig(epochs=epochs, max_steps=max_steps)
    expected = epochs * steps if max_steps is None else min(epochs * steps, max_steps)
    assert config.total_steps(steps) == expected
    with pytest.raises(ValueError, match="steps_per_epoch must be >= 1"):
        config.total_steps(0)


def test_reference_and_workers_refuse_the_same_bad_config(train):
    with pytest.raises(ValueError, match="config must be a DataParallelConfig or None, got dict"):
        train_reference(train, 2, dict(BASE))


# ------------------------------------------------------------------- a student's average


@pytest.mark.multiprocess
def test_train_averaging_runs_the_given_average_in_the_workers(train, no_orphans):
    """``average=`` runs in every worker: written here it equals the library's; a wrong one does not."""
    import torch.distributed as dist

    def my_average(model):  # a notebook cell's function: it reaches the workers with cloudpickle
        for p in model.parameters():
            dist.all_reduce(p.data)
            p.data /= dist.get_world_size()

    def wrong_divisor(model):
        for p in model.parameters():
            dist.all_reduce(p.data)
            p.data /= dist.get_world_size() + 1

    config = DataParallelConfig(**{**BASE, "epochs": 1})
    reference = train_reference(train, N, config)
    mine = train_averaging(train, N, config, average=my_average)
    wrong = train_averaging(train, N, config, average=wrong_divisor)
    assert parameter_distance(mine.parameters, reference.parameters) <= TOL
    assert parameter_distance(wrong.parameters, reference.parameters) > MEASURABLE
    with pytest.raises(ValueError, match="average must be a function"):
        train_averaging(train, N, config, average="mean")
