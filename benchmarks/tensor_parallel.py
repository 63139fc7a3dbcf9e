"""What tensor parallelism, activation recomputation and mixed precision cost and save here.

    python benchmarks/tensor_parallel.py [--repeats 5] [--steps 10]

One thread per process, gloo on the CPU, the lecture's CNN and MNIST batches of 100; every
number is a median of ``--repeats`` interleaved repeats, and each ratio compares two things
measured in the same run:

1. **Tensor parallelism, step time / dense**: ``train_tensor_parallel`` at N = 2 (the CNN's
   dense head split, its convolutions replicated on both ranks) against the dense model in
   one process; and a wide MLP block alone (``ParallelMLP``, 1024 -> 8192 -> 1024, split
   over 2 ranks) against the dense block. Split layers halve their arithmetic but add an
   all-reduce forward and backward; replicated layers cost the same on every rank.
2. **Recomputation** (``recompute_segments``, 1, 2, 4 and 8 segments of the CNN):
   activations held from forward to backward and the peak (held + one segment rebuilt) as
   fractions of the plain step's, and the step time as a ratio to the plain step's.
3. **Mixed precision** (``MixedPrecision``, bf16 compute with fp32 master weights): step
   time / fp32 step (on a CPU without bf16 units it is slower: the gain is for accelerators)
   and the bytes of state per parameter, measured.

No goal is set for the times: they are what lesson 08 explains (where TP pays, what the
recomputation's extra forward costs). The bytes are exact measurements.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.data import load_mnist
from dlcourse.launcher import launch
from dlcourse.models import make_model
from dlcourse.precision import MixedPrecision
from dlcourse.recompute import activation_bytes, recompute_segments
from dlcourse.tensor_parallel import ParallelMLP, TensorParallelConfig, train_tensor_parallel
from dlcourse.train import make_optimizer


def _dense_cnn(rank, world_size, train, steps: int, batch: int) -> float:
    """Median seconds of one SGD step of the dense CNN, in a process of its own (one thread)."""
    model = make_model("cnn", seed=0)
    opt = make_optimizer("sgd", model.parameters(), 0.1)
    times = []
    for t in range(steps):
        X, y = train.X[t * batch : (t + 1) * batch], train.y[t * batch : (t + 1) * batch]
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(X), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # the first step warms up


def _wide_block(rank, world_size, steps, batch, sizes):
    """Median seconds of forward + backward of the wide MLP block, split (N ranks) or dense (N = 1)."""
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(sizes[0], sizes[1]), nn.Linear(sizes[1], sizes[2])
    block = ParallelMLP(fc1, fc2, rank, world_size) if world_size > 1 else nn.Sequential(fc1, nn.ReLU(), fc2)
    x = torch.randn(batch, sizes[0], generator=torch.Generator().manual_seed(1), requires_grad=True)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        block(x).square().mean().backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def recompute_row(model, X, y, segments: int | None, steps: int) -> tuple[int, int, float]:
    """(held bytes, peak bytes, median step seconds) of plain (None) or recomputed training."""
    run = model if segments is None else recompute_segments(model, segments)
    measured = activation_bytes(run, X, y)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        F.cross_entropy(run(X), y).backward()
        times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return measured.held, measured.peak, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train = load_mnist("subset").train
    batch, steps = 100, args.steps
    wide = (1024, 8192, 1024)

    runs: dict[str, list[float]] = {k: [] for k in ("cnn dense", "cnn tp2", "block dense", "block tp2")}
    config = TensorParallelConfig(model="cnn", batch_size=batch, max_steps=steps)
    for _ in range(args.repeats):
        runs["cnn dense"].append(launch(_dense_cnn, 1, train, steps, batch, threads_per_worker=1)[0])
        result = train_tensor_parallel(train, 2, config, threads_per_worker=1, run_timeout=300)
        runs["cnn tp2"].append(max(r["step_s_median"] for r in result.extra["per_rank"]))
        runs["block dense"].append(launch(_wide_block, 1, steps, batch, wide, threads_per_worker=1)[0])
        runs["block tp2"].append(max(launch(_wide_block, 2, steps, batch, wide, threads_per_worker=1)))
    med = {k: statistics.median(v) for k, v in runs.items()}

    load = os.getloadavg()[0]
    print(
        f"{os.cpu_count()} CPU cores, load average {load:.1f}; "
        f"medians of {args.repeats} repeats, batch {batch}\n"
    )
    print("1. Tensor parallelism, N = 2 (step time, ms)")
    print(f"{'run':<44}{'dense':>8}{'TP=2':>8}{'TP / dense':>12}")
    for name, label in (("cnn", "lecture CNN, dense head split"), ("block", "MLP block 1024-8192-1024")):
        d, t = med[f"{name} dense"], med[f"{name} tp2"]
        print(f"{label:<44}{1000 * d:>8.1f}{1000 * t:>8.1f}{t / d:>12.2f}")
    print()

    X, y = train.X[:batch].clone(), train.y[:batch].clone()  # a view would count the whole data set
    model = make_model("cnn", seed=0)
    rows: dict[str, list[tuple[int, int, float]]] = {}
    for _ in range(args.repeats):  # interleaved: plain and every segment count in each repeat
        for segments in (None, 1, 2, 4, 8):
            rows.setdefault(str(segments or "plain"), []).append(recompute_row(model, X, y, segments, steps))
    plain_held, plain_peak = rows["plain"][0][:2]
    plain_s = statistics.median(r[2] for r in rows["plain"])
    print("2. Activation recomputation, lecture CNN (activation bytes; step = forward + backward)")
    print(
        f"{'segments':<12}{'held MB':>10}{'held/plain':>12}"
        f"{'peak MB':>10}{'peak/plain':>12}{'time/plain':>12}"
    )
    for key, values in rows.items():
        held, peak = values[0][:2]
        s = statistics.median(r[2] for r in values)
        print(
            f"{key:<12}{held / 2**20:>10.2f}{held / plain_held:>12.3f}{peak / 2**20:>10.2f}"
            f"{peak / plain_peak:>12.3f}{s / plain_s:>12.2f}"
        )
    print()

    batches = [(train.X[i : i + batch], train.y[i : i + batch]) for i in range(0, steps * batch, batch)]
    fp32_s, mixed_s = [], []
    for _ in range(args.repeats):
        ref = make_model("cnn", seed=0)
        opt = make_optimizer("adam", ref.parameters(), 1e-3)
        t0 = time.perf_counter()
        for Xb, yb in batches:
            loss = F.cross_entropy(ref(Xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        fp32_s.append((time.perf_counter() - t0) / steps)
        trainer = MixedPrecision(make_model("cnn", seed=0), "adam", lr=1e-3)
        t0 = time.perf_counter()
        for Xb, yb in batches:
            trainer.step(Xb, yb)
        mixed_s.append((time.perf_counter() - t0) / steps)
    count = sum(p.numel() for p in trainer.master)
    held = trainer.state_bytes()
    print("3. Mixed precision, lecture CNN, Adam (bytes measured after the last step)")
    print(
        f"{'step time bf16+master / fp32':<44}{statistics.median(mixed_s) / statistics.median(fp32_s):>8.2f}"
    )
    print(
        f"{'bytes per parameter: weights, grads, rest':<44}{held.parameters / count:>8.1f}"
        f"{held.gradients / count:>6.1f}{held.optimizer / count:>6.1f}"
        f"  total {held.state / count:.1f} (formula 16)"
    )


if __name__ == "__main__":
    main()
