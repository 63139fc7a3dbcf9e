"""The simulated cluster: properties over configurations, and the lecture's claims as tests.

PyTorch is the oracle: synchronous gradient averaging and sequential SGD are rebuilt with
``torch.optim.SGD`` on exactly the simulator's mini-batches (``dlcourse.data.batch_stream``).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlcourse import cli
from dlcourse.data import MnistSplit, batch_stream, shard
from dlcourse.models import make_model
from dlcourse.sim import (
    POLICIES,
    Cluster,
    SimConfig,
    SimResult,
    register_policy,
    simulate,
)
from dlcourse.sim.decentralized import DecentralizedSimConfig

PROPERTY = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def small(mnist) -> MnistSplit:
    """240 training and 100 test digits: a few milliseconds per simulation."""
    return MnistSplit(mnist.train[:240], mnist.test[:100], "subset")


@st.composite
def timings(draw, num_workers: int) -> dict:
    """Any timing model: spread, per-worker speeds, stragglers, network, server time."""
    speeds = draw(
        st.none() | st.lists(st.floats(0.25, 4.0), min_size=num_workers, max_size=num_workers).map(tuple)
    )
    return {
        "compute_mean": draw(st.floats(0.01, 5.0)),
        "compute_spread": draw(st.floats(0.0, 1.0)),
        "worker_speeds": speeds,
        "straggler_prob": draw(st.floats(0.0, 0.5)),
        "straggler_slowdown": draw(st.floats(1.0, 10.0)),
        "bandwidth": draw(st.floats(1e5, 1e10)),
        "latency": draw(st.floats(0.0, 0.1)),
        "apply_time": draw(st.floats(0.0, 0.2)),
        "servers": draw(st.integers(1, 4)),
        "seed": draw(st.integers(0, 2**20)),
    }


@st.composite
def configs(draw, policies=("sync", "async", "softsync", "bounded")) -> SimConfig:
    n = draw(st.integers(1, 6))
    policy = draw(st.sampled_from(policies))
    return SimConfig(
        num_workers=n,
        policy=policy,
        softsync=draw(st.integers(1, n)) if policy == "softsync" else None,
        staleness_bound=draw(st.integers(0, 3)) if policy == "bounded" else None,
        lr=draw(st.floats(0.01, 0.5)),
        lr_policy=draw(st.sampled_from(["constant", "staleness"])),
        epochs=draw(st.integers(1, 2)),
        batch_size=draw(st.integers(8, 64)),
        evals_per_epoch=1,
        **draw(timings(n)),
    )


def sgd_oracle(config: SimConfig, data: MnistSplit, steps: int) -> torch.Tensor:
    """Synchronous gradient averaging in plain PyTorch: each step, every worker's next
    mini-batch gradient at the same parameters, averaged, one ``torch.optim.SGD`` step."""
    n = config.num_workers
    model = make_model(config.model, seed=config.seed)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr)
    shards = shard(data.train, n)
    streams = [
        batch_stream(len(s), config.batch_size, seed=config.seed, worker=w) for w, s in enumerate(shards)
    ]
    for _ in range(steps):
        opt.zero_grad()
        for w in range(n):
            idx = next(streams[w])
            (F.cross_entropy(model(shards[w].X[idx]), shards[w].y[idx]) / n).backward()
        opt.step()
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach()


def steps_per_worker(config: SimConfig, data: MnistSplit) -> int:
    return config.epochs * math.ceil(len(data.train) // config.num_workers / config.batch_size)


# -- properties -----------------------------------------------------------------------------


@PROPERTY
@given(config=configs())
def test_same_seed_same_result(small, config):
    a, b = simulate(config, small), simulate(config, small)
    assert torch.equal(a.params, b.params)
    assert a.trace == b.trace and a.server_busy == b.server_busy
    assert a.staleness == b.staleness and a.evals == b.evals and a.step_loss == b.step_loss


@PROPERTY
@given(config=configs(policies=("sync", "softsync")))
def test_softsync_with_S_equal_N_is_synchronous_gradient_averaging(small, config):
    config.softsync = config.num_workers  # S = N (for "sync" it is so by definition)
    result = simulate(config, small)
    expected = sgd_oracle(config, small, steps_per_worker(config, small))
    torch.testing.assert_close(result.params, expected, rtol=1e-4, atol=1e-5)
    assert set(result.staleness) == {0}
    assert result.server_steps == steps_per_worker(config, small)


@PROPERTY
@given(config=configs(policies=("async",)))
def test_async_with_one_worker_is_sequential_sgd(small, config):
    config.num_workers, config.worker_speeds = 1, None
    result = simulate(config, small)
    expected = sgd_oracle(config, small, steps_per_worker(config, small))
    torch.testing.assert_close(result.params, expected, rtol=1e-5, atol=1e-6)
    assert set(result.staleness) == {0}


@PROPERTY
@given(config=configs(policies=("bounded",)))
def test_observed_staleness_never_exceeds_the_bound(small, config):
    result = simulate(config, small)
    assert max(result.staleness) <= config.staleness_bound
    config.staleness_bound = 0
    assert set(simulate(config, small).staleness) == {0}


@PROPERTY
@given(config=configs(), k=st.integers(2, 8))
def test_sharded_servers_cut_busy_time_per_update_by_k(small, config, k):
    config.servers, config.apply_time = 1, 0.05
    one = simulate(config, small)
    config.servers = k
    many = simulate(config, small)
    per_update = [sum(e - s for s, e in r.server_busy) / r.updates for r in (one, many)]
    assert per_update[0] / per_update[1] == pytest.approx(k, rel=1e-6)
    if config.policy == "sync":  # synchronous: the sharding changes timing, never the numbers
        assert torch.equal(one.params, many.params)


@PROPERTY
@given(config=configs(policies=("sync",)))
def test_a_synchronous_step_takes_as_long_as_its_slowest_worker(small, config):
    config.apply_time = 0.0
    result = simulate(config, small)
    n = config.num_workers
    steps = steps_per_worker(config, small)
    # per worker, its r-th step runs from the start of its pull to the end of its push
    spans = {w: [] for w in range(n)}
    starts = {w: [e.start for e in result.trace if e.worker == w and e.kind == "pull"] for w in range(n)}
    ends = {w: [e.end for e in result.trace if e.worker == w and e.kind == "push"] for w in range(n)}
    for w in range(n):
        assert len(starts[w]) == len(ends[w]) == steps
        spans[w] = [b - a for a, b in zip(starts[w], ends[w])]
    applied = sorted(e for _, e in result.server_busy)[n - 1 :: n]  # the N-th update of each step
    previous = 0.0
    for r in range(steps):
        slowest = max(spans[w][r] for w in range(n))
        assert applied[r] - previous == pytest.approx(slowest, rel=1e-9, abs=1e-9)
        previous = applied[r]


def test_results_are_consistent(small):
    config = SimConfig(num_workers=3, policy="softsync", softsync=2, epochs=2, batch_size=20)
    r = simulate(config, small)
    assert r.updates == len(r.staleness) == len(r.step_loss) == 2 * 3 * 4
    assert r.examples == 2 * 240  # every example of every epoch reached the server
    assert r.evals[0].epoch == 0 and r.evals[-1].epoch == pytest.approx(2.0)
    assert r.epoch_curve("loss")[-1] == r.test.loss
    times, losses = r.time_curve("loss")
    assert times == sorted(times) and len(losses) == len(r.evals)
    assert r.virtual_s == pytest.approx(max([e.end for e in r.trace] + [b for _, b in r.server_busy]))
    assert all(0.0 <= f <= 1.0 for f in r.idle_fraction) and 0 < r.server_utilization <= 1
    for e in r.trace:
        assert e.kind in ("pull", "compute", "push", "wait") and e.end > e.start
    assert r.bytes_sent == 2 * r.updates * r.params.numel() * 4  # one pull and one push per gradient
    model = r.load_into(make_model("mlp"))
    assert torch.equal(torch.nn.utils.parameters_to_vector(model.parameters()), r.params)
    metrics = json.loads(json.dumps(r.to_json(trace=True)))
    for key in ("test_accuracy", "test_loss", "test_macro_f1", "examples_per_s", "wall_s", "updates"):
        assert isinstance(metrics[key], (int, float))
    assert metrics["bytes_sent"] == r.bytes_sent and set(metrics["staleness"]) == {"max", "mean", "histogram"}
    assert len(metrics["trace"]) == len(r.trace)
    assert "policy='softsync'" in repr(r) and "softsync=2" in repr(config)


def test_a_students_lr_policy_plugs_in(small):
    seen = []

    def my_policy(lr: float, tau: int) -> float:
        seen.append(tau)
        return lr / (1 + tau)

    r = simulate(SimConfig(num_workers=4, policy="async", lr_policy=my_policy, batch_size=20), small)
    assert seen == r.staleness and max(seen) > 0
    assert r.to_json()["config"]["lr_policy"] == "my_policy"
    with pytest.raises(ValueError, match="lr_policy"):
        simulate(SimConfig(num_workers=2, lr_policy=lambda lr, tau: -1.0, batch_size=20), small)


def test_a_new_policy_plugs_in_through_the_cluster(small):
    """A policy written outside sim.py (here: each worker trains alone, nothing is shared)."""

    def local_only(cluster: Cluster) -> None:
        replicas = [cluster.W.clone() for _ in range(cluster.config.num_workers)]

        def step(w: int, left: int) -> None:
            grad, size = cluster.gradient(w, replicas[w])
            end = cluster.now + cluster.compute_time(w)
            cluster.record(w, "compute", cluster.now, end)
            replicas[w] -= cluster.config.lr * grad
            cluster.applied([0], size, torch.stack(replicas).mean(0))
            if left > 1:
                cluster.schedule(end, step, w, left - 1)

        for w in range(cluster.config.num_workers):
            cluster.schedule(0.0, step, w, cluster.total_steps // cluster.config.num_workers)
        cluster.run_events()
        cluster.final_params = torch.stack(replicas).mean(0)

    register_policy("local-only", local_only)
    try:
        r = simulate(SimConfig(num_workers=2, policy="local-only", batch_size=40), small)
        assert isinstance(r, SimResult) and r.updates == 2 * 3 and r.examples == 240
        assert r.test.loss < r.evals[0].loss  # it learned something
    finally:
        del POLICIES["local-only"]
    with pytest.raises(ValueError, match="policy"):
        SimConfig(policy="local-only")


def test_a_plain_config_runs_decentralized_with_its_defaults(small):
    """SimConfig(policy="decentralized") is DecentralizedSimConfig with the defaults (uncompressed)."""
    plain = simulate(SimConfig(num_workers=3, policy="decentralized", batch_size=20), small)
    full = simulate(DecentralizedSimConfig(num_workers=3, batch_size=20), small)
    assert torch.equal(plain.params, full.params) and plain.evals == full.evals
    assert plain.bytes_sent == full.bytes_sent > 0


def test_applied_builds_derived_params_only_when_an_evaluation_is_due(small):
    """A policy may pass a function for its model: same evaluations, called once per evaluation."""
    calls = []

    def averaging(cluster: Cluster, lazy: bool) -> None:
        replicas = [cluster.W.clone() for _ in range(cluster.config.num_workers)]

        def mean() -> torch.Tensor:
            calls.append(cluster.now)
            return torch.stack(replicas).mean(0)

        for step in range(cluster.total_steps):
            w = step % cluster.config.num_workers
            grad, size = cluster.gradient(w, replicas[w])
            replicas[w] -= cluster.config.lr * grad
            cluster.applied([0], size, mean if lazy else torch.stack(replicas).mean(0))
        cluster.final_params = torch.stack(replicas).mean(0)

    config = dict(num_workers=3, batch_size=20, evals_per_epoch=4)
    runs = {}
    for lazy in (False, True):
        register_policy("averaging", lambda cluster, lazy=lazy: averaging(cluster, lazy))
        try:
            runs[lazy] = simulate(SimConfig(policy="averaging", **config), small)
        finally:
            del POLICIES["averaging"]
    assert runs[True].evals == runs[False].evals
    # the first evaluation is the initial model, taken before any step; each later one called mean()
    assert len(calls) == len(runs[True].evals) - 1 == 4
    assert runs[True].updates == 12  # 12 steps, 4 calls: not one per step


# -- the lecture's claims on the default data (4,000 training digits) --------------------


def test_with_stragglers_async_has_higher_throughput_than_sync(mnist):
    base = dict(num_workers=8, epochs=2, straggler_prob=0.2, straggler_slowdown=4.0, evals_per_epoch=1)
    sync = simulate(SimConfig(policy="sync", **base), mnist)
    asyn = simulate(SimConfig(policy="async", **base), mnist)
    assert asyn.examples_per_s >= 1.5 * sync.examples_per_s  # last-executor effect (measured ~2x)
    # synchronous workers spend much of their time waiting for the slowest
    assert sum(sync.idle_fraction) / 8 > sum(asyn.idle_fraction) / 8 + 0.1


def test_async_mean_staleness_grows_with_N_to_about_N_minus_1(mnist):
    means = []
    for n in (2, 4, 8, 16):
        r = simulate(
            SimConfig(num_workers=n, policy="async", epochs=3, batch_size=50, evals_per_epoch=1), mnist
        )
        means.append(r.staleness_summary()["mean"])
        assert means[-1] == pytest.approx(n - 1, rel=0.15)
    assert means == sorted(means) and len(set(means)) == 4


def test_staleness_slows_convergence_and_the_scaled_lr_recovers_most_of_it(mnist):
    base = dict(policy="async", lr=0.3, epochs=3, batch_size=50, evals_per_epoch=1)
    sequential = simulate(SimConfig(num_workers=1, **base), mnist)
    stale = simulate(SimConfig(num_workers=16, **base), mnist)
    scaled = simulate(SimConfig(num_workers=16, lr_policy="staleness", **base), mnist)
    # per epoch, over the same examples, staleness ~15 hurts
    for seq_loss, stale_loss in zip(sequential.epoch_curve("loss"), stale.epoch_curve("loss")):
        assert stale_loss > seq_loss + 0.5
    assert stale.test.accuracy < sequential.test.accuracy - 0.3
    # lambda / tau recovers most of the gap (measured ~80%)
    gap = sequential.test.accuracy - stale.test.accuracy
    assert scaled.test.accuracy - stale.test.accuracy >= 0.5 * gap
    assert stale.test.loss - scaled.test.loss >= 0.5 * (stale.test.loss - sequential.test.loss)


def test_softsync_trades_throughput_for_staleness_as_S_grows(mnist):
    runs = [
        simulate(
            SimConfig(
                num_workers=8, policy="softsync", softsync=s, epochs=2, straggler_prob=0.1, evals_per_epoch=1
            ),
            mnist,
        )
        for s in (1, 2, 4, 8)
    ]
    throughput = [r.examples_per_s for r in runs]
    mean_tau = [r.staleness_summary()["mean"] for r in runs]
    assert all(a > b for a, b in zip(throughput, throughput[1:]))
    assert all(a > b for a, b in zip(mean_tau, mean_tau[1:])) and mean_tau[-1] == 0
    assert throughput[0] >= 1.5 * throughput[-1]


def test_a_bound_caps_staleness_at_its_value(mnist):
    base = dict(
        num_workers=8, worker_speeds=(1, 1, 1, 1, 1, 1, 2, 0.5), straggler_prob=0.2, evals_per_epoch=1
    )
    unbounded = simulate(SimConfig(policy="async", epochs=2, **base), mnist)
    assert max(unbounded.staleness) > 3  # without a bound staleness runs far higher
    throughput = []
    for bound in (0, 1, 3):
        r = simulate(SimConfig(policy="bounded", staleness_bound=bound, epochs=2, **base), mnist)
        assert max(r.staleness) <= bound
        throughput.append(r.examples_per_s)
    assert throughput == sorted(throughput)  # a looser bound makes fast workers wait less
    assert throughput[-1] < unbounded.examples_per_s


def test_a_central_server_is_a_bottleneck_that_k_shards_relieve(mnist):
    base = dict(num_workers=16, policy="async", apply_time=0.25, evals_per_epoch=1)
    one = simulate(SimConfig(servers=1, **base), mnist)
    four = simulate(SimConfig(servers=4, **base), mnist)
    assert one.server_utilization > 0.9
    assert four.examples_per_s > 2.5 * one.examples_per_s


def test_a_widget_sized_run_is_fast(mnist):
    config = SimConfig(num_workers=16, policy="async")
    simulate(config, mnist)  # warm up
    best = min(simulate(config, mnist).real_s for _ in range(3))
    assert best < 1.0  # the panels redraw on every slider move (measured ~0.07 s)


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_workers=0), "num_workers"),
        (dict(num_workers=4, policy="softsync", softsync=5), "softsync"),
        (dict(num_workers=4, policy="softsync", softsync=0), "softsync"),
        (dict(policy="softsync"), "softsync"),
        (dict(policy="bounded", staleness_bound=-1), "staleness_bound"),
        (dict(policy="bounded"), "staleness_bound"),
        (dict(policy="gossip"), "policy"),
        (dict(compute_mean=0.0), "compute_mean"),
        (dict(compute_mean=-1.0), "compute_mean"),
        (dict(compute_spread=-0.1), "compute_spread"),
        (dict(bandwidth=0.0), "bandwidth"),
        (dict(bandwidth=-5.0), "bandwidth"),
        (dict(latency=-1e-3), "latency"),
        (dict(apply_time=-0.01), "apply_time"),
        (dict(servers=0), "servers"),
        (dict(lr=0.0), "lr"),
        (dict(lr_policy="cosine"), "lr_policy"),
        (dict(straggler_prob=1.5), "straggler_prob"),
        (dict(straggler_slowdown=0.5), "straggler_slowdown"),
        (dict(num_workers=2, worker_speeds=(1.0,)), "worker_speeds"),
        (dict(num_workers=2, worker_speeds=(1.0, 0.0)), "worker_speeds"),
        (dict(epochs=0), "epochs"),
        (dict(model="resnet"), "model"),
    ],
)
def test_bad_config_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SimConfig(**kwargs)


def test_bad_simulate_arguments(small):
    with pytest.raises(ValueError, match="config"):
        simulate({"num_workers": 2}, small)
    with pytest.raises(ValueError, match="data"):
        simulate(SimConfig(), (small.train, small.test))
    with pytest.raises(ValueError, match="num_workers"):
        simulate(SimConfig(num_workers=50), MnistSplit(small.train[:10], small.test, "subset"))
    with pytest.raises(ValueError, match="batch_size"):
        next(batch_stream(10, 0, seed=0, worker=0))


def test_cli_simulate_writes_the_metrics(tmp_path, capsys):
    out = tmp_path / "sim.json"
    args = ["simulate", "--policy", "softsync", "--softsync", "2", "--workers", "4", "--json", str(out)]
    assert cli.main(args) == 0
    metrics = json.loads(out.read_text())
    assert metrics["policy"] == "softsync" and metrics["softsync"] == 2 and metrics["model"] == "mlp"
    assert metrics["staleness"]["max"] <= 3 and metrics["test_accuracy"] > 0.3
    assert "staleness" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["--workers", "0"],
        ["--policy", "softsync", "--workers", "4", "--softsync", "5"],
        ["--policy", "bounded", "--staleness-bound", "-1"],
        ["--policy", "bounded"],
        ["--bandwidth", "0"],
        ["--compute-mean", "-1"],
        ["--policy", "gossip"],
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(args, capsys):
    try:
        code = cli.main(["simulate", *args])
    except SystemExit as e:  # argparse's own checks
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err


def test_the_lectures_cnn_runs_in_the_simulator(small):
    data = MnistSplit(small.train[:80], small.test[:50], "subset")
    r = simulate(SimConfig(num_workers=2, policy="sync", model="cnn", batch_size=20, lr=0.05), data)
    assert r.params.numel() == 1_111_946 and r.updates == 4 and set(r.staleness) == {0}
    assert r.bytes_sent == 2 * 4 * 1_111_946 * 4  # messages carry every parameter
    # 4.4 MB per message at 1 GB/s: about 4.5 ms each (the MLP's take 0.3 ms)
    assert min(e.end - e.start for e in r.trace if e.kind == "push") > 1e-3


def test_the_simulator_reads_from_sim_and_registers_every_family():
    """``from dlcourse.sim import ...`` gives every public name; each family registered its policies."""
    from dlcourse import sim
    from dlcourse.sim import cluster, config, decentralized, parameter_server

    assert sim.Cluster is cluster.Cluster and sim.SimConfig is config.SimConfig
    assert sim.register_policy is config.register_policy and sim.POLICIES is config.POLICIES
    for name in ("sync", "async", "softsync", "bounded"):
        assert POLICIES[name] is parameter_server.run_parameter_server
    assert POLICIES["decentralized"] is decentralized.run_decentralized
    assert all(hasattr(sim, name) for name in sim.__all__)


def test_default_data_is_loaded_once_per_source():
    from dlcourse.sim import default_data

    first = default_data("subset")
    assert default_data("subset") is first and first.source == "subset"
    with pytest.raises(ValueError, match="source"):
        default_data("imagenet")
