"""The parameter server on the simulated cluster: policies sync, async, softsync, bounded.

N workers and one parameter server (Dean et al., "Large Scale Distributed Deep Networks",
NIPS 2012), split into k shards that each own 1/k of the parameters and one network link.
One worker step: **pull** the parameters (the server answers once this worker's own last
update is applied: "read your writes"), **compute** a real gradient, **push** it; then the
next step starts at once. Pulls and pushes queue on the server shards' links
(:meth:`~dlcourse.sim.cluster.Cluster.server_message`). The server applies arriving updates
one at a time, first come first served, with the rules of :mod:`dlcourse.staleness`:

- ``async``: every update is applied on arrival (S = 1); staleness grows with N.
- ``softsync``: the server collects S updates, then applies their mean (Zhang et al.,
  IJCAI 2016; ``reduce="sum"``: their sum, the lecture's formula as written); a worker
  whose update waits in an unfinished batch waits with it.
- ``sync``: S = N, so each step averages one gradient from every worker, all computed
  from the same parameters: synchronous data parallelism and its "last executor" effect.
- ``bounded``: async, but a worker may start its step c only while c is at most
  ``staleness_bound`` ahead of the slowest worker's applied steps (stale synchronous
  parallel, Ho et al., NIPS 2013). The gate counts *applied* steps and is consulted when
  the pull is served, so a worker starting clock c sees every update of clocks < c - b.
- ``max_staleness`` sigma_max (policies ``async`` and ``bounded``): the staleness gate, the
  lecture's own words ("delay the faster workers ... so that the maximum staleness is below
  a threshold"). A pull is served only if no update in flight could then be applied with a
  staleness above sigma_max (:class:`~dlcourse.staleness.StalenessGate`); with ``bounded``
  both gates must agree.

In the asynchronous policies each served pull takes the next mini-batch of one shared order of
the run (:func:`dlcourse.data.shared_order`, as the real server hands it out), so a fast worker
does more steps and the run ends when the order is used up; ``sync`` gives every worker one
batch of its own shard per step. Workers waiting on a gate are served least-served first (then
by index), as the real server answers them, so a gate cannot starve one of them.

Staleness sigma is counted in server versions for every policy (:mod:`dlcourse.staleness`);
the clock gate's clock lag is recorded apart (``clock_lag``, policy ``bounded``).

This is the worked example of a policy for :class:`dlcourse.sim.cluster.Cluster`: only the
order of events is written here; time, gradients and records are the cluster's.
"""

from __future__ import annotations

import torch

from dlcourse.sim.cluster import Cluster
from dlcourse.sim.config import register_policy
from dlcourse.staleness import BoundedStaleness, SoftSync, StalenessGate


