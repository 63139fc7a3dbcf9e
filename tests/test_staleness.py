"""Staleness rules: sigma, lambda_n, soft sync, clock and staleness gates (Hypothesis; torch.optim oracle)."""

from __future__ import annotations

import functools
import math
import statistics
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse.staleness import (
    LR_POLICIES,
    BoundedStaleness,
    SoftSync,
    StalenessGate,
    apply_updates,
    constant_lr,
    lr_policy_name,
    resolve_lr_policy,
    scaled_lr,
    staleness,
    staleness_lr,
    staleness_summary,
    within_staleness,
    zhang_lr,
)

FAST = settings(max_examples=40, deadline=None)
lrs = st.floats(1e-4, 10.0)
taus = st.integers(0, 1000)


def random_params(seed: int, shapes=((3, 4), (4,), (2, 2, 3))) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes]


def torch_sgd_step(params: list[torch.Tensor], grads: list[torch.Tensor], lr: float) -> list[torch.Tensor]:
    """The oracle: one ``torch.optim.SGD`` step from ``params`` with gradients ``grads``."""
    ps = [p.clone().requires_grad_(True) for p in params]
    for p, g in zip(ps, grads):
        p.grad = g.clone()
    torch.optim.SGD(ps, lr=lr).step()
    return [p.detach() for p in ps]


# -- tau and lambda_n -----------------------------------------------------------------------


@FAST
@given(pulled=st.integers(0, 10**6), behind=st.integers(0, 10**6))
def test_staleness_is_versions_behind(pulled, behind):
    assert staleness(pulled + behind, pulled) == behind


@given(now=st.integers(0, 100), ahead=st.integers(1, 100))
def test_staleness_rejects_a_version_from_the_future(now, ahead):
    with pytest.raises(ValueError, match="pulled_version"):
        staleness(now, now + ahead)


@pytest.mark.parametrize("args, name", [((-1, 0), "server_version"), ((3, -1), "pulled_version")])
def test_staleness_rejects_negative_versions(args, name):
    with pytest.raises(ValueError, match=name):
        staleness(*args)


@FAST
@given(lr=lrs, tau=taus)
def test_lr_policies(lr, tau):
    assert constant_lr(lr, tau) == lr == scaled_lr(lr, tau, "constant")
    assert staleness_lr(lr, tau) == pytest.approx(lr / max(1, tau)) == scaled_lr(lr, tau, "staleness")
    assert staleness_lr(lr, tau) <= lr
    assert staleness_lr(lr, tau + 1) <= staleness_lr(lr, tau)  # staler never counts more
    assert staleness_lr(lr, tau) * max(1, tau) == pytest.approx(lr)


def test_fresh_updates_get_the_full_lr():
    assert staleness_lr(0.1, 0) == staleness_lr(0.1, 1) == 0.1


def test_resolve_lr_policy():
    assert resolve_lr_policy("staleness") is staleness_lr and set(LR_POLICIES) == {
        "constant",
        "staleness",
        "zhang",
    }

    def mine(lr, tau):
        return lr / (1 + tau) ** 0.5

    assert resolve_lr_policy(mine) is mine
    assert scaled_lr(0.4, 3, mine) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="lr_policy"):
        resolve_lr_policy("cosine")


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "fast", None])
def test_a_policy_returning_nonsense_is_caught(bad):
    with pytest.raises(ValueError, match="lr_policy"):
        scaled_lr(0.1, 2, lambda lr, tau: bad)


@pytest.mark.parametrize(
    "lr, sigma, name", [(0.0, 1, "lr"), (-1.0, 1, "lr"), (0.1, -1, "sigma"), (0.1, 1.5, "sigma")]
)
def test_scaled_lr_rejects_bad_arguments(lr, sigma, name):
    with pytest.raises(ValueError, match=name):
        scaled_lr(lr, sigma)


# -- apply_updates --------------------------------------------------------------------------


