"""Run one function on N real processes joined by ``torch.distributed``.

``launch(fn, num_workers, *args)`` starts N processes with the ``spawn`` start method,
joins them into one process group and returns ``[fn(0, N, *args), ..., fn(N-1, N, *args)]``::

    def hello(rank, world_size):
        t = torch.tensor([rank])
        dist.all_reduce(t)            # 0 + 1 + ... + N-1 on every rank
        return t.item()

    launch(hello, 4)                  # [6, 6, 6, 6]

What it takes care of, so that students can run it from a notebook:

- ``fn`` may be defined in a notebook cell: it travels to the workers serialized by
  cloudpickle and is unpacked by an importable trampoline (plain ``mp.spawn`` pickles by
  reference and cannot find a function of ``__main__``).
- Every run gets a fresh rendezvous (a file store in a new temporary folder), so runs
  never collide on a port.
- The first failure stops the run: a worker's exception reaches the caller as one
  :class:`WorkerError` naming the rank, with the worker's traceback; a worker killed by a
  signal is reported with the signal. The other workers are terminated, then killed;
  no process outlives the run (each worker also dies with its parent, via
  ``PR_SET_PDEATHSIG`` on Linux).
- ``timeout`` is the process group's timeout: a collective waiting on a stalled peer
  fails after it. ``run_timeout`` bounds the whole run.
- Under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set) nothing is spawned: this process
  runs ``fn`` as its own rank with the environment's rendezvous, on one machine or many,
  and every rank gets the list of all ranks' results.
"""

from __future__ import annotations

import ctypes
import os
import queue
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import cloudpickle
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dlcourse._validate import check_choice, check_float, check_int

BACKENDS = ("auto", "gloo", "nccl")


class WorkerError(RuntimeError):
    """A worker process failed; ``rank`` says which, ``worker_traceback`` how."""

    def __init__(self, rank: int, message: str, worker_traceback: str = ""):
        self.rank = rank
        self.worker_traceback = worker_traceback
        detail = f"\n\n--- traceback of rank {rank} ---\n{worker_traceback}" if worker_traceback else ""
        super().__init__(f"worker rank {rank} failed: {message}{detail}")


def resolve_backend(backend: str, num_workers: int) -> str:
    """``"auto"``: NCCL when CUDA has at least ``num_workers`` devices, else gloo."""
    check_choice("backend", backend, BACKENDS)
    if backend == "auto":
        enough_gpus = torch.cuda.is_available() and torch.cuda.device_count() >= num_workers
        return "nccl" if enough_gpus and dist.is_nccl_available() else "gloo"
    if backend == "nccl" and not (torch.cuda.is_available() and dist.is_nccl_available()):
        raise ValueError("backend 'nccl' needs CUDA GPUs and a PyTorch built with NCCL; use 'gloo' or 'auto'")
    return backend


