"""Memory accounting: exact bytes of what a rank holds, autograd's saved tensors, the ZeRO formulas."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dlcourse.cli import main
from dlcourse.collectives import AlphaBeta
from dlcourse.memory import (
    Layout,
    MemoryBreakdown,
    SavedActivations,
    activation_bytes,
    activation_parts,
    bytes_per_parameter,
    device_peak_bytes,
    optimizer_bytes_per_parameter,
    plan,
    predict,
    shard_numel,
    state_bytes,
    tensor_bytes,
)
from dlcourse.models import MLP, MnistCNN

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),
    "momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
}


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: int = 4) -> None:
    x = torch.randn(batch, 1, 28, 28, dtype=next(model.parameters()).dtype)
    loss = F.cross_entropy(model(x), torch.randint(0, 10, (batch,)))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


# ------------------------------------------------------------------- tensor_bytes


def test_tensor_bytes_counts_a_shared_storage_once():
    """Views of one buffer (slices, transposes, reshapes) cost the buffer's bytes once."""
    flat = torch.zeros(1000)
    views = [flat[:10], flat[10:500].view(10, 49), flat.view(10, 100).t(), flat]
    assert tensor_bytes(views) == 4000
    assert tensor_bytes([flat[:1]]) == 4000  # a view keeps the whole storage alive
    assert tensor_bytes([flat, flat.clone()]) == 8000
    assert tensor_bytes([None, torch.zeros(3, dtype=torch.float64), None]) == 24
    assert tensor_bytes([]) == 0


