"""Plots render without a display and update their artists in place; the loss landscape is right."""

from __future__ import annotations

from collections import Counter

import matplotlib
import matplotlib.colors

matplotlib.use("Agg")  # no display in the tests

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse import viz
from dlcourse.landscape import (
    Landscape,
    LandscapeConfig,
    barrier_height,
    flat_params,
    interpolate,
    loss_landscape,
    losses_at,
    plane_basis,
)
from dlcourse.models import MLP
from dlcourse.train import evaluate

PNG = b"\x89PNG\r\n\x1a\n"

EVENTS = [
    (0, "compute", 0.0, 1.0),
    (0, "push", 1.0, 1.1),
    (0, "pull", 1.2, 1.3),
    (1, "compute", 0.0, 2.0),
    (1, "wait", 2.0, 2.5),
]


def fake_landscape(n: int = 5) -> Landscape:
    alphas = np.linspace(0, 1, n)
    loss = 1 + np.sin(np.pi * alphas)
    xs, ys = np.linspace(-0.5, 1.5, 4), np.linspace(-0.2, 1.2, 3)
    return Landscape(
        alphas=alphas,
        line_loss=loss,
        line_accuracy=1 - loss / 3,
        barrier=1.0,
        midpoint_loss=2.0,
        end_losses=(1.0, 1.0),
        plane_x=xs,
        plane_y=ys,
        plane_loss=np.arange(12.0).reshape(3, 4) + 1,
        minima_xy=[(0, 0), (1, 0), (0.5, 1)],
    )


# one default configuration per plot function
DEFAULTS = {
    "timeline": lambda: viz.timeline(EVENTS, [(1.1, 1.2)]),
    "staleness_histogram": lambda: viz.staleness_histogram([0, 1, 1, 2], real={"0": 1, "1": 3}),
    "curves": lambda: viz.curves({"sync": {"x": [1, 2], "loss": [1.0, 0.5], "accuracy": [0.6, 0.8]}}),
    "idle_fraction": lambda: viz.idle_fraction({"sync": [0.2, 0.5], "async": [0.0, 0.1]}),
    "throughput": lambda: viz.throughput({"async": ([1, 2, 4], [10.0, 19.0, 37.0])}),
    "bubble": lambda: viz.bubble([(0, "forward", 0, 1), (1, "forward", 1, 2)], microbatches=1),
    "compression": lambda: viz.compression(
        {"dense": [4e5] * 3, "tau": [4e3, 3e3, 2e3]}, {"residual": [0.8, 0.9]}
    ),
    "landscape": lambda: viz.landscape_plot(fake_landscape()),
}


def test_every_plot_function_has_a_default_case():
    assert set(DEFAULTS) == set(viz.PLOTS)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_every_plot_renders_to_png(name):
    plot = DEFAULTS[name]()
    png = plot.to_png()
    assert png.startswith(PNG) and len(png) > 5000  # a real image, not an empty canvas
    assert plot._repr_png_().startswith(PNG)
    assert type(plot).__name__ in repr(plot)
    with pytest.raises(ValueError, match="dpi must be >= 1, got 0"):
        plot.to_png(dpi=0)


def test_timeline_draws_each_event_where_it_happened_and_updates_in_place():
    plot = viz.timeline(EVENTS, [(1.1, 1.2)])
    compute = plot.intervals("compute")
    assert compute.shape == (2, 4, 2)
    # x spans are the events' [start, end]; y centres are the worker rows
    np.testing.assert_allclose(compute[:, 0, 0], [0.0, 0.0])
    np.testing.assert_allclose(compute[:, 1, 0], [1.0, 2.0])
    np.testing.assert_allclose(compute[:, :, 1].mean(axis=1), [0.0, 1.0])
    np.testing.assert_allclose(plot.intervals("server")[0, :, 1].mean(), -1.0)
    collection = plot.collections["compute"]
    plot.update([(0, "compute", 0.0, 3.0), (2, "compute", 1.0, 4.0)])
    assert plot.collections["compute"] is collection  # the same artist, new data
    np.testing.assert_allclose(plot.intervals("compute")[:, 1, 0], [3.0, 4.0])
    assert len(plot.intervals("server")) == 0
    assert plot.ax.get_xlim()[1] == pytest.approx(4.0)


