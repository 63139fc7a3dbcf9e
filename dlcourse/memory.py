"""Memory you can predict: bytes per device of parameters, gradients, optimizer state, activations.

Two halves that check each other:

- **Measurements** of what a rank really holds: :func:`tensor_bytes` (the distinct storages
  behind some tensors), :func:`state_bytes` (parameters, gradients and optimizer state of a
  model and its optimizer) and :class:`SavedActivations` (every tensor autograd keeps for the
  backward pass, seen through ``torch.autograd.graph.saved_tensors_hooks``). Storages, not
  the process's resident memory: RSS is noisy and includes the runtime itself.
- **Formulas** from the ZeRO paper (Rajbhandari et al., "ZeRO: Memory Optimizations Toward
  Training Trillion Parameter Models", SC 2020): with mixed-precision Adam a parameter costs
  2 (bf16/fp16 weights) + 2 (gradients) + K = 12 (fp32 master weights, momentum, variance)
  = 16 bytes, so 7B parameters need 112 GB before a single activation; ZeRO stage 1 shards
  the K bytes over N data-parallel ranks, stage 2 the gradients too, stage 3 everything.
  :func:`bytes_per_parameter`, :func:`predict` for a whole :class:`Layout` (data, tensor
  and pipeline parallelism, recomputation, precision) and :func:`plan` for the planner.

Run ``dlcourse memory --params 7e9 --devices 8 --zero-stage 3`` for the table of a layout.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_MB = 1024**2


def _storage_key(t: torch.Tensor) -> tuple[int, int, str] | None:
    """(address, bytes, device) of the untyped storage behind ``t``; None where there is none."""
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):  # sparse or storage-less subclasses
        return None
    return storage.data_ptr(), storage.nbytes(), str(t.device)


def tensor_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes of the distinct storages behind ``tensors``; each storage counted once, None skipped.

    Views of one buffer (the parameters of a flat buffer, ``w`` and ``w.t()``) share a
    storage and cost its bytes once; a view of part of a large buffer costs the whole buffer,
    because that is what stays allocated.
    """
    if isinstance(tensors, torch.Tensor):
        raise ValueError("tensors must be an iterable of tensors, got a single Tensor: wrap it in a list")
    seen: dict[tuple[int, str], int] = {}
    for i, t in enumerate(tensors):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"tensors[{i}] must be a torch.Tensor or None, got {type(t).__name__}")
        key = _storage_key(t)
        if key is None:
            continue
        ptr, nbytes, device = key
        seen[(ptr, device)] = max(nbytes, seen.get((ptr, device), 0))
    return sum(seen.values())


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes one device holds, by kind (all ints, bytes)."""

    parameters: int  # the weights this rank keeps (a shard under ZeRO-3, bf16 copy when mixed)
    gradients: int  # gradients this rank keeps (a shard under ZeRO-2/3)
    optimizer: int  # optimizer state: momentum, Adam's moments, fp32 master weights when mixed
    activations: int = 0  # tensors autograd saves for the backward pass (peak)

    def __post_init__(self) -> None:
        for name in ("parameters", "gradients", "optimizer", "activations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (bytes), got {value!r}")

    @property
    def total(self) -> int:
        """All four kinds together, in bytes."""
        return self.parameters + self.gradients + self.optimizer + self.activations

    @property
    def state(self) -> int:
        """Training state without activations: parameters + gradients + optimizer state."""
        return self.parameters + self.gradients + self.optimizer

    def __add__(self, other: MemoryBreakdown) -> MemoryBreakdown:
        if not isinstance(other, MemoryBreakdown):
            return NotImplemented
        return MemoryBreakdown(
            self.parameters + other.parameters,
            self.gradients + other.gradients,
            self.optimizer + other.optimizer,
            self.activations + other.activations,
        )

    def as_dict(self) -> dict[str, int]:
        """The four kinds and the total, in bytes (for JSON and tables)."""
        return {
            "parameters": self.parameters,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "activations": self.activations,
            "total": self.total,
        }

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v / _MB:.2f} MB" for k, v in self.as_dict().items())
        return f"MemoryBreakdown({parts})"


def state_bytes(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    extra_params: Iterable[torch.Tensor] = (),
    extra_grads: Iterable[torch.Tensor] = (),
    extra_state: Iterable[torch.Tensor] = (),
    include_counters: bool = False,
) -> MemoryBreakdown:
    """Exact bytes this rank holds in parameters, gradients and optimizer state.

    Parameters are the model's parameters plus ``extra_params`` (a ZeRO runtime passes the
    flat shards it keeps outside the model), gradients their ``.grad`` plus ``extra_grads``,
    optimizer state every tensor in ``optimizer.state`` plus ``extra_state`` (e.g. fp32
    master weights). Each storage is counted once within its kind. Adam's ``step`` counters
    (one scalar per parameter tensor, not per element) are left out unless
    ``include_counters=True``, so the count matches the ZeRO paper's K bytes per parameter.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    if not isinstance(include_counters, bool):
        raise ValueError(f"include_counters must be True or False, got {include_counters!r}")
    params = list(model.parameters())
    state: list[torch.Tensor] = []
    if optimizer is not None:
        for per_param in optimizer.state.values():
            for key, value in per_param.items():
                if isinstance(value, torch.Tensor) and (include_counters or key != "step"):
                    state.append(value)
    return MemoryBreakdown(
        parameters=tensor_bytes([*params, *extra_params]),
        gradients=tensor_bytes([*(p.grad for p in params), *extra_grads]),
        optimizer=tensor_bytes([*state, *extra_state]),
    )


