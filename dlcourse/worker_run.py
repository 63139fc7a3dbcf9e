"""One data-parallel worker's run: its shard, its mini-batches, its clocks and its checkpoints.

The lecture's data parallelism keeps "a copy of the entire model on each worker" and lets
"each worker process a different subset of the data" (Dean et al., "Large Scale Distributed
Deep Networks", NIPS 2012). Every synchronous strategy (:mod:`dlcourse.data_parallel`,
:mod:`dlcourse.averaging`) needs the same bookkeeping around its few distributed lines:

- :class:`DataParallelConfig`, the settings they share;
- :func:`make_shards` and :func:`worker_batches`, a function of (seed, epoch, rank) only, so
  that every strategy, the single-process reference and a resumed run see the same examples;
- :class:`WorkerRun`, one worker's model, optimizer, clocks (where the fast workers wait
  for the last executor) and checkpoints (:mod:`dlcourse.checkpoint`);
- :func:`run_workers`, which checks the arguments in the caller, starts N processes with
  :func:`dlcourse.launcher.launch` and gathers their outputs (:func:`collect`) into a
  :class:`DataParallelResult`.

A strategy is then a short loop: see :func:`dlcourse.data_parallel.sync_sgd_worker`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from dlcourse.collectives import ring_allreduce_bytes
from dlcourse.data import Dataset, batch_order, check_dataset, shard
from dlcourse.divergence import check_finite, find_diverged
from dlcourse.launcher import WorkerError, device_for, launch
from dlcourse.models import MODELS, make_model
from dlcourse.train import check_training_settings, evaluate, make_optimizer

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class DataParallelConfig:
    """Settings of a data-parallel run (shared by ddp, sync-sgd and averaging)."""

    model: str = "mlp"  # "cnn" (the lecture's network) or "mlp" (small and fast)
    epochs: int = 1  # passes over every worker's shard
    batch_size: int = 100  # global mini-batch, split evenly across the N workers
    lr: float = 0.1  # learning rate lambda
    optimizer: str = "sgd"  # "sgd" (no internal state), "momentum" or "adam"
    momentum: float = 0.9  # used by "momentum" only
    seed: int = 0  # seeds the model's initialization and every worker's batch order
    average_every: int = 1  # K: local steps between parameter averages (averaging only)
    slow_worker: int | None = None  # rank slowed down to show the last-executor effect
    slow_delay: float = 0.0  # seconds the slow worker sleeps in each step
    checkpoint_dir: str | None = None  # folder for checkpoints (None: no checkpoints)
    checkpoint_every: int | None = None  # steps between checkpoints (one is also written at the end)
    resume: bool = False  # continue from the checkpoint in checkpoint_dir
    max_steps: int | None = None  # stop after this many steps in all (None: run every epoch)
    dtype: str = "float32"  # "float64" makes rounding negligible in equivalence checks

    def __post_init__(self) -> None:
        check_choice("model", self.model, MODELS)
        check_training_settings(self)
        check_int("average_every", self.average_every, low=1)
        if self.slow_worker is not None:
            check_int("slow_worker", self.slow_worker, low=0)
        check_float("slow_delay", self.slow_delay, low=0.0)
        if self.checkpoint_every is not None:
            check_int("checkpoint_every", self.checkpoint_every, low=1)
        if (self.checkpoint_every is not None or self.resume) and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every and resume need checkpoint_dir, got checkpoint_dir=None")
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, low=0)
        check_choice("dtype", self.dtype, DTYPES)

    def total_steps(self, steps_per_epoch: int) -> int:
        """Steps of the whole run: ``epochs`` of ``steps_per_epoch``, cut short at ``max_steps``."""
        check_int("steps_per_epoch", steps_per_epoch, low=1)
        total = self.epochs * steps_per_epoch
        return total if self.max_steps is None else min(total, self.max_steps)

    def check_workers(self, num_workers: int) -> None:
        """The settings that depend on N: an even batch split and a slow rank that exists."""
        check_int("num_workers", num_workers, low=1)
        if self.batch_size % num_workers:
            raise ValueError(
                f"batch_size must be divisible by num_workers={num_workers} (the global batch is split "
                f"evenly), got {self.batch_size}"
            )
        if self.slow_worker is not None and self.slow_worker >= num_workers:
            raise ValueError(f"slow_worker must be a rank in 0..{num_workers - 1}, got {self.slow_worker}")


# ---------------------------------------------------------------------------------------
# Shards and mini-batches: a function of (seed, epoch, rank) only, so every strategy, the
# single-process reference and a resumed run all see exactly the same examples.


def make_shards(train: Dataset, num_workers: int, shard_sizes: Sequence[int] | None = None) -> list[Dataset]:
    """Equal shards (:func:`dlcourse.data.shard`), or contiguous ones of ``shard_sizes``."""
    check_dataset("train", train)
    check_int("num_workers", num_workers, low=1)
    if shard_sizes is None:
        return list(shard(train, num_workers))
    sizes = [check_int("shard_sizes[i]", s, low=1) for s in shard_sizes]
    if len(sizes) != num_workers or sum(sizes) > len(train):
        raise ValueError(
            f"shard_sizes must give {num_workers} sizes >= 1 summing to at most {len(train)}, "
            f"got {list(sizes)}"
        )
    starts = np.cumsum([0, *sizes])
    return [train[int(a) : int(b)] for a, b in zip(starts[:-1], starts[1:])]


def steps_per_epoch(shard_lengths: Sequence[int], batch_size: int, num_workers: int) -> int:
    """Mini-batches per epoch: the smallest shard cut into batches of ``batch_size / N``."""
    check_int("num_workers", num_workers, low=1)
    check_int("batch_size", batch_size, low=num_workers)
    if len(shard_lengths) == 0:
        raise ValueError("shard_lengths must list at least one shard, got []")
    per_worker = batch_size // num_workers
    steps = min(shard_lengths) // per_worker
    if steps < 1:
        raise ValueError(
            f"batch_size={batch_size} over {num_workers} workers needs shards of at least {per_worker} "
            f"examples, the smallest has {min(shard_lengths)}"
        )
    return steps


def worker_batches(shard_length: int, steps: int, epoch: int, seed: int, rank: int) -> list[torch.Tensor]:
    """Index tensors of one worker's ``steps`` equal mini-batches in ``epoch``.

    :func:`dlcourse.data.batch_order` with batches of ``shard_length // steps`` (the
    remainder is left out). With unequal shards the bigger shard gets bigger batches, so
    every worker finishes its shard in the same number of steps.
    """
    check_int("shard_length", shard_length, low=1)
    check_int("steps", steps, low=1, high=shard_length)
    check_int("rank", rank, low=0)
    return batch_order(shard_length, shard_length // steps, epoch=epoch, seed=seed, worker=rank)[:steps]


def config_or_default(config: DataParallelConfig | None) -> DataParallelConfig:
    """``config``, or the default :class:`DataParallelConfig` when it is None."""
    config = config if config is not None else DataParallelConfig()
    if not isinstance(config, DataParallelConfig):
        raise ValueError(f"config must be a DataParallelConfig or None, got {type(config).__name__}")
    return config


def run_fingerprint(
    config: DataParallelConfig, strategy: str, shard_lengths: Sequence[int]
) -> dict[str, Any]:
    """The settings a resumed run must share with the checkpoint (epochs may grow)."""
    return {
        "model": config.model,
        "num_workers": len(shard_lengths),
        "batch_size": config.batch_size,
        "lr": config.lr,
        "optimizer": config.optimizer,
        "momentum": config.momentum,
        "seed": config.seed,
        "dtype": config.dtype,
        "shard_lengths": list(shard_lengths),
        "average_every": config.average_every if strategy == "averaging" else 1,
    }


# ---------------------------------------------------------------------------------------
# One worker's bookkeeping, so that each strategy's loop shows only what makes it differ.


class WorkerRun:
    """One worker's shard, model, optimizer, batches, clocks and checkpoints.

    ``replicas_agree``: after every step all workers hold the same model and optimizer
    state (sync SGD, DDP), so a checkpoint keeps one copy; otherwise (averaging) it keeps
    every worker's.
    """

    def __init__(
        self,
        rank: int,
        world_size: int,
        train: Dataset,
        config: DataParallelConfig,
        strategy: str,
        shard_sizes: Sequence[int] | None = None,
        replicas_agree: bool = True,
    ) -> None:
        config.check_workers(world_size)
        self.rank, self.world_size, self.config, self.strategy = rank, world_size, config, strategy
        self.replicas_agree = replicas_agree
        self.device = device_for(rank)
        self.dtype = DTYPES[config.dtype]
        shards = make_shards(train, world_size, shard_sizes)
        self.shard = shards[rank]
        self.steps_per_epoch = steps_per_epoch([len(s) for s in shards], config.batch_size, world_size)
        self.total_steps = config.total_steps(self.steps_per_epoch)
        self.model = make_model(config.model, seed=config.seed).to(self.device, self.dtype)
        self.optimizer = make_optimizer(config.optimizer, self.model.parameters(), config.lr, config.momentum)
        self.fingerprint = run_fingerprint(config, strategy, [len(s) for s in shards])
        self.step = 0  # steps completed (by this worker; all workers step together)
        self.losses: list[float] = []  # this worker's training loss at every step
        self.times: dict[str, list[float]] = {"step": [], "sync": []}  # seconds, this session's steps
        self.sent = 0  # bytes sent by all workers in this session (ring all-reduce estimate)
        self.sync_measured = True  # False where synchronization hides inside backward (DDP)
        self.wall_s = 0.0
        self._sync_s = 0.0
        if config.resume:
            self._restore()

    def __repr__(self) -> str:
        return (
            f"WorkerRun(strategy={self.strategy!r}, rank={self.rank}/{self.world_size}, "
            f"shard={len(self.shard)}, step={self.step}/{self.total_steps})"
        )

    @property
    def fresh(self) -> bool:
        """True unless this run continues from a checkpoint."""
        return self.step == 0

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield this worker's ``(X, y)`` for every remaining step; keep clocks and checkpoints."""
        start = time.perf_counter()
        order: list[torch.Tensor] = []
        while self.step < self.total_steps:
            epoch, t = divmod(self.step, self.steps_per_epoch)
            if t == 0 or not order:
                order = worker_batches(
                    len(self.shard), self.steps_per_epoch, epoch, self.config.seed, self.rank
                )
            idx = order[t]
            t0, self._sync_s = time.perf_counter(), 0.0
            if self.rank == self.config.slow_worker:
                time.sleep(self.config.slow_delay)  # the last executor: everyone will wait for it
            yield self.shard.X[idx].to(self.device, self.dtype), self.shard.y[idx].to(self.device)
            self.times["step"].append(time.perf_counter() - t0)
            self.times["sync"].append(self._sync_s)
            self.step += 1
            every = self.config.checkpoint_every
            if every is not None and self.step % every == 0 and self.step < self.total_steps:
                self.save()
        self.wall_s = time.perf_counter() - start

    def record(self, loss: torch.Tensor) -> None:
        """Remember this step's training loss (call once per step); a loss that blew up stops
        the run with :class:`~dlcourse.divergence.Diverged` naming the update and worker."""
        self.losses.append(loss.item())
        check_finite(self.losses[-1], runtime=self.strategy, index=self.step + 1, worker=self.rank)

    @contextlib.contextmanager
    def sync(self, nbytes: int = 0, kind: str = "allreduce"):
        """Time a synchronization (where fast workers wait for the last executor)."""
        t0 = time.perf_counter()
        yield
        self._sync_s += time.perf_counter() - t0
        self.count(nbytes, kind)

    def count(self, nbytes: int, kind: str = "allreduce") -> None:
        """Add the bytes of one collective over ``nbytes`` (``"allreduce"`` or ``"broadcast"``)."""
        n = self.world_size
        self.sent += ring_allreduce_bytes(nbytes, n) if kind == "allreduce" else (n - 1) * nbytes

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "losses": self.losses,
        }

    def save(self) -> None:
        """Write a checkpoint of all workers (collective: every rank must call it)."""
        if self.config.checkpoint_dir is None:
            return
        if self.replicas_agree:
            states = [self._state()]
        else:
            states = [None] * self.world_size
            dist.all_gather_object(states, self._state())
        if self.rank == 0:
            save_checkpoint(
                self.config.checkpoint_dir, Checkpoint(self.strategy, self.step, self.fingerprint, states)
            )
        dist.barrier()  # nobody runs ahead (or exits) before the checkpoint is on disk

    def _restore(self) -> None:
        ckpt = load_checkpoint(
            self.config.checkpoint_dir, strategy=self.strategy, fingerprint=self.fingerprint
        )
        state = ckpt.states[0 if self.replicas_agree else self.rank]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.losses = list(state["losses"])
        self.step = ckpt.step

    def finish(self, test: Dataset | None = None, *, save: bool = True) -> dict[str, Any]:
        """Final checkpoint, then rank 0 evaluates; returns what :class:`DataParallelResult` needs.

        ``save=False`` when the caller has already written the final checkpoint itself.
        """
        if save:
            self.save()
        everyone: list[Any] = [None] * self.world_size
        dist.all_gather_object(everyone, self.losses)
        steps = len(self.times["step"])
        out: dict[str, Any] = {
            "rank": self.rank,
            "steps": steps,
            "batch": len(self.shard) // self.steps_per_epoch,
            "step_s": _mean(self.times["step"]),
            # DDP overlaps its all-reduce with backward: there, only the whole step is measured
            "sync_s": _mean(self.times["sync"]) if self.sync_measured else None,
            "compute_s": _mean([a - b for a, b in zip(self.times["step"], self.times["sync"])])
            if self.sync_measured
            else None,
            "delay_s": self.config.slow_delay if self.rank == self.config.slow_worker else 0.0,
            "wall_s": self.wall_s,
        }
        if self.rank == 0:
            out["parameters"] = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            out["step_loss"] = [sum(per_step) / len(per_step) for per_step in zip(*everyone)]
            out["sent"] = self.sent
            t0 = time.perf_counter()
            out["test"] = evaluate(self.model, test) if test is not None else None
            out["eval_s"] = time.perf_counter() - t0
        return out


