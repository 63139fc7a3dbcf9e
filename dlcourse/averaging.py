"""Parameter averaging: the lecture's first way to synchronize data-parallel workers.

The procedure, as the lecture gives it (after the Deeplearning4j documentation on
distributed training, and McDonald, Hall, Mann, "Distributed Training Strategies for the
Structured Perceptron", NAACL 2010, who analysed iterative parameter mixing):

1. Randomly initialize the network parameters.
2. Distribute a copy of the current parameters to each worker.
3. Train each worker on a subset of the data.
4. Set the global parameters to the average of the workers' parameters.
5. While there is more data to process, go to step 2.

:func:`averaging_worker` is that procedure on real processes; steps 2 and 4 are one
collective each (``broadcast`` and ``all_reduce``). ``average_every`` (K) is how many
mini-batches a worker trains between averages.

**The equivalence.** Averaging after every mini-batch (K = 1), with no internal optimizer
state (plain SGD), and the same number of examples on every worker gives exactly the
parameters of single-machine SGD on the concatenated batch (:func:`train_reference`):
``mean_n (W - lr dW_n) = W - lr mean_n dW_n``, and the mean of N equal-sized batch means is
the mean over their union. Break a condition and the two part ways: K > 1 (the workers
drift apart between averages), unequal shards (each worker's gradient weighs the same
although it saw more or fewer examples), or Adam (its per-coordinate scaling is not
linear in the gradients). Heavy-ball momentum, whose state is linear in the gradients,
survives averaging at K = 1: the lecture's condition is sufficient, not necessary.
Averaging gradients instead of parameters (:func:`dlcourse.data_parallel.train_sync_sgd`,
the update-based approach) gives the same parameters as averaging them at K = 1.

Run it: ``dlcourse train --strategy averaging --workers 4 --average-every 1``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.collectives import average_parameters, broadcast_parameters, parameter_bytes
from dlcourse.data import Dataset
from dlcourse.models import make_model
from dlcourse.train import make_optimizer
from dlcourse.worker_run import (
    DTYPES,
    DataParallelConfig,
    DataParallelResult,
    WorkerRun,
    config_or_default,
    make_shards,
    run_workers,
    steps_per_epoch,
    worker_batches,
)

__all__ = [
    "averaging_worker",
    "train_averaging",
    "train_reference",
    "parameter_distance",
]


def averaging_worker(rank, world_size, train, test, config, shard_sizes=None, average=None) -> dict[str, Any]:
    """One worker of the parameter-averaging procedure (run it with the launcher).

    ``average(model)`` is step 4, :func:`~dlcourse.collectives.average_parameters` unless a
    student's own is given.
    """
    average = average_parameters if average is None else average
    # 1. randomly initialize: every worker builds the model from the same seed
    run = WorkerRun(rank, world_size, train, config, "averaging", shard_sizes, replicas_agree=False)
    model, optimizer, K = run.model, run.optimizer, config.average_every
    nbytes = parameter_bytes(model)  # what one copy of the parameters sends
    if run.fresh:
        broadcast_parameters(model)  # 2. distribute a copy of rank 0's parameters
        run.count(nbytes, "broadcast")
    for X, y in run.batches():  # 3. train on this worker's shard ...
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()  # ... with the worker's own optimizer (its state stays local)
        run.record(loss)
        if (run.step + 1) % K == 0:  # run.step counts the steps before this one
            with run.sync(nbytes):
                average(model)  # 4. global parameters = the average
    if run.total_steps % K:
        # The data ran out between two averages. Checkpoint first: a resume with more epochs
        # must continue from the workers' own parameters, as an uninterrupted run would.
        run.save()
        average(model)  # then end on one model
        run.count(nbytes)
        return run.finish(test, save=False)
    return run.finish(test)


def train_averaging(
    train: Dataset,
    num_workers: int,
    config: DataParallelConfig | None = None,
    *,
    average: Callable[[nn.Module], None] | None = None,
    **options: Any,
) -> DataParallelResult:
    """Parameter averaging every ``config.average_every`` steps on ``num_workers`` processes.

    ``average(model)``, run in every worker process, replaces the workers' parameters by
    their mean; by default :func:`~dlcourse.collectives.average_parameters` (a function
    defined in a notebook works: it travels with cloudpickle).
    ``result.parameters`` holds the final (averaged) parameters. ``options`` (test,
    shard_sizes, backend, timeout, run_timeout, threads_per_worker) are those of
    :func:`dlcourse.worker_run.run_workers`; ``shard_sizes`` cuts the training data into
    contiguous shards of those sizes instead of equal ones.
    """
    if average is not None and not callable(average):
        raise ValueError(f"average must be a function average(model) -> None, got {average!r}")
    worker = averaging_worker if average is None else functools.partial(averaging_worker, average=average)
    return run_workers(worker, "averaging", train, num_workers, config, **options)


def train_reference(
    train: Dataset,
    num_workers: int,
    config: DataParallelConfig | None = None,
    *,
    shard_sizes: Sequence[int] | None = None,
) -> DataParallelResult:
    """One process, one model: at step t, one step on the concatenation of the N workers' t-th batches.

    This is "training on a single machine" with the very examples the workers see, the
    oracle of the lecture's equivalence. No processes are started.
    """
    config = config_or_default(config)
    config.check_workers(num_workers)
    shards = make_shards(train, num_workers, shard_sizes)
    steps = steps_per_epoch([len(s) for s in shards], config.batch_size, num_workers)
    total = config.total_steps(steps)
    dtype = DTYPES[config.dtype]
    model = make_model(config.model, seed=config.seed).to(dtype=dtype)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, config.momentum)
    losses, order = [], []
    start = time.perf_counter()
    for step in range(total):
        epoch, t = divmod(step, steps)
        if t == 0:
            order = [worker_batches(len(s), steps, epoch, config.seed, n) for n, s in enumerate(shards)]
        X = torch.cat([s.X[order[n][t]] for n, s in enumerate(shards)]).to(dtype)
        y = torch.cat([s.y[order[n][t]] for n, s in enumerate(shards)])
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    wall = time.perf_counter() - start
    batch = sum(len(s) // steps for s in shards)
    return DataParallelResult(
        strategy="reference",
        num_workers=1,
        parameters={k: v.detach().clone() for k, v in model.state_dict().items()},
        step_loss=losses,
        per_worker=[{"rank": 0, "steps": total, "batch": batch}],
        examples=total * batch,
        wall_s=wall,
        bytes_sent=0,
    )


def parameter_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between two models' parameters (same names required)."""
    if set(a) != set(b):
        raise ValueError(f"a and b must hold the same parameters, got {sorted(a)} and {sorted(b)}")
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
