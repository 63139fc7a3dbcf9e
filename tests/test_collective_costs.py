"""Reduce-scatter and all-gather on a ring (ours vs torch.distributed), their bytes, the alpha-beta model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dlcourse import collectives
from dlcourse.collectives import (
    DEFAULT_SIZES,
    AlphaBeta,
    all_gather_bytes,
    allreduce_bytes_per_rank,
    collective_steps,
    fit,
    fit_alpha_beta,
    reduce_scatter_bytes,
    repeats_for,
    ring_all_gather,
    ring_allreduce_bytes,
    ring_reduce_scatter,
)
from dlcourse.launcher import launch
from dlcourse.sim import SimConfig, simulate

SIZES = (1, 2, 5, 7, 13, 64, 1001)  # numel: smaller than N, odd, not a multiple of N


def _ours_vs_torch(rank, world_size, sizes):
    """Every size, integer-valued float64 and int64 (sums exact): ours, torch's, and what we sent."""
    sent = []
    isend = dist.isend

    def counting_isend(tensor, dst, *args, **kwargs):  # count what our ring puts on the wire
        sent.append(tensor.numel() * tensor.element_size())
        return isend(tensor, dst, *args, **kwargs)

    collectives.dist.isend = counting_isend
    out = []
    for numel in sizes:
        for dtype in (torch.float64, torch.int64):
            g = torch.Generator().manual_seed(1000 * rank + numel)
            x = torch.randint(-1000, 1000, (numel,), generator=g).to(dtype).reshape(-1)
            if numel % 2 == 0:
                x = x.view(2, -1)  # any shape: flattened
            sent.clear()
            ours = ring_reduce_scatter(x)
            rs_sent = sum(sent)
            shard = math.ceil(numel / world_size)
            padded = torch.zeros(shard * world_size, dtype=dtype)
            padded[:numel] = x.reshape(-1)
            theirs = torch.empty(shard, dtype=dtype)
            dist.reduce_scatter_tensor(theirs, padded)
            sent.clear()
            gathered = ring_all_gather(ours)
            ag_sent = sum(sent)
            reference = torch.empty(shard * world_size, dtype=dtype)
            dist.all_gather_into_tensor(reference, ours)
            total = x.clone()
            dist.all_reduce(total)
            out.append(
                {
                    "numel": numel,
                    "reduce_scatter": torch.equal(ours, theirs),
                    "all_gather": torch.equal(gathered, reference),
                    "round_trip": torch.equal(ring_all_gather(ours, numel=numel), total.reshape(-1)),
                    "shard": ours.numel() == shard,
                    "bytes": (rs_sent, ag_sent, shard * world_size * x.element_size()),
                }
            )
    collectives.dist.isend = isend
    return out


@pytest.mark.multiprocess
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ring_collectives_equal_torch_distributed(world_size):
    """Ours == reduce_scatter_tensor / all_gather_into_tensor (gloo), bit for bit, for odd sizes."""
    for rank, results in enumerate(
        launch(_ours_vs_torch, world_size, SIZES, threads_per_worker=1, run_timeout=120)
    ):
        for r in results:
            assert r["reduce_scatter"] and r["all_gather"] and r["round_trip"] and r["shard"], (rank, r)
            rs_sent, ag_sent, padded_bytes = r["bytes"]
            # each of N-1 steps sends one chunk: (N-1)/N of the padded tensor, the formula's bytes
            assert rs_sent == ag_sent == reduce_scatter_bytes(padded_bytes, world_size)


def test_ring_collectives_need_a_process_group_and_a_tensor():
    if dist.is_initialized():  # pragma: no cover - only under torchrun
        pytest.skip("a process group exists in this process")
    with pytest.raises(RuntimeError, match="no process group"):
        ring_reduce_scatter(torch.zeros(4))
    with pytest.raises(ValueError, match="shard must be a torch.Tensor"):
        ring_all_gather([1.0, 2.0])


