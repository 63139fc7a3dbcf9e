"""ZeRO stages 1, 2, 3 (dlcourse.sharding): equal to single-process training, DDP and FSDP2;
bytes held equal the formula; bytes sent equal the formula; the ZeRO-1 seam; bad input."""

from __future__ import annotations

import functools
import json

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dlcourse.averaging import parameter_distance, train_reference
from dlcourse.cli import main
from dlcourse.collectives import ring_all_gather, ring_allreduce_bytes, ring_reduce_scatter
from dlcourse.data_parallel import ddp_worker
from dlcourse.launcher import WorkerError, launch
from dlcourse.memory import bytes_per_parameter
from dlcourse.sharding import (
    ShardedModel,
    check_shards,
    fsdp2_worker,
    predicted_bytes,
    predicted_state_bytes,
    shard_layout,
    step_bytes,
    train_zero,
    unit_sizes,
    zero_worker,
)
from dlcourse.worker_run import DataParallelConfig, collect

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny in-process references

LR = {"sgd": 0.1, "momentum": 0.1, "adam": 1e-3}
STEPS = 3
KINDS = ("parameters", "gradients", "optimizer")


def _config(optimizer: str, dtype: str = "float64", **kw) -> DataParallelConfig:
    return DataParallelConfig(
        model="mlp", batch_size=12, lr=LR[optimizer], optimizer=optimizer, dtype=dtype, max_steps=STEPS, **kw
    )


def _zero(stage: int, **kw):
    return functools.partial(zero_worker, stage=stage, **kw)


def _many(rank, world_size, train, test, runs):
    """Every run in turn, each with the bytes this rank's ``isend`` calls carried ("wire"):
    our ring collectives send everything through isend, so that is what ZeRO put on the wire."""
    sent, real = [0], dist.isend

    def counting(tensor, *args, **kwargs):
        sent[0] += tensor.numel() * tensor.element_size()
        return real(tensor, *args, **kwargs)

    dist.isend = counting
    out = []
    try:
        for worker, config in runs:
            sent[0] = 0
            out.append({**worker(rank, world_size, train, test, config, None), "wire": sent[0]})
    finally:
        dist.isend = real
    try:  # a one-element model over N ranks: a shard would hold padding only
        ShardedModel(nn.Linear(1, 1, bias=False), 1, "adam")
        refused = None
    except ValueError as e:
        refused = str(e)
    return out, refused


def _launch(num_workers: int, train, runs: dict) -> tuple[dict, dict, list]:
    """``runs`` on N processes (one launch): results and bytes on the wire by name, refusals by rank."""
    outputs = launch(_many, num_workers, train, None, list(runs.values()), run_timeout=240)
    results = {name: collect(name, [o[0][i] for o in outputs]) for i, name in enumerate(runs)}
    wire = {name: sum(o[0][i]["wire"] for o in outputs) for i, name in enumerate(runs)}
    return results, wire, [o[1] for o in outputs]


def all_reduce_then_slice(flat_params, flat_grads, shard_update, rank, world_size):
    """A student's ZeRO-1 step that all-reduces and slices instead of reduce-scattering."""
    shard = flat_params.numel() // world_size
    dist.all_reduce(flat_grads)
    mine = flat_params[rank * shard : (rank + 1) * shard]
    shard_update(mine, flat_grads[rank * shard : (rank + 1) * shard] / world_size)
    flat_params.copy_(ring_all_gather(mine))


@pytest.fixture(scope="module")
def train(mnist):
    return mnist.train[:120]  # 10 steps of a global batch of 12 at most; N = 1..4 all divide 12


@pytest.fixture(scope="module")
def two(train):
    """N = 2, float64: every stage and optimizer, DDP and FSDP2 beside them, and a student's
    own ZeRO-1 step (one launch)."""
    runs = {}
    for opt in LR:
        for stage in (1, 2, 3):
            runs[f"zero-{stage}-{opt}"] = (_zero(stage), _config(opt))
        runs[f"ddp-{opt}"] = (ddp_worker, _config(opt))
        runs[f"fsdp2-{opt}"] = (fsdp2_worker, _config(opt))
    runs["student-1-adam"] = (_zero(1, step_fn=all_reduce_then_slice), _config("adam"))
    return 2, *_launch(2, train, runs)


