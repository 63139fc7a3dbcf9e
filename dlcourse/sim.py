"""The simulated cluster: distributed SGD on a virtual clock, with real gradients.

A deterministic discrete-event simulation of N workers and a parameter server (Dean et
al., "Large Scale Distributed Deep Networks", NIPS 2012). Every worker computes a *real*
gradient of a real model on its own shard's mini-batches, from the parameters it last
pulled; only **time** is simulated: compute times drawn from a seeded RNG, stragglers,
message time ``latency + bytes / bandwidth`` (a message carries all parameters), and the
server's time to apply an update, split over k server shards. The same config and seed
give the same parameters, trace and curves on every machine, fast enough for widgets::

    from dlcourse.sim import SimConfig, simulate
    result = simulate(SimConfig(num_workers=8, policy="async", epochs=2))
    result.staleness_summary()    # {'max': ..., 'mean': ~7, 'histogram': {...}}
    result.to_json()              # the metrics every runtime writes (see DESIGN.md)

or ``dlcourse simulate --policy softsync --softsync 4 --workers 8 --json sim.json``.

One worker step: **pull** the parameters (the server answers once this worker's own last
update is applied: "read your writes"), **compute** a gradient, **push** it; then the next
step starts at once. The server applies arriving updates one at a time, first come first
served, with the rules of :mod:`dlcourse.staleness` (Zhang et al. 2016; Ho et al. 2013):

- ``async``: every update is applied on arrival (S = 1); staleness grows with N.
- ``softsync``: the server collects S updates, then applies their mean; a worker whose
  update waits in an unfinished batch waits with it.
- ``sync``: S = N, so each step averages one gradient from every worker, all computed
  from the same parameters: synchronous data parallelism and its "last executor" effect.
- ``bounded``: async, but a worker may start a step only while it is at most
  ``staleness_bound`` steps ahead of the slowest (stale synchronous parallel); staleness
  is counted in that clock.

Adding a policy (e.g. decentralized SGD, which has no server): write
``run(cluster: Cluster) -> None`` that drives the events with the pieces of
:class:`Cluster` (``schedule``, ``gradient``, ``compute_time``, ``message_time``,
``record_*``, ``applied``), then ``register_policy("name", run)``; :func:`simulate` builds
the :class:`SimResult` from what the cluster recorded. :func:`run_parameter_server` is the
worked example.
"""

from __future__ import annotations

import functools
import heapq
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.data import Dataset, MnistSplit, load_mnist, shard
from dlcourse.models import make_model
from dlcourse.staleness import (
    LR_POLICIES,
    BoundedStaleness,
    LrPolicy,
    SoftSync,
    resolve_lr_policy,
    staleness_summary,
)
from dlcourse.train import evaluate

KINDS = ("pull", "compute", "push", "wait")