# ------------------------------------------------------------------- bytes and steps


@settings(max_examples=100, deadline=None)
@given(nbytes=st.integers(0, 10**12), n=st.integers(1, 1024))
def test_an_all_reduce_is_a_reduce_scatter_plus_an_all_gather(nbytes, n):
    """Per rank: (N-1)/N each half, 2(N-1)/N in all; all ranks together: the ring's 2(N-1) x size."""
    rs, ag, ar = (
        reduce_scatter_bytes(nbytes, n),
        all_gather_bytes(nbytes, n),
        allreduce_bytes_per_rank(nbytes, n),
    )
    assert rs == ag == pytest.approx((n - 1) / n * nbytes)
    assert ar == pytest.approx(rs + ag)
    assert n * ar == pytest.approx(ring_allreduce_bytes(nbytes, n))
    assert rs <= nbytes and ar < 2 * nbytes or nbytes == 0
    steps = [collective_steps(op, n) for op in ("reduce_scatter", "all_gather", "all_reduce")]
    assert steps == [n - 1, n - 1, 2 * (n - 1)]


def test_one_rank_sends_nothing():
    assert reduce_scatter_bytes(100, 1) == allreduce_bytes_per_rank(100, 1) == 0
    assert AlphaBeta(1e-3, 1e9).time("all_reduce", 10**6, 1) == 0


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="num_workers"):
        reduce_scatter_bytes(10, 0)
    with pytest.raises(ValueError, match="nbytes"):
        all_gather_bytes(-1, 2)
    with pytest.raises(ValueError, match="op"):
        collective_steps("broadcast", 2)
    with pytest.raises(ValueError, match="beta_bytes_per_s"):
        AlphaBeta(1e-4, 0)
    with pytest.raises(ValueError, match="alpha_s"):
        AlphaBeta(-1, 1e9)
    with pytest.raises(ValueError, match="sizes"):
        collectives.measure_collectives(2, sizes=())
    with pytest.raises(ValueError, match="num_workers"):
        fit_alpha_beta(num_workers=1)


# ------------------------------------------------------------------- the alpha-beta model


@settings(max_examples=50, deadline=None)
@given(
    alpha=st.floats(1e-6, 1e-2),
    beta=st.floats(1e7, 1e11),
    n=st.integers(2, 16),
)
def test_time_is_steps_times_alpha_plus_bytes_over_beta_and_fit_recovers_it(alpha, beta, n):
    """Times made by a known model are fitted back to that model."""
    model = AlphaBeta(alpha, beta)
    nbytes = 4 * 10**6
    assert model.time("all_reduce", nbytes, n) == pytest.approx(
        2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes / beta
    )
    assert model.time("send", nbytes, n) == pytest.approx(alpha + nbytes / beta)
    times = {(op, s): model.time(op, s, n) for op in collectives.FIT_OPS for s in (1024, 65536, 4 * 1024**2)}
    fitted = fit(times, n)
    assert fitted.alpha_s == pytest.approx(alpha, rel=1e-6)
    assert fitted.beta_bytes_per_s == pytest.approx(beta, rel=1e-6)


def test_a_fit_per_collective_recovers_each_collectives_own_model():
    """Times from a different model per collective: fit(..., op) finds each; one fit for all cannot."""
    models = {
        "all_reduce": AlphaBeta(1e-4, 2e9),
        "reduce_scatter": AlphaBeta(3e-4, 1e9),
        "all_gather": AlphaBeta(5e-5, 4e9),
    }
    sizes = (1024, 65536, 4 * 1024**2)
    times = {(op, s): m.time(op, s, 4) for op, m in models.items() for s in sizes}
    for op, model in models.items():
        fitted = fit(times, 4, op)
        assert fitted.alpha_s == pytest.approx(model.alpha_s, rel=1e-6)
        assert fitted.beta_bytes_per_s == pytest.approx(model.beta_bytes_per_s, rel=1e-6)
    together = fit(times, 4)
    assert max(abs(together.time(op, s, 4) / t - 1) for (op, s), t in times.items()) > 0.05
    with pytest.raises(ValueError, match="op"):
        fit(times, 4, "broadcast")


