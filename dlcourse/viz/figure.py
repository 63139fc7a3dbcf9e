"""What every figure of :mod:`dlcourse.viz` is made of: the Plot frame and its pieces.

A :class:`Plot` holds a matplotlib ``fig`` and its axes; subclasses draw their artists
once and change only their data in ``update(...)`` (``set_verts``, ``set_data``), which is
what makes the widget panels of :mod:`dlcourse.viz` feel immediate. A ``Plot`` shows
itself in a notebook (``_repr_png_``) and ``to_png()`` renders it without a display.
Figures use ``matplotlib.figure.Figure`` directly, not pyplot, so no global state is
touched and any backend (Agg in tests) works. The helpers below read results that may be
dicts or objects (:func:`lookup`) and build the rectangles the plots draw.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from dlcourse._validate import check_int

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
PIPELINE_KINDS = ("forward", "backward")


def lookup(obj: Any, *names: str, default: Any = None) -> Any:
    """``obj[name]`` or ``obj.name`` for the first name present: results may be dicts or objects."""
    for name in names:
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        if not isinstance(obj, Mapping) and hasattr(obj, name):
            return getattr(obj, name)
    return default


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new figure of ``figsize`` inches with one axes."""
    if ax is not None:
        if not isinstance(ax, Axes):
            raise ValueError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def new_axes_pair(axes: Sequence[Axes] | None, figsize: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    """Two axes side by side: ``axes`` and their figure, or a new figure."""
    if axes is not None:
        if len(axes) != 2 or not all(isinstance(a, Axes) for a in axes):
            raise ValueError(f"axes must be two matplotlib Axes or None, got {axes!r}")
        return axes[0].figure, list(axes)
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, list(fig.subplots(1, 2))


def rect_verts(x0: np.ndarray, x1: np.ndarray, y: np.ndarray, height: float) -> list[np.ndarray]:
    """Rectangles [x0, x1] x [y - h/2, y + h/2] as polygon vertex arrays (for PolyCollection)."""
    h = height / 2
    return [np.array([[a, c - h], [b, c - h], [b, c + h], [a, c + h]]) for a, b, c in zip(x0, x1, y)]


def bar_verts(x: np.ndarray, heights: np.ndarray, width: float) -> list[np.ndarray]:
    """Vertical bars centred on ``x`` as polygon vertex arrays."""
    w = width / 2
    return [np.array([[a - w, 0], [a + w, 0], [a + w, b], [a - w, b]]) for a, b in zip(x, heights)]


def bar_heights(bars: PolyCollection) -> np.ndarray:
    """The heights of bars drawn from :func:`bar_verts` (what the tests compare)."""
    return np.array([p.vertices[2, 1] for p in bars.get_paths()])


def drop_missing(artists: dict[str, Any], keep: Mapping[str, Any]) -> None:
    """Remove the artists of labels not in ``keep``: a run that left the comparison."""
    for label in list(artists):
        if label not in keep:
            removed = artists.pop(label)
            for artist in removed if isinstance(removed, tuple) else (removed,):
                artist.remove()


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

    def drawn(self, *args, **kwargs) -> Self:
        """``update(*args, **kwargs)``, then this plot: what every builder (``timeline()``, ...) returns."""
        self.update(*args, **kwargs)
        return self

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
        check_int("dpi", dpi, low=1)
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()

    def _repr_png_(self) -> bytes:
        return self.to_png()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(axes={len(self.axes)}, title={self.ax.get_title()!r})"