@dataclass
class SimConfig:
    """Everything that decides a simulation; same config, same result."""

    num_workers: int = 4  # N, workers that each own one shard of the training data
    policy: str = "async"  # "sync", "async", "softsync", "bounded" (or a registered one)
    softsync: int | None = None  # S, updates the server collects before applying (policy "softsync")
    staleness_bound: int | None = None  # max steps ahead of the slowest worker (policy "bounded")
    lr: float = 0.1  # lambda, the server's learning rate (plain SGD)
    lr_policy: str | LrPolicy = "constant"  # lambda_n: "constant", "staleness" or f(lr, tau)
    model: str = "mlp"  # "mlp" (fast) or "cnn" (the lecture's network)
    epochs: int = 1  # passes over the training data (counted in examples applied)
    batch_size: int = 100  # examples per worker step
    compute_mean: float = 1.0  # mean virtual seconds a worker needs for one gradient
    compute_spread: float = 0.1  # relative spread of that time (sigma of a mean-one lognormal)
    worker_speeds: tuple[float, ...] | None = None  # relative speed per worker (2.0 = twice as fast)
    straggler_prob: float = 0.0  # chance that a step takes straggler_slowdown times longer
    straggler_slowdown: float = 4.0  # how much longer a straggling step takes
    bandwidth: float = 1e9  # bytes per second of every link
    latency: float = 1e-4  # seconds per message, on top of bytes / bandwidth
    apply_time: float = 0.01  # server seconds to apply one update with one shard
    servers: int = 1  # k server shards, each owning 1/k of the parameters (apply_time / k each)
    evals_per_epoch: int = 4  # test-set evaluations per epoch (the curves' points)
    seed: int = 0  # seeds the model, the shuffles and the timing

    def __post_init__(self) -> None:
        check_int("num_workers", self.num_workers, low=1)
        check_choice("policy", self.policy, POLICIES)
        if self.softsync is not None:
            check_int("softsync", self.softsync, low=1, high=self.num_workers)
        if self.staleness_bound is not None:
            check_int("staleness_bound", self.staleness_bound, low=0)
        if self.policy == "softsync" and self.softsync is None:
            raise ValueError("softsync (S) is required for policy 'softsync': an integer in [1, num_workers]")
        if self.policy == "bounded" and self.staleness_bound is None:
            raise ValueError("staleness_bound is required for policy 'bounded': an integer >= 0")
        check_float("lr", self.lr, low=0.0, low_open=True)
        if not callable(self.lr_policy):
            check_choice("lr_policy", self.lr_policy, LR_POLICIES)
        check_choice("model", self.model, ("mlp", "cnn"))
        check_int("epochs", self.epochs, low=1)
        check_int("batch_size", self.batch_size, low=1)
        check_float("compute_mean", self.compute_mean, low=0.0, low_open=True)
        check_float("compute_spread", self.compute_spread, low=0.0, high=3.0)
        if self.worker_speeds is not None:
            self.worker_speeds = tuple(self.worker_speeds)
            if len(self.worker_speeds) != self.num_workers:
                raise ValueError(
                    f"worker_speeds must give one speed per worker ({self.num_workers}), "
                    f"got {len(self.worker_speeds)}"
                )
            for s in self.worker_speeds:
                check_float("worker_speeds", s, low=0.0, low_open=True)
        check_float("straggler_prob", self.straggler_prob, low=0.0, high=1.0)
        check_float("straggler_slowdown", self.straggler_slowdown, low=1.0)
        check_float("bandwidth", self.bandwidth, low=0.0, low_open=True)
        check_float("latency", self.latency, low=0.0)
        check_float("apply_time", self.apply_time, low=0.0)
        check_int("servers", self.servers, low=1)
        check_int("evals_per_epoch", self.evals_per_epoch, low=1)
        check_int("seed", self.seed, low=0)

    @property
    def effective_softsync(self) -> int:
        """S as the server uses it: N for sync, 1 for async and bounded."""
        if self.policy == "sync":
            return self.num_workers
        if self.policy == "softsync":
            return self.softsync
        return 1

    @property
    def effective_bound(self) -> int | None:
        """The staleness bound the gate enforces (only policy "bounded" has one)."""
        return self.staleness_bound if self.policy == "bounded" else None

    def as_dict(self) -> dict:
        d = asdict(self)
        if callable(self.lr_policy):
            d["lr_policy"] = getattr(self.lr_policy, "__name__", repr(self.lr_policy))
        d["worker_speeds"] = list(self.worker_speeds) if self.worker_speeds is not None else None
        return d


class TraceEvent(NamedTuple):
    """One interval of a worker's timeline (a bar in the timeline plot)."""

    worker: int  # which worker
    kind: str  # "pull", "compute", "push" or "wait"
    start: float  # virtual seconds
    end: float


class EvalPoint(NamedTuple):
    """The server's model on the test set at one moment of the run."""

    epoch: float  # examples applied so far / examples per epoch
    time: float  # virtual seconds
    loss: float
    accuracy: float
    macro_f1: float


