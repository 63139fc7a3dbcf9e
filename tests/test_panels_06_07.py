"""Lessons 06 and 07's panels and their library: N and topology in the compression panel, the
approach panel's cost model and choice, and DDP's fp16 / PowerSGD hooks (PyTorch is the oracle)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse import viz
from dlcourse.data import MnistSplit, load_mnist
from dlcourse.ddp_compression import (
    MIN_COMPRESSION_RATE,
    hook_message_bytes,
    powersgd_numbers,
    train_ddp_compressed,
)
from dlcourse.sim import SimConfig
from dlcourse.viz.approach import APPROACHES, ASYNC_GAIN, examples_per_s, step_times


@pytest.fixture(scope="module")
def small():
    split = load_mnist("subset")
    return MnistSplit(split.train[:400], split.test[:200], split.source)


# -- the compression panel: N and topology ---------------------------------------------------


def test_compression_panel_n_and_topology_sliders_rerun_and_are_cached(small):
    base = SimConfig(epochs=1, batch_size=50, model="mlp")
    panel = viz.CompressionExplorer(tau=0.003, num_workers=2, base=base, data=small)
    assert panel.last_error is None, panel.last_error
    assert panel.result.config.num_workers == 2 and panel.result.config.topology == "all"
    panel.num_workers.value = 4
    assert panel.result.config.num_workers == 4, panel.result.config
    assert "N=4, all" in panel.status.value
    all4 = panel.result
    panel.topology.value = "ring"
    ring4 = panel.result
    assert ring4.config.topology == "ring" and ring4.config.num_workers == 4
    # a ring's plotted bytes are its mean message, the simulator's own count split over N-1 hops
    label = "tau=3.0e-03, residual"
    ydata = panel.compression_plot.byte_lines[label].get_ydata()
    assert len(ydata) == ring4.updates
    assert ydata[0] * ring4.updates * 3 == pytest.approx(ring4.bytes_sent, rel=1e-9)
    assert "mean message" in panel.compression_plot.axes[0].get_ylabel()
    # every update reaches N-1 replicas in N-1 messages in both wirings: mean messages are alike
    assert viz.mean_message_bytes(ring4) == pytest.approx(viz.mean_message_bytes(all4), rel=0.2)
    runs = len(panel.results)
    panel.topology.value = "all"  # back to a setting already run: no new simulation
    assert len(panel.results) == runs and panel.result is all4
    assert panel.compression_plot.axes[0].get_ylabel() == "message bytes per step"


def test_compression_panel_rejects_a_bad_topology_and_mean_message_needs_peers(small):
    with pytest.raises(ValueError, match="topology"):
        viz.CompressionExplorer(topology="star")
    one = SimConfig(epochs=1, batch_size=50, num_workers=1, policy="decentralized")
    from dlcourse.sim import simulate

    with pytest.raises(ValueError, match="num_workers >= 2"):
        viz.mean_message_bytes(simulate(one, small))


# -- the approach panel ----------------------------------------------------------------------


def test_step_times_match_the_cost_model_written_out():
    """One setting computed by hand from the module docstring's formulas."""
    p, n, bw, q = 1e8, 8, 1.25e10, 0.1
    compute = 6 * p * 128 / 1e12
    slowest = compute * (1 + 3 * (1 - 0.9**8))
    ring = 2 * 7 / 8 * 4 * p / bw + 2 * 7 * 1e-4
    t = step_times(p, n, bw, q)
    assert t["one device"] == pytest.approx(compute * 1.3)
    assert t["sync all-reduce"] == pytest.approx(slowest + ring)
    assert t["async parameter server"] == pytest.approx(
        max(compute * 1.3 + 2 * (4 * p / bw + 1e-4), 8 * 2 * 4 * p / bw)
    )


@settings(max_examples=60, deadline=None)
@given(
    params=st.floats(1e4, 1e11),
    n=st.integers(2, 512),
    bandwidth=st.floats(1e6, 1e12),
    straggler=st.floats(0.0, 0.9),
)
def test_the_cost_model_behaves_like_the_lecture_says(params, n, bandwidth, straggler):
    """Stragglers only slow sync; a faster link never slows anything; the choice follows the rule."""
    t = step_times(params, n, bandwidth, straggler)
    calm = step_times(params, n, bandwidth, 0.0)
    assert t["sync all-reduce"] >= calm["sync all-reduce"] - 1e-12
    faster = step_times(params, n, bandwidth * 10, straggler)
    assert all(faster[k] <= t[k] * (1 + 1e-12) for k in APPROACHES)
    speed = examples_per_s(params, n, bandwidth, straggler)
    best, why = viz.choose_approach(params, n, bandwidth, straggler)
    if params * 16 > 80e9:
        assert best == "model parallelism + data parallelism" and "exceeds one device" in why
    elif best == "one device":
        assert speed["one device"] >= max(v for k, v in speed.items() if k != "one device")
    elif best == "sync all-reduce":
        assert max(speed.values()) < ASYNC_GAIN * speed["sync all-reduce"]
    else:
        assert speed[best] >= ASYNC_GAIN * speed["sync all-reduce"] and speed[best] == max(speed.values())