def test_tensor_bytes_of_a_model_flattened_into_one_buffer():
    """Parameters made views of one flat tensor (collectives.flat_parameters) cost it once."""
    from dlcourse.collectives import flat_parameters

    model = MLP(hidden=16)
    separate = tensor_bytes(model.parameters())
    assert separate == 4 * sum(p.numel() for p in model.parameters())
    flat = flat_parameters(model)
    assert tensor_bytes([*model.parameters(), flat]) == separate


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=6), st.sampled_from([torch.float32, torch.float64]))
def test_tensor_bytes_is_the_sum_over_distinct_storages(sizes, dtype):
    """Distinct tensors add up; repeating any of them, or adding views, changes nothing."""
    tensors = [torch.zeros(n, dtype=dtype) for n in sizes]
    total = sum(sizes) * torch.empty((), dtype=dtype).element_size()
    assert tensor_bytes(tensors) == total
    assert tensor_bytes(tensors + tensors[::-1] + [t[: len(t) // 2] for t in tensors]) == total


def test_tensor_bytes_rejects_what_is_not_a_list_of_tensors():
    with pytest.raises(ValueError, match="single Tensor"):
        tensor_bytes(torch.zeros(3))
    with pytest.raises(ValueError, match=r"tensors\[1\] must be a torch.Tensor"):
        tensor_bytes([torch.zeros(1), [1.0]])


# ------------------------------------------------------------------- state_bytes vs predict


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_state_bytes_of_plain_training_equals_the_formula_exactly(optimizer, dtype):
    """After a step: parameters and gradients w bytes each per parameter, the optimizer K."""
    torch.manual_seed(0)
    model = MLP(hidden=24).to(dtype)
    opt = OPTIMIZERS[optimizer](model.parameters())
    _step(model, opt)
    measured = state_bytes(model, opt)
    precision = "fp32" if dtype == torch.float32 else "fp64"
    assert measured == predict(Layout(model=model, optimizer=optimizer, precision=precision))
    p = sum(q.numel() for q in model.parameters())
    w = 4 if dtype == torch.float32 else 8
    assert (
        measured.total
        == p * bytes_per_parameter(0, 1, optimizer=optimizer, precision=precision)
        == (p * (2 * w + optimizer_bytes_per_parameter(optimizer, precision)))
    )


def test_state_bytes_counts_adams_step_counters_only_when_asked():
    """Adam keeps one scalar step per parameter tensor: not per-element state, so left out by default."""
    model = MLP(hidden=8)
    opt = torch.optim.Adam(model.parameters())
    _step(model, opt)
    tensors = len(list(model.parameters()))
    step_size = opt.state[next(model.parameters())]["step"].element_size()
    with_counters = state_bytes(model, opt, include_counters=True)
    assert with_counters.optimizer - state_bytes(model, opt).optimizer == tensors * step_size


def test_state_bytes_before_any_step_holds_only_parameters():
    """No backward yet: no gradients; no step yet: no optimizer state (both are lazy in PyTorch)."""
    model = MnistCNN()
    opt = torch.optim.Adam(model.parameters())
    assert state_bytes(model, opt) == MemoryBreakdown(4 * 1_111_946, 0, 0)


def _emulated_zero_rank(model, stage, n, rank, optimizer):
    """What one rank of a ZeRO run with one flat unit holds, built by hand on one process."""
    numel = sum(p.numel() for p in model.parameters())
    shard = math.ceil(numel / n)
    flat = torch.zeros(shard * n)
    flat[:numel] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    owned = nn.Parameter(flat[rank * shard : (rank + 1) * shard].clone())
    owned.grad = torch.randn(shard)
    opt = OPTIMIZERS[optimizer]([owned])
    opt.step()
    if stage >= 3:  # only the shard: the model's tensors are freed between uses
        return state_bytes(nn.Module(), opt, extra_params=[owned], extra_grads=[owned.grad])
    full_grads = [torch.zeros(shard * n)] if stage == 1 else [owned.grad]
    return state_bytes(nn.Module(), opt, extra_params=[flat], extra_grads=full_grads)


@settings(max_examples=30, deadline=None)
@given(
    hidden=st.integers(1, 40),
    n=st.integers(1, 5),
    stage=st.sampled_from([1, 2, 3]),
    optimizer=st.sampled_from(sorted(OPTIMIZERS)),
)
def test_predict_equals_the_bytes_of_a_hand_built_zero_rank(hidden, n, stage, optimizer):
    """Padded flat units: every rank's tensors, measured, equal predict() exactly."""
    torch.manual_seed(0)
    model = MLP(hidden=hidden)
    predicted = predict(Layout(model=model, num_workers=n, zero_stage=stage, optimizer=optimizer))
    for rank in range(n):
        assert _emulated_zero_rank(model, stage, n, rank, optimizer) == predicted


def test_predict_equals_the_sharding_runtimes_own_formula():
    """dlcourse.sharding lays units out per layer (stages 2, 3); predict with its units agrees."""
    sharding = pytest.importorskip("dlcourse.sharding")
    for model in (MnistCNN(), MLP(hidden=7)):
        for stage in (1, 2, 3):
            units = sharding.unit_sizes(model, stage)
            for n in (1, 2, 3, 4):
                for optimizer in OPTIMIZERS:
                    layout = Layout(
                        model=model, num_workers=n, zero_stage=stage, optimizer=optimizer, units=units
                    )
                    assert predict(layout) == sharding.predicted_bytes(units, n, stage, optimizer)


# ------------------------------------------------------------------- the ZeRO paper's numbers


def test_the_zero_papers_bytes_per_parameter():
    """Mixed-precision Adam: 2 + 2 + 12 = 16; stage 1 4 + 12/N, stage 2 2 + 14/N, stage 3 16/N."""
    assert optimizer_bytes_per_parameter("adam", "mixed") == 12
    assert [bytes_per_parameter(s, 8) for s in range(4)] == [16, 4 + 12 / 8, 2 + 14 / 8, 16 / 8]
    assert bytes_per_parameter(0, 1, optimizer="adam", precision="fp32") == 4 + 4 + 8
    assert bytes_per_parameter(0, 1, optimizer="momentum", precision="fp32") == 12
    assert bytes_per_parameter(0, 1, optimizer="sgd", precision="fp32") == 8
    assert bytes_per_parameter(0, 1, optimizer="sgd", precision="mixed") == 2 + 2 + 4


def test_seven_billion_parameters_need_112_gb_and_14_with_zero3_over_8():
    """The ZeRO paper's example, through predict and plan (and not on an 80 GB device)."""
    dp = plan(Layout(num_params=7e9, num_workers=8, precision="mixed"), device_memory=80e9)
    z3 = plan(Layout(num_params=7e9, num_workers=8, zero_stage=3, precision="mixed"), device_memory=80e9)
    assert dp.memory.total == 112 * 10**9 and not dp.fits
    assert z3.memory.total == 14 * 10**9 and z3.fits
    assert "112.000" in dp.table() and "does NOT fit" in dp.table()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 64),
    optimizer=st.sampled_from(["sgd", "momentum", "adam"]),
    precision=st.sampled_from(["fp32", "mixed", "fp64"]),
)
def test_each_stage_holds_no_more_than_the_one_before(n, optimizer, precision):
    """Sharding only removes bytes; with one rank every stage is plain data parallelism."""
    per = [bytes_per_parameter(s, n, optimizer=optimizer, precision=precision) for s in range(4)]
    assert per == sorted(per, reverse=True)
    assert per[3] * n == pytest.approx(per[0])
    if n == 1:
        assert len(set(per)) == 1


@settings(max_examples=60, deadline=None)
@given(numel=st.integers(0, 10**6), n=st.integers(1, 64))
def test_shards_cover_the_tensor_with_less_than_n_padding(numel, n):
    shard = shard_numel(numel, n)
    assert numel <= shard * n < numel + n


# ------------------------------------------------------------------- activations


@pytest.mark.parametrize(
    "kind,model,batch", [("cnn", MnistCNN, 16), ("cnn", MnistCNN, 100), ("mlp", MLP, 50)]
)
def test_saved_activations_match_the_formula_within_5_percent(kind, model, batch):
    """autograd's saved tensors (hooks) vs activation_bytes: the formula is an estimate, 5% at most."""
    torch.manual_seed(0)
    net = model()
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    with SavedActivations(net) as saved:
        loss = F.cross_entropy(net(x), y)
        held = saved.live
        loss.backward()
    assert held == saved.bytes == saved.peak > 0
    assert saved.live == 0  # backward freed the graph
    assert abs(saved.bytes - activation_bytes(kind, batch)) <= 0.05 * saved.bytes


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 64),
    hidden=st.integers(1, 128),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_mlp_saved_activations_match_the_formula_for_any_size(batch, hidden, dtype):
    """Any batch, width and precision: the MLP's measured saved bytes within 5% of the formula."""
    net = MLP(hidden=hidden).to(dtype)
    x, y = torch.randn(batch, 1, 28, 28, dtype=dtype), torch.randint(0, 10, (batch,))
    with SavedActivations(net) as saved:
        F.cross_entropy(net(x), y).backward()
    precision = "fp32" if dtype == torch.float32 else "fp64"
    predicted = activation_bytes("mlp", batch, hidden=hidden, precision=precision)
    assert abs(saved.bytes - predicted) <= 0.05 * saved.bytes


