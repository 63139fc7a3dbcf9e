"""Activation recomputation: keep fewer activations, compute them again in the backward pass.

The backward pass needs the activations of the forward pass, so training holds every
layer's saved tensors until backward reaches it: for deep networks and big batches that is
most of the memory. Chen et al., "Training Deep Nets with Sublinear Memory Cost" (2016),
keep only the inputs of a few segments of the network and, during backward, run each
segment's forward again to rebuild what it needs: with sqrt(L) segments of an L-layer
network the activations cost O(sqrt(L)) instead of O(L), for about one extra forward pass
(a third more compute, since a backward costs about two forwards).

PyTorch does the bookkeeping in ``torch.utils.checkpoint.checkpoint``; here
:func:`recompute_segments` wraps the segments of an ``nn.Sequential`` (the lecture's CNN, the
MLP) in it, and :func:`activation_bytes` measures the bytes autograd saves
(:class:`dlcourse.memory.SavedActivations`) with and without. The gradients are the same
(the same operations run on the same inputs); ``benchmarks/tensor_parallel.py`` measures the
time it adds.

What it saves is the memory *held between forward and backward* (``ActivationBytes.held``:
per micro-batch, which a pipeline holds M of at once); while backward recomputes a segment,
that segment's activations are alive again (``rebuilt``). On the lecture's CNN one layer
dominates (the first convolution's 32 x 24 x 24 output, saved by the max-pool with its
indices), so the peak of a single step falls far less than what is held::

    from dlcourse.models import make_model
    from dlcourse.recompute import activation_bytes, recompute_segments

    model = make_model("cnn", seed=0)
    X, y = split.train.X[:100], split.train.y[:100]
    activation_bytes(model, X, y).peak, activation_bytes(recompute_segments(model, 2), X, y).peak
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from dlcourse.memory import SavedActivations, segment_bounds


class Recomputed(nn.Module):
    """An ``nn.Sequential`` run in segments whose activations are recomputed in backward.

    Only each segment's input is kept; the tensors inside a segment are freed after its
    forward and rebuilt by running the segment again when backward reaches it. In
    ``eval`` mode, or without gradients, it is the plain model. The parameters are the
    wrapped model's own (``Recomputed(model).model is model``).
    """

    def __init__(self, model: nn.Sequential, segments: int) -> None:
        super().__init__()
        if not isinstance(model, nn.Sequential):
            raise ValueError(f"model must be an nn.Sequential (MnistCNN, MLP), got {type(model).__name__}")
        self.model = model
        self.bounds = segment_bounds(len(model), segments)
        layers = list(model)  # plain Sequentials: a subclass (MnistCNN) cannot be sliced
        self.segments = [nn.Sequential(*layers[a:b]) for a, b in self.bounds]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()):
            return self.model(x)
        for segment in self.segments:
            # use_reentrant=False: PyTorch's recommended form; it also works when x needs no grad
            x = checkpoint(segment, x, use_reentrant=False)
        return x

    def extra_repr(self) -> str:
        return f"segments={self.bounds}"


def recompute_segments(model: nn.Sequential, segments: int) -> Recomputed:
    """``model`` in ``segments`` recomputed segments (Chen et al.: about sqrt(layers) of them)."""
    return Recomputed(model, segments)


@dataclass(frozen=True)
class ActivationBytes:
    """Bytes of saved activations in one training step (see :func:`activation_bytes`)."""

    held: int  # saved by the forward pass and held until backward reaches them
    rebuilt: int  # the largest segment's activations, saved again while backward recomputes it

    @property
    def peak(self) -> int:
        """The most alive at once: what forward held, plus one segment rebuilt in backward."""
        return self.held + self.rebuilt


def activation_bytes(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> ActivationBytes:
    """Bytes autograd saves for backward in one training step of ``model`` on ``(X, y)``.

    ``held``: the forward and the cross-entropy loss run inside
    :class:`~dlcourse.memory.SavedActivations` (parameters are not counted); its peak. For a
    :class:`Recomputed` model that is each segment's input (and the loss's tensors).
    ``rebuilt``: for a :class:`Recomputed` model, the most bytes one segment saves when it
    runs without recomputation on the input it had (its input not counted again: it is
    already held); 0 for another model. While backward recomputes a segment both are alive,
    so ``peak = held + rebuilt`` (Chen et al.: the checkpoints plus the largest segment).
    (Inside ``torch.utils.checkpoint``'s recomputation autograd's hooks are its own, so the
    rebuilt tensors are measured segment by segment instead.) ``model``'s gradients are
    left as one backward made them.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor) or len(X) != len(y) or len(X) == 0:
        raise ValueError("X and y must be tensors with the same number (>= 1) of examples")
    with SavedActivations(model) as saved:
        loss = F.cross_entropy(model(X), y)
    held = saved.peak
    loss.backward()
    rebuilt = 0
    if isinstance(model, Recomputed) and model.training:
        x = X
        for segment in model.segments:
            x = x.detach().requires_grad_(x.requires_grad or x is not X)
            with SavedActivations(model, exclude=[x]) as one:
                out = segment(x)
            rebuilt = max(rebuilt, one.peak)
            x = out
    return ActivationBytes(held=held, rebuilt=rebuilt)