def _mean(xs: Sequence[float]) -> float:
    """The mean of ``xs``; 0.0 for a session that ran no steps (resumed at the end)."""
    return sum(xs) / len(xs) if xs else 0.0


@dataclass(repr=False)
class DataParallelResult:
    """What a data-parallel run returns (rank 0's view, plus every worker's clocks)."""

    strategy: str  # "ddp", "sync-sgd" or "averaging"
    num_workers: int  # N
    parameters: dict[str, torch.Tensor]  # final model state (rank 0's; all ranks agree)
    step_loss: list[float]  # training loss per step, averaged over the workers
    per_worker: list[dict[str, Any]]  # per rank: steps, batch, step_s, compute_s, sync_s, delay_s
    examples: int  # training examples processed in this session, all workers together
    wall_s: float  # seconds rank 0 spent in the training loop (no start-up, no evaluation)
    bytes_sent: int  # bytes all workers sent, as a ring all-reduce would
    test: dict[str, float] | None = None  # loss, accuracy, macro_f1 on the test data
    extra: dict[str, Any] = field(default_factory=dict)
    # where the run's seconds went: start-up, training, evaluation, other, tear-down (run_phases)
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def updates(self) -> int:
        return len(self.step_loss)

    def __repr__(self) -> str:
        test = f", test_accuracy={self.test['accuracy']:.4f}" if self.test else ""
        return (
            f"DataParallelResult(strategy={self.strategy!r}, num_workers={self.num_workers}, "
            f"updates={self.updates}, examples_per_s={self.examples_per_s:.1f}{test})"
        )


