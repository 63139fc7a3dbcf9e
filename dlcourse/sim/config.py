"""What decides a simulation: :class:`SimConfig`, and the registry of policies.

A policy is a function ``run(cluster) -> None`` on a :class:`dlcourse.sim.cluster.Cluster`;
``register_policy("name", run)`` makes ``SimConfig(policy="name")`` run it. Importing
:mod:`dlcourse.sim` registers every policy of the package (sync, async, softsync, bounded,
decentralized), so a config can name any of them whatever was imported first.

The timing model's defaults (what they assume is in the README's simulator section): a
worker computes at ``device_flops`` = 10 GFLOP/s (a CPU node; one thread of PyTorch here
reaches about 28 GFLOP/s on the CNN), so a gradient of the lecture's CNN on a batch of 100
takes 0.29 s and one of the MLP 3 ms; every link moves ``bandwidth`` = 1 GB/s (about
10 Gbit Ethernet) after ``latency`` = 0.1 ms; the server applies an update at the speed of
streaming W, the gradient and W back through 10 GB/s of memory (CNN 1.3 ms, MLP 0.06 ms).
``network=fit_alpha_beta()`` (:mod:`dlcourse.collectives`) replaces latency and bandwidth by
the alpha and beta fitted to this machine's gloo collectives. ``latency_spread`` makes each
message's latency random (a mean-one lognormal factor, as ``compute_spread`` for compute): a
real round trip through a busy server process on a shared machine is not a constant (on 2 cores
the standard deviation of its log is about 0.6: ``benchmarks/async_vs_sim.py``), and with a
constant one two equally fast workers take turns like clockwork, which real ones do not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.collectives import AlphaBeta
from dlcourse.staleness import REDUCTIONS, RULES, LrPolicy, StalenessRules, lr_policy_name, resolve_lr_policy

# policy name -> run(cluster); dlcourse.sim.parameter_server registers sync, async, softsync, bounded
POLICIES: dict[str, Callable[..., None]] = {}


def register_policy(name: str, run: Callable[..., None]) -> None:
    """Make ``SimConfig(policy=name)`` run ``run(cluster)`` (see the module docstring)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not callable(run):
        raise ValueError(f"run must be a function run(cluster) -> None, got {run!r}")
    POLICIES[name] = run


