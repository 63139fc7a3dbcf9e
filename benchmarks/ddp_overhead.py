"""What our ``ddp`` strategy costs over a plain PyTorch DDP script, and what 2 processes gain.

    python benchmarks/ddp_overhead.py [--repeats 3] [--epochs 1] [--model cnn]

Both sides train the lecture's CNN on the default MNIST data (4,000 training digits),
global batch 100 split over the ranks, Adam, gloo on the CPU, one thread per rank, and
count images per second inside the training loop (process start-up and evaluation left
out, the same for both):

1. **Ours vs plain**: ``dlcourse.data_parallel.train_ddp`` (what ``dlcourse train
   --strategy ddp`` runs: launcher, shards, :class:`WorkerRun` bookkeeping) against a
   plain DDP script written the way the PyTorch tutorial writes it (``mp.spawn``,
   ``DistributedDataParallel``, a bare loop) on the same shards and batch size.
   Goal: ratio >= 0.95.
2. **Speedup**: our ddp with 2 processes over 1 process, both with one thread per
   process. Goal: >= 1.5x on 2 idle cores. Measured two ways: at the same global batch
   (strong scaling: each rank gets half the batch, so the fixed ~2-5 ms all-reduce weighs
   twice as much) and at the same per-rank batch (weak scaling: global batch 2x, the way
   data parallelism is used to go faster). The row "1 process, all cores" shows what one
   process gets from intra-op threads instead.

Every number is the median of ``--repeats`` interleaved repeats. On a shared, loaded
machine the ratios mean more than the absolute images/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from dlcourse.data import load_mnist
from dlcourse.data_parallel import DataParallelConfig, train_ddp
from dlcourse.models import make_model


def plain_worker(rank, world_size, init_method, X, y, epochs, batch_size, model_name, results):
    """A plain DDP training script, as in PyTorch's tutorial."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size)
    model = DistributedDataParallel(make_model(model_name, seed=0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    m = len(y) // world_size
    X, y = X[rank * m : (rank + 1) * m], y[rank * m : (rank + 1) * m]
    per_rank = batch_size // world_size
    g = torch.Generator().manual_seed(rank)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(m, generator=g).split(per_rank):
            if len(idx) < per_rank:
                continue
            loss = F.cross_entropy(model(X[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    elapsed = time.perf_counter() - start
    if rank == 0:
        results.put((m // per_rank) * per_rank * world_size * epochs / elapsed)
    dist.destroy_process_group()


def plain_ddp(train, num_workers: int, epochs: int, batch_size: int, model: str) -> float:
    """Images/s of the plain script on ``num_workers`` processes."""
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory() as folder:
        init_method = "file://" + os.path.join(folder, "store")
        mp.spawn(
            plain_worker,
            args=(num_workers, init_method, train.X, train.y, epochs, batch_size, model, results),
            nprocs=num_workers,
        )
    return results.get()


def ours(train, num_workers: int, epochs: int, batch_size: int, model: str, threads: int) -> float:
    config = DataParallelConfig(model=model, epochs=epochs, batch_size=batch_size, lr=1e-3, optimizer="adam")
    return train_ddp(train, num_workers, config, threads_per_worker=threads, run_timeout=600).examples_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    args = parser.parse_args()
    train = load_mnist().train
    cores = os.cpu_count() or 1
    names = ("ours, 2 proc", "plain, 2 proc", "ours, 1 proc", "ours, 1 proc, all", "ours, 2 proc, 2x batch")
    runs: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):  # interleaved, so that load drifts hit every row alike
        runs["ours, 2 proc"].append(ours(train, 2, args.epochs, args.batch_size, args.model, 1))
        runs["plain, 2 proc"].append(plain_ddp(train, 2, args.epochs, args.batch_size, args.model))
        runs["ours, 1 proc"].append(ours(train, 1, args.epochs, args.batch_size, args.model, 1))
        runs["ours, 1 proc, all"].append(ours(train, 1, args.epochs, args.batch_size, args.model, cores))
        runs["ours, 2 proc, 2x batch"].append(ours(train, 2, args.epochs, 2 * args.batch_size, args.model, 1))
    med = {k: statistics.median(v) for k, v in runs.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model {args.model}, global batch {args.batch_size}, {len(train)} images x {args.epochs} epoch(s)")
    print(f"{cores} CPU cores, load average {load:.1f} at the end; medians of {args.repeats} repeats\n")
    print(f"{'run':<34}{'images/s':>10}   all repeats")
    for k, v in runs.items():
        print(f"{k:<34}{med[k]:>10.0f}   {', '.join(f'{x:.0f}' for x in v)}")
    print()
    ratio = med["ours, 2 proc"] / med["plain, 2 proc"]
    speedup = med["ours, 2 proc"] / med["ours, 1 proc"]
    print(f"{'ratio':<34}{'value':>10}   goal")
    print(f"{'ours / plain DDP (2 proc)':<34}{ratio:>10.2f}   >= 0.95")
    weak = med["ours, 2 proc, 2x batch"] / med["ours, 1 proc"]
    print(f"{'2 proc / 1 proc, same global batch':<34}{speedup:>10.2f}   >= 1.5 on 2 idle cores")
    print(f"{'2 proc / 1 proc, same rank batch':<34}{weak:>10.2f}   >= 1.5 on 2 idle cores")
    print(f"{'2 proc / 1 proc with all cores':<34}{med['ours, 2 proc'] / med['ours, 1 proc, all']:>10.2f}")


if __name__ == "__main__":
    main()
