"""Real vs simulated asynchronous SGD at the same settings, with one straggler (issue 26).

    python benchmarks/async_vs_sim.py [--workers 2,3] [--seeds 3] [--diverge-seeds 5] [--lrs 0.1,1,3,10]

Every real run is :func:`dlcourse.parameter_server.run_parameter_server` (1 server and N
worker processes on gloo, the MLP); every simulated one :func:`dlcourse.sim.simulate` with
the same model, data, N, batch size, epochs, seed and learning rate. Worker 0 computes
``--slowdown`` times slower than the others (real: it sleeps ``(slowdown - 1) x`` a fast
step; simulated: ``worker_speeds``). The real async runs use ``shared_batches=True``: the
workers take their mini-batches from one shared order, as the simulator deals them. The
defaults give 480 updates per async run (3,000 examples, batch 25, 4 epochs).

The simulator is driven by each real async run's own measured times (:func:`timing`): the
fast workers' compute per step (mean and lognormal spread), half a fast step's time outside
compute as each message's latency, and the **spread of that time outside compute** as
``latency_spread``. The last is what issue 26 was missing: a real round trip through the
server process on this 2-core machine has a spread of about 0.6 of its mean (bimodal: about
1.5 ms, or about 5 ms), while compute is a fifth of a fast step; with a constant message
time two equally fast simulated workers take turns like clockwork (staleness 1 for about 70%
of updates at N = 3), real ones overtake each other (staleness 0 and 3 for 12-16% and 4-6%).
Pinned to one core (``taskset -c 0``) the spread grows to about 1.0 and, measured, keeps real
and simulated N = 3 within 0.06-0.12 TV (0.42-0.49 with constant messages).

Where the slow round trips come from (issue 26 follow-up; the workers' ``step_times`` split a
step outside compute into send and wait, and a scratch copy of the server stamped each
receive, hand-off to its main thread and answer; N = 2, straggler sleeping 12 ms): the slow
ones are late **wake-ups of blocked threads**, which wait for a CPU. Most often the server's
receiving thread, between the header and the payload of a push (median 1.3-2 ms instead of 0.2),
else the worker waiting for its answer, the server's main thread taking the push from the
inbox, or the answer's send. Python's GIL is not it: a switch interval of 0.5 ms or 50 ms
(5 ms by default) gave the same 27-36% of steps over 2.5 ms and spread 0.60. Real-time
priority is: ``SCHED_FIFO`` for the server's threads alone took it to 14% (spread 0.40, the
rest waiting on the worker's wake-up), for every rank to 0% (spread 0.11). The spread depends
on what else runs on the machine: the same code measured 0.56-0.63 at one time and 0.35-0.48
twenty minutes later. Posting a push's payload receive together with its header (one wake-up
less per message) changed nothing measurable in interleaved runs (N = 2 and 3, with and
without the straggler: examples/s and spread within run-to-run noise), so the server keeps
its protocol.

Numbers a student sees here, each defined once:

- **examples/s end to end**: all examples over server 0's first-to-last message (real) or
  over virtual time (simulated); their async / sync ratio;
- **TV**: the total-variation distance of the real and simulated staleness histograms,
  ``TV = 1/2 sum_sigma |p_real(sigma) - p_sim(sigma)|`` (0: the same, 1: disjoint), with and
  without the latency spread;
- **round-trip spread**: the standard deviation of ``log`` (a fast worker's time outside
  compute in one step: from its compute's end to the next parameters' arrival, the push, the
  server's apply and answer), from the workers' recorded ``step_times``
  (:mod:`dlcourse.parameter_server.protocol`). It used to be inferred from server 0's update
  times and the worker each update was guessed to be from; over two N = 2 runs both gave
  0.60-0.61;
- **diverges**: the run stopped with :class:`~dlcourse.divergence.Diverged`.

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


def round_trip_spread(worker_stats) -> float:
    """The round-trip spread (module docstring) of these workers' steps: the standard deviation
    of log(time outside compute), from each step's ``compute_end`` to its ``answered``."""
    # each step's time outside compute: push, the server's apply and answer (a LAST push: NaN)
    outside = [
        math.log(answered - end)
        for w in worker_stats
        for _, end, _, answered in w["step_times"]
        if answered > end
    ]
    return min(3.0, statistics.pstdev(outside)) if len(outside) > 1 else 0.0


