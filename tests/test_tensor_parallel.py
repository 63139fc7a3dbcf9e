"""Tensor parallelism (Megatron-LM): the split MLP equals the dense one and PyTorch's DTensor plan."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dlcourse.cli import main
from dlcourse.data import Dataset
from dlcourse.launcher import WorkerError, launch
from dlcourse.memory import activation_bytes
from dlcourse.models import make_model
from dlcourse.tensor_parallel import (
    ColumnParallelLinear,
    CopyToParallel,
    ParallelMLP,
    RowParallelLinear,
    TensorParallelConfig,
    mlp_block_bytes,
    parallelize,
    tp_parameters_per_rank,
    train_tensor_parallel,
)
from dlcourse.train import make_optimizer
from dlcourse.worker_run import worker_batches

pytestmark = pytest.mark.usefixtures("one_thread")

# (batch, in_features, hidden, out_features); hidden divides by 4, so every case runs at N = 2 and 4
SIZES = [(5, 12, 8, 6), (1, 3, 4, 1), (7, 9, 16, 5), (3, 20, 12, 2)]


def _dense_mlp(in_features: int, hidden: int, out_features: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features)).double()


class _ColumnByHand(torch.autograd.Function):
    """A student's column-parallel linear with its backward written out (the A5 seam)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return x @ weight.T + bias

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        dx = dy @ weight  # this rank's share of dL/dx ...
        dist.all_reduce(dx)  # ... summed over the ranks
        return dx, dy.T @ x, dy.sum(0)


def _row_by_hand(x_shard, weight, bias):
    from dlcourse.tensor_parallel import ReduceFromParallel

    return ReduceFromParallel.apply(x_shard @ weight.T) + bias


def _compare(rank, world_size):
    """On every rank: our ParallelMLP, the seams and DTensor's plan against the dense MLP."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", (world_size,))
    out = []
    for case, (batch, fin, hidden, fout) in enumerate(SIZES):
        dense = _dense_mlp(fin, hidden, fout, seed=case)
        x = torch.randn(batch, fin, dtype=torch.float64, generator=torch.Generator().manual_seed(case))
        xd = x.clone().requires_grad_(True)
        yd = dense(xd)
        (yd * torch.arange(yd.numel(), dtype=torch.float64).view_as(yd)).sum().backward()  # uneven dL/dy
        part = hidden // world_size
        rows = slice(rank * part, (rank + 1) * part)
        expected = {
            "y": yd.detach(),
            "dx": xd.grad,
            "fc1.weight": dense[0].weight.grad[rows],
            "fc1.bias": dense[0].bias.grad[rows],
            "fc2.weight": dense[2].weight.grad[:, rows],
            "fc2.bias": dense[2].bias.grad,
        }
        errors = {}
        for name, kw in [("ours", {}), ("seams", {"column_fn": _ColumnByHand.apply, "row_fn": _row_by_hand})]:
            block = ParallelMLP(dense[0], dense[2], rank, world_size, **kw)
            xt = x.clone().requires_grad_(True)
            y = block(xt)
            (y * torch.arange(y.numel(), dtype=torch.float64).view_as(y)).sum().backward()
            got = {"y": y.detach(), "dx": xt.grad}
            got.update({n: p.grad for n, p in block.named_parameters()})
            errors[name] = max((got[k] - v).abs().max().item() for k, v in expected.items())
            if name == "ours":
                traffic = block.traffic
                errors["traffic"] = (traffic.forward, traffic.backward, traffic.calls)
                errors["formula"] = mlp_block_bytes(batch, fin, fout, world_size, element_size=8)
        # PyTorch's own: DTensor with the Colwise / Rowwise plan on a fresh copy of the dense MLP
        torch_tp = parallelize_module(
            _dense_mlp(fin, hidden, fout, seed=case), mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()}
        )
        xt = x.clone().requires_grad_(True)
        y = torch_tp(xt)
        (y * torch.arange(y.numel(), dtype=torch.float64).view_as(y)).sum().backward()
        ours = ParallelMLP(dense[0], dense[2], rank, world_size)
        errors["dtensor_vs_ours_weights"] = max(
            (a.to_local() - b).abs().max().item()
            for a, b in zip(torch_tp.parameters(), [p.detach() for p in ours.parameters()])
        )
        got = {"y": y.detach(), "dx": xt.grad}
        got.update(
            {
                f"fc{1 if n.startswith('0') else 2}.{n.split('.')[1]}": p.grad.to_local()
                for n, p in torch_tp.named_parameters()
            }
        )
        errors["dtensor"] = max((got[k] - v).abs().max().item() for k, v in expected.items())
        out.append(errors)
    return out


@pytest.fixture(scope="module", params=[2, 4])
def compared(request):
    return request.param, launch(_compare, request.param, run_timeout=180)


@pytest.mark.multiprocess
def test_the_parallel_mlp_equals_the_dense_mlp_forward_and_every_gradient(compared):
    """float64: output, input gradient and each rank's slice of every weight's gradient, 1e-12."""
    _, per_rank = compared
    for errors in per_rank:
        for case in errors:
            assert case["ours"] <= 1e-12


@pytest.mark.multiprocess
def test_the_parallel_mlp_equals_pytorchs_colwise_rowwise_plan(compared):
    """DTensor (parallelize_module, ColwiseParallel + RowwiseParallel) shards the same slices and
    gives the same output and gradients."""
    _, per_rank = compared
    for errors in per_rank:
        for case in errors:
            assert case["dtensor_vs_ours_weights"] == 0.0
            assert case["dtensor"] <= 1e-12


@pytest.mark.multiprocess
def test_student_seams_written_by_hand_give_the_same_result(compared):
    """column_fn / row_fn with the backward's all-reduce written out equal the f/g version."""
    _, per_rank = compared
    for errors in per_rank:
        for case in errors:
            assert case["seams"] <= 1e-12


