"""Tensor parallelism: one layer's weight matrix split over N ranks (Megatron-LM).

Model parallelism (:mod:`dlcourse.model_parallel`) gives each process whole layers; tensor
parallelism splits *inside* a layer. Shoeybi et al., "Megatron-LM: Training Multi-Billion
Parameter Language Models Using Model Parallelism" (2019), split an MLP block
``Y = ReLU(X A) B`` over N ranks so that it needs one all-reduce forward and one backward:

- **Column-parallel** ``A = [A_1 ... A_N]`` (output features split): rank n computes
  ``Y_n = ReLU(X A_n)`` from the whole input, with no communication. ReLU acts element by
  element, so it can run on the shard.
- **Row-parallel** ``B = [B_1; ...; B_N]`` (input features split): rank n computes
  ``Y_n B_n``, a partial sum of the output; one all-reduce adds the N parts. The bias is
  added once, after the sum (every rank holds all of it).

The two communication operators of the paper are written out as ``torch.autograd.Function``
so that each all-reduce is visible:

- ``f`` (:class:`CopyToParallel`): identity forward; backward all-reduces the input's
  gradient (each rank's ``dX_n = dY_n A_n^T`` is only its share of ``dX``);
- ``g`` (:class:`ReduceFromParallel`): all-reduce forward; identity backward.

PyTorch's own version is ``torch.distributed.tensor.parallel.parallelize_module`` with
``ColwiseParallel`` and ``RowwiseParallel`` (DTensor); the tests check ours against it and
against the dense MLP. Every rank sees the same batch: what is split is the layer, not the
data. Layers outside the block (the CNN's convolutions) are replicated and get identical
gradients on every rank without any communication of their own, because ``f`` has already
summed the gradient that flows back into them.

**Student seams** (assignment A5). The runtime calls two functions, which a student may
replace (``TensorParallelConfig(column_fn=..., row_fn=...)``, or the layers' arguments of
the same names); they travel to the worker processes with cloudpickle, so they may be
defined in a notebook cell:

- ``column_fn(x, weight_shard, bias_shard) -> y_shard``: the column-parallel linear layer,
  forward and backward (``y_shard = x @ weight_shard.T + bias_shard``; the gradient of
  ``x`` must be all-reduced over the ranks). The library's: :func:`column_parallel_linear`.
- ``row_fn(x_shard, weight_shard, bias) -> y``: the row-parallel linear layer
  (``y = all_reduce(x_shard @ weight_shard.T) + bias``). The library's:
  :func:`row_parallel_linear`.

Both must be differentiable (compose ``f``/``g`` with ``F.linear``, or write a
``torch.autograd.Function`` with its own ``backward``). Shapes are checked at every call:
a seam that returns the wrong shape stops the run with a ``ValueError`` naming it.

Run ``dlcourse train --strategy tensor-parallel --workers 2`` (the CNN's dense head split
over 2 ranks), or :func:`train_tensor_parallel` from Python.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dlcourse._validate import check_choice, check_int
from dlcourse.collectives import ring_allreduce_bytes
from dlcourse.data import Dataset, check_dataset
from dlcourse.divergence import check_finite
from dlcourse.launcher import device_for, launch
from dlcourse.memory import SavedActivations, state_bytes
from dlcourse.models import MODELS, make_model
from dlcourse.recompute import recompute_segments
from dlcourse.train import check_training_settings, evaluate, make_optimizer
from dlcourse.worker_run import DTYPES, DataParallelResult, worker_batches

# ---------------------------------------------------------------------------------------
# The paper's two communication operators, and a record of what they send.


@dataclass
class Traffic:
    """Bytes each all-reduce of ``f`` and ``g`` reduced on this rank (the tensor's size)."""

    forward: int = 0  # bytes all-reduced in forward passes (g)
    backward: int = 0  # bytes all-reduced in backward passes (f)
    calls: int = 0  # all-reduces, both directions

    def add(self, tensor: torch.Tensor, direction: str) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        setattr(self, direction, getattr(self, direction) + nbytes)
        self.calls += 1


def _all_reduce(x: torch.Tensor, group, traffic: Traffic | None, direction: str) -> torch.Tensor:
    x = x.contiguous().clone()  # all_reduce works in place; autograd's tensors must not change
    dist.all_reduce(x, group=group)
    if traffic is not None:
        traffic.add(x, direction)
    return x


class CopyToParallel(torch.autograd.Function):
    """The paper's ``f``: forward passes ``x`` to every rank unchanged; backward sums the
    ranks' gradients of ``x`` (an all-reduce)."""

    @staticmethod
    def forward(ctx, x, group=None, traffic=None):
        ctx.group, ctx.traffic = group, traffic
        return x.view_as(x)

    @staticmethod
    def backward(ctx, dx):
        return _all_reduce(dx, ctx.group, ctx.traffic, "backward"), None, None


class ReduceFromParallel(torch.autograd.Function):
    """The paper's ``g``: forward sums the ranks' partial outputs (an all-reduce); backward
    passes the gradient to every rank unchanged."""

    @staticmethod
    def forward(ctx, x, group=None, traffic=None):
        return _all_reduce(x, group, traffic, "forward")

    @staticmethod
    def backward(ctx, dy):
        return dy, None, None


def column_parallel_linear(x, weight_shard, bias_shard, *, group=None, traffic=None) -> torch.Tensor:
    """``f(x) @ weight_shard.T + bias_shard``: this rank's slice of the output features."""
    return F.linear(CopyToParallel.apply(x, group, traffic), weight_shard, bias_shard)


def row_parallel_linear(x_shard, weight_shard, bias, *, group=None, traffic=None) -> torch.Tensor:
    """``g(x_shard @ weight_shard.T) + bias``: the whole output, the bias added once."""
    y = ReduceFromParallel.apply(F.linear(x_shard, weight_shard), group, traffic)
    return y + bias if bias is not None else y


# ---------------------------------------------------------------------------------------
# The layers: slices of a dense nn.Linear, so that they can be compared with it.


def _check_split(name: str, features: int, world_size: int) -> int:
    check_int("world_size", world_size, low=1)
    if features % world_size:
        raise ValueError(
            f"{name} has {features} features, which do not divide by the tensor-parallel degree "
            f"world_size={world_size}; choose a world_size that divides {features}"
        )
    return features // world_size


def _check_linear(name: str, linear: Any) -> nn.Linear:
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"{name} must be a torch.nn.Linear, got {type(linear).__name__}")
    return linear


