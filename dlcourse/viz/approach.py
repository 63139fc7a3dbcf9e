"""Choosing an approach: model size, N, bandwidth and stragglers -> which form of parallelism, and why.

The lecture's closing advice ("Distributed Neural Network Training"; Dean et al., "Large
Scale Distributed Deep Networks", NIPS 2012) as a panel: the criteria are examples per
second and accuracy, synchronous systems wait for their last executor, asynchronous ones
pay in staleness, one parameter server is a communication bottleneck, compressed
decentralized updates cut traffic, and a network too large for one device needs model
parallelism. The numbers come from a deliberately small cost model of **ours** (not the
lecture's), stated in :func:`step_times`, so that a student can check every bar by hand:

- compute of one step: ``6 * params * batch / flops`` seconds (forward + backward, about
  6 floating-point operations per parameter and example);
- synchronous all-reduce: the ring's ``2 (N - 1) / N`` model sizes per worker plus
  ``2 (N - 1)`` latencies, after the slowest of N workers (a straggler takes
  ``slowdown`` times longer with probability ``straggler``);
- asynchronous parameter server: a worker waits for nobody, but one server link carries
  a push and a pull of the whole model per update (sharded over S = N servers: 1/N each);
- decentralized 1-bit: each update goes to N - 1 peers at ``compression`` times below
  dense (about 200x at the threshold of lesson 06), plus the time to compress it.

The choice (also ours): model parallelism when the state does not fit; one device when no
distributed approach beats it (the lecture: small networks have too little computation
per iteration); synchronous SGD unless an asynchronous approach gives at least
``ASYNC_GAIN`` times its examples per second, since staleness and compression cost accuracy
per epoch (lessons 04-06).

Model parallelism is chosen when the training state (``bytes_per_param`` per parameter,
16 for mixed-precision Adam: Rajbhandari et al., "ZeRO", SC 2020) does not fit a device.
"""

from __future__ import annotations

import ipywidgets as W
import numpy as np
from matplotlib.figure import Figure

from dlcourse._validate import check_float, check_int
from dlcourse.viz.panel import Panel, slider

APPROACHES = (
    "one device",
    "sync all-reduce",
    "async parameter server",
    "async sharded servers",
    "decentralized 1-bit",
)
ASYNC_GAIN = 2.0  # throughput an asynchronous approach must gain over sync to be chosen (ours)


def step_times(
    params: float,
    num_workers: int,
    bandwidth: float,
    straggler: float,
    *,
    slowdown: float = 4.0,
    batch: int = 128,
    flops: float = 1e12,
    latency: float = 1e-4,
    compression: float = 200.0,
) -> dict[str, float]:
    """Seconds per update and worker of each approach in :data:`APPROACHES` (the module's cost model).

    ``params``: parameters of the model; ``bandwidth``: bytes per second of one link;
    ``straggler``: chance a step takes ``slowdown`` times longer. N workers process
    ``N * batch / seconds`` examples per second ("one device": ``batch / seconds``).
    """
    check_float("params", params, low=1.0)
    check_int("num_workers", num_workers, low=1)
    check_float("bandwidth", bandwidth, low=0.0, low_open=True)
    check_float("straggler", straggler, low=0.0, high=1.0)
    check_float("slowdown", slowdown, low=1.0)
    check_float("compression", compression, low=1.0)
    n, size = num_workers, 4.0 * params  # float32 model (or gradient) in bytes
    compute = 6.0 * params * batch / flops
    mean_compute = compute * (1 + (slowdown - 1) * straggler)
    slowest = compute * (1 + (slowdown - 1) * (1 - (1 - straggler) ** n))  # E[max over N workers]
    if n == 1:
        return dict.fromkeys(APPROACHES, mean_compute)
    ring = 2 * (n - 1) / n * size / bandwidth + 2 * (n - 1) * latency
    # one server link serves all N workers: each update needs a push and a pull of the model
    server = max(mean_compute + 2 * (size / bandwidth + latency), n * 2 * size / bandwidth)
    sharded = max(mean_compute + 2 * (size / bandwidth + n * latency), 2 * size / bandwidth)
    peers = mean_compute + 0.2 * compute + (n - 1) * (size / compression / bandwidth + latency)
    return {
        "one device": mean_compute,
        "sync all-reduce": slowest + ring,
        "async parameter server": server,
        "async sharded servers": sharded,
        "decentralized 1-bit": peers,
    }


