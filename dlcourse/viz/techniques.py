"""Pictures of one technique each: the pipeline bubble, compressed updates, the loss landscape.

- the pipeline bubble: busy intervals per stage and the idle fraction against GPipe's
  ``(K-1)/(M+K-1)`` (Huang et al., "GPipe", NeurIPS 2019; :mod:`dlcourse.pipeline`);
- compression: bytes per step, dense against 1-bit, and accuracy with and without the
  residual (Strom, Interspeech 2015; :mod:`dlcourse.compression`);
- the loss landscape between minima: why the average of two minima need not be one
  (Goodfellow et al., ICLR 2015; :mod:`dlcourse.landscape`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from dlcourse.viz.figure import PIPELINE_KINDS, Plot, drop_missing, lookup, new_axes_pair
from dlcourse.viz.runs import TimelinePlot, trace_events

# ---------------------------------------------------------------------------------------
# Pipeline bubble


def bubble_fraction(busy: Iterable[tuple[int, str, float, float]]) -> float:
    """1 - busy time / (stages x makespan): the fraction of stage-time spent idle."""
    events = list(busy)
    if not events:
        return 0.0
    stages = 1 + max(e[0] for e in events)
    start, end = min(e[2] for e in events), max(e[3] for e in events)
    if end <= start:
        return 0.0
    work = sum(e[3] - e[2] for e in events)
    return 1.0 - work / (stages * (end - start))


def _stagetrace_events(busy: Any) -> list[tuple[int, str, float, float]]:
    """(stage, kind, start, end) from tuples, a {stage: [(start, end), ...]} dict, or a result."""
    if not isinstance(busy, (Mapping, list, tuple)):
        busy = lookup(busy, "busy", "stage_busy", "intervals", default=busy)
    if isinstance(busy, Mapping):
        out = []
        for stage, spans in busy.items():
            for span in spans:
                kind = span[2] if len(span) > 2 else "forward"
                out.append((int(stage), str(kind), float(span[0]), float(span[1])))
        return out
    return trace_events(busy)


class BubblePlot(TimelinePlot):
    """Busy intervals per pipeline stage; the white gaps are the bubble."""

    def __init__(self, ax: Axes | None = None):
        super().__init__(ax, kinds=PIPELINE_KINDS, label="stage", server=False)
        self.fraction = 0.0

    def update(self, busy: Any, microbatches: int | None = None) -> None:  # type: ignore[override]
        """``busy``: (stage, kind, start, end) intervals; ``microbatches`` M adds the formula."""
        if microbatches is None:  # a PipelineTimeline knows its M
            microbatches = (
                lookup(busy, "num_microbatches", default=None) if not isinstance(busy, Mapping) else None
            )
        events = _stagetrace_events(busy)
        self.fraction = bubble_fraction(events)
        stages = 1 + max((e[0] for e in events), default=0)
        title = f"pipeline bubble: {self.fraction:.1%} idle"
        if microbatches:
            formula = (stages - 1) / (microbatches + stages - 1)
            title += f"  (GPipe: (K-1)/(M+K-1) = {formula:.1%})"
        super().update(events, [], title=title)
        self.ax.set_xlabel("time")


def bubble(busy: Any, microbatches: int | None = None, *, ax: Axes | None = None) -> BubblePlot:
    """The pipeline bubble chart from per-stage busy intervals."""
    return BubblePlot(ax).drawn(busy, microbatches)


# ---------------------------------------------------------------------------------------
# Compression: bytes per step and accuracy with/without the residual


class CompressionPlot(Plot):
    """Left: bytes sent per step (log scale); right: accuracy of each run (e.g. with/without residual)."""

    def __init__(self, axes: Sequence[Axes] | None = None):
        fig, axes = new_axes_pair(axes, (9, 3.5))
        super().__init__(fig, axes)
        self.byte_lines: dict[str, Line2D] = {}
        self.acc_lines: dict[str, Line2D] = {}
        axes[0].set_yscale("log")
        axes[0].set_xlabel("step")
        axes[0].set_ylabel("message bytes per step")
        axes[0].set_title("network traffic")
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("test accuracy")
        axes[1].set_title("accuracy")

    @staticmethod
    def _sync(ax: Axes, lines: dict[str, Line2D], data: Mapping[str, Any], as_xy: bool) -> None:
        drop_missing(lines, data)
        for label, values in data.items():
            if as_xy and isinstance(values, tuple) and len(values) == 2:
                xs, ys = np.asarray(values[0], dtype=float), np.asarray(values[1], dtype=float)
            else:
                ys = np.asarray(values, dtype=float)
                xs = np.arange(1, len(ys) + 1, dtype=float)
            if xs.shape != ys.shape:
                raise ValueError(f"{label}: x and y differ in length: {xs.shape}, {ys.shape}")
            if label not in lines:
                lines[label] = ax.plot([], [], marker="." if as_xy else None, label=label)[0]
            lines[label].set_data(xs, np.maximum(ys, 1e-12) if ax.get_yscale() == "log" else ys)

    def update(self, bytes_per_step: Mapping[str, Any], accuracy: Mapping[str, Any]) -> None:
        """``bytes_per_step``: ``{label: bytes per step}``; ``accuracy``: ``{label: accs or (x, accs)}``."""
        if not isinstance(bytes_per_step, Mapping) or not isinstance(accuracy, Mapping):
            raise ValueError("bytes_per_step and accuracy must be dicts mapping a label to values")
        self._sync(self.axes[0], self.byte_lines, bytes_per_step, as_xy=False)
        self._sync(self.axes[1], self.acc_lines, accuracy, as_xy=True)
        for ax in self.axes:
            if ax.lines:
                ax.legend(fontsize="small")
        self._redraw()


def compression(
    bytes_per_step: Mapping[str, Any], accuracy: Mapping[str, Any], *, axes=None
) -> CompressionPlot:
    """Bytes per step (dense vs compressed) and accuracy with/without the residual."""
    return CompressionPlot(axes).drawn(bytes_per_step, accuracy)


# ---------------------------------------------------------------------------------------
# Loss landscape between minima (data from dlcourse.landscape)


class LandscapePlot(Plot):
    """Left: the loss on the line between two minima; right: the loss in a plane through three."""

    def __init__(self, axes: Sequence[Axes] | None = None):
        fig, axes = new_axes_pair(axes, (10, 4))
        super().__init__(fig, axes)
        line_ax, plane_ax = axes
        (self.line,) = line_ax.plot([], [], color="C0", label="loss at (1-alpha) W_a + alpha W_b")
        (self.chord,) = line_ax.plot([], [], ls="--", color="grey", label="chord between the minima")
        (self.ends,) = line_ax.plot([], [], "o", color="C2", label="minima W_a, W_b")
        (self.mid,) = line_ax.plot([], [], "X", color="C3", ms=9, label="their average")
        line_ax.set_xlabel("alpha")
        line_ax.set_ylabel("loss")
        line_ax.legend(fontsize="small")
        self.image = plane_ax.imshow(
            np.zeros((2, 2)),
            origin="lower",
            aspect="auto",
            cmap="viridis",
            extent=(0, 1, 0, 1),
            interpolation="bilinear",  # a smooth surface, not the grid's squares
        )
        fig.colorbar(self.image, ax=plane_ax, label="log10 loss")
        (self.segment,) = plane_ax.plot([], [], "--", color="white")
        (self.minima,) = plane_ax.plot([], [], "o", color="C2", ms=7)
        (self.average,) = plane_ax.plot([], [], "X", color="C3", ms=9)
        plane_ax.set_xlabel("along W_b - W_a")
        plane_ax.set_ylabel("orthogonal, towards W_c")
        plane_ax.set_title("the plane through three minima")

    def update(self, landscape: Any) -> None:
        """``landscape``: a :class:`dlcourse.landscape.Landscape` (or anything with its fields)."""
        alphas = np.asarray(lookup(landscape, "alphas"), dtype=float)
        loss = np.asarray(lookup(landscape, "line_loss"), dtype=float)
        if alphas.shape != loss.shape:
            raise ValueError(f"alphas and line_loss differ in shape: {alphas.shape}, {loss.shape}")
        l0, l1 = lookup(landscape, "end_losses")
        self.line.set_data(alphas, loss)
        self.chord.set_data([0, 1], [l0, l1])
        self.ends.set_data([0, 1], [l0, l1])
        mid = float(lookup(landscape, "midpoint_loss"))
        self.mid.set_data([0.5], [mid])
        barrier = float(lookup(landscape, "barrier"))
        self.axes[0].set_title(f"the average of two minima: loss {mid:.2f} (barrier {barrier:.2f})")
        grid = lookup(landscape, "plane_loss")
        plane_ax = self.axes[1]
        if grid is not None:
            xs, ys = np.asarray(lookup(landscape, "plane_x")), np.asarray(lookup(landscape, "plane_y"))
            self.image.set_data(np.log10(np.maximum(np.asarray(grid, dtype=float), 1e-12)))
            self.image.set_extent((xs[0], xs[-1], ys[0], ys[-1]))
            self.image.autoscale()
            pts = np.asarray(lookup(landscape, "minima_xy"), dtype=float)
            self.minima.set_data(pts[:, 0], pts[:, 1])
            self.segment.set_data([0, 1], [0, 0])
            self.average.set_data([0.5], [0])
        plane_ax.set_visible(grid is not None)
        self._redraw()


def landscape_plot(landscape: Any, *, axes: Sequence[Axes] | None = None) -> LandscapePlot:
    """Draw a :class:`dlcourse.landscape.Landscape`: the line between minima and the plane."""
    return LandscapePlot(axes).drawn(landscape)
