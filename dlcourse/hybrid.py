"""Combining model and data parallelism: pipeline stages x data-parallel replicas.

The lecture ends its comparison with "combining model and data parallelism": cut the
network into K stages (model parallelism) and run R copies of that cut side by side on
different data (data parallelism). Krizhevsky ("One weird trick for parallelizing
convolutional neural networks", 2014) uses data parallelism for the convolutional layers
and model parallelism for the dense ones; Megatron-LM and GPipe combine the two the same
way at scale. Here K * R processes form a grid::

                 stage 0     stage 1          rank = replica * K + stage
    replica 0    rank 0  ->  rank 1           activations -> , gradients <-
    replica 1    rank 2  ->  rank 3
                   |           |
               DDP group   DDP group          gradients averaged down each column

Each row is a model-parallel pipeline working on its part of the batch; each column is a
data-parallel group: the stage is wrapped in ``DistributedDataParallel`` over the ranks
that hold the same stage, so its gradients are averaged during the backward pass. The
result equals one process training on the whole batch (:func:`run_hybrid` and the tests
check it).

One micro-batch per replica and step: DDP arms its gradient hooks at each forward, so
several forwards before their backwards (GPipe) need DDP's internals;
``torch.distributed.pipelining`` reaches into them for that. Pipelining itself is taught
in :mod:`dlcourse.pipeline`.

Run ``dlcourse train --strategy hybrid --stages 2 --workers 2`` (4 processes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from dlcourse._validate import check_float, check_int
from dlcourse.divergence import check_finite, find_diverged
from dlcourse.model_parallel import split_model, stage_bounds
from dlcourse.pipeline import gpipe_step, stage_input_shapes
from dlcourse.train import batches, check_training_settings, make_optimizer


@dataclass
class HybridConfig:
    """How :func:`hybrid_worker` trains."""

    num_stages: int = 2  # K: model-parallel stages per replica
    epochs: int = 1  # passes over the training data
    batch_size: int = 100  # examples per step over all replicas (each gets batch_size / R)
    lr: float = 0.1  # learning rate
    optimizer: str = "sgd"  # "sgd", "momentum" or "adam"
    momentum: float = 0.9  # for "momentum"
    seed: int = 0  # shuffle order, the same on every rank
    max_steps: int | None = None  # stop after this many steps (None: all epochs)

    def __post_init__(self) -> None:
        check_int("num_stages", self.num_stages, low=1)
        check_training_settings(self)
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, low=1)


def grid_position(rank: int, num_stages: int) -> tuple[int, int]:
    """``(replica, stage)`` of ``rank`` in the grid (``rank = replica * K + stage``)."""
    check_int("rank", rank, low=0)
    check_int("num_stages", num_stages, low=1)
    return divmod(rank, num_stages)


def hybrid_worker(
    rank: int, world_size: int, model: nn.Sequential, X: torch.Tensor, y: torch.Tensor, config: HybridConfig
) -> dict:
    """Worker function: train one stage of one replica; returns its weights and losses."""
    K = config.num_stages
    R = world_size // K
    replica, s = grid_position(rank, K)
    # every rank must create every group, in the same order, even those it is not in
    stage_groups = [dist.new_group([s_ + K * r for r in range(R)]) for s_ in range(K)]
    stage = split_model(model, K)[s]
    ddp = DDP(stage, process_group=stage_groups[s])  # gradients averaged down this column
    opt = make_optimizer(config.optimizer, ddp.parameters(), config.lr, config.momentum)
    part = config.batch_size // R
    in_shape = stage_input_shapes(model, K, (part, *X.shape[1:]))[s]
    prev = rank - 1 if s > 0 else None
    nxt = rank + 1 if s < K - 1 else None
    generator = torch.Generator().manual_seed(config.seed)
    step_loss, steps = [], 0
    start = time.perf_counter()
    for _ in range(config.epochs):
        for idx in batches(len(X), config.batch_size, generator):
            if len(idx) != config.batch_size or steps == config.max_steps:
                continue  # a partial batch would not split evenly over the replicas
            mine = idx[replica * part : (replica + 1) * part]  # this replica's part of the batch
            opt.zero_grad(set_to_none=True)
            losses, _ = gpipe_step(ddp, X[mine], y[mine], 1, prev_rank=prev, next_rank=nxt, in_shape=in_shape)
            opt.step()
            steps += 1
            if nxt is None:  # the full batch's loss is the mean of the replicas' losses
                loss = torch.tensor(losses[0])
                dist.all_reduce(loss, group=stage_groups[s])
                step_loss.append(loss.item() / R)
                # every last stage sees the same mean: a loss that blew up stops the run (Diverged)
                check_finite(step_loss[-1], runtime="hybrid", index=steps, worker=rank)
    return {
        "replica": replica,
        "stage": s,
        "state": {k: v.clone() for k, v in stage.state_dict().items()},
        "step_loss": step_loss,
        "steps": steps,
        "wall_s": time.perf_counter() - start,
    }


@dataclass(repr=False)
class HybridResult:
    """What a hybrid run produced; ``state_dict`` loads into the unsplit model."""

    num_stages: int  # K
    num_replicas: int  # R
    state_dict: dict[str, torch.Tensor]  # the trained weights (replica 0's; all replicas agree)
    replicas_agree: bool  # True when every replica ended with the same weights, as DDP promises
    step_loss: list[float] = field(default_factory=list)  # full-batch training loss per step
    wall_s: float = 0.0  # seconds of training on the slowest rank
    steps: int = 0  # optimizer steps
    bytes_sent: int = 0  # activations + gradients between stages + DDP's gradient all-reduces

    def __repr__(self) -> str:
        last = f", last loss={self.step_loss[-1]:.4f}" if self.step_loss else ""
        return f"HybridResult(K={self.num_stages} x R={self.num_replicas}, steps={self.steps}{last})"


def run_hybrid(
    model: nn.Sequential,
    X: torch.Tensor,
    y: torch.Tensor,
    num_replicas: int = 2,
    config: HybridConfig | None = None,
    *,
    timeout: float = 30.0,
) -> HybridResult:
    """Train ``model`` on ``(X, y)`` with K stages x ``num_replicas`` replicas (K * R processes)."""
    from dlcourse.launcher import WorkerError, launch

    config = config or HybridConfig()
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"model must be an nn.Sequential (cut by layer index), got {type(model).__name__}")
    stage_bounds(len(model), config.num_stages)
    check_int("num_replicas", num_replicas, low=1)
    if config.batch_size % num_replicas:
        raise ValueError(f"batch_size ({config.batch_size}) must be divisible by num_replicas={num_replicas}")
    if len(X) != len(y) or len(X) < config.batch_size:
        raise ValueError(f"X and y must have the same length >= batch_size, got {len(X)} and {len(y)}")
    check_float("timeout", timeout, low=0.0, low_open=True)
    K, R = config.num_stages, num_replicas
    try:
        parts = launch(hybrid_worker, K * R, model, X, y, config, backend="gloo", timeout=timeout)
    except WorkerError as e:
        diverged = find_diverged(e)  # the loss blew up: say where, not how the launcher saw it
        if diverged is None:
            raise
        raise diverged from None
    state = {k: v for part in parts[:K] for k, v in part["state"].items()}
    agree = all(torch.equal(part["state"][k], state[k]) for part in parts[K:] for k in part["state"])
    steps = parts[0]["steps"]
    # per step, per replica: activations forward and gradients back across the K - 1 cuts
    # (the inputs of stages 1..K-1), plus each stage's ring all-reduce (2 (R-1)/R of its
    # gradient bytes on each of its R ranks)
    shapes = stage_input_shapes(model, K, (config.batch_size // R, *X.shape[1:]))
    cut_bytes = R * sum(2 * torch.Size(s).numel() for s in shapes[1:]) * X.element_size()
    ring_bytes = 2 * (R - 1) * sum(t.numel() * t.element_size() for t in model.parameters())
    return HybridResult(
        num_stages=K,
        num_replicas=R,
        state_dict=state,
        replicas_agree=agree,
        step_loss=parts[K - 1]["step_loss"],
        wall_s=max(p["wall_s"] for p in parts),
        steps=steps,
        bytes_sent=steps * (cut_bytes + ring_bytes),
    )
