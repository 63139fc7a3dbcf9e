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
(:mod:`dlcourse.landscape`). Figures use ``matplotlib.figure.Figure`` directly, not pyplot,
so no global state is touched and any backend (Agg in tests) works.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

# One colour per kind of interval, the same in every figure.
KIND_COLORS = {
    "compute": "#4C72B0",
    "push": "#DD8452",
    "pull": "#55A868",
    "wait": "#D0D0D0",
    "server": "#8172B3",
    "forward": "#4C72B0",
    "backward": "#C44E52",
    "idle": "#F2F2F2",
}
TIMELINE_KINDS = ("compute", "push", "pull", "wait")
# dlcourse.pipeline's intervals say "F" / "B"
_KIND_ALIASES = {"F": "forward", "B": "backward"}
PIPELINE_KINDS = ("forward", "backward")


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    """``obj[name]`` or ``obj.name`` for the first name present: results may be dicts or objects."""
    for name in names:
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        if not isinstance(obj, Mapping) and hasattr(obj, name):
            return getattr(obj, name)
    return default


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        if not isinstance(ax, Axes):
            raise ValueError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _new_axes_pair(axes: Sequence[Axes] | None, figsize: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    if axes is not None:
        if len(axes) != 2 or not all(isinstance(a, Axes) for a in axes):
            raise ValueError(f"axes must be two matplotlib Axes or None, got {axes!r}")
        return axes[0].figure, list(axes)
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, list(fig.subplots(1, 2))


def _rects(x0: np.ndarray, x1: np.ndarray, y: np.ndarray, height: float) -> list[np.ndarray]:
    """Rectangles [x0, x1] x [y - h/2, y + h/2] as polygon vertex arrays (for PolyCollection)."""
    h = height / 2
    return [np.array([[a, c - h], [b, c - h], [b, c + h], [a, c + h]]) for a, b, c in zip(x0, x1, y)]


def _bars(x: np.ndarray, heights: np.ndarray, width: float) -> list[np.ndarray]:
    """Vertical bars centred on ``x`` as polygon vertex arrays."""
    w = width / 2
    return [np.array([[a - w, 0], [a + w, 0], [a + w, b], [a - w, b]]) for a, b in zip(x, heights)]


class Plot:
    """A figure drawn once; ``update(...)`` redraws its data in place.

    ``fig`` is the matplotlib Figure, ``axes`` its axes (a list). Subclasses keep their
    artists and change only their data.
    """

    title = "plot"

    def __init__(self, fig: Figure, axes: list[Axes]) -> None:
        self.fig = fig
        self.axes = axes

    @property
    def ax(self) -> Axes:
        """The first (often only) axes."""
        return self.axes[0]

    def update(self, *args, **kwargs) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def _redraw(self) -> None:
        for ax in self.axes:
            ax.relim()
            ax.autoscale_view()
        self.request_draw()

    def request_draw(self) -> None:
        """Ask a live figure window or widget (pyplot / ipympl) to redraw when it is idle.

        A figure without a window (``Figure()``, the panels' PNG canvas) is skipped: there
        ``draw_idle`` would draw at once, and whoever shows the figure draws it anyway.
        """
        if getattr(self.fig.canvas, "manager", None) is not None:
            self.fig.canvas.draw_idle()

    def to_png(self, dpi: int = 80) -> bytes:
        """The figure rendered as PNG bytes (works with the Agg backend, no display needed)."""
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()

    def _repr_png_(self) -> bytes:
        return self.to_png()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(axes={len(self.axes)}, title={self.ax.get_title()!r})"


# ---------------------------------------------------------------------------------------
# Timeline: one row per worker, the server's busy time on top.


def _events(trace: Any) -> list[tuple[int, str, float, float]]:
    """(worker, kind, start, end) from tuples, dicts or event objects, or a result with ``trace``."""
    items = _get(trace, "trace", "events", default=trace)
    out = []
    for e in items:
        if isinstance(e, (tuple, list)):
            worker, kind, start, end = e[:4]
        else:
            worker, kind = _get(e, "worker", "stage", "rank"), _get(e, "kind")
            start, end = _get(e, "start"), _get(e, "end")
        kind = _KIND_ALIASES.get(kind, kind)
        if end < start:
            raise ValueError(f"trace event {e!r} ends before it starts")
        out.append((int(worker), str(kind), float(start), float(end)))
    return out


class TimelinePlot(Plot):
    """Gantt chart of a run: compute / push / pull / wait per worker, server busy time on top."""

    def __init__(
        self,
        ax: Axes | None = None,
        kinds: Sequence[str] = TIMELINE_KINDS,
        label: str = "worker",
        server: bool = True,
        legend: bool = True,
    ):
        fig, ax = _new_axes(ax, (8, 3.5))
        super().__init__(fig, [ax])
        self.kinds = tuple(kinds)
        self.row_label = label
        self.collections: dict[str, PolyCollection] = {}
        for kind in (*self.kinds, "server") if server else self.kinds:
            # thin white edges separate consecutive intervals of the same kind
            coll = PolyCollection(
                [], facecolors=KIND_COLORS.get(kind, "grey"), edgecolors="white", linewidths=0.5, label=kind
            )
            ax.add_collection(coll)
            self.collections[kind] = coll
        ax.set_xlabel("time (s)")
        if legend:
            # above the axes, so that it never hides a bar
            ax.legend(loc="lower right", bbox_to_anchor=(1, 1), fontsize="small", ncols=len(self.collections))
        ax.invert_yaxis()  # worker 0 on top, under the server row

    def update(self, trace: Any, server_busy: Any = None, *, title: str | None = None) -> None:
        """Redraw from ``trace`` (events or a result) and ``server_busy`` [(start, end), ...]."""
        events = _events(trace)
        if server_busy is None and not isinstance(trace, (list, tuple)):
            server_busy = _get(trace, "server_busy", default=None)
        busy = [(float(a), float(b)) for a, b in (server_busy or [])]
        rows = 1 + max((w for w, *_ in events), default=-1)
        for kind, coll in self.collections.items():
            if kind == "server":  # the parameter server's busy time, drawn as row -1
                x0 = np.array([a for a, _ in busy])
                x1 = np.array([b for _, b in busy])
                y = np.full(len(busy), -1.0)
            else:
                sel = [e for e in events if e[1] == kind]
                x0 = np.array([e[2] for e in sel])
                x1 = np.array([e[3] for e in sel])
                y = np.array([e[0] for e in sel], dtype=float)
            coll.set_verts(_rects(x0, x1, y, 0.8))
        end = max([e[3] for e in events] + [b for _, b in busy] + [1e-9])
        self.ax.set_xlim(0, end)
        self.ax.set_ylim(rows - 0.5, -1.5 if busy else -0.5)
        # at most ~8 worker labels: tick labels are most of a figure's drawing time
        workers = list(range(0, rows, max(1, -(-rows // 8))))
        ticks = ([-1] if busy else []) + workers
        self.ax.set_yticks(ticks, (["server"] if busy else []) + [str(n) for n in workers])
        self.ax.set_ylabel(self.row_label)
        if title is not None:
            self.ax.set_title(title, loc="left")  # the legend sits on the right
        self.request_draw()

    def intervals(self, kind: str) -> np.ndarray:
        """The drawn rectangles of ``kind`` as ``(n, 4, 2)`` vertices (what the tests compare)."""
        paths = self.collections[kind].get_paths()
        return np.array([p.vertices[:4] for p in paths]).reshape(-1, 4, 2)


def timeline(trace: Any, server_busy: Any = None, *, ax: Axes | None = None, title: str = "") -> TimelinePlot:
    """Timeline of a run: ``trace`` is (worker, kind, start, end) events or a simulator result."""
    plot = TimelinePlot(ax)
    plot.update(trace, server_busy, title=title or "timeline: who computes, who waits")
    return plot


# ---------------------------------------------------------------------------------------
# Staleness histogram


def _staleness_counts(taus: Any) -> np.ndarray:
    """Counts per staleness 0..max from a list of taus, a {tau: count} dict, or a result."""
    if taus is None:
        return np.zeros(0)
    if not isinstance(taus, (Mapping, np.ndarray, list, tuple)):
        taus = _get(taus, "staleness", "taus", default=taus)
    if isinstance(taus, Mapping) and "histogram" in taus:  # the JSON staleness summary
        taus = taus["histogram"]
    if isinstance(taus, Mapping):
        hist = {int(k): int(v) for k, v in taus.items()}
        if any(k < 0 or v < 0 for k, v in hist.items()):
            raise ValueError(f"staleness histogram must have non-negative keys and counts, got {taus!r}")
        counts = np.zeros(max(hist, default=-1) + 1)
        for k, v in hist.items():
            counts[k] = v
        return counts
    arr = np.asarray(list(taus), dtype=np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"staleness values must be >= 0, got min {arr.min()}")
    return np.bincount(arr).astype(float) if arr.size else np.zeros(0)


def _outline(heights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The outline of unit-wide bars centred on 0, 1, 2, ... (a histogram drawn as one line)."""
    if len(heights) == 0:
        return np.zeros(0), np.zeros(0)
    edges = np.arange(len(heights) + 1) - 0.5
    xs = np.concatenate([[edges[0]], np.repeat(edges, 2)[1:-1], [edges[-1]]])
    ys = np.concatenate([[0.0], np.repeat(heights, 2), [0.0]])
    return xs, ys


class StalenessPlot(Plot):
    """Fraction of applied updates per staleness tau; a second run (the real one) as an outline."""

    def __init__(self, ax: Axes | None = None):
        fig, ax = _new_axes(ax, (5, 3.5))
        super().__init__(fig, [ax])
        self.bars = PolyCollection([], facecolors=KIND_COLORS["compute"], alpha=0.8, label="simulated")
        ax.add_collection(self.bars)
        (self.overlay,) = ax.plot([], [], color="black", lw=1.5, label="real run")
        self.mean_line = ax.axvline(0, color=KIND_COLORS["push"], ls="--", label="mean")
        ax.set_xlabel("staleness tau (server versions behind)")
        ax.set_ylabel("fraction of updates")
        ax.legend(fontsize="small")

    def update(self, taus: Any, real: Any = None, *, title: str | None = None) -> None:
        """``taus``: staleness per applied update (or a histogram dict / result); ``real``: the same."""
        counts = _staleness_counts(taus)
        frac = counts / counts.sum() if counts.sum() else counts
        self.bars.set_verts(_bars(np.arange(len(frac)), frac, 0.8))
        real_counts = _staleness_counts(real)
        real_frac = real_counts / real_counts.sum() if real_counts.sum() else real_counts
        self.overlay.set_data(*_outline(real_frac))
        self.overlay.set_visible(real is not None)
        mean = float((np.arange(len(frac)) * frac).sum()) if frac.sum() else 0.0
        self.mean_line.set_xdata([mean, mean])
        width = max(len(frac), len(real_frac), 1)
        self.ax.set_xlim(-0.6, width - 0.4)
        self.ax.set_ylim(0, max(1e-9, frac.max(initial=0), real_frac.max(initial=0)) * 1.1)
        self.ax.set_title(title if title is not None else f"staleness: mean {mean:.2f}, max {len(frac) - 1}")
        self.request_draw()

    @property
    def heights(self) -> np.ndarray:
        """The drawn bar heights (fractions per tau)."""
        return np.array([p.vertices[2, 1] for p in self.bars.get_paths()])


def staleness_histogram(taus: Any, real: Any = None, *, ax: Axes | None = None) -> StalenessPlot:
    """Histogram of the staleness of applied updates; ``real`` overlays a second run."""
    plot = StalenessPlot(ax)
    plot.update(taus, real)
    return plot


# ---------------------------------------------------------------------------------------
# Curves: loss and accuracy of several runs, per epoch or per second


def _series(run: Any, key: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of ``key`` ("loss"/"accuracy") from ``{"x", key}`` or a result with ``evals``."""
    if isinstance(run, Mapping) and "x" in run:
        if key not in run:  # this run did not record that metric: draw nothing for it
            return np.zeros(0), np.zeros(0)
        xs, ys = run["x"], run[key]
    else:
        evals = _get(run, "evals")
        if evals is None:
            raise ValueError(f"a run must be {{'x': ..., {key!r}: ...}} or a result with evals, got {run!r}")
        xs = [_get(p, "epoch" if x == "epoch" else "time") for p in evals]
        ys = [_get(p, key) for p in evals]
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if xs.shape != ys.shape:
        raise ValueError(f"{key}: x and y must have the same length, got {xs.shape} and {ys.shape}")
    return xs, ys


class CurvesPlot(Plot):
    """Test loss and/or accuracy of several runs overlaid, against epochs or (virtual) seconds."""

    def __init__(
        self,
        axes: Sequence[Axes] | None = None,
        x: str = "epoch",
        metrics: Sequence[str] = ("loss", "accuracy"),
    ):
        if x not in ("epoch", "second"):
            raise ValueError(f"x must be one of 'epoch', 'second'; got {x!r}")
        metrics = tuple(metrics)
        if not metrics or any(m not in ("loss", "accuracy") for m in metrics):
            raise ValueError(f"metrics must be a non-empty selection of 'loss', 'accuracy'; got {metrics!r}")
        if len(metrics) == 2:
            fig, axes = _new_axes_pair(axes, (9, 3.5))
        else:
            fig, ax = _new_axes(axes[0] if axes else None, (5, 3.5))
            axes = [ax]
        super().__init__(fig, axes)
        self.x = x
        self.metrics = metrics
        self.lines: dict[str, tuple[Line2D, ...]] = {}
        xlabel = "epoch" if x == "epoch" else "time (s)"
        for ax, name in zip(axes, metrics):
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"test {name}")
            ax.set_title(f"test {name} per {x}")

    def update(self, runs: Mapping[str, Any]) -> None:
        """``runs`` maps a label to ``{"x": [...], "loss": [...], "accuracy": [...]}`` or a result."""
        if not isinstance(runs, Mapping):
            raise ValueError(f"runs must map a label to a run, got {type(runs).__name__}")
        for label in list(self.lines):
            if label not in runs:  # a run that left the comparison
                for line in self.lines.pop(label):
                    line.remove()
        for label, run in runs.items():
            if label not in self.lines:
                color = f"C{len(self.lines) % 10}"
                self.lines[label] = tuple(
                    ax.plot([], [], marker="o", ms=3, color=color, label=label)[0] for ax in self.axes
                )
            for line, key in zip(self.lines[label], self.metrics):
                line.set_data(*_series(run, key, self.x))
        if self.lines:
            self.axes[-1].legend(fontsize="small")
        self._redraw()


def curves(
    runs: Mapping[str, Any],
    *,
    x: str = "epoch",
    metrics: Sequence[str] = ("loss", "accuracy"),
    axes: Sequence[Axes] | None = None,
) -> CurvesPlot:
    """Loss and accuracy of several runs overlaid; ``x`` is ``"epoch"`` or ``"second"``."""
    plot = CurvesPlot(axes, x, metrics)
    plot.update(runs)
    return plot


# ---------------------------------------------------------------------------------------
# Idle fraction per worker: the last-executor picture


def _as_runs(values: Any) -> dict[str, np.ndarray]:
    if isinstance(values, Mapping):
        return {str(k): np.asarray(v, dtype=float) for k, v in values.items()}
    return {"": np.asarray(values, dtype=float)}


class IdlePlot(Plot):
    """Bars of the fraction of time each worker waits; several runs side by side."""

    def __init__(self, ax: Axes | None = None):
        fig, ax = _new_axes(ax, (6, 3.5))
        super().__init__(fig, [ax])
        self.collections: dict[str, PolyCollection] = {}
        ax.set_xlabel("worker")
        ax.set_ylabel("idle fraction")
        ax.set_ylim(0, 1)
        ax.set_title("the last executor: time spent waiting")

    def update(self, idle: Any) -> None:
        """``idle``: fractions per worker, or ``{label: fractions}`` to compare runs."""
        runs = _as_runs(idle)
        for label, v in runs.items():
            if v.ndim != 1 or (v.size and (v.min() < 0 or v.max() > 1)):
                raise ValueError(f"idle fractions must be a 1-D sequence in [0, 1], got {v!r} for {label!r}")
        for label in list(self.collections):
            if label not in runs:
                self.collections.pop(label).remove()
        width = 0.8 / max(1, len(runs))
        for i, (label, v) in enumerate(runs.items()):
            if label not in self.collections:
                coll = PolyCollection([], facecolors=f"C{i % 10}", label=label or None)
                self.ax.add_collection(coll)
                self.collections[label] = coll
            x = np.arange(len(v)) - 0.4 + width * (i + 0.5)
            self.collections[label].set_verts(_bars(x, v, width))
        n = max((len(v) for v in runs.values()), default=1)
        self.ax.set_xlim(-0.6, n - 0.4)
        self.ax.set_xticks(range(n))
        if any(runs):
            self.ax.legend(fontsize="small")
        self.request_draw()

    def heights(self, label: str = "") -> np.ndarray:
        return np.array([p.vertices[2, 1] for p in self.collections[label].get_paths()])


def idle_fraction(idle: Any, *, ax: Axes | None = None) -> IdlePlot:
    """Idle fraction per worker (a sequence, or ``{label: sequence}`` for sync vs async)."""
    plot = IdlePlot(ax)
    plot.update(idle)
    return plot


# ---------------------------------------------------------------------------------------
# Throughput against N


class ThroughputPlot(Plot):
    """Examples per second against the number of workers N, with linear scaling for reference."""

    def __init__(self, ax: Axes | None = None):
        fig, ax = _new_axes(ax, (5, 3.5))
        super().__init__(fig, [ax])
        self.lines: dict[str, Line2D] = {}
        (self.ideal,) = ax.plot([], [], ls=":", color="grey", label="linear scaling")
        ax.set_xlabel("workers N")
        ax.set_ylabel("examples / s")
        ax.set_title("throughput against N")

    def update(self, series: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> None:
        """``series`` maps a label (e.g. "sync", "async") to ``(Ns, examples_per_s)``."""
        if not isinstance(series, Mapping):
            raise ValueError(f"series must map a label to (Ns, examples_per_s), got {type(series).__name__}")
        for label in list(self.lines):
            if label not in series:
                self.lines.pop(label).remove()
        best = None
        for label, (ns, rate) in series.items():
            ns, rate = np.asarray(ns, dtype=float), np.asarray(rate, dtype=float)
            if ns.shape != rate.shape:
                raise ValueError(f"{label}: Ns and examples_per_s differ in length: {ns.shape}, {rate.shape}")
            if label not in self.lines:
                self.lines[label] = self.ax.plot([], [], marker="o", label=label)[0]
            self.lines[label].set_data(ns, rate)
            if ns.size and (best is None or ns[0] < best[0]):
                best = (ns[0], rate[0], ns.max())
        if best is not None:  # per-worker rate of the smallest N, times N
            n0, r0, n_max = best
            xs = np.array([n0, n_max])
            self.ideal.set_data(xs, r0 / n0 * xs)
        self.ax.legend(fontsize="small")
        self._redraw()


def throughput(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, ax=None) -> ThroughputPlot:
    """Throughput against N for several policies: ``{label: (Ns, examples_per_s)}``."""
    plot = ThroughputPlot(ax)
    plot.update(series)
    return plot


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


def _stage_events(busy: Any) -> list[tuple[int, str, float, float]]:
    """(stage, kind, start, end) from tuples, a {stage: [(start, end), ...]} dict, or a result."""
    if not isinstance(busy, (Mapping, list, tuple)):
        busy = _get(busy, "busy", "stage_busy", "intervals", default=busy)
    if isinstance(busy, Mapping):
        out = []
        for stage, spans in busy.items():
            for span in spans:
                kind = span[2] if len(span) > 2 else "forward"
                out.append((int(stage), str(kind), float(span[0]), float(span[1])))
        return out
    return _events(busy)


class BubblePlot(TimelinePlot):
    """Busy intervals per pipeline stage; the white gaps are the bubble."""

    def __init__(self, ax: Axes | None = None):
        super().__init__(ax, kinds=PIPELINE_KINDS, label="stage", server=False)
        self.fraction = 0.0

    def update(self, busy: Any, microbatches: int | None = None) -> None:  # type: ignore[override]
        """``busy``: (stage, kind, start, end) intervals; ``microbatches`` M adds the formula."""
        if microbatches is None:  # a PipelineTimeline knows its M
            microbatches = (
                _get(busy, "num_microbatches", default=None) if not isinstance(busy, Mapping) else None
            )
        events = _stage_events(busy)
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
    plot = BubblePlot(ax)
    plot.update(busy, microbatches)
    return plot


# ---------------------------------------------------------------------------------------
# Compression: bytes per step and accuracy with/without the residual


class CompressionPlot(Plot):
    """Left: bytes sent per step (log scale); right: accuracy of each run (e.g. with/without residual)."""

    def __init__(self, axes: Sequence[Axes] | None = None):
        fig, axes = _new_axes_pair(axes, (9, 3.5))
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
        for label in list(lines):
            if label not in data:
                lines.pop(label).remove()
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
    plot = CompressionPlot(axes)
    plot.update(bytes_per_step, accuracy)
    return plot


# ---------------------------------------------------------------------------------------
# Loss landscape between minima (data from dlcourse.landscape)


class LandscapePlot(Plot):
    """Left: the loss on the line between two minima; right: the loss in a plane through three."""

    def __init__(self, axes: Sequence[Axes] | None = None):
        fig, axes = _new_axes_pair(axes, (10, 4))
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
        alphas = np.asarray(_get(landscape, "alphas"), dtype=float)
        loss = np.asarray(_get(landscape, "line_loss"), dtype=float)
        if alphas.shape != loss.shape:
            raise ValueError(f"alphas and line_loss differ in shape: {alphas.shape}, {loss.shape}")
        l0, l1 = _get(landscape, "end_losses")
        self.line.set_data(alphas, loss)
        self.chord.set_data([0, 1], [l0, l1])
        self.ends.set_data([0, 1], [l0, l1])
        mid = float(_get(landscape, "midpoint_loss"))
        self.mid.set_data([0.5], [mid])
        barrier = float(_get(landscape, "barrier"))
        self.axes[0].set_title(f"the average of two minima: loss {mid:.2f} (barrier {barrier:.2f})")
        grid = _get(landscape, "plane_loss")
        plane_ax = self.axes[1]
        if grid is not None:
            xs, ys = np.asarray(_get(landscape, "plane_x")), np.asarray(_get(landscape, "plane_y"))
            self.image.set_data(np.log10(np.maximum(np.asarray(grid, dtype=float), 1e-12)))
            self.image.set_extent((xs[0], xs[-1], ys[0], ys[-1]))
            self.image.autoscale()
            pts = np.asarray(_get(landscape, "minima_xy"), dtype=float)
            self.minima.set_data(pts[:, 0], pts[:, 1])
            self.segment.set_data([0, 1], [0, 0])
            self.average.set_data([0.5], [0])
        plane_ax.set_visible(grid is not None)
        self._redraw()


def landscape_plot(landscape: Any, *, axes: Sequence[Axes] | None = None) -> LandscapePlot:
    """Draw a :class:`dlcourse.landscape.Landscape`: the line between minima and the plane."""
    plot = LandscapePlot(axes)
    plot.update(landscape)
    return plot


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