def test_parameters_that_autograd_saves_are_not_activations():
    """A wide Linear on one example saves its 4 MB weight for backward: none of it counts."""
    layer = nn.Linear(1000, 1000)
    x = torch.randn(1, 1000, requires_grad=True)
    with SavedActivations(layer) as saved:
        layer(x).pow(2).sum().backward()
    assert saved.bytes == 2 * 4000  # x (kept for the weight's gradient) and the output (for pow)
    with SavedActivations() as unaware:  # without the model: still left out (a view of a Parameter)
        layer(x).pow(2).sum().backward()
    assert unaware.bytes == saved.bytes
    plain = layer.weight.detach().clone().requires_grad_()  # a weight kept as a plain tensor
    with SavedActivations(exclude=[plain]) as excluded:
        F.linear(x, plain).pow(2).sum().backward()
    assert excluded.bytes == saved.bytes


def test_peak_counts_micro_batches_held_together():
    """Two forwards before their backwards (GPipe) hold twice one forward's activations."""
    net = MLP(hidden=32)
    xs = [torch.randn(20, 1, 28, 28) for _ in range(2)]
    with SavedActivations(net) as one:
        net(xs[0]).sum().backward()
    with SavedActivations(net) as two:
        losses = [net(x).sum() for x in xs]
        assert two.live == 2 * one.bytes
        for loss in losses:
            loss.backward()
        net(xs[0]).sum().backward()  # a later, smaller step does not lower the peak
    assert two.peak == 2 * one.peak and two.bytes == one.bytes and two.live == 0


def test_gpt_activations_are_korthikantis_formula():
    """Mixed precision: s b h (34 + 5 a s / h) per layer; with T-way tensor parallelism (10 + 24/T + ...)."""
    s, b, h, a, L = 512, 2, 1024, 16, 4
    kw = dict(precision="mixed", seq_len=s, d_model=h, heads=a, layers=L)
    assert activation_bytes("gpt", b, **kw) == L * s * b * h * (34 + 5 * a * s / h)
    assert activation_bytes("gpt", b, tp=4, **kw) == L * s * b * h * (10 + 24 / 4 + 5 * a * s / (h * 4))
    assert activation_bytes("gpt", b, recompute=True, **kw) == L * 2 * s * b * h + s * b * h * (
        34 + 5 * a * s / h
    )


