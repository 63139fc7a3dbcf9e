"""Sharded data parallelism: ZeRO stages 1, 2 and 3, written out on ``torch.distributed``.

Data parallelism keeps a whole copy of the training state on every worker: parameters,
gradients and optimizer state, 4 + 4 + 4K bytes per parameter in float32 (K = 2 for Adam's
two moments). ZeRO (Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training
Trillion Parameter Models", SC 2020) removes the copies: each of the N ranks *owns* one
N-th of a flat vector of the parameters and keeps only what its shard needs.

- **Stage 1** shards the optimizer state. After backward the gradients are
  reduce-scattered (rank r receives the sum of chunk r), each rank steps only its own
  chunk, then an all-gather gives everyone the new parameters. Same bytes on the wire as
  DDP's all-reduce, which is itself a reduce-scatter followed by an all-gather.
- **Stage 2** also shards the gradients: each layer's gradient is reduce-scattered as soon
  as backward has produced it, and the full gradient is dropped.
- **Stage 3** also shards the parameters: a layer's full parameters are all-gathered just
  before its forward, freed after it, gathered again just before its backward and freed
  once its gradients are reduce-scattered. That is 1.5x DDP's bytes (two all-gathers and a
  reduce-scatter instead of one all-reduce) for memory that falls as 1/N.

The flat vector: the parameters of a *unit* (the whole model for stage 1, each layer for
stages 2 and 3, as FSDP wraps layers) are views of one buffer, padded with zeros to a
multiple of N so that every rank owns a chunk of the same size (:func:`shard_layout`). The
optimizer is ``torch.optim`` itself stepping the owned chunk: SGD, momentum and Adam act
element by element, so stepping a chunk is exactly stepping the whole tensor restricted to
it, and a student sees the optimizer they know (its state simply lives only on the owner).
Freeing a layer under stage 3 resizes its buffer's storage to 0 bytes and gathering resizes
it back, so the views autograd saved for backward see the gathered values (as FSDP does).

Run it::

    from dlcourse.data import load_mnist
    from dlcourse.sharding import train_zero
    result = train_zero(load_mnist().train, 2, stage=3)
    result.extra["memory"][0]   # bytes rank 0 held, next to result.extra["predicted"][0]

or ``dlcourse train --strategy zero --zero-stage 3 --workers 2``.

**The student seam (A5).** ``step_fn(flat_params, flat_grads, shard_update, rank,
world_size)`` is stage 1's step, called once per step after backward with the padded flat
parameters (the model's parameters are views of them), the padded flat gradient of this
rank's batch (not yet averaged) and ``shard_update(param_shard, grad_shard)``, which steps
the optimizer on the rank's own chunk ``flat_params[rank * S:(rank + 1) * S]`` with the
averaged gradient of that chunk. :func:`zero1_step` is the reference: reduce-scatter ->
``shard_update`` -> all-gather. Pass a student's own as ``train_zero(..., stage=1,
step_fn=f)``; a function defined in a notebook travels to the workers with cloudpickle.

PyTorch's own sharded data parallelism, ``torch.distributed.fsdp.fully_shard`` (FSDP2), is
here as :func:`fsdp2_worker`: the oracle the tests and the benchmark compare against.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dlcourse._validate import check_choice, check_int
from dlcourse.collectives import all_gather_bytes, reduce_scatter_bytes, ring_all_gather, ring_reduce_scatter
from dlcourse.data import Dataset
from dlcourse.memory import MemoryBreakdown, bytes_per_parameter, shard_numel, state_bytes
from dlcourse.models import make_model
from dlcourse.train import make_optimizer
from dlcourse.worker_run import (
    DataParallelConfig,
    DataParallelResult,
    WorkerRun,
    config_or_default,
    run_workers,
)

STAGES = (1, 2, 3)
STATE_PER_ELEMENT = {"sgd": 0, "momentum": 1, "adam": 2}  # optimizer tensors the size of the parameters

StepFn = Callable[[torch.Tensor, torch.Tensor, Callable[[torch.Tensor, torch.Tensor], None], int, int], None]


# ---------------------------------------------------------------------------------------
# The layout and what it costs: pure functions of sizes, no processes.


def shard_layout(numel: int, world_size: int) -> tuple[int, int]:
    """``(shard, padded)``: each of ``world_size`` ranks owns ``shard = ceil(numel / N)``
    elements of a flat vector zero-padded to ``padded = N * shard``."""
    check_int("numel", numel, low=1)
    shard = shard_numel(numel, world_size)
    return shard, shard * world_size


def check_shards(numels: Sequence[int], world_size: int, optimizer: str) -> None:
    """Refuse Adam when some rank's chunk of a unit would hold only padding (N > its size).

    Its optimizer state would be moments of zeros that no parameter uses: the layout is
    wrong for that N (use fewer ranks or bigger units).
    """
    check_choice("optimizer", optimizer, STATE_PER_ELEMENT)
    for i, numel in enumerate(numels):
        shard, _ = shard_layout(numel, world_size)
        if optimizer == "adam" and (world_size - 1) * shard >= numel:
            raise ValueError(
                f"num_workers={world_size} is too many for a unit of {numel} parameters (unit {i}): with "
                f"Adam the last rank's shard of {shard} would hold no parameters, only padding; "
                "use fewer workers"
            )


def zero_units(model: nn.Module, stage: int) -> list[nn.Module]:
    """The modules whose parameters form one flat vector: the whole model for stage 1, each
    layer that holds parameters for stages 2 and 3."""
    check_int("stage", stage, low=1, high=3)
    if stage == 1:
        return [model]
    return [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]


def unit_sizes(model: nn.Module, stage: int) -> list[int]:
    """Parameter count of every unit of ``model`` at ``stage`` (see :func:`zero_units`)."""
    if stage == 1:
        return [sum(p.numel() for p in model.parameters())]
    return [sum(p.numel() for p in m.parameters(recurse=False)) for m in zero_units(model, stage)]


def predicted_bytes(
    numels: Sequence[int], world_size: int, stage: int, optimizer: str, element_size: int = 4
) -> MemoryBreakdown:
    """Bytes one rank holds under ZeRO ``stage``: parameters, gradients, optimizer state.

    The ZeRO paper's per-parameter counts (:func:`dlcourse.memory.bytes_per_parameter`)
    applied to the units padded to a multiple of N, so the count is exact: stage 1 keeps
    full parameters and gradients and a shard of the state, stage 2 also a shard of the
    gradients, stage 3 only shards. Their sum is ``bytes_per_parameter(stage, N) * padded``.
    """
    check_int("stage", stage, low=1, high=3)
    check_choice("optimizer", optimizer, STATE_PER_ELEMENT)
    check_int("element_size", element_size, low=1)
    layouts = [shard_layout(n, world_size) for n in numels]
    shard = sum(s for s, _ in layouts)
    padded = sum(p for _, p in layouts)
    return MemoryBreakdown(
        parameters=element_size * (padded if stage < 3 else shard),
        gradients=element_size * (padded if stage == 1 else shard),
        optimizer=element_size * STATE_PER_ELEMENT[optimizer] * shard,
    )


def step_bytes(numels: Sequence[int], world_size: int, stage: int, element_size: int = 4) -> int:
    """Bytes all N ranks send together in one step: a reduce-scatter of the padded gradients
    and an all-gather of the parameters (stages 1, 2: DDP's all-reduce, in its two halves),
    and stage 3 a second all-gather (once before forward, once before backward): 1.5x."""
    check_int("stage", stage, low=1, high=3)
    nbytes = element_size * sum(shard_layout(n, world_size)[1] for n in numels)
    gathers = 2 if stage == 3 else 1
    per_rank = reduce_scatter_bytes(nbytes, world_size) + gathers * all_gather_bytes(nbytes, world_size)
    return round(world_size * per_rank)


def predicted_state_bytes(
    numels: Sequence[int], world_size: int, stage: int, optimizer: str, element_size: int
) -> int:
    """The paper's formula as it stands, ``bytes_per_parameter(stage, N) * padded elements``:
    the total of :func:`predicted_bytes`, computed the other way round."""
    precision = {4: "fp32", 8: "fp64"}[check_choice("element_size", element_size, (4, 8))]
    padded = sum(shard_layout(n, world_size)[1] for n in numels)
    return round(bytes_per_parameter(stage, world_size, optimizer=optimizer, precision=precision) * padded)


# ---------------------------------------------------------------------------------------
# The ZeRO-1 step: the student seam.


def zero1_step(
    flat_params: torch.Tensor,
    flat_grads: torch.Tensor,
    shard_update: Callable[[torch.Tensor, torch.Tensor], None],
    rank: int,
    world_size: int,
) -> None:
    """Reduce-scatter the gradients, step the own chunk, all-gather the parameters."""
    shard = flat_params.numel() // world_size
    grad_shard = ring_reduce_scatter(flat_grads) / world_size  # chunk `rank` of the mean gradient
    mine = flat_params[rank * shard : (rank + 1) * shard]
    shard_update(mine, grad_shard)  # the optimizer steps this rank's chunk only
    flat_params.copy_(ring_all_gather(mine))  # everyone gets every rank's new chunk


# ---------------------------------------------------------------------------------------
# One unit: a flat buffer whose views are the parameters, and the chunk this rank owns.


class FlatUnit:
    """The parameters of ``module`` as views of one flat buffer padded to a multiple of N.

    ``flat`` is the full buffer, ``shard`` this rank's chunk of it (a view for stages 1 and
    2, a tensor of its own for stage 3, whose ``flat`` is freed between uses), ``grad_shard``
    the chunk's averaged gradient (stages 2 and 3).
    """

    def __init__(self, module: nn.Module, rank: int, world_size: int, stage: int, recurse: bool) -> None:
        self.module, self.rank, self.world_size, self.stage = module, rank, world_size, stage
        self.params = list(module.parameters(recurse=recurse))
        self.numel = sum(p.numel() for p in self.params)
        self.shard_size, self.padded = shard_layout(self.numel, world_size)
        first = self.params[0]
        self.flat = torch.zeros(self.padded, dtype=first.dtype, device=first.device)
        offset = 0
        with torch.no_grad():
            for p in self.params:  # every rank built the same model from the same seed
                self.flat[offset : offset + p.numel()].copy_(p.reshape(-1))
                p.data = self.flat[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
        mine = self.flat[rank * self.shard_size : (rank + 1) * self.shard_size]
        self.shard = mine.clone() if stage == 3 else mine
        self.grad_shard = torch.zeros_like(self.shard) if stage >= 2 else None
        self.flat_grad = None
        if stage == 1:  # gradients accumulate straight into one flat buffer (as DDP's buckets)
            self.flat_grad = torch.zeros_like(self.flat)
            offset = 0
            for p in self.params:
                p.grad = self.flat_grad[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
        self._ready = 0
        if stage == 3:
            self.free()

    def __repr__(self) -> str:
        return (
            f"FlatUnit({type(self.module).__name__}, numel={self.numel}, shard={self.shard_size}, "
            f"rank={self.rank}/{self.world_size}, stage={self.stage})"
        )

    def gather(self) -> None:
        """All-gather the full parameters into ``flat`` (stage 3: its storage grows back)."""
        storage = self.flat.untyped_storage()
        if storage.nbytes() == 0:
            storage.resize_(self.padded * self.flat.element_size())
        self.flat.copy_(ring_all_gather(self.shard))

    def free(self) -> None:
        """Drop the full parameters (stage 3): the views stay, their storage holds 0 bytes."""
        self.flat.untyped_storage().resize_(0)

    def reduce_scatter_grads(self) -> None:
        """The mean gradient of the own chunk into ``grad_shard``; the full gradients go."""
        flat_grad = torch.cat([p.grad.reshape(-1) for p in self.params])  # the ring pads it
        for p in self.params:
            p.grad = None
        torch.div(ring_reduce_scatter(flat_grad), self.world_size, out=self.grad_shard)

    def on_grad(self, watch: Callable[[], None]) -> None:
        """Called as each parameter's gradient is ready; after the unit's last one, shard it."""
        self._ready += 1
        if self._ready < len(self.params):
            return
        self._ready = 0
        watch()  # the full gradient of this layer is held now: the stage-2/3 peak
        self.reduce_scatter_grads()
        if self.stage == 3:
            self.free()


class ShardedModel:
    """A model whose training state is sharded over the N ranks as ZeRO ``stage`` says.

    ``step(loss)`` runs backward and the optimizer step; ``memory()`` is what this rank
    holds, measured from the tensors themselves (:func:`dlcourse.memory.state_bytes`).
    Call it on every rank (inside :func:`dlcourse.launcher.launch` or torchrun).
    """

    def __init__(
        self,
        model: nn.Module,
        stage: int,
        optimizer: str = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        step_fn: StepFn | None = None,
    ) -> None:
        check_int("stage", stage, low=1, high=3)
        if step_fn is not None and (stage != 1 or not callable(step_fn)):
            raise ValueError(
                f"step_fn must be a function and needs stage=1, got {step_fn!r} at stage={stage}"
            )
        if not dist.is_initialized():
            raise RuntimeError("no process group: run this inside dlcourse.launcher.launch (or torchrun)")
        self.model, self.stage = model, stage
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        check_shards(unit_sizes(model, stage), self.world_size, optimizer)
        self.step_fn = step_fn if step_fn is not None else zero1_step
        self.units = [
            FlatUnit(m, self.rank, self.world_size, stage, stage == 1) for m in zero_units(model, stage)
        ]
        self.optimizer = make_optimizer(optimizer, [u.shard for u in self.units], lr, momentum)
        self.held = MemoryBreakdown(0, 0, 0)  # most bytes held at the end of a step, by kind
        self.peak = MemoryBreakdown(0, 0, 0)  # most bytes held at any point watched, by kind
        self.peak_state = 0  # most bytes held at once (all three kinds) at any point watched
        self._hooks = []
        for unit in self.units:
            if stage == 3:
                self._hooks.append(unit.module.register_forward_pre_hook(self._before_forward(unit)))
                self._hooks.append(unit.module.register_forward_hook(self._after_forward(unit)))
            if stage >= 2:
                for p in unit.params:
                    hook = functools.partial(_param_ready, unit=unit, watch=self._watch)
                    self._hooks.append(p.register_post_accumulate_grad_hook(hook))

    def __repr__(self) -> str:
        return (
            f"ShardedModel(stage={self.stage}, units={len(self.units)}, rank={self.rank}/{self.world_size})"
        )

    def _before_forward(self, unit: FlatUnit):
        def hook(module, args):
            unit.gather()
            self._watch()  # this layer's full parameters are held now

        return hook

    def _after_forward(self, unit: FlatUnit):
        def before_backward(grad: torch.Tensor) -> None:
            unit.gather()  # the gradient reached this layer's output: its backward runs next
            self._watch()

        def hook(module, args, output):
            unit.free()
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(before_backward)

        return hook

    def memory(self) -> MemoryBreakdown:
        """Bytes this rank holds now: parameters, gradients, optimizer state (measured)."""
        return state_bytes(
            self.model,
            self.optimizer,
            extra_params=[u.shard for u in self.units],
            extra_grads=[u.grad_shard for u in self.units if u.grad_shard is not None],
        )

    def _watch(self) -> None:
        now = self.memory()
        self.peak, self.peak_state = _most(self.peak, now), max(self.peak_state, now.state)

    def step(self, loss: torch.Tensor) -> None:
        """Backward (stages 2, 3: gradients sharded layer by layer), then the sharded step."""
        if self.stage == 1:
            for unit in self.units:
                unit.flat_grad.zero_()  # the model's .grad are views of it
        loss.backward()
        if self.stage == 1:
            self._watch()  # the full gradient is held now
            for unit in self.units:
                self.step_fn(
                    unit.flat,
                    unit.flat_grad,
                    functools.partial(_shard_update, self, unit),
                    self.rank,
                    self.world_size,
                )
        else:
            for unit in self.units:
                unit.shard.grad = unit.grad_shard
            self.optimizer.step()
            for unit in self.units:
                unit.shard.grad = None
            if self.stage == 2:
                for unit in self.units:
                    unit.flat.copy_(ring_all_gather(unit.shard))
        self.held = _most(self.held, self.memory())
        self._watch()

    def unshard(self) -> None:
        """Gather every unit's full parameters for good and remove the hooks (end of training:
        rank 0 evaluates alone, so no layer may ask for a collective any more)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if self.stage == 3:
            for unit in self.units:
                unit.gather()


