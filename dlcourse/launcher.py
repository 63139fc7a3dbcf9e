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
- **Start-up does not grow with N.** Workers are forked from a ``forkserver`` that has
  imported torch once (``spawn`` where there is none, as on Windows), so a worker starts in
  milliseconds instead of importing torch itself, and all N start at once: ``fn`` and its
  arguments (the training data) go to them in a file, not through the start method's pipe.
  The caller's environment variables, ``sys.path`` and working folder at the time of the
  call travel with them, as a freshly spawned worker would have them. The forkserver itself
  stays, like multiprocessing's resource tracker, until the caller exits (a worker forked
  from it still dies with it). ``phases=`` (a dict) receives where the seconds of the run
  went (see :data:`PHASES`).
- Every run gets a fresh rendezvous (a file store in a new temporary folder), so runs
  never collide on a port.
- The first failure (of a rank not in ``may_fail``, below) stops the run: a worker's
  exception reaches the caller as one :class:`WorkerError` naming the rank, with the
  worker's traceback; a worker killed by a signal is reported with the signal. The other
  workers are terminated, then killed; no process outlives the run (each worker also dies
  with its parent, via ``PR_SET_PDEATHSIG`` on Linux).
- ``timeout`` is the process group's timeout: a collective waiting on a stalled peer
  fails after it. ``run_timeout`` bounds the whole run.
- **Ranks that may fail** (``may_fail``): the lecture credits data parallelism with good
  fault tolerance -- an asynchronous parameter server finishes without a lost worker. The
  death of such a rank does not end the run: its place in the result list holds a
  :class:`WorkerLost` saying how it died, and the others go on.
- **Progress** (``on_message``): inside ``fn``, :func:`report` sends any object to the
  caller, where ``on_message(rank, obj)`` is called while the run goes on (a notebook's
  progress bar moves live).
- Under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set) nothing is spawned: this process
  runs ``fn`` as its own rank with the environment's rendezvous, on one machine or many,
  and every rank gets the list of all ranks' results. There ``may_fail`` cannot be
  honoured: the results are gathered with a collective (``all_gather_object``), which
  fails on every rank when one has died, and torchrun ends or restarts the whole job.
  ``report`` calls ``on_message`` in the reporting rank's own process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import cloudpickle
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dlcourse._validate import check_choice, check_float, check_int

BACKENDS = ("auto", "gloo", "nccl")
# seconds a may_fail rank still running may take to return once every other rank has
# returned: the run's outcome no longer depends on it, so it is not waited for long
MAY_FAIL_GRACE_S = 5.0
# seconds a rank that exited without a word is given for its last queue message to arrive
# (the feeder thread flushes at exit) before it counts as dead
_EXIT_GRACE_S = 1.0
# what the forkserver imports once; every worker forked from it has them. torch._dynamo: the
# first optimizer a process builds imports it (800 modules, 1.2-1.4 s measured on 2 cores)
_PRELOAD = ["dlcourse.launcher", "torch._dynamo"]

# Where a run's seconds go, as ``launch(..., phases={})`` fills them in (the slowest rank's
# time for each worker phase; the one definition the JSON's "phases" and the summary use):
PHASES = {
    "start_s": "from the call until the last worker is running (process start, imports, the payload)",
    "process_group_s": "joining the process group (rendezvous) and the first barrier",
    "run_s": "fn itself: training, evaluation and whatever else it does",
    "teardown_s": "from the last worker's return until the call returns (group torn down, processes joined)",
}


class WorkerError(RuntimeError):
    """A worker process failed; ``rank`` says which, ``worker_traceback`` how.

    ``message`` is the failure in one line; ``lost`` lists the ``may_fail`` ranks that were
    lost before the run ended (see :func:`launch`).
    """

    def __init__(
        self, rank: int, message: str, worker_traceback: str = "", lost: list[WorkerLost] | None = None
    ):
        self.rank = rank
        self.message = message
        self.worker_traceback = worker_traceback
        self.lost = list(lost or [])
        meanwhile = "".join(f"\n  meanwhile lost rank {x.rank}: {x.reason}" for x in self.lost)
        detail = f"\n\n--- traceback of rank {rank} ---\n{worker_traceback}" if worker_traceback else ""
        super().__init__(f"worker rank {rank} failed: {message}{meanwhile}{detail}")


