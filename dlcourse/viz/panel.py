"""The frame every widget panel shares: controls, a status line, a message line, a figure.

How the explorers of :mod:`dlcourse.viz` stay fast: each builds its matplotlib figure
once (:mod:`dlcourse.viz`) and on a change only replaces the artists' data, then shows
the figure as a PNG in an ``Image`` widget (this works in JupyterLab, Notebook, Binder and
VS Code without the ipympl extension). Sliders whose change costs a simulation use
``continuous_update=False``, so they recompute once on release. A status line says what
is being computed; an invalid combination (or any error) shows as a message in the panel,
never as a traceback. Everything runs in plain Python too: setting
``panel.num_workers.value = 8`` recomputes synchronously, which is how the tests drive the
panels without a browser.
"""

from __future__ import annotations

import html
import io
import time
from dataclasses import replace

import ipywidgets as W
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


class Panel:
    """The common frame: controls, a status line, a message line and one figure.

    Subclasses build ``self.fig`` and their plots once, list their controls, and implement
    :meth:`compute` (do the work, update the plots' data, return a status text).
    """

    title = "panel"

    def __init__(self, controls: list[W.Widget], fig: Figure, extra: list[W.Widget] | None = None) -> None:
        self.fig = fig
        fig.set_dpi(72)
        self._canvas = FigureCanvasAgg(fig)  # renders the PNG the panel shows; no display needed
        self.controls = controls
        self.status = W.HTML(value="")
        self.message = W.HTML(value="")  # errors and invalid combinations, in words
        self.image = W.Image(format="png")
        self.updates = 0  # completed redraws (the tests and the benchmark count them)
        self.last_error: str | None = None
        self.diverged = None  # the Diverged of the last refresh's run, if it blew up (see SimPanel)
        self.last_seconds = 0.0  # time of the last refresh
        self._hold = False  # True while one change sets several widgets: recompute once
        self.widget = W.VBox(
            [W.HTML(f"<b>{self.title}</b>"), W.HBox(controls, layout=W.Layout(flex_flow="row wrap"))]
            + list(extra or [])
            + [self.status, self.message, self.image]
        )
        # stable CSS classes for selectors (tests/test_browser.py): a control is named by its
        # attribute, e.g. the N slider ``self.num_workers`` is ``dlcourse-slider-num_workers``
        self.widget.add_class("dlcourse-panel")
        self.status.add_class("dlcourse-status")
        self.message.add_class("dlcourse-message")
        self.image.add_class("dlcourse-figure")
        names = {id(w): name for name, w in vars(self).items() if isinstance(w, W.Widget)}
        for control in controls:
            control.add_class(f"dlcourse-slider-{names.get(id(control), 'control')}")

    def _watch(self, *widgets: W.Widget) -> None:
        for w in widgets:
            w.observe(self._on_change, names="value")

    def _on_change(self, change: dict) -> None:
        if not self._hold:
            self.refresh()

    def describe(self) -> str:
        """One line naming what the current settings compute (shown while it runs)."""
        return ", ".join(f"{c.description.rstrip(':')} = {c.value}" for c in self.controls if c.description)

    def compute(self) -> str:  # pragma: no cover - every panel overrides it
        raise NotImplementedError

    def refresh(self) -> None:
        """Recompute for the current settings and redraw in place; errors go to the message line."""
        self.status.value = f"<i>computing: {html.escape(self.describe())} ...</i>"
        start = time.perf_counter()
        self.diverged = None
        try:
            done = self.compute()
        except Exception as e:  # a student sees one line in the panel, never a traceback
            self.show_error(self.diverged or e, status="not computed: change the settings")
            return
        self.last_error = None
        self.message.value = ""
        if self.diverged is not None:  # the curves stop where the run blew up; the message says so
            self.show_error(self.diverged, status="")
        self.image.value = self._png()  # draws the figure once, with every artist's new data
        if self.updates == 0:
            # keep the layout the first render computed: constrained layout costs more than
            # drawing, and the axes need not move when only their data changes
            self.fig.set_layout_engine("none")
        self.last_seconds = time.perf_counter() - start
        self.updates += 1
        self.status.value = f"{html.escape(done)} <small>({self.last_seconds:.2f} s)</small>"

    def show_error(self, error: Exception, status: str, prefix: str = "") -> None:
        """Show ``error`` as one red line (its type too, unless it is a ValueError) and ``status``."""
        kind = "" if isinstance(error, ValueError) else f"{type(error).__name__}: "
        self.last_error = f"{prefix}{kind}{error}"
        self.message.value = f"<span style='color:#b00'>{html.escape(self.last_error)}</span>"
        self.status.value = status

    def _png(self) -> bytes:
        buf = io.BytesIO()
        # light PNG compression: encoding at the default level costs as much as a small draw
        self._canvas.print_png(buf, pil_kwargs={"compress_level": 1})
        return buf.getvalue()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        state = f"error={self.last_error!r}" if self.last_error else f"updates={self.updates}"
        return f"{type(self).__name__}({self.describe()}; {state})"


