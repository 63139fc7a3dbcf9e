"""Pipelining: our GPipe equals torch.distributed.pipelining and gradient accumulation; the bubble."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse.cli import main
from dlcourse.data import Dataset
from dlcourse.launcher import launch
from dlcourse.models import make_model
from dlcourse.pipeline import (
    Interval,
    PipelineConfig,
    PipelineTimeline,
    check_microbatches,
    gpipe_bubble,
    gpipe_worker,
    measure_bubble,
    run_pipeline,
    schedule_order,
    schedule_steps,
    simulate_schedule,
    stage_orders,
    train_pipeline_worker,
)
from dlcourse.train import fit


def _batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


# ----------------------------------------------------------------------------- simulated schedules


@given(K=st.integers(1, 6), M=st.integers(1, 16), schedule=st.sampled_from(["gpipe", "1f1b"]))
def test_every_stage_runs_each_forward_and_backward_once_forward_first(K, M, schedule):
    for k in range(K):
        order = schedule_order(schedule, k, K, M)
        assert sorted(order) == sorted([("F", m) for m in range(M)] + [("B", m) for m in range(M)])
        assert all(order.index(("F", m)) < order.index(("B", m)) for m in range(M))


@given(
    K=st.integers(1, 6),
    M=st.integers(1, 16),
    schedule=st.sampled_from(["gpipe", "1f1b"]),
    forward_s=st.floats(0.01, 5.0),
    backward_s=st.floats(0.01, 5.0),
)
def test_simulated_bubble_is_the_formula_with_equal_stage_costs(K, M, schedule, forward_s, backward_s):
    timeline = simulate_schedule(K, M, schedule, forward_s, backward_s)
    assert timeline.makespan == pytest.approx((M + K - 1) * (forward_s + backward_s))
    assert timeline.bubble_fraction == pytest.approx(gpipe_bubble(K, M), abs=1e-9)
    assert timeline.expected_bubble == gpipe_bubble(K, M)


@given(K=st.integers(1, 6), M=st.integers(1, 16))
def test_1f1b_holds_fewer_activations_than_gpipe(K, M):
    assert simulate_schedule(K, M, "gpipe").peak_inflight == [M] * K
    assert simulate_schedule(K, M, "1f1b").peak_inflight == [min(K - k, M) for k in range(K)]


def test_timeline_measures_a_hand_made_chart():
    # stage 0 busy 0-1 and 3-4, stage 1 busy 1-3: makespan 4, busy 4 of 8 stage-seconds
    intervals = [Interval(0, 0, "F", 0, 1), Interval(1, 0, "F", 1, 2), Interval(1, 0, "B", 2, 3)]
    intervals.append(Interval(0, 0, "B", 3, 4))
    t = PipelineTimeline(2, 1, "hand", intervals)
    assert t.makespan == 4 and t.busy_s == [2, 2] and t.idle_s == [2, 2]
    assert t.bubble_fraction == 0.5 == t.expected_bubble
    assert "bubble=0.500" in repr(t)


# ----------------------------------------------------------------------------- real processes


def _all_schedules(rank, world_size, model, X, y, M):
    return {
        s: gpipe_worker(rank, world_size, model, X, y, M, s) for s in ("ours", "torch-gpipe", "torch-1f1b")
    }


@pytest.mark.multiprocess
@pytest.mark.parametrize("K, M", [(2, 4), (3, 4)])  # torch's 1F1B needs M >= K
def test_our_gpipe_equals_torch_pipelining_and_gradient_accumulation(K, M, no_orphans):
    model = make_model("cnn", seed=4)
    X, y = _batch(8, seed=5)
    parts = launch(_all_schedules, K, model, X, y, M, timeout=60)
    # the oracle: one process, the same micro-batches, gradients accumulated over loss / M
    reference = copy.deepcopy(model)
    losses = []
    for Xm, ym in zip(X.chunk(M), y.chunk(M)):
        loss = F.cross_entropy(reference(Xm), ym)
        (loss / M).backward()
        losses.append(loss.item())
    expected = {k: p.grad for k, p in reference.named_parameters()}
    for schedule in ("ours", "torch-gpipe", "torch-1f1b"):
        assert parts[-1][schedule]["losses"] == pytest.approx(losses, abs=1e-6), schedule
        grads = {k: g for part in parts for k, g in part[schedule]["grads"].items()}
        assert grads.keys() == expected.keys()
        for k, g in expected.items():
            torch.testing.assert_close(grads[k], g, atol=1e-6, rtol=0, msg=f"{schedule} {k}")
    # ours recorded one forward and one backward per micro-batch on every stage
    for k, part in enumerate(parts):
        kinds = sorted((i.kind, i.microbatch) for i in part["ours"]["intervals"])
        assert kinds == sorted([("F", m) for m in range(M)] + [("B", m) for m in range(M)])
        assert all(i.stage == k and i.end >= i.start for i in part["ours"]["intervals"])


@pytest.mark.multiprocess
def test_measured_bubble_matches_the_formula_with_equal_stage_costs(no_orphans):
    """Every forward and backward is padded to 0.1 s; the schedule's bubble is read on the
    virtual clock (``PipelineTimeline.replay``), so a loaded machine's delays cannot move it:
    it must be the formula. Those delays only ever add idle time, so the wall-clock bubble is
    at least that."""
    model = make_model("mlp", seed=0)
    X, y = _batch(16)
    timelines = measure_bubble(model, X, y, num_stages=2, microbatches=(1, 2, 4, 8), stage_cost_s=0.1)
    replayed = []
    for t, M in zip(timelines, (1, 2, 4, 8)):
        assert t.num_microbatches == M and not t.simulated
        r = t.replay()
        # padded steps take 0.1 s or a little more: a relative tolerance on the formula
        assert r.bubble_fraction == pytest.approx((2 - 1) / (M + 2 - 1), rel=0.2), (t, r)
        assert t.bubble_fraction >= r.bubble_fraction - 1e-9, (t, r)
        replayed.append(r.bubble_fraction)
    # the bubble shrinks as M grows, as the formula says
    assert replayed == sorted(replayed, reverse=True) and len(set(replayed)) == 4


def test_replay_gives_the_formula_for_a_simulated_schedule():
    """The replay used above, checked on the virtual clock's own GPipe timelines."""
    for K, M in ((2, 1), (2, 8), (3, 4), (4, 6)):
        t = simulate_schedule(K, M, "gpipe", 1.0, 2.0)
        assert t.replay().bubble_fraction == pytest.approx(gpipe_bubble(K, M), abs=1e-9)


