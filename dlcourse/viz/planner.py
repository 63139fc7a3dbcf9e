"""The planner: does a model fit, how is it spread, and what does a step cost?

Memory per device, as stacked bars by kind (parameters, gradients, optimizer state,
activations) against a line at the device's memory, and a step's predicted time split into
compute and communication. The numbers are :func:`dlcourse.memory.plan` (the ZeRO paper's
bytes per parameter, Rajbhandari et al., SC 2020; activations after Korthikanti et al.
2022; the alpha-beta network of :class:`dlcourse.collectives.AlphaBeta`) for the layout the
controls describe: the model (a GPT-like shape of a given size, the lecture's CNN, the MLP,
or a bare parameter count), the devices, data parallelism and its ZeRO stage, tensor
parallelism T, pipeline parallelism with K stages, M micro-batches and a schedule,
recomputation and precision. The memory bars show all four ZeRO stages side by side, the
chosen one outlined, so a change of N shows at once which parts fall as 1/N.

It is a formula, not a run: every change redraws in well under a second. The devices are
N x T x K, so data parallelism gets N = devices / (T K) replicas; a layout that does not
divide shows as a message. For the CNN and the MLP the ZeRO units are the ones
:mod:`dlcourse.sharding` flattens (the whole model at stage 1, each layer at stages 2 and
3), so the planned bytes are the bytes a run of that runtime holds::

    from dlcourse.viz import MemoryPlanner
    MemoryPlanner()                      # 7B GPT-like on 8 x 80 GB, mixed-precision Adam
    MemoryPlanner(model="mlp", devices=2, precision="fp32")
"""

from __future__ import annotations

import functools

import ipywidgets as W
import numpy as np
from matplotlib.figure import Figure

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.viz.panel import Panel, slider

MODEL_CHOICES = (
    ("GPT-like (width 4096, 32 layers)", "gpt"),
    ("the lecture's CNN", "cnn"),
    ("MLP (64 hidden)", "mlp"),
    ("a parameter count only", "size"),
)
KINDS = ("parameters", "gradients", "optimizer", "activations")
KIND_COLORS = {
    "parameters": "#4C72B0",
    "gradients": "#DD8452",
    "optimizer": "#55A868",
    "activations": "#8172B3",
}
STAGE_LABELS = ("DP", "ZeRO-1", "ZeRO-2", "ZeRO-3")
TIME_KINDS = ("compute", "data", "tensor", "pipeline")
TIME_COLORS = {"compute": "#4C72B0", "data": "#C44E52", "tensor": "#DD8452", "pipeline": "#937860"}


@functools.cache
def _model_and_units(kind: str) -> tuple[int, dict[int, tuple[int, ...]]]:
    """Parameters of the CNN or MLP and the ZeRO units :mod:`dlcourse.sharding` flattens per stage."""
    from dlcourse.models import make_model
    from dlcourse.sharding import unit_sizes

    model = make_model(kind)
    units = {stage: tuple(unit_sizes(model, stage)) for stage in (1, 2, 3)}
    return sum(p.numel() for p in model.parameters()), units


def _unit(nbytes: float) -> tuple[float, str]:
    """A scale and its name for bytes of this size (decimal, as the ZeRO paper counts)."""
    for scale, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if nbytes >= scale:
            return scale, name
    return 1.0, "bytes"


