"""Panels without a browser: setting a widget's value recomputes at once and changes the artists' data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in the tests

import ipywidgets as W
import numpy as np
import pytest

from dlcourse import viz
from dlcourse.data import MnistSplit
from dlcourse.pipeline import gpipe_bubble
from dlcourse.sim import SimConfig

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small(mnist):
    """A fifth of the default data: the panels' behaviour, at a fraction of the cost."""
    return MnistSplit(mnist.train[:800], mnist.test[:200], "subset")


@pytest.fixture(scope="module")
def base():
    return SimConfig(evals_per_epoch=2)


def compute_bars(plot):
    return plot.intervals("compute").copy()


def test_straggler_explorer_redraws_in_place_when_a_slider_moves(small, base):
    panel = viz.StragglerExplorer(num_workers=8, straggler_prob=0.0, base=base, data=small)
    assert panel.updates == 1 and panel.last_error is None
    assert bytes(panel.image.value).startswith(PNG)
    collection = panel.sync_plot.collections["compute"]
    before = compute_bars(panel.sync_plot)
    idle_before = panel.idle_plot.heights("sync")
    assert len(before) == len([e for e in panel.results["sync"].trace if e.kind == "compute"])

    panel.straggler_prob.value = 0.4  # observers fire synchronously (ipywidgets 8)

    assert panel.updates == 2
    assert panel.sync_plot.collections["compute"] is collection  # same artist, new data
    after = compute_bars(panel.sync_plot)
    assert before.shape != after.shape or not np.allclose(before, after)
    # stragglers make synchronous workers wait for the last executor
    assert panel.idle_plot.heights("sync").mean() > idle_before.mean()
    assert panel.results["sync"].config.straggler_prob == 0.4
    assert "async runs" in panel.status.value

    status = panel.status.value
    panel.num_workers.value = 4
    assert len(panel.idle_plot.heights("async")) == 4
    # the status names N and both idle shares, so it changes whenever N does (the browser test moves N)
    assert panel.status.value != status and panel.status.value.startswith("N = 4: ")
    idle = np.mean(panel.results["sync"].idle_fraction)
    assert f"idle {idle:.0%} of the time in sync" in panel.status.value
    assert panel.sync_plot.ax.get_ylim()[0] == pytest.approx(3.5)  # rows 0..3 under the server
    # the expensive sliders recompute on release only
    assert not any(
        s.continuous_update for s in (panel.num_workers, panel.straggler_prob, panel.straggler_slowdown)
    )
    assert "StragglerExplorer(" in repr(panel) and isinstance(panel.widget, W.VBox)


def test_lesson_04s_n_slider_reruns_both_simulations_and_redraws(small, base):
    """Lesson 04's straggler panel, moved as the lesson moves it: N from 4 to 16 (checked here, not there)."""
    panel = viz.StragglerExplorer(num_workers=4, straggler_prob=0.1, base=base, data=small)
    before = (panel.updates, panel.image.value, len(panel.results["sync"].idle_fraction))
    panel.num_workers.value = 16
    assert panel.updates == before[0] + 1 and panel.image.value != before[1] and before[2] == 4
    assert len(panel.results["sync"].idle_fraction) == len(panel.results["async"].idle_fraction) == 16


def test_lesson_05s_panel_moves_rerun_with_each_setting(small, base):
    """Lesson 05's staleness panel, moved as the lesson moves it: lr policy, S, the clock bound."""
    panel = viz.StalenessExplorer(num_workers=8, softsync=1, base=base, data=small)
    image, accuracy = panel.image.value, panel.result.test.accuracy
    assert "staleness σ mean" in panel.status.value  # the lessons' letter
    panel.lr_policy.value = "staleness"
    assert panel.result.config.lr_policy == "staleness" and panel.last_error is None
    assert panel.image.value != image and panel.result.test.accuracy != accuracy
    mean_async = panel.result.staleness_summary()["mean"]
    panel.softsync.value = 4
    assert panel.result.config.policy == "softsync" and panel.result.config.softsync == 4
    assert panel.result.staleness_summary()["mean"] < mean_async
    panel.softsync.value = 1
    panel.bounded.value = True
    panel.staleness_bound.value = 1
    r = panel.result
    assert r.config.policy == "bounded" and r.config.staleness_bound == 1 and panel.last_error is None
    assert max(r.clock_lag) <= 1 and "clock lag max" in panel.status.value
    assert "zhang" in panel.lr_policy.options  # Zhang et al.'s own count is on the menu too