def timing(result, slow: int = 0) -> dict:
    """The fast workers' measured times: compute per step (mean, lognormal spread), message
    time (half a step's time outside compute) and the round-trip spread (module docstring)."""
    fast = [w for w in result.worker_stats if w is not None and w["worker"] != slow and w["steps"]]
    steps = [t for w in fast for t in w["step_compute_s"] if t > 0]
    mean = statistics.mean(steps)
    logs = [math.log(t / mean) for t in steps]
    spread = min(3.0, statistics.pstdev(logs)) if len(logs) > 1 else 0.1
    # a step's time outside compute is the pull + push round trip: two messages
    message = sum(w["wait_s"] for w in fast) / sum(w["steps"] for w in fast) / 2
    round_trip = round_trip_spread(fast)
    straggler = result.worker_stats[slow]
    slow_compute = (
        statistics.mean(straggler["step_compute_s"]) if straggler is not None and straggler["steps"] else None
    )
    return {
        "compute": mean,
        "spread": spread,
        "message": message,
        "round_trip_spread": round_trip,
        "slow_compute": slow_compute,  # worker `slow`'s compute per step (its sleep included)
    }


def sim_config(
    common: dict, t: dict, slow_compute: float, seed: int, lr: float, policy: str, spread: bool = True
) -> SimConfig:
    """The simulator at the real run's measured times (``spread=False``: constant messages).

    Worker 0's speed is the fast compute over ``slow_compute``, its compute per step with the
    sleep: measured where the run had the straggler (``time.sleep`` oversleeps by about 0.4 ms
    a step here), else the fast compute plus the delay.
    """
    N = common["num_workers"]
    return SimConfig(
        **common,
        seed=seed,
        lr=lr,
        policy=policy,
        compute_mean=t["compute"],
        compute_spread=t["spread"],
        worker_speeds=(t["compute"] / slow_compute,) + (1.0,) * (N - 1),
        latency=t["message"],
        latency_spread=t["round_trip_spread"] if spread else 0.0,
        bandwidth=1e12,  # the measured message time already includes the bytes
        apply_time=0.0,  # ... and the server's work
        evals_per_epoch=1,
    )


def epoch_accuracy(result, epochs: int) -> list[float]:
    """Test accuracy of the real run's snapshot at (or first after) each epoch's last update."""
    per_epoch = result.updates / epochs
    out = []
    for e in range(1, epochs + 1):
        point = next((a for v, _, a in result.accuracy_over_time if v >= e * per_epoch - 1e-9), None)
        out.append(point if point is not None else result.accuracy_over_time[-1][2])
    return out


def diverges(run) -> bool:
    """Whether ``run()`` stops with :class:`~dlcourse.divergence.Diverged`."""
    try:
        run()
    except Diverged:
        return True
    return False


def compare(N: int, args, data) -> tuple[list[dict], dict, float]:
    """Per seed: real sync and async, simulated sync and async (with and without the spread)."""
    common = dict(model="mlp", num_workers=N, batch_size=args.batch_size, epochs=args.epochs)
    real_base = dict(common, train_examples=args.train_examples, test_examples=500, timeout=60.0)
    # calibrate: a fast step without a straggler, so worker 0 can sleep (slowdown - 1) of it
    calib = timing(run_parameter_server(PSConfig(**real_base, lr=args.lr, shared_batches=True, snapshots=0)))
    delay = (args.slowdown - 1) * (calib["compute"] + 2 * calib["message"])
    print(
        f"# N = {N}: compute {calib['compute'] * 1e3:.2f} ms/step, message {calib['message'] * 1e3:.2f} ms, "
        f"round-trip spread {calib['round_trip_spread']:.2f}; worker 0 sleeps {delay * 1e3:.2f} ms a step",
        flush=True,
    )
    rows = []
    for seed in range(args.seeds):
        slow = dict(slow_worker=0, slow_delay=delay, seed=seed, lr=args.lr)
        sync = run_parameter_server(PSConfig(**real_base, **slow, softsync=N, snapshots=0))
        asy = run_parameter_server(PSConfig(**real_base, **slow, shared_batches=True, snapshots=args.epochs))
        t = timing(asy)
        at = (common, t, t["slow_compute"], seed, args.lr)
        sim_sync = simulate(sim_config(*at, "sync"), data)
        sim_async = simulate(sim_config(*at, "async"), data)
        sim_const = simulate(sim_config(*at, "async", spread=False), data)
        hr, hs = histogram(asy.staleness), histogram(sim_async.staleness)
        slow_real = [s for w, s in zip(asy.update_workers, asy.staleness) if w == 0]
        slow_sim = [s for (w, _), s in zip(sim_async.apply_log, sim_async.staleness) if w == 0]
        rows.append(
            {
                "real_ratio": (asy.examples / asy.wall_s) / (sync.examples / sync.wall_s),
                "sim_ratio": sim_async.examples_per_s / sim_sync.examples_per_s,
                "real_sync_eps": sync.examples / sync.wall_s,
                "real_async_eps": asy.examples / asy.wall_s,
                "tv": tv_distance(hr, hs),
                "tv_const": tv_distance(hr, histogram(sim_const.staleness)),
                "round_trip_spread": t["round_trip_spread"],
                "updates": (asy.updates, sim_async.updates),
                "steps": (asy.updates_per_worker, _sim_steps(sim_async, N)),
                "mean": (statistics.mean(asy.staleness), statistics.mean(sim_async.staleness)),
                "slow_mean": (statistics.mean(slow_real), statistics.mean(slow_sim)),
                "max": (max(asy.staleness), max(sim_async.staleness)),
                "acc": (epoch_accuracy(asy, args.epochs), sim_async.epoch_curve("accuracy")),
                "loss": (asy.test["loss"], sim_async.test.loss),
                "hist": (hr, hs, histogram(sim_const.staleness)),
            }
        )
        r = rows[-1]
        print(
            f"# N = {N} seed {seed}: real async/sync {r['real_ratio']:.2f}x, "
            f"simulated {r['sim_ratio']:.2f}x, TV {r['tv']:.3f} (constant messages {r['tv_const']:.3f}), "
            f"steps per worker real {r['steps'][0]} sim {r['steps'][1]}",
            flush=True,
        )
    return rows, calib, delay