def _check_shape(fn_name: str, y: Any, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"{fn_name} must return a tensor of shape {shape}, got {got}")
    return y


class ColumnParallelLinear(nn.Module):
    """Rank ``rank``'s rows of a dense ``nn.Linear``'s weight: output features split N ways.

    ``forward(x)`` takes the whole input and returns this rank's ``out_features / N``
    outputs. ``column_fn`` replaces :func:`column_parallel_linear` (the student seam).
    """

    def __init__(self, linear: nn.Linear, rank: int, world_size: int, *, group=None, column_fn=None):
        super().__init__()
        _check_linear("linear", linear)
        part = _check_split(f"ColumnParallelLinear's output ({linear})", linear.out_features, world_size)
        check_int("rank", rank, low=0, high=world_size - 1)
        if column_fn is not None and not callable(column_fn):
            raise ValueError(
                f"column_fn must be a function (x, weight_shard, bias_shard) -> y, got {column_fn!r}"
            )
        rows = slice(rank * part, (rank + 1) * part)
        self.weight = nn.Parameter(linear.weight.detach()[rows].clone())
        self.bias = nn.Parameter(linear.bias.detach()[rows].clone()) if linear.bias is not None else None
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.rank, self.world_size, self.group = rank, world_size, group
        self.column_fn = column_fn
        self.traffic = Traffic()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.column_fn is None:
            return column_parallel_linear(x, self.weight, self.bias, group=self.group, traffic=self.traffic)
        shape = (*x.shape[:-1], self.out_features // self.world_size)
        return _check_shape("column_fn", self.column_fn(x, self.weight, self.bias), shape)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features} "
            f"(this rank: {self.out_features // self.world_size}), rank={self.rank}/{self.world_size}"
        )