@FAST
@given(seed=st.integers(0, 2**31 - 1), s=st.integers(1, 6), lr=lrs)
def test_mean_of_updates_with_one_lr_is_an_sgd_step_on_the_averaged_gradient(seed, s, lr):
    params = random_params(seed)
    updates = [random_params(seed + 1 + n) for n in range(s)]
    mean = [torch.stack([u[i] for u in updates]).mean(0) for i in range(len(params))]
    expected = torch_sgd_step(params, mean, lr)
    got = [p.clone() for p in params]
    apply_updates(got, updates, [lr] * s)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    lam=st.lists(lrs, min_size=1, max_size=5),
    reduce=st.sampled_from(["mean", "sum"]),
)
def test_each_update_gets_its_own_lambda(seed, lam, reduce):
    """W - (1/S) sum lambda_n dW_n equals S torch SGD steps of lr lambda_n / S (sum: lambda_n)."""
    params = random_params(seed)
    updates = [random_params(seed + 1 + n) for n in range(len(lam))]
    expected = params
    for u, l in zip(updates, lam):
        expected = torch_sgd_step(expected, u, l / len(lam) if reduce == "mean" else l)
    got = [p.clone() for p in params]
    apply_updates(got, updates, lam, reduce=reduce)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_apply_updates_rejects_bad_arguments():
    params = random_params(0)
    with pytest.raises(ValueError, match="reduce"):
        apply_updates(params, [params], [0.1], reduce="median")
    with pytest.raises(ValueError, match="equal length"):
        apply_updates(params, [params, params], [0.1])
    with pytest.raises(ValueError, match="non-empty"):
        apply_updates(params, [], [])
    with pytest.raises(ValueError, match="shape"):
        apply_updates(params, [random_params(1, shapes=((4, 3), (4,), (2, 2, 3)))], [0.1])


# -- soft synchronization -------------------------------------------------------------------


@FAST
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 5), rounds=st.integers(1, 4), lr=lrs)
def test_softsync_with_S_equal_N_is_synchronous_averaging(seed, n, rounds, lr):
    server = SoftSync(n, softsync=n, lr=lr)
    W = random_params(seed)
    expected = [w.clone() for w in W]
    for r in range(rounds):
        grads = [random_params(seed + 100 * r + w) for w in range(n)]
        mean = [torch.stack([g[i] for g in grads]).mean(0) for i in range(len(W))]
        expected = torch_sgd_step(expected, mean, lr)
        results = [server.receive(W, g, pulled_version=r) for g in grads]
        assert results[:-1] == [None] * (n - 1) and results[-1] == [0] * n
        assert server.version == r + 1 and server.pending == 0
    for a, b in zip(W, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@FAST
@given(seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 6), lr=lrs)
def test_softsync_with_S_equal_1_is_sequential_sgd(seed, steps, lr):
    server = SoftSync(3, softsync=1, lr=lr)
    W = random_params(seed)
    expected = [w.clone() for w in W]
    for t in range(steps):
        g = random_params(seed + t + 1)
        expected = torch_sgd_step(expected, g, lr)
        assert server.receive(W, g, pulled_version=t) == [0]
    for a, b in zip(W, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 6),
    data=st.data(),
    lr=lrs,
    policy=st.sampled_from(["constant", "staleness"]),
)
def test_softsync_reports_staleness_and_scales_each_update(seed, n, data, lr, policy):
    s = data.draw(st.integers(1, n))
    server = SoftSync(n, softsync=s, lr=lr, lr_policy=policy)
    W = random_params(seed)
    # S updates pulled at versions at most the current one; the server applies them at once
    server.version = data.draw(st.integers(0, 5))
    pulled = data.draw(st.lists(st.integers(0, server.version), min_size=s, max_size=s))
    grads = [random_params(seed + 1 + i) for i in range(s)]
    expected = [w.clone() for w in W]
    apply_updates(expected, grads, [LR_POLICIES[policy](lr, server.version - p) for p in pulled])
    out = [server.receive(W, g, p) for g, p in zip(grads, pulled)]
    assert out[-1] == [server.version - 1 - p for p in pulled]
    for a, b in zip(W, expected):
        assert torch.equal(a, b)


def test_softsync_counts_staleness_in_versions_only_and_flushes():
    """One staleness for every rule: tau is versions, there is no other clock to pass."""
    server = SoftSync(4, softsync=3, lr=0.5)
    server.version = 4
    W = [torch.zeros(2)]
    assert server.receive(W, [torch.ones(2)], pulled_version=0) is None
    assert server.pending == 1 and server.flush(W) == [4]
    torch.testing.assert_close(W[0], torch.full((2,), -0.5))
    assert server.version == 5 and server.pending == 0 and server.flush(W) is None
    assert "softsync=3" in repr(server) and "version=5" in repr(server)
    with pytest.raises(TypeError):
        server.receive(W, [torch.ones(2)], pulled_version=0, clock=4)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_workers=0), "num_workers"),
        (dict(num_workers=3, softsync=4), "softsync"),
        (dict(num_workers=3, softsync=0), "softsync"),
        (dict(num_workers=3, lr=0.0), "lr"),
        (dict(num_workers=3, lr_policy="cosine"), "lr_policy"),
        (dict(num_workers=3, reduce="max"), "reduce"),
    ],
)
def test_softsync_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SoftSync(**kwargs)


