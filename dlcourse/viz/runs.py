"""Pictures of a training run: timeline, staleness, curves, idle time, throughput.

The lecture's questions about a distributed run, each a :class:`~dlcourse.viz.figure.Plot`
that redraws in place: who computes and who waits (the timeline and the "last executor"
effect of synchronous SGD; Dean et al., NIPS 2012), how stale the applied gradients were
(Zhang et al., IJCAI 2016), test loss and accuracy per epoch or per (virtual) second, the
fraction of time each worker sits idle, and examples per second against N. Each takes
plain inputs (sequences, dicts) or the result objects of the simulator and the real runs,
read by attribute name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.lines import Line2D

from dlcourse.viz.figure import (
    KIND_COLORS,
    TIMELINE_KINDS,
    Plot,
    bar_heights,
    bar_verts,
    drop_missing,
    lookup,
    new_axes,
    new_axes_pair,
    rect_verts,
)

# dlcourse.pipeline's intervals say "F" / "B"
_KIND_ALIASES = {"F": "forward", "B": "backward"}


# ---------------------------------------------------------------------------------------
# Timeline: one row per worker, the server's busy time on top, its link(s) above that.


def trace_events(trace: Any) -> list[tuple[int, str, float, float]]:
    """(worker, kind, start, end) from tuples, dicts or event objects, or a result with ``trace``."""
    items = lookup(trace, "trace", "events", default=trace)
    out = []
    for e in items:
        if isinstance(e, (tuple, list)):
            worker, kind, start, end = e[:4]
        else:
            worker, kind = lookup(e, "worker", "stage", "rank"), lookup(e, "kind")
            start, end = lookup(e, "start"), lookup(e, "end")
        kind = _KIND_ALIASES.get(kind, kind)
        if end < start:
            raise ValueError(f"trace event {e!r} ends before it starts")
        out.append((int(worker), str(kind), float(start), float(end)))
    return out


class TimelinePlot(Plot):
    """Gantt chart of a run: compute / push / pull / wait per worker, server busy time on top.

    With a simulator result (or ``link_busy``), a "link" row above the server shows when each
    server shard's link was sending (one thin band per shard); the two rows are labelled with
    their utilization, so the server's CPU and its network can be compared at a glance.
    """

    def __init__(
        self,
        ax: Axes | None = None,
        kinds: Sequence[str] = TIMELINE_KINDS,
        label: str = "worker",
        server: bool = True,
        legend: bool = True,
    ):
        fig, ax = new_axes(ax, (8, 3.5))
        super().__init__(fig, [ax])
        self.kinds = tuple(kinds)
        self.row_label = label
        self.collections: dict[str, PolyCollection] = {}
        for kind in (*self.kinds, "server", "link") if server else self.kinds:
            # thin white edges separate consecutive intervals of the same kind
            color = KIND_COLORS.get(kind, "tab:olive" if kind == "link" else "grey")
            coll = PolyCollection([], facecolors=color, edgecolors="white", linewidths=0.5, label=kind)
            ax.add_collection(coll)
            self.collections[kind] = coll
        ax.set_xlabel("time (s)")
        if legend:
            # above the axes, so that it never hides a bar
            ax.legend(loc="lower right", bbox_to_anchor=(1, 1), fontsize="small", ncols=len(self.collections))
        ax.invert_yaxis()  # worker 0 on top, under the server row

    def update(
        self, trace: Any, server_busy: Any = None, *, link_busy: Any = None, title: str | None = None
    ) -> None:
        """Redraw from ``trace`` (events or a result), ``server_busy`` [(start, end), ...] and
        ``link_busy`` (per server shard, [(start, end), ...]; read from a result if not given)."""
        events = trace_events(trace)
        result = not isinstance(trace, (list, tuple))
        if server_busy is None and result:
            server_busy = lookup(trace, "server_busy", default=None)
        if link_busy is None and result:
            link_busy = lookup(trace, "link_busy", default=None)
        busy = [(float(a), float(b)) for a, b in (server_busy or [])]
        links = [[(float(a), float(b)) for a, b in shard] for shard in (link_busy or [])]
        links = links if any(links) else []
        rows = 1 + max((w for w, *_ in events), default=-1)
        for kind, coll in self.collections.items():
            if kind == "server":  # the parameter server's busy time, drawn as row -1
                x0 = np.array([a for a, _ in busy])
                x1 = np.array([b for _, b in busy])
                y = np.full(len(busy), -1.0)
            elif kind == "link":  # row -2: one band per server shard's link
                k = len(links)
                x0 = np.array([a for shard in links for a, _ in shard])
                x1 = np.array([b for shard in links for _, b in shard])
                y = np.array([-2.4 + (j + 0.5) * 0.8 / k for j, shard in enumerate(links) for _ in shard])
                coll.set_verts(rect_verts(x0, x1, y, 0.8 / max(1, k)))
                continue
            else:
                sel = [e for e in events if e[1] == kind]
                x0 = np.array([e[2] for e in sel])
                x1 = np.array([e[3] for e in sel])
                y = np.array([e[0] for e in sel], dtype=float)
            coll.set_verts(rect_verts(x0, x1, y, 0.8))
        end = max([e[3] for e in events] + [b for _, b in busy] + [b for s in links for _, b in s] + [1e-9])
        self.ax.set_xlim(0, end)
        top = -2.5 if links else -1.5 if busy else -0.5
        self.ax.set_ylim(rows - 0.5, top)
        # at most ~8 worker labels: tick labels are most of a figure's drawing time
        workers = list(range(0, rows, max(1, -(-rows // 8))))
        cpu = lookup(trace, "server_utilization", default=None) if result else None
        link_use = lookup(trace, "link_utilization", "server_link_utilization") if result else None
        server_label = "server" if cpu is None else f"server CPU {cpu:.0%}"
        link_label = "link" if not link_use else f"link {sum(link_use) / len(link_use):.0%}"
        ticks = ([-2] if links else []) + ([-1] if busy else []) + workers
        labels = ([link_label] if links else []) + ([server_label] if busy else [])
        self.ax.set_yticks(ticks, labels + [str(n) for n in workers])
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
    return TimelinePlot(ax).drawn(trace, server_busy, title=title or "timeline: who computes, who waits")


# ---------------------------------------------------------------------------------------
# Staleness histogram


def staleness_counts(sigmas: Any) -> np.ndarray:
    """Counts per staleness 0..max from a list of sigmas, a {sigma: count} dict, or a result."""
    if sigmas is None:
        return np.zeros(0)
    if not isinstance(sigmas, (Mapping, np.ndarray, list, tuple)):
        sigmas = lookup(sigmas, "staleness", "taus", default=sigmas)
    if isinstance(sigmas, Mapping) and "histogram" in sigmas:  # the JSON staleness summary
        sigmas = sigmas["histogram"]
    if isinstance(sigmas, Mapping):
        hist = {int(k): int(v) for k, v in sigmas.items()}
        if any(k < 0 or v < 0 for k, v in hist.items()):
            raise ValueError(f"staleness histogram must have non-negative keys and counts, got {sigmas!r}")
        counts = np.zeros(max(hist, default=-1) + 1)
        for k, v in hist.items():
            counts[k] = v
        return counts
    arr = np.asarray(list(sigmas), dtype=np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"staleness values must be >= 0, got min {arr.min()}")
    return np.bincount(arr).astype(float) if arr.size else np.zeros(0)


def _fractions(counts: np.ndarray) -> np.ndarray:
    """``counts`` as fractions of their sum (all zeros stay zeros)."""
    total = counts.sum()
    return counts / total if total else counts


def _outline(heights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The outline of unit-wide bars centred on 0, 1, 2, ... (a histogram drawn as one line)."""
    if len(heights) == 0:
        return np.zeros(0), np.zeros(0)
    edges = np.arange(len(heights) + 1) - 0.5
    xs = np.concatenate([[edges[0]], np.repeat(edges, 2)[1:-1], [edges[-1]]])
    ys = np.concatenate([[0.0], np.repeat(heights, 2), [0.0]])
    return xs, ys