def test_timeline_reads_event_objects_and_rejects_backwards_events():
    class Event:
        def __init__(self, worker, kind, start, end):
            self.worker, self.kind, self.start, self.end = worker, kind, start, end

    plot = viz.timeline([Event(3, "wait", 1.0, 2.0)])
    np.testing.assert_allclose(plot.intervals("wait")[0, :, 1].mean(), 3.0)
    with pytest.raises(ValueError, match="ends before it starts"):
        plot.update([(0, "compute", 2.0, 1.0)])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 12), min_size=1, max_size=60),
    st.lists(st.integers(0, 12), min_size=1, max_size=60),
)
def test_staleness_bars_are_the_fractions_of_updates_per_tau(taus, real):
    plot = viz.staleness_histogram(taus, real=real)
    counts = Counter(taus)
    expected = np.array([counts[k] for k in range(max(taus) + 1)]) / len(taus)
    np.testing.assert_allclose(plot.heights, expected)
    # the real run's outline encloses area 1 (unit-wide bars of fractions)
    xs, ys = plot.overlay.get_data()
    assert np.trapezoid(ys, xs) == pytest.approx(1.0)
    assert plot.mean_line.get_xdata()[0] == pytest.approx(np.mean(taus))
    plt_close(plot)


def plt_close(plot):
    plot.fig.clear()  # hypothesis builds many figures; free them early


def test_staleness_accepts_the_json_summary_and_updates_in_place():
    plot = viz.staleness_histogram({"max": 2, "mean": 1.0, "histogram": {"0": 1, "2": 1}})
    np.testing.assert_allclose(plot.heights, [0.5, 0.0, 0.5])
    assert not plot.overlay.get_visible()
    bars = plot.bars
    plot.update([5, 5, 5])
    assert plot.bars is bars
    np.testing.assert_allclose(plot.heights, [0, 0, 0, 0, 0, 1.0])
    with pytest.raises(ValueError, match="staleness"):
        plot.update([-1, 2])


def test_curves_overlay_runs_and_drop_the_ones_that_leave():
    runs = {
        "sync": {"x": [1, 2, 3], "loss": [1.0, 0.5, 0.3], "accuracy": [0.5, 0.7, 0.8]},
        "async": {"x": [1, 2], "loss": [1.1, 0.7], "accuracy": [0.4, 0.6]},
    }
    plot = viz.curves(runs, x="second")
    loss_line, acc_line = plot.lines["async"]
    np.testing.assert_allclose(loss_line.get_ydata(), [1.1, 0.7])
    np.testing.assert_allclose(acc_line.get_xdata(), [1, 2])
    plot.update({"async": {"x": [1, 2, 3], "loss": [1.0, 0.6, 0.4], "accuracy": [0.5, 0.6, 0.7]}})
    assert list(plot.lines) == ["async"] and plot.lines["async"][0] is loss_line
    np.testing.assert_allclose(loss_line.get_ydata(), [1.0, 0.6, 0.4])
    assert len(plot.axes[0].lines) == 1  # the sync line was removed from the axes
    plot.update({**runs, "local": runs["sync"]})  # two runs join: neither takes async's colour
    colors = [matplotlib.colors.to_hex(plot.lines[k][0].get_color()) for k in ("async", "sync", "local")]
    assert len(set(colors)) == 3
    assert [matplotlib.colors.to_hex(line.get_color()) for line in plot.lines["local"]] == [colors[2]] * 2
    with pytest.raises(ValueError, match="x must be one of"):
        viz.curves(runs, x="minute")
    with pytest.raises(ValueError, match="same length"):
        plot.update({"bad": {"x": [1, 2], "loss": [1.0], "accuracy": [1.0]}})


def test_idle_fraction_bars_and_validation():
    plot = viz.idle_fraction({"sync": [0.1, 0.5, 0.2], "async": [0.0, 0.0, 0.1]})
    np.testing.assert_allclose(plot.heights("sync"), [0.1, 0.5, 0.2])
    plot.update({"sync": [0.3, 0.4]})
    np.testing.assert_allclose(plot.heights("sync"), [0.3, 0.4])
    assert "async" not in plot.collections
    with pytest.raises(ValueError, match="idle fractions"):
        plot.update([0.5, 1.5])


def test_throughput_lines_and_the_linear_scaling_reference():
    plot = viz.throughput({"sync": ([1, 2, 4], [10, 18, 30]), "async": ([2, 4], [25, 45])})
    np.testing.assert_allclose(plot.lines["sync"].get_ydata(), [10, 18, 30])
    # linear scaling extrapolates the per-worker rate of the smallest N
    np.testing.assert_allclose(plot.ideal.get_xdata(), [1, 4])
    np.testing.assert_allclose(plot.ideal.get_ydata(), [10, 40])
    with pytest.raises(ValueError, match="differ in length"):
        plot.update({"x": ([1, 2], [1.0])})


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 10))
def test_bubble_of_a_forward_pipeline_matches_the_gpipe_formula(K, M):
    # unit-cost forwards: stage k runs micro-batch m during [k + m, k + m + 1]
    busy = [(k, "forward", k + m, k + m + 1.0) for k in range(K) for m in range(M)]
    plot = viz.bubble(busy, microbatches=M)
    assert plot.fraction == pytest.approx((K - 1) / (M + K - 1))
    assert viz.bubble_fraction(busy) == pytest.approx((K - 1) / (M + K - 1))
    assert len(plot.intervals("forward")) == K * M
    plt_close(plot)