def test_approach_panel_redraws_in_place_and_names_its_choice():
    panel = viz.ApproachExplorer(params=1e8, num_workers=8, bandwidth=1.25e10, straggler=0.0)
    assert panel.last_error is None, panel.last_error
    bars = list(panel.bars)
    assert panel.choice[0] == "sync all-reduce", panel.choice
    assert panel.status.value.startswith("sync all-reduce")
    dark = [b for b in bars if b.get_facecolor()[:3] != (0.7333333333333333,) * 3]
    assert len(dark) == 1 and dark[0].get_width() == pytest.approx(panel.throughput["sync all-reduce"])
    panel.straggler.value = 0.1  # the last executor: sync waits for the slowest of eight
    assert panel.choice[0] != "sync all-reduce" and "stragglers" in panel.choice[1]
    panel.params.value = 1e10  # 160 GB of training state: no longer fits an 80 GB device
    assert panel.choice[0] == "model parallelism + data parallelism"
    assert list(panel.bars) == bars and panel.updates == 3  # the same artists, redrawn
    for kwargs, match in [
        ({"num_workers": 0}, "num_workers"),
        ({"straggler": 1.0}, "straggler"),
        ({"params": 1.0}, "params"),
        ({"bandwidth": 0.0}, "bandwidth"),
    ]:
        with pytest.raises(ValueError, match=match):
            viz.ApproachExplorer(**kwargs)


# -- DDP's compression hooks -----------------------------------------------------------------


def test_powersgd_numbers_follow_the_hooks_rule():
    """Vectors dense; a matrix factored only when r(m+n) * MIN_COMPRESSION_RATE < m n (the hook's test)."""
    from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import _should_compress

    shapes = [(64, 784), (64,), (10, 64), (10,), (32, 1, 5, 5), (3, 3)]
    expected = 0
    for shape in shapes:
        if len(shape) < 2:
            expected += math.prod(shape)
            continue
        m, n = shape[0], math.prod(shape[1:])
        compress, dense, factored = _should_compress(m, n, 1, MIN_COMPRESSION_RATE)
        expected += factored if compress else dense
    assert powersgd_numbers(shapes, 1) == expected
    assert hook_message_bytes(shapes, "powersgd", 1) == 4 * expected
    assert hook_message_bytes(shapes, "fp16") == 2 * sum(math.prod(s) for s in shapes)
    with pytest.raises(ValueError, match="hook"):
        hook_message_bytes(shapes, "int8")
    with pytest.raises(ValueError, match="rank"):
        powersgd_numbers(shapes, 0)


@pytest.mark.slow
def test_fp16_and_powersgd_hooks_train_and_count_their_bytes():
    """Real 2-rank DDP runs: fp16 stays close to dense; bytes follow the hooks' message sizes."""
    from dlcourse.data_parallel import DataParallelConfig, train_ddp
    from dlcourse.models import make_model

    split = load_mnist("subset")
    train = split.train[:800]
    cfg = DataParallelConfig(model="mlp", epochs=1, batch_size=100, lr=0.2)
    dense = train_ddp(train, 2, cfg, test=split.test, threads_per_worker=1)
    fp16 = train_ddp_compressed(train, 2, cfg, hook="fp16", test=split.test, threads_per_worker=1)
    psgd = train_ddp_compressed(train, 2, cfg, hook="powersgd", rank=1, test=split.test, threads_per_worker=1)
    shapes = [p.shape for p in make_model("mlp").parameters()]
    numel = sum(math.prod(s) for s in shapes)
    broadcast = 4 * numel  # (N - 1) model copies at start
    steps = dense.updates
    ring = 2  # all ranks of a ring all-reduce send 2 (N - 1) times the tensor in all
    assert fp16.bytes_sent - broadcast == ring * steps * hook_message_bytes(shapes, "fp16")
    powersgd_steps = 2 * 4 * numel + (steps - 2) * hook_message_bytes(shapes, "powersgd", 1)  # 2 dense first
    assert psgd.bytes_sent - broadcast == ring * powersgd_steps
    assert abs(fp16.test["accuracy"] - dense.test["accuracy"]) < 0.02
    gap = max(abs(a - b).max() for a, b in zip(fp16.parameters.values(), dense.parameters.values()))
    assert 0 < float(gap) < 1e-2  # fp16 rounds the all-reduce: close, not equal
    assert not all(torch.equal(a, b) for a, b in zip(psgd.parameters.values(), dense.parameters.values()))


def test_train_ddp_compressed_checks_its_arguments_before_starting(small):
    with pytest.raises(ValueError, match="hook"):
        train_ddp_compressed(small.train, 2, hook="bf16")
    with pytest.raises(ValueError, match="rank"):
        train_ddp_compressed(small.train, 2, hook="powersgd", rank=0)


