"""How long a panel takes to answer a slider, at the default sizes (N = 16, one epoch).

Prints, for each panel, the median seconds of one update (a widget's value set in Python:
the observers recompute and redraw in place, then the PNG the notebook shows is rendered)
next to two peers measured in the same run:

- ``compute``: the computation alone (the simulations, or the pipeline schedule), the floor;
- ``rebuild``: building the panel's figure from scratch for each change, which is what
  ``ipywidgets.interact`` redrawing everything costs.

Goal: a panel update under 1 s median on a 2-core machine. Run:

    .venv/bin/python benchmarks/panel_update.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import matplotlib

matplotlib.use("Agg")

from dlcourse import viz  # noqa: E402
from dlcourse.pipeline import simulate_schedule  # noqa: E402
from dlcourse.sim import SimConfig, simulate  # noqa: E402
from dlcourse.sim.decentralized import DecentralizedSimConfig  # noqa: E402, F401 (registers the policy)


def median_time(fn, repeats: int) -> float:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="updates timed per panel (median taken)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    r = args.repeats
    simulate(SimConfig(num_workers=2))  # load the data and warm up torch once, outside the timings

    rows = []

    # staleness explorer: S alternates between 1 and 2 (async, soft sync), N = 16
    stal = viz.StalenessExplorer(num_workers=16)
    rows.append(
        (
            "staleness (N=16, S)",
            median_time(lambda i: setattr(stal.softsync, "value", 1 + (i + 1) % 2), r),
            median_time(lambda i: simulate(stal.config()), r),
            median_time(lambda i: viz.StalenessExplorer(num_workers=16, softsync=1 + i % 2), r),
        )
    )

    # straggler explorer: two simulations (sync and async) per update
    strag = viz.StragglerExplorer(num_workers=16)
    probs = [0.1, 0.2]

    def strag_compute(i: int) -> None:
        for policy in ("sync", "async"):
            simulate(viz.sim_config(None, num_workers=16, policy=policy, straggler_prob=probs[i % 2]))

    rows.append(
        (
            "stragglers (N=16, p)",
            median_time(lambda i: setattr(strag.straggler_prob, "value", probs[(i + 1) % 2]), r),
            median_time(strag_compute, r),
            median_time(lambda i: viz.StragglerExplorer(num_workers=16, straggler_prob=probs[i % 2]), r),
        )
    )

    # pipeline explorer: M alternates between 4 and 8 with K = 4
    pipe = viz.PipelineExplorer(num_stages=4)
    rows.append(
        (
            "pipeline (K=4, M)",
            median_time(lambda i: setattr(pipe.num_microbatches, "value", 4 + 4 * ((i + 1) % 2)), r),
            median_time(lambda i: simulate_schedule(4, 4 + 4 * (i % 2)), r),
            median_time(lambda i: viz.PipelineExplorer(num_stages=4, num_microbatches=4 + 4 * (i % 2)), r),
        )
    )

    # compression explorer: tau alternates between two values (each a new decentralized run)
    comp = viz.CompressionExplorer(num_workers=16)
    taus = [0.003, 0.01]

    def comp_update(i: int) -> None:
        comp.results = {k: v for k, v in comp.results.items() if k[0] is None}  # no cache hits
        comp.tau.value = taus[(i + 1) % 2]

    rows.append(
        (
            "compression (N=16, tau)",
            median_time(comp_update, r),
            median_time(lambda i: simulate(comp.config(taus[i % 2])), r),
            median_time(lambda i: viz.CompressionExplorer(tau=taus[i % 2], num_workers=16), r),
        )
    )

    # planner: devices alternate between 8 and 16 (7B GPT-like; four memory.plan calls per update)
    from dlcourse.memory import Layout, plan

    planner = viz.MemoryPlanner()
    rows.append(
        (
            "planner (7B, devices)",
            median_time(lambda i: setattr(planner.num_workers, "value", 8 + 8 * ((i + 1) % 2)), r),
            median_time(
                lambda i: [
                    plan(
                        Layout(
                            num_params=7e9,
                            num_workers=8 + 8 * (i % 2),
                            zero_stage=s,
                            precision="mixed",
                            model_kind="gpt",
                            batch=8,
                        )
                    )
                    for s in range(4)
                ],
                r,
            ),
            median_time(lambda i: viz.MemoryPlanner(devices=8 + 8 * (i % 2)), r),
        )
    )

    for p in (stal, strag, pipe, comp, planner):
        if p.last_error:
            raise SystemExit(f"{type(p).__name__} failed: {p.last_error}")

    print(f"panel update, median of {r} (seconds; goal: update < 1 s)")
    print(
        f"{'panel':<24}{'update':>9}{'compute':>9}{'rebuild':>9}{'update/compute':>16}{'rebuild/update':>16}"
    )
    for name, update, compute, rebuild in rows:
        verdict = "ok" if update < 1.0 else "SLOW"
        print(
            f"{name:<24}{update:>9.3f}{compute:>9.3f}{rebuild:>9.3f}"
            f"{update / compute:>16.2f}{rebuild / update:>16.2f}  {verdict}"
        )


if __name__ == "__main__":
    main()
