"""Widget panels: move a slider, watch the simulated cluster change.

Four explorers for the lecture's questions, each an ipywidgets 8 box you display in a
notebook cell (``StalenessExplorer()`` as the last line of a cell shows it):

- :class:`StragglerExplorer`: N, straggler probability and slowdown; synchronous and
  asynchronous SGD side by side (the "last executor" effect; Dean et al., NIPS 2012).
- :class:`StalenessExplorer`: N, soft-sync S, staleness bound, lr policy, server shards
  (Zhang et al., IJCAI 2016; Ho et al., NIPS 2013). It takes a student's own lr rule
  ``f(lr, tau) -> lambda_n`` and has a "Run it for real" button that runs the same
  configuration on the real parameter server and overlays what really happened.
- :class:`CompressionExplorer`: threshold tau and residual on/off (Strom, Interspeech 2015).
- :class:`PipelineExplorer`: stages K and micro-batches M of a GPipe / 1F1B pipeline
  (Huang et al., NeurIPS 2019).

How they stay fast: each panel builds its matplotlib figure once (:mod:`dlcourse.plots`)
and on a change only replaces the artists' data, then shows the figure as a PNG in an
``Image`` widget (this works in JupyterLab, Notebook, Binder and VS Code without the
ipympl extension). Sliders whose change costs a simulation use ``continuous_update=False``,
so they recompute once on release. A status line says what is being computed; an invalid
combination (or any error) shows as a message in the panel, never as a traceback.
Everything runs in plain Python too: setting ``panel.num_workers.value = 8`` recomputes
synchronously, which is how the tests drive the panels without a browser.
"""

from __future__ import annotations

import html
import io
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import ipywidgets as W
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dlcourse import plots
from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.staleness import LR_POLICIES, LrPolicy

# The staleness explorer's real run: f(config, updates, progress) -> result; see run_for_real
RealRun = Callable[..., Any]


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
        self.last_seconds = 0.0  # time of the last refresh
        self._hold = False  # True while one change sets several widgets: recompute once
        self.widget = W.VBox(
            [W.HTML(f"<b>{self.title}</b>"), W.HBox(controls, layout=W.Layout(flex_flow="row wrap"))]
            + list(extra or [])
            + [self.status, self.message, self.image]
        )

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
        try:
            done = self.compute()
        except Exception as e:  # a student sees one line in the panel, never a traceback
            kind = "" if isinstance(e, ValueError) else f"{type(e).__name__}: "
            self.last_error = f"{kind}{e}"
            self.message.value = f"<span style='color:#b00'>{html.escape(self.last_error)}</span>"
            self.status.value = "not computed: change the settings"
            return
        self.last_error = None
        self.message.value = ""
        self.image.value = self._png()  # draws the figure once, with every artist's new data
        if self.updates == 0:
            # keep the layout the first render computed: constrained layout costs more than
            # drawing, and the axes need not move when only their data changes
            self.fig.set_layout_engine("none")
        self.last_seconds = time.perf_counter() - start
        self.updates += 1
        self.status.value = f"{html.escape(done)} <small>({self.last_seconds:.2f} s)</small>"

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


def _slider(cls, description: str, value, low, high, step=1, **kw) -> W.Widget:
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


def _sim_config(base, **changes):
    """``base`` (a SimConfig or None) with ``changes``; imported lazily to keep start-up light."""
    from dlcourse.sim import SimConfig

    return replace(base, **changes) if base is not None else SimConfig(**{**PANEL_DEFAULTS, **changes})


# ---------------------------------------------------------------------------------------