@pytest.fixture(scope="module", params=[1, 3, 4])
def other(request, train):
    """N = 1 and 3 (float64, Adam; 3 pads every unit) and 4 (float32, momentum), with FSDP2."""
    n = request.param
    opt, dtype = ("momentum", "float32") if n == 4 else ("adam", "float64")
    runs = {f"zero-{stage}-{opt}": (_zero(stage), _config(opt, dtype)) for stage in (1, 2, 3)}
    runs[f"fsdp2-{opt}"] = (fsdp2_worker, _config(opt, dtype))
    if n == 4:
        runs[f"ddp-{opt}"] = (ddp_worker, _config(opt, dtype))
    return n, *_launch(n, train, runs)


def _check_equivalence(n, runs, train):
    for name, result in runs.items():
        kind, *_, opt = name.split("-")
        dtype = runs[name].parameters["1.weight"].dtype
        tol = 1e-12 if dtype == torch.float64 else 1e-6
        reference = train_reference(train, n, _config(opt, str(dtype).split(".")[-1]))
        assert result.updates == STEPS, name
        assert parameter_distance(result.parameters, reference.parameters) <= tol, name
        assert result.step_loss == pytest.approx(reference.step_loss, abs=tol), name
        if kind in ("zero", "student"):  # PyTorch's own sharded data parallelism is the second oracle
            fsdp = runs[f"fsdp2-{opt}"]
            assert parameter_distance(result.parameters, fsdp.parameters) <= tol, name


def _check_memory(n, runs):
    for name, result in runs.items():
        if not name.startswith(("zero", "student")):
            continue
        extra = result.extra
        stage, opt = extra["stage"], name.split("-")[-1]
        element_size = result.parameters["1.weight"].element_size()
        sizes = unit_sizes(
            nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)), stage
        )
        predicted = predicted_bytes(sizes, n, stage, opt, element_size).as_dict()
        assert extra["predicted"] == predicted
        assert len(extra["memory"]) == n
        for rank, held in enumerate(extra["memory"]):
            assert {k: held[k] for k in KINDS} == {k: predicted[k] for k in KINDS}, (name, rank)
            # the paper's bytes per parameter, times the padded elements: the same total
            state = held["parameters"] + held["gradients"] + held["optimizer"]
            assert state == predicted_state_bytes(sizes, n, stage, opt, element_size)
            # within a step a rank also holds a layer's gathered weights or full gradient
            assert extra["peak_state"][rank] >= state
        assert (
            result.bytes_sent
            == STEPS * extra["step_bytes"]
            == STEPS * step_bytes(sizes, n, stage, element_size)
        )


@pytest.mark.multiprocess
def test_zero_equals_single_process_ddp_and_fsdp2_at_two_workers(two, train):
    """float64, SGD, momentum and Adam: stages 1-3 equal the global batch, DDP and FSDP2 to 1e-12."""
    n, runs, wire, refused = two
    _check_equivalence(n, runs, train)
    for opt in LR:
        assert parameter_distance(runs[f"zero-3-{opt}"].parameters, runs[f"ddp-{opt}"].parameters) <= 1e-12


@pytest.mark.multiprocess
@pytest.mark.slow
def test_zero_equals_single_process_and_fsdp2_at_one_three_and_four_workers(other, train):
    n, runs, wire, refused = other
    _check_equivalence(n, runs, train)
    if n == 4:  # float32
        assert parameter_distance(runs["zero-3-momentum"].parameters, runs["ddp-momentum"].parameters) <= 1e-6


@pytest.mark.multiprocess
def test_bytes_held_and_sent_equal_the_formulas_at_two_workers(two):
    n, runs, wire, refused = two
    _check_memory(n, runs)
    # the memory each stage saves, as the paper orders it
    held = {s: sum(runs[f"zero-{s}-adam"].extra["memory"][0][k] for k in KINDS) for s in (1, 2, 3)}
    assert held[1] > held[2] > held[3]
    # ZeRO-1 and 2 send what DDP's all-reduce sends; ZeRO-3 half as much again
    ddp_per_step = (runs["ddp-adam"].bytes_sent - (n - 1) * 50890 * 8) / STEPS  # DDP also counts a broadcast
    assert runs["zero-1-adam"].bytes_sent / STEPS == ddp_per_step == runs["zero-2-adam"].bytes_sent / STEPS
    assert runs["zero-3-adam"].bytes_sent == 1.5 * runs["zero-1-adam"].bytes_sent


@pytest.mark.multiprocess
@pytest.mark.slow
def test_bytes_held_equal_the_formula_with_padding(other):
    n, runs, wire, refused = other
    _check_memory(n, runs)


# ------------------------------------------------------------------- bytes on the wire


