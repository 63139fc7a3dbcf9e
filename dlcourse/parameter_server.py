"""A real parameter server: asynchronous SGD on ``torch.distributed`` point-to-point messages.

The lecture's centralized asynchronous SGD (Dean et al., "Large Scale Distributed Deep
Networks", NIPS 2012; Li et al., "Scaling Distributed Machine Learning with the Parameter
Server", OSDI 2014), run for real: server processes hold the parameters, worker processes
pull them, compute a gradient on their own shard of the data and push it back. The server
applies the lecture's rules from :mod:`dlcourse.staleness` -- the same functions the
simulator calls:

- **async** (S = 1): every push is applied at once; its staleness ``tau`` is how many
  updates the server applied since the worker pulled;
- **soft sync** S: the server averages S pushes per step (:class:`~dlcourse.staleness.SoftSync`);
  a worker whose push waits in an unfinished group waits with it (it reads its own writes,
  as in :mod:`dlcourse.sim`), and a group that can no longer fill up is applied as it is;
- **synchronous** (S = N): every worker pushes once per step and waits for the new
  parameters -- parameter averaging every step;
- **bounded staleness** b: a worker more than b steps ahead of the slowest waits for its
  parameters (:class:`~dlcourse.staleness.BoundedStaleness`); staleness is then counted in
  that clock and never exceeds b;
- the learning rate of each update comes from ``lr_policy``: ``"constant"``,
  ``"staleness"`` (lambda / tau) or a student's function ``f(lr, tau)``, which travels to the
  server process with cloudpickle and runs there.

Quick start::

    from dlcourse.parameter_server import PSConfig, run_parameter_server
    result = run_parameter_server(PSConfig(num_workers=4, softsync=1, model="mlp", steps=50))
    result.test_accuracy, result.staleness_summary()

or ``dlcourse train --strategy async-ps --workers 4 --servers 2 --softsync 2 --json run.json``.

Ranks and shards
----------------
Ranks ``0 .. k-1`` are servers, ranks ``k .. k+N-1`` are workers (worker ``n`` is rank
``k + n``). The model's parameter tensors are dealt out to the k servers by size (largest
first, to the least-loaded server); server j owns its tensors as one flat float32 vector,
so one message carries a whole shard. Every worker pushes to and pulls from every server.

Wire protocol
-------------
Every message starts with a **header**, an int64 tensor of 4 entries
``[kind, worker, version, clock]``, optionally followed by a **payload**, the float32 shard
(a gradient or parameters). Headers and payloads use different tags, so a header can never
be mistaken for a payload::

    kind   from    payload   meaning
    HELLO  worker  -         "I am ready": answered by PARAMS
    PUSH   worker  gradient  computed from the PARAMS of (version, clock): answered by PARAMS
    LAST   worker  gradient  as PUSH, the worker's last one: not answered
    PARAMS server  shard     the parameters at (version, clock)

A server answers a worker's HELLO or PUSH only when the worker's push has been applied and
the bounded-staleness gate lets it start its next step: that is how fast workers are held
back. Messages are CPU
tensors on a gloo group even when workers compute on GPUs (NCCL has no any-source receive
and no tags).

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
import shutil
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import cloudpickle
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.data import SOURCES, Dataset, load_mnist, shard
from dlcourse.launcher import WorkerError, _die_with_parent, _stop, device_for, launch, under_torchrun
from dlcourse.models import MODELS, make_model
from dlcourse.staleness import BoundedStaleness, LrPolicy, SoftSync, resolve_lr_policy, staleness_summary
from dlcourse.train import batches, evaluate

# message kinds (header[0]) and tags
HELLO, PUSH, LAST, PARAMS = 1, 2, 3, 4
HEADER_TAG, PAYLOAD_TAG = 0, 1
HEADER_LEN = 4
DEVICES = ("cpu", "cuda")
_LOST = -1  # receiving thread -> server loop: the worker's connection failed


class ServerLost(RuntimeError):
    """A worker lost its parameter server (it died or stopped answering)."""


@dataclass
class PSConfig:
    """One parameter-server run: who runs, which rule, how long, and what to break."""

    num_workers: int = 2  # N worker processes, each on its own shard of the training data
    num_servers: int = 1  # k server processes, each owning about 1/k of the parameters
    softsync: int = 1  # S: pushes the server averages per update (1 = async, N = synchronous)
    staleness_bound: int | None = None  # b: a worker may be at most b steps ahead (None = no bound)
    lr: float = 0.1  # lambda, the server's learning rate
    lr_policy: str | LrPolicy = "constant"  # "constant", "staleness" or f(lr, tau) -> lambda_n
    model: str = "mlp"  # "mlp" (fast) or "cnn" (the lecture's network)
    batch_size: int = 50  # examples per worker step
    epochs: int = 1  # passes of each worker over its shard (ignored when steps is set)
    steps: int | None = None  # steps per worker; None: epochs over its shard
    train_examples: int | None = None  # use only the first this many training examples (None: all)
    test_examples: int | None = None  # evaluate on the first this many test examples (None: all)
    data_source: str = "subset"  # "subset" (5,000 shipped digits), "full" or "auto"
    seed: int = 0  # model init and every worker's shuffle
    device: str = "cpu"  # where workers compute: "cpu" or "cuda" (server traffic stays CPU tensors on gloo)
    snapshots: int = 10  # points of the accuracy-over-time curve (0: none)
    slow_worker: int | None = None  # worker index slowed down (a straggler), None: none
    slow_delay: float = 0.0  # seconds the slow worker sleeps in each step
    kill_worker: int | None = None  # worker index that SIGKILLs itself mid-run (fault tolerance demo)
    kill_server: int | None = None  # server index that SIGKILLs itself mid-run
    kill_after: int = 5  # ...after this many of its own steps (worker) or applied updates (server)
    timeout: float = 30.0  # seconds of silence from a peer before it is an error
    run_timeout: float | None = None  # seconds for the whole run (None: no limit)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> PSConfig:
        """Check every field; ``ValueError`` names the field, its value and what is allowed."""
        check_int("num_workers", self.num_workers, low=1)
        check_int("num_servers", self.num_servers, low=1)
        check_choice("model", self.model, MODELS)
        tensors = len(parameter_shapes(self.model))
        if self.num_servers > tensors:
            raise ValueError(
                f"num_servers must be <= {tensors} (the {self.model} model has {tensors} parameter tensors, "
                f"and servers own whole tensors), got {self.num_servers}"
            )
        check_int("softsync", self.softsync, low=1, high=self.num_workers)
        if self.staleness_bound is not None:
            check_int("staleness_bound", self.staleness_bound, low=0)
        check_float("lr", self.lr, low=0.0, low_open=True)
        resolve_lr_policy(self.lr_policy)
        check_int("batch_size", self.batch_size, low=1)
        check_int("epochs", self.epochs, low=1)
        if self.steps is not None:
            check_int("steps", self.steps, low=1)
        for name in ("train_examples", "test_examples"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low=1)
        if self.train_examples is not None and self.train_examples < self.num_workers:
            raise ValueError(
                f"train_examples must be >= num_workers ({self.num_workers}), got {self.train_examples}"
            )
        check_choice("data_source", self.data_source, SOURCES)
        check_int("seed", self.seed, low=0)
        check_choice("device", self.device, DEVICES)
        check_int("snapshots", self.snapshots, low=0)
        for name, high in (
            ("slow_worker", self.num_workers - 1),
            ("kill_worker", self.num_workers - 1),
            ("kill_server", self.num_servers - 1),
        ):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low=0, high=high)
        check_float("slow_delay", self.slow_delay, low=0.0)
        check_int("kill_after", self.kill_after, low=0)
        check_float("timeout", self.timeout, low=0.0, low_open=True)
        if self.run_timeout is not None:
            check_float("run_timeout", self.run_timeout, low=0.0, low_open=True)
        return self

    @property
    def synchronous(self) -> bool:
        """S = N: every step waits for all N workers."""
        return self.softsync == self.num_workers

    @property
    def gate_bound(self) -> int | None:
        """The bound the server enforces: 0 when synchronous (each worker pushes once per step)."""
        return 0 if self.synchronous else self.staleness_bound

    @property
    def mode(self) -> str:
        if self.synchronous:
            return "sync"
        if self.staleness_bound is not None:
            return f"bounded(b={self.staleness_bound}, S={self.softsync})"
        return "async" if self.softsync == 1 else f"softsync(S={self.softsync})"

    def __repr__(self) -> str:
        policy = (
            self.lr_policy if isinstance(self.lr_policy, str) else getattr(self.lr_policy, "__name__", "f")
        )
        return (
            f"PSConfig(mode={self.mode}, num_workers={self.num_workers}, num_servers={self.num_servers}, "
            f"lr={self.lr}, lr_policy={policy}, model={self.model!r}, batch_size={self.batch_size}, "
            f"steps={self.steps}, epochs={self.epochs})"
        )


@dataclass
class PSResult:
    """What a run did: the rule's footprint (staleness, updates) and the model it made."""

    config: PSConfig  # the run's configuration
    staleness: list[int]  # tau of every update applied by server 0, in order
    updates_per_worker: list[int]  # pushes server 0 received from each worker
    lost_workers: dict[int, int]  # worker index -> updates it contributed before it was lost
    bytes_sent: int  # bytes of every message (headers + payloads), all servers together
    versions: int  # parameter versions server 0 went through (applied update steps)
    update_times: list[float]  # seconds after the start at which each of those updates was applied
    wall_s: float  # seconds from the first to the last message of server 0
    parameters: list[torch.Tensor]  # final parameters, in model.parameters() order
    test: dict[str, float]  # loss, accuracy, macro_f1 of the final model
    accuracy_over_time: list[tuple[int, float, float]]  # (version, seconds, test accuracy) snapshots
    examples: int  # training examples processed by all workers
    shard_sizes: list[int]  # parameters owned by each server
    server_pids: list[int] = field(default_factory=list)  # process ids of the servers
    worker_stats: list[dict | None] = field(default_factory=list)  # steps, compute_s, wait_s; None if lost
    shard_staleness: list[list[int]] = field(default_factory=list)  # tau per applied update, per server

    @property
    def updates(self) -> int:
        return sum(self.updates_per_worker)

    @property
    def test_accuracy(self) -> float:
        return self.test["accuracy"]

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.wall_s if self.wall_s > 0 else 0.0

    def staleness_summary(self) -> dict:
        return staleness_summary(self.staleness)

    def metrics(self) -> dict:
        """The CLI's JSON metrics."""
        return {
            "strategy": "async-ps",
            "mode": self.config.mode,
            "model": self.config.model,
            "workers": self.config.num_workers,
            "servers": self.config.num_servers,
            "softsync": self.config.softsync,
            "staleness_bound": self.config.staleness_bound,
            "lr": self.config.lr,
            "test_accuracy": self.test["accuracy"],
            "test_loss": self.test["loss"],
            "test_macro_f1": self.test["macro_f1"],
            "examples_per_s": self.examples / self.wall_s if self.wall_s > 0 else 0.0,
            "wall_s": self.wall_s,
            "updates": self.updates,
            "updates_per_worker": self.updates_per_worker,
            "versions": self.versions,
            "bytes_sent": self.bytes_sent,
            "staleness": self.staleness_summary(),
            "lost_workers": {str(k): v for k, v in self.lost_workers.items()},
            "accuracy_over_time": [list(p) for p in self.accuracy_over_time],
        }

    def __repr__(self) -> str:
        s = self.staleness_summary()
        lost = f", lost_workers={self.lost_workers}" if self.lost_workers else ""
        return (
            f"PSResult(mode={self.config.mode}, updates={self.updates}, versions={self.versions}, "
            f"test_accuracy={self.test['accuracy']:.4f}, staleness mean={s['mean']:.2f} max={s['max']}, "
            f"bytes_sent={self.bytes_sent:,}, wall_s={self.wall_s:.2f}{lost})"
        )