def run_parameter_server(cluster: Cluster) -> None:
    """Policies sync, async, softsync, bounded: N workers, one (sharded) parameter server."""
    c = cluster.config
    n = c.num_workers
    S = c.effective_softsync
    gate = BoundedStaleness(n, c.effective_bound, c.gate) if c.effective_bound is not None else None
    sgate = StalenessGate(n, c.max_staleness) if c.max_staleness is not None else None
    k = c.servers
    # shard j owns W[bounds[j]:bounds[j+1]] and runs its own soft-sync rule; all shards
    # see the same updates in the same order, so they stay at the same version
    bounds = cluster.shard_bounds
    shards = [
        SoftSync(n, S, c.lr, c.lr_policy, c.reduce, staleness_fn=c.staleness_fn, aggregate=c.aggregate)
        for _ in range(k)
    ]
    W_parts = [[cluster.W[bounds[j] : bounds[j + 1]]] for j in range(k)]
    state = {"started": 0, "server_free": 0.0}
    steps = [0] * n  # steps each worker has started (its SSP clock once they are applied)
    outstanding = [0] * n  # this worker's updates pushed but not yet applied
    blocked_since: list[float | None] = [None] * n  # since when w wants its next pull
    gated: list[int] = []  # workers held back by a gate (their own updates are applied)
    # (worker, step, examples, pulled clock, gradient, pulled version) of the updates in the batch
    batch: list[tuple[int, int, int, int, torch.Tensor, int]] = []

    def want(w: int) -> None:  # w is ready for its next step (its push arrived, or the start)
        blocked_since[w] = cluster.now
        try_start(w)

    def try_start(w: int) -> None:
        # read your writes: the pull waits until w's own last update is in W. With S = 1
        # this is what makes N = 1 plain SGD; with S = N, every worker of a step then
        # starts from the same parameters (synchronous SGD)
        if outstanding[w]:
            return  # tried again when its update is applied
        if gate is not None and not gate.may_start(w):
            gated.append(w)  # SSP: too far ahead of the slowest; tried again when the clock moves
            return
        if sgate is not None and not sgate.may_start(w, shards[0].version):
            gated.append(w)  # an update in flight could exceed sigma_max; tried again after an apply
            return
        serve_pull(w)

    def serve_pull(w: int) -> None:  # the server sends W; w computes from this snapshot
        now = cluster.now
        since, blocked_since[w] = blocked_since[w], None
        if state["started"] >= cluster.total_steps:
            return  # nothing left to do: w is done since its last push arrived
        state["started"] += 1
        if since is not None:
            cluster.record(w, "wait", since, now)
        step = steps[w]
        steps[w] += 1
        pulled = shards[0].version
        clock = gate.clock if gate is not None else 0
        if sgate is not None:
            sgate.start(w, pulled)
        cluster.pull_log.append((w, step, cluster.updates))
        grad, size = cluster.gradient(w, cluster.W)  # real gradient; only its timing is simulated
        t1 = cluster.server_message()
        t2 = t1 + cluster.compute_time(w, size)
        cluster.record(w, "pull", now, t1)
        cluster.record(w, "compute", t1, t2)
        cluster.schedule(t2, push, w, step, grad, size, pulled, clock)

    def push(w: int, step: int, grad: torch.Tensor, size: int, pulled: int, clock: int) -> None:
        t3 = cluster.server_message()  # queues on the server's link from now, not from the pull
        cluster.record(w, "push", cluster.now, t3)
        cluster.schedule(t3, arrive, w, step, grad, size, pulled, clock)

    def arrive(w: int, step: int, grad: torch.Tensor, size: int, pulled: int, clock: int) -> None:
        outstanding[w] += 1
        cluster.done_at[w] = cluster.now
        start = max(cluster.now, state["server_free"])
        end = start + cluster.apply_time
        state["server_free"] = end
        cluster.record_server(start, end)
        cluster.schedule(end, apply, w, step, grad, size, pulled, clock)
        want(w)

    def apply(w: int, step: int, grad: torch.Tensor, size: int, pulled: int, clock: int) -> None:
        batch.append((w, step, size, clock, grad, pulled))
        if len(batch) == S:
            finish_batch()

    def finish_batch() -> None:
        # the rule sums in worker order, not arrival order (as the real server does): the
        # numbers of a synchronous run do not depend on its timing
        members = sorted(batch, key=lambda m: m[0])
        batch.clear()
        sigmas = None
        for _, _, _, _, grad, pulled in members:
            if k == 1:  # one shard owns all of W (no slicing: this runs once per update)
                sigmas = shards[0].receive(W_parts[0], [grad], pulled)
                continue
            for j in range(k):
                sigmas = shards[j].receive(W_parts[j], [grad[bounds[j] : bounds[j + 1]]], pulled)
        if sigmas is None:  # fewer than S left at the end: apply them rather than drop them
            for j in range(k):
                sigmas = shards[j].flush(W_parts[j])
        members = [m[:4] for m in members]
        cluster.apply_log.extend((w, step) for w, step, _, _ in members)
        clock_before = 0
        if gate is not None:
            clock_before = gate.clock
            cluster.clock_lag.extend(clock_before - pulled for _, _, _, pulled in members)
            for w, _, _, _ in members:
                gate.finish(w)  # the gate counts applied steps
        if sgate is not None:
            for w, _, _, _ in members:
                sgate.finish(w)
        cluster.applied(sigmas, sum(size for _, _, size, _ in members), cluster.W)
        for w, _, _, _ in members:
            outstanding[w] -= 1
        ready = [w for w, _, _, _ in members if blocked_since[w] is not None]
        # the slowest moved (clock gate) or an update left the air (staleness gate): retry
        if gated and (sgate is not None or gate.clock > clock_before):
            ready += gated
            gated.clear()
        # least-served first, then by index (as the real server answers): a gated worker that
        # has had fewer pulls goes before the one whose update was just applied, so a gate
        # cannot starve one worker of pulls
        for v in sorted({v for v in ready if blocked_since[v] is not None}, key=lambda v: (steps[v], v)):
            try_start(v)

    for w in range(n):
        cluster.schedule(0.0, want, w)
    cluster.run_events()
    if batch:  # fewer than S left at the end
        finish_batch()
        cluster.run_events()


for _policy in ("sync", "async", "softsync", "bounded"):  # they differ only in S and the bound
    register_policy(_policy, run_parameter_server)


def incorporation_delays(result) -> list[float]:
    """Virtual seconds from each update's push until another worker first computes from it.

    The lecture's second argument for asynchronous SGD: workers "incorporate information
    (parameter updates) from other workers sooner than when using synchronous updating".
    For every applied update (in ``result.apply_log`` order) this finds the earliest moment
    another worker starts computing from parameters that contain it (its pull has arrived,
    ``result.pull_log`` says how many updates that pull held) and subtracts the moment the
    update was pushed (its compute ended, ``result.trace``). Updates no other worker ever
    pulled (the last ones) are left out.
    """
    n = result.config.num_workers
    pushed: list[list[float]] = [[] for _ in range(n)]  # worker -> end of each compute, in step order
    arrived: list[list[float]] = [[] for _ in range(n)]  # worker -> end of each pull (computing starts)
    for e in result.trace:
        if e.kind == "compute":
            pushed[e.worker].append(e.end)
        elif e.kind == "pull":
            arrived[e.worker].append(e.end)
    pulls = sorted((held, arrived[w][step], w) for w, step, held in result.pull_log)
    first: dict[int, float] = {}  # worker -> earliest start among the pulls added so far
    delays = []
    for i in range(len(result.apply_log) - 1, -1, -1):  # the pulls holding update i: held > i
        while pulls and pulls[-1][0] > i:
            _, t, w = pulls.pop()
            first[w] = min(t, first.get(w, t))
        worker, step = result.apply_log[i]
        others = [t for w, t in first.items() if w != worker]
        if others:
            delays.append(min(others) - pushed[worker][step])
    return delays[::-1]