# -- the lessons' simulated claims hold on other seeds (their bounds were chosen on these) ---


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_lesson_06_simulated_claims_hold_on_other_seeds(seed):
    """Cells 10-11 and 24-25 of lesson 06 with another seed: ring vs all-to-all, the tau hill."""
    import numpy as np

    from dlcourse.sim import simulate
    from dlcourse.sim.decentralized import DecentralizedSimConfig

    def run(n=4, topology="all", tau=0.003):
        config = DecentralizedSimConfig(
            num_workers=n,
            topology=topology,
            tau=tau,
            seed=seed,
            batch_size=50,
            bandwidth=1e7,
            lr=0.1,
            epochs=1,
        )
        return simulate(config)

    sizes = (4, 8, 16)
    ring = [float(np.mean(run(n, "ring").staleness)) for n in sizes]
    everyone = [float(np.mean(run(n, "all").staleness)) for n in sizes]
    assert all(a < b for a, b in zip(ring, ring[1:])) and ring[-1] > 2 * everyone[-1], (ring, everyone)
    assert max(everyone) < 2, everyone
    taus = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
    sweep = [run(tau=t) for t in taus]
    dense = run(tau=None)
    accuracy = [r.test.accuracy for r in sweep]
    best = int(np.argmax(accuracy))
    assert 0 < best < len(taus) - 1, accuracy
    assert accuracy[best] > dense.test.accuracy - 0.05, (accuracy, dense.test.accuracy)
    assert dense.bytes_sent / sweep[best].bytes_sent >= 50


@pytest.mark.slow
def test_lesson_07_async_is_not_behind_scaled_sync_on_most_seeds():
    """Cell 9's last claim over seeds 0-4: per epoch, async (shared batches, the default) is not
    behind sync with lambda x 8 on 4 of 5 seeds, and ahead on average. Measured: async minus
    sync x 8 = +0.089, +0.156, -0.070, +0.072, +0.162 (seed 2 trails; with each worker on its
    own shard, the old default, all five were ahead by 0.02..0.12)."""
    import numpy as np

    from dlcourse.sim import SimConfig, simulate

    split = load_mnist()
    data = MnistSplit(split.train[:2000], split.test, split.source)
    leads = []
    for seed in range(5):
        common = dict(num_workers=8, model="mlp", epochs=2, batch_size=50, compute_mean=1.0, seed=seed)
        common.update(straggler_prob=0.1, straggler_slowdown=4.0)
        scaled = simulate(SimConfig(policy="sync", lr=0.8, **common), data)
        asynchronous = simulate(SimConfig(policy="async", lr=0.1, **common), data)
        leads.append(
            float(np.mean(asynchronous.epoch_curve("accuracy")) - np.mean(scaled.epoch_curve("accuracy")))
        )
    assert sum(lead > -0.03 for lead in leads) >= 4 and np.mean(leads) > 0.05, leads


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_lesson_07_simulated_claims_hold_on_other_seeds(seed):
    """Cells 7-9 and section 9 of lesson 07 with another seed: scaled lambda, and tuning at N = 1 vs 8
    (async against scaled sync varies with the seed: the test above)."""
    import numpy as np

    from dlcourse.divergence import Diverged
    from dlcourse.sim import SimConfig, simulate

    split = load_mnist()
    data = MnistSplit(split.train[:2000], split.test, split.source)
    common = dict(num_workers=8, model="mlp", epochs=2, batch_size=50, lr=0.1, compute_mean=1.0, seed=seed)
    common.update(straggler_prob=0.1, straggler_slowdown=4.0)
    runs = {
        "sync": simulate(SimConfig(policy="sync", **common), data),
        "sync x8": simulate(SimConfig(policy="sync", **{**common, "lr": 0.8}), data),
        "async": simulate(SimConfig(policy="async", **common), data),
    }
    per_epoch = {k: float(np.mean(r.epoch_curve("accuracy"))) for k, r in runs.items()}
    assert runs["async"].examples_per_s > 1.5 * runs["sync"].examples_per_s
    assert per_epoch["sync"] < per_epoch["async"], per_epoch
    assert per_epoch["sync x8"] > per_epoch["sync"] + 0.05, per_epoch
    lrs = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    tuning = {}
    for label, (policy, n) in {"1": ("sync", 1), "8 async": ("async", 8)}.items():
        tuning[label] = []
        for lr in lrs:
            config = SimConfig(
                policy=policy, num_workers=n, model="mlp", epochs=1, batch_size=50, lr=lr, seed=seed
            )
            try:
                tuning[label].append(simulate(config, data).test.accuracy)
            except Diverged:
                tuning[label].append(float("nan"))
    best = {k: lrs[int(np.nanargmax(v))] for k, v in tuning.items()}
    assert best["8 async"] < best["1"], tuning
    assert np.nan_to_num(tuning["8 async"][lrs.index(best["1"])]) < np.nanmax(tuning["8 async"]) - 0.1, tuning
    # larger ones diverge, or end at chance (seed 2 at lambda 0.8: 0.100, a finite loss), where N = 1 trains
    failed = [np.isnan(a) or a < 0.15 for a in tuning["8 async"]]
    assert any(f and s > 0.5 for f, s in zip(failed, tuning["1"])), tuning