class _Saved:
    """What the pack hook hands autograd: the tensor, and a note to the counter when freed."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


class SavedActivations:
    """Count the bytes of every tensor autograd saves for backward while the context is active.

    ``with SavedActivations(model) as saved: loss = f(model(X)); loss.backward()`` then

    - ``saved.bytes``: distinct storage bytes saved during the last forward (a forward begins
      when nothing saved is alive any more, so several micro-batches before one backward count
      together, as they are held together);
    - ``saved.peak``: the most bytes alive at once in autograd graphs, over everything run
      inside the context (several forwards and steps);
    - ``saved.live``: bytes alive now (0 once every graph was freed by its backward).

    Parameters (and views of them, like ``weight.t()``) that autograd saves are not
    activations and are not counted: a tensor is left out when its storage is that of one of
    ``model``'s parameters at the time it is saved, of any tensor in ``exclude``, or when it
    is a leaf that requires grad. Storages are counted once however many ops save them.
    """

    def __init__(self, model: nn.Module | None = None, *, exclude: Iterable[torch.Tensor] = ()) -> None:
        if model is not None and not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
        self.model = model
        self._exclude = list(exclude)
        for i, t in enumerate(self._exclude):
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"exclude[{i}] must be a torch.Tensor, got {type(t).__name__}")
        self._refs: dict[tuple[int, str], int] = {}  # storage -> how many saved handles hold it
        self._sizes: dict[tuple[int, str], int] = {}
        self.live = 0
        self.peak = 0
        self.bytes = 0
        self._hooks: Any = None

    def _excluded(self) -> set[tuple[int, str]]:
        tensors = list(self.model.parameters()) if self.model is not None else []
        keys = set()
        for t in [*tensors, *self._exclude]:
            key = _storage_key(t)
            if key is not None:
                keys.add((key[0], key[2]))
        return keys

    def _pack(self, t: torch.Tensor) -> Any:
        if isinstance(t, nn.Parameter) or (t.is_leaf and t.requires_grad):
            return t
        key3 = _storage_key(t)
        if key3 is None:
            return t
        key = (key3[0], key3[2])
        if key in self._excluded():
            return t
        if self.live == 0:
            self.bytes = 0  # nothing saved is alive: a new forward begins
        handle = _Saved(t)
        if self._refs.get(key, 0) == 0:
            self._sizes[key] = key3[1]
            self.live += key3[1]
            self.bytes += key3[1]
            self.peak = max(self.peak, self.live)
        self._refs[key] = self._refs.get(key, 0) + 1
        weakref.finalize(handle, self._release, key)
        return handle

    def _release(self, key: tuple[int, str]) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live -= self._sizes.pop(key)

    @staticmethod
    def _unpack(packed: Any) -> torch.Tensor:
        return packed.tensor if isinstance(packed, _Saved) else packed

    def __enter__(self) -> SavedActivations:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None

    def __repr__(self) -> str:
        return (
            f"SavedActivations(bytes={self.bytes / _MB:.2f} MB, peak={self.peak / _MB:.2f} MB, "
            f"live={self.live / _MB:.2f} MB)"
        )
