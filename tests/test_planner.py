"""The planner panel: a slider change redraws in place, and its numbers are memory's formulas."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in the tests

import pytest

from dlcourse import memory
from dlcourse.collectives import AlphaBeta
from dlcourse.models import make_model
from dlcourse.sharding import predicted_bytes, unit_sizes
from dlcourse.viz import MemoryPlanner
from dlcourse.viz.planner import KINDS, STAGE_LABELS

PNG = b"\x89PNG\r\n\x1a\n"


def bar_bytes(panel: MemoryPlanner, stage: int, scale: float) -> dict[str, float]:
    """The heights of one stacked bar, back in bytes."""
    return {kind: panel.bars[kind][stage].get_height() * scale for kind in KINDS}


def test_seven_billion_on_eight_80_gb_devices_is_the_zero_papers_arithmetic():
    """7B, mixed-precision Adam: 16 bytes per parameter, 112 GB of state per device with plain DP."""
    panel = MemoryPlanner(model="size", params=7e9, devices=8, precision="mixed", optimizer="adam")
    assert panel.updates == 1 and panel.last_error is None
    assert bytes(panel.image.value).startswith(PNG)
    dp = panel.plans[0]
    assert dp.memory.state == 112e9 == 16 * 7e9
    assert not dp.fits  # 112 GB > 80 GB, before a single activation
    assert panel.plans[3].memory.state == 14e9  # ZeRO-3: 16 / N bytes per parameter
    assert panel.plans[1].memory.state == pytest.approx(7e9 * (4 + 12 / 8))
    assert panel.plans[2].memory.state == pytest.approx(7e9 * (2 + 14 / 8))
    # the bars are those numbers (GB on the axis)
    for stage in range(4):
        drawn = bar_bytes(panel, stage, 1e9)
        for kind in KINDS:
            assert drawn[kind] == pytest.approx(getattr(panel.plans[stage].memory, kind))
    assert panel.memory_line.get_ydata()[0] == 80.0
    assert "16 bytes of state per parameter" in panel.status.value and "does NOT fit" in panel.status.value


def test_moving_the_devices_slider_redraws_in_place_with_memorys_numbers():
    """Same artists, new heights: each equals memory.predict of the layout the controls describe."""
    panel = MemoryPlanner(model="gpt", params=7e9, devices=8, zero_stage=3, batch=2)
    figure, rectangles = panel.fig, {kind: list(panel.bars[kind]) for kind in KINDS}
    line, status, image = panel.memory_line, panel.status.value, panel.image.value
    before = panel.plans[3].memory

    panel.num_workers.value = 16  # the N slider (the browser test moves it by its CSS class)

    assert panel.updates == 2 and panel.last_error is None
    assert panel.fig is figure and panel.memory_line is line
    assert all(list(panel.bars[kind]) == rectangles[kind] for kind in KINDS)  # the same Rectangles
    assert panel.status.value != status and panel.image.value != image
    after = panel.plans[3].memory
    assert after.parameters * 2 == before.parameters  # ZeRO-3 shards everything over N: 1/N
    assert after.optimizer * 2 == before.optimizer
    for stage in range(4):
        layout = memory.Layout(
            num_params=7_000_000_000,
            num_workers=16,
            zero_stage=stage,
            precision="mixed",
            optimizer="adam",
            model_kind="gpt",
            batch=2,
        )
        assert panel.layout(stage) == layout
        assert panel.plans[stage].memory == memory.predict(layout)
        drawn = bar_bytes(panel, stage, 1e9)
        for kind in KINDS:
            assert drawn[kind] == pytest.approx(getattr(memory.predict(layout), kind))
    # the selected stage is outlined, the others not
    assert panel.bars["parameters"][3].get_linewidth() == 2.0
    assert panel.bars["parameters"][0].get_linewidth() == 0.0


def test_every_control_changes_the_plan_as_memory_says():
    """T, K, M, schedule, recompute, precision, optimizer and batch reach memory.plan unchanged."""
    net = AlphaBeta(alpha_s=2e-5, beta_bytes_per_s=5e9)
    panel = MemoryPlanner(model="gpt", params=7e9, devices=64, alpha_beta=net, device_flops=3e14)
    changes = [
        ("tp", 8, {"tp": 8, "num_workers": 8}),
        ("pp", 4, {"tp": 8, "pp": 4, "num_workers": 2}),
        ("microbatches", 4, {"microbatches": 4}),
        ("schedule", "gpipe", {"schedule": "gpipe"}),
        ("recompute", True, {"recompute": True}),
        ("precision", "fp32", {"precision": "fp32"}),
        ("optimizer", "momentum", {"optimizer": "momentum"}),
        ("zero_stage", 2, {"zero_stage": 2}),
    ]
    expected = dict(num_params=7_000_000_000, num_workers=64, precision="mixed", model_kind="gpt", batch=8)
    for name, value, update in changes:
        getattr(panel, name).value = value
        expected.update(update)
        assert panel.last_error is None, (name, panel.last_error)
        want = memory.plan(memory.Layout(**expected), device_memory=80e9, alpha_beta=net, device_flops=3e14)
        got = panel.plan()
        assert got.memory == want.memory, name
        assert got.communication == want.communication and got.compute_s == want.compute_s, name
        # the step-time bar stacks compute and each kind of communication
        heights = [panel.time_bars[k][0].get_height() for k in ("compute", "data", "tensor", "pipeline")]
        scale = 1.0 if want.step_s >= 1 else 1e-3
        assert sum(heights) * scale == pytest.approx(want.step_s)
        assert f"communication {want.communication_s / want.step_s:.0%}" in panel.status.value


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("devices", [2, 3, 4])
def test_the_cnn_and_mlp_plans_are_the_sharding_runtimes_bytes(kind, devices):
    """fp32 Adam, N ranks, no T or K: state per rank equals what dlcourse.sharding holds, padding included."""
    panel = MemoryPlanner(model=kind, devices=devices, precision="fp32", optimizer="adam", batch=50)
    model = make_model(kind)
    for stage in (1, 2, 3):
        held = predicted_bytes(unit_sizes(model, stage), devices, stage, "adam")
        planned = panel.plans[stage].memory
        assert (planned.parameters, planned.gradients, planned.optimizer) == (
            held.parameters,
            held.gradients,
            held.optimizer,
        )
        assert planned.activations == memory.activation_bytes(kind, 50)
    plain = panel.plans[0].memory
    params = sum(p.numel() for p in model.parameters())
    assert (plain.parameters, plain.gradients, plain.optimizer) == (4 * params, 4 * params, 8 * params)


def test_an_impossible_layout_is_a_message_not_a_traceback():
    """Devices that T x K does not divide, or more stages than layers: one red line, the figure kept."""
    panel = MemoryPlanner(model="gpt", devices=8)
    image = panel.image.value
    panel.tp.value = 16
    assert "devices (8) must be a multiple of tensor T x pipeline K" in panel.last_error
    assert panel.image.value == image and panel.updates == 1
    panel.num_workers.value = 64
    assert panel.last_error is None and panel.updates == 2
    panel.tp.value, panel.pp.value = 1, 64  # 64 stages for 32 layers
    assert "pp (64) must be <= layers (32)" in panel.last_error
    panel.pp.value = 2
    panel.batch.value, panel.microbatches.value = 8, 3  # 8 examples do not split into 3
    assert "microbatches" in panel.last_error


def test_a_small_model_keeps_its_bars_readable():
    """An MLP on an 80 GB device: the axis follows the bars and the device memory is named in words."""
    panel = MemoryPlanner(model="mlp", devices=2, precision="fp32")
    assert not panel.memory_line.get_visible()
    assert "device memory 80 GB" in panel.memory_note.get_text()
    assert panel.ax_memory.get_ylabel() == "KB per device"
    panel.device_gb.value = 1.0
    panel.model.value = "gpt"
    assert panel.memory_line.get_visible() and panel.memory_note.get_text() == ""


def test_a_change_costs_four_plans_and_no_process(monkeypatch):
    """What keeps a change under a second: four formulas (one per ZeRO stage), nothing launched.

    (Seconds are measured by benchmarks/panel_update.py, not asserted here.)
    """
    import dlcourse.launcher

    calls = []
    real = memory.plan
    monkeypatch.setattr(memory, "plan", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(dlcourse.launcher, "launch", lambda *a, **k: pytest.fail("the planner launched"))
    panel = MemoryPlanner()
    calls.clear()
    panel.num_workers.value = 16
    assert len(calls) == len(STAGE_LABELS)
    assert panel.last_seconds > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model": "resnet"}, "model must be one of"),
        ({"params": 10.0}, "params must be >= 1000"),
        ({"devices": 0}, "devices must be >= 1"),
        ({"zero_stage": 4}, "zero_stage must be one of"),
        ({"tp": 3}, "tp must be one of"),
        ({"precision": "fp16"}, "precision must be one of"),
        ({"device_gb": 0.0}, "device_gb must be >= 1.0"),
        ({"alpha_beta": 1e9}, "alpha_beta must be a dlcourse.collectives.AlphaBeta"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MemoryPlanner(**kwargs)
