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

The simulator is three modules, read in this order:

- this one: what you set (:class:`SimConfig`), what you get (:class:`SimResult`),
  :func:`simulate` and the command line;
- :mod:`dlcourse.cluster`: the machinery every policy shares (:class:`Cluster`: virtual
  clock, timing model, real gradients, records; :func:`register_policy`);
- :mod:`dlcourse.sim_parameter_server`: the policies ``sync``, ``async``, ``softsync`` and
  ``bounded`` (Zhang et al. 2016; Ho et al. 2013), the worked example of a policy;
  :mod:`dlcourse.sim_decentralized` adds ``decentralized`` (Strom 2015).

Adding a policy: write ``run(cluster: Cluster) -> None`` and ``register_policy("name", run)``;
:func:`simulate` builds the :class:`SimResult` from what the cluster recorded.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.cluster import KINDS, POLICIES, Cluster, EvalPoint, TraceEvent, register_policy, worker_batches
from dlcourse.data import MnistSplit, load_mnist
from dlcourse.sim_parameter_server import run_parameter_server  # importing it registers its 4 policies
from dlcourse.staleness import LrPolicy, lr_policy_name, resolve_lr_policy, staleness_summary

__all__ = [  # the simulator's public names, wherever they live
    "KINDS",
    "POLICIES",
    "Cluster",
    "EvalPoint",
    "SimConfig",
    "SimResult",
    "TraceEvent",
    "config_from_args",
    "default_data",
    "register_policy",
    "run_parameter_server",
    "simulate",
    "simulate_command",
    "worker_batches",
]


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
        resolve_lr_policy(self.lr_policy)
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
        d["lr_policy"] = lr_policy_name(self.lr_policy)
        d["worker_speeds"] = list(self.worker_speeds) if self.worker_speeds is not None else None
        return d


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


@functools.lru_cache(maxsize=2)
def default_data(source: str = "subset") -> MnistSplit:
    """``load_mnist(source)``, loaded once per process: a widget's redraws pay only for simulating."""
    return load_mnist(source)


# what the cluster recorded goes into the SimResult as it is (same names)
_RECORDED = (
    "trace",
    "server_busy",
    "staleness",
    "evals",
    "step_loss",
    "examples",
    "updates",
    "server_steps",
    "bytes_sent",
    "eval_s",
)


def simulate(config: SimConfig, data: MnistSplit | None = None) -> SimResult:
    """Run the simulated cluster described by ``config`` on ``data`` (default: the MNIST subset)."""
    if not isinstance(config, SimConfig):
        raise ValueError(f"config must be a SimConfig, got {type(config).__name__}")
    if data is None:
        data = default_data("subset")
    if not isinstance(data, MnistSplit):
        raise ValueError(f"data must be an MnistSplit (train, test) or None, got {type(data).__name__}")
    if len(data.train) < config.num_workers:
        raise ValueError(
            f"num_workers must be <= the number of training examples ({len(data.train)}), "
            f"got {config.num_workers}"
        )
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
        **{name: getattr(cluster, name) for name in _RECORDED},
        virtual_s=virtual_s,
        idle_fraction=idle,
        server_utilization=busy / virtual_s if virtual_s > 0 else 0.0,
        params=final.clone(),
        data_source=getattr(data, "source", "custom"),
        real_s=time.perf_counter() - start,
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
    data = default_data(args.data_source)
    return simulate(config_from_args(args), data).to_json()
