"""Compressed all-reduce in DDP: PyTorch's fp16 and PowerSGD communication hooks.

The peers' compressed updates of :mod:`dlcourse.decentralized` (Strom, Interspeech 2015)
have two common rivals that keep synchronous data parallelism and compress what the
all-reduce carries instead: halving every number (the ``fp16_compress_hook``), and
PowerSGD (Vogels, Karimireddy, Jaggi, "PowerSGD: Practical low-rank gradient compression
for distributed optimization", NeurIPS 2019), which all-reduces two thin factors P (m x r)
and Q (n x r) of each gradient matrix instead of the matrix, with error feedback. Both run
on gloo (FACTS.md); this module is :func:`dlcourse.data_parallel.train_ddp` plus one line,
``register_comm_hook``, so that a lesson can measure their accuracy, not only their bytes::

    from dlcourse.ddp_compression import train_ddp_compressed
    run = train_ddp_compressed(split.train, 4, config, hook="powersgd", rank=1, test=split.test)
    run.test["accuracy"], run.bytes_sent

``bytes_sent`` counts what a ring all-reduce of the hook's tensors moves (as every
data-parallel strategy here counts): half of dense for fp16; for PowerSGD the uncompressed
vectors and small matrices plus P and Q of each compressed matrix, and dense for the first
``START_ITER`` steps, during which the hook runs a plain all-reduce.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from dlcourse._validate import check_choice, check_int
from dlcourse.collectives import parameter_bytes
from dlcourse.data import Dataset
from dlcourse.worker_run import DataParallelConfig, DataParallelResult, WorkerRun, run_workers

HOOKS = ("fp16", "powersgd")
START_ITER = 2  # PowerSGD's plain all-reduce steps first (the hook needs >= 2 with error feedback)
MIN_COMPRESSION_RATE = (
    2.0  # a matrix is factored only if that saves at least this factor (the hook's default)
)


def powersgd_numbers(shapes: Sequence[Sequence[int]], rank: int) -> int:
    """Numbers PowerSGD all-reduces per step for gradients of ``shapes`` at ``rank``.

    A tensor is viewed as a matrix ``(shape[0], rest)``; vectors, and matrices where
    ``r (m + n) * MIN_COMPRESSION_RATE >= m n``, go uncompressed, as the hook decides.
    """
    check_int("rank", rank, low=1)
    total = 0
    for shape in shapes:
        shape = tuple(int(s) for s in shape)
        m, n = (shape[0], math.prod(shape[1:])) if len(shape) >= 2 else (math.prod(shape), 1)
        factored = rank * (m + n)
        total += factored if len(shape) >= 2 and factored * MIN_COMPRESSION_RATE < m * n else m * n
    return total


def hook_message_bytes(shapes: Sequence[Sequence[int]], hook: str, rank: int = 1) -> int:
    """Bytes of one worker's gradient as the hook all-reduces it (fp16: 2 per number; PowerSGD: 4)."""
    check_choice("hook", hook, HOOKS)
    if hook == "fp16":
        return 2 * sum(math.prod(s) for s in shapes)
    return 4 * powersgd_numbers(shapes, rank)


def _register(ddp: DistributedDataParallel, hook: str, rank: int) -> None:
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

    if hook == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    else:
        state = powerSGD_hook.PowerSGDState(
            process_group=None,
            matrix_approximation_rank=rank,
            start_powerSGD_iter=START_ITER,
            min_compression_rate=MIN_COMPRESSION_RATE,
        )
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)


def compressed_ddp_worker(
    rank_, world_size, train, test, config, shard_sizes=None, *, hook: str, rank: int
) -> dict[str, Any]:
    """:func:`dlcourse.data_parallel.ddp_worker` with a compression hook on its all-reduce."""
    run = WorkerRun(rank_, world_size, train, config, f"ddp-{hook}", shard_sizes)
    model, optimizer = run.model, run.optimizer
    device_ids = [run.device.index] if run.device.type == "cuda" else None
    ddp = DistributedDataParallel(model, device_ids=device_ids)
    _register(ddp, hook, rank)  # the only line that differs from DDP
    run.sync_measured = False
    dense = parameter_bytes(model)
    shapes = [p.shape for p in model.parameters()]
    compressed = hook_message_bytes(shapes, hook, rank)
    if run.fresh:
        run.count(dense, "broadcast")
    for step, (X, y) in enumerate(run.batches()):
        loss = F.cross_entropy(ddp(X), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        run.count(dense if hook == "powersgd" and step < START_ITER else compressed)
        run.record(loss)
    return run.finish(test)


def train_ddp_compressed(
    train: Dataset,
    num_workers: int,
    config: DataParallelConfig | None = None,
    *,
    hook: str = "fp16",
    rank: int = 1,
    **options: Any,
) -> DataParallelResult:
    """DDP on ``num_workers`` processes whose all-reduce goes through ``hook``.

    ``hook``: ``"fp16"`` (gradients halved to float16 for the all-reduce) or ``"powersgd"``
    (low-rank factors of ``rank``, with error feedback). ``options`` are those of
    :func:`dlcourse.data_parallel.train_ddp`.
    """
    check_choice("hook", hook, HOOKS)
    check_int("rank", rank, low=1)
    if not isinstance(train, Dataset):
        raise ValueError(f"train must be a Dataset, got {type(train).__name__}")
    worker = functools.partial(compressed_ddp_worker, hook=hook, rank=rank)
    return run_workers(worker, f"ddp-{hook}", train, num_workers, config, **options)