@pytest.mark.multiprocess
def test_fit_alpha_beta_on_real_processes_gives_positive_finite_numbers():
    """Measured gloo times on 2 processes: a latency and a bandwidth, both positive and finite."""
    fitted = fit_alpha_beta(2, sizes=(1024, 64 * 1024, 1024**2), repeats=3)
    assert 0 < fitted.alpha_s < 1 and math.isfinite(fitted.alpha_s)
    assert 1e5 < fitted.beta_bytes_per_s < 1e13
    assert "us" in repr(fitted) and "GB/s" in repr(fitted)


@pytest.mark.multiprocess
def test_small_tensors_are_timed_more_often_and_every_run_is_kept():
    """time_collectives runs each (op, size) repeats_for(size, repeats) times on every rank."""
    sizes, repeats = (1024, 4 * 1024**2), 2
    per_rank = launch(collectives.time_collectives, 2, sizes, repeats, threads_per_worker=1, run_timeout=120)
    for times in per_rank:
        assert set(times) == {(op, s) for op in collectives.FIT_OPS for s in sizes}
        for (_, s), runs in times.items():
            assert len(runs) == repeats_for(s, repeats) and min(runs) > 0
    assert (
        repeats_for(1024, repeats) == collectives.SMALL_REPEATS * repeats > repeats_for(4 * 1024**2, repeats)
    )
    medians = collectives.slowest_median(per_rank)
    for key, t in medians.items():  # a run's time is its slowest rank's
        runs = [max(r[key][i] for r in per_rank) for i in range(len(per_rank[0][key]))]
        assert min(runs) <= t <= max(runs)


# ------------------------------------------------------------------- a second bandwidth regime

FIT_SIZES = tuple(1024 * 4**k for k in range(9))  # 1 KB .. 64 MB, as benchmarks/collectives.py


@st.composite
def two_regimes(draw):
    """A two-regime model whose crossover is one of FIT_SIZES' bytes per rank, and its op and N."""
    op = draw(st.sampled_from(collectives.FIT_OPS))
    n = draw(st.integers(2, 8))
    k = draw(st.integers(1, len(FIT_SIZES) - 2))  # two sizes at or below the crossover, one above
    beta = draw(st.floats(1e7, 1e11))
    factor = draw(st.floats(1.5, 8.0))
    large_beta = beta / factor if draw(st.booleans()) else beta * factor
    crossover = collectives.bytes_per_rank(op, FIT_SIZES[k], n)
    model = AlphaBeta(draw(st.floats(1e-6, 1e-2)), beta, crossover, large_beta)
    return model, op, n


@settings(max_examples=60, deadline=None)
@given(two_regimes())
def test_fit_recovers_a_two_regime_model_from_its_times(case):
    """Times made by a known two-regime model are fitted back to it: alpha, both betas, the crossover."""
    model, op, n = case
    times = {(op, s): model.time(op, s, n) for s in FIT_SIZES}
    plain = fit(times, n, op)  # one bandwidth cannot follow them
    missed = max(abs(plain.time(op, s, n) / t - 1) for (_, s), t in times.items())
    assume(missed > 0.1)  # fit's default tolerance: a bend the data show (not one hidden under alpha)
    fitted = fit(times, n, op, max_regimes=2)
    assert fitted.large_bytes == model.large_bytes
    assert fitted.alpha_s == pytest.approx(model.alpha_s, rel=1e-5)
    assert fitted.beta_bytes_per_s == pytest.approx(model.beta_bytes_per_s, rel=1e-6)
    assert fitted.large_beta_bytes_per_s == pytest.approx(model.large_beta_bytes_per_s, rel=1e-6)
    assert plain.large_bytes is None
    assert fit(times, n, op, max_regimes=2, tolerance=2 * missed) == plain  # a bend within tolerance


