"""dlcourse.scaling against the simulator, its invariants, and the SpeedupExplorer panel."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in the tests

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlcourse.data import MnistSplit
from dlcourse.models import count_parameters, make_model
from dlcourse.scaling import DESIGNS, speedup, step_time
from dlcourse.sim import SimConfig, simulate
from dlcourse.sim.cluster import SERVER_MEMORY_BANDWIDTH, model_flops


@pytest.mark.parametrize("bandwidth", [1e9, 1e8])
def test_the_parameter_server_formula_is_the_simulators_sync_step(mnist, bandwidth):
    """Without a spread of compute times, the simulator's sync throughput is N batch / step_time, to 1e-6."""
    N_max, batch = 8, 100
    data = MnistSplit(mnist.train[: N_max * batch * 2], mnist.test[:50], "subset")  # whole steps for every N
    nbytes = 4 * count_parameters(make_model("mlp"))
    for n in (1, 2, 4, 8):
        config = SimConfig(
            num_workers=n, policy="sync", model="mlp", batch_size=batch, compute_spread=0.0,
            evals_per_epoch=1, bandwidth=bandwidth,
        )  # fmt: skip
        result = simulate(config, data)
        t = step_time(
            "parameter-server", n, compute_s=model_flops("mlp") * batch / config.device_flops, nbytes=nbytes,
            bandwidth=bandwidth, latency=config.latency, apply_s=3 * nbytes / SERVER_MEMORY_BANDWIDTH,
        )  # fmt: skip
        assert result.examples_per_s == pytest.approx(n * batch / t, rel=1e-6), (n, bandwidth)


timings = st.fixed_dictionaries(
    {
        "compute_s": st.floats(1e-4, 10.0),
        "nbytes": st.floats(1e3, 1e9),
        "bandwidth": st.floats(1e6, 1e11),
        "latency": st.floats(0.0, 1e-2),
    }
)


@given(timings, st.integers(1, 512))
def test_speedup_invariants(timing, n):
    """No design beats linear; a ring of one sends nothing; a ring worker sends under 2 B per step."""
    for design in DESIGNS:
        s = speedup(design, n, **timing)
        assert 0 < s <= n * (1 + 1e-12)
    assert speedup("ring", 1, **timing) == pytest.approx(1.0)
    ring_comm = step_time("ring", n, **timing) - timing["compute_s"]
    assert ring_comm <= 2 * (n - 1) * timing["latency"] + 2 * timing["nbytes"] / timing["bandwidth"] * (
        1 + 1e-9
    )


@given(timings, st.integers(2, 256))
def test_the_servers_link_caps_its_speedup_and_the_ring_does_not(timing, n):
    """The one link's 2 N messages cap the server at compute / (2 message); the ring needs more N to lose."""
    message = timing["nbytes"] / timing["bandwidth"]
    assert speedup("parameter-server", n, **timing) <= timing["compute_s"] / (2 * message) * (1 + 1e-9)
    no_latency = {**timing, "latency": 0.0}
    assert speedup("ring", n, **no_latency) >= speedup("parameter-server", n, **no_latency)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"design": "tree"}, "design"),
        ({"num_workers": 0}, "num_workers"),
        ({"compute_s": -1.0}, "compute_s"),
        ({"bandwidth": 0.0}, "bandwidth"),
        ({"latency": -1e-3}, "latency"),
    ],
)
def test_step_time_rejects_bad_arguments(kwargs, match):
    args = {"design": "ring", "num_workers": 4, "compute_s": 0.1, "nbytes": 1e6, "bandwidth": 1e9, **kwargs}
    design, n = args.pop("design"), args.pop("num_workers")
    with pytest.raises(ValueError, match=match):
        step_time(design, n, **args)


def test_speedup_needs_a_positive_compute_time():
    with pytest.raises(ValueError, match="compute_s"):
        speedup("ring", 4, compute_s=0.0, nbytes=1e6, bandwidth=1e9)


def test_speedup_explorer_redraws_in_place_when_a_slider_moves():
    """Setting a slider's value recomputes the curves, changes the same artists' data and the status."""
    from dlcourse.viz import SpeedupExplorer

    panel = SpeedupExplorer(max_workers=32, bandwidth=1e9, device_flops=1e10, model="cnn")
    assert panel.last_error is None and panel.updates == 1, panel
    line, image = panel.lines["parameter-server"], panel.image.value
    before = panel.curves["parameter-server"][-1]
    status = panel.status.value
    panel.bandwidth.value = 1e8  # a ten times slower network
    assert panel.updates == 2 and panel.lines["parameter-server"] is line
    after = panel.curves["parameter-server"][-1]
    assert after < before / 2, (before, after)
    assert list(line.get_ydata()) == list(panel.curves["parameter-server"])
    assert panel.status.value != status and panel.image.value != image
    panel.max_workers.value = 64
    assert panel.updates == 3 and panel.Ns[-1] == 64 and "N = 64" in panel.status.value
    panel.model.value = "mlp"  # far less compute per byte: the ring beats the server by more
    mlp = panel.curves
    assert mlp["ring"][-1] > mlp["parameter-server"][-1] and mlp["parameter-server"][-1] < 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [({"max_workers": 1}, "max_workers"), ({"bandwidth": 1.0}, "bandwidth"), ({"model": "resnet"}, "model")],
)
def test_speedup_explorer_rejects_bad_arguments(kwargs, match):
    from dlcourse.viz import SpeedupExplorer

    with pytest.raises(ValueError, match=match):
        SpeedupExplorer(**kwargs)