def _param_ready(param: torch.Tensor, *, unit: FlatUnit, watch: Callable[[], None]) -> None:
    unit.on_grad(watch)


def _shard_update(
    sharded: ShardedModel, unit: FlatUnit, param_shard: torch.Tensor, grad_shard: torch.Tensor
) -> None:
    """``shard_update`` of the ZeRO-1 seam: step the optimizer on the rank's own chunk."""
    own = unit.shard
    if param_shard.data_ptr() != own.data_ptr() or param_shard.numel() != own.numel():
        raise ValueError(
            f"param_shard must be flat_params[rank * S:(rank + 1) * S] with S = {unit.shard_size} (rank "
            f"{unit.rank}'s own chunk), got a tensor of {param_shard.numel()} elements elsewhere"
        )
    if grad_shard.shape != own.shape:
        raise ValueError(f"grad_shard must have shape {tuple(own.shape)}, got {tuple(grad_shard.shape)}")
    own.grad = grad_shard
    sharded.optimizer.step()
    own.grad = None
    sharded._watch()  # the reduce-scattered chunk is held next to the full gradient here


def _most(a: MemoryBreakdown, b: MemoryBreakdown) -> MemoryBreakdown:
    return MemoryBreakdown(
        max(a.parameters, b.parameters), max(a.gradients, b.gradients), max(a.optimizer, b.optimizer)
    )


