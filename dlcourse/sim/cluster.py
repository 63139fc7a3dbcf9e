"""The simulated cluster's machinery: a virtual clock, a timing model and real gradients.

The discrete-event engine under :func:`dlcourse.sim.simulate` (Dean et al., "Large Scale
Distributed Deep Networks", NIPS 2012, is the cluster it models). A :class:`Cluster` holds
N workers, each with its own shard of the training data and its own seeded stream of
mini-batches (:func:`dlcourse.data.batch_stream`, the order every runtime shares). With
shared batches (``SimConfig.effective_shared_batches``: the default of the asynchronous
parameter-server policies) the gradients take instead the items of one shared order of the
run (:func:`dlcourse.data.shared_order`), one per gradient in the order they are asked for,
as the real server hands them out one per pull: a fast worker takes more of the epoch, and
the run ends when the order is used up. The cluster computes **real** gradients of a real
model, while **time** is simulated:

- compute: the model's forward+backward FLOPs per example (:func:`dlcourse.models.flops_per_example`)
  times the batch, divided by ``device_flops``, then a seeded lognormal spread, per-worker
  speeds and stragglers (``compute_mean`` replaces the FLOPs-based mean when set);
- network: every worker has its own link, and every server shard has **one** link shared by
  all messages to and from it (:meth:`Cluster.server_message`): messages queue there, first
  come first served, ``bytes / bandwidth`` each, then ``latency`` (with ``latency_spread``, a
  seeded lognormal factor per message). A central server is a
  bottleneck on a slow network; k shards give k links;
- the server's time to apply an update, split over the k shards.

Events run in virtual-time order, so the same config and seed give the same run on every
machine.

A policy is a function ``run(cluster) -> None`` that drives the events with
:meth:`Cluster.schedule`, :meth:`Cluster.gradient`, :meth:`Cluster.compute_time`,
:meth:`Cluster.message_time` and records what happened (``record*``, :meth:`Cluster.applied`);
``register_policy("name", run)`` makes ``SimConfig(policy="name")`` run it.
:mod:`dlcourse.sim.parameter_server` (sync, async, softsync, bounded) is the worked
example, :mod:`dlcourse.sim.decentralized` a policy without a server.
"""

from __future__ import annotations

import functools
import heapq
import math
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from dlcourse.collectives import flat_parameters
from dlcourse.data import Dataset, batch_stream, shard, shared_order
from dlcourse.divergence import LOSS_LIMIT, check_finite
from dlcourse.models import flops_per_example, make_model
from dlcourse.sim.config import SimConfig
from dlcourse.train import evaluate

KINDS = ("pull", "compute", "push", "wait")  # what a worker does in a TraceEvent interval
SERVER_MEMORY_BANDWIDTH = 1e10  # bytes/s: applying an update streams W, the gradient and W back