def test_staleness_explorer_clamps_S_when_N_drops(small, base):
    panel = viz.StalenessExplorer(num_workers=8, softsync=6, base=base, data=small)
    assert panel.result.config.policy == "softsync" and panel.result.config.softsync == 6
    updates = panel.updates

    panel.num_workers.value = 4

    assert panel.softsync.max == 4 and panel.softsync.value == 4
    assert panel.updates == updates + 1  # one recomputation, not one per changed widget
    assert panel.result.config.num_workers == 4 and panel.result.config.policy == "sync"

    panel.num_workers.value = 12  # S's maximum follows N up again; S keeps its value
    assert panel.softsync.max == 12 and panel.softsync.value == 4
    assert panel.result.config.policy == "softsync"


def test_staleness_explorer_histogram_follows_S(small, base):
    panel = viz.StalenessExplorer(num_workers=8, softsync=1, base=base, data=small)
    bars = panel.hist_plot.bars
    async_heights = panel.hist_plot.heights
    async_mean = panel.result.staleness_summary()["mean"]
    np.testing.assert_allclose(
        async_heights, np.bincount(panel.result.staleness) / len(panel.result.staleness)
    )
    panel.softsync.value = 8  # S = N: synchronous
    assert panel.hist_plot.bars is bars
    assert panel.result.staleness_summary()["mean"] < async_mean
    assert len(panel.hist_plot.heights) < len(async_heights)
    curve = panel.curves_plot.lines["simulated"][1]
    np.testing.assert_allclose(curve.get_ydata(), [p.accuracy for p in panel.result.evals])


def test_staleness_explorer_keeps_a_staleness_bound_of_0(small, base):
    """A bound of 0 (lockstep) is a valid bound, not a missing one."""
    panel = viz.StalenessExplorer(num_workers=2, staleness_bound=0, base=base, data=small)
    assert panel.last_error is None, panel.last_error
    assert panel.bounded.value and panel.staleness_bound.value == 0
    assert panel.result.config.staleness_bound == 0


def test_staleness_explorer_shows_invalid_combinations_in_the_panel(small, base):
    panel = viz.StalenessExplorer(num_workers=4, softsync=2, base=base, data=small)
    updates = panel.updates
    panel.bounded.value = True  # a bound with S = 2 is not a configuration
    assert panel.updates == updates
    assert "staleness bound" in panel.last_error and "S = 2" in panel.last_error
    assert "color:#b00" in panel.message.value and "not computed" in panel.status.value
    panel.softsync.value = 1
    assert panel.last_error is None and panel.message.value == ""
    assert panel.result.config.policy == "bounded"
    # the bound holds in SSP's clock; staleness (versions) stays within (2b+1)(N-1)
    b, n = panel.staleness_bound.value, 4
    assert max(panel.result.clock_lag) <= b
    assert max(panel.result.staleness) <= (2 * b + 1) * (n - 1)
    panel.staleness_bound.value = 0
    assert max(panel.result.clock_lag) == 0 and max(panel.result.staleness) <= n - 1


def test_staleness_explorer_runs_a_students_lr_rule(small, base):
    seen = []

    def damped(lr, sigma):
        seen.append(sigma)
        return lr / (1 + sigma) ** 2

    panel = viz.StalenessExplorer(num_workers=8, lr_policy=damped, base=base, data=small)
    assert panel.lr_policy.value == "yours: damped"
    assert panel.result.config.lr_policy is damped
    assert sorted(set(seen)) == sorted(set(panel.result.staleness))  # called for every applied sigma
    loss_line = panel.curves_plot.lines["simulated"][0]
    yours = loss_line.get_ydata().copy()
    panel.lr_policy.value = "constant"
    assert panel.curves_plot.lines["simulated"][0] is loss_line
    # the student's rule shrinks stale steps, so the loss falls more slowly than with constant lr
    assert loss_line.get_ydata()[-1] < yours[-1]