def device_for(rank: int) -> torch.device:
    """This rank's compute device: ``cuda:(local rank)`` when the group runs NCCL, else CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        local = int(os.environ.get("LOCAL_RANK", rank))
        return torch.device("cuda", local % torch.cuda.device_count())
    return torch.device("cpu")


def under_torchrun() -> bool:
    """True when this process was started by torchrun (or any env:// launcher)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def _die_with_parent() -> None:
    # If the parent is killed (e.g. a notebook kernel restart), the kernel sends us SIGKILL.
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except OSError:
            pass


def _trampoline(rank, world_size, payload, init_method, backend, timeout_s, threads, results):
    """Entry point of every spawned worker (importable, so ``spawn`` can find it)."""
    _die_with_parent()
    torch.set_num_threads(threads)
    try:
        fn, args, kwargs = cloudpickle.loads(payload)
        dist.init_process_group(
            backend,
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        value = fn(rank, world_size, *args, **kwargs)
        results.put((rank, "ok", cloudpickle.dumps(value)))
    except BaseException as e:  # noqa: BLE001 - every failure must reach the parent
        results.put((rank, "error", f"{type(e).__name__}: {e}", traceback.format_exc()))
        return  # no destroy_process_group here: it can block on a dead peer
    dist.destroy_process_group()


def _stop(processes, grace_s: float = 1.0) -> None:
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.kill()
            p.join(5.0)


def launch(
    fn: Callable[..., Any],
    num_workers: int,
    *args: Any,
    backend: str = "auto",
    timeout: float = 30.0,
    run_timeout: float | None = None,
    threads_per_worker: int | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Run ``fn(rank, num_workers, *args, **kwargs)`` on ``num_workers`` processes.

    Returns the list of return values, indexed by rank. ``timeout`` (seconds) is the
    process group's collective timeout; ``run_timeout`` (seconds, default none) ends
    the whole run with ``TimeoutError``. ``threads_per_worker`` defaults to the CPU cores
    divided among the workers, at least 1. Raises :class:`WorkerError` for the first
    worker that fails.
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {fn!r}")
    check_int("num_workers", num_workers, low=1)
    check_float("timeout", timeout, low=0.0, low_open=True)
    if run_timeout is not None:
        check_float("run_timeout", run_timeout, low=0.0, low_open=True)
    if threads_per_worker is None:
        threads_per_worker = max(1, (os.cpu_count() or 1) // num_workers)
    check_int("threads_per_worker", threads_per_worker, low=1)
    # "auto" asks whether each process can have its own GPU: under torchrun that is the
    # processes on this machine (LOCAL_WORLD_SIZE), not the whole world across machines
    local = int(os.environ.get("LOCAL_WORLD_SIZE", num_workers)) if under_torchrun() else num_workers
    backend = resolve_backend(backend, local)

    if under_torchrun():
        return _run_under_torchrun(fn, args, kwargs, backend, timeout)

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    store_dir = tempfile.mkdtemp(prefix="dlcourse-rdzv-")
    init_method = "file://" + os.path.join(store_dir, "store")
    payload = cloudpickle.dumps((fn, args, kwargs))
    processes = []
    try:
        for rank in range(num_workers):
            p = ctx.Process(
                target=_trampoline,
                args=(rank, num_workers, payload, init_method, backend, timeout, threads_per_worker, results),
                name=f"dlcourse-rank{rank}",
                daemon=True,
            )
            p.start()
            processes.append(p)
        return _collect(processes, results, num_workers, run_timeout)
    finally:
        _stop(processes)
        results.close()
        results.join_thread()
        shutil.rmtree(store_dir, ignore_errors=True)


def _collect(processes, results, num_workers: int, run_timeout: float | None) -> list[Any]:
    values: dict[int, Any] = {}
    deadline = time.monotonic() + run_timeout if run_timeout is not None else None
    exited_at: dict[int, float] = {}
    while len(values) < num_workers:
        try:
            message = results.get(timeout=0.05)
        except queue.Empty:
            message = None
        if message is not None:
            rank, status = message[0], message[1]
            if status == "error":
                raise _root_cause(processes, rank, message[2], message[3])
            values[rank] = cloudpickle.loads(message[2])
            continue
        now = time.monotonic()
        for rank, p in enumerate(processes):
            if rank in values or p.exitcode is None:
                continue
            # A worker that exited without a result: give its queue message a moment to
            # arrive (the feeder thread flushes at exit), then report how it died.
            first_seen = exited_at.setdefault(rank, now)
            if now - first_seen > 1.0:
                code = p.exitcode
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
                raise WorkerError(rank, f"process {how} without returning a result")
        if deadline is not None and now > deadline:
            missing = sorted(set(range(num_workers)) - set(values))
            raise TimeoutError(
                f"run_timeout exceeded: ranks {missing} had not finished; all workers were stopped"
            )
    return [values[r] for r in range(num_workers)]


def _root_cause(processes, rank: int, message: str, worker_traceback: str) -> WorkerError:
    """The error to report when ``rank`` raised: a peer killed by a signal is the cause.

    When a peer dies, the survivors' collectives fail within about a second, often before
    the parent has noticed the death; naming the survivor would mislead.
    """
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        for other, p in enumerate(processes):
            if other != rank and p.exitcode is not None and p.exitcode < 0:
                how = f"killed by {signal.Signals(-p.exitcode).name}"
                return WorkerError(other, f"process {how}; rank {rank} then failed with {message}")
        time.sleep(0.05)
    return WorkerError(rank, message, worker_traceback)


def _run_under_torchrun(fn, args, kwargs, backend: str, timeout: float) -> list[Any]:
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", timeout=timedelta(seconds=timeout))
    if dist.get_backend() == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    value = fn(rank, world_size, *args, **kwargs)
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, value)
    return gathered