# ---------------------------------------------------------------------------- sharding


def parameter_shapes(model: str) -> list[torch.Size]:
    """Shapes of the model's parameter tensors, in ``model.parameters()`` order."""
    return [p.shape for p in make_model(model).parameters()]


def assign_shards(sizes: Sequence[int], num_servers: int) -> list[list[int]]:
    """Deal tensors (by index) to servers: largest first, each to the least-loaded server.

    Deterministic; with ``num_servers <= len(sizes)`` every server gets at least one tensor
    (an empty server is the least loaded); indices within a shard ascend.
    """
    check_int("num_servers", num_servers, low=1, high=max(1, len(sizes)))
    for size in sizes:
        check_int("sizes", size, low=1)
    shards: list[list[int]] = [[] for _ in range(num_servers)]
    load = [0] * num_servers
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        j = min(range(num_servers), key=lambda j: (load[j], j))
        shards[j].append(i)
        load[j] += sizes[i]
    return [sorted(s) for s in shards]


def _flatten(tensors: Sequence[torch.Tensor], index: Sequence[int]) -> torch.Tensor:
    return torch.cat([tensors[i].detach().reshape(-1).to("cpu", torch.float32) for i in index])


def _unflatten_into(flat: torch.Tensor, tensors: Sequence[torch.Tensor], index: Sequence[int]) -> None:
    offset = 0
    with torch.no_grad():
        for i in index:
            n = tensors[i].numel()
            tensors[i].copy_(flat[offset : offset + n].view_as(tensors[i]))
            offset += n


