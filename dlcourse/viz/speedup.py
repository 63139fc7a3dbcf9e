"""Speedup against N: a parameter server's one link against a ring all-reduce, for the MLP or the CNN.

The lecture: distributed training pays when "the ratio of transfers to computation is low".
The sliders set that ratio: the largest N, the links' bandwidth and the workers' compute
speed (FLOP/s). The curves are :func:`dlcourse.scaling.speedup` for a synchronous step
(Dean et al., NIPS 2012, for the server; Patarasuk and Yuan, JPDC 2009, for the ring), on
one figure with the ideal line, and a second axis shows each design's communication time
per step. It is a formula, not a simulation, so the sliders follow the mouse.
"""

from __future__ import annotations

import functools

import ipywidgets as W
import numpy as np
from matplotlib.figure import Figure

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.viz.panel import Panel, slider

MODELS = ("mlp", "cnn")
DESIGN_STYLE = {
    "parameter-server": ("tab:red", "parameter server (one link)"),
    "ring": ("tab:blue", "ring all-reduce"),
}


def log_slider(description: str, value: float, low_exp: int, high_exp: int) -> W.FloatLogSlider:
    """A slider over powers of ten, 10**low_exp to 10**high_exp, in quarter decades."""
    return W.FloatLogSlider(
        value=value,
        base=10,
        min=low_exp,
        max=high_exp,
        step=0.25,
        description=description,
        readout_format=".1e",
        style={"description_width": "initial"},
    )


@functools.cache
def model_costs(model: str) -> tuple[int, int]:
    """``(FLOPs per training example, bytes of float32 parameters)`` of a model by name."""
    from dlcourse.models import count_parameters, flops_per_example, make_model

    net = make_model(model)
    return flops_per_example(net), 4 * count_parameters(net)


class SpeedupExplorer(Panel):
    """Speedup of synchronous data parallelism against N: parameter server vs ring all-reduce.

    ``max_workers``: the largest N drawn; ``bandwidth``: bytes/s of every link;
    ``device_flops``: FLOP/s of every worker; ``model``: "mlp" or "cnn"; ``batch_size``:
    examples per worker step; ``latency``: seconds per message.
    """

    title = "Speedup against N: parameter server vs ring all-reduce"

    def __init__(
        self,
        max_workers: int = 32,
        bandwidth: float = 1e9,
        device_flops: float = 1e10,
        model: str = "cnn",
        *,
        batch_size: int = 100,
        latency: float = 1e-4,
    ) -> None:
        check_int("max_workers", max_workers, low=2, high=256)
        check_float("bandwidth", bandwidth, low=1e6, high=1e12)
        check_float("device_flops", device_flops, low=1e8, high=1e15)
        check_choice("model", model, MODELS)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.latency = check_float("latency", latency, low=0.0)
        self.max_workers = slider(W.IntSlider, "largest N", max_workers, 2, 256)
        self.bandwidth = log_slider("bandwidth (B/s)", bandwidth, 6, 12)
        self.device_flops = log_slider("compute (FLOP/s)", device_flops, 8, 15)
        self.model = W.ToggleButtons(options=list(MODELS), value=model, description="network")
        # a formula is cheap: the sliders may follow the mouse
        for s in (self.max_workers, self.bandwidth, self.device_flops):
            s.continuous_update = True
        fig = Figure(figsize=(10, 3.6), layout="constrained")
        self.ax_speedup, self.ax_comm = fig.subplots(1, 2)
        self.lines = {}
        for design, (color, label) in DESIGN_STYLE.items():
            (self.lines[design],) = self.ax_speedup.plot([], [], "-", color=color, label=label)
            (self.lines[design, "comm"],) = self.ax_comm.plot([], [], "-", color=color, label=label)
        (self.ideal,) = self.ax_speedup.plot([], [], ":", color="grey", label="linear (ideal)")
        (self.compute_line,) = self.ax_comm.plot([], [], "--", color="black", label="compute of one step")
        self.ax_speedup.set(xscale="log", yscale="log", xlabel="workers N", ylabel="speedup over one machine")
        self.ax_comm.set(xscale="log", yscale="log", xlabel="workers N", ylabel="seconds per step")
        self.ax_comm.set_title("time per step beyond computing")
        self.ax_speedup.legend(fontsize="small", loc="upper left")
        self.ax_comm.legend(fontsize="small", loc="upper left")
        self.curves: dict[str, np.ndarray] = {}  # design -> speedup at each N of self.Ns
        self.Ns = np.array([1])
        super().__init__([self.max_workers, self.bandwidth, self.device_flops, self.model], fig)
        self._watch(self.max_workers, self.bandwidth, self.device_flops, self.model)
        self.refresh()

    def timing(self) -> dict[str, float]:
        """The keyword arguments of :func:`dlcourse.scaling.step_time` for the current settings."""
        flops, nbytes = model_costs(self.model.value)
        return {
            "compute_s": flops * self.batch_size / float(self.device_flops.value),
            "nbytes": nbytes,
            "bandwidth": float(self.bandwidth.value),
            "latency": self.latency,
        }

    def compute(self) -> str:
        from dlcourse.scaling import DESIGNS, speedup, step_time

        timing = self.timing()
        top = self.max_workers.value
        self.Ns = Ns = np.unique(np.round(np.geomspace(1, top, 40)).astype(int))
        compute_s = timing["compute_s"]
        for design in DESIGNS:
            self.curves[design] = np.array([speedup(design, int(n), **timing) for n in Ns])
            # the time a step takes beyond its compute (from N = 2: one machine sends nothing)
            comm = [step_time(design, int(n), **timing) - compute_s for n in Ns[1:]]
            self.lines[design].set_data(Ns, self.curves[design])
            self.lines[design, "comm"].set_data(Ns[1:], comm)
        self.ideal.set_data(Ns, Ns)
        self.compute_line.set_data([1, top], [compute_s, compute_s])
        self.ax_speedup.set_xlim(1, top)
        self.ax_speedup.set_ylim(min(0.5, *(c.min() for c in self.curves.values())), top * 1.2)
        comm_all = np.concatenate(
            [
                line.get_ydata()
                for line in (self.lines["ring", "comm"], self.lines["parameter-server", "comm"])
            ]
        )
        self.ax_comm.set_xlim(2, top)
        self.ax_comm.set_ylim(min(comm_all.min(), compute_s) / 2, max(comm_all.max(), compute_s) * 2)
        self.ax_speedup.set_title(f"{self.model.value.upper()}, synchronous SGD")
        ps, ring = self.curves["parameter-server"][-1], self.curves["ring"][-1]
        message_s = timing["nbytes"] / timing["bandwidth"]
        ceiling = compute_s / (2 * message_s)
        return (
            f"N = {top}: parameter server {ps:.1f}x, ring all-reduce {ring:.1f}x. One step computes "
            f"{compute_s * 1e3:.3g} ms; one copy of the model takes {message_s * 1e3:.3g} ms on one link, "
            f"so the server's speedup can never pass compute / (2 x message) = {ceiling:.1f}x"
        )