class StragglerExplorer(Panel):
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
        self.base, self.data = base, data
        self.num_workers = _slider(W.IntSlider, "workers N", num_workers, 1, 32)
        self.straggler_prob = _slider(W.FloatSlider, "straggler probability", straggler_prob, 0.0, 0.5, 0.05)
        self.straggler_slowdown = _slider(W.FloatSlider, "slowdown", straggler_slowdown, 1.0, 10.0, 0.5)
        fig = Figure(figsize=(10, 8), layout="constrained")
        grid = fig.add_gridspec(3, 2, height_ratios=[2, 2, 1.4])
        top = fig.add_subplot(grid[0, :])
        self.sync_plot = plots.TimelinePlot(top)
        # one time axis for both, so the longer synchronous run is visibly longer
        self.async_plot = plots.TimelinePlot(fig.add_subplot(grid[1, :], sharex=top), legend=False)
        top.tick_params(labelbottom=False)
        top.set_xlabel("")
        self.idle_plot = plots.IdlePlot(fig.add_subplot(grid[2, 0]))
        self.curves_plot = plots.CurvesPlot([fig.add_subplot(grid[2, 1])], x="second", metrics=("accuracy",))
        self.results: dict = {}
        super().__init__([self.num_workers, self.straggler_prob, self.straggler_slowdown], fig)
        self._watch(self.num_workers, self.straggler_prob, self.straggler_slowdown)
        self.refresh()

    def compute(self) -> str:
        from dlcourse.sim import simulate

        common = {
            "num_workers": self.num_workers.value,
            "straggler_prob": float(self.straggler_prob.value),
            "straggler_slowdown": float(self.straggler_slowdown.value),
        }
        self.results = {
            p: simulate(_sim_config(self.base, policy=p, **common), self.data) for p in ("sync", "async")
        }
        for policy, plot in (("sync", self.sync_plot), ("async", self.async_plot)):
            r = self.results[policy]
            plot.update(r, title=f"{policy}: {r.examples_per_s:.0f} examples per virtual second")
        # the timelines share their time axis: show the longer run whole
        self.sync_plot.ax.set_xlim(0, max(r.virtual_s for r in self.results.values()))
        self.idle_plot.update({p: r.idle_fraction for p, r in self.results.items()})
        self.curves_plot.update(self.results)  # accuracy per virtual second: who learns faster in time
        s, a = self.results["sync"], self.results["async"]
        ratio = a.examples_per_s / s.examples_per_s if s.examples_per_s else float("nan")
        return f"async runs {ratio:.2f}x the examples per second of sync"


# ---------------------------------------------------------------------------------------


def _policy_name(fn: LrPolicy) -> str:
    return f"yours: {getattr(fn, '__name__', 'rule')}"


