"""How much do the stochastic claims of lessons 00-03 move between runs? The margins of their asserts.

Each lesson asserts properties of the run it just made (issue 21). This script repeats the
runs behind those asserts with other seeds and with 1 or 2 torch threads in this process
(worker processes always run one thread each), and prints every measured value beside the
bound the lesson asserts, so that a bound can be chosen, or checked, against the noise::

    python benchmarks/lesson_noise.py                      # seeds 0-2, 1 and 2 threads
    python benchmarks/lesson_noise.py --seeds 0 --threads 2 --lessons 01 03

The lessons themselves use seed 0. Deterministic quantities (the simulator's virtual time,
the float64 equivalences) move with the seed only; wall-clock ones move with the machine's
load as well, which this script cannot control: run it while the machine is as busy as it
is when the lessons run. Exit status 1 when any bound failed.

Measured on 2 cores shared with other jobs (load 10-24), 2026-12-04, seeds 0-2, 1 and 2
threads (lesson 00: seeds 0-3, the same runs by a script of the same code), min - max:

| value | measured | the lesson asserts |
|---|---|---|
| 00 test accuracy, macro F1 | 0.967 - 0.976 | > 0.95 |
| 00 first epoch's share of the climb from chance | 0.92 - 0.93 | > 0.8 |
| 01 MLP / CNN synchronizing share of a step (N = 2) | 0.756 - 0.955 / 0.205 - 0.409 | > 0.5 / < 0.5 |
| 01 simulated server / its formula, N = 1..32 | 0.856 - 1.02 | 0.75 - 1.05 |
| 02 wall-clock bubble, M = 1 minus M = 8 | 0.418 - 0.461 | > 0.2 |
| 02 replayed bubble minus formula (M = 1, 8) | <= 0.0091 | < 0.05 |
| 02 idle / busy of each stage at M = 1 | 1.92 - 2.06 | > 1 |
| 03 float64 gap of averaging vs one machine | 1.1e-16 - 1.7e-16 | < 1e-12 |
| 03 smallest distance of a broken condition | 0.0074 - 0.0093 | > 1e-4 |
| 03 fast rank: step / delay, sync / delay | 1.09 - 1.16, 1.07 - 1.14 | > 0.8, > 0.5 |
| 03 fast rank: compute / sync | 0.014 - 0.029 | < 1 |
| 03 1 KB all-reduce / its bytes' time at the fitted beta | 112 - 7,590 | > 10 |
| 03 4 MB / 1 KB all-reduce time | 0.82 - 37.9 | printed only (no assert) |

The last row is why lesson 03 asserts nothing about it: in one run of six the 1 KB median
was as slow as the 4 MB one.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch


def lesson_00(seed: int) -> dict[str, float]:
    from dlcourse.data import load_mnist
    from dlcourse.models import make_model
    from dlcourse.train import evaluate, fit

    split = load_mnist()
    model = make_model("cnn", seed=seed)
    history = fit(
        model, split.train, epochs=5, batch_size=100, lr=1e-3, optimizer="adam", eval_data=split.test,
        seed=seed, progress=False,
    )  # fmt: skip
    result = evaluate(model, split.test)
    share = (history.test_accuracy[0] - 0.1) / (history.test_accuracy[-1] - 0.1)
    return {
        "00 accuracy": result["accuracy"],
        "00 macro F1": result["macro_f1"],
        "00 first-epoch share": share,
    }


def lesson_01(seed: int) -> dict[str, float]:
    from dlcourse.data import MnistSplit, load_mnist
    from dlcourse.data_parallel import DataParallelConfig, train_sync_sgd
    from dlcourse.models import count_parameters, flops_per_example, make_model
    from dlcourse.scaling import speedup
    from dlcourse.sim import SimConfig, simulate
    from dlcourse.sim.cluster import SERVER_MEMORY_BANDWIDTH

    split = load_mnist()
    out = {}
    for name in ("mlp", "cnn"):
        run = train_sync_sgd(
            split.train, 2, DataParallelConfig(model=name, batch_size=100, max_steps=10, seed=seed)
        )
        compute = sum(w["compute_s"] for w in run.per_worker)
        sync = sum(w["sync_s"] for w in run.per_worker)
        out[f"01 {name} sync share"] = sync / (sync + compute)
    data = MnistSplit(split.train[:3200], split.test[:200], split.source)
    config = SimConfig()
    worst = 0.0, 2.0
    for name in ("mlp", "cnn"):
        net = make_model(name)
        nbytes = 4 * count_parameters(net)
        compute_s = flops_per_example(net) * 100 / config.device_flops
        timing = dict(
            compute_s=compute_s, nbytes=nbytes, bandwidth=config.bandwidth, latency=config.latency,
            apply_s=3 * nbytes / SERVER_MEMORY_BANDWIDTH,
        )  # fmt: skip
        for n in (1, 2, 4, 8, 16, 32):
            r = simulate(
                SimConfig(num_workers=n, policy="sync", model=name, evals_per_epoch=1, seed=seed), data
            )
            ratio = r.examples_per_s * compute_s / 100 / speedup("parameter-server", n, **timing)
            worst = max(worst[0], ratio), min(worst[1], ratio)
    out["01 sim / formula, max"], out["01 sim / formula, min"] = worst
    return out


def lesson_02(seed: int) -> dict[str, float]:
    from dlcourse.data import load_mnist
    from dlcourse.models import make_model
    from dlcourse.pipeline import measure_bubble

    split = load_mnist()
    X, y = split.train.X[:96], split.train.y[:96]
    timelines = measure_bubble(
        make_model("mlp", seed=seed), X, y, num_stages=3, microbatches=(1, 8), stage_cost_s=0.08
    )
    plain = timelines[0]
    return {
        "02 bubble M=1 - M=8 (wall)": timelines[0].bubble_fraction - timelines[1].bubble_fraction,
        "02 M=1 replay - 2/3": abs(plain.replay().bubble_fraction - 2 / 3),
        "02 M=8 replay - 2/10": abs(timelines[1].replay().bubble_fraction - 2 / 10),
        "02 M=1 min idle/busy": min(i / b for i, b in zip(plain.idle_s, plain.busy_s)),
    }


def lesson_03(seed: int) -> dict[str, float]:
    from dlcourse.averaging import parameter_distance, train_averaging, train_reference
    from dlcourse.collectives import fit, measure_collectives
    from dlcourse.data import load_mnist
    from dlcourse.data_parallel import DataParallelConfig, train_sync_sgd

    split = load_mnist()
    train = split.train[:2000]
    base = DataParallelConfig(
        model="mlp", epochs=1, batch_size=100, lr=0.1, optimizer="sgd", dtype="float64", seed=seed
    )
    gap = parameter_distance(
        train_averaging(train, 4, base).parameters, train_reference(train, 4, base).parameters
    )
    two = dataclasses.replace(base, epochs=2)
    broken = []
    for config, sizes in (
        (dataclasses.replace(two, optimizer="adam", lr=1e-3), None),
        (two, [1400, 600]),
        (dataclasses.replace(two, average_every=5), None),
    ):
        run = train_averaging(train, 2, config, shard_sizes=sizes)
        broken.append(
            parameter_distance(
                run.parameters, train_reference(train, 2, config, shard_sizes=sizes).parameters
            )
        )
    slow = train_sync_sgd(train, 2, dataclasses.replace(base, slow_worker=1, slow_delay=0.1))
    fast, slowed = slow.per_worker
    times = measure_collectives(2, repeats=7)
    model = fit(times, 2)
    small, large = (
        times["all_reduce", min(b for _, b in times)],
        times["all_reduce", max(b for _, b in times)],
    )
    return {
        "03 float64 gap": gap,
        "03 smallest broken distance": min(broken),
        "03 fast step / delay": fast["step_s"] / slowed["delay_s"],
        "03 fast sync / delay": fast["sync_s"] / slowed["delay_s"],
        "03 |fast - slow step| / slow": abs(fast["step_s"] - slowed["step_s"]) / slowed["step_s"],
        "03 fast compute / sync": fast["compute_s"] / fast["sync_s"],
        "03 all-reduce 4 MB / 1 KB": large / small,
        "03 1 KB time / its bytes' time": small / (1024 / model.beta_bytes_per_s),
    }


# what each lesson asserts of these values: (lower bound or None, upper bound or None)
BOUNDS = {
    "00 accuracy": (0.95, None),
    "00 macro F1": (0.95, None),
    "00 first-epoch share": (0.8, None),
    "01 mlp sync share": (0.5, None),
    "01 cnn sync share": (None, 0.5),
    "01 sim / formula, max": (None, 1.05),
    "01 sim / formula, min": (0.75, None),
    "02 bubble M=1 - M=8 (wall)": (0.2, None),
    "02 M=1 replay - 2/3": (None, 0.05),
    "02 M=8 replay - 2/10": (None, 0.05),
    "02 M=1 min idle/busy": (1.0, None),
    "03 float64 gap": (None, 1e-12),
    "03 smallest broken distance": (1e-4, None),
    "03 fast step / delay": (0.8, None),
    "03 fast sync / delay": (0.5, None),
    "03 |fast - slow step| / slow": (None, 0.25),
    "03 fast compute / sync": (None, 1.0),
    "03 all-reduce 4 MB / 1 KB": (None, None),  # printed only: a busy machine can make 1 KB as slow as 4 MB
    "03 1 KB time / its bytes' time": (10.0, None),
}
LESSONS = {"00": lesson_00, "01": lesson_01, "02": lesson_02, "03": lesson_03}


def held(name: str, value: float) -> bool:
    low, high = BOUNDS[name]
    return (low is None or value > low) and (high is None or value < high)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], choices=[1, 2, 4])
    parser.add_argument("--lessons", nargs="+", default=list(LESSONS), choices=list(LESSONS))
    args = parser.parse_args(argv)
    rows: dict[str, list[float]] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for seed in args.seeds:
            for lesson in args.lessons:
                start = time.perf_counter()
                for name, value in LESSONS[lesson](seed).items():
                    rows.setdefault(name, []).append(value)
                    mark = "" if held(name, value) else "  <-- outside the lesson's bound"
                    print(f"threads {threads} seed {seed} {name:32s} {value:10.3g}{mark}", flush=True)
                print(f"   (lesson {lesson}: {time.perf_counter() - start:.0f} s)", flush=True)
    print(f"\n{'value':32s} {'min':>10s} {'max':>10s}  bound the lesson asserts")
    failed = False
    for name, values in rows.items():
        low, high = BOUNDS[name]
        bound = " and ".join(
            b
            for b in (f"> {low:g}" if low is not None else "", f"< {high:g}" if high is not None else "")
            if b
        )
        ok = all(held(name, v) for v in values)
        failed |= not ok
        print(f"{name:32s} {min(values):10.3g} {max(values):10.3g}  {bound}{'' if ok else '  FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