# -- bounded staleness ----------------------------------------------------------------------


@FAST
@given(n=st.integers(1, 6), bound=st.integers(0, 4), choices=st.lists(st.integers(0, 10**6), max_size=60))
def test_the_ssp_gate_keeps_workers_within_the_bound(n, bound, choices):
    """Any order in which allowed workers run: nobody gets more than bound+1 steps ahead,
    the slowest is never blocked, and a worker's read is at most ``bound`` clocks stale."""
    gate = BoundedStaleness(n, bound)
    for c in choices:
        allowed = [w for w in range(n) if gate.may_start(w)]
        assert gate.clocks.index(gate.clock) in allowed  # the slowest may always go
        w = allowed[c % len(allowed)]
        pulled = gate.clock  # what the worker reads when it starts this step
        assert gate.clocks[w] - pulled <= bound
        gate.finish(w)
        assert max(gate.clocks) - min(gate.clocks) <= bound + 1
        for v in range(n):
            assert gate.may_start(v) == (gate.clocks[v] - gate.clock <= bound)


@given(n=st.integers(1, 6), steps=st.lists(st.integers(0, 5), max_size=30))
def test_no_bound_never_blocks(n, steps):
    gate = BoundedStaleness(n, None)
    for s in steps:
        gate.finish(s % n)
        assert all(gate.may_start(w) for w in range(n))


def test_bounded_staleness_rejects_bad_arguments():
    with pytest.raises(ValueError, match="staleness_bound"):
        BoundedStaleness(3, -1)
    with pytest.raises(ValueError, match="num_workers"):
        BoundedStaleness(0, 1)
    gate = BoundedStaleness(3, 1)
    with pytest.raises(ValueError, match="worker"):
        gate.may_start(3)
    with pytest.raises(ValueError, match="worker"):
        gate.finish(-1)
    assert "bound=1" in repr(gate) and "clocks=[0, 0, 0]" in repr(gate)


def test_a_retired_worker_holds_nobody_back():
    """A lost worker (the real server retires it) no longer sets the clock or blocks the others."""
    gate = BoundedStaleness(3, 0)
    gate.finish(0)
    gate.finish(2)
    assert gate.clock == 0 and not gate.may_start(0) and not gate.may_start(2)
    gate.retire(1)
    assert gate.clock == 1 and gate.may_start(0) and gate.may_start(2)
    assert "retired=[1]" in repr(gate)
    with pytest.raises(ValueError, match="worker"):
        gate.retire(3)


# -- the summary ------------------------------------------------------------------------------


@FAST
@given(st.lists(st.integers(0, 50), min_size=1, max_size=200))
def test_staleness_summary(values):
    s = staleness_summary(values)
    assert s["max"] == max(values)
    assert math.isclose(s["mean"], statistics.fmean(values))
    assert s["histogram"] == {str(k): v for k, v in sorted(Counter(values).items())}
    assert list(s["histogram"]) == [str(k) for k in sorted(set(values))]


def test_lr_policy_name_is_how_results_write_a_policy():
    def my_rule(lr: float, tau: int) -> float:
        return lr

    half = functools.partial(lambda lr, tau, k: lr * k, k=0.5)  # no __name__: its repr
    assert lr_policy_name("staleness") == "staleness" and lr_policy_name(my_rule) == "my_rule"
    assert lr_policy_name(half) == repr(half)
    assert "lr_policy=my_rule" in repr(SoftSync(2, lr_policy=my_rule))
    with pytest.raises(ValueError, match="lr_policy"):
        lr_policy_name(0.1)


def test_staleness_summary_of_nothing():
    assert staleness_summary([]) == {"max": 0, "mean": 0.0, "histogram": {}}


@pytest.mark.parametrize("sigmas", [[0, -1], [1, 2.5], [True], [0, float("nan")], [float("inf")]])
def test_staleness_summary_rejects_what_is_not_a_staleness(sigmas):
    with pytest.raises(ValueError, match="sigmas"):
        staleness_summary(sigmas)


