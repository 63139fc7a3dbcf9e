"""Model parallelism: different layers on different devices or machines.

The lecture ("Model Parallelism") puts each layer of one network on a different machine:
the activations travel forward from machine to machine, the gradients travel back. This
follows DistBelief (Dean et al., "Large Scale Distributed Deep Networks", NIPS 2012), which
partitions one model across machines, and the lecture's Keras "device parallelism" example
(a shared LSTM whose two branches run on two GPUs, merged on the CPU).

Four pieces, each the smallest version of the idea:

- :class:`ModelParallel`: an ``nn.Sequential`` cut into K stages over a device list in one
  process (``["cpu", "cuda:0"]`` mixed is fine). Autograd follows ``.to(device)``, so the
  backward pass crosses the devices by itself.
- :func:`model_parallel_step` / :func:`run_model_parallel`: the same cut over K processes,
  one stage per rank; activations go forward and gradients come back with ``send``/``recv``.
- :class:`BranchParallelLSTM`: device-parallel branches of :class:`~dlcourse.models.SharedLSTM`.
- :func:`memory_per_rank`: parameter and activation bytes per rank, model parallel vs data
  parallel, to show why model parallelism fits models that one device cannot hold.

Run ``dlcourse train --strategy model-parallel --stages 2`` to train this way.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.memory import segment_bounds
from dlcourse.models import SharedLSTM

STRATEGIES = ("model-parallel", "data-parallel")


# ----------------------------------------------------------------------------- cutting a model


def check_device(name: str, device: str | torch.device) -> torch.device:
    """Return ``device`` as a ``torch.device`` if this machine has it; else ``ValueError``."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{name} must be a device such as 'cpu' or 'cuda:0', got {device!r}") from e
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if device.index is None else device.index
        if index >= count:
            have = f"cuda:0..cuda:{count - 1}" if count else "no CUDA devices"
            raise ValueError(
                f"{name} {str(device)!r} is not available on this machine (it has {have}, and 'cpu')"
            )
        return torch.device("cuda", index)
    raise ValueError(f"{name} must be 'cpu' or 'cuda:i', got {str(device)!r}")


def stage_bounds(num_layers: int, num_stages: int) -> list[tuple[int, int]]:
    """Cut ``range(num_layers)`` into ``num_stages`` contiguous ``[start, stop)`` ranges.

    Layer counts differ by at most one; the earlier stages get the extra layers.
    """
    check_int("num_layers", num_layers, low=1)
    check_int("num_stages", num_stages, low=1)
    if num_stages > num_layers:
        raise ValueError(f"num_stages must be <= the model's {num_layers} layers, got {num_stages}")
    return segment_bounds(num_layers, num_stages)  # the cut recomputation's segments use too


def split_model(model: nn.Sequential, num_stages: int) -> list[nn.Sequential]:
    """Copies of ``model``'s layers cut into ``num_stages`` consecutive stages.

    Each stage keeps the full model's layer names (``"5.weight"``), so the stages'
    state dicts and gradients line up with the unsplit model's. The model itself is not
    changed (the stages are deep copies).
    """
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"model must be an nn.Sequential (cut by layer index), got {type(model).__name__}")
    bounds = stage_bounds(len(model), num_stages)
    names = list(model._modules)
    return [
        nn.Sequential(OrderedDict((names[i], copy.deepcopy(model[i])) for i in range(start, stop)))
        for start, stop in bounds
    ]


@torch.no_grad()
def stage_shapes(stages: Sequence[nn.Module], input_shape: Sequence[int]) -> list[torch.Size]:
    """The output shape of every stage for an input of ``input_shape``.

    Computed on the ``meta`` device (shapes only, no arithmetic), so every rank can size
    its receive buffers before the first message arrives.
    """
    x = torch.empty(tuple(input_shape), device="meta")
    shapes = []
    for stage in stages:
        x = copy.deepcopy(stage).to("meta")(x)
        shapes.append(x.shape)
    return shapes


class ModelParallel(nn.Module):
    """An ``nn.Sequential`` cut into one stage per device, in one process.

    ``ModelParallel(make_model("cnn"), ["cpu", "cuda:0"])(X)`` runs the first layers on the
    CPU and the rest on the GPU; the result is on the last device. Gradients flow back
    across the devices because ``Tensor.to`` is differentiable.
    """

    def __init__(self, model: nn.Sequential, devices: Sequence[str | torch.device]) -> None:
        super().__init__()
        if isinstance(devices, (str, torch.device)) or len(devices) == 0:
            raise ValueError(f"devices must be a non-empty list such as ['cpu', 'cuda:0'], got {devices!r}")
        self.devices = [check_device(f"devices[{k}]", d) for k, d in enumerate(devices)]
        self.stages = nn.ModuleList(
            stage.to(device) for stage, device in zip(split_model(model, len(self.devices)), self.devices)
        )

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        for stage, device in zip(self.stages, self.devices):
            X = stage(X.to(device))  # the only line that makes this model parallel
        return X

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters under the unsplit model's names, on the CPU."""
        return {name: t.cpu() for stage in self.stages for name, t in stage.state_dict().items()}

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{d}: layers {list(s._modules)[0]}..{list(s._modules)[-1]}"
            for s, d in zip(self.stages, self.devices)
        )
        return f"ModelParallel(stages={len(self.stages)}; {parts})"