def collect(strategy: str, outputs: list[dict[str, Any]]) -> DataParallelResult:
    """Assemble the per-rank outputs of :meth:`WorkerRun.finish`."""
    if not outputs or "parameters" not in outputs[0]:
        raise ValueError("outputs must be the list of every rank's WorkerRun.finish(), rank 0 first")
    head = outputs[0]
    keys = ("rank", "steps", "batch", "step_s", "compute_s", "sync_s", "delay_s")
    per_worker = [{k: o[k] for k in keys} for o in outputs]
    return DataParallelResult(
        strategy=strategy,
        num_workers=len(outputs),
        parameters=head["parameters"],
        step_loss=head["step_loss"],
        per_worker=per_worker,
        examples=sum(o["steps"] * o["batch"] for o in outputs),
        wall_s=head["wall_s"],
        bytes_sent=head["sent"],
        test=head["test"],
        extra=dict(head.get("extra", {})),  # what a strategy adds (zero: bytes per rank)
    )


def run_phases(launched: dict[str, float], training_s: float, eval_s: float) -> dict[str, float]:
    """Where a run's seconds went, from the launcher's :data:`~dlcourse.launcher.PHASES`.

    ``startup_s``: processes, imports, data and the process group; ``training_s``: rank 0's
    training loop (``wall_s``, what examples/s divides by); ``evaluation_s``: rank 0 on the test
    data; ``other_s``: the rest of the workers' time (model, optimizer, final gathers and
    checkpoint); ``teardown_s``: ending the processes. Their sum is the launch's whole time.
    """
    run_s = launched["run_s"]
    return {
        "startup_s": launched["start_s"] + launched["process_group_s"],
        "training_s": training_s,
        "evaluation_s": eval_s,
        "other_s": max(0.0, run_s - training_s - eval_s),
        "teardown_s": launched["teardown_s"],
    }


