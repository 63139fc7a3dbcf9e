"""Compressed updates: the threshold tau and the residual of 1-bit SGD, on the simulated cluster.

Decentralized SGD where each worker sends only the entries of its update beyond +-tau,
as one bit each, and keeps the rest as a residual for its next message (Strom, "Scalable
distributed DNN training using commodity GPU cloud computing", Interspeech 2015;
:mod:`dlcourse.sim.decentralized`). The panel shows the bytes of every message against
the uncompressed run, and test accuracy with or without the residual.
"""

from __future__ import annotations

import ipywidgets as W
from matplotlib.figure import Figure

from dlcourse._validate import check_float, check_int
from dlcourse.viz.panel import PANEL_DEFAULTS, SimPanel
from dlcourse.viz.techniques import CompressionPlot


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


class CompressionExplorer(SimPanel):
    """Decentralized SGD with 1-bit updates: the threshold tau and the residual, on or off.

    Each setting runs the simulated cluster (:mod:`dlcourse.sim.decentralized`) with real
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
        self.compression_plot = CompressionPlot(list(fig.subplots(1, 2)))
        self.results: dict = {}  # (tau, variant) -> SimResult; tau None is the dense run
        self.result = None
        super().__init__([self.tau, self.residual], fig, base=base, data=data)
        self._watch(self.tau, self.residual)
        self.refresh()

    def config(self, tau: float | None, variant: str = "full"):
        from dlcourse.sim.decentralized import DecentralizedSimConfig

        # like panel_base.sim_config: the base's fields when there is one (all but its
        # policy: this panel's is the decentralized one), else the panel defaults
        if self.base is None:
            inherited = PANEL_DEFAULTS
        else:
            inherited = {k: getattr(self.base, k) for k in self.base.__dataclass_fields__ if k != "policy"}
        changes = {
            "num_workers": self.num_workers_,
            "bandwidth": self.bandwidth_,
            "tau": tau,
            "variant": variant,
        }
        return DecentralizedSimConfig(**{**inherited, **changes})

    def _run(self, tau: float | None, variant: str):
        key = (tau, variant)
        if key not in self.results:
            self.results[key] = self.simulate(self.config(tau, variant))
        return self.results[key]

    def compute(self) -> str:
        tau = float(self.tau.value)
        variant = "full" if self.residual.value else "onebit"
        dense = self._run(None, "full")
        self.result = r = self._run(tau, variant)
        label = f"tau={tau:.1e}, " + ("residual" if variant == "full" else "no residual")
        runs = {"uncompressed": dense, label: r}
        self.compression_plot.update(
            {name: message_bytes_per_step(run) for name, run in runs.items()},
            {
                name: ([p.epoch for p in run.evals], [p.accuracy for p in run.evals])
                for name, run in runs.items()
            },
        )
        ratio = dense.bytes_sent / max(1, r.bytes_sent)
        return (
            f"{label}: {ratio:,.0f}x fewer bytes than uncompressed; test accuracy "
            f"{r.test.accuracy:.3f} (uncompressed {dense.test.accuracy:.3f})"
        )