@pytest.mark.multiprocess
def test_one_allreduce_forward_one_backward_bytes_equal_the_formula(compared):
    """g all-reduces batch x out (forward), f batch x in (backward): exactly the formula's bytes."""
    _, per_rank = compared
    for errors in per_rank:
        for (batch, fin, _, fout), case in zip(SIZES, errors):
            forward, backward, calls = case["traffic"]
            assert calls == 2
            assert forward == case["formula"]["forward"] == batch * fout * 8
            assert backward == case["formula"]["backward"] == batch * fin * 8


# ------------------------------------------------------------------ training


def _reference(train: Dataset, config: TensorParallelConfig) -> dict[str, torch.Tensor]:
    """One process, the dense model, the same batches (rank 0's order of the whole data)."""
    model = make_model(config.model, seed=config.seed).double()
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, config.momentum)
    steps = len(train) // config.batch_size
    order = worker_batches(len(train), steps, 0, config.seed, 0)
    for t in range(config.max_steps):
        X, y = train.X[order[t]].double(), train.y[order[t]]
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.state_dict()


@pytest.mark.multiprocess
@pytest.mark.parametrize(
    "model, optimizer, recompute", [("mlp", "momentum", False), ("cnn", "adam", True)], ids=["mlp", "cnn"]
)
def test_training_equals_single_process_training_on_the_same_batches(mnist, model, optimizer, recompute):
    """The MLP split whole, the CNN's dense head split (its convolutions recomputed): after a
    few steps the gathered parameters equal one process's, float64."""
    train = mnist.train[:200]
    lr = 1e-3 if optimizer == "adam" else 0.05
    config = TensorParallelConfig(
        model=model,
        batch_size=20,
        lr=lr,
        optimizer=optimizer,
        max_steps=3,
        dtype="float64",
        recompute=recompute,
    )
    result = train_tensor_parallel(train, 2, config, test=mnist.test[:100], run_timeout=180)
    reference = _reference(train, config)
    assert result.strategy == "tensor-parallel" and result.updates == 3 and result.examples == 60
    for name, value in reference.items():
        assert torch.allclose(result.parameters[name], value, rtol=0, atol=1e-10), name
    assert set(result.test) == {"loss", "accuracy", "macro_f1"}
    dense = make_model(model)
    for rank in result.extra["per_rank"]:
        assert rank["parameter_count"] == tp_parameters_per_rank(dense, 2)
        assert rank["state_bytes"].parameters == 8 * rank["parameter_count"]  # float64
        e = 8  # float64
        if recompute:  # the convolutions' input; dense 1's input; the split ReLU output; the loss's
            predicted = 20 * 784 * e + 20 * 1024 * e + 20 * 1024 * e // 2 + 20 * 10 * e + 20 * 8
        else:  # dlcourse.memory's count with the hidden layer split in two
            predicted = activation_bytes(model, 20, precision="fp64", tp=2)
        assert rank["peak_activation_bytes"] == predicted + e  # + cross-entropy's total-weight scalar
        i = 1 if model == "mlp" else 5
        fin, fout = dense[i].in_features, dense[i + 2].out_features
        bytes_ = mlp_block_bytes(20, fin, fout, 2, element_size=8, input_grad=model == "cnn")
        assert rank["allreduced_bytes"] == {
            "forward": 3 * bytes_["forward"],
            "backward": 3 * bytes_["backward"],
        }
    assert result.bytes_sent == 3 * bytes_["sent"]