@settings(max_examples=60, deadline=None)
@given(alpha=st.floats(1e-6, 1e-2), beta=st.floats(1e7, 1e11), n=st.integers(2, 8))
def test_on_one_regime_times_the_two_regime_fit_is_the_plain_fit(alpha, beta, n):
    """Data one bandwidth explains: max_regimes=2 returns the one-regime model, equal to max_regimes=1."""
    model = AlphaBeta(alpha, beta)
    times = {(op, s): model.time(op, s, n) for op in collectives.FIT_OPS for s in FIT_SIZES}
    two, one = fit(times, n, max_regimes=2), fit(times, n)
    assert two == one and two.large_bytes is None and two.large_beta_bytes_per_s is None
    assert two.alpha_s == pytest.approx(alpha, rel=1e-5)
    assert two.beta_bytes_per_s == pytest.approx(beta, rel=1e-6)


def test_the_second_regime_is_kept_only_where_noisy_data_need_it():
    """3% noise (seeded): one-regime times keep the plain fit; two-regime times get the crossover."""
    rng = np.random.default_rng(0)
    plain = AlphaBeta(3e-4, 8e8)
    bent = AlphaBeta(3e-4, 8e8, large_bytes=8 * 1024**2, large_beta_bytes_per_s=3e8)
    for model, regimes in ((plain, 1), (bent, 2)):
        times = {
            ("all_gather", s): model.time("all_gather", s, 2) * (1 + 0.03 * rng.standard_normal())
            for s in FIT_SIZES
        }
        fitted = fit(times, 2, "all_gather", max_regimes=2)
        assert (fitted.large_bytes is not None) == (regimes == 2), fitted
        if regimes == 2:
            assert fitted.large_bytes == bent.large_bytes
            assert fitted.large_beta_bytes_per_s == pytest.approx(3e8, rel=0.1)


def test_the_first_regime_rests_on_two_sizes_of_one_collective():
    """One fit for all collectives (ms like gloo's here): two sizes of one op lie below the crossover."""
    ms = {
        "all_reduce": (0.30, 0.30, 0.44, 0.9, 3.7),
        "reduce_scatter": (0.34, 0.36, 0.53, 1.44, 5.1),
        "all_gather": (0.25, 0.25, 0.36, 0.84, 3.4),
    }
    times = {(op, s): t * 1e-3 for op, row in ms.items() for s, t in zip(DEFAULT_SIZES, row)}
    fitted = fit(times, 2, max_regimes=2)
    assert fitted.large_bytes is not None  # one bandwidth misses by more than 10%
    # (at the smallest per-rank bytes, 1 KB, the least squares would be lower: a steep first
    # kilobyte standing in for the collectives' different latencies, on one size of each)
    assert any(
        sum(collectives.bytes_per_rank(op, s, 2) <= fitted.large_bytes for s in DEFAULT_SIZES) >= 2
        for op in collectives.FIT_OPS
    ), fitted


@settings(max_examples=100, deadline=None)
@given(
    alpha=st.floats(0.0, 1e-2),
    beta=st.floats(1e7, 1e11),
    large=st.floats(1.0, 1e9),
    large_beta=st.floats(1e7, 1e11),
    x=st.floats(0.0, 1e10),
    y=st.floats(0.0, 1e10),
    n=st.integers(2, 64),
    op=st.sampled_from(collectives.COLLECTIVE_OPS),
)
def test_time_is_continuous_and_increasing_in_bytes(alpha, beta, large, large_beta, x, y, n, op):
    """time() never falls as bytes grow, and has no jump at the crossover (each side within its slope)."""
    model = AlphaBeta(alpha, beta, large, large_beta)
    lo, hi = sorted((x, y))
    assert model.time(op, lo, n) <= model.time(op, hi, n)
    assert model.transfer_s(lo) <= model.transfer_s(hi)
    steepest = 1 / min(beta, large_beta)
    for step in (1e-3 * large, 1e-6 * large):
        for side in (large - step, large + step):
            assert abs(model.transfer_s(side) - model.transfer_s(large)) <= step * steepest * (1 + 1e-9)
    assert model.transfer_s(large) == pytest.approx(large / beta)
    assert model.transfer_s(2 * large) == pytest.approx(large / beta + large / large_beta)


