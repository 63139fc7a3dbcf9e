"""What one parameter-server run is: :class:`PSConfig`, and how the parameters are sharded.

The configuration of :func:`dlcourse.parameter_server.run_parameter_server`, below the
processes that run it (:mod:`dlcourse.parameter_server.protocol`), and the sharding rule
that deals the model's tensors to k servers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.data import SOURCES
from dlcourse.models import MODELS, make_model
from dlcourse.staleness import REDUCTIONS, LrPolicy, StalenessRules, lr_policy_name, resolve_lr_policy

DEVICES = ("cpu", "cuda")


@dataclass
class PSConfig(StalenessRules):
    """One parameter-server run: who runs, which rule, how long, and what to break; a student's
    staleness_fn, aggregate and gate are :class:`~dlcourse.staleness.StalenessRules`' fields."""

    num_workers: int = 2  # N worker processes; the training data is cut into N shards
    num_servers: int = 1  # k server processes, each owning about 1/k of the parameters
    softsync: int = 1  # S: pushes the server averages per update (1 = async, N = synchronous)
    staleness_bound: int | None = None  # b: a worker may be at most b steps ahead (None = no bound)
    max_staleness: int | None = None  # sigma_max: staleness gate, softsync 1 only (None = no gate)
    reduce: str = "mean"  # soft sync: W - (1/S) sum lambda_n dW ("mean") or the lecture's sum ("sum")
    lr: float = 0.1  # lambda, the server's learning rate
    lr_policy: str | LrPolicy = "constant"  # "constant", "staleness", "zhang" or f(lr, sigma) -> lambda_n
    model: str = "mlp"  # "mlp" (fast) or "cnn" (the lecture's network)
    batch_size: int = 100  # examples per worker step (as SimConfig and the CLI)
    epochs: int = 1  # passes of each worker over its shard (ignored when steps is set)
    steps: int | None = None  # steps per worker; None: epochs over its shard
    # workers take the next mini-batch of one shared order of the run (server 0 hands it out), so a
    # fast worker does more steps (Downpour SGD's shared pool, as dlcourse.sim deals it). None: the
    # mode's default, True when asynchronous (S < N), False when synchronous; False: each worker a
    # fixed list of steps on its own shard; True needs S < N
    shared_batches: bool | None = None
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
        if self.max_staleness is not None:
            check_int("max_staleness", self.max_staleness, low=0)
            if self.softsync != 1:
                raise ValueError(
                    f"max_staleness needs softsync 1 (a soft-sync group could wait on a worker the "
                    f"staleness gate holds back), got softsync {self.softsync}"
                )
        check_float("lr", self.lr, low=0.0, low_open=True)
        resolve_lr_policy(self.lr_policy)
        self.check_rules()
        check_choice("reduce", self.reduce, REDUCTIONS)
        if self.aggregate is not None and self.reduce != "mean":
            raise ValueError(
                f"reduce must be 'mean' with an aggregate (it takes the mean), got {self.reduce!r}"
            )
        if self.shared_batches is not None and not isinstance(self.shared_batches, bool):
            raise ValueError(
                f"shared_batches must be True, False or None (the mode's default), "
                f"got {self.shared_batches!r}"
            )
        if self.shared_batches and self.synchronous:
            raise ValueError(
                f"shared_batches needs an asynchronous mode (softsync < num_workers = {self.num_workers}: "
                f"a synchronous step takes one batch of every worker's shard), got softsync {self.softsync}"
            )
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
    def effective_shared_batches(self) -> bool:
        """Whether workers take their mini-batches from one shared order (``shared_batches``,
        or by default: in asynchronous modes yes, in synchronous mode no)."""
        return not self.synchronous if self.shared_batches is None else self.shared_batches

    @property
    def mode(self) -> str:
        if self.synchronous:
            return "sync"
        gate = f", sigma_max={self.max_staleness}" if self.max_staleness is not None else ""
        if self.staleness_bound is not None:
            return f"bounded(b={self.staleness_bound}, S={self.softsync}{gate})"
        if self.max_staleness is not None:
            return f"async(sigma_max={self.max_staleness})"
        return "async" if self.softsync == 1 else f"softsync(S={self.softsync})"

    def __repr__(self) -> str:
        rules = "".join(f", {n}={name}" for n, name in self.staleness_rule_names().items())
        return (
            f"PSConfig(mode={self.mode}, num_workers={self.num_workers}, num_servers={self.num_servers}, "
            f"lr={self.lr}, lr_policy={lr_policy_name(self.lr_policy)}{rules}, model={self.model!r}, "
            f"batch_size={self.batch_size}, steps={self.steps}, epochs={self.epochs}"
            f", shared_batches={self.effective_shared_batches})"
        )


# ---------------------------------------------------------------------------- sharding


def parameter_shapes(model: str) -> tuple[torch.Size, ...]:
    """Shapes of the model's parameter tensors, in ``model.parameters()`` order."""
    return _parameter_shapes(check_choice("model", model, MODELS))


@functools.cache  # a run asks three times (config, validate, layout); building the CNN takes ~50 ms
def _parameter_shapes(model: str) -> tuple[torch.Size, ...]:
    return tuple(p.shape for p in make_model(model).parameters())


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
