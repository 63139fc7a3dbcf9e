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

import functools
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.collectives import AlphaBeta

_MB = 1e6  # decimal, as the ZeRO paper counts (7B x 16 bytes = 112 GB)


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


def device_peak_bytes(device: torch.device | str | None = None, *, reset: bool = False) -> int | None:
    """``torch.cuda.max_memory_allocated``: the most bytes PyTorch's allocator held on a CUDA device
    since the last reset (everything: state, activations, workspaces); ``None`` on the CPU.

    A cross-check for :func:`state_bytes` + :class:`SavedActivations` on a GPU, never a
    replacement: it includes temporaries and the allocator's rounding. ``reset=True`` starts
    a new peak after reading this one.
    """
    device = torch.device(device) if device is not None else None
    if device is not None and device.type != "cuda":
        return None
    if not torch.cuda.is_available():
        return None
    peak = torch.cuda.max_memory_allocated(device)
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return int(peak)


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
    activations and are not counted: a tensor is left out when it is an ``nn.Parameter`` or a
    view of one, or when its storage is that of one of ``model``'s parameters at the time it
    is saved or of a tensor in ``exclude`` (weights a runtime keeps as plain tensors). Storages
    are counted once however many ops save them.
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
        base = t._base if t._base is not None else t  # autograd saves w.t() for a Linear: a view of w
        if isinstance(base, nn.Parameter):
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


# ----------------------------------------------------------------------------------------------
# Formulas (ZeRO, Rajbhandari et al. 2020, section 3; activations: Korthikanti et al. 2022)

PRECISIONS = ("fp32", "mixed", "fp64")
OPTIMIZERS = ("sgd", "momentum", "adam")
ZERO_STAGES = (0, 1, 2, 3)  # 0: plain data parallelism, every rank holds everything
SCHEDULES = ("gpipe", "1f1b")
MODEL_KINDS = ("cnn", "mlp", "gpt")

# bytes per element of the weights and gradients that compute uses
_WEIGHT_BYTES = {"fp32": 4, "mixed": 2, "fp64": 8}
# K, the optimizer's bytes per parameter: its state tensors, each as wide as a master weight;
# mixed precision adds the fp32 master copy of the weights (4 bytes) to the optimizer's K
_STATE_TENSORS = {"sgd": 0, "momentum": 1, "adam": 2}  # momentum buffer; Adam's exp_avg, exp_avg_sq


def optimizer_bytes_per_parameter(optimizer: str = "adam", precision: str = "mixed") -> int:
    """K of the ZeRO paper: optimizer-state bytes per parameter.

    fp32: SGD 0, momentum 4 (one buffer), Adam 8 (two moments). fp64: twice those.
    mixed (bf16/fp16 compute, fp32 master weights): the fp32 master copy (4) plus fp32 state:
    SGD 4, momentum 8, Adam 12 -- the paper's K = 12.
    """
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("precision", precision, PRECISIONS)
    if precision == "mixed":
        return 4 + 4 * _STATE_TENSORS[optimizer]
    return _WEIGHT_BYTES[precision] * _STATE_TENSORS[optimizer]


def bytes_per_parameter(
    zero_stage: int, num_workers: int, *, optimizer: str = "adam", precision: str = "mixed"
) -> float:
    """Bytes of training state per parameter on one of N data-parallel ranks (no activations).

    With weights and gradients of ``w`` bytes each and K optimizer bytes (see
    :func:`optimizer_bytes_per_parameter`): stage 0 (plain data parallelism) ``2w + K``,
    stage 1 (optimizer state sharded) ``2w + K/N``, stage 2 (gradients too) ``w + (w + K)/N``,
    stage 3 (parameters too) ``(2w + K)/N``. Mixed-precision Adam: 16, 4 + 12/N, 2 + 14/N, 16/N.
    """
    check_choice("zero_stage", zero_stage, ZERO_STAGES)
    check_int("num_workers", num_workers, low=1)
    w = _WEIGHT_BYTES[check_choice("precision", precision, PRECISIONS)]
    k = optimizer_bytes_per_parameter(optimizer, precision)
    n = num_workers
    return [2 * w + k, 2 * w + k / n, w + (w + k) / n, (2 * w + k) / n][zero_stage]