class MemoryPlanner(Panel):
    """Memory per device and step time of a parallel layout, from :func:`dlcourse.memory.plan`.

    ``model``: "gpt" (a GPT-like shape of ``params`` parameters), "cnn", "mlp" or "size"
    (``params`` only, no activations); ``devices``: all devices, N x T x K; ``zero_stage``
    0 (plain data parallelism) to 3; ``tp`` T; ``pp`` K; ``microbatches`` M; ``schedule``
    "gpipe" or "1f1b"; ``recompute``; ``precision`` "fp32" or "mixed" (bf16 + fp32 master);
    ``optimizer`` "sgd", "momentum" or "adam"; ``batch``: examples (GPT: sequences) per
    replica per step; ``device_gb``: memory of one device. ``alpha_beta`` (a fitted
    :class:`dlcourse.collectives.AlphaBeta`, default 0.1 ms and 1 GB/s) and ``device_flops``
    (FLOP/s of one device) set the step time.
    """

    title = "Planner: memory per device and time per step"

    def __init__(
        self,
        model: str = "gpt",
        params: float = 7e9,
        devices: int = 8,
        zero_stage: int = 0,
        tp: int = 1,
        pp: int = 1,
        microbatches: int = 1,
        schedule: str = "1f1b",
        recompute: bool = False,
        precision: str = "mixed",
        optimizer: str = "adam",
        batch: int = 8,
        device_gb: float = 80.0,
        *,
        alpha_beta=None,
        device_flops: float = 1e14,
    ) -> None:
        from dlcourse.collectives import AlphaBeta
        from dlcourse.memory import OPTIMIZERS, SCHEDULES

        check_choice("model", model, [v for _, v in MODEL_CHOICES])
        check_float("params", params, low=1e3, high=1e12)
        check_int("devices", devices, low=1, high=1024)
        check_choice("zero_stage", zero_stage, (0, 1, 2, 3))
        check_choice("tp", tp, (1, 2, 4, 8, 16))
        check_int("pp", pp, low=1, high=64)
        check_int("microbatches", microbatches, low=1, high=64)
        check_choice("schedule", schedule, SCHEDULES)
        check_choice("recompute", recompute, (False, True))
        check_choice("precision", precision, ("fp32", "mixed"))
        check_choice("optimizer", optimizer, OPTIMIZERS)
        check_int("batch", batch, low=1, high=1024)
        check_float("device_gb", device_gb, low=1.0, high=1024.0)
        check_float("device_flops", device_flops, low=1e6, high=1e18)
        if alpha_beta is not None and not isinstance(alpha_beta, AlphaBeta):
            raise ValueError(
                f"alpha_beta must be a dlcourse.collectives.AlphaBeta or None, got {alpha_beta!r}"
            )
        self.alpha_beta = alpha_beta if alpha_beta is not None else AlphaBeta()
        self.device_flops = float(device_flops)

        self.model = W.Dropdown(options=list(MODEL_CHOICES), value=model, description="model")
        # a number box, not a log slider: a slider's steps would snap 7e9 to 10**9.75 = 5.6e9
        self.params = W.BoundedFloatText(
            value=float(params),
            min=1e3,
            max=1e12,
            description="parameters",
            style={"description_width": "initial"},
        )
        # the devices slider is the panel's N slider (tests/test_browser.py moves it by its
        # CSS class, dlcourse-slider-num_workers): N x T x K devices in all
        self.num_workers = slider(W.IntSlider, "devices", devices, 1, 1024)
        self.zero_stage = W.ToggleButtons(
            options=[(label, s) for s, label in enumerate(STAGE_LABELS)], value=zero_stage, description="data"
        )
        self.tp = W.Dropdown(options=[1, 2, 4, 8, 16], value=tp, description="tensor T")
        self.pp = slider(W.IntSlider, "pipeline K", pp, 1, 64)
        self.microbatches = slider(W.IntSlider, "micro-batches M", microbatches, 1, 64)
        self.schedule = W.ToggleButtons(options=["gpipe", "1f1b"], value=schedule, description="schedule")
        self.recompute = W.Checkbox(value=recompute, description="recompute")
        self.precision = W.ToggleButtons(options=["fp32", "mixed"], value=precision, description="precision")
        self.optimizer = W.Dropdown(options=list(OPTIMIZERS), value=optimizer, description="optimizer")
        self.batch = slider(W.IntSlider, "batch per replica", batch, 1, 1024)
        self.device_gb = slider(W.FloatSlider, "device GB", float(device_gb), 1.0, 1024.0, 1.0)
        controls = [
            self.model,
            self.params,
            self.num_workers,
            self.zero_stage,
            self.tp,
            self.pp,
            self.microbatches,
            self.schedule,
            self.recompute,
            self.precision,
            self.optimizer,
            self.batch,
            self.device_gb,
        ]
        for control in controls:  # a formula is cheap: the sliders may follow the mouse
            if hasattr(control, "continuous_update"):
                control.continuous_update = True
        self.params.continuous_update = False  # recompute when the number is entered, not per keystroke

        fig = Figure(figsize=(10, 4), layout="constrained")
        self.ax_memory, self.ax_time = fig.subplots(1, 2, width_ratios=[2, 1])
        x = np.arange(len(STAGE_LABELS))
        self.bars = {
            kind: self.ax_memory.bar(x, np.zeros(len(x)), color=KIND_COLORS[kind], label=kind)
            for kind in KINDS
        }
        self.memory_line = self.ax_memory.axhline(0.0, color="black", ls="--", label="device memory")
        self.memory_note = self.ax_memory.text(0.02, 0.95, "", transform=self.ax_memory.transAxes, va="top")
        self.ax_memory.set_xticks(x, STAGE_LABELS)
        self.ax_memory.legend(fontsize="small", loc="upper right")
        self.time_bars = {
            kind: self.ax_time.bar([0], [0.0], color=TIME_COLORS[kind], label=k_label, width=0.5)
            for kind, k_label in zip(
                TIME_KINDS,
                ("compute", "data-parallel comm.", "tensor-parallel comm.", "pipeline comm."),
            )
        }
        self.ax_time.set_xticks([0], ["one step"])
        self.ax_time.yaxis.set_label_position("right")  # clear of the tick labels as their width changes
        self.ax_time.set_xlim(-0.6, 1.4)
        self.ax_time.legend(fontsize="small", loc="upper right")
        self.plans: dict[int, object] = {}  # ZeRO stage -> memory.Plan of the current layout
        super().__init__(controls, fig)
        self._watch(*controls)
        self.refresh()

    # -- what the controls describe -------------------------------------------------------

    def layout(self, zero_stage: int | None = None):
        """The :class:`dlcourse.memory.Layout` the controls describe (another ZeRO stage if given)."""
        from dlcourse.memory import Layout

        stage = self.zero_stage.value if zero_stage is None else zero_stage
        kind, t, k = self.model.value, self.tp.value, self.pp.value
        devices = self.num_workers.value
        if devices % (t * k):
            raise ValueError(
                f"devices ({devices}) must be a multiple of tensor T x pipeline K = {t} x {k} = {t * k}"
            )
        common = dict(
            num_workers=devices // (t * k),
            zero_stage=stage,
            tp=t,
            pp=k,
            microbatches=self.microbatches.value,
            schedule=self.schedule.value,
            recompute=self.recompute.value,
            precision=self.precision.value,
            optimizer=self.optimizer.value,
            batch=self.batch.value,
        )
        if kind in ("cnn", "mlp"):
            numel, units = _model_and_units(kind)
            # the sharding runtime's flat units, exact where no other split applies
            exact = units[stage] if stage >= 1 and t == k == 1 else None
            return Layout(num_params=numel, units=exact, model_kind=kind, hidden=64, **common)
        params = round(float(self.params.value))
        return Layout(num_params=params, model_kind="gpt" if kind == "gpt" else None, **common)

    def plan(self, zero_stage: int | None = None):
        """:func:`dlcourse.memory.plan` of :meth:`layout` on this panel's device and network."""
        from dlcourse.memory import plan

        return plan(
            self.layout(zero_stage),
            device_memory=float(self.device_gb.value) * 1e9,
            alpha_beta=self.alpha_beta,
            device_flops=self.device_flops,
        )

    # -- drawing --------------------------------------------------------------------------

    def compute(self) -> str:
        self.plans = {stage: self.plan(stage) for stage in range(len(STAGE_LABELS))}
        chosen = self.plans[self.zero_stage.value]
        device = float(self.device_gb.value) * 1e9
        tallest = max(p.memory.total for p in self.plans.values())
        # a small model under a large device: keep the bars readable, name the line in words
        shown = device <= 4 * tallest
        top = max(tallest, device) if shown else tallest
        scale, unit = _unit(top)
        for stage, p in self.plans.items():
            bottom = 0.0
            for kind in KINDS:
                bar = self.bars[kind][stage]
                height = getattr(p.memory, kind) / scale
                bar.set_y(bottom)
                bar.set_height(height)
                bar.set_edgecolor("black" if stage == self.zero_stage.value else "none")
                bar.set_linewidth(2.0 if stage == self.zero_stage.value else 0.0)
                bottom += height
        self.memory_line.set_ydata([device / scale, device / scale])
        self.memory_line.set_visible(shown)
        self.memory_note.set_text("" if shown else f"device memory {device / 1e9:g} GB: far above these bars")
        self.ax_memory.set_ylim(0, top / scale * 1.25)
        self.ax_memory.set_ylabel(f"{unit} per device")
        lay = chosen.layout
        self.ax_memory.set_title(
            f"{lay.num_params:,} parameters on {lay.devices} devices "
            f"(N={lay.num_workers}, T={lay.tp}, K={lay.pp}, M={lay.microbatches})",
            fontsize="medium",
        )
        parts = {"compute": chosen.compute_s, **chosen.communication}
        bottom = 0.0
        step_scale, step_unit = (1.0, "s") if chosen.step_s >= 1 else (1e-3, "ms")
        for kind in TIME_KINDS:
            bar = self.time_bars[kind][0]
            height = parts[kind] / step_scale
            bar.set_y(bottom)
            bar.set_height(height)
            bottom += height
        self.ax_time.set_ylim(0, max(bottom, 1e-12) * 1.45)
        self.ax_time.set_ylabel(f"{step_unit} per step (predicted)")
        share = chosen.communication_s / chosen.step_s if chosen.step_s else 0.0
        self.ax_time.set_title(f"communication {share:.0%} of the step", fontsize="medium")
        verdict = "fits" if chosen.fits else "does NOT fit"
        per_param = chosen.memory.state / lay.num_params
        return (
            f"{STAGE_LABELS[lay.zero_stage]}, N = {lay.num_workers}, T = {lay.tp}, K = {lay.pp}: "
            f"{chosen.memory.total / scale:.3g} {unit} per device ({per_param:.3g} bytes of state per "
            f"parameter of the model) {verdict} in {device / 1e9:g} GB; step "
            f"{chosen.step_s / step_scale:.3g} {step_unit}, communication {share:.0%}"
        )
