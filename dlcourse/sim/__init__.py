"""The simulated cluster: distributed SGD on a virtual clock, with real gradients.

A deterministic discrete-event simulation of N workers and a parameter server (Dean et
al., "Large Scale Distributed Deep Networks", NIPS 2012). Every worker computes a *real*
gradient of a real model on its own shard's mini-batches, from the parameters it last
pulled; only **time** is simulated: compute time from the model's FLOPs, the batch and the
device speed, with a seeded spread and stragglers; message time ``latency + bytes /
bandwidth`` on links that queue (a message carries all parameters; each server shard has
one link that every worker shares); and the server's time to apply an update, split over k
server shards. The same config and seed
give the same parameters, trace and curves on every machine, fast enough for widgets::

    from dlcourse.sim import SimConfig, simulate
    result = simulate(SimConfig(num_workers=8, policy="async", epochs=2))
    result.staleness_summary()    # {'max': ..., 'mean': ~7, 'histogram': {...}}
    result.to_json()              # the metrics every runtime writes (see DESIGN.md)

or ``dlcourse simulate --policy softsync --softsync 4 --workers 8 --json sim.json``.

Read it in this order:

- :mod:`dlcourse.sim.config`: what you set (:class:`SimConfig`) and the policy registry;
- this module: :func:`simulate`; :mod:`dlcourse.sim.result`: what you get (:class:`SimResult`);
- :mod:`dlcourse.sim.cluster`: the machinery every policy shares (:class:`Cluster`: virtual
  clock, timing model, real gradients, records);
- :mod:`dlcourse.sim.parameter_server`: the policies ``sync``, ``async``, ``softsync`` and
  ``bounded`` (Zhang et al. 2016; Ho et al. 2013), the worked example of a policy;
  :mod:`dlcourse.sim.decentralized` adds ``decentralized`` (Strom 2015).

Adding a policy: write ``run(cluster: Cluster) -> None`` and ``register_policy("name", run)``;
:func:`simulate` builds the :class:`SimResult` from what the cluster recorded.
"""

from __future__ import annotations

import functools
import math
import time

import torch

from dlcourse.data import MnistSplit, load_mnist
from dlcourse.divergence import Diverged
from dlcourse.sim.cluster import KINDS, Cluster, EvalPoint, TraceEvent
from dlcourse.sim.config import POLICIES, SimConfig, register_policy
from dlcourse.sim.decentralized import DecentralizedSimConfig  # importing a family registers its policies
from dlcourse.sim.parameter_server import run_parameter_server
from dlcourse.sim.result import SimResult

__all__ = [  # the simulator's public names, wherever they live
    "KINDS",
    "POLICIES",
    "Cluster",
    "DecentralizedSimConfig",
    "EvalPoint",
    "SimConfig",
    "SimResult",
    "TraceEvent",
    "default_data",
    "register_policy",
    "run_parameter_server",
    "simulate",
]


@functools.lru_cache(maxsize=2)
def default_data(source: str = "subset") -> MnistSplit:
    """``load_mnist(source)``, loaded once per process: a widget's redraws pay only for simulating."""
    return load_mnist(source)


# what the cluster recorded goes into the SimResult as it is (same names)
_RECORDED = (
    "trace",
    "server_busy",
    "link_busy",
    "staleness",
    "clock_lag",
    "pull_log",
    "apply_log",
    "evals",
    "step_loss",
    "examples",
    "updates",
    "server_steps",
    "bytes_sent",
    "eval_s",
    "handed",
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
    diverged = None
    try:
        cluster = Cluster(config, data.train, data.test)
        POLICIES[config.policy](cluster)
    except Diverged as e:  # the run stops there; what it recorded so far goes with the error
        diverged = e
        cluster.evals[:] = [p for p in cluster.evals if math.isfinite(p.loss)]
    finally:
        torch.set_num_threads(threads)
    final = cluster.final_params if cluster.final_params is not None else cluster.W
    if diverged is None and (
        cluster.evals[-1].epoch < cluster.examples / cluster.epoch_examples or len(cluster.evals) == 1
    ):
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
    links = [sum(e - s for s, e in intervals) for intervals in cluster.link_busy]
    result = SimResult(
        config=config,
        **{name: getattr(cluster, name) for name in _RECORDED},
        virtual_s=virtual_s,
        idle_fraction=idle,
        server_utilization=busy / virtual_s if virtual_s > 0 else 0.0,
        link_utilization=[b / virtual_s if virtual_s > 0 else 0.0 for b in links],
        params=final.clone(),
        data_source=getattr(data, "source", "custom"),
        real_s=time.perf_counter() - start,
    )
    if diverged is not None:
        diverged.partial = result  # a panel draws the curves up to the divergence
        raise diverged
    return result
