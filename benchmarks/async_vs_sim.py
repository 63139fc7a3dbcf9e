"""Real vs simulated asynchronous SGD at the same settings, with one straggler (issue 26).

    python benchmarks/async_vs_sim.py [--seeds 3] [--workers 3] [--slowdown 4] [--lrs 0.1,1,3]

Every real run is :func:`dlcourse.parameter_server.run_parameter_server` (1 server and N
worker processes on gloo, the MLP); every simulated one :func:`dlcourse.sim.simulate` with
the same model, data, N, batch size, epochs, seed and learning rate. Worker 0 computes
``--slowdown`` times slower than the others (real: it sleeps ``(slowdown - 1) x`` the
others' measured compute per step; simulated: ``worker_speeds = (1/slowdown, 1, ...)``).
The real async runs use ``shared_batches=True``: the workers take their mini-batches from
one shared order, so the fast ones take more of the epoch, as in the simulator.

Per seed, interleaved:

1. a real **sync** run (S = N) and a real **async** run (S = 1) with the straggler: end-to-end
   examples/s (all examples over server 0's first-to-last message) and their ratio;
2. the simulator driven by the async run's measured times (the fast workers' mean compute
   per step and its spread as ``compute_mean`` / ``compute_spread``, half of a fast step's
   time outside compute as message latency), sync and async: their examples/s ratio;
3. the total-variation distance between the real and the simulated async staleness
   histograms, ``TV = 1/2 sum_sigma |p_real - p_sim|``, and their means;
4. test accuracy after each epoch and final test loss, real vs simulated async;
5. for each learning rate of ``--lrs``: whether the real and the simulated async run diverge.

Printed as tables of medians over the seeds (and each seed's value where it matters).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

from dlcourse.data import MnistSplit, load_mnist
from dlcourse.divergence import Diverged
from dlcourse.parameter_server import PSConfig, run_parameter_server
from dlcourse.sim import SimConfig, simulate


def tv_distance(p: dict, q: dict) -> float:
    """Total-variation distance of two staleness histograms (counts keyed by sigma)."""
    total_p, total_q = sum(p.values()), sum(q.values())
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0) / total_p - q.get(k, 0) / total_q) for k in keys)


def histogram(sigmas) -> dict:
    out: dict[int, int] = {}
    for s in sigmas:
        out[s] = out.get(s, 0) + 1
    return out


def timing(result, slow: int = 0) -> dict:
    """The fast workers' measured compute per step (mean, lognormal spread) and message time."""
    fast = [w for w in result.worker_stats if w is not None and w["worker"] != slow and w["steps"]]
    steps = [t for w in fast for t in w["step_compute_s"] if t > 0]
    mean = statistics.mean(steps)
    logs = [math.log(t / mean) for t in steps]
    spread = min(3.0, statistics.pstdev(logs)) if len(logs) > 1 else 0.1
    # a step's time outside compute is the pull + push round trip: two messages
    message = sum(w["wait_s"] for w in fast) / sum(w["steps"] for w in fast) / 2
    return {"compute": mean, "spread": spread, "message": message}