# ----------------------------------------------------------------------------- across processes


def forward_stage(stage: nn.Module, rank: int, world_size: int, X: torch.Tensor, in_shape) -> tuple:
    """One stage's forward: take the input (rank 0) or receive it, run the stage, send on.

    Returns ``(x_in, y_hat)``; ``x_in`` requires grad on later stages so that the
    backward pass can send its gradient to the previous rank.
    """
    if rank == 0:
        x_in = X
    else:
        x_in = torch.empty(in_shape)
        dist.recv(x_in, src=rank - 1)
        x_in.requires_grad_()
    y_hat = stage(x_in)
    if rank < world_size - 1:
        dist.send(y_hat.detach().contiguous(), dst=rank + 1)
    return x_in, y_hat


def backward_stage(rank: int, world_size: int, x_in: torch.Tensor, y_hat: torch.Tensor, loss=None) -> None:
    """One stage's backward: start from the loss (last rank) or the received gradient."""
    if rank == world_size - 1:
        loss.backward()
    else:
        grad = torch.empty_like(y_hat)
        dist.recv(grad, src=rank + 1)
        y_hat.backward(grad)
    if rank > 0:
        dist.send(x_in.grad.contiguous(), dst=rank - 1)


def model_parallel_step(
    rank: int,
    world_size: int,
    model: nn.Sequential,
    X: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable = F.cross_entropy,
) -> dict:
    """Worker function: one forward and backward of ``model`` cut into ``world_size`` ranks.

    Rank k keeps stage k. Returns ``{"grads": {name: grad}}`` for the rank's parameters and,
    on the last rank, also ``"y_hat"`` and ``"loss"``. Use it with
    :func:`dlcourse.launcher.launch`, or call :func:`run_model_parallel`.
    """
    stages = split_model(model, world_size)
    stage = stages[rank]
    shapes = stage_shapes(stages, X.shape)  # works on copies: the stages stay where they are
    in_shape = X.shape if rank == 0 else shapes[rank - 1]
    x_in, y_hat = forward_stage(stage, rank, world_size, X, in_shape)
    loss = loss_fn(y_hat, y) if rank == world_size - 1 else None
    backward_stage(rank, world_size, x_in, y_hat, loss)
    result = {"grads": {name: p.grad.clone() for name, p in stage.named_parameters()}}
    if rank == world_size - 1:
        result.update(y_hat=y_hat.detach(), loss=loss.item())
    return result


@dataclass(repr=False)
class ModelParallelResult:
    """What one model-parallel step across processes produced."""

    y_hat: torch.Tensor  # the last stage's output (logits), shape (n, classes)
    loss: float  # the loss on the last stage
    grads: dict[str, torch.Tensor] = field(default_factory=dict)  # every parameter's gradient, full names

    def __repr__(self) -> str:
        shape = tuple(self.y_hat.shape)
        return f"ModelParallelResult(loss={self.loss:.6f}, y_hat={shape}, grads={len(self.grads)})"


def run_model_parallel(
    model: nn.Sequential,
    X: torch.Tensor,
    y: torch.Tensor,
    num_stages: int,
    *,
    timeout: float = 30.0,
    loss_fn: Callable = F.cross_entropy,
) -> ModelParallelResult:
    """Run one step of ``model`` cut into ``num_stages`` processes; gather its results."""
    from dlcourse.launcher import launch

    stage_bounds(len(model), num_stages)  # validates num_stages before any process starts
    if len(X) != len(y) or len(X) == 0:
        raise ValueError(f"X and y must have the same non-zero length, got {len(X)} and {len(y)}")
    check_float("timeout", timeout, low=0.0, low_open=True)
    parts = launch(
        model_parallel_step, num_stages, model, X, y, loss_fn, timeout=timeout, run_timeout=4 * timeout
    )
    grads = {name: g for part in parts for name, g in part["grads"].items()}
    return ModelParallelResult(y_hat=parts[-1]["y_hat"], loss=parts[-1]["loss"], grads=grads)


# ----------------------------------------------------------------------------- device-parallel branches