def test_bubble_reads_per_stage_dicts_and_pipeline_letters():
    plot = viz.bubble({0: [(0, 1), (3, 4, "B")], 1: [(1, 2, "F"), (2, 3, "B")]})
    assert len(plot.intervals("forward")) == 2 and len(plot.intervals("backward")) == 2
    assert plot.fraction == pytest.approx(0.5)


def test_compression_plot_lines_and_log_scale():
    plot = viz.compression({"dense": [4e5, 4e5], "tau": [100.0, 0.0]}, {"no residual": ([1, 2], [0.5, 0.6])})
    assert plot.axes[0].get_yscale() == "log"
    np.testing.assert_allclose(plot.byte_lines["dense"].get_ydata(), [4e5, 4e5])
    assert plot.byte_lines["tau"].get_ydata()[1] > 0  # zero bytes stay drawable on a log axis
    np.testing.assert_allclose(plot.acc_lines["no residual"].get_xdata(), [1, 2])
    with pytest.raises(ValueError, match="dicts"):
        plot.update([1, 2], {})


def test_landscape_plot_updates_line_and_image_in_place():
    plot = viz.landscape_plot(fake_landscape())
    image = plot.image
    other = fake_landscape(9)
    other.plane_loss = np.full((3, 4), 10.0)
    plot.update(other)
    assert plot.image is image
    np.testing.assert_allclose(plot.line.get_xdata(), np.linspace(0, 1, 9))
    np.testing.assert_allclose(plot.image.get_array(), np.ones((3, 4)))  # log10(10)
    np.testing.assert_allclose(plot.minima.get_ydata(), [0, 0, 1])


def test_plot_functions_validate_axes():
    with pytest.raises(ValueError, match="ax must be"):
        viz.timeline(EVENTS, ax="not axes")
    with pytest.raises(ValueError, match="axes must be two"):
        viz.curves({}, axes=[1])


# ---------------------------------------------------------------------------- landscape


@pytest.fixture(scope="module")
def small(mnist):
    return mnist.train[:400]


@pytest.fixture(scope="module")
def trained_landscape(small):
    config = LandscapeConfig(epochs=8, batch_size=20, hidden=32, grid_points=5, line_points=11)
    return loss_landscape(small, config)


def test_line_ends_are_the_two_networks_losses(small):
    a, b = MLP(8), MLP(8)
    w_a, w_b = flat_params(a), flat_params(b)
    loss, acc = losses_at(a, interpolate(w_a, w_b, [0.0, 1.0]), small)
    # PyTorch is the oracle: evaluate() on the two networks themselves
    assert loss[0] == pytest.approx(evaluate(a, small)["loss"], rel=1e-5)
    assert loss[1] == pytest.approx(evaluate(b, small)["loss"], rel=1e-5)
    assert acc[1] == pytest.approx(evaluate(b, small)["accuracy"])
    assert torch.equal(flat_params(a), w_a)  # the caller's network keeps its weights


def test_two_copies_of_one_network_have_a_flat_line_and_no_barrier(small):
    a = MLP(8)
    threads = torch.get_num_threads()
    result = loss_landscape(small, LandscapeConfig(grid_points=0, seeds=(0, 1)), models=[a, a])
    assert torch.get_num_threads() == threads  # the one-thread section restores the setting
    np.testing.assert_allclose(result.line_loss, result.line_loss[0], rtol=1e-6)
    assert result.barrier == pytest.approx(0.0, abs=1e-6)


def test_the_average_of_two_minima_is_not_a_minimum(trained_landscape):
    """The lecture's claim: independently trained minima have a loss barrier between them."""
    r = trained_landscape
    assert max(r.end_losses) < 0.6  # both ends are trained (chance is ln 10 = 2.3)
    assert r.midpoint_loss > max(r.end_losses) + 0.2
    assert r.barrier > 0.2
    assert r.plane_loss.shape == (5, 5) and np.isfinite(r.plane_loss).all()
    assert "barrier" in repr(r)


