"""The alpha-beta model of gloo's collectives, fitted on one measurement and tested on another.

    python benchmarks/collectives.py [--workers 2 3 4] [--passes 5] [--repeats 7] [--max-mb 64]

For each N (default: 2 up to 4, but no more ranks than the machine has cores: beyond that the
ranks take turns on a core and the times measure the scheduler), one launch of N real
processes (gloo, one thread each) makes ``--passes`` passes. Each pass measures, with
:func:`dlcourse.collectives.time_collectives` (``--repeats`` runs per size, five times as many
under 4 MB, in rounds; each run its slowest rank):

1. the **fit set**: torch.distributed's ``all_reduce``, ``reduce_scatter_tensor`` and
   ``all_gather_into_tensor`` of 1 KB, 4 KB, ..., 64 MB (powers of 4);
2. the **test set**, a separate measurement: 1 KB, 2 KB, 4 KB, ..., 64 MB (powers of 2, so
   half of them lie between the fit sizes), and ours (:func:`ring_reduce_scatter`,
   :func:`ring_all_gather`, the two in a row as a ring all-reduce) on the same sizes.

Each (op, size) is the median over passes of the passes' medians. :func:`fit` fits one model
per collective to the fit set (``max_regimes=2``: a second bandwidth where the data need one;
the one-regime fit next to it), and the table prints predicted / measured on the test set.
Goal (issue 22): within 25% at every size. Last column: our ring's time / gloo's.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import torch
import torch.distributed as dist

from dlcourse.collectives import (
    FIT_OPS,
    fit,
    repeats_for,
    ring_all_gather,
    ring_reduce_scatter,
    slowest_median,
    time_collectives,
)
from dlcourse.launcher import launch

KB, MB = 1024, 1024**2
GOAL = 0.25  # |predicted / measured - 1| at every size


def _ours(op: str, tensor: torch.Tensor, out: torch.Tensor) -> None:
    if op == "reduce_scatter":
        ring_reduce_scatter(tensor)
    elif op == "all_gather":
        ring_all_gather(out)
    else:
        ring_all_gather(ring_reduce_scatter(tensor), numel=tensor.numel())


def time_ours(rank, world_size, sizes, repeats):
    """{(op, bytes): [seconds per run]} of our ring collectives, in rounds like time_collectives."""
    tensors = {}
    for s in sizes:
        numel = max(world_size, s // 4) // world_size * world_size
        tensors[s] = (torch.zeros(numel), torch.zeros(numel // world_size))
        for op in FIT_OPS:
            _ours(op, *tensors[s])  # warm-up
    times = {(op, s): [] for s in sizes for op in FIT_OPS}
    for round_ in range(max(repeats_for(s, repeats) for s in sizes)):
        for s in random.Random(round_).sample(sizes, len(sizes)):
            if round_ < repeats_for(s, repeats):
                for op in FIT_OPS:
                    dist.barrier()
                    start = time.perf_counter()
                    _ours(op, *tensors[s])
                    times[(op, s)].append(time.perf_counter() - start)
    return times


def passes(rank, world_size, fit_sizes, test_sizes, repeats, count):
    """Per pass: gloo's times on the fit set, then on the test set, then ours on the test set."""
    return [
        (
            time_collectives(rank, world_size, fit_sizes, repeats),
            time_collectives(rank, world_size, test_sizes, repeats),
            time_ours(rank, world_size, test_sizes, repeats),
        )
        for _ in range(count)
    ]


def _size(s: int) -> str:
    return f"{s // MB} MB" if s >= MB else f"{s // KB} KB"


