"""The alpha-beta model of collectives against measured gloo times, and our ring against gloo's.

    python benchmarks/collectives.py [--workers 2 3 4] [--repeats 5] [--max-mb 64]

For each N (default: 2 up to the machine's cores), one launch of N real processes (gloo,
one thread each) times, for tensors of 1 KB to 64 MB:

- torch.distributed's ``all_reduce``, ``reduce_scatter_tensor`` and ``all_gather_into_tensor``;
- ours (:func:`dlcourse.collectives.ring_reduce_scatter`, :func:`ring_all_gather`, and the
  two in a row as a ring all-reduce), from ``isend``/``recv`` around the ring.

Every time is the median over ``--repeats`` runs of the slowest rank (each run starts after
a barrier). Then :func:`dlcourse.collectives.fit` fits alpha and beta to gloo's times of
this same run (all sizes, relative least squares) and the table prints predicted /
measured for every op and size: the model's error where it was fitted (in-sample). A
second column uses a quick fit on sizes up to 4 MB only (what ``fit_alpha_beta`` measures by
default), so 16 and 64 MB are out of sample; a third, one model per collective
(``fit(times, N, op)``). Last column: our ring's time / gloo's. Goal: within 25% everywhere.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist

from dlcourse.collectives import (
    DEFAULT_SIZES,
    FIT_OPS,
    fit,
    ring_all_gather,
    ring_reduce_scatter,
    run_collective,
)
from dlcourse.launcher import launch

KB, MB = 1024, 1024**2


def _ours(op: str, tensor: torch.Tensor, out: torch.Tensor) -> None:
    if op == "reduce_scatter":
        ring_reduce_scatter(tensor)
    elif op == "all_gather":
        ring_all_gather(out)
    else:
        ring_all_gather(ring_reduce_scatter(tensor), numel=tensor.numel())


def time_both(rank, world_size, sizes, repeats):
    """{(impl, op, bytes): [seconds per repeat]} on this rank; runs of ours and gloo's interleaved."""
    times = {}
    for nbytes in sizes:
        numel = max(world_size, nbytes // 4) // world_size * world_size
        tensor, out = torch.ones(numel), torch.ones(numel // world_size)
        for op in FIT_OPS:
            for impl, fn in (("gloo", run_collective), ("ours", _ours)):
                fn(op, tensor, out)  # warm-up
                times[(impl, op, nbytes)] = []
            for _ in range(repeats):
                for impl, fn in (("gloo", run_collective), ("ours", _ours)):
                    dist.barrier()
                    start = time.perf_counter()
                    fn(op, tensor, out)
                    times[(impl, op, nbytes)].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cores = os.cpu_count() or 2
    parser.add_argument("--workers", type=int, nargs="+", default=list(range(2, max(2, cores) + 1)))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-mb", type=int, default=64)
    args = parser.parse_args()
    sizes = [s for s in (KB, 16 * KB, 256 * KB, MB, 4 * MB, 16 * MB, 64 * MB) if s <= args.max_mb * MB]
    print(f"{cores} cores; median of {args.repeats} runs, slowest rank; gloo, 1 thread per rank\n")
    worst = {}
    for n in args.workers:
        per_rank = launch(
            time_both, n, sizes, args.repeats, backend="gloo", threads_per_worker=1, run_timeout=1800
        )
        median = {
            key: statistics.median(max(r[key][i] for r in per_rank) for i in range(args.repeats))
            for key in per_rank[0]
        }
        gloo = {(op, s): median[("gloo", op, s)] for op in FIT_OPS for s in sizes}
        model = fit(gloo, n)
        quick = fit({k: v for k, v in gloo.items() if k[1] <= max(DEFAULT_SIZES)}, n)
        per_op = {op: fit(gloo, n, op) for op in FIT_OPS}
        print(f"N = {n}: one model for all, fitted on all sizes {model}; quick fit (<= 4 MB) {quick}")
        print("   one model per collective: " + ", ".join(f"{op} {m}" for op, m in per_op.items()))
        head = ("gloo ms", "model ms", "pred/meas", "quick/meas", "per-op", "ours/gloo")
        print(f"{'op':<16}{'size':>8}" + "".join(f"{h:>11}" for h in head))
        for op in FIT_OPS:
            for s in sizes:
                measured = gloo[(op, s)]
                ratio = model.time(op, s, n) / measured
                quick_ratio = quick.time(op, s, n) / measured
                ours = median[("ours", op, s)] / measured
                op_ratio = per_op[op].time(op, s, n) / measured
                one, each = worst.get(n, (0.0, 0.0))
                worst[n] = max(one, abs(ratio - 1)), max(each, abs(op_ratio - 1))
                size = f"{s // MB} MB" if s >= MB else f"{s // KB} KB"
                print(
                    f"{op:<16}{size:>8}{measured * 1e3:>11.3f}{model.time(op, s, n) * 1e3:>11.3f}"
                    f"{ratio:>11.2f}{quick_ratio:>11.2f}{op_ratio:>11.2f}{ours:>11.2f}"
                )
        print()
    for n, (one, each) in worst.items():
        print(f"N = {n}: largest |predicted / measured - 1|: one model {one:.0%}, per collective {each:.0%}")


if __name__ == "__main__":
    main()