class StalenessExplorer(Panel):
    """Stale gradients: N, soft-sync S, a staleness bound, the lr policy, k server shards.

    ``lr_policy`` may be a student's function ``f(lr, tau) -> lambda_n``: it becomes the
    selected entry of the lr-policy menu and is what the simulator (and the real run)
    apply. ``real_run(config, updates, progress)`` runs ``config`` on real processes
    (default: :func:`run_for_real_default`, the parameter server); ``progress(done, total)``
    moves the bar. ``base``/``data`` as in :class:`StragglerExplorer`.
    """

    title = "Stale gradients: soft sync, bounded staleness, staleness-scaled learning rate"

    def __init__(
        self,
        num_workers: int = 16,
        softsync: int = 1,
        staleness_bound: int | None = None,
        lr_policy: str | LrPolicy = "constant",
        servers: int = 1,
        *,
        base=None,
        data=None,
        real_run: RealRun | None = None,
        real_updates: int = 200,
    ) -> None:
        check_int("num_workers", num_workers, low=1, high=32)
        check_int("softsync", softsync, low=1, high=num_workers)
        if staleness_bound is not None:
            check_int("staleness_bound", staleness_bound, low=0, high=32)
        check_int("servers", servers, low=1, high=4)
        check_int("real_updates", real_updates, low=1)
        self.base, self.data = base, data
        self.real_updates = real_updates
        self._real_run = real_run or run_for_real_default
        self.policies: dict[str, str | LrPolicy] = {name: name for name in LR_POLICIES}
        if callable(lr_policy):
            self.policies[_policy_name(lr_policy)] = lr_policy
            selected = _policy_name(lr_policy)
        else:
            selected = lr_policy
            if selected not in self.policies:
                raise ValueError(
                    f"lr_policy must be one of {sorted(LR_POLICIES)} or a function f(lr, tau), "
                    f"got {lr_policy!r}"
                )
        self.num_workers = _slider(W.IntSlider, "workers N", num_workers, 1, 32)
        self.softsync = _slider(W.IntSlider, "soft sync S", softsync, 1, num_workers)
        self.bounded = W.Checkbox(value=staleness_bound is not None, description="bound staleness")
        self.staleness_bound = _slider(W.IntSlider, "staleness bound", staleness_bound or 2, 0, 32)
        self.lr_policy = W.Dropdown(options=list(self.policies), value=selected, description="lr policy")
        # the MLP has 4 parameter tensors and a real server owns whole tensors: k <= 4
        self.servers = _slider(W.IntSlider, "server shards k", servers, 1, 4)
        self.run_button = W.Button(
            description="Run it for real", tooltip="same configuration, real processes"
        )
        self.progress = W.IntProgress(value=0, min=0, max=real_updates, description="real run")
        fig = Figure(figsize=(12, 3.6), layout="constrained")
        ax_hist, ax_loss, ax_acc = fig.subplots(1, 3)
        self.hist_plot = plots.StalenessPlot(ax_hist)
        self.curves_plot = plots.CurvesPlot([ax_loss, ax_acc], x="epoch")
        self.result = None  # the last SimResult
        self.real: dict | None = None  # staleness and curve of the last real run (this config)
        controls = [
            self.num_workers,
            self.softsync,
            self.bounded,
            self.staleness_bound,
            self.lr_policy,
            self.servers,
        ]
        super().__init__(controls, fig, extra=[W.HBox([self.run_button, self.progress])])
        self.num_workers.observe(self._on_workers, names="value")
        self._watch(self.softsync, self.bounded, self.staleness_bound, self.lr_policy, self.servers)
        self.run_button.on_click(self.run_for_real)
        self.refresh()

    def _on_workers(self, change: dict) -> None:
        # S's maximum follows N; lowering the maximum clamps S, which must not recompute twice
        self._hold = True
        try:
            self.softsync.max = change["new"]
        finally:
            self._hold = False
        self._on_change(change)

    def _on_change(self, change: dict) -> None:
        if not self._hold:
            self.real = None  # the real run was for other settings
            self.progress.value = 0
            self.refresh()

    def config(self):
        """The :class:`dlcourse.sim.SimConfig` of the current settings (ValueError if invalid)."""
        N, S = self.num_workers.value, self.softsync.value
        changes: dict[str, Any] = {
            "num_workers": N,
            "servers": self.servers.value,
            "lr_policy": self.policies[self.lr_policy.value],
            "softsync": None,
            "staleness_bound": None,
        }
        if self.bounded.value:
            if S != 1:
                raise ValueError(
                    f"a staleness bound gates asynchronous workers (S = 1); got S = {S}. "
                    "Set S to 1, or untick 'bound staleness' to use soft sync."
                )
            changes.update(policy="bounded", staleness_bound=self.staleness_bound.value)
        elif S == N:
            changes.update(policy="sync")
        elif S == 1:
            changes.update(policy="async")
        else:
            changes.update(policy="softsync", softsync=S)
        return _sim_config(self.base, **changes)

    def compute(self) -> str:
        from dlcourse.sim import simulate

        config = self.config()
        self.result = r = simulate(config, self.data)
        real = self.real
        self.hist_plot.update(r.staleness, real=real["staleness"] if real else None)
        runs: dict[str, Any] = {"simulated": r}
        if real and real.get("curve"):
            runs["real"] = real["curve"]
        self.curves_plot.update(runs)
        s = r.staleness_summary()
        text = (
            f"{config.policy}: staleness mean {s['mean']:.2f}, max {s['max']}; "
            f"test accuracy {r.test.accuracy:.3f} after {config.epochs} epoch(s)"
        )
        if real:
            text += f" | real run: staleness mean {real['mean']:.2f}"
        return text

    def run_for_real(self, _button: Any = None) -> None:
        """Run the current configuration on real processes and overlay it (the button's action)."""
        try:
            config = self.config()
            self.status.value = (
                f"<i>running {html.escape(config.policy)} with {config.num_workers} real worker processes, "
                f"{self.real_updates} updates ...</i>"
            )
            self.progress.max = self.real_updates
            self.progress.value = 0

            def progress(done: int, total: int) -> None:
                self.progress.max = max(1, total)
                self.progress.value = min(done, total)

            outcome = self._real_run(config, self.real_updates, progress)
            self.real = _real_summary(outcome)
        except Exception as e:  # shown in the panel, never a traceback
            kind = "" if isinstance(e, ValueError) else f"{type(e).__name__}: "
            self.last_error = f"real run failed: {kind}{e}"
            self.message.value = f"<span style='color:#b00'>{html.escape(self.last_error)}</span>"
            self.status.value = "real run not done"
            return
        self.progress.value = self.progress.max
        self.refresh()


