"""Textbook figures of distributed training, drawn once and updated in place.

Every function here takes plain inputs (sequences, dicts, or the result objects of the
simulator and the real runs, which it reads by attribute name) and returns a :class:`Plot`:
an object holding the matplotlib ``fig`` and its axes, with an ``update(...)`` method that
takes the same inputs and changes the existing artists (``set_verts``, ``set_data``) instead
of drawing a new figure; that is what makes the widget panels in :mod:`dlcourse.panels`
feel immediate. A ``Plot`` shows itself in a notebook (``_repr_png_``) and ``to_png()``
renders it without a display.

The pictures follow the lecture: a run's timeline (who computes, who waits: the
"last executor" effect), the staleness histogram of async SGD (Zhang et al., IJCAI 2016),
accuracy and loss per epoch and per (virtual) second, idle fraction per worker, throughput
against N, the pipeline bubble (Huang et al., "GPipe", NeurIPS 2019), compressed updates
(Strom, Interspeech 2015) and the loss landscape between two minima
(:mod:`dlcourse.landscape`).

The figures live in three modules, all importable from here (``from dlcourse import plots``):

- :mod:`dlcourse.plot_base`: the :class:`Plot` frame, colours and drawing helpers;
- :mod:`dlcourse.plot_runs`: pictures of a run (timeline, staleness, curves, idle, throughput);
- :mod:`dlcourse.plot_techniques`: the pipeline bubble, compression, the loss landscape.
"""

from __future__ import annotations

from collections.abc import Callable

from dlcourse.plot_base import KIND_COLORS, PIPELINE_KINDS, TIMELINE_KINDS, Plot, lookup
from dlcourse.plot_runs import (
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
from dlcourse.plot_techniques import (
    BubblePlot,
    CompressionPlot,
    LandscapePlot,
    bubble,
    bubble_fraction,
    compression,
    landscape_plot,
)

__all__ = [  # every figure, wherever it lives
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