class StalenessPlot(Plot):
    """Fraction of applied updates per staleness σ; a second run (the real one) as an outline."""

    def __init__(self, ax: Axes | None = None):
        fig, ax = new_axes(ax, (5, 3.5))
        super().__init__(fig, [ax])
        self.bars = PolyCollection([], facecolors=KIND_COLORS["compute"], alpha=0.8, label="simulated")
        ax.add_collection(self.bars)
        (self.overlay,) = ax.plot([], [], color="black", lw=1.5, label="real run")
        self.mean_line = ax.axvline(0, color=KIND_COLORS["push"], ls="--", label="mean")
        ax.set_xlabel("staleness σ (server versions behind)")
        ax.set_ylabel("fraction of updates")
        ax.legend(fontsize="small")

    def update(self, sigmas: Any, real: Any = None, *, title: str | None = None) -> None:
        """``sigmas``: staleness per applied update (or a histogram dict / result); ``real``: the same."""
        frac = _fractions(staleness_counts(sigmas))
        self.bars.set_verts(bar_verts(np.arange(len(frac)), frac, 0.8))
        real_frac = _fractions(staleness_counts(real))
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
        """The drawn bar heights (fractions per sigma)."""
        return bar_heights(self.bars)


def staleness_histogram(sigmas: Any, real: Any = None, *, ax: Axes | None = None) -> StalenessPlot:
    """Histogram of the staleness of applied updates; ``real`` overlays a second run."""
    return StalenessPlot(ax).drawn(sigmas, real)


