"""Figures and widget panels: what a student sees. No concept module imports this package.

Figures (matplotlib) take plain inputs or the result objects of the simulator and the real
runs (read by attribute name) and return a :class:`Plot` holding ``fig`` and its axes, with
an ``update(...)`` that changes the existing artists instead of drawing anew: that is what
makes the panels feel immediate. A ``Plot`` shows itself in a notebook; ``to_png()``
renders it without a display. Panels (ipywidgets 8) are explorers you display in a cell.

- :mod:`dlcourse.viz.figure`: the :class:`Plot` frame, colours and drawing helpers;
- :mod:`dlcourse.viz.runs`: pictures of a run -- timeline (who computes, who waits: the
  last executor), staleness histogram (Zhang et al., IJCAI 2016), curves per epoch and per
  (virtual) second, idle fraction per worker, throughput against N;
- :mod:`dlcourse.viz.techniques`: the pipeline bubble (Huang et al., "GPipe", NeurIPS 2019),
  compressed updates (Strom, Interspeech 2015), the loss landscape between two replicas;
- :mod:`dlcourse.viz.panel`: the panels' frame (build once, redraw in place, errors as text);
- :mod:`dlcourse.viz.stragglers`: :class:`StragglerExplorer`, sync vs async with stragglers;
- :mod:`dlcourse.viz.staleness`: :class:`StalenessExplorer`, N, S, staleness bound, lr policy,
  server shards, a student's own ``f(lr, sigma)`` and "Run it for real";
- :mod:`dlcourse.viz.compression`: :class:`CompressionExplorer`, threshold tau, residual, N, topology;
- :mod:`dlcourse.viz.pipeline`: :class:`PipelineExplorer`, stages K and micro-batches M;
- :mod:`dlcourse.viz.approach`: :class:`ApproachExplorer`, model size, N, bandwidth, stragglers ->
  an approach;
- :mod:`dlcourse.viz.speedup`: :class:`SpeedupExplorer`, speedup against N, parameter server vs ring;
- :mod:`dlcourse.viz.planner`: :class:`MemoryPlanner`, memory per device and step time of a layout.

Everything public is importable from here: ``from dlcourse.viz import StalenessExplorer, timeline``.
"""

from __future__ import annotations

from collections.abc import Callable

from dlcourse.viz.approach import ApproachExplorer, choose_approach
from dlcourse.viz.compression import CompressionExplorer, mean_message_bytes, message_bytes_per_step
from dlcourse.viz.figure import KIND_COLORS, PIPELINE_KINDS, TIMELINE_KINDS, Plot, lookup
from dlcourse.viz.panel import PANEL_DEFAULTS, Panel, SimPanel, sim_config, slider
from dlcourse.viz.pipeline import PipelineExplorer
from dlcourse.viz.planner import MemoryPlanner
from dlcourse.viz.runs import (
    CurvesPlot,
    IdlePlot,
    StalenessPlot,
    ThroughputPlot,
    TimelinePlot,
    curves,
    idle_fraction,
    staleness_counts,
    staleness_histogram,
    throughput,
    timeline,
    trace_events,
)
from dlcourse.viz.speedup import SpeedupExplorer
from dlcourse.viz.staleness import RealRun, StalenessExplorer, run_for_real_default
from dlcourse.viz.stragglers import StragglerExplorer
from dlcourse.viz.techniques import (
    BubblePlot,
    CompressionPlot,
    LandscapePlot,
    bubble,
    bubble_fraction,
    compression,
    landscape_plot,
)

__all__ = [  # every figure and panel, wherever it lives
    "PANEL_DEFAULTS",
    "ApproachExplorer",
    "choose_approach",
    "CompressionExplorer",
    "MemoryPlanner",
    "Panel",
    "PipelineExplorer",
    "RealRun",
    "SimPanel",
    "SpeedupExplorer",
    "StalenessExplorer",
    "StragglerExplorer",
    "mean_message_bytes",
    "message_bytes_per_step",
    "run_for_real_default",
    "sim_config",
    "slider",
    "KIND_COLORS",
    "PIPELINE_KINDS",
    "PLOTS",
    "TIMELINE_KINDS",
    "BubblePlot",
    "CompressionPlot",
    "CurvesPlot",
    "IdlePlot",
    "LandscapePlot",
    "Plot",
    "StalenessPlot",
    "ThroughputPlot",
    "TimelinePlot",
    "bubble",
    "bubble_fraction",
    "compression",
    "curves",
    "idle_fraction",
    "landscape_plot",
    "lookup",
    "staleness_counts",
    "staleness_histogram",
    "throughput",
    "timeline",
    "trace_events",
]

# Every plot function, for the tests and for ``help``: name -> builder
PLOTS: dict[str, Callable[..., Plot]] = {
    "timeline": timeline,
    "staleness_histogram": staleness_histogram,
    "curves": curves,
    "idle_fraction": idle_fraction,
    "throughput": throughput,
    "bubble": bubble,
    "compression": compression,
    "landscape": landscape_plot,
}