# ---------------------------------------------------------------------------- worker


def _load_data(config: PSConfig) -> tuple[Dataset, Dataset]:
    split = load_mnist(config.data_source, seed=0)
    train = split.train if config.train_examples is None else split.train[: config.train_examples]
    test = split.test if config.test_examples is None else split.test[: config.test_examples]
    return train, test


def worker_schedule(data: Dataset, config: PSConfig, worker: int) -> list[torch.Tensor]:
    """The mini-batch indices worker ``worker`` uses, in order (into its own shard).

    Each epoch is a permutation of the shard seeded by ``(seed, worker, epoch)``, so a
    single-process reference can replay exactly the same batches.
    """
    check_int("worker", worker, low=0, high=config.num_workers - 1)
    n = len(data)
    out: list[torch.Tensor] = []
    epoch = 0
    while True:
        g = torch.Generator().manual_seed(config.seed * 1_000_003 + worker * 1_009 + epoch)
        out += list(batches(n, config.batch_size, g))
        epoch += 1
        if config.steps is None and epoch >= config.epochs:
            return out
        if config.steps is not None and len(out) >= config.steps:
            return out[: config.steps]


def _worker(config: PSConfig, rank: int, layout: list[list[int]]) -> dict:
    k = config.num_servers
    n = rank - k
    # the group is gloo (CPU tensors) whatever the workers compute on
    device = (
        torch.device("cuda", n % torch.cuda.device_count()) if config.device == "cuda" else device_for(rank)
    )
    train, _ = _load_data(config)
    data = shard(train, config.num_workers)[n]
    model = make_model(config.model, seed=config.seed).to(device)
    params = list(model.parameters())
    sizes = [sum(params[i].numel() for i in idx) for idx in layout]
    pulled = [(0, 0)] * k  # (version, clock) of the parameters last pulled from each server
    stats = {"worker": n, "pid": os.getpid(), "steps": 0, "compute_s": 0.0, "wait_s": 0.0, "examples": 0}

    def lost(j: int, e: Exception) -> ServerLost:
        return ServerLost(f"worker {n} (rank {rank}) lost parameter server rank {j}: {e}")

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
        for j, w in works:
            try:
                w.wait()
            except RuntimeError as e:
                raise lost(j, e) from e
        for j in range(k):
            if int(headers[j][0]) != PARAMS:
                raise RuntimeError(f"worker {n}: expected PARAMS from server {j}, got {headers[j].tolist()}")
            pulled[j] = (int(headers[j][2]), int(headers[j][3]))
            _unflatten_into(flats[j].to(device), params, layout[j])

    def send(kind: int, grads: Sequence[torch.Tensor] | None) -> None:
        works = []
        for j in range(k):
            header = torch.tensor([kind, n, pulled[j][0], pulled[j][1]], dtype=torch.int64)
            try:
                works.append((j, dist.isend(header, dst=j, tag=HEADER_TAG)))
                if grads is not None:
                    works.append((j, dist.isend(_flatten(grads, layout[j]), dst=j, tag=PAYLOAD_TAG)))
            except RuntimeError as e:
                raise lost(j, e) from e
        for j, w in works:
            try:
                w.wait()
            except RuntimeError as e:
                raise lost(j, e) from e

    schedule = worker_schedule(data, config, n)
    send(HELLO, None)
    t = time.perf_counter()
    pull()
    stats["wait_s"] += time.perf_counter() - t
    for step, idx in enumerate(schedule):
        if config.kill_worker == n and step == config.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # a real crash: no goodbye, no cleanup
        t = time.perf_counter()
        if config.slow_worker == n and config.slow_delay > 0:
            time.sleep(config.slow_delay)  # the straggler
        X, y = data.X[idx].to(device), data.y[idx].to(device)
        loss = F.cross_entropy(model(X), y)
        grads = torch.autograd.grad(loss, params)
        stats["compute_s"] += time.perf_counter() - t
        last = step == len(schedule) - 1
        t = time.perf_counter()
        send(LAST if last else PUSH, grads)
        if not last:
            pull()  # the server holds this back while the bound says wait
        stats["wait_s"] += time.perf_counter() - t
        stats["steps"] += 1
        stats["examples"] += len(idx)
    return stats