class RowParallelLinear(nn.Module):
    """Rank ``rank``'s columns of a dense ``nn.Linear``'s weight: input features split N ways.

    ``forward(x_shard)`` takes this rank's ``in_features / N`` inputs and returns the whole
    output (all-reduced); every rank holds the whole bias and adds it once, after the sum.
    ``row_fn`` replaces :func:`row_parallel_linear` (the student seam).
    """

    def __init__(self, linear: nn.Linear, rank: int, world_size: int, *, group=None, row_fn=None):
        super().__init__()
        _check_linear("linear", linear)
        part = _check_split(f"RowParallelLinear's input ({linear})", linear.in_features, world_size)
        check_int("rank", rank, low=0, high=world_size - 1)
        if row_fn is not None and not callable(row_fn):
            raise ValueError(f"row_fn must be a function (x_shard, weight_shard, bias) -> y, got {row_fn!r}")
        cols = slice(rank * part, (rank + 1) * part)
        self.weight = nn.Parameter(linear.weight.detach()[:, cols].clone())
        self.bias = nn.Parameter(linear.bias.detach().clone()) if linear.bias is not None else None
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.rank, self.world_size, self.group = rank, world_size, group
        self.row_fn = row_fn
        self.traffic = Traffic()

    def forward(self, x_shard: torch.Tensor) -> torch.Tensor:
        if self.row_fn is None:
            return row_parallel_linear(
                x_shard, self.weight, self.bias, group=self.group, traffic=self.traffic
            )
        shape = (*x_shard.shape[:-1], self.out_features)
        return _check_shape("row_fn", self.row_fn(x_shard, self.weight, self.bias), shape)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features} (this rank: {self.in_features // self.world_size}), "
            f"out_features={self.out_features}, rank={self.rank}/{self.world_size}"
        )


class ParallelMLP(nn.Module):
    """Megatron's MLP block: column-parallel ``fc1``, ReLU on the shard, row-parallel ``fc2``.

    Built by slicing a dense ``Linear -> ReLU -> Linear`` (``fc1``, ``fc2``, left as they
    are); one all-reduce in the forward pass (``g``, after ``fc2``) and one in the backward
    pass (``f``, the input's gradient, when the input needs one). :attr:`traffic` counts the
    library's ``f`` and ``g``; a student's ``column_fn`` / ``row_fn`` communicates on its own.
    """

    def __init__(
        self,
        fc1: nn.Linear,
        fc2: nn.Linear,
        rank: int,
        world_size: int,
        *,
        group=None,
        column_fn=None,
        row_fn=None,
    ):
        super().__init__()
        _check_linear("fc1", fc1)
        _check_linear("fc2", fc2)
        if fc1.out_features != fc2.in_features:
            raise ValueError(
                f"fc1's outputs ({fc1.out_features}) must be fc2's inputs, got {fc2.in_features}"
            )
        self.fc1 = ColumnParallelLinear(fc1, rank, world_size, group=group, column_fn=column_fn)
        self.fc2 = RowParallelLinear(fc2, rank, world_size, group=group, row_fn=row_fn)

    @property
    def traffic(self) -> Traffic:
        """What this block's all-reduces moved (``f``'s in fc1, ``g``'s in fc2)."""
        a, b = self.fc1.traffic, self.fc2.traffic
        return Traffic(a.forward + b.forward, a.backward + b.backward, a.calls + b.calls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def find_mlp_block(model: nn.Sequential) -> int:
    """Index ``i`` of the first ``Linear, ReLU, Linear`` in ``model`` (the part to split)."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"model must be an nn.Sequential (MnistCNN, MLP), got {type(model).__name__}")
    layers = list(model)
    for i in range(len(layers) - 2):
        a, r, b = layers[i : i + 3]
        if isinstance(a, nn.Linear) and isinstance(r, nn.ReLU) and isinstance(b, nn.Linear):
            return i
    raise ValueError(f"model has no Linear -> ReLU -> Linear block to split: {model!r}")


def parallelize(
    model: nn.Sequential, rank: int, world_size: int, *, group=None, column_fn=None, row_fn=None
) -> nn.Sequential:
    """A copy of ``model`` whose first dense ``Linear, ReLU, Linear`` is a :class:`ParallelMLP`.

    On the lecture's CNN that is its head, Dense(1024) -> Dense(10); on the MLP, all of it.
    The other layers are copied whole (replicated on every rank).
    """
    i = find_mlp_block(model)
    layers = [copy.deepcopy(layer) for layer in model]
    block = ParallelMLP(
        model[i], model[i + 2], rank, world_size, group=group, column_fn=column_fn, row_fn=row_fn
    )
    return nn.Sequential(*layers[:i], block, *layers[i + 3 :])


@torch.no_grad()
def gather_dense(tp_model: nn.Sequential, dense: nn.Sequential, *, group=None) -> nn.Sequential:
    """Load ``tp_model``'s weights, shards all-gathered, into ``dense`` (collective; returns it)."""
    i = find_mlp_block(dense)
    block = next(m for m in tp_model if isinstance(m, ParallelMLP))
    n = block.fc1.world_size
    for j, layer in enumerate(tp_model):
        if layer is not block:
            k = j if j < i else j + 2
            dense[k].load_state_dict(layer.state_dict())
    parts = [torch.empty_like(block.fc1.weight) for _ in range(n)]
    dist.all_gather(parts, block.fc1.weight.contiguous(), group=group)
    dense[i].weight.copy_(torch.cat(parts, dim=0))
    if block.fc1.bias is not None:
        parts = [torch.empty_like(block.fc1.bias) for _ in range(n)]
        dist.all_gather(parts, block.fc1.bias.contiguous(), group=group)
        dense[i].bias.copy_(torch.cat(parts))
    parts = [torch.empty_like(block.fc2.weight) for _ in range(n)]
    dist.all_gather(parts, block.fc2.weight.contiguous(), group=group)
    dense[i + 2].weight.copy_(torch.cat(parts, dim=1))
    if block.fc2.bias is not None:
        dense[i + 2].bias.copy_(block.fc2.bias)
    return dense


# ---------------------------------------------------------------------------------------
# What it costs: bytes communicated and parameters held per rank.


def mlp_block_bytes(
    batch: int,
    in_features: int,
    out_features: int,
    world_size: int,
    *,
    element_size: int = 4,
    input_grad: bool = True,
) -> dict[str, int]:
    """Bytes of one training step of a :class:`ParallelMLP` on ``batch`` examples.

    ``allreduced``: the tensors' sizes, forward (``g``: ``batch x out_features``) plus
    backward (``f``: ``batch x in_features``, only when the input needs a gradient: not for
    the MLP on raw pixels). ``sent``: what a ring all-reduce of them makes all N ranks send
    together, ``2 (N-1)`` times that (each rank ``2 (N-1)/N``;
    :func:`dlcourse.collectives.ring_allreduce_bytes`).
    """
    for name, value in (("batch", batch), ("in_features", in_features), ("out_features", out_features)):
        check_int(name, value, low=1)
    check_int("world_size", world_size, low=1)
    check_int("element_size", element_size, low=1)
    forward = batch * out_features * element_size
    backward = batch * in_features * element_size if input_grad else 0
    total = forward + backward
    return {
        "forward": forward,
        "backward": backward,
        "allreduced": total,
        "sent": ring_allreduce_bytes(total, world_size),
    }


def tp_parameters_per_rank(model: nn.Sequential, world_size: int) -> int:
    """Parameters one rank holds when ``model``'s MLP block is split ``world_size`` ways.

    Replicated layers whole; ``fc1``'s weight and bias and ``fc2``'s weight divided by N;
    ``fc2``'s bias whole (added once, after the all-reduce, but held by every rank).
    """
    i = find_mlp_block(model)
    fc1, fc2 = model[i], model[i + 2]
    _check_split(f"fc1's output ({fc1})", fc1.out_features, world_size)
    rest = sum(p.numel() for j, layer in enumerate(model) if j not in (i, i + 2) for p in layer.parameters())
    split = fc1.weight.numel() + fc2.weight.numel() + (fc1.bias.numel() if fc1.bias is not None else 0)
    whole = fc2.bias.numel() if fc2.bias is not None else 0
    return rest + split // world_size + whole


# ---------------------------------------------------------------------------------------
# Training: every rank sees the whole batch; the MLP block is split over the ranks.


@dataclass
class TensorParallelConfig:
    """Settings of a tensor-parallel run."""

    model: str = "mlp"  # "cnn" (its dense head is split) or "mlp" (all of it is split)
    epochs: int = 1  # passes over the training data
    batch_size: int = 100  # examples per step, the same batch on every rank
    lr: float = 0.1  # learning rate lambda
    optimizer: str = "sgd"  # "sgd", "momentum" or "adam"
    momentum: float = 0.9  # used by "momentum" only
    seed: int = 0  # seeds the model's initialization and the batch order
    max_steps: int | None = None  # stop after this many steps (None: every epoch)
    dtype: str = "float32"  # "float64" makes rounding negligible in equivalence checks
    recompute: bool = False  # recompute the replicated layers' activations in backward (recompute)
    column_fn: Callable | None = field(default=None, repr=False)  # seam: (x, w_shard, b_shard) -> y_shard
    row_fn: Callable | None = field(default=None, repr=False)  # seam: (x_shard, w_shard, b) -> y

    def __post_init__(self) -> None:
        check_choice("model", self.model, MODELS)
        check_training_settings(self)
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, low=0)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("recompute", self.recompute, (False, True))
        for name in ("column_fn", "row_fn"):
            fn = getattr(self, name)
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be a function or None, got {fn!r}")

    def check_workers(self, num_workers: int) -> None:
        """The MLP block's hidden features must divide by the tensor-parallel degree N."""
        check_int("num_workers", num_workers, low=1)
        model = make_model(self.model)
        i = find_mlp_block(model)
        _check_split(f"{self.model}'s layer {i} ({model[i]})", model[i].out_features, num_workers)


def tensor_parallel_worker(
    rank: int, world_size: int, train: Dataset, test: Dataset | None, config: TensorParallelConfig
) -> dict[str, Any]:
    """One rank: the same batches as every other rank, its shard of the MLP block."""
    device, dtype = device_for(rank), DTYPES[config.dtype]
    dense = make_model(config.model, seed=config.seed).to(device, dtype)
    tp = parallelize(dense, rank, world_size, column_fn=config.column_fn, row_fn=config.row_fn)
    i = find_mlp_block(dense)
    model = tp  # what runs; tp keeps the layer order gather_dense expects
    if config.recompute and i > 0:  # the replicated layers before the block are recomputed
        model = nn.Sequential(recompute_segments(tp[:i], 1), *tp[i:])
    block = next(m for m in tp if isinstance(m, ParallelMLP))
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, config.momentum)
    steps = len(train) // config.batch_size
    total = (
        config.epochs * steps if config.max_steps is None else min(config.epochs * steps, config.max_steps)
    )
    losses, step_s, peak_activations = [], [], 0
    start = time.perf_counter()
    order: list[torch.Tensor] = []
    for step in range(total):
        epoch, t = divmod(step, steps)
        if t == 0:  # rank 0's order of the whole data set: the same batches on every rank
            order = worker_batches(len(train), steps, epoch, config.seed, 0)
        X, y = train.X[order[t]].to(device, dtype), train.y[order[t]].to(device)
        t0 = time.perf_counter()
        with SavedActivations(tp) as saved:
            loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step_s.append(time.perf_counter() - t0)
        peak_activations = max(peak_activations, saved.peak)
        losses.append(loss.item())  # the same on every rank: the logits were all-reduced
        check_finite(losses[-1], runtime="tensor-parallel", index=step + 1, worker=rank)
    wall_s = time.perf_counter() - start
    held = state_bytes(tp, optimizer)
    gather_dense(tp, dense)
    out = {
        "rank": rank,
        "steps": total,
        "batch": config.batch_size,
        "step_s": sum(step_s) / len(step_s) if step_s else 0.0,
        "step_s_median": statistics.median(step_s) if step_s else 0.0,
        "compute_s": None,  # the all-reduces sit inside forward and backward
        "sync_s": None,
        "delay_s": 0.0,
        "wall_s": wall_s,
        "parameter_count": sum(p.numel() for p in tp.parameters()),
        "state_bytes": held,
        "peak_activation_bytes": peak_activations,
        "allreduced_bytes": {"forward": block.traffic.forward, "backward": block.traffic.backward},
        "losses": losses,
    }
    if rank == 0:
        out["parameters"] = {k: v.detach().cpu().clone() for k, v in dense.state_dict().items()}
        out["test"] = evaluate(dense, test) if test is not None else None
    return out