def sizes_up_to(max_mb: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The fit set (1 KB x 4^k) and the test set (1 KB x 2^k), up to ``max_mb`` (at most 64 MB)."""
    test_sizes = tuple(KB << k for k in range(17) if KB << k <= min(max_mb, 64) * MB)
    return test_sizes[::2], test_sizes


def check_model(n: int, passes_count: int = 5, repeats: int = 7, max_mb: int = 64) -> dict:
    """Measure N ranks, fit on the fit set, predict the test set; everything the table prints.

    ``worst[op]``: the largest |predicted / measured - 1| over the test set, two regimes and
    one; ``per_pass``: each pass fitted and tested on its own, its worst (op, size).
    """
    fit_sizes, test_sizes = sizes_up_to(max_mb)
    per_rank = launch(
        passes, n, fit_sizes, test_sizes, repeats, passes_count, backend="gloo", threads_per_worker=1
    )
    sets = [[slowest_median([r[p][i] for r in per_rank]) for p in range(passes_count)] for i in range(3)]
    fit_t, test_t, ours_t = ({k: statistics.median(m[k] for m in ms) for k in ms[0]} for ms in sets)
    two = {op: fit(fit_t, n, op, max_regimes=2) for op in FIT_OPS}
    one = {op: fit(fit_t, n, op) for op in FIT_OPS}
    per_pass = []
    for f, t in zip(sets[0], sets[1]):
        models = {op: fit(f, n, op, max_regimes=2) for op in FIT_OPS}
        errors = {(op, s): models[op].time(op, s, n) / t[(op, s)] - 1 for op in FIT_OPS for s in test_sizes}
        worst_key = max(errors, key=lambda k: abs(errors[k]))
        per_pass.append((errors[worst_key], *worst_key))
    worst = {
        op: tuple(
            max(abs(m[op].time(op, s, n) / test_t[(op, s)] - 1) for s in test_sizes) for m in (two, one)
        )
        for op in FIT_OPS
    }
    return {
        "fit_sizes": fit_sizes,
        "test_sizes": test_sizes,
        "test_passes": sets[1],
        "measured": test_t,
        "ours": ours_t,
        "two": two,
        "one": one,
        "worst": worst,
        "per_pass": per_pass,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cores = os.cpu_count() or 2
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--max-mb", type=int, default=64)
    args = parser.parse_args()
    if min(args.workers) < 2 or args.passes < 1 or args.repeats < 1 or args.max_mb < 1:
        parser.error(
            f"every --workers must be >= 2 and --passes, --repeats, --max-mb >= 1, got "
            f"{args.workers}, {args.passes}, {args.repeats}, {args.max_mb}"
        )
    fit_sizes, _ = sizes_up_to(args.max_mb)
    print(
        f"{cores} cores, load average {os.getloadavg()[0]:.2f} at the start; {args.passes} passes, each: "
        f"fit set {_size(fit_sizes[0])}..{_size(fit_sizes[-1])} by x4, then test set by x2 (measured "
        f"apart); medians of {args.repeats} runs ({repeats_for(1, args.repeats)} under 4 MB), slowest "
        "rank; gloo, 1 thread per rank\n"
    )
    worst = {}
    for n in sorted(set(args.workers)):
        if n > cores:
            print(
                f"N = {n}: not run: {n} ranks on {cores} cores take turns on a core, "
                "so their times would measure the scheduler, not gloo\n"
            )
            continue
        c = check_model(n, args.passes, args.repeats, args.max_mb)
        print(f"N = {n}: one model per collective, fitted on the fit set:")
        for op in FIT_OPS:
            print(f"   {op:<15} {c['two'][op]}   (one regime: {c['one'][op]})")
        head = ("gloo ms", "spread", "model ms", "pred/meas", "1 regime", "ours/gloo")
        print(f"{'op':<16}{'size':>8}" + "".join(f"{h:>11}" for h in head))
        for op in FIT_OPS:
            for s in c["test_sizes"]:
                measured = c["measured"][(op, s)]
                passes_s = [m[(op, s)] for m in c["test_passes"]]
                predicted = c["two"][op].time(op, s, n)
                print(
                    f"{op:<16}{_size(s):>8}{measured * 1e3:>11.3f}"
                    f"{(max(passes_s) - min(passes_s)) / measured:>11.0%}{predicted * 1e3:>11.3f}"
                    f"{predicted / measured:>11.2f}{c['one'][op].time(op, s, n) / measured:>11.2f}"
                    f"{c['ours'][(op, s)] / measured:>11.2f}{'' if s in c['fit_sizes'] else ' (between)'}"
                )
        print(
            "   worst pred/meas - 1 of each pass fitted and tested on its own: "
            + ", ".join(f"{e:+.0%} ({op} {_size(s)})" for e, op, s in c["per_pass"])
            + "\n"
        )
        worst.update({(n, op): w for op, w in c["worst"].items()})
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print(f"{'N':>3} {'op':<16}{'worst |pred/meas - 1|':>22}{'one regime':>12}   within {GOAL:.0%}")
    for (n, op), (w, w1) in worst.items():
        print(f"{n:>3} {op:<16}{w:>22.0%}{w1:>12.0%}   {'yes' if w <= GOAL else 'NO'}")
    if worst:
        holds = all(w <= GOAL for w, _ in worst.values())
        print(
            f"goal (predicted within {GOAL:.0%} of measured at every size): {'holds' if holds else 'fails'}"
        )


if __name__ == "__main__":
    main()