def _sim_steps(sim, n: int) -> list[int]:
    steps = [0] * n
    for w, _ in sim.apply_log:
        steps[w] += 1
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="2,3", help="N values, comma-separated")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the throughput/staleness runs")
    parser.add_argument("--diverge-seeds", type=int, default=5, help="seeds of the diverges-or-not table")
    parser.add_argument(
        "--slowdown", type=float, default=4.0, help="worker 0 computes this many times slower"
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--train-examples", type=int, default=3000)
    parser.add_argument(
        "--lr", type=float, default=0.1, help="learning rate of the throughput/staleness runs"
    )
    parser.add_argument("--lrs", default="0.1,1,3,10", help="learning rates of the diverges-or-not table")
    parser.add_argument(
        "--n8-seeds", type=int, default=0, help="seeds of the simulated N = 8 CNN table (0: none; ~6 s each)"
    )
    args = parser.parse_args()
    try:
        Ns = [int(x) for x in args.workers.split(",")]
        lrs = [float(x) for x in args.lrs.split(",")]
        if (
            min(Ns) < 2
            or min(args.seeds, args.diverge_seeds) < 1
            or args.n8_seeds < 0
            or args.slowdown < 1
            or min(lrs) <= 0
        ):
            raise ValueError
    except ValueError:
        parser.error(
            "--workers must be integers >= 2, --lrs positive numbers, --seeds and --diverge-seeds >= 1, "
            "--n8-seeds >= 0, --slowdown >= 1"
        )
    split = load_mnist("subset", seed=0)
    data = MnistSplit(split.train[: args.train_examples], split.test[:500], split.source)
    print(f"# {os.cpu_count()} CPU cores; load average at start {os.getloadavg()[0]:.1f}")
    results = {N: compare(N, args, data) for N in Ns}
    title = f"worker 0 {args.slowdown:g}x slower (MLP, batch {args.batch_size}, {args.epochs} epochs)"

    def med(rows, key, i=None):
        return statistics.median(r[key] if i is None else r[key][i] for r in rows)

    print(f"\n## 1. End-to-end examples/s, {title}; medians of {args.seeds} seeds")
    print("| N | real async / sync | simulated | real / simulated | real sync ex/s | real async ex/s |")
    print("|---|---|---|---|---|---|")
    for N, (rows, _, _) in results.items():
        print(
            f"| {N} | {med(rows, 'real_ratio'):.2f}x | {med(rows, 'sim_ratio'):.2f}x | "
            f"{med(rows, 'real_ratio') / med(rows, 'sim_ratio'):.2f} | {med(rows, 'real_sync_eps'):.0f} | "
            f"{med(rows, 'real_async_eps'):.0f} |"
        )

    print("\n## 2. Staleness of the async runs: real vs simulated (TV: 0 the same, 1 disjoint)")
    print(
        "| N | seed | updates | TV | TV, constant messages | round-trip spread | mean real / sim | "
        "straggler's mean real / sim | max real / sim | steps/worker real / sim |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for N, (rows, _, _) in results.items():
        for seed, r in enumerate(rows):
            print(
                f"| {N} | {seed} | {r['updates'][0]} | {r['tv']:.3f} | {r['tv_const']:.3f} | "
                f"{r['round_trip_spread']:.2f} | {r['mean'][0]:.2f} / {r['mean'][1]:.2f} | "
                f"{r['slow_mean'][0]:.2f} / {r['slow_mean'][1]:.2f} | {r['max'][0]} / {r['max'][1]} | "
                f"{r['steps'][0]} / {r['steps'][1]} |"
            )
    for N, (rows, _, _) in results.items():
        print(
            f"\nN = {N}: median TV {med(rows, 'tv'):.3f} with the measured round-trip spread, "
            f"{med(rows, 'tv_const'):.3f} with constant message times"
        )
    for N, (rows, _, _) in results.items():
        hr, hs, hc = rows[-1]["hist"]
        tr, ts, tc = sum(hr.values()), sum(hs.values()), sum(hc.values())
        print(f"\n| sigma | real share | simulated | simulated, constant messages |  (N = {N}, last seed)")
        print("|---|---|---|---|")
        for k in sorted(set(hr) | set(hs) | set(hc)):
            print(f"| {k} | {hr.get(k, 0) / tr:.3f} | {hs.get(k, 0) / ts:.3f} | {hc.get(k, 0) / tc:.3f} |")

    print(f"\n## 3. Async test accuracy after each epoch and final test loss (lr {args.lr}, medians)")
    print("| N | | " + " | ".join(f"epoch {e + 1}" for e in range(args.epochs)) + " | final loss |")
    print("|---|---|" + "---|" * (args.epochs + 1))
    for N, (rows, _, _) in results.items():
        for i, name in enumerate(("real", "simulated")):
            accs = [statistics.median(r["acc"][i][e] for r in rows) for e in range(args.epochs)]
            cells = " | ".join(f"{a:.3f}" for a in accs)
            print(f"| {N} | {name} | {cells} | {med(rows, 'loss', i):.3f} |")

    print(f"\n## 4. Does async diverge? (real / simulated, same lr and seed; {args.diverge_seeds} seeds)")
    seeds = range(args.diverge_seeds)
    print("| N | lr | " + " | ".join(f"seed {s}" for s in seeds) + " | agree |")
    print("|---|---|" + "---|" * (args.diverge_seeds + 1))
    for N, (_, calib, delay) in results.items():
        common = dict(model="mlp", num_workers=N, batch_size=args.batch_size, epochs=args.epochs)
        real_base = dict(common, train_examples=args.train_examples, test_examples=500, timeout=60.0)
        for lr in lrs:
            cells, agree = [], 0
            for seed in seeds:
                slow = dict(slow_worker=0, slow_delay=delay, shared_batches=True, snapshots=0)
                real = PSConfig(**real_base, **slow, lr=lr, seed=seed)
                real_div = diverges(lambda real=real: run_parameter_server(real))
                sim = sim_config(common, calib, calib["compute"] + delay, seed, lr, "async")
                sim_div = diverges(lambda sim=sim: simulate(sim, data))
                cells.append(f"{'yes' if real_div else 'no'} / {'yes' if sim_div else 'no'}")
                agree += real_div == sim_div
            print(f"| {N} | {lr:g} | " + " | ".join(cells) + f" | {agree}/{args.diverge_seeds} |", flush=True)
    if args.n8_seeds:
        n8_table(args.n8_seeds)
    print(f"\n# load average at end {os.getloadavg()[0]:.1f}; finished {time.strftime('%H:%M:%S')}")


def n8_table(seeds: int) -> None:
    """Issue 26's N = 8 run in the simulator: the lecture's CNN, batch 100, 3 epochs, constant lr.

    No 16-core machine here: the simulator at a fast step of 17 ms (one of 16 cores) and 2 ms
    messages, with the round-trip spread measured here, says where the edge of stability lies
    and whether the start-up burst (every worker computes its first gradient on version 0, so
    the first N updates are 0 .. N-1 stale at the full learning rate) is what blows up.
    Measured: lr 0.05 diverges at update 88-108 in 3 of 5 seeds (the issue's real run stopped
    at a worker's step 14, about update 110; its simulated run was one of the seeds that
    converge), lr 0.03 converges in 5; the start-up burst is there (sigmas 0 .. 7) and passes.
    """
    split = load_mnist("subset", seed=0)
    base = dict(
        model="cnn", num_workers=8, batch_size=100, epochs=3, policy="async", compute_mean=0.017,
        compute_spread=0.1, latency=2e-3, latency_spread=0.6, bandwidth=1e12, apply_time=0.0,
        evals_per_epoch=1,
    )  # fmt: skip
    print("\n## 5. Simulated N = 8, CNN, batch 100, 3 epochs: diverged at update k, or test accuracy")
    print(
        "| lr | "
        + " | ".join(f"seed {s}" for s in range(seeds))
        + " | first 8 sigmas (first seed that converged) |"
    )
    print("|---|" + "---|" * (seeds + 1))
    for lr in (0.03, 0.05):
        cells, first = [], ""
        for seed in range(seeds):
            try:
                r = simulate(SimConfig(**base, lr=lr, seed=seed), split)
                cells.append(f"{r.test.accuracy:.2f}")
                first = first or str(r.staleness[:8])
            except Diverged as e:
                cells.append(f"diverged at {e.index}" if getattr(e, "index", None) else "diverged")
        print(f"| {lr:g} | " + " | ".join(cells) + f" | {first} |", flush=True)


if __name__ == "__main__":
    main()