def test_staleness_explorer_overlays_a_real_run(small, base):
    calls = []

    def fake_real_run(config, updates, progress):
        calls.append((config, updates))
        for done in range(0, updates + 1, 10):
            progress(done, updates)
        return {
            "staleness": [0, 1, 1, 2],
            "evals": [{"epoch": 0.0, "accuracy": 0.1}, {"epoch": 1.0, "accuracy": 0.5}],
        }

    panel = viz.StalenessExplorer(
        num_workers=4, base=base, data=small, real_run=fake_real_run, real_updates=30
    )
    assert not panel.hist_plot.overlay.get_visible()
    panel.run_button.click()
    ((config, updates),) = calls
    assert updates == 30 and config == panel.config()
    assert panel.progress.value == panel.progress.max == 30
    xs, ys = panel.hist_plot.overlay.get_data()
    assert panel.hist_plot.overlay.get_visible() and ys.max() == pytest.approx(0.5)
    np.testing.assert_allclose(panel.curves_plot.lines["real"][1].get_ydata(), [0.1, 0.5])
    assert "real run: staleness σ mean 1.00" in panel.status.value
    panel.servers.value = 2  # other settings: the real run no longer applies
    assert panel.real is None and "real" not in panel.curves_plot.lines


def test_a_failing_real_run_is_a_message_not_a_traceback(small, base):
    def broken(config, updates, progress):
        raise RuntimeError("worker 1 died")

    panel = viz.StalenessExplorer(num_workers=2, base=base, data=small, real_run=broken)
    panel.run_for_real()
    assert "worker 1 died" in panel.last_error and "RuntimeError" in panel.message.value


@pytest.mark.multiprocess
def test_run_it_for_real_on_the_parameter_server(small, base, no_orphans):
    panel = viz.StalenessExplorer(num_workers=2, softsync=1, base=base, data=small, real_updates=20)
    panel.run_for_real()
    assert panel.last_error is None, panel.last_error
    assert panel.progress.value == panel.progress.max > 0
    total = sum(panel.real["staleness"].values())
    assert total >= 20  # every applied update's staleness came back
    xs, ys = panel.hist_plot.overlay.get_data()
    assert np.trapezoid(ys, xs) == pytest.approx(1.0)
    acc = panel.curves_plot.lines["real"][1].get_ydata()
    assert len(acc) >= 2 and acc[-1] > 0.2  # the real run learned (chance is 0.1)


@pytest.mark.multiprocess
def test_run_it_for_real_is_sized_to_the_machine_and_says_so(small, base, monkeypatch, no_orphans):
    """16 workers asked where 3 processes fit: 2 workers + the server run, and the panel says why."""
    import dlcourse.resources as resources

    asked = []

    def three_fit(requested, *args, **kwargs):
        asked.append(requested)
        return 3, f"{requested} workers asked, 3 run here: this machine has 1 CPU and 2 GB"

    monkeypatch.setattr(resources, "fit_workers", three_fit)
    panel = viz.StalenessExplorer(num_workers=16, softsync=1, base=base, data=small, real_updates=8)
    panel.run_for_real()
    assert panel.last_error is None, panel.last_error
    assert asked == [17]  # 16 workers and the server
    assert "3 run here" in panel.status.value and "1 CPU" in panel.real["note"]

    monkeypatch.setattr(resources, "fit_workers", lambda requested, *a, **k: (0, "none can run here"))
    panel.run_for_real()
    assert "none can run here" in panel.last_error


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_workers": 0}, "num_workers"),
        ({"num_workers": 4, "softsync": 5}, "softsync"),
        ({"servers": 9}, "servers"),
        ({"lr_policy": "cosine"}, "lr_policy"),
        ({"staleness_bound": -1}, "staleness_bound"),
    ],
)
def test_staleness_explorer_rejects_bad_arguments(kwargs, match, small):
    with pytest.raises(ValueError, match=match):
        viz.StalenessExplorer(data=small, **kwargs)


def test_pipeline_explorer_bubble_follows_K_and_M():
    panel = viz.PipelineExplorer(num_stages=4, num_microbatches=1)
    collection = panel.bubble_plot.collections["forward"]
    assert panel.bubble_plot.fraction == pytest.approx(gpipe_bubble(4, 1))
    for M in (2, 8):
        panel.num_microbatches.value = M
        assert panel.bubble_plot.fraction == pytest.approx(gpipe_bubble(4, M))
        assert len(panel.bubble_plot.intervals("forward")) == 4 * M
    assert panel.bubble_plot.collections["forward"] is collection
    panel.schedule.value = "1f1b"  # same bubble, fewer activations held
    assert panel.bubble_plot.fraction == pytest.approx(gpipe_bubble(4, 8))
    assert "held by a stage: 4" in panel.status.value
    panel.num_stages.value = 1
    assert panel.bubble_plot.fraction == pytest.approx(0.0)
    with pytest.raises(ValueError, match="num_stages"):
        viz.PipelineExplorer(num_stages=0)
    with pytest.raises(ValueError, match="schedule"):
        viz.PipelineExplorer(schedule="zero-bubble")