@functools.cache
def model_flops(model: str) -> int:
    """:func:`~dlcourse.models.flops_per_example` of a model by name (counted once per process)."""
    return flops_per_example(make_model(model))


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
        self._flat = flat_parameters(self.model)
        self._params = list(self.model.parameters())
        self.W = self._flat.clone()  # the server's parameters
        self.final_params: torch.Tensor | None = None  # set by a policy without a single W
        self.param_bytes = self.W.numel() * self.W.element_size()
        k = config.servers
        # server shard j owns W[shard_bounds[j]:shard_bounds[j+1]] and has its own link
        self.shard_bounds = [round(j * self.W.numel() / k) for j in range(k + 1)]
        self.shard_bytes = [
            (b - a) * self.W.element_size() for a, b in zip(self.shard_bounds, self.shard_bounds[1:])
        ]
        self._link_free = [0.0] * k
        self.flops_per_example = model_flops(config.model)
        self._seconds_per_example = (
            self.flops_per_example / config.device_flops if config.compute_mean is None else None
        )
        self._apply_s = (
            config.apply_time
            if config.apply_time is not None
            else 3 * self.param_bytes / SERVER_MEMORY_BANDWIDTH
        ) / k
        self.batches_per_shard = math.ceil(len(self.shards[0]) / config.batch_size)
        self.epoch_examples = len(self.shards[0]) * n
        self.total_steps = config.epochs * n * self.batches_per_shard  # gradients in the whole run
        self._batches = [
            batch_stream(len(s), config.batch_size, seed=config.seed, worker=w)
            for w, s in enumerate(self.shards)
        ]
        # shared batches: (shard, indices) of every gradient of the run, dealt one per gradient
        self._order = None
        if config.effective_shared_batches:
            steps = config.epochs * self.batches_per_shard
            self._order = shared_order(len(self.shards[0]), config.batch_size, n, steps, seed=config.seed)
        # one timing RNG per worker: a worker's times do not depend on event order
        self._rngs = [np.random.default_rng([config.seed, w]) for w in range(n)]
        self._speeds = config.worker_speeds or (1.0,) * n
        self._draws: list[list[float]] = [[] for _ in range(n)]  # drawn, not yet used compute-time factors
        self._sigma = config.compute_spread
        # message latencies with a spread: one RNG for every message, drawn in event order (which
        # the virtual clock fixes); none drawn without a spread, so such runs stay as they were
        self._latency_rng = np.random.default_rng([config.seed, n, 1]) if config.latency_spread > 0 else None
        # the virtual clock
        self.now = 0.0
        self._queue: list = []
        self._seq = 0
        # records
        self.trace: list[TraceEvent] = []
        self.server_busy: list[tuple[float, float]] = []
        self.link_busy: list[list[tuple[float, float]]] = [[] for _ in range(k)]  # per server shard
        self.clock_lag: list[int] = []  # SSP's clock view of each applied update (policy "bounded")
        self.pull_log: list[tuple[int, int, int]] = []  # (worker, its step, updates applied) per pull
        self.apply_log: list[tuple[int, int]] = []  # (worker, its step) of each update, in order applied
        self.handed: list[tuple[int, int]] = []  # shared batches: (worker, item of the order) per gradient
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
    def compute_time(self, worker: int, examples: int | None = None) -> float:
        """Virtual seconds of worker's gradient on ``examples`` (default: a full batch).

        ``flops_per_example x examples / device_flops`` (or ``compute_mean``) / speed,
        then a lognormal spread and stragglers.
        """
        if self._seconds_per_example is None:
            t = self.config.compute_mean / self._speeds[worker]
        else:
            examples = self.config.batch_size if examples is None else examples
            t = self._seconds_per_example * examples / self._speeds[worker]
        draws = self._draws[worker]
        if not draws:  # a block of this worker's factors at a time: one numpy call, not two per step
            draws.extend(self._factors(worker))
        return t * draws.pop()

    def _factors(self, worker: int, count: int = 64) -> list[float]:
        """The next ``count`` random factors of worker's compute time (in reverse: popped from the end)."""
        rng = self._rngs[worker]
        factors = np.ones(count)
        if self._sigma > 0:  # a mean-one lognormal: always positive, spread ~ sigma
            factors *= np.exp(self._sigma * rng.standard_normal(count) - 0.5 * self._sigma**2)
        if self.config.straggler_prob > 0:
            factors[rng.random(count) < self.config.straggler_prob] *= self.config.straggler_slowdown
        return factors[::-1].tolist()

    def message_time(self, nbytes: int | None = None) -> float:
        """:meth:`latency` ``+ bytes / bandwidth`` for one message (default: all parameters)."""
        nbytes = self.param_bytes if nbytes is None else nbytes
        self.bytes_sent += nbytes
        return self.latency() + nbytes / self.config.bandwidth

    def latency(self) -> float:
        """One message's latency: ``latency``, times a mean-one lognormal factor with ``latency_spread``."""
        if self._latency_rng is None:
            return self.config.latency
        s = self.config.latency_spread
        return self.config.latency * math.exp(s * self._latency_rng.standard_normal() - 0.5 * s * s)

    def server_message(self) -> float:
        """A message of all parameters between a worker and the k server shards, sent now.

        Returns when it has fully arrived. Each shard's part queues on that shard's link
        (shared by every worker: first come, first served) for ``bytes / bandwidth``; the
        worker's own link carries all parts, so the message takes at least
        ``all bytes / bandwidth``; then ``latency``. Counts the bytes.
        """
        now = self.now
        bandwidth = self.config.bandwidth
        done = now + self.param_bytes / bandwidth  # the worker's own link
        for j, nbytes in enumerate(self.shard_bytes):
            start = self._link_free[j] if self._link_free[j] > now else now
            end = start + nbytes / bandwidth
            self._link_free[j] = end
            busy = self.link_busy[j]
            if busy and busy[-1][1] >= start:  # back to back: one interval (small records)
                busy[-1] = (busy[-1][0], end)
            else:
                busy.append((start, end))
            if end > done:
                done = end
        self.bytes_sent += self.param_bytes
        return done + self.latency()

    @property
    def apply_time(self) -> float:
        """Server seconds per update: the k shards apply their 1/k of it in parallel."""
        return self._apply_s

    # -- real gradients ------------------------------------------------------------------
    def gradient(self, worker: int, params: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Worker's next mini-batch gradient at flat ``params``: ``(flat gradient, batch size)``.

        The mini-batch is the next of the worker's own shard, or with shared batches the next
        item of the run's shared order (:attr:`handed` records who took which).
        """
        if self._order is None:
            idx = next(self._batches[worker])
            data = self.shards[worker]
        else:
            item = len(self.handed)
            if item >= len(self._order):
                raise RuntimeError(
                    f"the shared order's {len(self._order)} mini-batches are used up: a policy asks for "
                    f"at most total_steps ({self.total_steps}) gradients with shared batches"
                )
            self.handed.append((worker, item))
            s, idx = self._order[item]
            data = self.shards[s]
        with torch.no_grad():
            self._flat.copy_(params)
        loss = F.cross_entropy(self.model(data.X[idx]), data.y[idx])
        value = loss.item()
        # a non-finite loss or gradient stops the run: Diverged names the update and worker.
        # Cheap tests first (they run on every gradient); check_finite says what went wrong
        if not value <= LOSS_LIMIT:  # NaN, inf or above the limit
            check_finite(loss, **self._where(worker))
        grads = torch.autograd.grad(loss, self._params)
        self.step_loss.append(value)
        flat = torch.cat([g.reshape(-1) for g in grads])
        if not math.isfinite(flat.sum().item()):  # a NaN or inf anywhere reaches the sum
            check_finite(flat, what="gradient", **self._where(worker))
        return flat, len(idx)

    def _where(self, worker: int) -> dict:
        return {
            "runtime": f"simulate {self.config.policy}",
            "index": len(self.step_loss) + 1,
            "worker": worker,
        }

    # -- records -------------------------------------------------------------------------
    def record(self, worker: int, kind: str, start: float, end: float) -> None:
        if end > start:
            self.trace.append(TraceEvent(worker, kind, start, end))

    def record_server(self, start: float, end: float) -> None:
        self.server_busy.append((start, end))

    def applied(
        self, sigmas: list[int], examples: int, params: torch.Tensor | Callable[[], torch.Tensor]
    ) -> None:
        """``len(sigmas)`` updates (their staleness) of ``examples`` examples are now part of ``params``.

        ``params`` may be a function that returns them: it is called only when an
        evaluation is due, so a policy whose model is derived (the mean of N replicas)
        does not build it after every step.
        """
        self.staleness.extend(sigmas)
        self.updates += len(sigmas)
        self.server_steps += 1
        self.examples += examples
        if self.examples >= self._next_eval:
            self.evaluate_now(params() if callable(params) else params)

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