def train_tensor_parallel(
    train: Dataset,
    num_workers: int,
    config: TensorParallelConfig | None = None,
    *,
    test: Dataset | None = None,
    backend: str = "auto",
    timeout: float = 60.0,
    run_timeout: float | None = None,
    threads_per_worker: int | None = None,
) -> DataParallelResult:
    """Train with the model's MLP block split over ``num_workers`` ranks (tensor parallelism).

    Every rank takes the same ``config.batch_size`` examples per step (the batch order of
    rank 0 of :func:`dlcourse.worker_run.worker_batches` over the whole ``train``). Returns a
    :class:`~dlcourse.worker_run.DataParallelResult` whose ``parameters`` are the dense
    model's (shards gathered), comparable with single-process training; ``extra`` holds per
    rank the parameters held, ``state_bytes`` (:func:`dlcourse.memory.state_bytes`), the
    peak bytes of saved activations and the bytes all-reduced. ``backend``, ``timeout``,
    ``run_timeout`` and ``threads_per_worker`` go to :func:`dlcourse.launcher.launch`.
    """
    config = config if config is not None else TensorParallelConfig()
    if not isinstance(config, TensorParallelConfig):
        raise ValueError(f"config must be a TensorParallelConfig or None, got {type(config).__name__}")
    check_dataset("train", train)
    if test is not None:
        check_dataset("test", test)
    config.check_workers(num_workers)
    if len(train) < config.batch_size:
        raise ValueError(
            f"batch_size must be at most the {len(train)} training examples, got {config.batch_size}"
        )
    outputs = launch(
        tensor_parallel_worker,
        num_workers,
        train,
        test,
        config,
        backend=backend,
        timeout=timeout,
        run_timeout=run_timeout,
        threads_per_worker=threads_per_worker,
    )
    head = outputs[0]
    keys = ("rank", "steps", "batch", "step_s", "compute_s", "sync_s", "delay_s")
    n = num_workers
    sent = ring_allreduce_bytes(sum(head["allreduced_bytes"].values()), n)  # every rank reduces the same
    return DataParallelResult(
        strategy="tensor-parallel",
        num_workers=n,
        parameters=head["parameters"],
        step_loss=head["losses"],
        per_worker=[{k: o[k] for k in keys} for o in outputs],
        examples=head["steps"] * config.batch_size,  # every rank works on the same examples
        wall_s=head["wall_s"],
        bytes_sent=sent,
        test=head["test"],
        extra={
            "per_rank": [
                {
                    k: o[k]
                    for k in (
                        "parameter_count",
                        "state_bytes",
                        "peak_activation_bytes",
                        "allreduced_bytes",
                        "step_s_median",
                    )
                }
                for o in outputs
            ]
        },
    )