@dataclass(repr=False)
class SimResult:
    """What a simulation produced: timeline, staleness, curves, throughput, final model."""

    config: SimConfig  # the run's configuration
    trace: list[TraceEvent]  # every worker interval, in the order they were scheduled
    server_busy: list[tuple[float, float]]  # (start, end) of each update the server applied
    staleness: list[int]  # tau of every applied update, in the order applied
    evals: list[EvalPoint]  # test metrics at epoch 0, evals_per_epoch times per epoch, and the end
    step_loss: list[float]  # training loss of every gradient computed, in order of computing
    virtual_s: float  # virtual seconds from the first pull to the last applied update
    examples: int  # training examples whose gradients were applied
    updates: int  # gradients applied by the server
    server_steps: int  # times the server changed the parameters (its version)
    bytes_sent: int  # bytes of all pulls and pushes
    idle_fraction: list[float]  # per worker: share of virtual time spent waiting (or done early)
    server_utilization: float  # share of virtual time the server was busy
    params: torch.Tensor  # final parameters, flat (torch.nn.utils.vector_to_parameters loads them)
    data_source: str  # "subset" or "full" (or "custom" for data passed in)
    real_s: float  # host seconds the simulation took
    eval_s: float  # of which host seconds spent evaluating on the test set

    @property
    def examples_per_s(self) -> float:
        """Throughput: training examples applied per virtual second."""
        return self.examples / self.virtual_s if self.virtual_s > 0 else 0.0

    @property
    def test(self) -> EvalPoint:
        """The final evaluation."""
        return self.evals[-1]

    def epoch_curve(self, metric: str = "loss") -> list[float]:
        """``metric`` of the first evaluation at or after each whole epoch 1..epochs."""
        check_choice("metric", metric, ("loss", "accuracy", "macro_f1"))
        out = []
        for e in range(1, self.config.epochs + 1):
            point = next((p for p in self.evals if p.epoch >= e - 1e-9), self.evals[-1])
            out.append(getattr(point, metric))
        return out

    def time_curve(self, metric: str = "loss") -> tuple[list[float], list[float]]:
        """``(virtual seconds, metric)`` of every evaluation: the curve over time."""
        check_choice("metric", metric, ("loss", "accuracy", "macro_f1"))
        return [p.time for p in self.evals], [getattr(p, metric) for p in self.evals]

    def staleness_summary(self) -> dict:
        return staleness_summary(self.staleness)

    def load_into(self, model: torch.nn.Module) -> torch.nn.Module:
        """Copy the final parameters into ``model`` (same architecture) and return it."""
        torch.nn.utils.vector_to_parameters(self.params, model.parameters())
        return model

    def to_json(self, trace: bool = False) -> dict:
        """Metrics with the keys every runtime writes (DESIGN.md); times are virtual.

        ``wall_s`` is the virtual duration (so ``examples_per_s = examples / wall_s``);
        ``real_s`` is what the simulation cost on this machine. ``trace=True`` adds the
        timeline (large for long runs).
        """
        c = self.config
        out: dict[str, Any] = {
            "policy": c.policy,
            "model": c.model,
            "workers": c.num_workers,
            "softsync": c.effective_softsync,
            "staleness_bound": c.effective_bound,
            "servers": c.servers,
            "epochs": c.epochs,
            "data_source": self.data_source,
            "clock": "virtual",
            "test_accuracy": self.test.accuracy,
            "test_loss": self.test.loss,
            "test_macro_f1": self.test.macro_f1,
            "examples_per_s": self.examples_per_s,
            "wall_s": self.virtual_s,
            "virtual_s": self.virtual_s,
            "real_s": self.real_s,
            "eval_s": self.eval_s,
            "updates": self.updates,
            "server_steps": self.server_steps,
            "bytes_sent": self.bytes_sent,
            "staleness": self.staleness_summary(),
            "idle_fraction": self.idle_fraction,
            "server_utilization": self.server_utilization,
            "epoch_loss": self.epoch_curve("loss"),
            "epoch_accuracy": self.epoch_curve("accuracy"),
            "evals": [p._asdict() for p in self.evals],
            "config": c.as_dict(),
        }
        if trace:
            out["trace"] = [e._asdict() for e in self.trace]
            out["server_busy"] = [list(b) for b in self.server_busy]
        return out

    def __repr__(self) -> str:
        s = self.staleness_summary()
        return (
            f"SimResult(policy={self.config.policy!r}, num_workers={self.config.num_workers}, "
            f"virtual_s={self.virtual_s:.2f}, examples_per_s={self.examples_per_s:.1f}, "
            f"test_accuracy={self.test.accuracy:.4f}, staleness_mean={s['mean']:.2f}, "
            f"staleness_max={s['max']}, updates={self.updates})"
        )


