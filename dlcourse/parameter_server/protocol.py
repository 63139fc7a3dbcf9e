"""The parameter server's processes: the wire protocol, the worker loop and the server loop.

What every rank of :func:`dlcourse.parameter_server.run_parameter_server` runs (the lecture's
centralized asynchronous SGD: Dean et al., "Large Scale Distributed Deep Networks", NIPS 2012;
Li et al., "Scaling Distributed Machine Learning with the Parameter Server", OSDI 2014).
:func:`rank_main` is the function the launcher starts on every rank: ranks ``0 .. k-1`` run
a server loop (:class:`_Server`), ranks ``k .. k+N-1`` a worker loop (:func:`_worker`). The
configuration is :mod:`dlcourse.parameter_server.config`; the results are assembled in
:mod:`dlcourse.parameter_server`.

Wire protocol
-------------
Every message starts with a **header**, an int64 tensor of 5 entries
``[kind, worker, version, clock, batch]``, optionally followed by a **payload**, the float32 shard
(a gradient or parameters). Headers and payloads use different tags, so a header can never
be mistaken for a payload::

    kind   from    payload   meaning
    HELLO  worker  -         "I am ready": answered by PARAMS
    PUSH   worker  gradient  computed from the PARAMS of (version, clock): answered by PARAMS
    LAST   worker  gradient  as PUSH, the worker's last one: not answered
    BYE    worker  -         no batch is left for me (shared batches): not answered
    PARAMS server  shard     the parameters at (version, clock); from server 0 with shared
                             batches, ``batch`` is the next item of the shared order (-1: none left)

A server answers a worker's HELLO or PUSH only when the worker's push has been applied and
the bounded-staleness gate lets it start its next step: that is how fast workers are held
back. Waiting workers are answered least-answered first, then by index.

With shared batches (the default of asynchronous modes, ``PSConfig.effective_shared_batches``)
the workers do not own a fixed list of steps: server 0 hands out the items of one shared order
of the run (:func:`dlcourse.data.shared_order`) with its PARAMS answers, one per pull, first
come first served, as Downpour SGD's workers take the next mini-batch from a shared pool;
:mod:`dlcourse.sim` deals the same order to its pulls. A fast worker therefore does more
steps, and the run ends when the order is used up.
Messages are CPU tensors on a gloo group even when workers compute on GPUs (NCCL has
no any-source receive and no tags).

What is recorded
----------------
Each server records, for every update it applies, the **worker** whose push it was
(``update_workers``; a soft-sync group's pushes in worker order, as they are summed), next to
its ``(version, pulled version)`` and the seconds since the server's first message at which
it was applied. Each worker records per step, in ``step_times``, four readings of
:func:`time.perf_counter` in seconds after ``t0``, the moment its first PARAMS arrived (the
run's start for it; ``t0`` itself is recorded too, and ``perf_counter`` is the machine's
monotonic clock, so readings of processes on one machine compare)::

    (compute_start, compute_end, pushed, answered)

``compute_start .. compute_end`` is the step's compute (the straggler's sleep, the batch,
forward and backward: ``step_compute_s``); ``compute_end .. pushed`` the **send**, until the
push's isends have completed; ``pushed .. answered`` the **wait for the answer**, until the
next PARAMS has arrived (the server's receive, apply, gate and answer, and the answer's
transfer); ``answered`` is NaN after a LAST push, which is not answered. The step's time
outside compute, ``answered - compute_end``, is what ``wait_s`` adds up.

Noticing failures
-----------------
A server listens to each worker with its own receiving thread (a blocking ``recv`` from
that rank). gloo's ``recv(src=None)`` would also receive from any rank, but it keeps waiting
when a peer dies, while a receive from a named rank fails within about a second when that
rank's connection closes: that is how the server notices a lost worker. In async modes it
finishes with the others and reports the lost worker and its update count; in synchronous
mode it stops with an error (the last executor never arrives). A worker whose server dies
stops with :class:`ServerLost`. Anything silent longer than ``timeout`` is an error too.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from dlcourse._validate import check_int
from dlcourse.data import Dataset, batch_order, load_mnist, shard, shared_order
from dlcourse.divergence import check_finite
from dlcourse.launcher import device_for, report
from dlcourse.models import make_model
from dlcourse.parameter_server.config import PSConfig
from dlcourse.staleness import BoundedStaleness, SoftSync, StalenessGate

# message kinds (header[0]) and tags
HELLO, PUSH, LAST, PARAMS, BYE = 1, 2, 3, 4, 5
HEADER_TAG, PAYLOAD_TAG = 0, 1
HEADER_LEN = 5
NO_BATCH = -1  # header[4] of a PARAMS answer when no batch is handed out
_LOST = -1  # receiving thread -> server loop: the worker's connection failed


class ServerLost(RuntimeError):
    """A worker lost its parameter server (it died or stopped answering)."""


def flatten_shard(tensors: Sequence[torch.Tensor], index: Sequence[int]) -> torch.Tensor:
    """The tensors ``index`` of ``tensors`` as one flat float32 CPU vector: one message per shard."""
    return torch.cat([tensors[i].detach().reshape(-1).to("cpu", torch.float32) for i in index])


def unflatten_shard(flat: torch.Tensor, tensors: Sequence[torch.Tensor], index: Sequence[int]) -> None:
    """Copy the flat vector ``flat`` back into the tensors ``index`` of ``tensors`` (in place)."""
    expected = sum(tensors[i].numel() for i in index)
    if flat.numel() != expected:
        raise ValueError(f"flat must have {expected} elements (the shard's tensors), got {flat.numel()}")
    offset = 0
    with torch.no_grad():
        for i in index:
            n = tensors[i].numel()
            tensors[i].copy_(flat[offset : offset + n].view_as(tensors[i]))
            offset += n


# ---------------------------------------------------------------------------- worker


def load_data(config: PSConfig) -> tuple[Dataset, Dataset]:
    """The run's (train, test) data: ``config.data_source``, cut to its example counts."""
    split = load_mnist(config.data_source, seed=0)
    train = split.train if config.train_examples is None else split.train[: config.train_examples]
    test = split.test if config.test_examples is None else split.test[: config.test_examples]
    return train, test