def choose_approach(
    params: float,
    num_workers: int,
    bandwidth: float,
    straggler: float,
    *,
    device_memory: float = 80e9,
    bytes_per_param: float = 16.0,
    **model,
) -> tuple[str, str]:
    """The approach of the cost model for these inputs, and one sentence saying why."""
    check_float("device_memory", device_memory, low=0.0, low_open=True)
    check_float("bytes_per_param", bytes_per_param, low=0.0, low_open=True)
    state = params * bytes_per_param
    if state > device_memory:
        return (
            "model parallelism + data parallelism",
            f"the training state ({state / 1e9:,.0f} GB) exceeds one device ({device_memory / 1e9:,.0f} GB): "
            "split the model (tensor parallelism inside a node, pipeline stages across nodes) "
            "and replicate the split model for data parallelism",
        )
    speed = examples_per_s(params, num_workers, bandwidth, straggler, **model)
    if num_workers == 1:
        return "one device", "one worker: nothing to synchronize"
    distributed = {k: v for k, v in speed.items() if k != "one device"}
    best = max(distributed, key=distributed.get)
    if speed["one device"] >= distributed[best]:
        return "one device", (
            "no distributed approach beats one device: too little computation per step for "
            "the traffic (the lecture: small networks are poor candidates)"
        )
    ratio = distributed[best] / speed["sync all-reduce"]
    if ratio < ASYNC_GAIN:
        return "sync all-reduce", (
            f"fresh gradients, no staleness; no asynchronous approach is {ASYNC_GAIN:.0f}x faster "
            f"(best: {ratio:.1f}x)"
        )
    # what holds sync back: waiting for its last executor, or the all-reduce itself
    calm = step_times(params, num_workers, bandwidth, 0.0, **model)
    allreduce = calm["sync all-reduce"] - calm["one device"]
    waiting = (
        step_times(params, num_workers, bandwidth, straggler, **model)["sync all-reduce"]
        - calm["sync all-reduce"]
    )
    cause = "sync waits for its stragglers" if waiting > allreduce else "sync's all-reduce dominates its step"
    if best == "decentralized 1-bit":
        advice = "keep the residual, tune tau (lesson 06)"
    else:
        advice = f"staleness about N - 1 = {num_workers - 1}: scale lambda_n or use soft sync (lesson 05)"
    return best, f"{ratio:.1f}x the examples/s of sync ({cause}); {advice}"


def examples_per_s(
    params: float, num_workers: int, bandwidth: float, straggler: float, **model
) -> dict[str, float]:
    """Training examples per second of each approach: :func:`step_times` turned around."""
    times = step_times(params, num_workers, bandwidth, straggler, **model)
    batch = model.get("batch", 128)
    return {k: (batch if k == "one device" else num_workers * batch) / t for k, t in times.items()}


class ApproachExplorer(Panel):
    """Model size, N, bandwidth and stragglers -> examples per second of each approach, and a choice.

    The bars are the examples per second of :func:`step_times`; the chosen one is drawn
    dark, and the status line says why. Everything is arithmetic: it redraws at once.
    """

    title = "Choosing an approach: examples per second by the lecture's criteria (our cost model)"

    def __init__(
        self,
        params: float = 1.1e6,
        num_workers: int = 8,
        bandwidth: float = 1.25e9,
        straggler: float = 0.1,
        *,
        device_memory: float = 80e9,
    ) -> None:
        check_float("params", params, low=1e4, high=1e12)
        check_int("num_workers", num_workers, low=1, high=1024)
        check_float("bandwidth", bandwidth, low=1e6, high=1e12)
        check_float("straggler", straggler, low=0.0, high=0.9)
        self.device_memory = check_float("device_memory", device_memory, low=0.0, low_open=True)
        log = dict(base=10, continuous_update=False, style={"description_width": "initial"})
        self.params = W.FloatLogSlider(
            value=params, min=4, max=12, step=0.25, description="parameters", **log
        )
        self.num_workers = slider(W.IntSlider, "N", num_workers, 1, 1024)
        self.bandwidth = W.FloatLogSlider(
            value=bandwidth, min=6, max=12, step=0.25, description="link bytes/s", **log
        )
        self.straggler = slider(W.FloatSlider, "straggler chance", straggler, 0.0, 0.9, step=0.05)
        fig = Figure(figsize=(8, 3.2), layout="constrained")
        self.ax = fig.subplots()
        self.bars = self.ax.barh(list(APPROACHES), np.ones(len(APPROACHES)), color="#bbbbbb")
        self.ax.invert_yaxis()
        self.ax.set_xscale("log")
        self.ax.set_xlabel("training examples per second (all N workers)")
        self.choice: tuple[str, str] | None = None
        self.throughput: dict[str, float] = {}
        controls = [self.params, self.num_workers, self.bandwidth, self.straggler]
        super().__init__(controls, fig)
        self._watch(*controls)
        self.refresh()

    def compute(self) -> str:
        params, n = float(self.params.value), int(self.num_workers.value)
        bandwidth, straggler = float(self.bandwidth.value), float(self.straggler.value)
        self.throughput = examples_per_s(params, n, bandwidth, straggler)
        self.choice = choose_approach(params, n, bandwidth, straggler, device_memory=self.device_memory)
        best, why = self.choice
        for bar, name in zip(self.bars, APPROACHES):
            bar.set_width(self.throughput[name])
            bar.set_color("C0" if name == best else "#bbbbbb")
        values = list(self.throughput.values())
        self.ax.set_xlim(min(values) / 3, max(values) * 3)
        fits = best != "model parallelism + data parallelism"
        self.ax.set_title(f"choice: {best}" + ("" if fits else " (the bars assume it fit)"))
        return f"{best}: {why}"