def _check_wire(n, runs, wire):
    for name, result in runs.items():
        if not name.startswith("zero"):
            continue
        stage = result.extra["stage"]
        element_size = result.parameters["1.weight"].element_size()
        sizes = unit_sizes(nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)), stage)
        padded_bytes = element_size * sum(shard_layout(s, n)[1] for s in sizes)
        final = (n - 1) * padded_bytes if stage == 3 else 0  # stage 3 gathers once more to evaluate
        assert wire[name] == STEPS * step_bytes(sizes, n, stage, element_size) + final, name


@pytest.mark.multiprocess
def test_bytes_on_the_wire_equal_step_bytes_at_two_workers(two):
    """Every byte our ring collectives sent, counted at isend on each rank."""
    n, runs, wire, refused = two
    _check_wire(n, runs, wire)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_bytes_on_the_wire_equal_step_bytes_with_padding(other):
    n, runs, wire, refused = other
    _check_wire(n, runs, wire)


# ------------------------------------------------------------------- memory: any sizes and N


def _memory_probe(rank, world_size, shapes, stage_list):
    """Measured bytes of a ShardedModel (Adam, one step) for MLPs of the given shapes."""
    out = []
    for (a, b, c), stage in zip(shapes, stage_list):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c))
        sharded = ShardedModel(model, stage, "adam", lr=1e-3)
        for _ in range(2):
            sharded.step(model(torch.randn(3, a)).square().mean())
        out.append((unit_sizes(model, stage), sharded.held.as_dict()))
    return out


@pytest.mark.multiprocess
@pytest.mark.slow
@settings(max_examples=2, deadline=None)
@given(
    n=st.integers(2, 4),
    shapes=st.lists(st.tuples(*[st.integers(3, 40)] * 3), min_size=3, max_size=3),
    stages=st.lists(st.sampled_from([1, 2, 3]), min_size=3, max_size=3),
)
def test_measured_bytes_equal_the_formula_for_any_sizes(n, shapes, stages):
    outputs = launch(_memory_probe, n, shapes, stages, run_timeout=120)
    for rank, per_rank in enumerate(outputs):
        for (sizes, held), stage in zip(per_rank, stages):
            predicted = predicted_bytes(sizes, n, stage, "adam", 4)
            assert {k: held[k] for k in KINDS} == {k: getattr(predicted, k) for k in KINDS}, (rank, stage)


# ------------------------------------------------------------------- formulas (no processes)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 10_000), min_size=1, max_size=5),
    n=st.integers(1, 8),
    stage=st.sampled_from([1, 2, 3]),
    opt=st.sampled_from(list(LR)),
    element_size=st.sampled_from([4, 8]),
)
def test_predicted_bytes_are_the_papers_bytes_per_parameter(sizes, n, stage, opt, element_size):
    predicted = predicted_bytes(sizes, n, stage, opt, element_size)
    assert predicted.state == predicted_state_bytes(sizes, n, stage, opt, element_size)
    precision = {4: "fp32", 8: "fp64"}[element_size]
    if all(s % n == 0 for s in sizes):  # no padding: exactly the paper's per-parameter count
        expected = bytes_per_parameter(stage, n, optimizer=opt, precision=precision) * sum(sizes)
        assert predicted.state == pytest.approx(expected, rel=1e-12)
    if n == 1:  # one rank holds everything, as plain data parallelism does
        plain = bytes_per_parameter(0, 1, optimizer=opt, precision=precision) * sum(sizes)
        assert predicted.state == plain
    lower = [predicted_bytes(sizes, n, s, opt, element_size).state for s in (1, 2, 3)]
    assert lower == sorted(lower, reverse=True)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 10_000), min_size=1, max_size=5), n=st.integers(1, 8))
def test_step_bytes_are_ddps_all_reduce_and_half_again_at_stage_3(sizes, n):
    padded_bytes = 4 * sum(shard_layout(s, n)[1] for s in sizes)
    assert step_bytes(sizes, n, 1) == step_bytes(sizes, n, 2) == ring_allreduce_bytes(padded_bytes, n)
    assert step_bytes(sizes, n, 3) == 1.5 * step_bytes(sizes, n, 1)


@given(numel=st.integers(1, 10_000), n=st.integers(1, 16))
def test_shard_layout_covers_the_vector_with_equal_chunks(numel, n):
    shard, padded = shard_layout(numel, n)
    assert padded == n * shard and numel <= padded < numel + n


# ------------------------------------------------------------------- the ZeRO-1 seam


