"""Model parallelism: a split model equals the unsplit one, in one process and across processes."""

from __future__ import annotations

import copy
import time

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dlcourse.environment import full_float32
from dlcourse.launcher import WorkerError
from dlcourse.model_parallel import (
    BranchParallelLSTM,
    ModelParallel,
    check_device,
    memory_per_rank,
    run_model_parallel,
    split_model,
    stage_bounds,
    stage_shapes,
)
from dlcourse.models import MLP, SharedLSTM, make_model


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@given(num_layers=st.integers(1, 40), data=st.data())
def test_stage_bounds_cover_the_layers_in_order_and_balanced(num_layers, data):
    K = data.draw(st.integers(1, num_layers))
    bounds = stage_bounds(num_layers, K)
    assert len(bounds) == K
    assert bounds[0][0] == 0 and bounds[-1][1] == num_layers
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, no gaps
    sizes = [stop - start for start, stop in bounds]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_split_model_keeps_the_full_models_names_and_leaves_it_unchanged():
    model = make_model("cnn", seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stages = split_model(model, 3)
    merged = {k: v for s in stages for k, v in s.state_dict().items()}
    assert merged.keys() == before.keys()
    assert all(torch.equal(merged[k], before[k]) for k in before)
    stages[0][0].weight.data.zero_()  # a deep copy: the model is untouched
    assert torch.equal(model[0].weight, before["0.weight"])


@pytest.mark.parametrize("name, K", [("cnn", 1), ("cnn", 2), ("cnn", 3), ("cnn", 8), ("mlp", 4)])
def test_model_parallel_on_one_device_list_equals_the_unsplit_model(name, K):
    model = make_model(name, seed=1)
    X, y = _batch()
    split = ModelParallel(model, ["cpu"] * K)
    y_hat = split(X)
    F.cross_entropy(y_hat, y).backward()
    F.cross_entropy(model(X), y).backward()
    torch.testing.assert_close(y_hat, model(X), atol=1e-6, rtol=0)
    got = {k: p.grad for s in split.stages for k, p in s.named_parameters()}
    for k, g in _grads(model).items():
        torch.testing.assert_close(got[k], g, atol=1e-6, rtol=0)
    assert "stages=" in repr(split)


@settings(max_examples=25, deadline=None)
@given(hidden=st.integers(1, 32), n=st.integers(1, 9), K=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_split_equals_unsplit_for_any_cut_and_batch(hidden, n, K, seed):
    torch.manual_seed(seed)
    model = MLP(hidden)
    X = torch.rand(n, 1, 28, 28)
    torch.testing.assert_close(ModelParallel(model, ["cpu"] * K)(X), model(X), atol=1e-6, rtol=0)


def test_stage_shapes_are_the_real_forward_shapes():
    model = make_model("cnn", seed=0)
    X, _ = _batch(5)
    stages = split_model(model, 4)
    x, real = X, []
    for s in stages:
        x = s(x)
        real.append(x.shape)
    assert stage_shapes(stages, X.shape) == real


@pytest.mark.multiprocess
def test_split_over_processes_equals_the_unsplit_model(no_orphans):
    """Three ranks (first, middle, last stage): outputs, loss and every gradient match."""
    model = make_model("cnn", seed=2)
    X, y = _batch(8, seed=3)
    result = run_model_parallel(model, X, y, num_stages=3)
    y_hat = model(X)
    loss = F.cross_entropy(y_hat, y)
    loss.backward()
    torch.testing.assert_close(result.y_hat, y_hat.detach(), atol=1e-6, rtol=0)
    assert result.loss == pytest.approx(loss.item(), abs=1e-6)
    expected = _grads(model)
    assert result.grads.keys() == expected.keys()
    for k, g in expected.items():
        torch.testing.assert_close(result.grads[k], g, atol=1e-6, rtol=0)
    assert "loss=" in repr(result)


@pytest.mark.multiprocess
def test_a_failing_stage_is_reported_quickly_by_rank(no_orphans):
    """A bad label makes the last stage's loss fail; the waiting first stage must not hang."""
    model = make_model("mlp", seed=0)
    X, y = _batch(4)
    y[0] = 99  # not a class: cross_entropy raises on the last rank
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        run_model_parallel(model, X, y, num_stages=2, timeout=20)
    assert info.value.rank == 1
    assert time.monotonic() - start < 30


def test_branch_parallel_lstm_equals_one_device():
    torch.manual_seed(0)
    model = SharedLSTM(input_size=12, hidden_size=8, num_outputs=3)
    a, b = torch.rand(4, 7, 12), torch.rand(4, 7, 12)
    parallel = BranchParallelLSTM(model, devices=["cpu", "cpu"], merge_device="cpu")
    out = parallel(a, b)
    out.square().sum().backward()
    model(a, b).square().sum().backward()
    torch.testing.assert_close(out, model(a, b), atol=1e-6, rtol=0)
    # the shared weights received both branches' gradients, as on one device
    for (name, p), (_, q) in zip(parallel.model.named_parameters(), model.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=0, msg=name)
    assert "branches=" in repr(parallel)


def _real_activation_bytes(layers, X):
    total, x = 0, X
    for layer in layers:
        x = layer(x)
        total += x.numel() * x.element_size()
    return total


@settings(max_examples=10, deadline=None)
@given(K=st.integers(1, 8), batch=st.sampled_from([4, 8, 16]))
def test_memory_per_rank_counts_what_the_ranks_hold(K, batch):
    model = make_model("cnn", seed=0)
    X = torch.rand(batch, 1, 28, 28)
    full_params = sum(p.numel() * 4 for p in model.parameters())
    mp = memory_per_rank(model, X.shape, K, "model-parallel")
    assert sum(mp.parameter_bytes) == full_params
    with torch.no_grad():
        assert mp.activation_bytes == [_real_activation_bytes(s, x) for s, x in _stage_inputs(model, K, X)]
    N = 4
    dp = memory_per_rank(model, X.shape, N, "data-parallel")
    assert dp.parameter_bytes == [full_params] * N
    with torch.no_grad():
        assert dp.activation_bytes == [_real_activation_bytes(model, X[: batch // N])] * N
    assert dp.max_rank_bytes == 2 * full_params + dp.activation_bytes[0]


def _stage_inputs(model, K, X):
    out, x = [], X
    for s in split_model(model, K):
        out.append((s, x))
        x = s(x)
    return out


def test_model_parallel_holds_less_per_rank_than_data_parallel_for_the_cnn():
    """The lesson's point: the biggest rank shrinks with K; data parallelism keeps all weights."""
    model = make_model("cnn", seed=0)
    mp = memory_per_rank(model, (100, 1, 28, 28), 4, "model-parallel")
    dp = memory_per_rank(model, (100, 1, 28, 28), 4, "data-parallel")
    assert max(mp.parameter_bytes) < dp.parameter_bytes[0]
    assert "MiB" in repr(mp)


# ----------------------------------------------------------------------------- bad input


def test_more_stages_than_layers_names_the_argument():
    with pytest.raises(ValueError, match=r"num_stages must be <= the model's 4 layers, got 5"):
        split_model(make_model("mlp"), 5)
    with pytest.raises(ValueError, match="num_stages"):
        ModelParallel(make_model("mlp"), ["cpu"] * 5)
    with pytest.raises(ValueError, match="num_stages"):
        run_model_parallel(make_model("mlp"), *_batch(4), num_stages=5)  # before any process starts


def test_unavailable_or_unknown_devices_name_the_argument():
    missing = f"cuda:{torch.cuda.device_count() + 7}"
    with pytest.raises(ValueError, match=r"devices\[1\] 'cuda:\d+' is not available"):
        ModelParallel(make_model("mlp"), ["cpu", missing])
    with pytest.raises(ValueError, match="merge_device"):
        BranchParallelLSTM(SharedLSTM(4, 2), merge_device=missing)
    with pytest.raises(ValueError, match="devices"):
        check_device("devices", "not-a-device")
    with pytest.raises(ValueError, match="list of 2 devices"):
        BranchParallelLSTM(SharedLSTM(4, 2), devices=["cpu"])
    with pytest.raises(ValueError, match="non-empty list"):
        ModelParallel(make_model("mlp"), "cpu")


def test_other_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="nn.Sequential"):
        split_model(nn.Linear(2, 2), 1)
    with pytest.raises(ValueError, match="SharedLSTM"):
        BranchParallelLSTM(make_model("mlp"))
    with pytest.raises(ValueError, match="strategy"):
        memory_per_rank(make_model("mlp"), (8, 1, 28, 28), 2, "pipeline-ish")
    with pytest.raises(ValueError, match="divisible by num_ranks"):
        memory_per_rank(make_model("mlp"), (9, 1, 28, 28), 2, "data-parallel")
    with pytest.raises(ValueError, match="input_shape"):
        memory_per_rank(make_model("mlp"), (0, 1, 28, 28), 2)
    with pytest.raises(ValueError, match="num_ranks must be <= 4, got 5"):  # the MLP has 4 layers
        memory_per_rank(make_model("mlp"), (8, 1, 28, 28), 5)
    with pytest.raises(ValueError, match="same non-zero length"):
        run_model_parallel(make_model("mlp"), torch.rand(3, 1, 28, 28), torch.zeros(2, dtype=torch.long), 2)


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@full_float32()  # cuDNN's default TF32 moved this comparison by 2e-2 (dlcourse.environment)
def test_split_across_cuda_and_cpu_equals_the_cpu_model():
    model = make_model("cnn", seed=0)
    X, y = _batch(8)
    split = ModelParallel(copy.deepcopy(model), ["cuda:0", "cpu"])
    assert split.stages[0][0].weight.device.type == "cuda"
    y_hat = split(X)
    F.cross_entropy(y_hat, y).backward()
    F.cross_entropy(model(X), y).backward()
    torch.testing.assert_close(
        y_hat, model(X), atol=1e-5, rtol=1e-5
    )  # float32 kernels still round differently
    got = {k: p.grad.cpu() for s in split.stages for k, p in s.named_parameters()}
    for k, g in _grads(model).items():
        torch.testing.assert_close(got[k], g, atol=1e-5, rtol=1e-4)


@pytest.mark.gpu
@full_float32()  # TF32 matrix products moved this comparison by 1.7e-5
def test_branch_parallel_lstm_on_cuda_and_cpu_equals_one_device():
    torch.manual_seed(0)
    model = SharedLSTM(input_size=16, hidden_size=8, num_outputs=2)
    a, b = torch.rand(3, 10, 16), torch.rand(3, 10, 16)
    parallel = BranchParallelLSTM(model, devices=["cuda:0", "cpu"], merge_device="cpu")
    out = parallel(a, b)
    assert out.device.type == "cpu"
    out.sum().backward()
    model(a, b).sum().backward()
    torch.testing.assert_close(out, model(a, b), atol=1e-5, rtol=1e-5)
    for p, q in zip(parallel.model.parameters(), model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4)
