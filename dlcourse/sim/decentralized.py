"""Decentralized async SGD with compressed updates in the simulated cluster (Strom 2015).

Nikko Strom, "Scalable distributed DNN training using commodity GPU cloud computing",
Interspeech 2015. The same scheme as :mod:`dlcourse.decentralized`, on the virtual clock
of :mod:`dlcourse.sim`: no server; N replicas; after each step a worker compresses its
update with a real :class:`~dlcourse.compression.Compressor` and sends the **real message
bytes** to its peers (``topology="all"``) or to the next rank of a ring, which forwards
it. A message occupies the sender's outgoing link for ``latency + bytes / bandwidth``;
a worker starts its next step only once its own messages are on the wire, so when the
network is the bottleneck, smaller messages mean more steps per second. This is where
the lesson shows traffic falling by orders of magnitude::

    from dlcourse.sim import simulate
    from dlcourse.sim.decentralized import DecentralizedSimConfig
    dense = simulate(DecentralizedSimConfig(num_workers=8, bandwidth=1e7))
    sparse = simulate(DecentralizedSimConfig(num_workers=8, bandwidth=1e7, tau=0.003))
    dense.bytes_sent / sparse.bytes_sent        # a few hundred

or ``dlcourse simulate --policy decentralized --workers 8 --tau 0.003 --bandwidth 1e7``.

Staleness of a step here: how many updates had already been computed somewhere in the
cluster but had not reached this worker's replica when it started computing (0 for a
single worker; grows with N and with slow links).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.collectives import TOPOLOGIES, peers
from dlcourse.compression import CompressionSettings, read_message
from dlcourse.sim.cluster import Cluster
from dlcourse.sim.config import SimConfig, register_policy


@dataclass
class DecentralizedSimConfig(SimConfig, CompressionSettings):
    """:class:`~dlcourse.sim.SimConfig` plus the compression of the decentralized policy
    (:class:`~dlcourse.compression.CompressionSettings`, as the real run's) and the fields below."""

    policy: str = "decentralized"  # the policy registered by this module
    topology: str = "all"  # "all": every peer; "ring": the next rank, which forwards
    warmup_workers: int | None = None  # workers that train alone at first (None: all from the start)
    warmup_fraction: float = 0.0  # fraction of the first epoch during which only they train

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_compression()
        check_choice("topology", self.topology, TOPOLOGIES)
        if self.warmup_workers is not None:
            check_int("warmup_workers", self.warmup_workers, low=1, high=self.num_workers)
        self.warmup_fraction = check_float("warmup_fraction", self.warmup_fraction, low=0.0, high=1.0)

    def as_dict(self) -> dict:
        d = super().as_dict()
        d.update(self.rule_names())
        return d

    @classmethod
    def extend(cls, config: SimConfig, **decentralized) -> DecentralizedSimConfig:
        """``config`` as a :class:`DecentralizedSimConfig`, with ``decentralized`` fields set."""
        if not isinstance(config, SimConfig):
            raise ValueError(f"config must be a SimConfig, got {type(config).__name__}")
        fields = {k: getattr(config, k) for k in SimConfig.__dataclass_fields__}
        return cls(**fields, **decentralized)


def run_decentralized(cluster: Cluster) -> None:
    """Policy ``decentralized``: replicas, compressed messages, no server."""
    c = cluster.config
    if not isinstance(c, DecentralizedSimConfig):  # a plain SimConfig(policy="decentralized"): the defaults
        c = DecentralizedSimConfig.extend(c)
    topology, n = c.topology, c.num_workers
    steps_each = c.epochs * cluster.batches_per_shard
    replicas = [cluster.W.clone() for _ in range(n)]
    compressors = [c.compressor(cluster.W.numel()) for _ in range(n)]
    active = c.warmup_workers or n
    # Strom's "fewer nodes early": the others join after `warmup` steps of the first epoch
    warmup = int(c.warmup_fraction * cluster.batches_per_shard) if active < n else 0
    quota = [steps_each - (warmup if w >= active else 0) for w in range(n)]
    joined = [w < active for w in range(n)]
    link_free = [0.0] * n  # when each worker's outgoing link is next free
    steps = [0] * n  # steps each worker has finished
    contains = [0] * n  # updates (own and peers') already in each replica
    state = {"finished": 0}  # steps finished in the whole cluster

    def replica_mean() -> torch.Tensor:  # the model this policy reports: the replicas' mean
        return torch.stack(replicas).mean(0)

    def transmit(src: int, dst: int, nbytes: int, update, origin: int) -> float:
        start = max(cluster.now, link_free[src])
        link_free[src] = start + cluster.message_time(nbytes)  # counts the bytes, too
        cluster.schedule(link_free[src], arrive, dst, nbytes, update, origin)
        return link_free[src]

    def arrive(w: int, nbytes: int, update, origin: int) -> None:
        update.add_to(replicas[w])
        contains[w] += 1
        nxt = (w + 1) % n
        if topology == "ring" and nxt != origin:
            transmit(w, nxt, nbytes, update, origin)  # forward: it has not gone round yet

    def start(w: int) -> None:
        if steps[w] >= quota[w]:
            cluster.done_at[w] = cluster.now
            return
        tau_w = state["finished"] - contains[w]  # updates made elsewhere, not yet here
        grad, size = cluster.gradient(w, replicas[w])  # real gradient at this replica
        end = cluster.now + cluster.compute_time(w)
        cluster.record(w, "compute", cluster.now, end)
        cluster.schedule(end, finish, w, grad, size, tau_w)

    def finish(w: int, grad: torch.Tensor, size: int, tau_w: int) -> None:
        message = compressors[w].compress(-c.lr * grad)
        update = read_message(message)  # decoded once; every receiver adds the same
        update.add_to(replicas[w])  # a worker applies what it sends, like its peers
        steps[w] += 1
        contains[w] += 1
        state["finished"] += 1
        sent_by = cluster.now
        for p in peers(w, n, topology):
            sent_by = transmit(w, p, len(message), update, w)
        if sent_by > cluster.now:
            cluster.record(w, "push", cluster.now, sent_by)
        cluster.applied([tau_w], size, replica_mean)
        cluster.schedule(sent_by, start, w)
        if not all(joined) and min(steps[:active]) >= warmup:
            for late in range(active, n):  # warm-up over: the late workers join now
                joined[late] = True
                cluster.record(late, "wait", 0.0, cluster.now)
                cluster.schedule(cluster.now, start, late)

    for w in range(active):
        cluster.schedule(0.0, start, w)
    if warmup == 0:
        for w in range(active, n):
            joined[w] = True
            cluster.schedule(0.0, start, w)
    cluster.run_events()
    cluster.final_params = replica_mean()


register_policy("decentralized", run_decentralized)