def epoch_accuracy(result, epochs: int) -> list[float]:
    """Test accuracy of the real run's snapshot at (or first after) each epoch's last update."""
    per_epoch = result.updates / epochs
    out = []
    for e in range(1, epochs + 1):
        point = next((a for v, _, a in result.accuracy_over_time if v >= e * per_epoch - 1e-9), None)
        out.append(point if point is not None else result.accuracy_over_time[-1][2])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument(
        "--slowdown", type=float, default=4.0, help="worker 0 computes this many times slower"
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--train-examples", type=int, default=3000)
    parser.add_argument(
        "--lr", type=float, default=0.1, help="learning rate of the throughput/staleness runs"
    )
    parser.add_argument("--lrs", default="0.1,1,3", help="learning rates of the diverges-or-not table")
    args = parser.parse_args()
    N = args.workers
    split = load_mnist("subset", seed=0)
    data = MnistSplit(split.train[: args.train_examples], split.test[:500], split.source)
    common = dict(model="mlp", num_workers=N, batch_size=args.batch_size, epochs=args.epochs)
    real_base = dict(common, train_examples=args.train_examples, test_examples=500, timeout=60.0)
    print(f"# {os.cpu_count()} CPU cores; load average at start {os.getloadavg()[0]:.1f}")

    # calibrate: the fast workers' compute per step, without a straggler
    calib = timing(run_parameter_server(PSConfig(**real_base, lr=args.lr, shared_batches=True, snapshots=0)))
    # the straggler's whole step (compute + pull + push) is `slowdown` times a fast one's
    step = calib["compute"] + 2 * calib["message"]
    delay = (args.slowdown - 1) * step
    print(
        f"# calibration: compute {calib['compute'] * 1e3:.2f} ms/step, "
        f"message {calib['message'] * 1e3:.2f} ms; worker 0 sleeps {delay * 1e3:.2f} ms a step "
        f"({args.slowdown:g}x a fast step)"
    )
    rows = []
    for seed in range(args.seeds):
        slow = dict(slow_worker=0, slow_delay=delay, seed=seed, lr=args.lr)
        sync = run_parameter_server(PSConfig(**real_base, **slow, softsync=N, snapshots=0))
        asy = run_parameter_server(PSConfig(**real_base, **slow, shared_batches=True, snapshots=args.epochs))
        t = timing(asy)
        sim_common = dict(
            common,
            seed=seed,
            lr=args.lr,
            compute_mean=t["compute"],
            compute_spread=t["spread"],
            # the straggler's measured compute includes its sleep
            worker_speeds=(t["compute"] / (t["compute"] + delay),) + (1.0,) * (N - 1),
            latency=t["message"],
            bandwidth=1e12,  # the measured message time already includes the bytes
            apply_time=0.0,
            evals_per_epoch=1,
        )
        sim_sync = simulate(SimConfig(**sim_common, policy="sync"), data)
        sim_async = simulate(SimConfig(**sim_common, policy="async"), data)
        real_rate = (asy.examples / asy.wall_s) / (sync.examples / sync.wall_s)
        sim_rate = sim_async.examples_per_s / sim_sync.examples_per_s
        hr, hs = histogram(asy.staleness), histogram(sim_async.staleness)
        rows.append(
            {
                "real_ratio": real_rate,
                "sim_ratio": sim_rate,
                "real_sync_eps": sync.examples / sync.wall_s,
                "real_async_eps": asy.examples / asy.wall_s,
                "tv": tv_distance(hr, hs),
                "updates": (asy.updates, sim_async.updates),
                "steps": (asy.updates_per_worker, _sim_steps(sim_async, N)),
                "mean": (statistics.mean(asy.staleness), statistics.mean(sim_async.staleness)),
                "max": (max(asy.staleness), max(sim_async.staleness)),
                "acc": (epoch_accuracy(asy, args.epochs), sim_async.epoch_curve("accuracy")),
                "loss": (asy.test["loss"], sim_async.test.loss),
                "hist": (hr, hs),
            }
        )
        r = rows[-1]
        print(
            f"# seed {seed}: real async/sync {r['real_ratio']:.2f}x, simulated {r['sim_ratio']:.2f}x, "
            f"TV {r['tv']:.3f}, steps per worker real {r['steps'][0]} sim {r['steps'][1]}"
        )

    med = lambda key, i=None: statistics.median(r[key] if i is None else r[key][i] for r in rows)  # noqa: E731
    title = f"worker 0 {args.slowdown:g}x slower (N = {N}, MLP, {args.epochs} epochs)"
    print(f"\n## 1. End-to-end examples/s, {title}")
    print("| | real | simulated | real / simulated |")
    print("|---|---|---|---|")
    print(
        f"| async / sync examples/s (median of {len(rows)} seeds) | {med('real_ratio'):.2f}x | "
        f"{med('sim_ratio'):.2f}x | {med('real_ratio') / med('sim_ratio'):.2f} |"
    )
    print(f"\nreal examples/s (median): sync {med('real_sync_eps'):.0f}, async {med('real_async_eps'):.0f}")

    print(f"\n## 2. Staleness of the async runs ({rows[0]['updates'][0]} updates a run)")
    print("| seed | TV real vs sim | mean real | mean sim | max real | max sim | steps/worker real | sim |")
    print("|---|---|---|---|---|---|---|---|")
    for seed, r in enumerate(rows):
        print(
            f"| {seed} | {r['tv']:.3f} | {r['mean'][0]:.2f} | {r['mean'][1]:.2f} | {r['max'][0]} | "
            f"{r['max'][1]} | {r['steps'][0]} | {r['steps'][1]} |"
        )
    print(f"\nmedian TV {med('tv'):.3f} (0: the same histogram, 1: disjoint)")
    hr, hs = rows[-1]["hist"]
    total_r, total_s = sum(hr.values()), sum(hs.values())
    print("\n| sigma | real share | simulated share |  (last seed)")
    print("|---|---|---|")
    for k in sorted(set(hr) | set(hs)):
        print(f"| {k} | {hr.get(k, 0) / total_r:.3f} | {hs.get(k, 0) / total_s:.3f} |")

    print(f"\n## 3. Async test accuracy after each epoch and final test loss (lr {args.lr}, medians)")
    print("| | " + " | ".join(f"epoch {e + 1}" for e in range(args.epochs)) + " | final loss |")
    print("|---|" + "---|" * (args.epochs + 1))
    for i, name in enumerate(("real", "simulated")):
        accs = [statistics.median(r["acc"][i][e] for r in rows) for e in range(args.epochs)]
        print(f"| {name} | " + " | ".join(f"{a:.3f}" for a in accs) + f" | {med('loss', i):.3f} |")

    print("\n## 4. Does async diverge? (real vs simulated, same lr and seed)")
    print("| lr | " + " | ".join(f"seed {s} real / sim" for s in range(args.seeds)) + " | agree |")
    print("|---|" + "---|" * (args.seeds + 1))
    for lr in (float(x) for x in args.lrs.split(",")):
        cells, agree = [], 0
        for seed in range(args.seeds):
            slow = dict(slow_worker=0, slow_delay=delay, seed=seed, lr=lr)
            real_div = _diverges(
                lambda slow=slow: run_parameter_server(
                    PSConfig(**real_base, **slow, shared_batches=True, snapshots=0)
                )
            )
            sim_div = _diverges(
                lambda seed=seed, lr=lr: simulate(
                    SimConfig(
                        **common,
                        seed=seed,
                        lr=lr,
                        policy="async",
                        compute_mean=calib["compute"],
                        worker_speeds=(calib["compute"] / (calib["compute"] + delay),) + (1.0,) * (N - 1),
                        latency=calib["message"],
                        bandwidth=1e12,
                        apply_time=0.0,
                        evals_per_epoch=1,
                    ),
                    data,
                )
            )
            cells.append(f"{'yes' if real_div else 'no'} / {'yes' if sim_div else 'no'}")
            agree += real_div == sim_div
        print(f"| {lr:g} | " + " | ".join(cells) + f" | {agree}/{args.seeds} |")
    print(f"\n# load average at end {os.getloadavg()[0]:.1f}; finished {time.strftime('%H:%M:%S')}")


def _sim_steps(sim, n: int) -> list[int]:
    steps = [0] * n
    for w, _ in sim.apply_log:
        steps[w] += 1
    return steps


def _diverges(run) -> bool:
    try:
        run()
    except Diverged:
        return True
    return False


if __name__ == "__main__":
    main()