def worker_batches(shard_size: int, batch_size: int, seed: int, worker: int):
    """Worker ``worker``'s endless stream of mini-batch index tensors into its shard.

    Each pass over the shard is a fresh permutation from a generator seeded by
    ``(seed, worker)``; the last batch of a pass may be smaller. Tests use this to
    rebuild the exact batches with plain PyTorch.
    """
    check_int("shard_size", shard_size, low=1)
    check_int("batch_size", batch_size, low=1)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + worker)
    while True:
        yield from torch.randperm(shard_size, generator=generator).split(batch_size)


@functools.lru_cache(maxsize=2)
def _default_data(source: str) -> MnistSplit:
    # loaded once per process, so a widget's redraws only pay for the simulation
    return load_mnist(source)


class Cluster:
    """The machinery every policy shares: virtual clock, timing, workers' gradients, records.

    A policy's ``run(cluster)`` schedules callbacks with :meth:`schedule`, asks
    :meth:`gradient` for worker n's next real gradient at given parameters, draws
    :meth:`compute_time` / :meth:`message_time`, and records what happened with
    :meth:`record`, :meth:`record_server`, :meth:`applied`. ``cluster.W`` holds the
    server's flat parameters (a decentralized policy may keep its own replicas and report
    their mean to :meth:`applied` and :attr:`final_params`).
    """

    def __init__(self, config: SimConfig, train: Dataset, test: Dataset) -> None:
        self.config = config
        n = config.num_workers
        self.shards = shard(train, n)
        self.test = test
        self.model = make_model(config.model, seed=config.seed)
        # the model's parameters become views of one flat vector, so loading any flat
        # parameter vector into the model is a single copy
        self._flat = torch.nn.utils.parameters_to_vector(self.model.parameters()).detach().clone()
        offset = 0
        for p in self.model.parameters():
            p.data = self._flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        self._params = list(self.model.parameters())
        self.W = self._flat.clone()  # the server's parameters
        self.final_params: torch.Tensor | None = None  # set by a policy without a single W
        self.param_bytes = self.W.numel() * self.W.element_size()
        self.batches_per_shard = math.ceil(len(self.shards[0]) / config.batch_size)
        self.epoch_examples = len(self.shards[0]) * n
        self.total_steps = config.epochs * n * self.batches_per_shard  # gradients in the whole run
        self._batches = [
            worker_batches(len(s), config.batch_size, config.seed, w) for w, s in enumerate(self.shards)
        ]
        # one timing RNG per worker: a worker's times do not depend on event order
        self._rngs = [np.random.default_rng([config.seed, w]) for w in range(n)]
        self._speeds = config.worker_speeds or (1.0,) * n
        self._sigma = config.compute_spread
        # the virtual clock
        self.now = 0.0
        self._queue: list = []
        self._seq = 0
        # records
        self.trace: list[TraceEvent] = []
        self.server_busy: list[tuple[float, float]] = []
        self.staleness: list[int] = []
        self.step_loss: list[float] = []
        self.evals: list[EvalPoint] = []
        self.examples = 0
        self.updates = 0
        self.server_steps = 0
        self.bytes_sent = 0
        self.done_at = [0.0] * n  # when each worker stopped working
        self._next_eval = 0.0
        self.eval_s = 0.0  # host seconds spent in evaluate_now
        self._eval_every = self.epoch_examples / config.evals_per_epoch
        self.evaluate_now(self.W)

    # -- the virtual clock -------------------------------------------------------------
    def schedule(self, at: float, callback: Callable, *args) -> None:
        """Run ``callback(*args)`` at virtual time ``at`` (ties run in scheduling order)."""
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, callback, args))

    def run_events(self) -> None:
        """Process events in time order until none is left."""
        queue = self._queue
        while queue:
            at, _, callback, args = heapq.heappop(queue)
            self.now = at
            callback(*args)

    # -- time ----------------------------------------------------------------------------
    def compute_time(self, worker: int) -> float:
        """Virtual seconds of worker's next gradient: mean / speed, lognormal spread, stragglers."""
        rng = self._rngs[worker]
        t = self.config.compute_mean / self._speeds[worker]
        if self._sigma > 0:  # a mean-one lognormal: always positive, spread ~ sigma
            t *= math.exp(self._sigma * rng.standard_normal() - 0.5 * self._sigma**2)
        if self.config.straggler_prob > 0 and rng.random() < self.config.straggler_prob:
            t *= self.config.straggler_slowdown
        return t

    def message_time(self, nbytes: int | None = None) -> float:
        """``latency + bytes / bandwidth`` for one message (default: all parameters)."""
        nbytes = self.param_bytes if nbytes is None else nbytes
        self.bytes_sent += nbytes
        return self.config.latency + nbytes / self.config.bandwidth

    @property
    def apply_time(self) -> float:
        """Server seconds per update: the k shards apply their 1/k of it in parallel."""
        return self.config.apply_time / self.config.servers

    # -- real gradients ------------------------------------------------------------------
    def gradient(self, worker: int, params: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Worker's next mini-batch gradient at flat ``params``: ``(flat gradient, batch size)``."""
        idx = next(self._batches[worker])
        data = self.shards[worker]
        with torch.no_grad():
            self._flat.copy_(params)
        loss = F.cross_entropy(self.model(data.X[idx]), data.y[idx])
        grads = torch.autograd.grad(loss, self._params)
        self.step_loss.append(loss.item())
        return torch.cat([g.reshape(-1) for g in grads]), len(idx)

    # -- records -------------------------------------------------------------------------
    def record(self, worker: int, kind: str, start: float, end: float) -> None:
        if end > start:
            self.trace.append(TraceEvent(worker, kind, start, end))

    def record_server(self, start: float, end: float) -> None:
        self.server_busy.append((start, end))

    def applied(self, taus: list[int], examples: int, params: torch.Tensor) -> None:
        """``len(taus)`` updates of ``examples`` examples are now part of ``params``."""
        self.staleness.extend(taus)
        self.updates += len(taus)
        self.server_steps += 1
        self.examples += examples
        if self.examples >= self._next_eval:
            self.evaluate_now(params)

    @torch.no_grad()
    def evaluate_now(self, params: torch.Tensor) -> None:
        """Test metrics of ``params`` at the current virtual time."""
        start = time.perf_counter()
        self._flat.copy_(params)
        m = evaluate(self.model, self.test)
        self.eval_s += time.perf_counter() - start
        epoch = self.examples / self.epoch_examples
        self.evals.append(EvalPoint(epoch, self.now, m["loss"], m["accuracy"], m["macro_f1"]))
        while self._next_eval <= self.examples:
            self._next_eval += self._eval_every

    def __repr__(self) -> str:
        return (
            f"Cluster(policy={self.config.policy!r}, num_workers={self.config.num_workers}, "
            f"now={self.now:.3f}, updates={self.updates}/{self.total_steps})"
        )


def run_parameter_server(cluster: Cluster) -> None:
    """Policies sync, async, softsync, bounded: N workers, one (sharded) parameter server."""
    c = cluster.config
    n = c.num_workers
    S = c.effective_softsync
    gate = BoundedStaleness(n, c.effective_bound) if c.effective_bound is not None else None
    k = c.servers
    # shard j owns W[bounds[j]:bounds[j+1]] and runs its own soft-sync rule; all shards
    # see the same updates in the same order, so they stay at the same version
    bounds = [round(j * cluster.W.numel() / k) for j in range(k + 1)]
    shards = [SoftSync(n, S, c.lr, c.lr_policy) for _ in range(k)]
    W_parts = [[cluster.W[bounds[j] : bounds[j + 1]]] for j in range(k)]
    state = {"started": 0, "server_free": 0.0}
    outstanding = [0] * n  # this worker's updates pushed but not yet applied
    blocked_since: list[float | None] = [None] * n  # pull waiting for own update / the gate
    gate_waiting: list[int] = []
    batch: list[tuple[int, int]] = []  # (worker, examples) of the updates in the server's batch

    def ready(w: int) -> None:  # worker w may start its next step now
        if state["started"] >= cluster.total_steps:
            cluster.done_at[w] = cluster.now
            return
        if gate is not None and not gate.may_start(w):
            gate_waiting.append(w)  # SSP: too far ahead of the slowest; wait for it
            blocked_since[w] = cluster.now
            return
        state["started"] += 1
        # read your writes: the pull waits until w's own last update is in W. With S = 1
        # this is what makes N = 1 plain SGD; with S = N, every worker of a step then
        # starts from the same parameters (synchronous SGD)
        if outstanding[w]:
            if blocked_since[w] is None:
                blocked_since[w] = cluster.now
        else:
            serve_pull(w)

    def serve_pull(w: int) -> None:  # the server sends W; w computes from this snapshot
        now = cluster.now
        if blocked_since[w] is not None:
            cluster.record(w, "wait", blocked_since[w], now)
            blocked_since[w] = None
        pulled = gate.clock if gate is not None else shards[0].version
        grad, size = cluster.gradient(w, cluster.W)  # real gradient; only its timing is simulated
        t1 = now + cluster.message_time()
        t2 = t1 + cluster.compute_time(w)
        t3 = t2 + cluster.message_time()
        cluster.record(w, "pull", now, t1)
        cluster.record(w, "compute", t1, t2)
        cluster.record(w, "push", t2, t3)
        cluster.schedule(t3, arrive, w, grad, size, pulled)

    def arrive(w: int, grad: torch.Tensor, size: int, pulled: int) -> None:
        outstanding[w] += 1
        clock = None
        if gate is not None:
            clock = gate.clock  # staleness in the SSP clock, before this step counts
            gate.finish(w)
        start = max(cluster.now, state["server_free"])
        end = start + cluster.apply_time
        state["server_free"] = end
        cluster.record_server(start, end)
        cluster.schedule(end, apply, w, grad, size, pulled, clock)
        if gate is not None and gate_waiting:
            for v in sorted(gate_waiting):  # wake, in worker order, those now allowed
                if gate.may_start(v):
                    gate_waiting.remove(v)
                    cluster.record(v, "wait", blocked_since[v], cluster.now)
                    blocked_since[v] = None
                    ready(v)
        ready(w)

    def apply(w: int, grad: torch.Tensor, size: int, pulled: int, clock: int | None) -> None:
        taus = None
        for j in range(k):
            taus = shards[j].receive(W_parts[j], [grad[bounds[j] : bounds[j + 1]]], pulled, clock)
        batch.append((w, size))
        if taus is not None:
            finish_batch(taus)

    def finish_batch(taus: list[int]) -> None:
        members = list(batch)
        batch.clear()
        cluster.applied(taus, sum(s for _, s in members), cluster.W)
        for w, _ in members:
            outstanding[w] -= 1
            if outstanding[w] == 0 and blocked_since[w] is not None and w not in gate_waiting:
                serve_pull(w)

    for w in range(n):
        cluster.schedule(0.0, ready, w)
    cluster.run_events()
    if batch:  # fewer than S left at the end: apply them rather than drop them
        taus = None
        for j in range(k):
            taus = shards[j].flush(W_parts[j])
        finish_batch(taus)


POLICIES: dict[str, Callable[[Cluster], None]] = {
    "sync": run_parameter_server,
    "async": run_parameter_server,
    "softsync": run_parameter_server,
    "bounded": run_parameter_server,
}


def register_policy(name: str, run: Callable[[Cluster], None]) -> None:
    """Make ``SimConfig(policy=name)`` run ``run(cluster)`` (see the module docstring)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not callable(run):
        raise ValueError(f"run must be a function run(cluster) -> None, got {run!r}")
    POLICIES[name] = run


def simulate(config: SimConfig, data: MnistSplit | None = None) -> SimResult:
    """Run the simulated cluster described by ``config`` on ``data`` (default: the MNIST subset)."""
    if not isinstance(config, SimConfig):
        raise ValueError(f"config must be a SimConfig, got {type(config).__name__}")
    if data is None:
        data = _default_data("subset")
    if not isinstance(data, MnistSplit):
        raise ValueError(f"data must be an MnistSplit (train, test) or None, got {type(data).__name__}")
    if len(data.train) < config.num_workers:
        raise ValueError(
            f"num_workers must be <= the number of training examples ({len(data.train)}), "
            f"got {config.num_workers}"
        )
    resolve_lr_policy(config.lr_policy)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread avoids thread start-up per op
    try:
        cluster = Cluster(config, data.train, data.test)
        POLICIES[config.policy](cluster)
    finally:
        torch.set_num_threads(threads)
    final = cluster.final_params if cluster.final_params is not None else cluster.W
    if cluster.evals[-1].epoch < cluster.examples / cluster.epoch_examples or len(cluster.evals) == 1:
        cluster.evaluate_now(final)
    virtual_s = cluster.now
    waits = [0.0] * config.num_workers
    for e in cluster.trace:
        if e.kind == "wait":
            waits[e.worker] += e.end - e.start
    idle = [
        (waits[w] + max(0.0, virtual_s - cluster.done_at[w])) / virtual_s if virtual_s > 0 else 0.0
        for w in range(config.num_workers)
    ]
    busy = sum(e - s for s, e in cluster.server_busy)
    return SimResult(
        config=config,
        trace=cluster.trace,
        server_busy=cluster.server_busy,
        staleness=cluster.staleness,
        evals=cluster.evals,
        step_loss=cluster.step_loss,
        virtual_s=virtual_s,
        examples=cluster.examples,
        updates=cluster.updates,
        server_steps=cluster.server_steps,
        bytes_sent=cluster.bytes_sent,
        idle_fraction=idle,
        server_utilization=busy / virtual_s if virtual_s > 0 else 0.0,
        params=final.clone(),
        data_source=getattr(data, "source", "custom"),
        real_s=time.perf_counter() - start,
        eval_s=cluster.eval_s,
    )


def config_from_args(args) -> SimConfig:
    """The :class:`SimConfig` of ``dlcourse simulate``'s parsed arguments."""
    return SimConfig(
        num_workers=args.workers,
        policy=args.policy,
        softsync=args.softsync,
        staleness_bound=args.staleness_bound,
        lr=args.lr if args.lr is not None else 0.1,
        lr_policy=args.lr_policy,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        compute_mean=args.compute_mean,
        compute_spread=args.compute_spread,
        straggler_prob=args.straggler_prob,
        straggler_slowdown=args.straggler_slowdown,
        bandwidth=args.bandwidth,
        latency=args.latency,
        apply_time=args.apply_time,
        servers=args.servers,
        evals_per_epoch=getattr(args, "evals_per_epoch", 4),
        seed=args.seed,
    )


def simulate_command(args) -> dict:
    """``dlcourse simulate``: run the policy in ``args.policy`` and return its metrics."""
    data = _default_data(args.data_source)
    return simulate(config_from_args(args), data).to_json()