@pytest.mark.multiprocess
def test_a_seam_that_returns_the_wrong_shape_stops_the_run_naming_it(mnist):
    config = TensorParallelConfig(max_steps=1, batch_size=10, column_fn=lambda x, w, b: x)
    with pytest.raises(WorkerError, match="column_fn must return a tensor of shape"):
        train_tensor_parallel(mnist.train[:50], 2, config, run_timeout=120)


# ------------------------------------------------------------------ sizes and bad input


@settings(max_examples=50, deadline=None)
@given(
    hidden_per_rank=st.integers(1, 64),
    world_size=st.integers(1, 8),
    fin=st.integers(1, 100),
    fout=st.integers(1, 100),
)
def test_parameters_per_rank_equal_the_slices_the_layers_hold(hidden_per_rank, world_size, fin, fout):
    """Counted from the formula and from the layers built on one rank (no communication)."""
    hidden = hidden_per_rank * world_size
    dense = nn.Sequential(nn.Linear(fin, hidden), nn.ReLU(), nn.Linear(hidden, fout))
    held = sum(p.numel() for p in parallelize(dense, world_size - 1, world_size).parameters())
    assert held == tp_parameters_per_rank(dense, world_size)
    assert held == (fin * hidden + hidden + hidden * fout) // world_size + fout


@settings(max_examples=50, deadline=None)
@given(batch=st.integers(1, 64), fin=st.integers(1, 64), fout=st.integers(1, 64), n=st.integers(1, 8))
def test_bytes_sent_per_rank_are_a_ring_allreduce_of_both_tensors(batch, fin, fout, n):
    b = mlp_block_bytes(batch, fin, fout, n)
    assert b["allreduced"] == 4 * batch * (fin + fout)
    assert b["sent"] == 2 * (n - 1) * b["allreduced"]  # each of the N ranks sends 2 (N-1)/N of it
    assert mlp_block_bytes(batch, fin, fout, n, input_grad=False)["backward"] == 0


def test_the_lecture_cnn_head_holds_half_its_dense_weights_per_rank_at_n_2():
    cnn = make_model("cnn")
    convs = sum(p.numel() for layer in list(cnn)[:5] for p in layer.parameters())
    assert tp_parameters_per_rank(cnn, 2) == convs + (1024 * 1024 + 1024 + 1024 * 10) // 2 + 10


def test_a_layer_that_does_not_divide_by_the_degree_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"ColumnParallelLinear's output .* 10 features.*world_size=3"):
        ColumnParallelLinear(nn.Linear(4, 10), 0, 3)
    with pytest.raises(ValueError, match=r"RowParallelLinear's input .* 7 features.*world_size=2"):
        RowParallelLinear(nn.Linear(7, 4), 0, 2)
    with pytest.raises(ValueError, match=r"mlp's layer 1 .* 64 features.*world_size=3"):
        TensorParallelConfig().check_workers(3)
    with pytest.raises(ValueError, match=r"cnn's layer 5 .* 1024 features.*world_size=3"):
        train_tensor_parallel(Dataset(torch.zeros(10, 1, 28, 28), torch.zeros(10, dtype=torch.long)), 3,
                              TensorParallelConfig(model="cnn"))  # fmt: skip


def test_bad_arguments_are_value_errors_naming_them():
    with pytest.raises(ValueError, match="rank must be <= 1"):
        ColumnParallelLinear(nn.Linear(4, 4), 2, 2)
    with pytest.raises(ValueError, match="linear must be a torch.nn.Linear"):
        RowParallelLinear(nn.Conv2d(1, 2, 3), 0, 1)
    with pytest.raises(ValueError, match="column_fn must be a function"):
        ColumnParallelLinear(nn.Linear(4, 4), 0, 1, column_fn="matmul")
    with pytest.raises(ValueError, match="row_fn must be a function or None"):
        TensorParallelConfig(row_fn=3)
    with pytest.raises(ValueError, match="recompute must be one of"):
        TensorParallelConfig(recompute="yes")
    with pytest.raises(ValueError, match="no Linear -> ReLU -> Linear block"):
        parallelize(nn.Sequential(nn.Linear(2, 2)), 0, 1)
    with pytest.raises(ValueError, match="config must be a TensorParallelConfig"):
        train_tensor_parallel(Dataset(torch.zeros(10, 1, 28, 28), torch.zeros(10, dtype=torch.long)), 1, {})
    with pytest.raises(ValueError, match="batch_size must be at most the 10 training examples"):
        train_tensor_parallel(
            Dataset(torch.zeros(10, 1, 28, 28), torch.zeros(10, dtype=torch.long)), 2, TensorParallelConfig()
        )


