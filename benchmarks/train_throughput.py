"""Our trainer against a bare PyTorch loop: same model, batch size, data and thread count.

    python benchmarks/train_throughput.py [--repeats 5] [--model cnn] [--epochs 1]

Prints examples/s of each (median of the repeats, run interleaved so that machine noise
hits both alike) and their ratio. Goal: ratio >= 0.95 (the trainer's bookkeeping, the
progress bar included, costs under 5%).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from dlcourse.data import load_mnist
from dlcourse.models import make_model
from dlcourse.train import fit


def bare_loop(model, data, epochs: int, batch_size: int, seed: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(data), generator=g).split(batch_size):
            loss = F.cross_entropy(model(data.X[idx]), data.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return epochs * len(data) / (time.perf_counter() - start)


def ours(model, data, epochs: int, batch_size: int, seed: int) -> float:
    history = fit(
        model, data, epochs=epochs, batch_size=batch_size, lr=1e-3, optimizer="adam", seed=seed, progress=True
    )
    return history.examples_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    data = load_mnist().train
    rates: dict[str, list[float]] = {"bare PyTorch loop": [], "dlcourse fit()": []}
    for r in range(args.repeats):
        for name, run in (("bare PyTorch loop", bare_loop), ("dlcourse fit()", ours)):
            rates[name].append(run(make_model(args.model, seed=r), data, args.epochs, args.batch_size, r))
    bare = statistics.median(rates["bare PyTorch loop"])
    print(
        f"model={args.model} batch={args.batch_size} threads={torch.get_num_threads()} repeats={args.repeats}"
    )
    print(f"{'trainer':<20} {'examples/s (median)':>20} {'ratio':>7}")
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"{name:<20} {med:>20.1f} {med / bare:>7.3f}")
    ratio = statistics.median(rates["dlcourse fit()"]) / bare
    print(f"goal: ratio >= 0.95 -> {'met' if ratio >= 0.95 else 'NOT met'} ({ratio:.3f})")


if __name__ == "__main__":
    main()
