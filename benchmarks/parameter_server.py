"""The real parameter server: async vs sync throughput, real vs simulated staleness, k shards.

    python benchmarks/parameter_server.py [--repeats 3] [--workers 4] [--steps 30]

Every row is a real run (``dlcourse.parameter_server.run_parameter_server``: 1 or 2 server
processes and N worker processes on gloo); each table's peer is measured in the same run
of this script, interleaved, and the numbers are medians over ``--repeats``.

1. **Throughput with one slow worker** (the lecture's claim that asynchronous SGD keeps fast
   workers busy): the MLP, N workers, worker 0 sleeps ``--slow-delay`` s per step.
   Updates/s counts gradients applied per second while every worker is still running --
   over the first half of the run's gradients -- because with a fixed number of steps per
   worker the fast async workers finish early and the tail is the slow worker alone.
   Goal: async >= 1.3x sync.
2. **Staleness histogram** of a real async run (N workers at equal speed) next to
   :mod:`dlcourse.sim`'s for the same N, the simulator's compute time and message time
   set from the real run's measured per-step times. Goal: means within 30%.
3. **Server updates/s** with k = 1 and k = 2 server shards (async, the lecture's CNN,
   whose 4.4 MB of parameters make the server's traffic the bottleneck). Shards own whole
   tensors, and one CNN tensor (the 1024x1024 dense layer) is 94% of the parameters, so
   k = 2 can gain at most that much; on 2 shared cores extra processes also compete.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from dlcourse.data import MnistSplit, load_mnist
from dlcourse.parameter_server import PSConfig, run_parameter_server
from dlcourse.sim import SimConfig, simulate


def rate_while_all_run(result) -> float:
    """Gradients applied per second over the first half of the run's gradients."""
    half = len(result.update_times) // 2
    return half / result.update_times[half - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30, help="steps per worker (MLP runs)")
    parser.add_argument(
        "--slow-delay", type=float, default=0.05, help="seconds the slow worker sleeps per step"
    )
    args = parser.parse_args()
    N = args.workers
    base = dict(
        model="mlp", num_workers=N, steps=args.steps, batch_size=50, train_examples=2000, test_examples=200
    )
    print(f"# {os.cpu_count()} CPU cores; load average at start {os.getloadavg()[0]:.1f}")

    # 1. async vs sync with one slow worker
    rates: dict[str, list[float]] = {"sync": [], "async": []}
    for _ in range(args.repeats):
        for mode, S in (("sync", N), ("async", 1)):
            cfg = PSConfig(**base, softsync=S, slow_worker=0, slow_delay=args.slow_delay, snapshots=0)
            rates[mode].append(rate_while_all_run(run_parameter_server(cfg)))
    sync, asy = statistics.median(rates["sync"]), statistics.median(rates["async"])
    print(f"\n## 1. Updates/s with worker 0 slowed by {args.slow_delay} s per step (N = {N}, MLP)")
    print("| mode | updates/s (median) | ratio to sync |")
    print("|---|---|---|")
    print(f"| sync (S = N) | {sync:.1f} | 1.00 |")
    print(f"| async (S = 1) | {asy:.1f} | {asy / sync:.2f} (goal >= 1.3) |")

    # 2. staleness: real vs simulated, same N
    real_means, sim_means, hist_real, hist_sim = [], [], {}, {}
    split = load_mnist("subset")
    data = MnistSplit(split.train[: base["train_examples"]], split.test[:200], split.source)
    for _ in range(args.repeats):
        real = run_parameter_server(PSConfig(**base, snapshots=0))
        stats = [w for w in real.worker_stats if w is not None]
        compute = statistics.mean(w["compute_s"] / w["steps"] for w in stats)
        # a step's time outside compute is the pull + push round trip: two messages
        message = statistics.mean(w["wait_s"] / w["steps"] for w in stats) / 2
        sim = simulate(
            SimConfig(
                num_workers=N,
                policy="async",
                model="mlp",
                batch_size=base["batch_size"],
                epochs=max(1, N * args.steps * base["batch_size"] // base["train_examples"]),
                compute_mean=compute,
                latency=message,
                bandwidth=1e12,  # the measured message time already includes the bytes
                apply_time=0.0,
                seed=len(real_means),
            ),
            data,
        )
        real_means.append(real.staleness_summary()["mean"])
        sim_means.append(sim.staleness_summary()["mean"])
        hist_real, hist_sim = real.staleness_summary()["histogram"], sim.staleness_summary()["histogram"]
    rm, sm = statistics.median(real_means), statistics.median(sim_means)
    print(
        f"\n## 2. Staleness of async SGD, N = {N}: real run vs dlcourse.sim (histograms of the last repeat)"
    )
    keys = sorted({int(k) for k in hist_real} | {int(k) for k in hist_sim})
    total_r, total_s = sum(hist_real.values()), sum(hist_sim.values())
    print("| tau | real share | simulated share |")
    print("|---|---|---|")
    for k in keys:
        print(f"| {k} | {hist_real.get(str(k), 0) / total_r:.3f} | {hist_sim.get(str(k), 0) / total_s:.3f} |")
    print(
        f"\nmean staleness (median of repeats): real {rm:.2f}, simulated {sm:.2f}, "
        f"ratio {rm / sm:.2f} (goal within 0.70-1.30)"
    )

    # 3. server updates/s with k = 1 and k = 2 shards
    cnn = dict(model="cnn", num_workers=2, steps=15, batch_size=50, train_examples=2000, test_examples=200)
    server_rates: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for k in (1, 2):
            r = run_parameter_server(PSConfig(**cnn, num_servers=k, snapshots=0))
            server_rates[k].append(r.updates / r.wall_s)
    one, two = statistics.median(server_rates[1]), statistics.median(server_rates[2])
    print("\n## 3. Server updates/s, async, N = 2 workers, the lecture's CNN")
    print("| servers k | updates/s (median) | ratio to k = 1 |")
    print("|---|---|---|")
    print(f"| 1 | {one:.1f} | 1.00 |")
    print(f"| 2 | {two:.1f} | {two / one:.2f} |")
    print(f"\n# load average at end {os.getloadavg()[0]:.1f}; finished {time.strftime('%H:%M:%S')}")


if __name__ == "__main__":
    main()
