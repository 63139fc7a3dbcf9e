"""A real parameter server: asynchronous SGD on ``torch.distributed`` point-to-point messages.

The lecture's centralized asynchronous SGD (Dean et al., "Large Scale Distributed Deep
Networks", NIPS 2012; Li et al., "Scaling Distributed Machine Learning with the Parameter
Server", OSDI 2014), run for real: server processes hold the parameters, worker processes
pull them, compute a gradient on a mini-batch and push it back. The server
applies the lecture's rules from :mod:`dlcourse.staleness` -- the same functions the
simulator calls:

- **async** (S = 1): every push is applied at once; its staleness ``sigma`` is how many
  updates the server applied since the worker pulled;
- **soft sync** S: the server averages S pushes per step (:class:`~dlcourse.staleness.SoftSync`);
  a worker whose push waits in an unfinished group waits with it (it reads its own writes,
  as in :mod:`dlcourse.sim`), and a group that can no longer fill up is applied as it is.
  With k > 1 sharded servers and S < N the worker pulls at once instead (Zhang et al.'s
  n-softsync): each shard groups pushes in its own arrival order, and waiting on two
  different groups could deadlock;
- **synchronous** (S = N): every worker pushes once per step and waits for the new
  parameters -- parameter averaging every step;
- **bounded staleness** b: a worker more than b steps ahead of the slowest waits for its
  parameters (:class:`~dlcourse.staleness.BoundedStaleness`); staleness is still counted in
  versions (as for every rule), and the gate's **clock lag** (at most b) is reported apart
  (``PSResult.clock_lag``);
- **staleness gate** sigma_max (``max_staleness``, S = 1): the server answers a pull only if
  no update in flight could then be applied more than sigma_max versions stale
  (:class:`~dlcourse.staleness.StalenessGate`), the lecture's bound on staleness itself;
- **shared batches** (the default of asynchronous modes; ``shared_batches=False`` turns it
  off): server 0 hands out the mini-batches of one shared order of the run
  (:func:`dlcourse.data.shared_order`) with its answers, so a fast worker does more steps and an
  epoch ends when its examples are used, as in the simulator, which deals the same order
  (Downpour SGD's workers take the next mini-batch from a shared pool). Synchronous mode gives
  every worker one batch of its own shard per step;
- the learning rate of each update comes from ``lr_policy``: ``"constant"``,
  ``"staleness"`` (lambda / max(1, sigma)), ``"zhang"`` (lambda / (sigma + 1)) or a student's
  function ``f(lr, sigma)``, which travels to the
  server process with cloudpickle and runs there; so do a student's ``staleness_fn``,
  soft-sync ``aggregate`` and bounded-staleness ``gate`` (:mod:`dlcourse.staleness`).

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

Processes and failures
----------------------
:func:`run_parameter_server` starts the k + N ranks with :func:`dlcourse.launcher.launch`;
what each rank runs -- the wire protocol, the worker loop and the server loop -- is in
:mod:`dlcourse.parameter_server.protocol`. The workers are launched as ranks that *may fail*: a worker
killed in an asynchronous mode is reported in the result (``lost_workers``, with its update
count) while the servers finish with the others. A dead server makes the workers stop with
:class:`ServerLost` within the timeout, and the run with one :class:`WorkerError` naming the
server and what each worker saw. In synchronous mode a lost worker stops the run with an
error naming it (the last executor never arrives). Server 0's progress reaches the caller
through the launcher's :func:`~dlcourse.launcher.report` channel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from dlcourse.data import Dataset, shard
from dlcourse.divergence import find_diverged
from dlcourse.launcher import WorkerError, WorkerLost, launch, under_torchrun
from dlcourse.models import make_model
from dlcourse.parameter_server.config import PSConfig, assign_shards, parameter_shapes
from dlcourse.parameter_server.protocol import (
    ServerLost,
    load_data,
    rank_main,
    unflatten_shard,
    worker_schedule,
)
from dlcourse.staleness import staleness_summary
from dlcourse.train import evaluate

__all__ = [
    "PSConfig",
    "PSResult",
    "ServerLost",
    "assign_shards",
    "parameter_shapes",
    "run_parameter_server",
    "worker_schedule",
]


@dataclass
class PSResult:
    """What a run did: the rule's footprint (staleness, updates) and the model it made."""

    config: PSConfig  # the run's configuration
    staleness: list[int]  # sigma of every update applied by server 0, in order
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
    # steps, compute_s, wait_s, step_compute_s, t0, step_times (protocol's docstring); None if lost
    worker_stats: list[dict | None] = field(default_factory=list)
    shard_staleness: list[list[int]] = field(default_factory=list)  # sigma per applied update, per server
    clock_lag: list[int] = field(default_factory=list)  # server 0: the gate's clock lag of each update
    # server 0: (server version, pulled version) of each update, as the server saw them; its staleness
    # is their difference unless a plugged-in staleness_fn says otherwise (what a grader compares)
    update_versions: list[tuple[int, int]] = field(default_factory=list)
    # shared batches: (worker, item of dlcourse.data.shared_order) of every batch server 0 handed out
    handed: list[tuple[int, int]] = field(default_factory=list)
    # server 0: the worker whose push made each update, one per element of staleness/update_versions
    update_workers: list[int] = field(default_factory=list)

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
            "max_staleness": self.config.max_staleness,
            "lr": self.config.lr,
            "shared_batches": self.config.effective_shared_batches,
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
    train, test = load_data(config)
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
    k, N = config.num_servers, config.num_workers
    try:
        # Workers may fail: the servers notice a lost worker themselves and decide (async: go
        # on without it; sync: stop, naming it), and when a server dies the workers' own
        # words say what they saw. Under torchrun this cannot be honoured (see launch()).
        values = launch(
            rank_main,
            k + N,
            config,
            layout,
            steps,
            backend="gloo",  # server traffic is CPU tensors on gloo, even when workers compute on GPUs
            timeout=config.timeout,
            run_timeout=config.run_timeout,
            may_fail=range(k, k + N),
            on_message=(lambda rank, message: progress(*message)) if progress else None,
        )
    except WorkerError as e:
        diverged = find_diverged(e)  # a blown-up run is a result in words, not a crash
        if diverged is not None:
            raise diverged from None
        raise _explain(config, e) from None
    finally:
        if bar is not None:
            bar.close()
    return _result(config, layout, shapes, values, test)


