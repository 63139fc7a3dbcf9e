"""The collectives of data parallelism, written out: distribute a copy, average, and their cost.

The lecture's data-parallel procedures need two collective operations among the N
workers: "distribute a copy of the current parameters to each worker" (a ``broadcast``
from rank 0) and "set the global parameters to the average" of the workers' parameters
or gradients (an ``all_reduce`` then a division by N). Each is a loop over the model's
tensors here, so that a student sees every message; ``DistributedDataParallel`` does the
same in buckets that overlap with backward (Li et al., "PyTorch Distributed", VLDB 2020).

The cost: a ring all-reduce (Patarasuk and Yuan, "Bandwidth Optimal All-reduce
Algorithms", JPDC 2009) sends ``2 (N-1)`` times the tensor's bytes in all, whatever N.
It is a reduce-scatter followed by an all-gather, which ZeRO (Rajbhandari et al. 2020)
uses on their own: :func:`ring_reduce_scatter` and :func:`ring_all_gather` are written
from ``isend``/``recv`` around the ring, N - 1 steps each, (N-1)/N of the tensor sent per
rank.

**The alpha-beta model** (:class:`AlphaBeta`; Hockney 1994), the one definition of a
collective's predicted time: with ``steps`` messages in sequence (:func:`collective_steps`)
and ``b`` bytes sent per rank (:func:`bytes_per_rank`),

    time = steps * alpha + min(b, c) / beta + max(0, b - c) / beta_large

alpha the latency of a message (seconds), beta the bandwidth (bytes per second) up to the
crossover c = ``large_bytes`` per rank and beta_large beyond it. With no crossover (c
infinite, the default) it is the plain ``steps * alpha + b / beta``. A bandwidth that
depends on the message size is PLogP's size-dependent gap (Kielmann et al., "Fast
measurement of LogP parameters for message passing platforms", 2000). :func:`fit` fits
the numbers to measured times (relative least squares; a crossover only where one
bandwidth misses), :func:`fit_alpha_beta` measures gloo on real processes and fits.

Why one bandwidth is not enough for gloo on a CPU: ``reduce_scatter_tensor`` is not a
ring reduce-scatter there. ProcessGroupGloo clones the input, runs a whole all-reduce on
the clone and copies this rank's chunk out (measured: the same time as doing those three
by hand), and ``all_gather_into_tensor`` gathers into a freshly allocated flat buffer and
copies it into the output. From 32 MB up glibc serves every such allocation with fresh
pages (32 MB is its largest ``mmap`` threshold), which the kernel faults in and zeroes at
every call: here a 64 MB clone took 26 ms, three times as long per byte as a 16 MB one,
and 11 ms with ``MALLOC_MMAP_THRESHOLD_`` raised to 1 GB. So their bytes cost more from
~16 MB up, and one model per collective with a second bandwidth follows that
(``benchmarks/collectives.py`` prints predicted / measured on sizes it was not fitted to).

Call the collectives inside :func:`dlcourse.launcher.launch` (or under ``torchrun``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.models import check_model


def _check_collective(model: Any) -> None:
    check_model(model)
    if not dist.is_initialized():
        raise RuntimeError("no process group: run this inside dlcourse.launcher.launch (or torchrun)")


@torch.no_grad()
def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Give every worker the parameters of rank ``src`` ("distribute a copy")."""
    _check_collective(model)
    check_int("src", src, low=0, high=dist.get_world_size() - 1)
    for p in model.parameters():
        dist.broadcast(p, src=src)


@torch.no_grad()
def average_gradients(model: nn.Module) -> None:
    """Replace every worker's gradient by the mean over the N workers (one all-reduce each)."""
    _check_collective(model)
    world_size = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world_size)