# ---------------------------------------------------------------------------------------
# The workers and the entry point, in the style of dlcourse.data_parallel.


def zero_worker(
    rank, world_size, train, test, config, shard_sizes=None, stage=1, step_fn=None
) -> dict[str, Any]:
    """One rank of ZeRO ``stage``: the single-process loop with ``sharded.step(loss)``."""
    run = WorkerRun(rank, world_size, train, config, f"zero-{stage}", shard_sizes)
    element_size = next(run.model.parameters()).element_size()
    sizes = unit_sizes(run.model, stage)
    sharded = ShardedModel(run.model, stage, config.optimizer, config.lr, config.momentum, step_fn)
    run.sync_measured = False  # the collectives sit inside forward and backward: whole steps only
    for X, y in run.batches():
        loss = F.cross_entropy(run.model(X), y)
        sharded.step(loss)
        run.sent += step_bytes(sizes, world_size, stage, element_size)
        run.record(loss)
    sharded.unshard()
    every = [None] * world_size
    dist.all_gather_object(
        every,
        {"memory": sharded.held.as_dict(), "peak": sharded.peak.as_dict(), "peak_state": sharded.peak_state},
    )
    out = run.finish(test)
    if rank == 0:
        out["extra"] = {
            "stage": stage,
            "memory": [e["memory"] for e in every],
            "peak": [e["peak"] for e in every],
            "peak_state": [e["peak_state"] for e in every],
            "predicted": predicted_bytes(sizes, world_size, stage, config.optimizer, element_size).as_dict(),
            "step_bytes": step_bytes(sizes, world_size, stage, element_size),
        }
    return out