def worker_schedule(data: Dataset, config: PSConfig, worker: int) -> list[torch.Tensor]:
    """The mini-batch indices worker ``worker`` uses, in order (into its own shard).

    :func:`dlcourse.data.batch_order`, epoch after epoch: the simulator's order too, so a
    simulated run and a single-process reference replay exactly the same batches.
    """
    check_int("worker", worker, low=0, high=config.num_workers - 1)
    out: list[torch.Tensor] = []
    epoch = 0
    while True:
        out += batch_order(len(data), config.batch_size, epoch=epoch, seed=config.seed, worker=worker)
        epoch += 1
        if config.steps is None and epoch >= config.epochs:
            return out
        if config.steps is not None and len(out) >= config.steps:
            return out[: config.steps]


def _worker(config: PSConfig, rank: int, layout: list[list[int]], steps: int) -> dict:
    k = config.num_servers
    n = rank - k
    # the group is gloo (CPU tensors) whatever the workers compute on
    device = (
        torch.device("cuda", n % torch.cuda.device_count()) if config.device == "cuda" else device_for(rank)
    )
    train, _ = load_data(config)
    shards = shard(train, config.num_workers)
    model = make_model(config.model, seed=config.seed).to(device)
    params = list(model.parameters())
    sizes = [sum(params[i].numel() for i in idx) for idx in layout]
    pulled = [(0, 0)] * k  # (version, clock) of the parameters last pulled from each server
    handed = [NO_BATCH]  # the shared order's item server 0 handed out with the last pull
    stats = {"worker": n, "pid": os.getpid(), "steps": 0, "compute_s": 0.0, "wait_s": 0.0, "examples": 0}
    stats["batches"] = []  # with shared batches: the items of the shared order this worker used
    stats["step_compute_s"] = []  # each step's compute seconds (what drives a simulator replay)
    # each step's (compute_start, compute_end, pushed, answered), seconds after t0 (module docstring)
    stats["step_times"] = []

    def lost(j: int, e: Exception) -> ServerLost:
        return ServerLost(f"worker {n} (rank {rank}) lost parameter server rank {j}: {e}")

    def wait_all(works) -> None:
        """Wait for every posted send/receive; a failure names the server it was with."""
        for j, w in works:
            try:
                w.wait()
            except RuntimeError as e:
                raise lost(j, e) from e

    def pull() -> None:
        headers = [torch.zeros(HEADER_LEN, dtype=torch.int64) for _ in range(k)]
        flats = [torch.empty(s) for s in sizes]
        works = []
        for j in range(k):  # post every receive first: servers answer in any order
            try:
                works.append((j, dist.irecv(headers[j], src=j, tag=HEADER_TAG)))
                works.append((j, dist.irecv(flats[j], src=j, tag=PAYLOAD_TAG)))
            except RuntimeError as e:
                raise lost(j, e) from e
        wait_all(works)
        for j in range(k):
            if int(headers[j][0]) != PARAMS:
                raise RuntimeError(f"worker {n}: expected PARAMS from server {j}, got {headers[j].tolist()}")
            pulled[j] = (int(headers[j][2]), int(headers[j][3]))
            if j == 0:
                handed[0] = int(headers[0][4])
            unflatten_shard(flats[j].to(device), params, layout[j])

    def send(kind: int, grads: Sequence[torch.Tensor] | None) -> None:
        works = []
        for j in range(k):
            header = torch.tensor([kind, n, pulled[j][0], pulled[j][1], handed[0]], dtype=torch.int64)
            try:
                works.append((j, dist.isend(header, dst=j, tag=HEADER_TAG)))
                if grads is not None:
                    works.append((j, dist.isend(flatten_shard(grads, layout[j]), dst=j, tag=PAYLOAD_TAG)))
            except RuntimeError as e:
                raise lost(j, e) from e
        wait_all(works)

    if config.effective_shared_batches:  # server 0 hands out the items of one order, one per pull
        order = shared_order(len(shards[0]), config.batch_size, config.num_workers, steps, seed=config.seed)
        schedule = None
    else:  # a fixed list of steps on its own shard
        schedule = [(n, idx) for idx in worker_schedule(shards[n], config, n)]
    send(HELLO, None)
    t = time.perf_counter()
    pull()  # answered once every worker has said HELLO: the run starts for all at once
    t0 = stats["t0"] = time.perf_counter()
    stats["start_wait_s"] = t0 - t  # the other processes' start-up, not in wait_s
    step = 0
    while True:
        if schedule is None:
            if handed[0] == NO_BATCH:  # the order is used up: say goodbye to every server
                send(BYE, None)
                break
            stats["batches"].append(handed[0])
            s, idx = order[handed[0]]
        elif step < len(schedule):
            s, idx = schedule[step]
        else:
            break
        data = shards[s]
        if config.kill_worker == n and step == config.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # a real crash: no goodbye, no cleanup
        started = time.perf_counter()
        if config.slow_worker == n and config.slow_delay > 0:
            time.sleep(config.slow_delay)  # the straggler
        X, y = data.X[idx].to(device), data.y[idx].to(device)
        loss = F.cross_entropy(model(X), y)
        # a blown-up loss or gradient is never pushed: the worker stops, saying where (Diverged)
        where = {"runtime": "async-ps", "where": "step", "index": step + 1, "worker": n}
        check_finite(loss, **where)
        grads = torch.autograd.grad(loss, params)
        check_finite(list(grads), what="gradient", **where)
        computed = time.perf_counter()
        stats["step_compute_s"].append(computed - started)
        stats["compute_s"] += stats["step_compute_s"][-1]
        last = schedule is not None and step == len(schedule) - 1
        send(LAST if last else PUSH, grads)
        pushed = time.perf_counter()
        if not last:
            pull()  # the server holds this back while the bound says wait
        answered = time.perf_counter() if not last else float("nan")
        stats["step_times"].append((started - t0, computed - t0, pushed - t0, answered - t0))
        stats["wait_s"] += (pushed if last else answered) - computed
        stats["steps"] += 1
        stats["examples"] += len(idx)
        step += 1
    return stats