GPT = dict(layers=4, seq_len=128, d_model=256, heads=4)


@pytest.mark.parametrize("kind", ["cnn", "mlp", "gpt"])
def test_recomputation_never_holds_more_and_tensor_parallelism_holds_less(kind):
    """One recomputed segment holds only the input and the loss; more segments hold their inputs too
    (on the MLP, 3 segments hold more than no recomputation: the dense layer's output is kept,
    as dlcourse.recompute measures); the peak adds a rebuilt segment."""
    full, _ = activation_parts(kind, 8, **GPT)
    held, rebuilt = activation_parts(kind, 8, recompute=True, segments=1, **GPT)
    assert held < full and rebuilt > 0
    assert activation_bytes(kind, 8, tp=2, **GPT) < activation_bytes(kind, 8, **GPT)
    if kind != "mlp":  # the MLP's input is most of it: recomputing saves nothing there
        assert activation_bytes(kind, 8, recompute=True, **GPT) < activation_bytes(kind, 8, **GPT)


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
@pytest.mark.parametrize("segments", [1, 2, 3, 4])
def test_recomputed_segments_match_the_measured_held_and_rebuilt_bytes(kind, segments):
    """dlcourse.recompute measures what checkpointed segments hold and rebuild; the formula agrees (5%)."""
    recompute = pytest.importorskip("dlcourse.recompute")
    from dlcourse.models import make_model

    torch.manual_seed(0)
    x, y = torch.randn(30, 1, 28, 28), torch.randint(0, 10, (30,))
    measured = recompute.activation_bytes(
        recompute.recompute_segments(make_model(kind, seed=0), segments), x, y
    )
    held, rebuilt = activation_parts(kind, 30, recompute=True, segments=segments)
    assert abs(held - measured.held) <= 0.05 * measured.held
    assert abs(rebuilt - measured.rebuilt) <= 0.05 * measured.rebuilt


def test_pipeline_schedules_hold_m_or_k_micro_batches():
    """GPipe holds all M micro-batches' activations on a stage; 1F1B at most K."""
    base = dict(num_params=10**6, pp=4, microbatches=8, batch=64, model_kind="gpt", layers=8)
    gpipe = predict(Layout(**base, schedule="gpipe")).activations
    one_f_one_b = predict(Layout(**base, schedule="1f1b")).activations
    single = predict(Layout(**{**base, "microbatches": 1, "batch": 8, "pp": 4})).activations
    assert gpipe == 8 * single and one_f_one_b == 4 * single


# ------------------------------------------------------------------- plan, validation, CLI


def test_plan_splits_a_step_into_compute_and_communication():
    """ZeRO-3 moves 1.5x the bytes of plain data parallelism; a faster network shortens only that."""
    kw = dict(num_params=10**8, num_workers=8, model_kind="gpt", batch=8, seq_len=128, d_model=512, heads=8)
    net = AlphaBeta(alpha_s=0.0, beta_bytes_per_s=1e9)
    dp, z3 = plan(Layout(**kw), alpha_beta=net), plan(Layout(**kw, zero_stage=3), alpha_beta=net)
    assert z3.communication["data"] == pytest.approx(1.5 * dp.communication["data"])
    fast = plan(Layout(**kw), alpha_beta=AlphaBeta(alpha_s=0.0, beta_bytes_per_s=1e10))
    assert fast.compute_s == dp.compute_s and fast.communication_s == pytest.approx(dp.communication_s / 10)
    assert dp.step_s == dp.compute_s + dp.communication_s


