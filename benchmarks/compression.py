"""Compressed updates (Strom 2015) on a real gradient of the lecture's CNN: bits, bytes, time.

    python benchmarks/compression.py [--repeats 7] [--steps 20]

The gradient comes from the lecture's CNN (1,111,946 parameters) after ``--steps`` steps
of SGD on the default MNIST data, batch 100. For each density (1%, 0.1%, 0.01%) tau is the
quantile of ``|gradient|`` that sends that share of the elements, and the tables show:

1. **Bits per sent element** of each gap coder (sign bit included) next to the empirical
   entropy of the gaps plus 1 sign bit (goal: the best coder within 1.1x of it), and the
   best an adaptive coder over Exp-Golomb's classes could do (its model not counted);
   the naive codings for reference: index + float32 value (64), one packed 32-bit word (32).
   With few sent elements (0.01%) the plug-in entropy is biased low: it cannot exceed
   log2(count) bits although the gaps spread over far more values.
2. **Bytes per message** against dense float32 (goal: >= 100x at 1%), and what PyTorch's
   DDP communication hooks send for the same gradient per worker and step: the fp16 hook
   (2 bytes per element) and PowerSGD of rank 1 and 4 (float32 factors P and Q of each
   weight matrix, reshaped to ``(out, rest)``; vectors and matrices too small to gain go
   uncompressed, as the hook does).
3. **Time** of encode + decode (from the residual to the dense update the peer adds)
   against one scan ``(r.abs() >= tau).nonzero()`` of the same tensor (goal: <= 3x);
   medians of ``--repeats`` interleaved repeats, one thread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from dlcourse import compression as C
from dlcourse.data import load_mnist
from dlcourse.models import make_model

DENSITIES = (0.01, 0.001, 0.0001)


def cnn_gradient(steps: int, seed: int = 0) -> tuple[torch.Tensor, list[torch.Size]]:
    """The flat gradient of the lecture's CNN after ``steps`` SGD steps, and its parameter shapes."""
    split = load_mnist("subset")
    model = make_model("cnn", seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(split.train), generator=g).split(100)
    for idx in order[: steps + 1]:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(split.train.X[idx]), split.train.y[idx]).backward()
        if steps:
            opt.step()
            steps -= 1
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    return grad, [p.shape for p in model.parameters()]


def ideal_adaptive_bits(gaps: np.ndarray) -> float:
    """Bits per element (+1 sign) if Exp-Golomb's unary class were coded at its own entropy.

    What an adaptive entropy coder (e.g. ANS from ``constriction``) over the classes could
    reach at best, before the cost of sending its model: the room left above our coders.
    """
    k = C.fit_k(gaps, "expgolomb")
    classes = C._bit_length(gaps - 1 + (1 << k)) - 1 - k
    return C.gap_entropy_bits(classes) + float(classes.mean()) + k + 1


def powersgd_bytes(shapes: list[torch.Size], rank: int) -> int:
    """Bytes PowerSGD's DDP hook all-reduces per step: P and Q per matrix, small ones dense."""
    total = 0
    for shape in shapes:
        numel = int(np.prod(shape))
        if len(shape) < 2:
            total += 4 * numel
            continue
        n, m = shape[0], numel // shape[0]
        total += 4 * (rank * (n + m) if rank * (n + m) < n * m else n * m)
    return total


def median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if args.repeats < 1 or args.steps < 0:
        parser.error(f"--repeats must be >= 1 and --steps >= 0, got {args.repeats} and {args.steps}")
    torch.set_num_threads(1)
    r, shapes = cnn_gradient(args.steps)
    numel = r.numel()
    print(f"gradient of the lecture's CNN after {args.steps} SGD steps: {numel:,} elements\n")

    print("1. bits per sent element (gap code + 1 sign bit)")
    coders = [("rice", "Rice(k fit)"), ("expgolomb", "ExpGolomb(k fit)"), ("gamma", "Elias-gamma")]
    head = f"{'density':>8} {'sent':>7} {'H+1':>6} " + " ".join(f"{label:>16}" for _, label in coders)
    print(head + f" {'best/(H+1)':>10} {'adaptive':>9} {'idx+f32':>8} {'word32':>7}")
    taus = {}
    for density in DENSITIES:
        tau = float(r.abs().kthvalue(numel - int(density * numel) + 1).values)
        taus[density] = tau
        idx = (r.abs() >= tau).nonzero().squeeze(1).numpy()
        gaps = C.gaps_of(idx)
        bound = C.gap_entropy_bits(gaps) + 1
        bits = {c: C.coded_bits(gaps, c, C.fit_k(gaps, c)) / len(idx) + 1 for c, _ in coders}
        cells = " ".join(f"{bits[c]:>11.2f} (k={C.fit_k(gaps, c):>2})" for c, _ in coders)
        best = min(bits.values())
        ideal = ideal_adaptive_bits(gaps)
        print(
            f"{density:>8.2%} {len(idx):>7,} {bound:>6.2f} {cells} {best / bound:>10.2f}x"
            f" {ideal:>9.2f} {64:>8} {32:>7}"
        )

    print("\n2. bytes per message (one worker, one step)")
    dense = 4 * numel
    print(
        f"{'density':>8} {'message':>9} {'vs f32':>8} {'fp16 hook':>10} {'vs msg':>8}"
        f" {'PowerSGD r1':>12} {'vs msg':>8} {'PowerSGD r4':>12} {'vs msg':>8}"
    )
    fp16, psgd1, psgd4 = 2 * numel, powersgd_bytes(shapes, 1), powersgd_bytes(shapes, 4)
    messages = {}
    for density, tau in taus.items():
        message = C.Compressor(numel, tau=tau).compress(r)
        messages[density] = message
        size = len(message)
        print(
            f"{density:>8.2%} {size:>9,} {dense / size:>7.0f}x {fp16:>10,} {fp16 / size:>7.0f}x"
            f" {psgd1:>12,} {psgd1 / size:>7.1f}x {psgd4:>12,} {psgd4 / size:>7.1f}x"
        )
    print(f"{'dense':>8} {dense:>9,} (float32; PowerSGD's first iterations send this too)")

    print(f"\n3. time, median of {args.repeats} (ms)")
    print(f"{'density':>8} {'scan':>8} {'encode':>8} {'decode':>8} {'enc+dec':>8} {'/scan':>7}")
    for density, tau in taus.items():
        tau_t = torch.tensor(tau)
        message = messages[density]

        def scan(tau_t=tau_t):
            return (r.abs() >= tau_t).nonzero()

        def encode(tau=tau, tau_t=tau_t):
            idx = (r.abs() >= tau_t).nonzero().squeeze(1)
            return C.encode(idx, numel, tau=tau, negative=(r[idx] < 0).numpy())

        def decode(message=message):
            return C.decode(message, numel)

        t = {name: [] for name in ("scan", "encode", "decode")}
        for _ in range(args.repeats):  # interleaved, so that load hits all three alike
            for name, fn in (("scan", scan), ("encode", encode), ("decode", decode)):
                t[name].append(median_s(fn, 1))
        s, e, d = (statistics.median(t[k]) * 1e3 for k in ("scan", "encode", "decode"))
        print(f"{density:>8.2%} {s:>8.2f} {e:>8.2f} {d:>8.2f} {e + d:>8.2f} {(e + d) / s:>6.2f}x")


if __name__ == "__main__":
    main()