def test_f_is_the_identity_forward_without_a_process_group():
    """f's forward sends nothing (the all-reduce is in its backward only)."""
    x = torch.randn(3, 4)
    assert torch.equal(CopyToParallel.apply(x), x)


# ------------------------------------------------------------------ command line


@pytest.mark.multiprocess
def test_the_command_line_trains_and_reports_peak_bytes_per_rank(tmp_path, capsys):
    path = tmp_path / "tp.json"
    argv = [
        "train",
        "--strategy",
        "tensor-parallel",
        "--model",
        "mlp",
        "--workers",
        "2",
        "--batch-size",
        "50",
    ]
    assert main([*argv, "--no-progress", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tensor-parallel" in out and "peak bytes" in out
    metrics = json.loads(path.read_text())
    assert metrics["strategy"] == "tensor-parallel" and metrics["workers"] == 2
    for rank in metrics["per_rank"]:
        assert rank["state_bytes"]["parameters"] == 4 * rank["parameter_count"]
        count = tp_parameters_per_rank(make_model("mlp"), 2)
        assert rank["predicted_parameter_bytes"] == 4 * count
        # plain SGD (the default here): fp32 weights and gradients, no optimizer state
        assert rank["predicted_state_bytes"] == 8 * count
        held = rank["state_bytes"]
        assert held["parameters"] + held["gradients"] + held["optimizer"] == 8 * count
        # dlcourse.memory's count (batch 50, the hidden layer split in two) + cross-entropy's scalar
        assert rank["predicted_activation_bytes"] == activation_bytes("mlp", 50, tp=2)
        assert rank["peak_activation_bytes"] == rank["predicted_activation_bytes"] + 4


def test_the_command_line_refuses_a_degree_that_does_not_divide_in_one_line(capsys):
    assert main(["train", "--strategy", "tensor-parallel", "--model", "mlp", "--workers", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "do not divide by the tensor-parallel degree" in err
    assert main(["train", "--strategy", "tensor-parallel", "--slow-worker", "1", "--average-every", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--slow-worker, --average-every: not available with --strategy tensor-parallel")


# ------------------------------------------------------------------ GPU


def _nccl_block(rank, world_size):
    from dlcourse.environment import full_float32
    from dlcourse.launcher import device_for

    device = device_for(rank)
    torch.cuda.set_device(device)
    with full_float32():  # TF32 would round the dense reference differently
        dense = _dense_mlp(8, 8, 3, seed=0).float().to(device)
        x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0)).to(device).requires_grad_(True)
        block = ParallelMLP(dense[0], dense[2], rank, world_size)
        y = block(x)
        y.sum().backward()
        xd = x.detach().clone().requires_grad_(True)
        dense(xd).sum().backward()
        return max((y - dense(xd)).abs().max().item(), (x.grad - xd.grad).abs().max().item())


@pytest.mark.gpu
@pytest.mark.multiprocess
def test_the_parallel_mlp_runs_on_nccl():
    """One rank per GPU (NCCL allows no more); with one GPU that is N = 1: forward and input gradient."""
    n = torch.cuda.device_count()
    errors = launch(_nccl_block, n, backend="nccl", run_timeout=120)
    assert max(errors) <= 1e-5


@pytest.mark.gpu
@pytest.mark.multiprocess
def test_tensor_parallel_training_runs_on_nccl(mnist):
    """float64 on the GPUs (as many as divide the MLP's 64 hidden features): one process's result."""
    n = max(d for d in (1, 2, 4, 8) if d <= torch.cuda.device_count())
    train = mnist.train[:200]
    config = TensorParallelConfig(model="mlp", batch_size=20, lr=0.05, max_steps=3, dtype="float64")
    result = train_tensor_parallel(train, n, config, backend="nccl", run_timeout=180)
    for name, value in _reference(train, config).items():
        assert torch.allclose(result.parameters[name], value, rtol=0, atol=1e-10), name