@dataclass(frozen=True)
class WorkerLost:
    """The result of a ``may_fail`` rank that died: which rank, and how."""

    rank: int  # the rank that was lost
    reason: str  # one line: "process killed by SIGKILL", "KeyError: 'x'", "stopped: ..."
    signal: str | None = None  # the signal that ended the process ("SIGKILL"), None if it did not die by one
    worker_traceback: str = ""  # the worker's traceback when it raised, else ""

    def __repr__(self) -> str:
        return f"WorkerLost(rank={self.rank}, reason={self.reason!r})"


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


# where report() sends: set in a worker while fn runs, when the caller gave on_message
_channel: Callable[[Any], None] | None = None


def report(obj: Any) -> None:
    """Send ``obj`` from inside ``fn`` to the caller's ``on_message(rank, obj)``.

    Messages of one rank arrive in the order they were sent. A no-op when the run has no
    ``on_message`` and outside a run. ``obj`` must pickle (with cloudpickle).
    """
    if _channel is not None:
        _channel(obj)


def _die_with_parent() -> None:
    # If the parent is killed (e.g. a notebook kernel restart), the kernel sends us SIGKILL.
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except OSError:
            pass


def _context():
    """The start method: a forkserver with torch imported once where there is one, else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return mp.get_context("spawn")


def _write_payload(path: str, fn, args, kwargs) -> None:
    """The caller's surroundings (environment, sys.path, folder), then fn and its arguments."""
    with open(path, "wb") as f:
        cloudpickle.dump((dict(os.environ), list(sys.path), os.getcwd()), f)
        cloudpickle.dump((fn, args, kwargs), f)


def _read_payload(path: str):
    with open(path, "rb") as f:
        environ, path_list, cwd = cloudpickle.load(f)
        # a forked worker has the forkserver's surroundings: take the caller's, as of this call
        os.environ.clear()
        os.environ.update(environ)
        sys.path[:] = path_list
        os.chdir(cwd)
        return cloudpickle.load(f)