class BranchParallelLSTM(nn.Module):
    """The lecture's shared LSTM with one branch per device and the merge on a third.

    Keras puts ``shared_lstm(tweet_a)`` on ``/gpu:0``, ``shared_lstm(tweet_b)`` on
    ``/gpu:1`` and the concatenation on ``/cpu:0``. Here the one set of weights lives on
    ``merge_device``; each branch reads a copy of it on its own device. Because the copy
    (``Tensor.to``) is differentiable, both branches' gradients add up in the one shared
    weight, exactly as when one device runs both branches.
    """

    def __init__(
        self,
        model: SharedLSTM,
        devices: Sequence[str | torch.device] = ("cpu", "cpu"),
        merge_device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        if not isinstance(model, SharedLSTM):
            raise ValueError(f"model must be a SharedLSTM, got {type(model).__name__}")
        if isinstance(devices, (str, torch.device)) or len(devices) != 2:
            raise ValueError(f"devices must be a list of 2 devices (one per branch), got {devices!r}")
        self.devices = [check_device(f"devices[{k}]", d) for k, d in enumerate(devices)]
        self.merge_device = check_device("merge_device", merge_device)
        self.model = copy.deepcopy(model).to(self.merge_device)

    def encode_on(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The shared LSTM branch run on ``device`` with the shared weights copied there."""
        weights = {name: p.to(device) for name, p in self.model.lstm.named_parameters()}
        _, (h, _) = functional_call(self.model.lstm, weights, (x.to(device),))
        return h[-1]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # On GPUs the two branches overlap: CUDA kernels are queued asynchronously.
        code_a = self.encode_on(a, self.devices[0])
        code_b = self.encode_on(b, self.devices[1])
        merged = torch.cat([code_a.to(self.merge_device), code_b.to(self.merge_device)], dim=1)
        return self.model.head(merged)

    def __repr__(self) -> str:
        return (
            f"BranchParallelLSTM(branches={[str(d) for d in self.devices]}, merge={str(self.merge_device)!r})"
        )


# ----------------------------------------------------------------------------- memory per rank


@dataclass(repr=False)
class MemoryFootprint:
    """Bytes each rank holds for one training step (float32 unless the model says otherwise)."""

    strategy: str  # "model-parallel" (one stage per rank) or "data-parallel" (a full replica per rank)
    num_ranks: int  # K stages or N replicas
    batch_size: int  # examples in the whole step (data parallel: split over the ranks)
    parameter_bytes: list[int]  # per rank: the parameters it stores (gradients take as much again)
    activation_bytes: list[int]  # per rank: layer outputs kept for the backward pass

    @property
    def total_bytes(self) -> list[int]:
        """Per rank: parameters + their gradients + activations."""
        return [2 * p + a for p, a in zip(self.parameter_bytes, self.activation_bytes)]

    @property
    def max_rank_bytes(self) -> int:
        """What the fullest rank needs: it must fit on one device."""
        return max(self.total_bytes)

    def __repr__(self) -> str:
        return (
            f"MemoryFootprint({self.strategy}, ranks={self.num_ranks}, batch={self.batch_size}, "
            f"max per rank={self.max_rank_bytes / 2**20:.2f} MiB)"
        )


def _parameter_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _activation_bytes(layers: nn.Sequential, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    total = 0
    for layer in layers:
        x = layer(x)
        total += x.numel() * x.element_size()
    return total, x


@torch.no_grad()
def memory_per_rank(
    model: nn.Sequential,
    input_shape: Sequence[int],
    num_ranks: int,
    strategy: str = "model-parallel",
) -> MemoryFootprint:
    """Parameter and activation bytes per rank for one step on a batch of ``input_shape``.

    Model parallel: rank k stores stage k's parameters and the activations of stage k for
    the whole batch. Data parallel: every rank stores all parameters and the activations
    of its ``batch / num_ranks`` examples. Computed on the ``meta`` device: no memory used.
    """
    check_choice("strategy", strategy, STRATEGIES)
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"model must be an nn.Sequential, got {type(model).__name__}")
    if len(input_shape) < 1 or any(not isinstance(s, int) or s < 1 for s in input_shape):
        raise ValueError(f"input_shape must be positive integers (batch first), got {tuple(input_shape)}")
    batch = input_shape[0]
    if strategy == "model-parallel":
        # one stage of at least one layer per rank
        check_int("num_ranks", num_ranks, low=1, high=len(model))
        stages = [s.to("meta") for s in split_model(model, num_ranks)]
        x = torch.empty(tuple(input_shape), device="meta")
        params, acts = [], []
        for stage in stages:
            nbytes, x = _activation_bytes(stage, x)
            acts.append(nbytes)
            params.append(_parameter_bytes(stage))
        return MemoryFootprint(strategy, num_ranks, batch, params, acts)
    check_int("num_ranks", num_ranks, low=1, high=batch)
    if batch % num_ranks:
        raise ValueError(f"input_shape[0] (the batch, {batch}) must be divisible by num_ranks={num_ranks}")
    replica = copy.deepcopy(model).to("meta")
    nbytes, _ = _activation_bytes(replica, torch.empty((batch // num_ranks, *input_shape[1:]), device="meta"))
    return MemoryFootprint(
        strategy, num_ranks, batch, [_parameter_bytes(replica)] * num_ranks, [nbytes] * num_ranks
    )
