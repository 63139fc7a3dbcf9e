"""The parameter server on the simulated cluster: policies sync, async, softsync, bounded.

N workers and one parameter server (Dean et al., "Large Scale Distributed Deep Networks",
NIPS 2012), split into k shards that each own 1/k of the parameters. One worker step:
**pull** the parameters (the server answers once this worker's own last update is applied:
"read your writes"), **compute** a real gradient, **push** it; then the next step starts
at once. The server applies arriving updates one at a time, first come first served, with
the rules of :mod:`dlcourse.staleness`:

- ``async``: every update is applied on arrival (S = 1); staleness grows with N.
- ``softsync``: the server collects S updates, then applies their mean (Zhang et al.,
  IJCAI 2016); a worker whose update waits in an unfinished batch waits with it.
- ``sync``: S = N, so each step averages one gradient from every worker, all computed
  from the same parameters: synchronous data parallelism and its "last executor" effect.
- ``bounded``: async, but a worker may start a step only while it is at most
  ``staleness_bound`` steps ahead of the slowest (stale synchronous parallel, Ho et al.,
  NIPS 2013); staleness is counted in that clock.

This is the worked example of a policy for :class:`dlcourse.sim.cluster.Cluster`: only the
order of events is written here; time, gradients and records are the cluster's.
"""

from __future__ import annotations

import torch

from dlcourse.sim.cluster import Cluster
from dlcourse.sim.config import register_policy
from dlcourse.staleness import BoundedStaleness, SoftSync


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


for _policy in ("sync", "async", "softsync", "bounded"):  # they differ only in S and the bound
    register_policy(_policy, run_parameter_server)
