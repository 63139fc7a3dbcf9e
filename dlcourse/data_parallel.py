"""Data parallelism: N replicas of one model, each on its own shard of the data.

The lecture ("Distributed Training with Data Parallelism"): keep a copy of the entire
model on each worker, let each worker process a different subset of the data, and combine
the results. This module holds the synchronous, update-based ways to do that:

- :func:`train_sync_sgd` — update-based synchronous SGD written out: every worker
  computes the gradient of its part of the global batch, the gradients are averaged with
  one ``all_reduce``, and every worker takes the same step (model replicas on data
  shards: Dean et al., "Large Scale Distributed Deep Networks", NIPS 2012; synchronous
  all-reduce SGD at scale: Goyal et al., "Accurate, Large Minibatch SGD", 2017).
- :func:`train_ddp` — the same thing with PyTorch's ``DistributedDataParallel`` (Li et al.,
  "PyTorch Distributed", VLDB 2020), which overlaps the all-reduce with the backward
  pass: the modern form of Keras' ``multi_gpu_model``.
- The **last executor** effect: ``slow_worker``/``slow_delay`` slow one rank, and every
  rank's step then takes as long as the slowest one's (``per_worker`` in the result).

What ``multi_gpu_model(model, gpus, cpu_relocation=True)`` did inside one process is in
:mod:`dlcourse.replication`; the collectives written out are in :mod:`dlcourse.collectives`;
the bookkeeping every strategy shares (:class:`DataParallelConfig`, shards, mini-batches,
clocks, checkpoints: :class:`WorkerRun`) is in :mod:`dlcourse.worker_run` and re-exported
here. The parameter-averaging procedure (:mod:`dlcourse.averaging`) uses the same, so all
strategies see the same shards and the same mini-batches and can be compared number for
number::

    from dlcourse.data import load_mnist
    from dlcourse.data_parallel import DataParallelConfig, train_ddp

    split = load_mnist()
    result = train_ddp(split.train, 2, DataParallelConfig(model="cnn", optimizer="adam", lr=1e-3),
                       test=split.test)

From the shell: ``dlcourse train --strategy ddp --workers 2`` (or ``sync-sgd``); under
``torchrun`` the same command runs one rank per process.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from dlcourse.collectives import (  # noqa: F401 - re-exported: the collectives this module uses
    average_gradients,
    broadcast_parameters,
    parameter_bytes,
    ring_allreduce_bytes,
)
from dlcourse.data import Dataset
from dlcourse.worker_run import (  # noqa: F401 - re-exported: the run every strategy shares
    DTYPES,
    DataParallelConfig,
    DataParallelResult,
    WorkerRun,
    collect,
    make_shards,
    run_fingerprint,
    run_workers,
    steps_per_epoch,
    worker_batches,
)

# ---------------------------------------------------------------------------------------
# The strategies. Each loop is the single-process loop plus the lines that synchronize.


def sync_sgd_worker(rank, world_size, train, test, config, shard_sizes=None) -> dict[str, Any]:
    """Update-based synchronous SGD: average the gradients, then every worker takes one step."""
    run = WorkerRun(rank, world_size, train, config, "sync-sgd", shard_sizes)
    model, optimizer = run.model, run.optimizer
    nbytes = parameter_bytes(model)  # what one copy of the model (or its gradient) sends
    if run.fresh:
        broadcast_parameters(model)  # all replicas start from rank 0's weights
        run.count(nbytes, "broadcast")
    for X, y in run.batches():
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with run.sync(nbytes):
            average_gradients(model)  # the only distributed line: dW = mean_n dW_n
        optimizer.step()
        run.record(loss)
    return run.finish(test)


def ddp_worker(rank, world_size, train, test, config, shard_sizes=None) -> dict[str, Any]:
    """The same with ``DistributedDataParallel``: gradients are averaged during backward."""
    run = WorkerRun(rank, world_size, train, config, "ddp", shard_sizes)
    model, optimizer = run.model, run.optimizer
    device_ids = [run.device.index] if run.device.type == "cuda" else None
    ddp = DistributedDataParallel(model, device_ids=device_ids)  # broadcasts rank 0's weights
    run.sync_measured = False
    nbytes = parameter_bytes(model)  # what one copy of the model (or its gradient) sends
    if run.fresh:
        run.count(nbytes, "broadcast")
    for X, y in run.batches():
        loss = F.cross_entropy(ddp(X), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # all-reduces gradient buckets as soon as each is ready
        optimizer.step()
        run.count(nbytes)
        run.record(loss)
    return run.finish(test)


def train_sync_sgd(
    train: Dataset, num_workers: int, config: DataParallelConfig | None = None, **options: Any
) -> DataParallelResult:
    """Synchronous SGD with written-out gradient averaging on ``num_workers`` processes.

    ``options`` (test, shard_sizes, backend, timeout, run_timeout, threads_per_worker) are
    those of :func:`dlcourse.worker_run.run_workers`.
    """
    return run_workers(sync_sgd_worker, "sync-sgd", train, num_workers, config, **options)


def train_ddp(
    train: Dataset, num_workers: int, config: DataParallelConfig | None = None, **options: Any
) -> DataParallelResult:
    """Data parallelism with ``DistributedDataParallel`` on ``num_workers`` processes.

    The arguments are those of :func:`train_sync_sgd`; the result is the same up to rounding.
    """
    return run_workers(ddp_worker, "ddp", train, num_workers, config, **options)