@pytest.mark.multiprocess
def test_run_pipeline_returns_a_plottable_timeline(no_orphans):
    model = make_model("mlp", seed=0)
    X, y = _batch(8)
    result = run_pipeline(model, X, y, num_stages=2, num_microbatches=2)
    assert len(result.losses) == 2 and len(result.grads) == 4
    assert result.timeline.num_stages == 2 and len(result.timeline.intervals) == 8
    assert 0.0 <= result.timeline.bubble_fraction < 1.0
    assert "PipelineResult(ours" in repr(result)


@pytest.mark.multiprocess
def test_pipeline_training_equals_single_process_training(no_orphans):
    """Several GPipe steps with an optimizer equal fit() on the whole batch (same shuffles)."""
    model = make_model("mlp", seed=6)
    X, y = _batch(48, seed=7)
    settings = dict(epochs=2, batch_size=16, lr=0.05, optimizer="momentum", seed=8)
    parts = launch(train_pipeline_worker, 2, model, X, y, PipelineConfig(num_microbatches=4, **settings))
    reference = copy.deepcopy(model)
    history = fit(reference, Dataset(X, y), **settings, progress=False)  # the same settings, one process
    state = {k: v for part in parts for k, v in part["state"].items()}
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(state[k], v, atol=1e-5, rtol=0, msg=k)
    assert parts[-1]["step_loss"] == pytest.approx(history.step_loss, abs=1e-5)
    # 6 steps of 4 micro-batches: stage 0 sends (4, 64) float32 activations, stage 1 their gradients
    assert parts[0]["bytes_sent"] == parts[1]["bytes_sent"] == 6 * 4 * (4 * 64) * 4


# ----------------------------------------------------------------------------- CLI


