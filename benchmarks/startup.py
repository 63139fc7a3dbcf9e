"""What a real run costs before and after it trains: start-up at N = 1, 2, 4, ... workers.

    python benchmarks/startup.py [--repeats 3] [--workers 1 2 4] [--epochs 1]

Every row is a data-parallel run of the lecture's CNN (``train_ddp``, global batch 100, Adam,
one thread per worker) on the default data, measured by the run itself
(``DataParallelResult.phases``, defined once in :func:`dlcourse.worker_run.run_phases`):

- **fixed s**: start-up (processes, imports, data, process group) + other (model, optimizer,
  final gathers) + tear-down: what a run costs besides training and evaluation;
- **training s**: rank 0's training loop; the ratio **fixed / training** is what a lesson's
  "run it for real" pays on top of the training it shows.

Two launchers, measured in the same run: ours (workers forked from a forkserver that imported
torch once) against ``spawn`` (every worker imports torch itself), both passing fn and the data
in a file. (Before 2026-12-04 the launcher spawned and sent fn and the data through the start
method's pipe, which a child reads only after importing torch: each start waited about 2 s for
the previous worker's imports, so start-up grew with N even on many cores.) The first run of
each launcher pays for starting its forkserver, as a notebook's first run does; the medians
are of the runs after it, as a lesson's later runs are. Goal (issue 24): fixed seconds at
N = 8 on 16 cores under 2x those at N = 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from unittest import mock

from dlcourse import launcher
from dlcourse.data import load_mnist
from dlcourse.data_parallel import DataParallelConfig, train_ddp


@contextlib.contextmanager
def spawn():
    """The peer: every worker spawned, importing torch itself (fn and data still in a file)."""
    with mock.patch.object(launcher, "_context", lambda: launcher.mp.get_context("spawn")):
        yield


def fixed_and_training(split, workers: int, epochs: int) -> tuple[float, float]:
    config = DataParallelConfig(model="cnn", optimizer="adam", lr=1e-3, batch_size=100, epochs=epochs)
    result = train_ddp(split.train, workers, config, test=split.test, threads_per_worker=1)
    p = result.phases
    return p["startup_s"] + p["other_s"] + p["teardown_s"], p["training_s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    workers = args.workers or [n for n in (1, 2, 4, 8, 16) if n <= max(4, cores)]
    if args.repeats < 1 or args.epochs < 1 or min(workers) < 1:
        parser.error("--repeats, --epochs and every --workers must be >= 1")
    split = load_mnist()
    rows = []
    for name, ctx in (("ours (forkserver)", contextlib.nullcontext()), ("spawn", spawn())):
        with ctx:
            fixed_and_training(split, 1, 1)  # the first run starts the forkserver: not counted
            for n in workers:
                runs = [fixed_and_training(split, n, args.epochs) for _ in range(args.repeats)]
                fixed = statistics.median(f for f, _ in runs)
                training = statistics.median(t for _, t in runs)
                rows.append((name, n, fixed, training))
    base = {name: fixed for name, n, fixed, _ in rows if n == workers[0]}
    ours = {n: fixed for name, n, fixed, _ in rows if name.startswith("ours")}
    print(f"{cores} cores; train_ddp, CNN, {args.epochs} epoch(s), medians of {args.repeats}")
    header = f"{'launcher':<20} {'N':>3} {'fixed s':>8} {'training s':>11} {'fixed/training':>15}"
    print(header + f" {'fixed / N=' + str(workers[0]):>12} {'vs ours':>8}")
    for name, n, fixed, training in rows:
        print(
            f"{name:<20} {n:>3} {fixed:>8.2f} {training:>11.2f} {fixed / training:>15.2f}"
            f" {fixed / base[name]:>12.2f} {fixed / ours[n]:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