@pytest.mark.multiprocess
def test_a_students_zero1_step_plugs_in_and_a_model_too_small_for_n_is_refused(two, train):
    """All-reduce-then-slice (defined in a module, as a notebook cell defines one) gives the
    parameters of the built-in reduce-scatter step; with Adam a shard of padding only is refused."""
    n, runs, wire, refused = two
    student, default = runs["student-1-adam"], runs["zero-1-adam"]
    assert parameter_distance(student.parameters, default.parameters) <= 1e-12
    assert wire["student-1-adam"] < wire["zero-1-adam"]  # its all-reduce is gloo's, not our ring
    assert all(f"num_workers={n} is too many for a unit of 1 parameters" in r for r in refused)


@pytest.mark.multiprocess
def test_a_seam_that_steps_a_copy_fails_with_a_clear_error(train):
    def steps_a_copy(flat_params, flat_grads, shard_update, rank, world_size):
        shard = flat_params.numel() // world_size
        grad = ring_reduce_scatter(flat_grads) / world_size
        shard_update(flat_params[rank * shard : (rank + 1) * shard].clone(), grad)

    with pytest.raises(WorkerError, match="param_shard must be flat_params"):
        train_zero(train, 2, _config("sgd"), stage=1, step_fn=steps_a_copy, run_timeout=120)


# ------------------------------------------------------------------- bad input, command line


def test_bad_input_is_refused_with_the_argument_named(train):
    config = _config("adam")
    for stage, allowed in [(0, ">= 1"), (4, "<= 3"), ("1", "an integer"), (1.0, "an integer")]:
        with pytest.raises(ValueError, match=f"stage must be {allowed}, got {stage!r}"):
            train_zero(train, 2, config, stage=stage)
    with pytest.raises(ValueError, match="step_fn must be a function and needs stage=1"):
        train_zero(train, 2, config, stage=2, step_fn=lambda *a: None)
    with pytest.raises(ValueError, match="step_fn"):
        train_zero(train, 2, config, stage=1, step_fn="zero1")
    with pytest.raises(ValueError, match="checkpoint_dir and resume are not supported"):
        train_zero(train, 2, _config("adam", checkpoint_dir="/tmp/x"), stage=1)
    with pytest.raises(ValueError, match="divisible by num_workers"):
        train_zero(train, 5, config, stage=1)
    with pytest.raises(ValueError, match="num_workers=4 is too many for a unit of 5 parameters"):
        check_shards([100, 5], 4, "adam")
    check_shards([5], 4, "sgd")  # an all-padding shard costs SGD nothing
    check_shards([5], 3, "adam")  # shards of 2, 2, 1: every rank owns a parameter
    with pytest.raises(ValueError, match="optimizer must be one of"):
        predicted_bytes([10], 2, 1, "rmsprop")
    with pytest.raises(ValueError, match="world_size|num_workers"):
        shard_layout(10, 0)
    with pytest.raises(ValueError, match="element_size must be one of 4, 8"):
        predicted_state_bytes([10], 2, 1, "adam", 2)
    with pytest.raises(RuntimeError, match="no process group"):
        ShardedModel(nn.Linear(4, 4), 1)


@pytest.mark.multiprocess
def test_cli_prints_bytes_per_rank_next_to_the_formula(tmp_path, capsys, no_orphans):
    out = tmp_path / "zero.json"
    argv = ["train", "--strategy", "zero", "--zero-stage", "3", "--model", "mlp", "--workers", "2"]
    assert main([*argv, "--epochs", "1", "--batch-size", "400", "--no-progress", "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["strategy"] == "zero-3" and metrics["zero_stage"] == 3 and metrics["updates"] == 10
    for held in metrics["memory"]:
        assert {k: held[k] for k in KINDS} == {k: metrics["memory_predicted"][k] for k in KINDS}
    assert metrics["bytes_sent"] == metrics["updates"] * metrics["step_bytes"]
    text = capsys.readouterr().out
    assert "bytes per rank" in text and f"{metrics['memory_predicted']['parameters']:,}" in text
    with pytest.raises(SystemExit) as info:
        main([*argv[:4], "--zero-stage", "4"])
    assert info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ------------------------------------------------------------------- NCCL


@pytest.mark.gpu
def test_zero_on_nccl_equals_single_process_training(train):
    """World size 1 per GPU (NCCL allows one rank per device); float64, every stage."""
    config = _config("adam")
    reference = train_reference(train, 1, config)
    for stage in (1, 2, 3):
        result = train_zero(train, 1, config, stage=stage, backend="nccl", run_timeout=240)
        assert parameter_distance(result.parameters, reference.parameters) <= 1e-10
        held = result.extra["memory"][0]
        assert {k: held[k] for k in KINDS} == {k: result.extra["predicted"][k] for k in KINDS}