# ---------------------------------------------------------------------------------------
# Curves: loss and accuracy of several runs, per epoch or per second


def _series(run: Any, key: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of ``key`` ("loss"/"accuracy") from ``{"x", key}`` or a result with ``evals``."""
    if isinstance(run, Mapping) and "x" in run:
        if key not in run:  # this run did not record that metric: draw nothing for it
            return np.zeros(0), np.zeros(0)
        xs, ys = run["x"], run[key]
    else:
        evals = lookup(run, "evals")
        if evals is None:
            raise ValueError(f"a run must be {{'x': ..., {key!r}: ...}} or a result with evals, got {run!r}")
        xs = [lookup(p, "epoch" if x == "epoch" else "time") for p in evals]
        ys = [lookup(p, key) for p in evals]
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
            fig, axes = new_axes_pair(axes, (9, 3.5))
        else:
            fig, ax = new_axes(axes[0] if axes else None, (5, 3.5))
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
        drop_missing(self.lines, runs)
        for label, run in runs.items():
            if label not in self.lines:
                # the first colour no line still shows: a run that left frees its colour
                used = {lines[0].get_color() for lines in self.lines.values()}
                color = next((c for c in (f"C{i}" for i in range(10)) if c not in used), "C0")
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
    return CurvesPlot(axes, x, metrics).drawn(runs)


# ---------------------------------------------------------------------------------------
# Idle fraction per worker: the last-executor picture


def _as_runs(values: Any) -> dict[str, np.ndarray]:
    if isinstance(values, Mapping):
        return {str(k): np.asarray(v, dtype=float) for k, v in values.items()}
    return {"": np.asarray(values, dtype=float)}


class IdlePlot(Plot):
    """Bars of the fraction of time each worker waits; several runs side by side."""

    def __init__(self, ax: Axes | None = None):
        fig, ax = new_axes(ax, (6, 3.5))
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
        drop_missing(self.collections, runs)
        width = 0.8 / max(1, len(runs))
        for i, (label, v) in enumerate(runs.items()):
            if label not in self.collections:
                coll = PolyCollection([], facecolors=f"C{i % 10}", label=label or None)
                self.ax.add_collection(coll)
                self.collections[label] = coll
            x = np.arange(len(v)) - 0.4 + width * (i + 0.5)
            self.collections[label].set_verts(bar_verts(x, v, width))
        n = max((len(v) for v in runs.values()), default=1)
        self.ax.set_xlim(-0.6, n - 0.4)
        self.ax.set_xticks(range(n))
        if any(runs):
            self.ax.legend(fontsize="small")
        self.request_draw()

    def heights(self, label: str = "") -> np.ndarray:
        return bar_heights(self.collections[label])


def idle_fraction(idle: Any, *, ax: Axes | None = None) -> IdlePlot:
    """Idle fraction per worker (a sequence, or ``{label: sequence}`` for sync vs async)."""
    return IdlePlot(ax).drawn(idle)


# ---------------------------------------------------------------------------------------
# Throughput against N


class ThroughputPlot(Plot):
    """Examples per second against the number of workers N, with linear scaling for reference."""

    def __init__(self, ax: Axes | None = None):
        fig, ax = new_axes(ax, (5, 3.5))
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
        drop_missing(self.lines, series)
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
    return ThroughputPlot(ax).drawn(series)