@pytest.mark.multiprocess
@pytest.mark.parametrize("strategy", ["pipeline", "model-parallel"])
def test_cli_trains_and_writes_the_metrics(strategy, tmp_path, no_orphans):
    out = tmp_path / "run.json"
    argv = ["train", "--strategy", strategy, "--model", "mlp", "--stages", "2", "--microbatches", "4"]
    assert main([*argv, "--epochs", "1", "--no-progress", "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    for key in ("test_accuracy", "test_loss", "test_macro_f1", "examples_per_s", "wall_s", "updates"):
        assert key in metrics
    assert metrics["test_accuracy"] > 0.5  # one epoch of SGD on the MLP reaches about 0.8
    assert metrics["updates"] == 40 and metrics["bytes_sent"] > 0
    assert metrics["microbatches"] == (4 if strategy == "pipeline" else 1)
    assert set(metrics["staleness"]) == {"max", "mean", "histogram"}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--stages", "9"], "num_stages must be <= the model's 4 layers"),
        (["--batch-size", "10", "--microbatches", "4"], "divisible by num_microbatches=4"),
        (["--microbatches", "0"], "--microbatches"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(extra, message, capsys):
    with pytest.raises(SystemExit) as info:
        code = main(["train", "--strategy", "pipeline", "--model", "mlp", *extra])
        raise SystemExit(code)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- bad input


def test_bad_pipeline_input_names_the_argument():
    model = make_model("mlp")
    X, y = _batch(8)
    with pytest.raises(ValueError, match="num_microbatches must be >= 1, got 0"):
        run_pipeline(model, X, y, 2, 0)
    with pytest.raises(ValueError, match=r"batch size \(8\) must be divisible by num_microbatches=3"):
        run_pipeline(model, X, y, 2, 3)
    with pytest.raises(ValueError, match="num_stages must be <= the model's 4 layers, got 5"):
        run_pipeline(model, X, y, 5, 2)
    with pytest.raises(ValueError, match="schedule"):
        run_pipeline(model, X, y, 2, 2, schedule="zero-bubble")
    with pytest.raises(ValueError, match="stage_cost_s"):
        run_pipeline(model, X, y, 2, 2, stage_cost_s=-1.0)
    with pytest.raises(ValueError, match="microbatches must list"):
        measure_bubble(model, X, y, 2, ())
    with pytest.raises(ValueError, match="num_microbatches"):
        check_microbatches(8, -1)
    with pytest.raises(ValueError, match="schedule"):
        simulate_schedule(2, 2, "interleaved")
    with pytest.raises(ValueError, match="forward_s"):
        simulate_schedule(2, 2, forward_s=0.0)
    with pytest.raises(ValueError, match=r"batch size \(10\) must be divisible by num_microbatches=4"):
        PipelineConfig(batch_size=10, num_microbatches=4)
    with pytest.raises(ValueError, match="optimizer"):
        PipelineConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="momentum"):
        PipelineConfig(momentum=-0.1)


# ----------------------------------------------------------------------------- a whole schedule as steps


@given(K=st.integers(1, 5), M=st.integers(1, 8), schedule=st.sampled_from(["gpipe", "1f1b"]))
@settings(max_examples=40, deadline=None)
def test_schedule_steps_split_into_each_stages_order(K, M, schedule):
    """The steps of a whole schedule, split by stage, are exactly each stage's own order."""
    steps = schedule_steps(schedule, K, M)
    assert len(steps) == 2 * K * M
    assert stage_orders(steps, K, M) == [schedule_order(schedule, k, K, M) for k in range(K)]


@pytest.mark.parametrize(
    "steps, match",
    [
        ([(0, 0, "F"), (0, 0, "B")], "once for every micro-batch"),
        ([(0, 0, "B"), (0, 1, "F"), (0, 0, "F"), (0, 1, "B")], "forward before its backward"),
        ([(0, 0, "F"), (0, 0, "X"), (0, 1, "F"), (0, 1, "B")], "kind"),
        ([(2, 0, "F")], "stage"),
        (["F0"], "triples"),
    ],
)
def test_a_bad_schedule_is_refused_with_the_reason(steps, match):
    with pytest.raises(ValueError, match=match):
        stage_orders(steps, 1 if match != "stage" else 2, 2)


@pytest.mark.multiprocess
def test_run_pipeline_follows_a_given_schedule_and_out_of_order_is_caught(no_orphans):
    """1F1B as steps gives GPipe's gradients exactly; a stage that swaps two forwards does not."""
    model = make_model("mlp", seed=0)
    X, y = _batch(16)
    gpipe = run_pipeline(model, X, y, num_stages=2, num_microbatches=4)
    one_f_one_b = run_pipeline(model, X, y, 2, 4, schedule=schedule_steps("1f1b", 2, 4))
    swapped = schedule_steps("gpipe", 2, 4)
    first, second = [i for i, (stage, _, kind) in enumerate(swapped) if stage == 1 and kind == "F"][:2]
    swapped[first], swapped[second] = swapped[second], swapped[first]
    wrong = run_pipeline(model, X, y, 2, 4, schedule=swapped)
    for name, g in gpipe.grads.items():
        torch.testing.assert_close(one_f_one_b.grads[name], g, rtol=0, atol=0)
    assert max(float((wrong.grads[n] - g).abs().max()) for n, g in gpipe.grads.items()) > 1e-3