@torch.no_grad()
def average_parameters(model: nn.Module) -> None:
    """Set every worker's parameters to their mean over the N workers (one all-reduce each).

    Step 4 of the lecture's parameter averaging: "set the global parameters to the average".
    """
    _check_collective(model)
    world_size = dist.get_world_size()
    for p in model.parameters():
        dist.all_reduce(p, op=dist.ReduceOp.SUM)
        p.div_(world_size)


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of all parameters (what one copy of the model sends)."""
    check_model(model)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def ring_allreduce_bytes(nbytes: int, num_workers: int) -> int:
    """Bytes all N workers send together in a ring all-reduce of ``nbytes``: ``2 (N-1) nbytes``."""
    check_int("nbytes", nbytes, low=0)
    check_int("num_workers", num_workers, low=1)
    return 2 * (num_workers - 1) * nbytes


TOPOLOGIES = ("all", "ring")  # whom a decentralized worker sends its update to


def peers(rank: int, world_size: int, topology: str) -> list[int]:
    """The ranks ``rank`` sends its own updates to: every other one, or the next on a ring.

    On a ring each receiver forwards what it got to its own next rank until the update has
    gone round, so every worker still sees every update, one hop later per step of the ring.
    """
    check_int("world_size", world_size, low=1)
    check_int("rank", rank, low=0, high=world_size - 1)
    check_choice("topology", topology, TOPOLOGIES)
    if world_size == 1:
        return []
    if topology == "ring":
        return [(rank + 1) % world_size]
    return [r for r in range(world_size) if r != rank]


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """One flat tensor that the model's parameters become views of.

    Loading or updating all parameters is then a single tensor operation on the result
    (the simulator loads pulled parameters this way; a decentralized worker adds updates).
    """
    check_model(model)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    offset = 0
    for p in model.parameters():
        p.data = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return flat


# ----------------------------------------------------------------------------------------------
# Reduce-scatter and all-gather around a ring, and what they cost (the alpha-beta model)
#
# A ring all-reduce is a reduce-scatter (after N-1 steps rank r holds the sum of chunk r)
# followed by an all-gather (N-1 more steps pass the finished chunks round). ZeRO uses the
# halves on their own: reduce-scatter the gradients, all-gather the parameters.

COLLECTIVE_OPS = ("all_reduce", "reduce_scatter", "all_gather", "send")


def _ring_setup(tensor: Any, name: str) -> tuple[int, int, int, int]:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not dist.is_initialized():
        raise RuntimeError("no process group: run this inside dlcourse.launcher.launch (or torchrun)")
    world_size, rank = dist.get_world_size(), dist.get_rank()
    return world_size, rank, (rank + 1) % world_size, (rank - 1) % world_size


def _exchange(send: torch.Tensor, recv: torch.Tensor, to: int, frm: int) -> None:
    """Send to the next rank while receiving from the previous one (no ring-wide deadlock)."""
    request = dist.isend(send.contiguous(), dst=to)
    dist.recv(recv, src=frm)
    request.wait()


@torch.no_grad()
def ring_reduce_scatter(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the N ranks and return this rank's chunk of the sum (flat).

    The tensor is flattened and padded with zeros at the end to a multiple of N, then cut into
    N equal chunks; rank r gets chunk r, ``ceil(numel / N)`` elements (the last rank's tail is
    the padding, summed zeros). In step s = 0..N-2 rank r sends its running sum of chunk
    ``r - s - 1`` to rank r + 1 and adds what rank r - 1 sends, chunk ``r - s - 2``: after
    N - 1 steps chunk r is complete on rank r. Equals ``dist.reduce_scatter_tensor``.
    """
    world_size, rank, nxt, prv = _ring_setup(tensor, "tensor")
    chunk = -(-tensor.numel() // world_size)
    flat = torch.zeros(chunk * world_size, dtype=tensor.dtype, device=tensor.device)
    flat[: tensor.numel()] = tensor.reshape(-1)
    chunks = flat.view(world_size, chunk)
    incoming = torch.empty(chunk, dtype=tensor.dtype, device=tensor.device)
    for step in range(world_size - 1):
        _exchange(chunks[(rank - step - 1) % world_size], incoming, nxt, prv)
        chunks[(rank - step - 2) % world_size] += incoming
    return chunks[rank].clone()


@torch.no_grad()
def ring_all_gather(shard: torch.Tensor, numel: int | None = None) -> torch.Tensor:
    """Concatenate every rank's ``shard`` in rank order (flat), passing shards round a ring.

    Every rank must give a shard of the same number of elements. In step s = 0..N-2 rank r
    sends shard ``r - s`` to rank r + 1 and receives shard ``r - s - 1`` from rank r - 1.
    ``numel`` drops the padding :func:`ring_reduce_scatter` added: the first ``numel``
    elements are returned. Equals ``dist.all_gather_into_tensor``.
    """
    world_size, rank, nxt, prv = _ring_setup(shard, "shard")
    size = shard.numel()
    if numel is not None:
        check_int("numel", numel, low=0, high=size * world_size)
    chunks = torch.empty(world_size, size, dtype=shard.dtype, device=shard.device)
    chunks[rank] = shard.reshape(-1)
    for step in range(world_size - 1):
        _exchange(chunks[(rank - step) % world_size], chunks[(rank - step - 1) % world_size], nxt, prv)
    flat = chunks.view(-1)
    return flat if numel is None else flat[:numel].clone()


def collective_steps(op: str, num_workers: int) -> int:
    """Messages in sequence on a ring: reduce-scatter and all-gather N-1, all-reduce 2(N-1), send 1."""
    check_choice("op", op, COLLECTIVE_OPS)
    check_int("num_workers", num_workers, low=1)
    if op == "send":
        return 1
    return (num_workers - 1) * (2 if op == "all_reduce" else 1)


def reduce_scatter_bytes(nbytes: float, num_workers: int) -> float:
    """Bytes each rank sends in a ring reduce-scatter of a tensor of ``nbytes``: (N-1)/N of it."""
    check_float("nbytes", nbytes, low=0.0)
    check_int("num_workers", num_workers, low=1)
    return (num_workers - 1) / num_workers * nbytes


def all_gather_bytes(nbytes: float, num_workers: int) -> float:
    """Bytes each rank sends in a ring all-gather whose result has ``nbytes``: (N-1)/N of it."""
    return reduce_scatter_bytes(nbytes, num_workers)


def allreduce_bytes_per_rank(nbytes: float, num_workers: int) -> float:
    """Bytes each rank sends in a ring all-reduce of ``nbytes``: 2(N-1)/N of it (both halves)."""
    return 2 * reduce_scatter_bytes(nbytes, num_workers)


def bytes_per_rank(op: str, nbytes: float, num_workers: int) -> float:
    """Bytes one rank sends in ``op`` on a tensor of ``nbytes`` (``send``: all of it)."""
    check_choice("op", op, COLLECTIVE_OPS)
    if op == "send":
        return check_float("nbytes", nbytes, low=0.0)
    if op == "all_reduce":
        return allreduce_bytes_per_rank(nbytes, num_workers)
    return reduce_scatter_bytes(nbytes, num_workers)


@dataclass(frozen=True)
class AlphaBeta:
    """The alpha-beta (latency-bandwidth) cost model of a collective, with an optional second bandwidth.

    ``time(op, nbytes, N)`` is the module docstring's ``steps * alpha + min(b, c) / beta +
    max(0, b - c) / beta_large`` for ``b`` bytes per rank (Hockney 1994; PLogP's
    size-dependent gap, Kielmann et al. 2000), continuous and increasing in the bytes; one
    regime when ``large_bytes`` is None. Fit it to this machine with :func:`fit_alpha_beta`.
    The simulator (``SimConfig(network=...)``) prices a message with one bandwidth: it
    takes a one-regime model only.
    """

    alpha_s: float = 1e-4  # seconds per message in sequence (latency, software overhead)
    beta_bytes_per_s: float = 1e9  # bytes per second one rank sends (the first large_bytes)
    large_bytes: float | None = None  # bytes per rank after which large_beta applies; None: one regime
    large_beta_bytes_per_s: float | None = None  # bytes per second beyond large_bytes

    def __post_init__(self) -> None:
        check_float("alpha_s", self.alpha_s, low=0.0)
        check_float("beta_bytes_per_s", self.beta_bytes_per_s, low=0.0, low_open=True)
        if (self.large_bytes is None) != (self.large_beta_bytes_per_s is None):
            raise ValueError(
                "large_bytes and large_beta_bytes_per_s must be given together (a second regime) "
                f"or both be None (one regime), got {self.large_bytes!r} and {self.large_beta_bytes_per_s!r}"
            )
        if self.large_bytes is not None:
            check_float("large_bytes", self.large_bytes, low=0.0, low_open=True)
            check_float("large_beta_bytes_per_s", self.large_beta_bytes_per_s, low=0.0, low_open=True)

    def transfer_s(self, nbytes: float) -> float:
        """Seconds for one rank to send ``nbytes``, at beta up to ``large_bytes`` and large_beta beyond."""
        check_float("nbytes", nbytes, low=0.0)
        if self.large_bytes is None or nbytes <= self.large_bytes:
            return nbytes / self.beta_bytes_per_s
        return (
            self.large_bytes / self.beta_bytes_per_s
            + (nbytes - self.large_bytes) / self.large_beta_bytes_per_s
        )

    def time(self, op: str, nbytes: float, num_workers: int) -> float:
        """Predicted seconds of ``op`` (all_reduce, reduce_scatter, all_gather, send) on ``nbytes``."""
        steps = collective_steps(op, num_workers)
        if steps == 0:
            return 0.0
        return steps * self.alpha_s + self.transfer_s(bytes_per_rank(op, nbytes, num_workers))

    def __repr__(self) -> str:
        text = f"AlphaBeta(alpha={self.alpha_s * 1e6:.1f} us, beta={self.beta_bytes_per_s / 1e9:.3f} GB/s"
        if self.large_bytes is None:
            return text + ")"
        return (
            f"{text} up to {_size(self.large_bytes)} per rank, "
            f"{self.large_beta_bytes_per_s / 1e9:.3f} GB/s beyond)"
        )


def _size(nbytes: float) -> str:
    for unit, scale in (("MB", 1 << 20), ("KB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes:g} B"


DEFAULT_SIZES = (1024, 16 * 1024, 256 * 1024, 1024**2, 4 * 1024**2)  # bytes, for a quick fit
FIT_OPS = ("all_reduce", "reduce_scatter", "all_gather")
SMALL_BYTES = 4 << 20  # tensors under this many bytes are timed SMALL_REPEATS times as often
SMALL_REPEATS = 5  # (they take a few milliseconds at most, and one rank's hiccup is as long)


def run_collective(op: str, tensor: torch.Tensor, out: torch.Tensor) -> None:
    """torch.distributed's ``op`` (one of :data:`FIT_OPS`) on ``tensor``; ``out`` is the shard."""
    if op == "all_reduce":
        dist.all_reduce(tensor)
    elif op == "reduce_scatter":
        dist.reduce_scatter_tensor(out, tensor)
    else:
        dist.all_gather_into_tensor(tensor, out)


def repeats_for(nbytes: int, repeats: int) -> int:
    """How many times a tensor of ``nbytes`` is timed: ``repeats``, or SMALL_REPEATS times that under 4 MB."""
    check_int("nbytes", nbytes, low=0)
    check_int("repeats", repeats, low=1)
    return repeats * (SMALL_REPEATS if nbytes < SMALL_BYTES else 1)


def time_collectives(
    rank: int, world_size: int, sizes: tuple[int, ...], repeats: int, ops: tuple[str, ...] = FIT_OPS
) -> dict[tuple[str, int], list[float]]:
    """Inside a worker: seconds of each (op, bytes) of torch.distributed, :func:`repeats_for` times.

    ``bytes`` is the full tensor (the all-gather's result), of zeros (sums stay finite). After
    one warm-up call of each (buffers, connections), the runs go in rounds: every round times
    each (size, op) once, the sizes in a new order each round (the same on every rank, seeded
    by the round), so a disturbance spreads over all sizes instead of shifting one size's
    median, and no size always follows the largest. Each timing starts after a barrier, so
    the ranks start together; the caller takes the slowest rank of each run
    (:func:`slowest_median`).
    """
    import random
    import time

    tensors = {}
    for nbytes in sizes:
        numel = max(world_size, nbytes // 4) // world_size * world_size
        tensors[nbytes] = (torch.zeros(numel), torch.zeros(numel // world_size))
        for op in ops:
            run_collective(op, *tensors[nbytes])
    times: dict[tuple[str, int], list[float]] = {(op, s): [] for s in sizes for op in ops}
    for round_ in range(max(repeats_for(s, repeats) for s in sizes)):
        for nbytes in random.Random(round_).sample(sizes, len(sizes)):
            if round_ >= repeats_for(nbytes, repeats):
                continue
            for op in ops:
                dist.barrier()
                start = time.perf_counter()
                run_collective(op, *tensors[nbytes])
                times[(op, nbytes)].append(time.perf_counter() - start)
    return times


def slowest_median(per_rank: list[dict]) -> dict:
    """For each key (op, bytes): the median over runs of the slowest rank's seconds in that run.

    A collective ends for all when it ends for the last rank, so each run counts as its slowest
    rank's time; the median then drops the runs a passing disturbance slowed.
    """
    import statistics

    if not per_rank or not all(isinstance(r, dict) for r in per_rank):
        raise ValueError(f"per_rank must be a non-empty list of dicts (one per rank), got {per_rank!r}")
    return {
        key: statistics.median(max(r[key][i] for r in per_rank) for i in range(len(runs)))
        for key, runs in per_rank[0].items()
    }


def measure_collectives(
    num_workers: int = 2,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
    repeats: int = 5,
    ops: tuple[str, ...] = FIT_OPS,
) -> dict[tuple[str, int], float]:
    """Seconds of gloo's all-reduce, reduce-scatter and all-gather per tensor size, on N processes.

    One thread per process. Each (op, bytes) is run ``repeats`` times (``SMALL_REPEATS`` times
    as often under 4 MB: small tensors are cheap and their times noisy), in rounds
    (:func:`time_collectives`); each run counts as its slowest rank's time, and the result is
    the median over runs (:func:`slowest_median`). With the defaults: a few seconds.
    """
    from dlcourse.launcher import launch

    check_int("num_workers", num_workers, low=2)
    check_int("repeats", repeats, low=1)
    if not sizes:
        raise ValueError("sizes must name at least one tensor size in bytes, got none")
    for s in sizes:
        check_int("sizes", s, low=4)
    if not ops:
        raise ValueError(f"ops must name at least one of {', '.join(FIT_OPS)}, got none")
    for op in ops:
        check_choice("ops", op, FIT_OPS)
    per_rank = launch(
        time_collectives,
        num_workers,
        tuple(sorted(set(sizes))),
        repeats,
        tuple(ops),
        backend="gloo",
        threads_per_worker=1,
        run_timeout=600,
    )
    return slowest_median(per_rank)


def _nonnegative_lstsq(a: Any, b: Any) -> tuple[Any, float]:
    """``x >= 0`` minimising ``|a x - b|^2``, and that minimum: every set of free columns is tried.

    ``a`` has at most three columns here (alpha, 1/beta, 1/large_beta): the optimum is the
    unconstrained least squares on the columns it leaves free, so trying all seven sets and
    keeping the best whose free coefficients are all positive finds it.
    """
    import itertools

    import numpy as np

    best_x, best_rss = np.zeros(a.shape[1]), float(b @ b)
    for free in itertools.product((False, True), repeat=a.shape[1]):
        cols = np.flatnonzero(free)
        if cols.size == 0:
            continue
        x_free = np.linalg.lstsq(a[:, cols], b, rcond=None)[0]
        if np.any(x_free <= 0):
            continue
        x = np.zeros(a.shape[1])
        x[cols] = x_free
        rss = float(np.sum((a @ x - b) ** 2))
        if rss < best_rss:
            best_x, best_rss = x, rss
    return best_x, best_rss


def fit(
    times: dict[tuple[str, int], float],
    num_workers: int,
    op: str | None = None,
    max_regimes: int = 1,
    tolerance: float = 0.1,
) -> AlphaBeta:
    """The :class:`AlphaBeta` model that best fits measured ``{(op, bytes): seconds}``.

    Minimises the relative error ``(predicted - measured) / measured`` (sizes span five
    orders of magnitude: plain least squares would fit only the largest), every parameter
    kept positive (alpha may be 0; a bandwidth the data cannot bound becomes 1e12 B/s).
    ``op`` fits that collective's times only: gloo does not run every collective as a ring
    (for small tensors its all-reduce takes about one latency, not 2(N-1); its
    reduce-scatter is a whole all-reduce), so one model per collective fits better.

    ``max_regimes=2`` allows a second bandwidth, but only where the data need it: where the
    one-bandwidth fit misses some measurement by more than ``tolerance`` (relative; the
    default 10% is about the scatter of these medians on a shared machine). Then each
    measured bytes-per-rank value in turn is tried as ``large_bytes`` (at least two sizes of
    one collective at or below it, one measurement above), alpha and the two bandwidths
    fitted by non-negative least squares for each, and the crossover with the least squared
    relative error is kept.
    Otherwise, and always on data that one bandwidth explains, the result is the plain fit.
    Fit a second regime one collective at a time (``op``): in one fit for all, it can
    stand in for their different latencies (a steep first few kilobytes) instead.
    """
    import numpy as np

    check_int("num_workers", num_workers, low=2)
    check_int("max_regimes", max_regimes, low=1, high=2)
    check_float("tolerance", tolerance, low=0.0)
    if not isinstance(times, dict):
        raise ValueError(f"times must be a dict {{(op, bytes): seconds}}, got {type(times).__name__}")
    if op is not None:
        check_choice("op", op, FIT_OPS)
        times = {key: t for key, t in times.items() if key[0] == op}
    if not times:
        raise ValueError("times must hold at least one measurement, got none")
    steps, sent, seconds = [], [], []
    for (name, nbytes), t in times.items():
        seconds.append(check_float("times", t, low=0.0, low_open=True))
        steps.append(collective_steps(name, num_workers))
        sent.append(bytes_per_rank(name, nbytes, num_workers))
    s, b, t = np.asarray(steps, float), np.asarray(sent, float), np.asarray(seconds)
    ones = np.ones_like(t)
    (alpha, inv_beta), rss = _nonnegative_lstsq(np.column_stack([s, b]) / t[:, None], ones)
    if inv_beta == 0:  # latency alone explains the times: a very fast link
        inv_beta = 1e-12
    plain = AlphaBeta(alpha_s=float(alpha), beta_bytes_per_s=float(1.0 / inv_beta))
    missed = max(
        abs(plain.time(name, nbytes, num_workers) / sec - 1) for (name, nbytes), sec in times.items()
    )
    if max_regimes == 1 or missed <= tolerance:
        return plain
    best = None
    names = np.asarray([name for name, _ in times])
    for c in np.unique(b):
        # the first regime needs two sizes of one collective at or below c (alpha and beta from
        # different collectives alone would trade latency for a steep first kilobyte), one above
        if not any(np.unique(b[(names == name) & (b <= c)]).size >= 2 for name in FIT_OPS) or not np.any(
            b > c
        ):
            continue
        a = np.column_stack([s, np.minimum(b, c), np.maximum(b - c, 0.0)]) / t[:, None]
        x, rss2 = _nonnegative_lstsq(a, ones)
        if x[1] > 0 and x[2] > 0 and rss2 < rss and (best is None or rss2 < best[0]):
            best = (rss2, float(c), x)
    if best is None:
        return plain
    _, c, (alpha, inv_beta, inv_large) = best
    return AlphaBeta(
        float(alpha), float(1 / inv_beta), large_bytes=c, large_beta_bytes_per_s=float(1 / inv_large)
    )


def fit_alpha_beta(
    num_workers: int = 2,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
    repeats: int = 5,
    op: str | None = None,
    max_regimes: int = 1,
) -> AlphaBeta:
    """Measure gloo's collectives on ``num_workers`` real processes and fit the alpha-beta model.

    All-reduce, reduce-scatter and all-gather (or only ``op``) of every size in ``sizes``
    (bytes), as :func:`measure_collectives` times them, fitted by :func:`fit` (one
    bandwidth, or up to ``max_regimes`` = 2): a few seconds with the defaults.
    """
    check_int("max_regimes", max_regimes, low=1, high=2)
    ops = FIT_OPS if op is None else (check_choice("op", op, FIT_OPS),)
    return fit(measure_collectives(num_workers, sizes, repeats, ops), num_workers, max_regimes=max_regimes)