# ---------------------------------------------------------------------------------------
# N workers, started from the caller.


def run_workers(
    worker: Callable[..., dict[str, Any]],
    strategy: str,
    train: Dataset,
    num_workers: int,
    config: DataParallelConfig | None = None,
    *,
    test: Dataset | None = None,
    shard_sizes: Sequence[int] | None = None,
    backend: str = "auto",
    timeout: float = 60.0,
    run_timeout: float | None = None,
    threads_per_worker: int | None = None,
) -> DataParallelResult:
    """Run ``worker(rank, N, train, test, config, shard_sizes)`` on ``num_workers`` processes.

    Each rank trains on its shard with ``config.batch_size / num_workers`` examples per
    step; rank 0 evaluates on ``test``. ``shard_sizes`` cuts the training data into
    contiguous shards of those sizes instead of equal ones. ``backend``, ``timeout``,
    ``run_timeout`` and ``threads_per_worker`` go to :func:`dlcourse.launcher.launch`.
    """
    if not callable(worker):
        raise ValueError(f"worker must be a function (rank, world_size, ...), got {worker!r}")
    config = config_or_default(config)
    check_dataset("train", train)
    if test is not None:
        check_dataset("test", test)
    config.check_workers(num_workers)
    # fail here, in the caller, with one clear line, rather than in N workers
    shards = make_shards(train, num_workers, shard_sizes)
    steps_per_epoch([len(s) for s in shards], config.batch_size, num_workers)
    if config.resume:
        fingerprint = run_fingerprint(config, strategy, [len(s) for s in shards])
        load_checkpoint(config.checkpoint_dir, strategy=strategy, fingerprint=fingerprint)
    launched: dict[str, float] = {}
    try:
        outputs = launch(
            worker,
            num_workers,
            train,
            test,
            config,
            shard_sizes,
            backend=backend,
            timeout=timeout,
            run_timeout=run_timeout,
            threads_per_worker=threads_per_worker,
            phases=launched,
        )
    except WorkerError as e:
        diverged = find_diverged(e)  # a worker's loss blew up: say so, not how the launcher saw it
        if diverged is None:
            raise
        raise diverged from None
    result = collect(strategy, outputs)
    if launched:  # not under torchrun, whose launcher is torchrun's
        result.phases = run_phases(launched, result.wall_s, outputs[0].get("eval_s", 0.0))
    return result