def _trampoline(rank, world_size, payload_path, init_method, backend, timeout_s, threads, results, reports):
    """Entry point of every worker (importable, so ``spawn`` and the forkserver can find it)."""
    global _channel
    clock: dict[str, float] = {}
    _die_with_parent()
    torch.set_num_threads(threads)
    try:
        fn, args, kwargs = _read_payload(payload_path)
        clock["loaded"] = time.time()
        if reports:
            # the same queue as the result: one rank's messages arrive before its result, in order
            _channel = lambda obj: results.put((rank, "message", cloudpickle.dumps(obj)))  # noqa: E731
        dist.init_process_group(
            backend,
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        # gloo's init can return on one rank while a peer is still completing its handshake;
        # a rank whose fn returns at once would then tear the group down under that peer
        # ("connectFullMesh failed ... Connection closed by peer"). Meet once before fn.
        dist.barrier()
        clock["joined"] = time.time()
        value = fn(rank, world_size, *args, **kwargs)
        clock["returned"] = time.time()
        results.put((rank, "ok", cloudpickle.dumps(value), clock))
    except BaseException as e:  # noqa: BLE001 - every failure must reach the parent
        results.put((rank, "error", f"{type(e).__name__}: {e}", traceback.format_exc()))
        # Leave at once, once the error is on its way: no destroy_process_group (it can block
        # on a dead peer), and no interpreter teardown either, which destroys the group under
        # threads still blocked on a peer (C++ "terminate called ...", SIGABRT).
        results.close()
        results.join_thread()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    finally:
        _channel = None
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
    may_fail: Iterable[int] = (),
    on_message: Callable[[int, Any], None] | None = None,
    phases: dict[str, float] | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Run ``fn(rank, num_workers, *args, **kwargs)`` on ``num_workers`` processes.

    Returns the list of return values, indexed by rank. ``timeout`` (seconds) is the
    process group's collective timeout; ``run_timeout`` (seconds, default none) ends
    the whole run with ``TimeoutError``. ``threads_per_worker`` defaults to the CPU cores
    divided among the workers, at least 1. Raises :class:`WorkerError` for the first
    worker that fails.

    ``may_fail``: ranks whose death (an exception or a signal) does not end the run; the
    result of such a rank is then a :class:`WorkerLost`. Every other rank's failure still
    ends the run, but first the ``may_fail`` ranks still running get up to ``timeout`` + 5 s
    to end (they usually notice the failure of their peer themselves), and
    ``WorkerError.lost`` says what became of them. Once every other rank has returned, a
    ``may_fail`` rank still running gets ``MAY_FAIL_GRACE_S`` seconds, then is stopped and
    reported as lost. Ignored under torchrun (see the module docstring).

    ``on_message(rank, obj)`` is called in this process for every :func:`report` of a
    worker, as it arrives; an exception it raises stops the run and propagates.

    ``phases``: a dict that a successful run fills with the seconds of each of
    :data:`PHASES` (not filled under torchrun, where the launcher is torchrun's).
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
    optional = _check_may_fail(may_fail, num_workers)
    if on_message is not None and not callable(on_message):
        raise ValueError(f"on_message must be a function f(rank, obj) or None, got {on_message!r}")
    if phases is not None and not isinstance(phases, dict):
        raise ValueError(f"phases must be a dict to fill in or None, got {phases!r}")
    # "auto" asks whether each process can have its own GPU: under torchrun that is the
    # processes on this machine (LOCAL_WORLD_SIZE), not the whole world across machines
    local = int(os.environ.get("LOCAL_WORLD_SIZE", num_workers)) if under_torchrun() else num_workers
    backend = resolve_backend(backend, local)

    if under_torchrun():
        if on_message is not None:
            fn = _reporting_in_process(fn, on_message)
        return _run_under_torchrun(fn, args, kwargs, backend, timeout)

    called_at = time.time()
    ctx = _context()
    results = ctx.Queue()
    store_dir = tempfile.mkdtemp(prefix="dlcourse-rdzv-")
    init_method = "file://" + os.path.join(store_dir, "store")
    # fn and its arguments (the training data, often megabytes) go to the workers in a file,
    # not through spawn's pipe: a child reads that pipe only after importing torch, so a large
    # payload made each start() wait for the previous worker's imports (2 s a worker, measured)
    payload_path = os.path.join(store_dir, "payload")
    _write_payload(payload_path, fn, args, kwargs)
    processes = []
    collector = None
    try:
        for rank in range(num_workers):
            p = ctx.Process(
                target=_trampoline,
                args=(
                    rank,
                    num_workers,
                    payload_path,
                    init_method,
                    backend,
                    timeout,
                    threads_per_worker,
                    results,
                    on_message is not None,
                ),
                name=f"dlcourse-rank{rank}",
                daemon=True,
            )
            p.start()
            processes.append(p)
        collector = _Collector(processes, results, optional, on_message, timeout, run_timeout)
        return collector.run()
    finally:
        _stop(processes)
        results.close()
        results.join_thread()
        shutil.rmtree(store_dir, ignore_errors=True)
        if phases is not None and collector is not None and collector.clocks:
            phases.update(_phases(called_at, collector.clocks, time.time()))


def _phases(called_at: float, clocks: list[dict[str, float]], ended_at: float) -> dict[str, float]:
    """:data:`PHASES` from the workers' clocks (wall-clock seconds: one machine, one clock)."""
    last = lambda key: max(c[key] for c in clocks)  # noqa: E731 - the slowest rank decides
    return {
        "start_s": last("loaded") - called_at,
        "process_group_s": last("joined") - last("loaded"),
        "run_s": last("returned") - last("joined"),
        "teardown_s": ended_at - last("returned"),
    }


def _check_may_fail(may_fail: Iterable[int], num_workers: int) -> frozenset[int]:
    if isinstance(may_fail, (str, bytes)) or not isinstance(may_fail, Iterable):
        raise ValueError(f"may_fail must be a collection of ranks (ints), got {may_fail!r}")
    ranks = frozenset(may_fail)
    for rank in ranks:
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_workers:
            raise ValueError(
                f"may_fail must hold ranks from 0 to num_workers - 1 = {num_workers - 1}, got {rank!r}"
            )
    return ranks


def _how(exitcode: int) -> tuple[str, str | None]:
    """How a process that sent no result ended: a line, and the signal's name if one."""
    if exitcode < 0:
        name = signal.Signals(-exitcode).name
        return f"process killed by {name}", name
    return f"process exited with code {exitcode}", None


class _Collector:
    """The parent's loop: results, errors, messages and deaths of the workers, as they come."""

    def __init__(self, processes, results, optional: frozenset[int], on_message, timeout: float, run_timeout):
        self.processes, self.results, self.optional = processes, results, optional
        self.on_message, self.timeout = on_message, timeout
        self.deadline = time.monotonic() + run_timeout if run_timeout is not None else None
        self.values: dict[int, Any] = {}  # rank -> its result, or a WorkerLost for a may_fail rank
        self.exited_at: dict[int, float] = {}  # rank -> when it was first seen exited without a result
        self.failed: set[int] = set()  # required ranks whose failure has been reported
        self.clocks: list[dict[str, float]] = []  # the clock of every rank that returned

    def run(self) -> list[Any]:
        n = len(self.processes)
        required = set(range(n)) - self.optional
        required_done_at = None
        while len(self.values) < n:
            now = time.monotonic()
            failure = self._step(now)
            if failure is not None:
                self._wait_for_optional(now)
                lost = [v for v in self.values.values() if isinstance(v, WorkerLost)]
                raise WorkerError(
                    failure.rank, failure.message, failure.worker_traceback, sorted(lost, key=_rank)
                )
            if required and required <= self.values.keys():
                # the run's outcome is decided: a may_fail rank still running is not waited on for long
                required_done_at = required_done_at or now
                if now - required_done_at > MAY_FAIL_GRACE_S:
                    for rank in sorted(set(range(n)) - self.values.keys()):
                        self.values[rank] = WorkerLost(
                            rank,
                            f"stopped: still running {MAY_FAIL_GRACE_S:g} s after the other ranks returned",
                        )
            if self.deadline is not None and now > self.deadline:
                missing = sorted(set(range(n)) - set(self.values))
                raise TimeoutError(
                    f"run_timeout exceeded: ranks {missing} had not finished; all workers were stopped"
                )
        return [self.values[r] for r in range(n)]

    def _step(self, now: float) -> WorkerError | None:
        """Take one queue message (or notice a silent death); return a fatal failure, if any."""
        try:
            message = self.results.get(timeout=0.05)
        except queue.Empty:
            message = None
        if message is not None:
            rank, status = message[0], message[1]
            if status == "message":
                if self.on_message is not None:
                    self.on_message(rank, cloudpickle.loads(message[2]))
            elif status == "ok":
                self.values[rank] = cloudpickle.loads(message[2])
                self.clocks.append(message[3])
            elif rank in self.optional:
                self.values[rank] = WorkerLost(rank, message[2], None, message[3])
            else:
                self.failed.add(rank)
                return self._root_cause(rank, message[2], message[3])
            return None
        failure = None
        for rank, p in enumerate(self.processes):
            if rank in self.values or rank in self.failed or p.exitcode is None:
                continue
            # A worker that exited without a result: give its queue message a moment to
            # arrive, then report how it died.
            if now - self.exited_at.setdefault(rank, now) > _EXIT_GRACE_S:
                how, sig = _how(p.exitcode)
                if rank in self.optional:
                    self.values[rank] = WorkerLost(rank, how, sig)
                elif failure is None:
                    self.failed.add(rank)
                    failure = WorkerError(rank, f"{how} without returning a result")
        return failure

    def _wait_for_optional(self, now: float) -> None:
        """A required rank failed: let the may_fail ranks still running end, within the timeout."""
        until = now + self.timeout + 5.0
        if self.deadline is not None:
            until = min(until, self.deadline)
        running = lambda: [r for r in self.optional if r not in self.values]  # noqa: E731
        while running() and time.monotonic() < until:
            self._step(time.monotonic())  # a second required failure changes nothing: the first is reported
        for rank in running():
            self.values[rank] = WorkerLost(rank, "stopped: still running when the run failed")

    def _root_cause(self, rank: int, message: str, worker_traceback: str) -> WorkerError:
        """The error to report when ``rank`` raised: a peer killed by a signal is the cause.

        When a peer dies, the survivors' collectives fail within about a second, often before
        the parent has noticed the death; naming the survivor would mislead. A ``may_fail``
        peer is not a cause: its death was allowed for.
        """
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            for other, p in enumerate(self.processes):
                if other != rank and other not in self.optional and p.exitcode is not None and p.exitcode < 0:
                    how, _ = _how(p.exitcode)
                    return WorkerError(other, f"{how}; rank {rank} then failed with {message}")
            time.sleep(0.05)
        return WorkerError(rank, message, worker_traceback)


@contextlib.contextmanager
def one_process_group() -> Iterator[None]:
    """A process group of this process alone (N = 1), unless one exists: collectives run, nothing
    is spawned (the graders check a student's collective code this way before the real runs)."""
    if dist.is_initialized():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="dlcourse-pg-") as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


def _rank(x: WorkerLost) -> int:
    return x.rank


def _reporting_in_process(
    fn: Callable[..., Any], on_message: Callable[[int, Any], None]
) -> Callable[..., Any]:
    """``fn`` with :func:`report` calling ``on_message`` here (torchrun: no parent to send to)."""

    def run(rank, world_size, *args, **kwargs):
        global _channel
        _channel = lambda obj: on_message(rank, obj)  # noqa: E731
        try:
            return fn(rank, world_size, *args, **kwargs)
        finally:
            _channel = None

    return run


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