def _real_summary(outcome: Any) -> dict:
    """Staleness histogram, its mean and a test curve from a real run's metrics (dict or object)."""
    staleness = plots._get(outcome, "staleness")
    if staleness is None:
        raise ValueError("the real run returned no staleness record")
    counts = plots._staleness_counts(staleness)
    total = counts.sum()
    mean = float((counts * range(len(counts))).sum() / total) if total else 0.0
    curve = None
    evals = plots._get(outcome, "evals")
    if evals:
        curve = {"x": [plots._get(p, "epoch") for p in evals]}
        for key in ("loss", "accuracy"):  # a real run may record only one of them
            values = [plots._get(p, key) for p in evals]
            if all(v is not None for v in values):
                curve[key] = values
    elif plots._get(outcome, "test_accuracy") is not None:
        epochs = plots._get(outcome, "epochs_done", "epochs", default=1)
        curve = {
            "x": [float(epochs)],
            "loss": [float(plots._get(outcome, "test_loss"))],
            "accuracy": [float(plots._get(outcome, "test_accuracy"))],
        }
    histogram = {tau: int(c) for tau, c in enumerate(counts) if c}  # counts, not a list of taus
    return {"staleness": histogram, "mean": mean, "curve": curve}


def run_for_real_default(config, updates: int, progress: Callable[[int, int], None]) -> dict:
    """The staleness explorer's real run: ``config`` (a SimConfig) on the real parameter server.

    N worker and k server processes (:func:`dlcourse.parameter_server.run_parameter_server`)
    with the same rule, lr policy, model, batch size and seed, for about ``updates`` updates
    (each worker takes ``ceil(updates / N)`` steps). Returns the staleness of every applied
    update and the test accuracy at the server's snapshots, against epochs.
    """
    from dlcourse.parameter_server import PSConfig, run_parameter_server

    check_int("updates", updates, low=1)
    n = config.num_workers
    ps = PSConfig(
        num_workers=n,
        num_servers=config.servers,
        softsync=config.effective_softsync,
        staleness_bound=config.effective_bound,
        lr=config.lr,
        lr_policy=config.lr_policy,
        model=config.model,
        batch_size=config.batch_size,
        steps=-(-updates // n),
        seed=config.seed,
        run_timeout=600.0,  # a stuck run ends with an error in the panel, never a hung kernel
    )
    result = run_parameter_server(ps, progress=progress)
    train_size = len(_subset().train)
    # a version applies S pushes of batch_size examples each
    per_version = ps.softsync * ps.batch_size / train_size
    evals = [{"epoch": v * per_version, "accuracy": acc} for v, _, acc in result.accuracy_over_time]
    return {"staleness": result.staleness, "evals": evals, "test_accuracy": result.test_accuracy}


def _subset():
    from dlcourse.sim import _default_data

    return _default_data("subset")


# ---------------------------------------------------------------------------------------


class PipelineExplorer(Panel):
    """The pipeline bubble: K stages, M micro-batches, GPipe or 1F1B, on a virtual clock."""

    title = "Pipelining: stages K, micro-batches M, and the bubble"

    def __init__(self, num_stages: int = 4, num_microbatches: int = 4, schedule: str = "gpipe") -> None:
        check_int("num_stages", num_stages, low=1, high=8)
        check_int("num_microbatches", num_microbatches, low=1, high=32)
        check_choice("schedule", schedule, ("gpipe", "1f1b"))
        self.num_stages = _slider(W.IntSlider, "stages K", num_stages, 1, 8)
        self.num_microbatches = _slider(W.IntSlider, "micro-batches M", num_microbatches, 1, 32)
        # the schedule is cheap to compute, so these sliders may follow the mouse
        self.num_stages.continuous_update = self.num_microbatches.continuous_update = True
        self.schedule = W.ToggleButtons(options=["gpipe", "1f1b"], value=schedule, description="schedule")
        self.bubble_plot = plots.BubblePlot()
        self.bubble_plot.fig.set_size_inches(10, 3.5)
        self.timeline = None
        super().__init__([self.num_stages, self.num_microbatches, self.schedule], self.bubble_plot.fig)
        self._watch(self.num_stages, self.num_microbatches, self.schedule)
        self.refresh()

    def compute(self) -> str:
        from dlcourse.pipeline import simulate_schedule

        K, M = self.num_stages.value, self.num_microbatches.value
        self.timeline = t = simulate_schedule(K, M, self.schedule.value)
        self.bubble_plot.update(t, M)
        return (
            f"{self.schedule.value}: bubble {t.bubble_fraction:.1%} of stage time "
            f"(formula (K-1)/(M+K-1) = {t.expected_bubble:.1%}); "
            f"most micro-batches' activations held by a stage: {max(t.peak_inflight)}"
        )


# ---------------------------------------------------------------------------------------


def message_bytes_per_step(result) -> list[float]:
    """Bytes of each step's message, in time order, from a decentralized run's trace.

    With ``topology="all"`` a worker sends its message to its N - 1 peers back to back
    on its own link and starts its next step when they are on the wire, so each "push"
    interval lasts ``(N - 1) * (latency + bytes / bandwidth)``; solved for ``bytes``.
    """
    c = result.config
    if getattr(c, "topology", "all") != "all" or c.num_workers < 2:
        raise ValueError(f"bytes per step need topology 'all' and num_workers >= 2, got {c!r}")
    pushes = sorted((e for e in result.trace if e.kind == "push"), key=lambda e: e.start)
    per_link = [(e.end - e.start) / (c.num_workers - 1) for e in pushes]
    return [max(0.0, (t - c.latency) * c.bandwidth) for t in per_link]


class CompressionExplorer(Panel):
    """Decentralized SGD with 1-bit updates: the threshold tau and the residual, on or off.

    Each setting runs the simulated cluster (:mod:`dlcourse.sim_decentralized`) with real
    compressed messages; the uncompressed run is drawn next to it for comparison. Results
    are kept per (tau, residual), so going back to a setting is instant.
    """

    title = "Compressed updates: threshold tau and the residual (Strom 2015)"

    def __init__(
        self,
        tau: float = 0.003,
        residual: bool = True,
        num_workers: int = 4,
        *,
        bandwidth: float = 1e7,
        base=None,
        data=None,
    ) -> None:
        check_int("num_workers", num_workers, low=2, high=32)
        check_float("tau", tau, low=1e-4, high=0.1)
        check_float("bandwidth", bandwidth, low=0.0, low_open=True)
        self.base, self.data = base, data
        self.num_workers_ = num_workers
        self.bandwidth_ = bandwidth  # a slow network (10 MB/s), where message size matters
        self.tau = W.FloatLogSlider(
            value=tau,
            base=10,
            min=-4,
            max=-1,
            step=0.25,
            description="tau",
            continuous_update=False,
            readout_format=".1e",
        )
        self.residual = W.Checkbox(value=residual, description="keep the residual")
        fig = Figure(figsize=(10, 3.6), layout="constrained")
        self.compression_plot = plots.CompressionPlot(list(fig.subplots(1, 2)))
        self.results: dict = {}  # (tau, variant) -> SimResult; tau None is the dense run
        self.result = None
        super().__init__([self.tau, self.residual], fig)
        self._watch(self.tau, self.residual)
        self.refresh()

    def config(self, tau: float | None, variant: str = "full"):
        from dlcourse.sim_decentralized import DecentralizedSimConfig

        fields = {
            **PANEL_DEFAULTS,
            "num_workers": self.num_workers_,
            "bandwidth": self.bandwidth_,
            "tau": tau,
            "variant": variant,
        }
        if self.base is not None:
            inherited = {k: getattr(self.base, k) for k in self.base.__dataclass_fields__ if k != "policy"}
            fields = {**inherited, **fields}
        return DecentralizedSimConfig(**fields)

    def _run(self, tau: float | None, variant: str):
        from dlcourse.sim import simulate

        key = (tau, variant)
        if key not in self.results:
            self.results[key] = simulate(self.config(tau, variant), self.data)
        return self.results[key]

    def compute(self) -> str:
        tau = float(self.tau.value)
        variant = "full" if self.residual.value else "onebit"
        dense = self._run(None, "full")
        self.result = r = self._run(tau, variant)
        label = f"tau={tau:.1e}, " + ("residual" if variant == "full" else "no residual")
        curve = {"x": [p.epoch for p in r.evals], "accuracy": [p.accuracy for p in r.evals]}
        dense_curve = {"x": [p.epoch for p in dense.evals], "accuracy": [p.accuracy for p in dense.evals]}
        self.compression_plot.update(
            {"uncompressed": message_bytes_per_step(dense), label: message_bytes_per_step(r)},
            {
                "uncompressed": (dense_curve["x"], dense_curve["accuracy"]),
                label: (curve["x"], curve["accuracy"]),
            },
        )
        ratio = dense.bytes_sent / max(1, r.bytes_sent)
        return (
            f"{label}: {ratio:,.0f}x fewer bytes than uncompressed; test accuracy "
            f"{r.test.accuracy:.3f} (uncompressed {dense.test.accuracy:.3f})"
        )