def slider(cls, description: str, value, low, high, step=1, **kw) -> W.Widget:
    """A ``cls`` (e.g. ``W.IntSlider``) from ``low`` to ``high`` that recomputes on release."""
    if not low <= value <= high:
        raise ValueError(f"{description}: value must be in [{low}, {high}], got {value!r}")
    # continuous_update=False: a simulation runs once when the slider is released
    return cls(
        value=value,
        min=low,
        max=high,
        step=step,
        description=description,
        continuous_update=False,
        style={"description_width": "initial"},
        **kw,
    )


# The panels' simulations when no ``base`` config is given: SimConfig's defaults, but with
# mini-batches of 50, so one epoch of the default data gives each of N = 16 workers 5 steps
# (with 100, only 3: too few to see stragglers and staleness build up).
PANEL_DEFAULTS = {"batch_size": 50}


def _check_base(base) -> None:
    from dlcourse.sim import SimConfig  # lazily: importing the simulator loads torch

    if base is not None and not isinstance(base, SimConfig):
        raise ValueError(f"base must be a SimConfig or None, got {type(base).__name__}")


def sim_config(base, **changes):
    """``base`` (a SimConfig or None) with ``changes``; imported lazily to keep start-up light."""
    from dlcourse.sim import SimConfig

    _check_base(base)
    return replace(base, **changes) if base is not None else SimConfig(**{**PANEL_DEFAULTS, **changes})


class SimPanel(Panel):
    """A panel whose :meth:`compute` runs the simulated cluster (:func:`dlcourse.sim.simulate`).

    ``base``: a :class:`dlcourse.sim.SimConfig` for everything the sliders do not set
    (epochs, model, timing); ``data``: an ``MnistSplit`` (default: the MNIST subset).
    """

    def __init__(self, controls: list[W.Widget], fig: Figure, *, base=None, data=None, extra=None) -> None:
        from dlcourse.data import MnistSplit

        _check_base(base)
        if data is not None and not isinstance(data, MnistSplit):
            raise ValueError(f"data must be an MnistSplit (train, test) or None, got {type(data).__name__}")
        self.base, self.data = base, data
        super().__init__(controls, fig, extra)

    def sim_config(self, **changes):
        """The panel's ``base`` config (or the panel defaults) with ``changes``."""
        return sim_config(self.base, **changes)

    def simulate(self, config):
        """Run ``config`` on the panel's data. A run that diverges returns what it recorded up to
        there (its curves stop) and the panel shows the divergence as its message."""
        from dlcourse.divergence import Diverged
        from dlcourse.sim import simulate

        try:
            return simulate(config, self.data)
        except Diverged as e:
            if e.partial is None:
                raise
            self.diverged = e
            return e.partial