def test_plan_prices_tensor_and_pipeline_parallelism_and_the_bubble():
    """T > 1 adds all-reduces of activations, K > 1 sends between stages and idles (M + K - 1) / M."""
    kw = dict(num_params=10**8, model_kind="gpt", batch=8, microbatches=4, seq_len=128, d_model=512, heads=8)
    flat = plan(Layout(**kw))
    tp, pp = plan(Layout(**kw, tp=4)), plan(Layout(**kw, pp=4))
    assert flat.communication_s == 0 and tp.communication["tensor"] > 0 and pp.communication["pipeline"] > 0
    assert tp.compute_s == pytest.approx(flat.compute_s / 4)
    assert pp.compute_s == pytest.approx(flat.compute_s / 4 * (4 + 4 - 1) / 4)
    d = pp.as_dict()
    assert d["step_s"] == pp.step_s and d["memory"]["total"] == pp.memory.total and d["fits"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_params=10, zero_stage=4), "zero_stage"),
        (dict(num_params=0), "num_params"),
        (dict(), "num_params or model"),
        (dict(num_params=10, tp=0), "tp"),
        (dict(num_params=10, schedule="zigzag"), "schedule"),
        (dict(num_params=10, precision="fp8"), "precision"),
        (dict(num_params=10, optimizer="lion"), "optimizer"),
        (dict(num_params=10, batch=10, microbatches=3), "batch"),
        (dict(num_params=10, units=(3, 3)), "units"),
        (dict(num_params=10.5), "num_params"),
    ],
)
def test_a_bad_layout_names_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Layout(**kwargs)


def test_bad_arguments_of_the_formulas_name_themselves():
    with pytest.raises(ValueError, match="zero_stage"):
        bytes_per_parameter(5, 2)
    with pytest.raises(ValueError, match="num_workers"):
        bytes_per_parameter(1, 0)
    with pytest.raises(ValueError, match="model_kind"):
        activation_bytes("rnn", 4)
    with pytest.raises(ValueError, match="device_memory"):
        plan(Layout(num_params=10), device_memory=0)
    with pytest.raises(ValueError, match="parameters"):
        MemoryBreakdown(-1, 0, 0)


def test_memory_breakdown_adds_and_reads():
    a, b = MemoryBreakdown(1, 2, 3, 4), MemoryBreakdown(10, 20, 30)
    assert a + b == MemoryBreakdown(11, 22, 33, 4) and (a + b).total == 70 and a.state == 6
    assert "MB" in repr(MemoryBreakdown(2_000_000, 0, 0)) and "parameters=2.00 MB" in repr(
        MemoryBreakdown(2_000_000, 0, 0)
    )


def test_cli_memory_compares_layouts(capsys, tmp_path):
    """`dlcourse memory` prints one row per layout, without running anything."""
    out = tmp_path / "mem.json"
    args = [
        "memory",
        "--params",
        "7e9",
        "--devices",
        "8",
        "--layout",
        "dp",
        "zero3",
        "tp",
        "--json",
        str(out),
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "112.000" in text and "14.000" in text
    rows = {r["layout"]: r for r in json.loads(out.read_text())["layouts"]}
    assert rows["dp"]["total"] == 112 * 10**9 and not rows["dp"]["fits"]
    assert rows["zero3"]["total"] == rows["tp"]["total"] == 14 * 10**9


@pytest.mark.parametrize(
    "args",
    [
        ["--params", "0"],
        ["--params", "7e9", "--devices", "6", "--tp", "4"],
        ["--params", "7e9", "--layout", "dp", "--tp", "2"],
        ["--params", "7e9", "--layout", "zero4"],
        ["--params", "7.5"],
        ["--params", "100", "--model-kind", "gpt", "--batch", "3", "--microbatches", "2"],
    ],
)
def test_cli_memory_bad_values_exit_2_with_one_line(args, capsys):
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(["memory", *args]))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err


def test_device_peak_bytes_is_none_on_the_cpu():
    assert device_peak_bytes("cpu") is None
    if not torch.cuda.is_available():
        assert device_peak_bytes() is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_a_gpu_the_allocators_peak_covers_the_measured_state_and_activations():
    """max_memory_allocated >= state bytes + saved activations: the allocator holds those and more."""
    device = torch.device("cuda", 0)
    device_peak_bytes(device, reset=True)  # the peak counts from here
    model = MnistCNN().to(device)
    opt = torch.optim.Adam(model.parameters())
    x, y = torch.randn(64, 1, 28, 28, device=device), torch.randint(0, 10, (64,), device=device)
    with SavedActivations(model) as saved:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    opt.step()
    state = state_bytes(model, opt)
    assert state == predict(Layout(model=model, optimizer="adam"))
    assert device_peak_bytes(device) >= state.parameters + state.gradients + saved.peak
