"""Compressed updates: the threshold tau, the residual, N and the topology, on the simulated cluster.

Decentralized SGD where each worker sends only the entries of its update beyond +-tau,
as one bit each, and keeps the rest as a residual for its next message (Strom, "Scalable
distributed DNN training using commodity GPU cloud computing", Interspeech 2015;
:mod:`dlcourse.sim.decentralized`). The panel shows the bytes of every message against
the uncompressed run, and test accuracy with or without the residual, for N peers wired
all-to-all or in a ring.
"""

from __future__ import annotations

import ipywidgets as W
from matplotlib.figure import Figure

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.viz.panel import PANEL_DEFAULTS, SimPanel, slider
from dlcourse.viz.techniques import CompressionPlot


def message_bytes_per_step(result) -> list[float]:
    """Bytes of each step's message, in time order, from a decentralized run's trace.

    With ``topology="all"`` a worker sends its message to its N - 1 peers back to back
    on its own link and starts its next step when they are on the wire, so each "push"
    interval lasts ``(N - 1) * (latency + bytes / bandwidth)``; solved for ``bytes``.
    (In a ring the link also carries forwarded messages, so the trace cannot tell a
    message's own size: use :func:`mean_message_bytes`.)
    """
    c = result.config
    if getattr(c, "topology", "all") != "all" or c.num_workers < 2:
        raise ValueError(f"bytes per step need topology 'all' and num_workers >= 2, got {c!r}")
    pushes = sorted((e for e in result.trace if e.kind == "push"), key=lambda e: e.start)
    per_link = [(e.end - e.start) / (c.num_workers - 1) for e in pushes]
    return [max(0.0, (t - c.latency) * c.bandwidth) for t in per_link]


def mean_message_bytes(result) -> float:
    """Mean bytes of one message of a decentralized run, in either topology.

    Every update reaches the N - 1 other replicas in N - 1 messages (all-to-all: N - 1
    copies from its origin; ring: one copy forwarded N - 1 times), so the run's bytes over
    ``updates * (N - 1)`` is exactly the mean message.
    """
    c = result.config
    if c.num_workers < 2 or result.updates < 1:
        raise ValueError(f"a mean message needs num_workers >= 2 and updates >= 1, got {c!r}")
    return result.bytes_sent / (result.updates * (c.num_workers - 1))


class CompressionExplorer(SimPanel):
    """Decentralized SGD with 1-bit updates: tau, the residual, N peers and their topology.

    Each setting runs the simulated cluster (:mod:`dlcourse.sim.decentralized`) with real
    compressed messages; the uncompressed run (same N and topology) is drawn next to it.
    Results are kept per (N, topology, tau, residual), so going back to a setting is instant.
    The bytes plot shows every message for all-to-all and the mean message for a ring.
    """

    title = "Compressed updates: threshold tau, the residual, N and the topology (Strom 2015)"

    def __init__(
        self,
        tau: float = 0.003,
        residual: bool = True,
        num_workers: int = 4,
        topology: str = "all",
        *,
        bandwidth: float = 1e7,
        base=None,
        data=None,
    ) -> None:
        from dlcourse.collectives import TOPOLOGIES

        check_int("num_workers", num_workers, low=2, high=32)
        check_float("tau", tau, low=1e-4, high=0.1)
        check_choice("topology", topology, TOPOLOGIES)
        check_float("bandwidth", bandwidth, low=0.0, low_open=True)
        self.bandwidth_ = bandwidth  # a slow network (10 MB/s), where message size matters
        self.num_workers = slider(W.IntSlider, "N", num_workers, 2, 32)
        self.topology = W.Dropdown(options=list(TOPOLOGIES), value=topology, description="topology")
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
        self.results: dict = {}  # (N, topology, tau, variant) -> SimResult; tau None: dense
        self.result = None
        controls = [self.num_workers, self.topology, self.tau, self.residual]
        super().__init__(controls, fig, base=base, data=data)
        self._watch(*controls)
        self.refresh()

    @property
    def num_workers_(self) -> int:  # the N of the current setting (kept for older callers)
        return int(self.num_workers.value)

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
            "topology": self.topology.value,
            "bandwidth": self.bandwidth_,
            "tau": tau,
            "variant": variant,
        }
        return DecentralizedSimConfig(**{**inherited, **changes})

    def _run(self, tau: float | None, variant: str):
        key = (self.num_workers_, self.topology.value, tau, variant)
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
        ring = self.topology.value == "ring"
        self.compression_plot.update(
            {  # a ring's link also carries forwarded messages: there, the mean message
                name: [mean_message_bytes(run)] * run.updates if ring else message_bytes_per_step(run)
                for name, run in runs.items()
            },
            {
                name: ([p.epoch for p in run.evals], [p.accuracy for p in run.evals])
                for name, run in runs.items()
            },
        )
        self.compression_plot.axes[0].set_ylabel(
            "mean message bytes (ring)" if ring else "message bytes per step"
        )
        ratio = dense.bytes_sent / max(1, r.bytes_sent)
        per_worker = r.bytes_sent / r.updates  # bytes on the wire per worker and step
        missing = sum(r.staleness) / max(1, len(r.staleness))
        return (
            f"N={self.num_workers_}, {self.topology.value}, {label}: {ratio:,.0f}x fewer bytes than "
            f"uncompressed ({per_worker:,.0f} per worker and step); test accuracy {r.test.accuracy:.3f} "
            f"(uncompressed {dense.test.accuracy:.3f}); a step misses {missing:.2f} updates on average"
        )