# ------------------------------------------------------------------ the seams: a student's rules


def _mean_step(params, updates, lrs):
    """Soft sync written as a student would: returns new tensors, leaves its inputs alone."""
    return [w - sum(lam * u[i] for u, lam in zip(updates, lrs)) / len(updates) for i, w in enumerate(params)]


@FAST
@given(st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**16), st.data())
def test_plugged_rules_equal_to_the_library_s_give_the_same_run(num_workers, S, seed, data):
    S = min(S, num_workers)
    g = torch.Generator().manual_seed(seed)
    w_lib, w_own = torch.randn(3, 2, generator=g, dtype=torch.float64), None
    w_own = w_lib.clone()
    lib = SoftSync(num_workers, S, lr=0.3, lr_policy="staleness")
    own = SoftSync(
        num_workers, S, lr=0.3, lr_policy="staleness", staleness_fn=staleness, aggregate=_mean_step
    )
    for _ in range(data.draw(st.integers(1, 12))):
        pulled = data.draw(st.integers(0, lib.version))
        grad = torch.randn(3, 2, generator=g, dtype=torch.float64)
        assert lib.receive([w_lib], [grad], pulled) == own.receive([w_own], [grad], pulled)
    assert lib.flush([w_lib]) == own.flush([w_own])
    torch.testing.assert_close(w_own, w_lib, rtol=1e-12, atol=1e-12)
    assert "staleness_fn=staleness, aggregate=_mean_step" in repr(own)


def test_a_plugged_staleness_rule_is_what_the_server_counts():
    off_by_one = SoftSync(2, 1, staleness_fn=lambda v, p: v - p + 1)
    w = [torch.zeros(2)]
    assert off_by_one.receive(w, [torch.ones(2)], 0) == [1]  # the library would say 0
    with pytest.raises(ValueError, match=r"staleness_fn must return a whole number.*-1"):
        SoftSync(2, 1, staleness_fn=lambda v, p: p - v - 1).receive(w, [torch.ones(2)], 0)
    with pytest.raises(ValueError, match=r"staleness_fn must return a whole number.*0\.5"):
        SoftSync(2, 1, staleness_fn=lambda v, p: 0.5).receive(w, [torch.ones(2)], 0)


def test_a_plugged_aggregate_gets_copies_and_its_answer_is_checked():
    def vandal(params, updates, lrs):
        params[0].fill_(99.0)  # the server's W must not change behind its back
        updates[0][0].fill_(99.0)
        return [torch.full_like(params[0], 7.0)]

    w, grad = [torch.zeros(2)], torch.ones(2)
    SoftSync(1, 1, aggregate=vandal).receive(w, [grad], 0)
    assert w[0].tolist() == [7.0, 7.0] and grad.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"aggregate must return a list of 1 tensors, got Tensor"):
        SoftSync(1, 1, aggregate=lambda p, u, lrs: p[0]).receive(w, [grad], 0)
    with pytest.raises(ValueError, match=r"aggregate must return parameter 0 of shape \(2,\), got \(3,\)"):
        SoftSync(1, 1, aggregate=lambda p, u, lrs: [torch.zeros(3)]).receive(w, [grad], 0)
    with pytest.raises(ValueError, match=r"aggregate must be None or a function f\(params, updates, lrs\)"):
        SoftSync(1, 1, aggregate="mean")
    with pytest.raises(ValueError, match=r"reduce must be 'mean' with an aggregate"):
        SoftSync(1, 1, aggregate=_mean_step, reduce="sum")


@FAST
@given(st.lists(st.integers(0, 9), min_size=1, max_size=6), st.sampled_from([None, 0, 1, 3]), st.data())
def test_a_plugged_gate_equal_to_the_library_s_decides_the_same(clocks, bound, data):
    asked = []

    def gate(cs, worker, b):
        asked.append((list(cs), worker, b))
        return b is None or cs[worker] - min(cs) <= b

    lib, own = BoundedStaleness(len(clocks), bound), BoundedStaleness(len(clocks), bound, gate)
    lib.clocks, own.clocks = list(clocks), list(clocks)
    retired = data.draw(st.sets(st.integers(0, len(clocks) - 1), max_size=len(clocks) - 1))
    for w in retired:
        lib.retire(w), own.retire(w)
    for w in range(len(clocks)):
        if w not in retired:
            assert lib.may_start(w) == own.may_start(w)
    # the gate is asked with the clocks of the workers still in the run
    assert all(len(cs) == len(clocks) - len(retired) for cs, _, _ in asked)