def test_plane_coordinates_reconstruct_the_third_minimum(small):
    torch.manual_seed(0)
    a, b, c = MLP(8), MLP(8), MLP(8)
    w = [flat_params(m) for m in (a, b, c)]
    u, v = plane_basis(*w)
    assert float(u @ v) == pytest.approx(0.0, abs=1e-3 * float(u @ u))
    assert float(v.norm()) == pytest.approx(float(u.norm()), rel=1e-5)
    r = loss_landscape(small, LandscapeConfig(grid_points=3, line_points=3), models=[a, b, c])
    x, y = r.minima_xy[2]
    torch.testing.assert_close(w[0] + x * u + y * v, w[2], atol=1e-4, rtol=1e-4)
    # the grid spans all three minima
    assert r.plane_x[0] <= min(0, x) and r.plane_x[-1] >= max(1, x)
    assert r.plane_y[0] <= 0 and r.plane_y[-1] >= y


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 10), min_size=3, max_size=20))
def test_barrier_is_zero_for_convex_lines_and_the_max_gap_otherwise(values):
    alphas = np.linspace(0, 1, len(values))
    losses = np.asarray(values)
    chord = (1 - alphas) * losses[0] + alphas * losses[-1]
    assert barrier_height(alphas, losses) == pytest.approx(max(0.0, float(np.max(losses - chord))))
    assert barrier_height(alphas, chord) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seeds": (1,)}, "seeds"),
        ({"seeds": (1, 1, 2)}, "seeds must differ"),
        ({"epochs": -1}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"alpha_min": 0.5}, "alpha_min"),
        ({"grid_points": 1}, "grid_points"),
        ({"seeds": (0, 1)}, "plane needs 3 seeds"),
    ],
)
def test_landscape_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LandscapeConfig(**kwargs)


def test_landscape_helpers_reject_bad_input(small):
    with pytest.raises(ValueError, match="must contain 0.0"):
        barrier_height(np.array([0.2, 1.0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="points must have shape"):
        losses_at(MLP(8), torch.zeros(2, 3), small)
    with pytest.raises(ValueError, match="empty"):
        losses_at(MLP(8), torch.zeros(1, 10), small[:0])
    w = flat_params(MLP(8))
    with pytest.raises(ValueError, match="must differ"):
        plane_basis(w, w, w + 1)
    with pytest.raises(ValueError, match="models must hold"):
        loss_landscape(small, models=[MLP(8)])
    with pytest.raises(ValueError, match="config must be a LandscapeConfig"):
        loss_landscape(small, {"seeds": (0, 1)})


def test_update_asks_a_live_figure_to_redraw_and_leaves_a_bare_one_alone(monkeypatch):
    import matplotlib.pyplot as plt

    fig = plt.figure()  # has a manager, like a figure shown by pyplot or ipympl
    try:
        plot = viz.timeline(EVENTS, ax=fig.add_subplot())
        calls = []
        monkeypatch.setattr(fig.canvas, "draw_idle", lambda: calls.append(1))
        plot.update(EVENTS[:2])
        assert calls == [1]
    finally:
        plt.close(fig)
    bare = viz.timeline(EVENTS)  # a bare Figure: drawn only when rendered
    drawn = []
    monkeypatch.setattr(bare.fig.canvas, "draw_idle", lambda: drawn.append(1))
    bare.update(EVENTS[:2])
    assert drawn == []


def test_viz_re_exports_every_figure_from_its_module():
    from dlcourse.viz import figure, runs, techniques

    assert all(hasattr(viz, name) for name in viz.__all__)
    assert viz.Plot is figure.Plot and viz.TimelinePlot is runs.TimelinePlot
    assert viz.LandscapePlot is techniques.LandscapePlot


def test_runs_that_leave_a_comparison_lose_their_artists():
    idle = viz.idle_fraction({"sync": [0.5, 0.2], "async": [0.1, 0.0]})
    idle.update({"async": [0.1, 0.3]})
    assert list(idle.collections) == ["async"] and len(idle.ax.collections) == 1
    np.testing.assert_allclose(idle.heights("async"), [0.1, 0.3])
    rate = viz.throughput({"sync": ([1, 2], [10, 15]), "async": ([1, 2], [10, 19])})
    rate.update({"sync": ([1, 2], [10, 15])})
    assert list(rate.lines) == ["sync"] and len(rate.ax.lines) == 2  # sync and the linear reference
    comp = viz.compression({"dense": [8, 8], "1-bit": [1, 1]}, {"dense": [0.5], "1-bit": [0.4]})
    comp.update({"1-bit": [1, 2]}, {"1-bit": [0.4]})
    assert [len(ax.lines) for ax in comp.axes] == [1, 1]
    assert comp.axes[0].lines[0].get_label() == "1-bit"