def test_the_model_says_what_each_number_is():
    """repr: the latency, the bandwidth, and where a second one starts."""
    assert repr(AlphaBeta(2e-4, 8e8)) == "AlphaBeta(alpha=200.0 us, beta=0.800 GB/s)"
    assert repr(AlphaBeta(2e-4, 8e8, 16 * 1024**2, 4e8)) == (
        "AlphaBeta(alpha=200.0 us, beta=0.800 GB/s up to 16 MB per rank, 0.400 GB/s beyond)"
    )


def test_bad_model_and_fit_arguments_name_themselves():
    with pytest.raises(ValueError, match="large_bytes and large_beta_bytes_per_s must be given together"):
        AlphaBeta(1e-4, 1e9, large_bytes=1e6)
    with pytest.raises(ValueError, match="large_bytes and large_beta_bytes_per_s must be given together"):
        AlphaBeta(1e-4, 1e9, large_beta_bytes_per_s=1e8)
    with pytest.raises(ValueError, match="large_bytes must be > 0"):
        AlphaBeta(1e-4, 1e9, 0, 1e8)
    with pytest.raises(ValueError, match="large_beta_bytes_per_s must be > 0"):
        AlphaBeta(1e-4, 1e9, 1e6, -1e8)
    with pytest.raises(ValueError, match="nbytes"):
        AlphaBeta().transfer_s(-1)
    times = {("all_reduce", 1024): 1e-4, ("all_reduce", 4096): 2e-4}
    with pytest.raises(ValueError, match="max_regimes must be <= 2"):
        fit(times, 2, max_regimes=3)
    with pytest.raises(ValueError, match="max_regimes must be >= 1"):
        fit_alpha_beta(2, max_regimes=0)
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        fit(times, 2, max_regimes=2, tolerance=-0.1)
    with pytest.raises(ValueError, match="times must be a dict"):
        fit([1e-4, 2e-4], 2)
    with pytest.raises(ValueError, match="times must be > 0"):
        fit({("all_reduce", 1024): 0.0}, 2)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        repeats_for(1024, 0)
    with pytest.raises(ValueError, match="ops must name"):
        collectives.measure_collectives(2, ops=())
    with pytest.raises(ValueError, match="per_rank"):
        collectives.slowest_median([])


# ------------------------------------------------------------------- the simulator's network


def test_the_simulator_uses_a_fitted_network():
    """network=AlphaBeta sets every message's latency and bandwidth; the default is unchanged."""
    network = AlphaBeta(alpha_s=2e-3, beta_bytes_per_s=5e7)
    base = dict(policy="sync", num_workers=2, epochs=1, model="mlp", evals_per_epoch=1)
    fitted = SimConfig(**base, network=network)
    assert (fitted.latency, fitted.bandwidth) == (2e-3, 5e7)
    assert SimConfig(**base).latency == 1e-4 and SimConfig(**base).network is None
    by_hand = SimConfig(**base, latency=2e-3, bandwidth=5e7)
    a, b = simulate(fitted), simulate(by_hand)
    assert a.virtual_s == b.virtual_s and a.virtual_s > simulate(SimConfig(**base)).virtual_s
    with pytest.raises(ValueError, match="network"):
        SimConfig(**base, network=(2e-3, 5e7))
    with pytest.raises(ValueError, match="network must be a one-regime AlphaBeta"):
        SimConfig(**base, network=AlphaBeta(2e-3, 5e7, large_bytes=1e6, large_beta_bytes_per_s=2e7))
