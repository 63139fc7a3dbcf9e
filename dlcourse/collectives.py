"""The collectives of data parallelism, written out: distribute a copy, average, and their cost.

The lecture's data-parallel procedures need two collective operations among the N
workers: "distribute a copy of the current parameters to each worker" (a ``broadcast``
from rank 0) and "set the global parameters to the average" of the workers' parameters
or gradients (an ``all_reduce`` then a division by N). Each is a loop over the model's
tensors here, so that a student sees every message; ``DistributedDataParallel`` does the
same in buckets that overlap with backward (Li et al., "PyTorch Distributed", VLDB 2020).

The cost: a ring all-reduce (Patarasuk and Yuan, "Bandwidth Optimal All-reduce
Algorithms", JPDC 2009) sends ``2 (N-1)`` times the tensor's bytes in all, whatever N.
Call these inside :func:`dlcourse.launcher.launch` (or under ``torchrun``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dlcourse._validate import check_choice, check_int
from dlcourse.models import check_model


def _check_collective(model: Any) -> None:
    check_model(model)
    if not dist.is_initialized():
        raise RuntimeError("no process group: run this inside dlcourse.launcher.launch (or torchrun)")


@torch.no_grad()
def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Give every worker the parameters of rank ``src`` ("distribute a copy")."""
    _check_collective(model)
    check_int("src", src, low=0, high=dist.get_world_size() - 1)
    for p in model.parameters():
        dist.broadcast(p, src=src)


@torch.no_grad()
def average_gradients(model: nn.Module) -> None:
    """Replace every worker's gradient by the mean over the N workers (one all-reduce each)."""
    _check_collective(model)
    world_size = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world_size)


@torch.no_grad()
def average_parameters(model: nn.Module) -> None:
    """Set every worker's parameters to their mean over the N workers (one all-reduce each).

    Step 4 of the lecture's parameter averaging: "set the global parameters to the average".
    """
    _check_collective(model)
    world_size = dist.get_world_size()
    for p in model.parameters():
        dist.all_reduce(p, op=dist.ReduceOp.SUM)
        p.div_(world_size)


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of all parameters (what one copy of the model sends)."""
    check_model(model)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def ring_allreduce_bytes(nbytes: int, num_workers: int) -> int:
    """Bytes all N workers send together in a ring all-reduce of ``nbytes``: ``2 (N-1) nbytes``."""
    check_int("nbytes", nbytes, low=0)
    check_int("num_workers", num_workers, low=1)
    return 2 * (num_workers - 1) * nbytes


TOPOLOGIES = ("all", "ring")  # whom a decentralized worker sends its update to


def peers(rank: int, world_size: int, topology: str) -> list[int]:
    """The ranks ``rank`` sends its own updates to: every other one, or the next on a ring.

    On a ring each receiver forwards what it got to its own next rank until the update has
    gone round, so every worker still sees every update, one hop later per step of the ring.
    """
    check_int("world_size", world_size, low=1)
    check_int("rank", rank, low=0, high=world_size - 1)
    check_choice("topology", topology, TOPOLOGIES)
    if world_size == 1:
        return []
    if topology == "ring":
        return [(rank + 1) % world_size]
    return [r for r in range(world_size) if r != rank]


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """One flat tensor that the model's parameters become views of.

    Loading or updating all parameters is then a single tensor operation on the result
    (the simulator loads pulled parameters this way; a decentralized worker adds updates).
    """
    check_model(model)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    offset = 0
    for p in model.parameters():
        p.data = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return flat