# ---------------------------------------------------------------------------- server


def _receiver(worker: int, rank: int, size: int, inbox: queue.Queue) -> None:
    """One thread per worker: turn its messages into inbox items until LAST or failure."""
    try:
        while True:
            header = torch.zeros(HEADER_LEN, dtype=torch.int64)
            dist.recv(header, src=rank, tag=HEADER_TAG)
            kind = int(header[0])
            payload = None
            if kind in (PUSH, LAST):
                payload = torch.empty(size)
                dist.recv(payload, src=rank, tag=PAYLOAD_TAG)
            inbox.put((worker, kind, header, payload))
            if kind == LAST:
                return
    except Exception as e:  # noqa: BLE001 - a dead or silent worker, reported to the server loop
        inbox.put((worker, _LOST, None, f"{type(e).__name__}: {e}"))


class _Server:
    """Server j: its shard, the rules, the gate, and the loop that answers workers."""

    def __init__(
        self, config: PSConfig, j: int, layout: list[list[int]], steps: int, progress: Callable | None
    ):
        self.config, self.j, self.progress = config, j, progress
        self.N, self.k = config.num_workers, config.num_servers
        params = list(make_model(config.model, seed=config.seed).parameters())
        self.shard = _flatten(params, layout[j])
        self.rule = SoftSync(self.N, config.softsync, config.lr, config.lr_policy, reduce="mean")
        self.gate = BoundedStaleness(self.N, config.gate_bound)
        self.clocked = config.gate_bound is not None  # staleness in the gate's clock, as staleness.py says
        # (worker, gradient, pulled, now) of the pushes in the soft-sync group not yet applied
        self.group: list[tuple[int, torch.Tensor, int, int]] = []
        self.waiting: set[int] = set()  # workers waiting for PARAMS (held back while the rule says so)
        self.done: set[int] = set()
        self.lost: dict[int, int] = {}
        self.received = [0] * self.N
        self.taus: list[int] = []
        self.times: list[float] = []  # seconds since start at which each tau's update was applied
        self.bytes = 0
        self.sends: dict[int, list] = {}  # worker -> in-flight isend works (and their tensors)
        self.snapshots: list[tuple[int, float, torch.Tensor]] = [(0, 0.0, self.shard.clone())]
        self.expected_versions = max(1, steps * self.N // config.softsync)
        self.start = 0.0

    def _answer(self, worker: int) -> None:
        for w in self.sends.pop(worker, []):
            w[0].wait()  # the previous answer has arrived: the worker pushed since
        header = torch.tensor([PARAMS, worker, self.rule.version, self.gate.clock], dtype=torch.int64)
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
        for _worker, grad, pulled, now in sorted(self.group, key=lambda g: g[0]):
            taus = self.rule.receive([self.shard], [grad], pulled, clock=now if self.clocked else None)
        if taus is None:  # fewer than S, and nobody else can push: apply them rather than wait forever
            taus = self.rule.flush([self.shard])
        self.group.clear()
        self.taus += taus
        self.times += [time.perf_counter() - self.start] * len(taus)
        v = self.rule.version
        every = max(1, self.expected_versions // self.config.snapshots) if self.config.snapshots else 0
        if every and v % every == 0:
            self.snapshots.append((v, time.perf_counter() - self.start, self.shard.clone()))
        if self.progress is not None:
            self.progress(v, self.expected_versions)
        if self.config.kill_server == self.j and v == self.config.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def _lose(self, worker: int, reason: str) -> None:
        if self.config.synchronous:
            # a worker we hold back is silent because of us: blame those still computing
            late = [worker]
            if worker in self.waiting:
                late = sorted(set(range(self.N)) - self.done - self.waiting - set(self.lost)) or late
            raise RuntimeError(
                f"synchronous parameter server {self.j}: lost worker {', '.join(map(str, late))} "
                f"(rank {', '.join(str(self.k + w) for w in late)}), so step {self.rule.version + 1} can "
                f"never complete (the last executor never arrives): {reason}"
            )
        self.lost[worker] = self.received[worker]
        self.waiting.discard(worker)
        self.sends.pop(worker, None)  # never to be answered
        self.gate.clocks[worker] = 2**62  # no longer holds the others back

    def run(self) -> dict:
        inbox: queue.Queue = queue.Queue()
        size = self.shard.numel()
        for n in range(self.N):
            threading.Thread(target=_receiver, args=(n, self.k + n, size, inbox), daemon=True).start()
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
            else:  # PUSH or LAST
                self.bytes += HEADER_LEN * 8 + payload.numel() * 4
                self.received[worker] += 1
                pulled = int(header[3] if self.clocked else header[2])
                now = self.gate.clock if self.clocked else self.rule.version
                self.group.append((worker, payload, pulled, now))
                self.gate.finish(worker)
                (self.waiting.add if kind == PUSH else self.done.add)(worker)
                if len(self.group) == self.config.softsync:
                    self._apply_group()
            # workers who could still push are all waiting on this group: it will not grow
            active = set(range(self.N)) - self.done - set(self.lost)
            if self.group and active <= {g[0] for g in self.group}:
                self._apply_group()
            in_group = {g[0] for g in self.group}
            for w in sorted(self.waiting):
                # a worker reads its own writes (as in dlcourse.sim): it waits while its push is
                # in an unfinished soft-sync group, and while the staleness bound says so
                if w not in in_group and self.gate.may_start(w):
                    self.waiting.discard(w)
                    self._answer(w)
        for works in self.sends.values():  # every live worker has its last answer
            for w in works:
                w[0].wait()
        return {
            "server": self.j,
            "pid": os.getpid(),
            "shard": self.shard,
            "taus": self.taus,
            "received": self.received,
            "lost": self.lost,
            "bytes": self.bytes,
            "versions": self.rule.version,
            "times": self.times,
            "wall_s": (last_message - self.start) if self.start else 0.0,
            "snapshots": self.snapshots,
        }


# ---------------------------------------------------------------------------- one rank


def _rank_main(rank: int, world_size: int, config: PSConfig, layout, steps: int, progress=None) -> dict:
    """What every rank runs: a server loop (ranks < k) or a worker loop."""
    if rank < config.num_servers:
        return {"role": "server", **_Server(config, rank, layout, steps, progress).run()}
    return {"role": "worker", **_worker(config, rank, layout)}


def _trampoline(rank, world_size, payload, init_method, timeout_s, threads, results):
    """Entry of every spawned process: like the launcher's, plus progress messages."""
    _die_with_parent()
    torch.set_num_threads(threads)
    try:
        config, layout, steps = cloudpickle.loads(payload)
        dist.init_process_group(
            "gloo",
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )

        def progress(version: int, total: int) -> None:
            results.put((rank, "progress", version, total))

        value = _rank_main(rank, world_size, config, layout, steps, progress if rank == 0 else None)
        results.put((rank, "ok", cloudpickle.dumps(value)))
    except BaseException as e:  # noqa: BLE001 - every failure must reach the parent
        results.put((rank, "error", f"{type(e).__name__}: {e}", traceback.format_exc()))
        return  # no destroy_process_group: it can block on a dead peer
    dist.destroy_process_group()


def _how(p) -> str:
    code = p.exitcode
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def _spawn(
    config: PSConfig, layout, steps: int, progress: Callable[[int, int], None] | None
) -> list[dict | None]:
    """Start k + N processes; return each rank's result, ``None`` for a lost worker.

    Unlike :func:`dlcourse.launcher.launch`, a worker that dies in an asynchronous mode is
    not the end of the run: the servers carry on without it.
    """
    k, N = config.num_servers, config.num_workers
    world = k + N
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    store_dir = tempfile.mkdtemp(prefix="dlcourse-ps-")
    init_method = "file://" + os.path.join(store_dir, "store")
    payload = cloudpickle.dumps((config, layout, steps))
    threads = 1 if (os.cpu_count() or 1) <= world else max(1, (os.cpu_count() or 1) // world)
    processes = []
    values: dict[int, Any] = {}
    failed: dict[int, str] = {}
    deadline = None if config.run_timeout is None else time.monotonic() + config.run_timeout
    try:
        for rank in range(world):
            p = ctx.Process(
                target=_trampoline,
                args=(rank, world, payload, init_method, config.timeout, threads, results),
                name=f"dlcourse-ps-rank{rank}",
                daemon=True,
            )
            p.start()
            processes.append(p)
        exited_at: dict[int, float] = {}
        server_failed_at = worker_failed_at = None
        silent: set[int] = set()  # ranks that exited without a word (killed)
        servers_done_at = None
        while len(values) + len(failed) < world:
            try:
                message = results.get(timeout=0.05)
            except queue.Empty:
                message = None
            now = time.monotonic()
            if message is not None:
                rank, status = message[0], message[1]
                if status == "progress":
                    if progress is not None:
                        progress(message[2], message[3])
                elif status == "ok":
                    values[rank] = cloudpickle.loads(message[2])
                else:
                    failed[rank] = message[2] + ("" if rank >= k else "\n" + message[3])
            for rank, p in enumerate(processes):
                if rank in values or rank in failed or p.exitcode is None:
                    continue
                # give its queue message a moment to arrive, then report how it died
                if now - exited_at.setdefault(rank, now) > 1.0:
                    failed[rank] = f"process {_how(p)}"
                    silent.add(rank)
            bad_servers = sorted(r for r in failed if r < k)
            if bad_servers:
                # let the workers notice by themselves (that is the point), within the timeout
                server_failed_at = server_failed_at or now
                workers_over = all(r in failed or r in values for r in range(k, world))
                if workers_over or now - server_failed_at > config.timeout + 5:
                    r = bad_servers[0]
                    said = sorted((w, failed[w]) for w in failed if w >= k)
                    lines = "".join(f"\n  worker {w - k} (rank {w}): {m}" for w, m in said)
                    raise WorkerError(
                        r, f"parameter server {r} failed: {failed[r]}; the workers stopped:{lines}"
                    )
            bad_workers = sorted(r for r in failed if r >= k)
            if bad_workers and config.synchronous:
                # wait a moment for the servers' words; then blame a worker that died, not one
                # that merely lost its server afterwards
                worker_failed_at = worker_failed_at or now
                if now - worker_failed_at > 2.0 or any(s in failed for s in range(k)):
                    killed = [r for r in range(k, world) if (processes[r].exitcode or 0) < 0]
                    said_server = [s for s in range(k) if s in failed and s not in silent]
                    if not killed and said_server:  # nobody died: the server names who stalled
                        s = said_server[0]
                        raise WorkerError(s, failed[s].splitlines()[0], failed[s])
                    r = (killed or [r for r in bad_workers if r in silent] or bad_workers)[0]
                    said = f"process {_how(processes[r])}" if r in killed else failed[r]
                    why = next((failed[s].splitlines()[0] for s in range(k) if s in failed), "")
                    raise WorkerError(
                        r,
                        f"worker {r - k} {said}; a synchronous step needs every worker "
                        f"(the last executor never arrives). {why}".strip(),
                    )
            if all(r in values for r in range(k)):
                # the servers are done: a worker still running lost them (e.g. it stalled past
                # the timeout); give the others a moment to return their statistics
                servers_done_at = servers_done_at or now
                if now - servers_done_at > 5.0:
                    break
            if deadline is not None and now > deadline:
                missing = sorted(set(range(world)) - set(values) - set(failed))
                raise TimeoutError(
                    f"run_timeout exceeded: ranks {missing} had not finished; all were stopped"
                )
        return [values.get(r) for r in range(world)]
    finally:
        _stop(processes)
        results.close()
        results.join_thread()
        shutil.rmtree(store_dir, ignore_errors=True)


# ---------------------------------------------------------------------------- public API


def run_parameter_server(
    config: PSConfig, progress: Callable[[int, int], None] | bool | None = None
) -> PSResult:
    """Run k servers and N workers as real processes; return what happened.

    ``progress``: ``f(version, expected_versions)`` called in this process as server 0
    applies updates (for a notebook's progress bar), or ``True`` for a tqdm bar.
    Raises :class:`~dlcourse.launcher.WorkerError` when a server fails, or a worker fails
    in synchronous mode; in asynchronous modes a lost worker is reported in the result.
    """
    if not isinstance(config, PSConfig):
        raise ValueError(f"config must be a PSConfig, got {config!r}")
    config.validate()
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' needs a CUDA GPU (torch.cuda.is_available() is False); use 'cpu'")
    if progress is not None and not isinstance(progress, bool) and not callable(progress):
        raise ValueError(f"progress must be a function, True/False or None, got {progress!r}")
    shapes = parameter_shapes(config.model)
    layout = assign_shards([s.numel() for s in shapes], config.num_servers)
    train, test = _load_data(config)
    steps = len(worker_schedule(shard(train, config.num_workers)[0], config, 0))
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"parameter server ({config.mode})", unit="update")

        def progress(version: int, total: int) -> None:
            bar.total = total
            bar.update(version - bar.n)

    if under_torchrun() and int(os.environ["WORLD_SIZE"]) != config.num_servers + config.num_workers:
        raise ValueError(
            f"torchrun's WORLD_SIZE must be num_servers + num_workers = "
            f"{config.num_servers + config.num_workers}, got {os.environ['WORLD_SIZE']}"
        )
    try:
        if under_torchrun():
            # every rank runs this; no fault tolerance here: launch() gathers all ranks' results
            values = launch(_rank_main, config.num_servers + config.num_workers, config, layout, steps)
        else:
            values = _spawn(config, layout, steps, progress or None)
    finally:
        if bar is not None:
            bar.close()
    return _result(config, layout, shapes, values, test)


def _result(config: PSConfig, layout, shapes, values: list[dict | None], test: Dataset) -> PSResult:
    k = config.num_servers
    servers = values[:k]
    workers = values[k:]
    flat_params: list[torch.Tensor | None] = [None] * len(shapes)
    for j, s in enumerate(servers):
        sizes = [shapes[i].numel() for i in layout[j]]
        for i, piece in zip(layout[j], s["shard"].split(sizes)):
            flat_params[i] = piece.view(shapes[i]).clone()
    model = make_model(config.model)
    with torch.no_grad():
        for p, w in zip(model.parameters(), flat_params):
            p.copy_(w)
    curve = []
    common = set.intersection(*({v for v, _, _ in s["snapshots"]} for s in servers)) if servers else set()
    for v, seconds, _ in servers[0]["snapshots"]:
        if v not in common:
            continue
        pieces = [next(t for vv, _, t in s["snapshots"] if vv == v) for s in servers]
        snap = make_model(config.model)
        params = list(snap.parameters())
        for j, piece in enumerate(pieces):
            _unflatten_into(piece, params, layout[j])
        curve.append((v, seconds, evaluate(snap, test)["accuracy"]))
    lost = dict(servers[0]["lost"])
    for n, w in enumerate(workers):
        if w is None and n not in lost:
            lost[n] = servers[0]["received"][n]
    return PSResult(
        config=config,
        staleness=servers[0]["taus"],
        updates_per_worker=servers[0]["received"],
        lost_workers=lost,
        bytes_sent=sum(s["bytes"] for s in servers),
        versions=servers[0]["versions"],
        update_times=servers[0]["times"],
        wall_s=servers[0]["wall_s"],
        parameters=[p.detach().clone() for p in model.parameters()],
        test=evaluate(model, test),
        accuracy_over_time=curve,
        examples=sum(w["examples"] for w in workers if w is not None),
        shard_sizes=[sum(shapes[i].numel() for i in idx) for idx in layout],
        server_pids=[s["pid"] for s in servers],
        worker_stats=list(workers),
        shard_staleness=[s["taus"] for s in servers],
    )


def train_async_ps(args) -> dict:
    """``dlcourse train --strategy async-ps``: the CLI's entry (arguments checked before spawning)."""
    config = PSConfig(
        num_workers=args.workers,
        num_servers=args.servers,
        softsync=1 if args.softsync is None else args.softsync,
        staleness_bound=args.staleness_bound,
        lr=0.1 if args.lr is None else args.lr,
        lr_policy=args.lr_policy,
        model=args.model,
        batch_size=args.batch_size,
        epochs=max(1, args.epochs),
        seed=args.seed,
        data_source=args.data_source,
        slow_worker=args.slow_worker,
        slow_delay=args.slow_delay,
        timeout=args.timeout,
    )
    result = run_parameter_server(config, progress=bool(getattr(args, "progress", False)))
    return result.metrics()