def _explain(config: PSConfig, e: WorkerError) -> WorkerError:
    """The run's error in the lecture's terms, from the launcher's (a server failed)."""
    k = config.num_servers
    if e.rank >= k:  # a worker under torchrun, where every rank is required
        return e
    workers = [x for x in e.lost if x.rank >= k]
    killed = [x for x in workers if x.signal is not None]
    if config.synchronous and killed:
        # the server stopped because a worker died: that worker is the cause
        x = killed[0]
        return WorkerError(
            x.rank,
            f"worker {x.rank - k} {x.reason}; a synchronous step needs every worker "
            f"(the last executor never arrives). {e.message.splitlines()[0]}",
        )
    said = "".join(f"\n  worker {x.rank - k} (rank {x.rank}): {x.reason}" for x in workers)
    stopped = f"; the workers stopped:{said}" if said else ""
    return WorkerError(e.rank, f"parameter server {e.rank} failed: {e.message}{stopped}", e.worker_traceback)


def _assemble(config: PSConfig, layout: list[list[int]], shards: Sequence[torch.Tensor]) -> torch.nn.Module:
    """A model whose parameters are the servers' flat shards put back together."""
    model = make_model(config.model)
    params = list(model.parameters())
    for j, flat in enumerate(shards):
        unflatten_shard(flat, params, layout[j])
    return model


def _result(config: PSConfig, layout, shapes, values: list, test: Dataset) -> PSResult:
    k = config.num_servers
    servers = values[:k]
    # a lost worker's statistics are gone with it
    workers = [None if isinstance(w, WorkerLost) else w for w in values[k:]]
    for w in values[k:]:  # a worker whose loss blew up stopped itself: the run diverged
        diverged = (
            find_diverged(WorkerError(0, w.reason, w.worker_traceback)) if isinstance(w, WorkerLost) else None
        )
        if diverged is not None:
            raise diverged
    model = _assemble(config, layout, [s["shard"] for s in servers])
    curve = []
    common = set.intersection(*({v for v, _, _ in s["snapshots"]} for s in servers)) if servers else set()
    for v, seconds, _ in servers[0]["snapshots"]:
        if v not in common:
            continue
        pieces = [next(t for vv, _, t in s["snapshots"] if vv == v) for s in servers]
        curve.append((v, seconds, evaluate(_assemble(config, layout, pieces), test)["accuracy"]))
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
        clock_lag=servers[0]["clock_lags"],
        update_versions=[tuple(v) for v in servers[0]["update_versions"]],
        handed=[tuple(h) for h in servers[0]["handed"]],
        update_workers=list(servers[0]["update_workers"]),
    )