def fsdp2_worker(rank, world_size, train, test, config, shard_sizes=None) -> dict[str, Any]:
    """The same training with PyTorch's ``fully_shard`` (FSDP2) on every layer, then the model."""
    from torch.distributed.fsdp import fully_shard

    run = WorkerRun(rank, world_size, train, config, "fsdp2", shard_sizes)
    model = run.model
    for module in zero_units(model, 3):
        fully_shard(module)
    fully_shard(model)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, config.momentum)
    run.sync_measured = False
    for X, y in run.batches():
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        run.record(loss)
    full = {k: v.full_tensor() for k, v in model.state_dict().items()}  # collective
    run.model = make_model(config.model, seed=config.seed).to(run.device, run.dtype)
    run.model.load_state_dict(full)
    return run.finish(test)


def train_zero(
    train: Dataset,
    num_workers: int,
    config: DataParallelConfig | None = None,
    *,
    stage: int = 1,
    step_fn: StepFn | None = None,
    **options: Any,
) -> DataParallelResult:
    """ZeRO ``stage`` (1, 2 or 3) data parallelism on ``num_workers`` processes.

    ``step_fn`` replaces :func:`zero1_step` (stage 1 only; see the module docstring).
    ``options`` (test, shard_sizes, backend, timeout, run_timeout, threads_per_worker) are
    those of :func:`dlcourse.worker_run.run_workers`. ``result.extra`` holds, per rank,
    ``memory`` (most bytes held at the end of a step: parameters, gradients, optimizer),
    ``peak`` (most of each kind at any point, with a layer's gathered parameters or full
    gradient), ``peak_state`` (most of all three at once),
    ``predicted`` (:func:`predicted_bytes`) and ``step_bytes`` (:func:`step_bytes`).
    """
    check_int("stage", stage, low=1, high=3)
    config = config_or_default(config)
    if config.checkpoint_dir is not None or config.resume:
        raise ValueError(
            "checkpoint_dir and resume are not supported by train_zero (state is sharded), got "
            f"checkpoint_dir={config.checkpoint_dir!r}"
        )
    if step_fn is not None and (stage != 1 or not callable(step_fn)):
        raise ValueError(f"step_fn must be a function and needs stage=1, got {step_fn!r} at stage={stage}")
    check_int("num_workers", num_workers, low=1)
    check_shards(unit_sizes(make_model(config.model, seed=config.seed), stage), num_workers, config.optimizer)
    worker = functools.partial(zero_worker, stage=stage, step_fn=step_fn)
    return run_workers(worker, f"zero-{stage}", train, num_workers, config, **options)
