"""Stale gradients: soft sync, bounded staleness and a staleness-scaled learning rate.

Sliders for N, soft-sync S (Zhang et al., "Staleness-aware Async-SGD for Distributed Deep
Learning", IJCAI 2016), a staleness bound (stale synchronous parallel, Ho et al., NIPS
2013), the lr policy and k server shards; the panel shows the staleness histogram and the
test curves of the simulated run. A student's own rule ``f(lr, sigma) -> lambda_n`` plugs
into the lr-policy menu, and "Run it for real" runs the same configuration on the real
parameter server (:mod:`dlcourse.parameter_server`) and overlays what really happened.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as W
from matplotlib.figure import Figure

from dlcourse._validate import check_int
from dlcourse.staleness import LR_POLICIES, LrPolicy
from dlcourse.viz.figure import lookup
from dlcourse.viz.panel import SimPanel, slider
from dlcourse.viz.runs import CurvesPlot, StalenessPlot, staleness_counts

# The staleness explorer's real run: f(config, updates, progress) -> result; see run_for_real
RealRun = Callable[..., Any]


def _policy_name(fn: LrPolicy) -> str:
    return f"yours: {getattr(fn, '__name__', 'rule')}"


class StalenessExplorer(SimPanel):
    """Stale gradients: N, soft-sync S, a staleness bound, the lr policy, k server shards.

    ``lr_policy`` may be a student's function ``f(lr, sigma) -> lambda_n``: it becomes the
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
                    f"lr_policy must be one of {sorted(LR_POLICIES)} or a function f(lr, sigma), "
                    f"got {lr_policy!r}"
                )
        self.num_workers = slider(W.IntSlider, "workers N", num_workers, 1, 32)
        self.softsync = slider(W.IntSlider, "soft sync S", softsync, 1, num_workers)
        self.bounded = W.Checkbox(value=staleness_bound is not None, description="bound staleness")
        bound = 2 if staleness_bound is None else staleness_bound  # 2: where the slider starts if ticked
        self.staleness_bound = slider(W.IntSlider, "staleness bound", bound, 0, 32)
        self.lr_policy = W.Dropdown(options=list(self.policies), value=selected, description="lr policy")
        # the MLP has 4 parameter tensors and a real server owns whole tensors: k <= 4
        self.servers = slider(W.IntSlider, "server shards k", servers, 1, 4)
        self.run_button = W.Button(
            description="Run it for real", tooltip="same configuration, real processes"
        )
        self.progress = W.IntProgress(value=0, min=0, max=real_updates, description="real run")
        fig = Figure(figsize=(12, 3.6), layout="constrained")
        ax_hist, ax_loss, ax_acc = fig.subplots(1, 3)
        self.hist_plot = StalenessPlot(ax_hist)
        self.curves_plot = CurvesPlot([ax_loss, ax_acc], x="epoch")
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
        super().__init__(
            controls, fig, base=base, data=data, extra=[W.HBox([self.run_button, self.progress])]
        )
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
        return self.sim_config(**changes)

    def compute(self) -> str:
        config = self.config()
        self.result = r = self.simulate(config)
        real = self.real
        self.hist_plot.update(r.staleness, real=real["staleness"] if real else None)
        runs: dict[str, Any] = {"simulated": r}
        if real and real.get("curve"):
            runs["real"] = real["curve"]
        self.curves_plot.update(runs)
        s = r.staleness_summary()
        text = f"{config.policy}: staleness σ mean {s['mean']:.2f}, max {s['max']} (versions); "
        if r.clock_lag:  # SSP's own figure, apart from the staleness: at most the bound
            text += f"clock lag max {max(r.clock_lag)} (bound {config.staleness_bound}); "
        text += f"test accuracy {r.test.accuracy:.3f} after {config.epochs} epoch(s)"
        if real:
            text += f" | real run: staleness σ mean {real['mean']:.2f}"
            if real.get("note"):
                text += f" ({html.escape(real['note'])})"
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
            self.show_error(e, status="real run not done", prefix="real run failed: ")
            return
        self.progress.value = self.progress.max
        self.refresh()


def _real_summary(outcome: Any) -> dict:
    """Staleness histogram, its mean and a test curve from a real run's metrics (dict or object)."""
    staleness = lookup(outcome, "staleness")
    if staleness is None:
        raise ValueError("the real run returned no staleness record")
    counts = staleness_counts(staleness)
    total = counts.sum()
    mean = float((counts * range(len(counts))).sum() / total) if total else 0.0
    curve = None
    evals = lookup(outcome, "evals")
    if evals:
        curve = {"x": [lookup(p, "epoch") for p in evals]}
        for key in ("loss", "accuracy"):  # a real run may record only one of them
            values = [lookup(p, key) for p in evals]
            if all(v is not None for v in values):
                curve[key] = values
    elif lookup(outcome, "test_accuracy") is not None:
        epochs = lookup(outcome, "epochs_done", "epochs", default=1)
        curve = {
            "x": [float(epochs)],
            "loss": [float(lookup(outcome, "test_loss"))],
            "accuracy": [float(lookup(outcome, "test_accuracy"))],
        }
    histogram = {sigma: int(c) for sigma, c in enumerate(counts) if c}  # counts, not a list of sigmas
    return {"staleness": histogram, "mean": mean, "curve": curve, "note": lookup(outcome, "note")}


def run_for_real_default(config, updates: int, progress: Callable[[int, int], None]) -> dict:
    """The staleness explorer's real run: ``config`` (a SimConfig) on the real parameter server.

    N worker and k server processes (:func:`dlcourse.parameter_server.run_parameter_server`)
    with the same rule, lr policy, model, batch size and seed, for about ``updates`` updates
    (each worker takes ``ceil(updates / N)`` steps). Returns the staleness of every applied
    update and the test accuracy at the server's snapshots, against epochs.
    """
    from dlcourse.sim import SimConfig, default_data

    if not isinstance(config, SimConfig):
        raise ValueError(f"config must be a SimConfig, got {type(config).__name__}")
    check_int("updates", updates, low=1)
    if not callable(progress):
        raise ValueError(f"progress must be a function f(done, total), got {type(progress).__name__}")
    # imported after the checks, so that a wrong argument fails without loading the server
    from dlcourse.parameter_server import PSConfig, run_parameter_server
    from dlcourse.resources import fit_workers

    # sized to the machine: 16 workers would not fit Binder's 1 CPU and 2 GB
    allowed, why = fit_workers(config.num_workers + config.servers)
    if allowed == 0:
        raise ValueError(why)
    n = min(config.num_workers, max(1, allowed - config.servers))
    note = why if n < config.num_workers else None
    ps = PSConfig(
        num_workers=n,
        num_servers=config.servers,
        softsync=n if config.policy == "sync" else min(config.effective_softsync, n),
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
    train_size = len(default_data("subset").train)
    # a version applies S pushes of batch_size examples each
    per_version = ps.softsync * ps.batch_size / train_size
    evals = [{"epoch": v * per_version, "accuracy": acc} for v, _, acc in result.accuracy_over_time]
    return {
        "staleness": result.staleness,
        "evals": evals,
        "test_accuracy": result.test_accuracy,
        "num_workers": n,
        "note": note,  # what was cut to fit the machine, in words (None: run as asked)
    }
