"""What a GPU gives the lecture's CNN: one device against the CPU, and DDP over NCCL.

    python benchmarks/gpu.py [--repeats 3] [--steps 50] [--batch-size 128]

Run by ``scripts/gpu_check.sh`` on a machine with CUDA (it exits with a message elsewhere).
The data are random tensors of MNIST's shape: throughput does not depend on the digits, and a
bare GPU image has no dataset.

1. **One device**: training steps of the CNN (Adam, float32, full float32 math: TF32 off, as
   everywhere the course compares devices) in one process on the CPU (all its threads) and
   on ``cuda:0``; images/s and the ratio GPU / CPU.
2. **DDP over NCCL**: ``dlcourse.data_parallel.train_ddp`` with one rank on one GPU against
   the bare loop of 1. (what our strategy's bookkeeping costs), and with one rank per GPU
   present against one rank, at the same per-rank batch (weak scaling); NCCL allows one rank
   per GPU, so with one GPU only the single-rank row runs.

Every number is the median of ``--repeats`` runs; the ratios mean more than the images/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from dlcourse.data import Dataset
from dlcourse.data_parallel import DataParallelConfig, train_ddp
from dlcourse.environment import full_float32
from dlcourse.models import make_model


def images_per_s(device: str, steps: int, batch_size: int) -> float:
    """Training throughput of the CNN on one device, after a warm-up of 5 steps."""
    model = make_model("cnn", seed=0).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    X = torch.rand(batch_size, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(X), y).backward()
        optimizer.step()

    for _ in range(5):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def ddp_images_per_s(world: int, batch_size: int) -> float:
    """Examples/s of our DDP strategy over NCCL with ``world`` ranks, ``batch_size`` per rank."""
    n = 64 * batch_size * world
    data = Dataset(torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,)))
    config = DataParallelConfig(model="cnn", optimizer="adam", lr=1e-3, batch_size=batch_size * world)
    return train_ddp(data, world, config, backend="nccl").examples_per_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.steps < 1 or args.batch_size < 1:
        parser.error("--repeats, --steps and --batch-size must be >= 1")
    if not torch.cuda.is_available():
        print(f"benchmarks/gpu.py: torch {torch.__version__} sees no CUDA device; nothing to measure")
        return 0

    def median(fn, *a) -> float:
        return statistics.median(fn(*a) for _ in range(args.repeats))

    with full_float32():
        cpu = median(images_per_s, "cpu", args.steps, args.batch_size)
        gpu = median(images_per_s, "cuda:0", args.steps, args.batch_size)
    rows = [
        (f"CNN, 1 process, CPU ({torch.get_num_threads()} threads)", cpu, 1.0),
        (f"CNN, 1 process, {torch.cuda.get_device_name(0)}", gpu, gpu / cpu),
    ]
    gpus = torch.cuda.device_count()
    if torch.distributed.is_nccl_available():
        one = median(ddp_images_per_s, 1, args.batch_size)
        rows.append(("our DDP over NCCL, 1 rank (1 GPU)", one, one / gpu))
        if gpus > 1:
            many = median(ddp_images_per_s, gpus, args.batch_size)
            rows.append((f"DDP over NCCL, {gpus} ranks ({gpus} GPUs)", many, many / one))
    print(f"batch {args.batch_size} per rank, medians of {args.repeats}; TF32 off")
    print(f"{'run':<58} {'images/s':>10} {'ratio':>8}")
    for name, value, ratio in rows:
        print(f"{name:<58} {value:>10.0f} {ratio:>7.2f}x")
    print("ratio: GPU against the CPU; our 1-rank DDP against the bare GPU loop; N ranks against 1 rank")
    return 0


if __name__ == "__main__":
    sys.exit(main())