def test_compression_explorer_tau_and_residual(small, base):
    panel = viz.CompressionExplorer(tau=0.003, residual=True, num_workers=4, base=base, data=small)
    assert panel.last_error is None, panel.last_error
    r = panel.result
    assert r.config.tau == pytest.approx(0.003) and r.config.variant == "full"
    per_step = viz.message_bytes_per_step(r)
    # the simulator's own byte count is the oracle: every message went to N - 1 peers
    assert sum(per_step) * 3 == pytest.approx(r.bytes_sent, rel=1e-6)
    assert len(per_step) == r.updates
    label = "tau=3.0e-03, residual"
    np.testing.assert_allclose(panel.compression_plot.byte_lines[label].get_ydata(), per_step)
    dense_bytes = panel.compression_plot.byte_lines["uncompressed"].get_ydata()
    assert dense_bytes.min() > 100 * max(per_step)  # 1-bit messages are orders of magnitude smaller

    panel.tau.value = 0.03  # a higher threshold sends fewer elements
    assert panel.result.bytes_sent < r.bytes_sent
    runs = len(panel.results)
    panel.residual.value = False
    assert panel.result.config.variant == "onebit" and len(panel.results) == runs + 1
    acc = panel.compression_plot.acc_lines["tau=3.0e-02, no residual"].get_ydata()
    np.testing.assert_allclose(acc, [p.accuracy for p in panel.result.evals])
    panel.residual.value = True  # back to a setting already run: taken from the cache
    assert len(panel.results) == runs + 1 and panel.result.config.variant == "full"
    with pytest.raises(ValueError, match="num_workers"):
        viz.CompressionExplorer(num_workers=1)
    with pytest.raises(ValueError, match="tau"):
        viz.CompressionExplorer(tau=0.5)


def test_compression_explorer_keeps_the_base_batch_size(small):
    """The panel's default mini-batch applies only without a base, as in the other viz."""
    panel = viz.CompressionExplorer(num_workers=2, base=SimConfig(batch_size=80), data=small)
    assert panel.last_error is None, panel.last_error
    assert panel.result.config.batch_size == 80
    assert (
        viz.CompressionExplorer(num_workers=2, data=small).result.config.batch_size
        == viz.PANEL_DEFAULTS["batch_size"]
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_workers": 33}, "num_workers"),
        ({"straggler_prob": 0.9}, "straggler_prob"),
        ({"straggler_slowdown": 0.5}, "slowdown"),
    ],
)
def test_straggler_explorer_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.StragglerExplorer(**kwargs)


def test_simulation_panels_reject_a_base_or_data_of_the_wrong_kind(small, base):
    with pytest.raises(ValueError, match="base must be a SimConfig"):
        viz.StragglerExplorer(num_workers=2, base={"epochs": 1}, data=small)
    with pytest.raises(ValueError, match="data must be an MnistSplit"):
        viz.CompressionExplorer(num_workers=2, base=base, data=(small.train, small.test))
    with pytest.raises(ValueError, match="base must be a SimConfig"):
        viz.sim_config("fast", num_workers=2)
    # the real run checks its arguments before any process starts
    with pytest.raises(ValueError, match="config must be a SimConfig, got dict"):
        viz.run_for_real_default({"num_workers": 2}, 10, lambda done, total: None)
    with pytest.raises(ValueError, match="progress must be a function"):
        viz.run_for_real_default(base, 10, progress=None)


def test_panel_pieces_defaults_and_slider_range():
    config = viz.sim_config(None, num_workers=3)
    assert config.num_workers == 3 and config.batch_size == viz.PANEL_DEFAULTS["batch_size"]
    assert viz.slider(W.IntSlider, "workers N", 4, 1, 8).continuous_update is False
    with pytest.raises(ValueError, match="workers N"):
        viz.slider(W.IntSlider, "workers N", 9, 1, 8)