@dataclass
class SimConfig(StalenessRules):
    """Everything that decides a simulation; same config, same result. A student's
    staleness_fn, aggregate and gate are :class:`~dlcourse.staleness.StalenessRules`' fields."""

    num_workers: int = 4  # N, workers that each own one shard of the training data
    policy: str = "async"  # "sync", "async", "softsync", "bounded" (or a registered one)
    softsync: int | None = None  # S, updates the server collects before applying (policy "softsync")
    staleness_bound: int | None = None  # b: max steps ahead of the slowest worker (policy "bounded")
    max_staleness: int | None = None  # sigma_max: staleness gate, S = 1 only (None: no gate)
    reduce: str = "mean"  # soft sync: W - (1/S) sum lambda_n dW ("mean") or the lecture's sum ("sum")
    lr: float = 0.1  # lambda, the server's learning rate (plain SGD)
    lr_policy: str | LrPolicy = "constant"  # lambda_n: "constant", "staleness", "zhang" or f(lr, sigma)
    model: str = "mlp"  # "mlp" (fast) or "cnn" (the lecture's network)
    epochs: int = 1  # passes over the training data (counted in examples applied)
    batch_size: int = 100  # examples per worker step
    device_flops: float = 1e10  # FLOP/s of a worker: a gradient takes flops_per_example x batch / this
    compute_mean: float | None = None  # override: mean virtual seconds per gradient (None: from FLOPs)
    compute_spread: float = 0.1  # relative spread of that time (sigma of a mean-one lognormal)
    worker_speeds: tuple[float, ...] | None = None  # relative speed per worker (2.0 = twice as fast)
    straggler_prob: float = 0.0  # chance that a step takes straggler_slowdown times longer
    straggler_slowdown: float = 4.0  # how much longer a straggling step takes
    bandwidth: float = 1e9  # bytes per second of every link: one per worker, one per server shard
    latency: float = 1e-4  # seconds per message, on top of bytes / bandwidth
    latency_spread: float = 0.0  # relative spread of each message's latency (sigma of a mean-one lognormal)
    network: AlphaBeta | None = None  # a fitted alpha-beta model: sets latency = alpha, bandwidth = beta
    apply_time: float | None = None  # server seconds per update, one shard (None: 3 x bytes at 1e10 B/s)
    servers: int = 1  # k server shards, each owning 1/k of the parameters and its own link
    evals_per_epoch: int = 4  # test-set evaluations per epoch (the curves' points)
    seed: int = 0  # seeds the model, the shuffles and the timing
    # pulls take the next mini-batch of one shared order of the run (dlcourse.data.shared_order, as
    # the real server deals it), so a fast worker takes more of the epoch. None: the policy's default,
    # True for async, bounded and softsync with S < N, False otherwise; False: each worker reads
    # its own shard (a fast one re-reads it); True needs one of those asynchronous policies
    shared_batches: bool | None = None

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
        if self.max_staleness is not None:
            check_int("max_staleness", self.max_staleness, low=0)
            if self.policy not in ("async", "bounded"):
                raise ValueError(
                    f"max_staleness needs policy 'async' or 'bounded' (S = 1: a soft-sync group could "
                    f"wait on a worker the gate holds back), got policy {self.policy!r}"
                )
        check_float("lr", self.lr, low=0.0, low_open=True)
        resolve_lr_policy(self.lr_policy)
        self.check_rules()
        check_choice("reduce", self.reduce, REDUCTIONS)
        if self.aggregate is not None and self.reduce != "mean":
            raise ValueError(
                f"reduce must be 'mean' with an aggregate (it takes the mean), got {self.reduce!r}"
            )
        check_choice("model", self.model, ("mlp", "cnn"))
        check_int("epochs", self.epochs, low=1)
        check_int("batch_size", self.batch_size, low=1)
        check_float("device_flops", self.device_flops, low=0.0, low_open=True)
        if self.compute_mean is not None:
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
        if self.network is not None:
            if not isinstance(self.network, AlphaBeta):
                raise ValueError(
                    f"network must be a dlcourse.collectives.AlphaBeta (see fit_alpha_beta) or None, "
                    f"got {self.network!r}"
                )
            if self.network.large_bytes is not None:
                raise ValueError(
                    f"network must be a one-regime AlphaBeta (the simulator prices a message with one "
                    f"bandwidth; fit with max_regimes=1), got {self.network!r}"
                )
            # a message then costs alpha + bytes / beta, the fitted model of this machine's network
            self.latency = self.network.alpha_s
            self.bandwidth = self.network.beta_bytes_per_s
        check_float("bandwidth", self.bandwidth, low=0.0, low_open=True)
        check_float("latency", self.latency, low=0.0)
        check_float("latency_spread", self.latency_spread, low=0.0, high=3.0)
        if self.apply_time is not None:
            check_float("apply_time", self.apply_time, low=0.0)
        check_int("servers", self.servers, low=1)
        check_int("evals_per_epoch", self.evals_per_epoch, low=1)
        check_int("seed", self.seed, low=0)
        if self.shared_batches is not None and not isinstance(self.shared_batches, bool):
            raise ValueError(
                f"shared_batches must be True, False or None (the policy's default), "
                f"got {self.shared_batches!r}"
            )
        if self.shared_batches and not self._asynchronous_server:
            raise ValueError(
                f"shared_batches needs an asynchronous parameter-server policy ('async', 'bounded' or "
                f"'softsync', with S < num_workers: a synchronous step takes one batch of every worker's "
                f"shard), got policy {self.policy!r} with S = {self.effective_softsync} and "
                f"num_workers = {self.num_workers}"
            )

    @property
    def effective_softsync(self) -> int:
        """S as the server uses it: N for sync, 1 for async and bounded."""
        if self.policy == "sync":
            return self.num_workers
        if self.policy == "softsync":
            return self.softsync
        return 1

    @property
    def _asynchronous_server(self) -> bool:
        return self.policy in ("async", "bounded", "softsync") and self.effective_softsync < self.num_workers

    @property
    def effective_shared_batches(self) -> bool:
        """Whether pulls take their mini-batches from one shared order (``shared_batches``, or by
        default: yes for the asynchronous parameter-server policies, no for the others)."""
        return self._asynchronous_server if self.shared_batches is None else self.shared_batches

    @property
    def effective_bound(self) -> int | None:
        """The staleness bound the gate enforces (only policy "bounded" has one)."""
        return self.staleness_bound if self.policy == "bounded" else None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["lr_policy"] = lr_policy_name(self.lr_policy)
        d.update({name: None for name in RULES}, **self.staleness_rule_names())
        d["worker_speeds"] = list(self.worker_speeds) if self.worker_speeds is not None else None
        d["shared_batches"] = self.effective_shared_batches
        return d
