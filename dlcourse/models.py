"""The lecture's networks, in PyTorch.

- :class:`MnistCNN`: the lecture's Keras MNIST example (Conv 32@5x5, max-pool 2,
  Conv 64@5x5, max-pool 2, flatten, Dense 1024 ReLU, Dense 10): 1,111,946 parameters.
  Keras ends with a softmax; here the model returns logits and the loss is
  ``cross_entropy``, which applies log-softmax itself (numerically safer).
- :class:`MLP`: a small multilayer perceptron, for fast simulations.
- :class:`SharedLSTM`: the lecture's device-parallelism example, two sequences of shape
  (140, 256) encoded by one shared LSTM(64), the two codes concatenated, a classifier on top.

``MnistCNN`` and ``MLP`` are ``nn.Sequential``, so model parallelism can cut them into
stages by layer index.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dlcourse._validate import check_choice, check_int

MODELS = ("cnn", "mlp")


class MnistCNN(nn.Sequential):
    """The lecture's CNN for 28x28 digits; returns logits of shape ``(n, 10)``."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 32, kernel_size=5),  # 28 -> 24
            nn.MaxPool2d(2),  # 24 -> 12
            nn.Conv2d(32, 64, kernel_size=5),  # 12 -> 8
            nn.MaxPool2d(2),  # 8 -> 4
            nn.Flatten(),  # 64 * 4 * 4 = 1024
            nn.Linear(1024, 1024),
            nn.ReLU(),
            nn.Linear(1024, 10),
        )

    def __repr__(self) -> str:
        return f"MnistCNN(parameters={count_parameters(self):,})"


class MLP(nn.Sequential):
    """Flatten, ``Linear(784, hidden)``, ReLU, ``Linear(hidden, 10)``: small and fast."""

    def __init__(self, hidden: int = 64) -> None:
        check_int("hidden", hidden, low=1)
        self.hidden = hidden
        super().__init__(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def __repr__(self) -> str:
        return f"MLP(hidden={self.hidden}, parameters={count_parameters(self):,})"


class SharedLSTM(nn.Module):
    """Two sequences encoded by one shared LSTM, concatenated, then classified.

    ``forward(a, b)`` takes two batches of shape ``(n, seq_len, input_size)`` (the
    lecture: (140, 256)) and returns logits ``(n, num_outputs)``. ``encode`` is the
    shared branch, so device parallelism can run it on two devices at once.
    """

    def __init__(self, input_size: int = 256, hidden_size: int = 64, num_outputs: int = 1) -> None:
        super().__init__()
        check_int("input_size", input_size, low=1)
        check_int("hidden_size", hidden_size, low=1)
        check_int("num_outputs", num_outputs, low=1)
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.head = nn.Linear(2 * hidden_size, num_outputs)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The shared branch: the LSTM's last hidden state, ``(n, hidden_size)``."""
        _, (h, _) = self.lstm(x)
        return h[-1]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.encode(a), self.encode(b)], dim=1))

    def __repr__(self) -> str:
        return (
            f"SharedLSTM(input_size={self.lstm.input_size}, hidden_size={self.lstm.hidden_size}, "
            f"num_outputs={self.head.out_features}, parameters={count_parameters(self):,})"
        )


def check_model(model: Any) -> nn.Module:
    """Return ``model`` if it is a ``torch.nn.Module``; else raise ``ValueError``."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars in ``model``."""
    check_model(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_model(name: str, *, seed: int | None = None) -> nn.Module:
    """``"cnn"`` -> :class:`MnistCNN`, ``"mlp"`` -> :class:`MLP`; seeded when ``seed`` is given."""
    check_choice("model", name, MODELS)
    if seed is not None:
        check_int("seed", seed, low=0)
        torch.manual_seed(seed)
    return MnistCNN() if name == "cnn" else MLP()


# -- FLOPs: what a gradient costs, counted from the layers ---------------------------------

# layers that only move data (no arithmetic worth counting)
_FREE_LAYERS = (nn.Flatten, nn.Identity, nn.Dropout)


def _forward_flops(layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[int, bool]:
    """``(FLOPs of layer's forward pass on one example, has weights)``; a multiply-add counts 2."""
    out = y[0].numel()
    if isinstance(layer, nn.Linear):
        rows = out // layer.out_features  # a Linear applied to every row of a (..., in) input
        return rows * (
            2 * layer.in_features * layer.out_features + (layer.out_features if layer.bias is not None else 0)
        ), True
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        per_output = 2 * (layer.in_channels // layer.groups) * kh * kw + (1 if layer.bias is not None else 0)
        return out * per_output, True
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        k = layer.kernel_size if isinstance(layer.kernel_size, tuple) else (layer.kernel_size,) * 2
        return out * k[0] * k[1], False  # one comparison (or addition) per window element
    if isinstance(layer, (nn.ReLU, nn.Sigmoid, nn.Tanh)):
        return x[0].numel(), False
    if isinstance(layer, _FREE_LAYERS):
        return 0, False
    raise ValueError(f"flops_per_example cannot count a {type(layer).__name__} layer")


def flops_per_example(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28)) -> int:
    """Forward + backward FLOPs of one training example, counted layer by layer.

    Forward: a multiply-add counts 2 FLOPs (Linear ``2 in out``, Conv2d ``2 C_in k_h k_w``
    per output value, biases 1 per output); ReLU one per value, max-pooling one comparison per
    window element. Backward: a layer with weights computes two products of its forward
    size (the gradient with respect to its input and to its weights), so it costs 2x its
    forward; a layer without weights costs 1x. So a gradient costs about 3x the forward pass
    (the usual rule of thumb). The lecture's CNN: 28,896,286 (about 29 MFLOP); the MLP: 305,246.
    Only the layers of :class:`MnistCNN` and :class:`MLP` (Linear, Conv2d, pooling, ReLU,
    Flatten) are counted; another layer raises ``ValueError``.
    """
    check_model(model)
    counts: list[tuple[int, bool]] = []
    hooks = [
        m.register_forward_hook(lambda layer, args, y: counts.append(_forward_flops(layer, args[0], y)))
        for m in model.modules()
        if len(list(m.children())) == 0
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return sum(f * (3 if weighted else 2) for f, weighted in counts)