def shard_numel(numel: int, num_workers: int) -> int:
    """Elements each rank owns when ``numel`` is split over N ranks: ``ceil(numel / N)``.

    The flat tensor is padded with zeros to a multiple of N, so every shard has the same
    size (what :func:`dlcourse.collectives.ring_reduce_scatter` does, and what collectives
    like ``reduce_scatter_tensor`` require); the padding costs at most N - 1 elements.
    """
    check_int("numel", numel, low=0)
    check_int("num_workers", num_workers, low=1)
    return -(-numel // num_workers)


# -- activations ------------------------------------------------------------------------------

_INDEX_BYTES = 8  # max-pooling keeps int64 indices of the maxima for its backward pass

# What each layer of an nn.Sequential makes autograd save, as (storage, elements or bytes):
# storages are named so that a tensor two layers save (the ReLU output) counts once.
# ("e", n): n elements of the compute dtype; ("b", n): n bytes. "/tp": split by tensor parallelism.


def _sequential_saves(kind: str, batch: int, e: int, tp: int, hidden: int):
    """(per-layer saves, per-layer output storage, the loss's saves) of MnistCNN or MLP."""
    if kind == "cnn":
        layers = [
            [("x", batch * 784 * e)],  # conv1 keeps its input
            [("c1", batch * 18432 * e), ("i1", batch * 4608 * _INDEX_BYTES)],  # pool 1: input, indices
            [("p1", batch * 4608 * e)],  # conv2 keeps its input
            [("c2", batch * 4096 * e), ("i2", batch * 1024 * _INDEX_BYTES)],  # pool 2: input, indices
            [],  # flatten: a view
            [("p2", batch * 1024 * e)],  # dense 1 keeps its input (pool 2's output)
            [("r", batch * 1024 * e // tp)],  # ReLU keeps its output (split under TP)
            [("r", batch * 1024 * e // tp)],  # dense 2 keeps its input: the same storage
        ]
        outputs = ["c1", "p1", "c2", "p2", "p2", "d1", "r", "logits"]
    else:
        layers = [
            [],  # flatten: a view of the input
            [("x", batch * 784 * e)],  # dense 1 keeps its input
            [("r", batch * hidden * e // tp)],  # ReLU keeps its output
            [("r", batch * hidden * e // tp)],  # dense 2 keeps its input: the same storage
        ]
        outputs = ["x", "d1", "r", "logits"]
    loss = [("logp", batch * 10 * e), ("y", batch * 8)]  # cross-entropy: log-softmax output, int64 targets
    return layers, outputs, loss


def _distinct(saves) -> int:
    return sum(dict(saves).values())


def segment_bounds(num_layers: int, segments: int) -> list[tuple[int, int]]:
    """``segments`` contiguous ``(start, stop)`` ranges of ``num_layers`` layers, sizes within one:
    how :mod:`dlcourse.recompute` cuts a network into recomputed segments (and
    :func:`dlcourse.model_parallel.stage_bounds` into stages), and how it is counted here."""
    check_int("num_layers", num_layers, low=1)
    check_int("segments", segments, low=1, high=num_layers)
    base, extra = divmod(num_layers, segments)
    bounds, start = [], 0
    for s in range(segments):
        stop = start + base + (1 if s < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _gpt_layer(batch: int, e: int, tp: int, seq_len: int, d_model: int, heads: int) -> int:
    """Korthikanti et al. 2022, eq. 2 with elements of e bytes and 1-byte dropout masks."""
    sbh = seq_len * batch * d_model
    replicated = sbh * (4 * e + 2)  # 2 layer-norm inputs, attention and MLP inputs, 2 dropout masks
    split = sbh * 12 * e // tp  # Q, K, V, attention output, MLP hidden (4h) and GeLU input
    scores = heads * seq_len * seq_len * batch * (2 * e + 1) // tp  # softmax in/out + dropout mask
    return replicated + split + scores


def activation_parts(
    model_kind: str,
    batch: int,
    *,
    precision: str = "fp32",
    tp: int = 1,
    recompute: bool = False,
    segments: int = 2,
    hidden: int = 64,
    seq_len: int = 1024,
    d_model: int = 4096,
    heads: int = 32,
    layers: int = 32,
) -> tuple[int, int]:
    """``(held, rebuilt)``: bytes saved by the forward and held until backward, and the most
    bytes one recomputed segment saves again while backward reruns it (0 without recompute).
    The peak of a step is their sum (:func:`activation_bytes`); see there for the arguments."""
    check_choice("model_kind", model_kind, MODEL_KINDS)
    check_int("batch", batch, low=1)
    e = _WEIGHT_BYTES[check_choice("precision", precision, PRECISIONS)]
    check_int("tp", tp, low=1)
    if not isinstance(recompute, bool):
        raise ValueError(f"recompute must be True or False, got {recompute!r}")
    if model_kind == "gpt":
        for name, value in (("seq_len", seq_len), ("d_model", d_model), ("heads", heads), ("layers", layers)):
            check_int(name, value, low=1)
        layer = _gpt_layer(batch, e, tp, seq_len, d_model, heads)
        if recompute:  # every layer is a segment: its input (s b h elements) is kept
            return layers * seq_len * batch * d_model * e, layer
        return layers * layer, 0
    check_int("hidden", hidden, low=1)
    saves, outputs, loss = _sequential_saves(model_kind, batch, e, tp, hidden)
    if not recompute:
        return _distinct([s for layer in saves for s in layer] + loss), 0
    check_int("segments", segments, low=1, high=len(saves))
    bounds = segment_bounds(len(saves), segments)
    sizes = dict(s for layer in saves for s in layer)
    sizes["x"] = batch * 784 * e
    sizes["d1"] = (
        batch * (1024 if model_kind == "cnn" else hidden) * e // tp
    )  # dense 1's output: saved by none
    inputs = ["x"] + [outputs[start - 1] for start, _ in bounds[1:]]
    held = _distinct([(name, sizes.get(name, 0)) for name in inputs] + loss)
    rebuilt = 0
    for (start, stop), name in zip(bounds, inputs):
        inside = [s for layer in saves[start:stop] for s in layer if s[0] != name]
        rebuilt = max(rebuilt, _distinct(inside))
    return held, rebuilt


def activation_bytes(
    model_kind: str,
    batch: int,
    *,
    precision: str = "fp32",
    tp: int = 1,
    recompute: bool = False,
    segments: int = 2,
    hidden: int = 64,
    seq_len: int = 1024,
    d_model: int = 4096,
    heads: int = 32,
    layers: int = 32,
) -> int:
    """Estimated peak bytes autograd saves for backward in one step on ``batch`` examples.

    - ``"cnn"``: the lecture's CNN plus the cross-entropy loss, tensor by tensor (the input
      of each convolution, pooling inputs with their int64 indices, the ReLU output). Equal,
      up to a few scalars, to what :class:`SavedActivations` measures.
    - ``"mlp"``: :class:`dlcourse.models.MLP` with ``hidden`` units plus the loss.
    - ``"gpt"``: ``layers`` transformer layers of width ``d_model``, ``heads`` heads,
      ``seq_len`` tokens per example (Korthikanti et al., "Reducing Activation Recomputation
      in Large Transformer Models", 2022: ``s b h (34 + 5 a s / h)`` bytes per layer in 16 bits;
      with tensor parallelism ``s b h (10 + 24/t + 5 a s / (h t))``); embeddings and the
      output layer are left out, as in the paper.

    ``tp`` splits what tensor-parallel layers hold (for the CNN and MLP, the hidden layer of
    the dense block; for GPT, the attention and MLP internals). ``recompute`` (Chen et al.
    2016): only the inputs of ``segments`` contiguous segments of the CNN's or MLP's layers
    are held (as :func:`dlcourse.recompute.recompute_segments` cuts them; GPT: every layer
    is a segment), and during backward one segment at a time is rebuilt, so the peak is the
    held inputs plus the largest segment (:func:`activation_parts` gives both). Element
    size from ``precision``: 4 bytes (fp32), 2 (mixed), 8 (fp64).
    """
    held, rebuilt = activation_parts(
        model_kind,
        batch,
        precision=precision,
        tp=tp,
        recompute=recompute,
        segments=segments,
        hidden=hidden,
        seq_len=seq_len,
        d_model=d_model,
        heads=heads,
        layers=layers,
    )
    return held + rebuilt


# -- a whole layout: data x tensor x pipeline parallelism -------------------------------------


@dataclass
class Layout:
    """How a model is spread over devices: data (N, ZeRO stage), tensor (T) and pipeline (K).

    Devices = N x T x K. Give the model's size as ``num_params`` or as ``model`` (a module:
    its parameter tensors are then known, so per-tensor sharding can be predicted exactly).
    ``model_kind`` turns on the activation estimate (:func:`activation_bytes`) for ``batch``
    examples per data-parallel replica per step, cut into ``microbatches`` (M).
    """

    num_params: int | float | None = None  # P, parameters of the whole model (or give model)
    model: nn.Module | None = None  # a model instead of num_params (its parameter tensors count)
    num_workers: int = 1  # N, data-parallel replicas (ranks of the ZeRO group)
    zero_stage: int = 0  # 0 plain data parallelism; 1 optimizer state, 2 + gradients, 3 + parameters sharded
    tp: int = 1  # T, tensor-parallel degree: every layer's weights split over T devices
    pp: int = 1  # K, pipeline stages: the layers split over K devices
    microbatches: int = 1  # M, micro-batches per step (pipeline schedules, gradient accumulation)
    schedule: str = "1f1b"  # "gpipe" (all M forwards, then backwards) or "1f1b" (at most K in flight)
    recompute: bool = False  # activation recomputation: keep only each segment's input
    segments: int = 2  # recomputed segments of the CNN's or MLP's layers (GPT: one per layer)
    precision: str = "fp32"  # "fp32" (this library's runs), "mixed" (bf16 + fp32 master), "fp64"
    optimizer: str = "adam"  # "sgd", "momentum" or "adam"
    units: tuple[int, ...] | None = None  # sizes of the flat buffers ZeRO shards (None: one, all P / (T K))
    model_kind: str | None = None  # "cnn", "mlp", "gpt" for an activation estimate; None: none
    batch: int = 1  # examples per data-parallel replica per step (all micro-batches)
    hidden: int = 64  # MLP hidden units (model_kind "mlp")
    seq_len: int = 1024  # tokens per example (model_kind "gpt")
    d_model: int = 4096  # transformer width h (model_kind "gpt")
    heads: int = 32  # attention heads a (model_kind "gpt")
    layers: int = 32  # transformer layers L (model_kind "gpt")

    def __post_init__(self) -> None:
        if self.model is not None:
            if not isinstance(self.model, nn.Module):
                raise ValueError(f"model must be a torch.nn.Module or None, got {type(self.model).__name__}")
            numel = sum(p.numel() for p in self.model.parameters())
            if self.num_params is not None and self.num_params != numel:
                raise ValueError(
                    f"num_params ({self.num_params}) disagrees with the model's {numel} parameters"
                )
            self.num_params = numel
        if self.num_params is None:
            raise ValueError("num_params or model is required: the size of the model")
        if isinstance(self.num_params, float):
            check_float("num_params", self.num_params, low=1.0)
            if self.num_params != int(self.num_params):
                raise ValueError(f"num_params must be a whole number of parameters, got {self.num_params}")
            self.num_params = int(self.num_params)
        check_int("num_params", self.num_params, low=1)
        check_int("num_workers", self.num_workers, low=1)
        check_choice("zero_stage", self.zero_stage, ZERO_STAGES)
        check_int("tp", self.tp, low=1)
        check_int("pp", self.pp, low=1)
        check_int("microbatches", self.microbatches, low=1)
        check_choice("schedule", self.schedule, SCHEDULES)
        if not isinstance(self.recompute, bool):
            raise ValueError(f"recompute must be True or False, got {self.recompute!r}")
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.units is not None:
            self.units = tuple(self.units)
            if not self.units:
                raise ValueError("units must list at least one flat buffer size, got none")
            for size in self.units:
                check_int("units", size, low=1)
            if sum(self.units) != self.local_params:
                raise ValueError(
                    f"units must add up to a device's parameters ({self.local_params}), got {sum(self.units)}"
                )
        if self.model_kind is not None:
            check_choice("model_kind", self.model_kind, MODEL_KINDS)
        check_int("batch", self.batch, low=1)
        if self.batch % self.microbatches:
            raise ValueError(
                f"batch ({self.batch}) must split into microbatches ({self.microbatches}) equal parts"
            )
        for name in ("segments", "hidden", "seq_len", "d_model", "heads", "layers"):
            check_int(name, getattr(self, name), low=1)
        if self.model_kind == "gpt" and self.pp > self.layers:
            raise ValueError(f"pp ({self.pp}) must be <= layers ({self.layers}): a stage holds whole layers")

    @property
    def devices(self) -> int:
        """N x T x K devices in all."""
        return self.num_workers * self.tp * self.pp

    @property
    def local_params(self) -> int:
        """Parameters one tensor-parallel, pipeline-stage slice holds: ceil(P / (T K))."""
        return -(-self.num_params // (self.tp * self.pp))

    def in_flight(self) -> int:
        """Micro-batches whose activations a (first) stage holds at once.

        One pipeline stage (K = 1) runs its micro-batches one after the other (gradient
        accumulation): 1. GPipe runs all M forwards before the backwards: M. 1F1B starts a
        backward as soon as the last stage can: at most K on the first stage.
        """
        if self.pp == 1:
            return 1
        return self.microbatches if self.schedule == "gpipe" else min(self.microbatches, self.pp)


def predict(layout: Layout) -> MemoryBreakdown:
    """Bytes per device of parameters, gradients, optimizer state and (estimated) activations.

    Training state is exact for this library's runtimes: weights and gradients take 4 (fp32),
    2 (mixed) or 8 (fp64) bytes per element, the optimizer K bytes (see
    :func:`optimizer_bytes_per_parameter`; Adam's scalar ``step`` counters are not counted,
    as in :func:`state_bytes`). Tensor and pipeline parallelism split the parameters evenly,
    ``ceil(P / (T K))`` per device. Plain data parallelism (stage 0) holds the model's own
    tensors. ZeRO (stages 1-3) flattens the parameters into ``units`` (one buffer of all of
    them by default; :mod:`dlcourse.sharding` uses the whole model at stage 1 and one unit per
    layer at stages 2 and 3: ``sharding.unit_sizes``), each zero-padded to a multiple of N:
    a rank owns ``ceil(u / N)`` of each unit, and a full copy is the padded buffer.

    Activations (when ``model_kind`` is set) are an estimate: :func:`activation_bytes` of
    one micro-batch, split evenly over the K stages (for GPT: ``ceil(L / K)`` layers per
    stage), times the micro-batches in flight (:meth:`Layout.in_flight`).
    """
    if not isinstance(layout, Layout):
        raise ValueError(f"layout must be a Layout, got {type(layout).__name__}")
    w = _WEIGHT_BYTES[layout.precision]
    k = optimizer_bytes_per_parameter(layout.optimizer, layout.precision)
    stage, n = layout.zero_stage, layout.num_workers
    if stage == 0:
        full = shard = layout.local_params
    else:
        units = layout.units or (layout.local_params,)
        shard = sum(shard_numel(u, n) for u in units)
        full = shard * n
    return MemoryBreakdown(
        parameters=(shard if stage >= 3 else full) * w,
        gradients=(shard if stage >= 2 else full) * w,
        optimizer=(shard if stage >= 1 else full) * k,
        activations=_layout_activations(layout),
    )


def _layout_activations(layout: Layout) -> int:
    """In-flight micro-batches' held activations on a stage, plus one segment rebuilt."""
    if layout.model_kind is None:
        return 0
    micro = layout.batch // layout.microbatches
    kw = dict(precision=layout.precision, tp=layout.tp, recompute=layout.recompute)
    if layout.model_kind == "gpt":
        layers = -(-layout.layers // layout.pp)
        held, rebuilt = activation_parts(
            "gpt",
            micro,
            **kw,
            seq_len=layout.seq_len,
            d_model=layout.d_model,
            heads=layout.heads,
            layers=layers,
        )
    else:
        held, rebuilt = activation_parts(
            layout.model_kind, micro, **kw, segments=layout.segments, hidden=layout.hidden
        )
        held = -(-held // layout.pp)  # an even split over the stages: an estimate
    return held * layout.in_flight() + rebuilt


# -- the planner: does it fit, and how long does a step take? ---------------------------------


@functools.lru_cache(maxsize=16)
def _training_flops_per_example(kind: str, hidden: int) -> int:
    from dlcourse.models import MLP, MnistCNN, flops_per_example

    return flops_per_example(MnistCNN() if kind == "cnn" else MLP(hidden))


@dataclass(frozen=True)
class Plan:
    """What :func:`plan` predicts for one layout on one kind of device."""

    layout: Layout  # the layout planned
    memory: MemoryBreakdown  # bytes per device, by kind
    device_memory: float  # bytes one device has
    compute_s: float  # seconds of arithmetic per step on one device (with the pipeline's bubble)
    communication: dict[str, float]  # seconds per step by kind: "data", "tensor", "pipeline"

    @property
    def fits(self) -> bool:
        """Whether the predicted bytes per device fit into the device's memory."""
        return self.memory.total <= self.device_memory

    @property
    def communication_s(self) -> float:
        """All communication seconds per step (not overlapped with compute)."""
        return sum(self.communication.values())

    @property
    def step_s(self) -> float:
        """Compute plus communication, with no overlap: an upper estimate of a step."""
        return self.compute_s + self.communication_s

    def as_dict(self) -> dict[str, Any]:
        """Bytes per kind, fits, seconds of compute and of each kind of communication (for JSON)."""
        return {
            "memory": self.memory.as_dict(),
            "device_memory": self.device_memory,
            "fits": self.fits,
            "compute_s": self.compute_s,
            "communication_s": dict(self.communication),
            "step_s": self.step_s,
        }

    def table(self) -> str:
        """The accounting per device as a few aligned lines of text."""
        lay = self.layout
        lines = [
            f"{lay.num_params:,} parameters on {lay.devices} devices: data N={lay.num_workers} "
            f"(ZeRO stage {lay.zero_stage}), tensor T={lay.tp}, pipeline K={lay.pp} "
            f"(M={lay.microbatches}, {lay.schedule}); {lay.precision} {lay.optimizer}"
            + (", recompute" if lay.recompute else ""),
            f"{'per device':<14}{'GB':>10}",
        ]
        for kind, value in self.memory.as_dict().items():
            lines.append(f"{kind:<14}{value / 1e9:>10.3f}")
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(f"device memory {self.device_memory / 1e9:>10.3f}  -> {verdict}")
        comm = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in self.communication.items() if v) or "none"
        step, compute = self.step_s * 1e3, self.compute_s * 1e3
        lines.append(f"step {step:.2f} ms = compute {compute:.2f} ms + communication ({comm})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"Plan({self.memory!r}, fits={self.fits}, compute={self.compute_s * 1e3:.2f} ms, "
            f"communication={self.communication_s * 1e3:.2f} ms)"
        )


def plan(
    layout: Layout,
    *,
    device_memory: float = 80e9,
    alpha_beta: AlphaBeta | None = None,
    device_flops: float = 1e14,
) -> Plan:
    """Memory per device (:func:`predict`), whether it fits, and a step's compute and communication.

    ``device_memory`` in bytes (80e9: an 80 GB accelerator), ``device_flops`` the FLOP/s one
    device sustains, ``alpha_beta`` the network (default ``AlphaBeta()``: 0.1 ms, 1 GB/s).
    Compute: training FLOPs of the replica's batch (GPT 6 P per token, 8 P with recompute;
    CNN and MLP counted layer by layer; otherwise 6 P per example) split over T x K devices,
    times the pipeline's ``(M + K - 1) / M`` for its bubble. Communication, with the
    alpha-beta model, not overlapped: data parallelism an all-reduce of the gradients
    (ZeRO-1/2: reduce-scatter + all-gather, the same volume; ZeRO-3: two all-gathers and a
    reduce-scatter, 1.5x); tensor parallelism two all-reduces per layer forward and two
    backward (GPT; the CNN's and MLP's dense block: one each way); the pipeline one
    activation forward and one gradient backward per micro-batch and stage boundary.
    """
    if not isinstance(layout, Layout):
        raise ValueError(f"layout must be a Layout, got {type(layout).__name__}")
    check_float("device_memory", device_memory, low=0.0, low_open=True)
    check_float("device_flops", device_flops, low=0.0, low_open=True)
    if alpha_beta is None:
        alpha_beta = AlphaBeta()
    if not isinstance(alpha_beta, AlphaBeta):
        raise ValueError(
            f"alpha_beta must be a dlcourse.collectives.AlphaBeta, got {type(alpha_beta).__name__}"
        )
    lay = layout
    e = _WEIGHT_BYTES[lay.precision]
    micro, m, k, t = lay.batch // lay.microbatches, lay.microbatches, lay.pp, lay.tp

    if lay.model_kind == "gpt":
        per_example = (8 if lay.recompute else 6) * lay.num_params * lay.seq_len
    elif lay.model_kind in ("cnn", "mlp"):
        per_example = _training_flops_per_example(lay.model_kind, lay.hidden) * (
            4 / 3 if lay.recompute else 1
        )
    else:
        per_example = 6 * lay.num_params
    compute_s = per_example * lay.batch / (t * k) / device_flops * (m + k - 1) / m

    grads = lay.local_params * e
    n = lay.num_workers
    if lay.zero_stage == 3:
        data = 2 * alpha_beta.time("all_gather", grads, n) + alpha_beta.time("reduce_scatter", grads, n)
    elif lay.zero_stage in (1, 2):
        data = alpha_beta.time("all_gather", grads, n) + alpha_beta.time("reduce_scatter", grads, n)
    else:
        data = alpha_beta.time("all_reduce", grads, n)

    tensor = pipeline = 0.0
    if lay.model_kind == "gpt":
        boundary = lay.seq_len * micro * lay.d_model * e
        per_layer = (6 if lay.recompute else 4) * alpha_beta.time("all_reduce", boundary, t)
        tensor = m * -(-lay.layers // k) * per_layer
    elif lay.model_kind in ("cnn", "mlp"):
        width = 1024 if lay.model_kind == "cnn" else 784  # the dense block's input
        boundary = micro * width * e
        tensor = m * (
            alpha_beta.time("all_reduce", micro * 10 * e, t) + alpha_beta.time("all_reduce", boundary, t)
        )
    if lay.model_kind is not None and k > 1:
        pipeline = 2 * m * (k - 1) / k * alpha_beta.time("send", boundary, 2)
    return Plan(
        layout=lay,
        memory=predict(lay),
        device_memory=float(device_memory),
        compute_s=compute_s,
        communication={"data": data, "tensor": tensor, "pipeline": pipeline},
    )