# ---------------------------------------------------------------------------- server


def _receiver(worker: int, rank: int, size: int, inbox: queue.Queue, timeout: float) -> None:
    """One thread per worker: turn its messages into inbox items until LAST or failure."""
    waiting_since = time.monotonic()
    try:
        while True:
            header = torch.zeros(HEADER_LEN, dtype=torch.int64)
            waiting_since = time.monotonic()
            dist.recv(header, src=rank, tag=HEADER_TAG)
            kind = int(header[0])
            payload = None
            if kind in (PUSH, LAST):
                payload = torch.empty(size)
                dist.recv(payload, src=rank, tag=PAYLOAD_TAG)
            inbox.put((worker, kind, header, payload))
            if kind in (LAST, BYE):
                return
    except Exception as e:  # noqa: BLE001 - a dead or silent worker, reported to the server loop
        silent = time.monotonic() - waiting_since
        # gloo words a timeout in several ways; how long we waited says it plainly
        why = (
            f"silent for {silent:.1f} s, longer than the timeout ({timeout:g} s): "
            if silent >= timeout * 0.9
            else ""
        )
        inbox.put((worker, _LOST, None, f"{why}{type(e).__name__}: {e}"))


class _Server:
    """Server j: its shard, the rules, the gate, and the loop that answers workers."""

    def __init__(
        self, config: PSConfig, j: int, layout: list[list[int]], steps: int, progress: Callable | None
    ):
        self.config, self.j, self.progress = config, j, progress
        self.N, self.k = config.num_workers, config.num_servers
        params = list(make_model(config.model, seed=config.seed).parameters())
        self.shard = flatten_shard(params, layout[j])
        self.rule = SoftSync(
            self.N,
            config.softsync,
            config.lr,
            config.lr_policy,
            config.reduce,
            staleness_fn=config.staleness_fn,
            aggregate=config.aggregate,
        )
        self.gate = BoundedStaleness(self.N, config.gate_bound, config.gate)
        # the staleness gate (sigma_max): answers a pull only if no update in flight could exceed it
        self.sgate = StalenessGate(self.N, config.max_staleness) if config.max_staleness is not None else None
        # (worker, gradient, pulled version, pulled clock) of the soft-sync group's pushes not yet applied
        self.group: list[tuple[int, torch.Tensor, int, int]] = []
        self.waiting: set[int] = set()  # workers waiting for PARAMS (held back while the rule says so)
        # Waiting workers are answered least-answered first (then by index): a gate that lets only
        # some through cannot starve one worker of pulls, and k servers that see the same requests
        # answer them in the same order (an order of arrival could differ between servers, each
        # then holding back the worker the other answered)
        self.answered = [0] * self.N
        # Holding a worker until its own push is applied makes S = N exactly synchronous SGD.
        # With 1 < S < N and k > 1 shards it can deadlock: each server forms its groups in its
        # own arrival order, so server 1 may hold worker B while server 2 holds worker C, and
        # neither group can fill. There, as in Zhang et al.'s n-softsync, a worker pulls at once.
        self.reads_own_writes = config.synchronous or config.num_servers == 1
        self.done: set[int] = set()
        self.ready: set[int] = set()  # workers that said HELLO: the run starts when all have (or are lost)
        self.lost: dict[int, int] = {}
        self.received = [0] * self.N
        self.taus: list[int] = []
        self.update_versions: list[
            tuple[int, int]
        ] = []  # (server version, pulled version) of each sigma's update
        self.update_workers: list[int] = []  # the worker of each sigma's update
        self.clock_lags: list[int] = []  # the gate's clock lag of each applied update (SSP's own view)
        self.times: list[float] = []  # seconds since start at which each sigma's update was applied
        self.bytes = 0
        self.sends: dict[int, list] = {}  # worker -> in-flight isend works (and their tensors)
        self.snapshots: list[tuple[int, float, torch.Tensor]] = [(0, 0.0, self.shard.clone())]
        # server 0 hands out the shared order's items (shared batches): how many there are, the next
        self.batches = steps * self.N if config.effective_shared_batches and j == 0 else 0
        self.next_batch = 0
        self.handed: list[tuple[int, int]] = []  # (worker, item) of each batch handed out, in order
        self.expected_versions = max(1, steps * self.N // config.softsync)
        # a snapshot every this many versions gives about config.snapshots curve points (0: none)
        self.snapshot_every = max(1, self.expected_versions // config.snapshots) if config.snapshots else 0
        self.start = 0.0

    def _answer(self, worker: int) -> None:
        for w in self.sends.pop(worker, []):
            w[0].wait()  # the previous answer has arrived: the worker pushed since
        batch = NO_BATCH
        if self.next_batch < self.batches:
            batch, self.next_batch = self.next_batch, self.next_batch + 1
            self.handed.append((worker, batch))
        header = torch.tensor([PARAMS, worker, self.rule.version, self.gate.clock, batch], dtype=torch.int64)
        payload = self.shard.clone()  # the shard changes while this is in flight
        rank = self.k + worker
        self.sends[worker] = [
            (dist.isend(header, dst=rank, tag=HEADER_TAG), header),
            (dist.isend(payload, dst=rank, tag=PAYLOAD_TAG), payload),
        ]
        self.bytes += header.numel() * 8 + payload.numel() * 4

    def _apply_group(self) -> None:
        # sum in worker order, not arrival order: runs are reproducible and shards agree bitwise
        taus = None
        # staleness in versions for every rule (dlcourse.staleness); the gate's clock lag apart
        clock = self.gate.clock
        for worker, grad, pulled, pulled_clock in sorted(self.group, key=lambda g: g[0]):
            self.update_versions.append((self.rule.version, pulled))
            self.update_workers.append(worker)
            taus = self.rule.receive([self.shard], [grad], pulled)
            self.clock_lags.append(clock - pulled_clock)
        if taus is None:  # fewer than S, and nobody else can push: apply them rather than wait forever
            taus = self.rule.flush([self.shard])
        workers = sorted(g[0] for g in self.group)
        for w in workers:  # the gate counts applied steps: SSP's guarantee is about what a pull sees
            self.gate.finish(w)
            if self.sgate is not None:
                self.sgate.finish(w)  # no longer in flight
        self.group.clear()
        # parameters that stopped being finite stop the run (the server is a required rank)
        check_finite(
            self.shard,
            runtime="async-ps",
            where="update",
            index=self.rule.version,
            worker=workers[-1] if len(workers) == 1 else None,
            what="parameters",
        )
        self.taus += taus
        self.times += [time.perf_counter() - self.start] * len(taus)
        v = self.rule.version
        if self.snapshot_every and v % self.snapshot_every == 0:
            self.snapshots.append((v, time.perf_counter() - self.start, self.shard.clone()))
        if self.progress is not None:
            self.progress(v, self.expected_versions)
        if self.config.kill_server == self.j and v == self.config.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def _fresh_enough(self, worker: int) -> bool:
        """The staleness gate (if any) lets ``worker`` pull the current version."""
        return self.sgate is None or self.sgate.may_start(worker, self.rule.version)

    def _lose(self, worker: int, reason: str) -> None:
        if self.config.synchronous:
            # a worker we hold back is silent because of us: blame those still computing
            late = [worker]
            if worker in self.waiting:
                late = sorted(set(range(self.N)) - self.done - self.waiting - set(self.lost)) or late
            if late != [worker]:  # say why the late ones are blamed, not only what the waiting one saw
                reason = f"no push from it while worker {worker} waited for this step ({reason})"
            raise RuntimeError(
                f"synchronous parameter server {self.j}: lost worker {', '.join(map(str, late))} "
                f"(rank {', '.join(str(self.k + w) for w in late)}), so step {self.rule.version + 1} can "
                f"never complete (the last executor never arrives): {reason}"
            )
        self.lost[worker] = self.received[worker]
        self.waiting.discard(worker)
        self.sends.pop(worker, None)  # never to be answered
        self.gate.retire(worker)  # no longer holds the others back
        if self.sgate is not None:
            self.sgate.retire(worker)

    def run(self) -> dict:
        inbox: queue.Queue = queue.Queue()
        size = self.shard.numel()
        for n in range(self.N):
            threading.Thread(
                target=_receiver, args=(n, self.k + n, size, inbox, self.config.timeout), daemon=True
            ).start()
        self.start = last_message = None  # the clock starts at the first message
        while len(self.done) + len(self.lost) < self.N:
            try:
                # the receiving threads time out first (naming the worker); this is a backstop
                worker, kind, header, payload = inbox.get(timeout=self.config.timeout + 5.0)
            except queue.Empty:
                silent = sorted(set(range(self.N)) - self.done - set(self.lost))
                raise TimeoutError(
                    f"parameter server {self.j} heard nothing for {self.config.timeout + 5.0} s; "
                    f"workers {silent} neither finished nor failed"
                ) from None
            last_message = time.perf_counter()
            self.start = self.start or last_message
            if kind == _LOST:
                if worker not in self.done:
                    self._lose(worker, payload)
            elif kind == HELLO:
                self.bytes += HEADER_LEN * 8
                self.waiting.add(worker)
                self.ready.add(worker)
            elif kind == BYE:  # no batch was left for it: it leaves, holding nobody back
                self.bytes += HEADER_LEN * 8
                self.done.add(worker)
                self.waiting.discard(worker)
                self.gate.retire(worker)
                if self.sgate is not None:
                    self.sgate.retire(worker)
            else:  # PUSH or LAST
                self.bytes += HEADER_LEN * 8 + payload.numel() * 4
                self.received[worker] += 1
                self.group.append((worker, payload, int(header[2]), int(header[3])))
                (self.waiting.add if kind == PUSH else self.done.add)(worker)
                if len(self.group) == self.config.softsync:
                    self._apply_group()
            # workers who could still push are all waiting on this group: it will not grow
            active = set(range(self.N)) - self.done - set(self.lost)
            if self.group and active <= {g[0] for g in self.group}:
                self._apply_group()
            held = {g[0] for g in self.group} if self.reads_own_writes else set()
            if len(self.ready | set(self.lost)) < self.N:
                continue  # every worker starts from version 0 at once, as in the simulator
            for w in sorted(self.waiting, key=lambda w: (self.answered[w], w)):
                # a worker reads its own writes (as in dlcourse.sim): it waits while its push is
                # in an unfinished soft-sync group, and while the staleness bound says so
                if w not in held and self.gate.may_start(w) and self._fresh_enough(w):
                    self.waiting.discard(w)
                    self.answered[w] += 1
                    self._answer(w)
                    if self.sgate is not None:
                        self.sgate.start(w, self.rule.version)
        for works in self.sends.values():  # every live worker has its last answer
            for w in works:
                w[0].wait()
        return {
            "server": self.j,
            "pid": os.getpid(),
            "shard": self.shard,
            "taus": self.taus,
            "update_versions": self.update_versions,
            "update_workers": self.update_workers,
            "clock_lags": self.clock_lags,
            "received": self.received,
            "lost": self.lost,
            "bytes": self.bytes,
            "versions": self.rule.version,
            "times": self.times,
            "wall_s": (last_message - self.start) if self.start else 0.0,
            "snapshots": self.snapshots,
            "handed": self.handed,
        }


# ---------------------------------------------------------------------------- one rank


def rank_main(rank: int, world_size: int, config: PSConfig, layout: list[list[int]], steps: int) -> dict:
    """What every rank runs: a server loop (ranks < k) or a worker loop.

    Server 0 reports its progress ``(version, expected_versions)`` with
    :func:`dlcourse.launcher.report` (a no-op unless the caller listens).
    """
    check_int("rank", rank, low=0, high=world_size - 1)
    if rank < config.num_servers:
        progress = _report_progress if rank == 0 else None
        return {"role": "server", **_Server(config, rank, layout, steps, progress).run()}
    return {"role": "worker", **_worker(config, rank, layout, steps)}


def _report_progress(version: int, total: int) -> None:
    report((version, total))