def test_a_plugged_gate_must_answer_a_bool():
    gate = BoundedStaleness(2, 1, gate=lambda clocks, worker, bound: 1)
    with pytest.raises(ValueError, match=r"gate must return a bool, got 1"):
        gate.may_start(0)
    with pytest.raises(ValueError, match=r"gate must be None or a function f\(clocks, worker, bound\)"):
        BoundedStaleness(2, 1, gate=True)


# ------------------------------------------------------------------ Zhang et al.'s own count


@FAST
@given(lr=lrs, sigma=taus)
def test_zhang_lr_is_lambda_over_their_staleness_and_ours_differs_only_by_the_floor(lr, sigma):
    """Zhang et al. count the update itself (tau_Z = sigma + 1); ours divides by max(1, sigma)."""
    assert zhang_lr(lr, sigma) == pytest.approx(lr / (sigma + 1)) == scaled_lr(lr, sigma, "zhang")
    assert zhang_lr(lr, sigma) <= staleness_lr(lr, sigma)  # theirs is never the larger step
    if sigma >= 1:
        assert staleness_lr(lr, sigma) / zhang_lr(lr, sigma) == pytest.approx((sigma + 1) / sigma)


# ------------------------------------------------------------------ the staleness gate (sigma_max)


def test_within_staleness_counts_the_worst_order_of_what_is_in_flight():
    assert within_staleness(5, [], 0)  # nothing in flight: a worker may always go (no deadlock)
    assert not within_staleness(5, [5], 0)  # one in flight: the new update could see it applied
    assert within_staleness(5, [5], 1)
    # pulled at 3, now 5: it is 2 behind, and 2 more in flight (one of them new) could land first
    assert not within_staleness(5, [3, 5], 3) and within_staleness(5, [3, 5], 4)
    assert within_staleness(5, [0, 1], None)  # None never blocks


@pytest.mark.parametrize(
    "args, name", [((-1, [], 0), "version"), ((1, [], -1), "max_staleness"), ((1, [], 1.5), "max_staleness")]
)
def test_within_staleness_rejects_bad_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        within_staleness(*args)


def test_staleness_gate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_staleness"):
        StalenessGate(2, -1)
    gate = StalenessGate(2, 3)
    with pytest.raises(ValueError, match="worker"):
        gate.may_start(2, 0)
    gate.start(0, 0)
    with pytest.raises(ValueError, match="already has an update in flight"):
        gate.may_start(0, 0)
    assert "in_flight={0: 0}" in repr(gate)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 6),
    sigma_max=st.integers(0, 8),
    actions=st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=1, max_size=200),
)
def test_no_update_applied_under_the_gate_exceeds_sigma_max(n, sigma_max, actions):
    """Any order of pulls and applies (a server with S = 1): every applied update's staleness
    is <= sigma_max, and whenever nothing is in flight the gate lets a worker go."""
    gate = StalenessGate(n, sigma_max)
    version, pulled, applied = 0, {}, []
    for start, pick in actions:
        idle = [w for w in range(n) if w not in pulled]
        busy = sorted(pulled)
        if start and idle:
            w = idle[pick % len(idle)]
            if not pulled:
                assert gate.may_start(w, version)  # never a deadlock
            if gate.may_start(w, version):
                gate.start(w, version)
                pulled[w] = version
        elif busy:
            w = busy[pick % len(busy)]
            applied.append(version - pulled.pop(w))
            version += 1
            gate.finish(w)
    assert all(s <= sigma_max for s in applied), (applied, sigma_max)


def test_without_the_gate_the_same_orders_exceed_sigma_max():
    """The control: the worst order (oldest update applied last) exceeds sigma_max ungated."""
    sigma_max, version, pulled, applied = 1, 0, {}, []
    for w in range(3):  # three workers pull version 0 (the gate would hold the second back)
        pulled[w] = version
    assert not within_staleness(version, [0, 0], sigma_max)
    for w in (1, 2, 0):  # worker 0's update lands last
        applied.append(version - pulled.pop(w))
        version += 1
    assert max(applied) == 2 > sigma_max
