"""Our GPipe against torch.distributed.pipelining's ScheduleGPipe, and the bubble vs its formula.

    python benchmarks/pipeline.py [--repeats 7] [--model cnn] [--batch-size 100] [--microbatches 4]

Table 1: examples/s of one training step (forward + backward of M micro-batches over
K = 2 processes) for our readable GPipe and torch's ScheduleGPipe, on the same split and
micro-batches, in one run, interleaved, median of the repeats. Goal: ratio >= 0.9.

Table 2: the bubble for M = 1, 2, 4, 8 and K = 2: the formula (K-1)/(M+K-1), the simulated
schedule, our GPipe with every forward and backward padded to the same cost (equal stages),
and our GPipe on the real model, whose stages do not cost the same.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from dlcourse.data import load_mnist
from dlcourse.launcher import launch
from dlcourse.model_parallel import split_model
from dlcourse.models import make_model
from dlcourse.pipeline import (
    PipelineTimeline,
    gpipe_bubble,
    gpipe_step,
    measure_bubble,
    simulate_schedule,
    stage_input_shapes,
)

K = 2
BUBBLE_M = (1, 2, 4, 8)


def _worker(rank, world_size, model, X, y, M, repeats):
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    prev = rank - 1 if rank > 0 else None
    nxt = rank + 1 if rank < world_size - 1 else None
    ours_stage = split_model(model, world_size)[rank]
    torch_stage = split_model(model, world_size)[rank]
    runner = ScheduleGPipe(
        PipelineStage(torch_stage, rank, world_size, torch.device("cpu")),
        n_microbatches=M,
        loss_fn=F.cross_entropy,
    )

    # outside the timed step, as torch's PipelineStage infers its shapes once, before it
    shape = stage_input_shapes(model, world_size, (len(X) // M, *X.shape[1:]))[rank]

    def ours():
        ours_stage.zero_grad()
        gpipe_step(ours_stage, X, y, M, prev_rank=prev, next_rank=nxt, in_shape=shape)

    def reference():
        torch_stage.zero_grad()
        if prev is None:
            runner.step(X)
        elif nxt is None:
            runner.step(target=y, losses=[])
        else:
            runner.step()

    seconds = {"ours (dlcourse.pipeline)": [], "torch ScheduleGPipe": []}
    for r in range(repeats + 1):  # the first round warms up both
        runs = list(zip(seconds, (ours, reference)))
        for name, run in runs if r % 2 else runs[::-1]:  # alternate who goes first
            dist.barrier()
            start = time.perf_counter()
            run()
            elapsed = torch.tensor(time.perf_counter() - start)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the step ends when the slowest stage ends
            if r > 0:
                seconds[name].append(elapsed.item())
    # the real model's bubble, unpadded: stages cost what they cost
    timelines = []
    for m in BUBBLE_M:
        shape = stage_input_shapes(model, world_size, (len(X) // m, *X.shape[1:]))[rank]
        ours_stage.zero_grad()
        timelines.append(gpipe_step(ours_stage, X, y, m, prev_rank=prev, next_rank=nxt, in_shape=shape)[1])
    return seconds, timelines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--microbatches", type=int, default=4)
    parser.add_argument("--stage-cost", type=float, default=0.05, help="padded seconds per F and per B")
    args = parser.parse_args()
    for name in ("repeats", "batch_size", "microbatches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    data = load_mnist().train
    X, y = data.X[: args.batch_size], data.y[: args.batch_size]
    model = make_model(args.model, seed=0)

    parts = launch(_worker, K, model, X, y, args.microbatches, args.repeats, threads_per_worker=1)
    seconds = parts[0][0]
    print(
        f"model={args.model} K={K} M={args.microbatches} batch={args.batch_size} "
        f"threads/rank=1 repeats={args.repeats}"
    )
    print(f"{'schedule':<26} {'examples/s (median)':>20} {'ratio':>7}")
    reference = args.batch_size / statistics.median(seconds["torch ScheduleGPipe"])
    for name, values in seconds.items():
        rate = args.batch_size / statistics.median(values)
        print(f"{name:<26} {rate:>20.1f} {rate / reference:>7.3f}")
    ratio = statistics.median(seconds["torch ScheduleGPipe"]) / statistics.median(
        seconds["ours (dlcourse.pipeline)"]
    )
    print(f"goal: ratio >= 0.9 -> {'met' if ratio >= 0.9 else 'NOT met'} ({ratio:.3f})")

    mlp = make_model("mlp", seed=0)
    padded = measure_bubble(mlp, X[:64], y[:64], K, BUBBLE_M, stage_cost_s=args.stage_cost)
    real = [PipelineTimeline(K, m, "ours", parts[0][1][j] + parts[1][1][j]) for j, m in enumerate(BUBBLE_M)]
    print()
    print(
        f"bubble, K={K}: padded = every F and B takes {args.stage_cost} s; "
        f"real = {args.model}, unequal stages"
    )
    print(f"{'M':>3} {'formula':>8} {'simulated':>10} {'padded':>8} {'real':>8}")
    for m, p, r in zip(BUBBLE_M, padded, real):
        sim = simulate_schedule(K, m).bubble_fraction
        print(
            f"{m:>3} {gpipe_bubble(K, m):>8.3f} {sim:>10.3f} "
            f"{p.bubble_fraction:>8.3f} {r.bubble_fraction:>8.3f}"
        )


if __name__ == "__main__":
    main()
