"""Stragglers: synchronous against asynchronous SGD, side by side on the simulated cluster.

Synchronous SGD waits for the slowest worker of every step (the lecture's "last
executor"); asynchronous SGD does not, and pays in stale gradients instead (Dean et al.,
"Large Scale Distributed Deep Networks", NIPS 2012). Sliders: N, the chance that a step
straggles and how much longer it then takes. The panel shows both timelines on one time
axis, the idle fraction per worker and test accuracy per virtual second.
"""

from __future__ import annotations

import ipywidgets as W
from matplotlib.figure import Figure

from dlcourse._validate import check_float, check_int
from dlcourse.viz.panel import SimPanel, slider
from dlcourse.viz.runs import CurvesPlot, IdlePlot, TimelinePlot


class StragglerExplorer(SimPanel):
    """Synchronous vs asynchronous SGD when some steps straggle: timelines and idle time.

    ``base``: a :class:`dlcourse.sim.SimConfig` for everything the sliders do not set
    (epochs, model, timing); ``data``: an ``MnistSplit`` (default: the MNIST subset).
    """

    title = "Stragglers: synchronous vs asynchronous SGD"

    def __init__(
        self,
        num_workers: int = 16,
        straggler_prob: float = 0.1,
        straggler_slowdown: float = 4.0,
        *,
        base=None,
        data=None,
    ) -> None:
        check_int("num_workers", num_workers, low=1, high=32)
        check_float("straggler_prob", straggler_prob, low=0.0, high=0.5)
        check_float("straggler_slowdown", straggler_slowdown, low=1.0, high=10.0)
        self.num_workers = slider(W.IntSlider, "workers N", num_workers, 1, 32)
        self.straggler_prob = slider(W.FloatSlider, "straggler probability", straggler_prob, 0.0, 0.5, 0.05)
        self.straggler_slowdown = slider(W.FloatSlider, "slowdown", straggler_slowdown, 1.0, 10.0, 0.5)
        fig = Figure(figsize=(10, 8), layout="constrained")
        grid = fig.add_gridspec(3, 2, height_ratios=[2, 2, 1.4])
        top = fig.add_subplot(grid[0, :])
        self.sync_plot = TimelinePlot(top)
        # one time axis for both, so the longer synchronous run is visibly longer
        self.async_plot = TimelinePlot(fig.add_subplot(grid[1, :], sharex=top), legend=False)
        top.tick_params(labelbottom=False)
        top.set_xlabel("")
        self.idle_plot = IdlePlot(fig.add_subplot(grid[2, 0]))
        self.curves_plot = CurvesPlot([fig.add_subplot(grid[2, 1])], x="second", metrics=("accuracy",))
        self.results: dict = {}
        super().__init__(
            [self.num_workers, self.straggler_prob, self.straggler_slowdown], fig, base=base, data=data
        )
        self._watch(self.num_workers, self.straggler_prob, self.straggler_slowdown)
        self.refresh()

    def compute(self) -> str:
        common = {
            "num_workers": self.num_workers.value,
            "straggler_prob": float(self.straggler_prob.value),
            "straggler_slowdown": float(self.straggler_slowdown.value),
        }
        self.results = {p: self.simulate(self.sim_config(policy=p, **common)) for p in ("sync", "async")}
        for policy, plot in (("sync", self.sync_plot), ("async", self.async_plot)):
            r = self.results[policy]
            plot.update(r, title=f"{policy}: {r.examples_per_s:.0f} examples per virtual second")
        # the timelines share their time axis: show the longer run whole
        self.sync_plot.ax.set_xlim(0, max(r.virtual_s for r in self.results.values()))
        self.idle_plot.update({p: r.idle_fraction for p, r in self.results.items()})
        self.curves_plot.update(self.results)  # accuracy per virtual second: who learns faster in time
        s, a = self.results["sync"], self.results["async"]
        ratio = a.examples_per_s / s.examples_per_s if s.examples_per_s else float("nan")
        idle = {p: sum(r.idle_fraction) / len(r.idle_fraction) for p, r in self.results.items()}
        return (
            f"N = {self.num_workers.value}: workers idle {idle['sync']:.0%} of the time in sync, "
            f"{idle['async']:.0%} in async; async runs {ratio:.2f}x the examples per second of sync"
        )
