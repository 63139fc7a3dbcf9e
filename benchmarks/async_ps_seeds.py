"""Does ``dlcourse train --strategy async-ps --workers 4 --epochs 3`` converge for every seed?

Issue 17: with the lecture's CNN at a constant lr 0.1 about 1 run in 5 ended at test loss nan
and accuracy 0.1. The CLI's default is now ``--lr-policy staleness`` (lambda / tau). This
runs the command exactly as a student would type it, for seeds 0-9, and prints the ten
accuracies; a run that diverges (exit 1) or ends at chance counts as a failure::

    python benchmarks/async_ps_seeds.py                              # the default settings
    python benchmarks/async_ps_seeds.py --seeds 0-4 --jobs 2 -- --lr-policy constant

Anything after ``--`` is added to every command. Exit status 1 when any run failed.

Since issue 26 asynchronous runs take their mini-batches from one shared order by default
(``-- --no-shared-batches``: each worker its own shard, as before). Measured on 2 cores
(load 1.3-2.8), 2026-12-04, seeds 0-9, 11-12 s per run:

- the default, shared order: 0.875 0.857 0.875 0.884 0.858 0.824 0.860 0.861 0.906 0.881
  (mean 0.868) and, again, 0.860 0.884 0.825 0.880 0.829 0.885 0.888 0.842 0.855 0.869
  (mean 0.862), none diverged; own shards in the same hour: 9 of 10 converged (mean 0.878),
  seed 1 diverged;
- ``-- --lr 0.1``, shared order: none diverged, mean 0.804 (0.719 - 0.860);
- ``-- --lr-policy constant`` (lr 0.1), shared order: seeds 0, 1, 6 and 8 diverged, the
  other six mean 0.878; own shards: seeds 5 and 6 diverged, the other eight mean 0.912.

Before issue 26 (own shards), on 2 cores shared with other jobs (load 9-20), 2026-12-02,
seeds 0-9, none diverged:

- the default (``--lr-policy staleness``, lr 0.2; run as ``-- --lr 0.2`` before it became
  the default): 0.894 0.829 0.865 0.890 0.833 0.879 0.890 0.900 0.916 0.905 (mean 0.880);
- ``--lr-policy staleness`` with lr 0.1: 0.853 0.732 0.770 0.844 0.756 0.708 0.851 0.693
  0.717 0.781 (mean 0.771);

56-450 s per run under that load. At a constant lr 0.1 the issue saw 1 run in 5 diverge.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

COMMAND = ["train", "--strategy", "async-ps", "--workers", "4", "--epochs", "3", "--no-progress"]
CHANCE = 0.1  # ten classes


def run_seed(seed: int, extra: list[str], folder: Path) -> dict:
    """One run of the command with ``--seed seed``: its exit status, accuracy, loss, seconds."""
    out = folder / f"seed{seed}.json"
    cmd = [sys.executable, "-m", "dlcourse", *COMMAND, "--seed", str(seed), "--json", str(out), *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    metrics = json.loads(out.read_text()) if out.exists() else {}
    return {
        "seed": seed,
        "rc": proc.returncode,
        "accuracy": metrics.get("test_accuracy"),
        "loss": metrics.get("test_loss"),
        "diverged": bool(metrics.get("diverged")) or proc.returncode == 1,
        "seconds": seconds,
        "error": proc.stderr.strip().splitlines()[-1] if proc.returncode else "",
    }


def seeds_from(text: str) -> list[int]:
    """``"0-9"`` or ``"0,3,5"``."""
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,5")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each is 5 processes)")
    args = parser.parse_args(argv)
    seeds = seeds_from(args.seeds)
    print(f"dlcourse {' '.join(COMMAND)} {' '.join(extra)} --seed S, S in {args.seeds}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda s: run_seed(s, extra, Path(tmp)), seeds))
    failed = 0
    for r in results:
        bad = r["diverged"] or r["rc"] != 0 or r["accuracy"] is None or r["accuracy"] <= 2 * CHANCE
        failed += bad
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "-"
        loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
        note = f"  FAILED (exit {r['rc']}) {r['error']}" if bad else ""
        print(f"seed {r['seed']}: accuracy {acc}  loss {loss}  ({r['seconds']:.0f} s){note}", flush=True)
    accs = [r["accuracy"] for r in results if r["accuracy"] is not None]
    print(f"accuracies: {[round(a, 4) for a in accs]}")
    if accs:
        print(f"min {min(accs):.4f}  mean {sum(accs) / len(accs):.4f}  max {max(accs):.4f}; failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
