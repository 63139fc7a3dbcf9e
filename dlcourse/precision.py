"""Mixed precision: compute in bfloat16, keep an fp32 master copy of the weights to update.

Micikevicius et al., "Mixed Precision Training" (ICLR 2018): run the forward and backward
passes in 16-bit floats (half the bytes, and much faster on hardware built for them), but
apply the updates to an fp32 **master copy** of the weights. An update ``lr * grad`` is often
smaller than the gap between neighbouring 16-bit numbers near a weight (bfloat16 keeps 8
significant bits: 1 + 2^-8 rounds back to 1), so updating 16-bit weights directly loses
small updates altogether; the fp32 master copy accumulates them. Each step:

1. forward and backward with the bf16 weights, under ``torch.autocast`` (which keeps the
   ops that need range or accuracy, like the loss's softmax, in fp32);
2. the bf16 gradients become the fp32 master weights' gradients;
3. the optimizer steps the fp32 master weights;
4. the bf16 weights are copied from the master weights (rounded) for the next step.

bfloat16 has fp32's exponent range, so the paper's loss scaling (for fp16's narrow range) is
not needed. On a CPU ``torch.autocast("cpu", dtype=torch.bfloat16)`` works; the speed-up is
for accelerators, the bytes are everywhere. What each copy costs per parameter
(:func:`bytes_per_parameter`): bf16 weights 2 + bf16 gradients 2 + fp32 master 4, + Adam's
two fp32 moments 8 = 16 bytes (the ZeRO paper's 2 + 2 + K, K = 12, as counted by the
formulas of :mod:`dlcourse.memory`)::

    trainer = MixedPrecision(make_model("mlp", seed=0), "adam", lr=1e-3)
    loss = trainer.step(X, y)
    trainer.state_bytes()  # MemoryBreakdown: parameters 2P, gradients 2P, optimizer 12P
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlcourse._validate import check_choice, check_float
from dlcourse.memory import MemoryBreakdown, state_bytes
from dlcourse.train import OPTIMIZERS, make_optimizer

# bytes of one value of each floating-point type the course uses
ELEMENT_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}
# fp32 tensors each optimizer keeps per parameter, beside the master weights
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "adam": 2}


def bytes_per_parameter(optimizer: str = "adam", *, mixed: bool = True) -> dict[str, int]:
    """Bytes per parameter of each copy a training rank holds.

    ``mixed=True``: bf16 ``weights`` and ``gradients`` (2 each), fp32 ``master`` weights (4),
    fp32 ``optimizer`` state (4 per state tensor: momentum 1, Adam 2). ``mixed=False``: fp32
    weights and gradients (4 each), no master copy. ``total`` adds them up: mixed-precision
    Adam 16, fp32 Adam 16 too (the saving is in activations and speed, not in state).
    """
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("mixed", mixed, (True, False))
    low = ELEMENT_BYTES["bfloat16"] if mixed else ELEMENT_BYTES["float32"]
    fp32 = ELEMENT_BYTES["float32"]
    parts = {
        "weights": low,
        "gradients": low,
        "master": fp32 if mixed else 0,
        "optimizer": fp32 * OPTIMIZER_STATES[optimizer],
    }
    return {**parts, "total": sum(parts.values())}


class MixedPrecision:
    """Train ``model`` with bf16 compute and fp32 master weights (Micikevicius et al. 2018).

    ``model`` is converted to bfloat16 in place (its parameters are the bf16 compute copy);
    :attr:`master` holds an fp32 copy of each parameter, and the optimizer (``"sgd"``,
    ``"momentum"`` or ``"adam"``) updates those. :meth:`step` is one training step.
    """

    def __init__(self, model: nn.Module, optimizer: str = "sgd", lr: float = 0.1, momentum: float = 0.9):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_choice("optimizer", optimizer, OPTIMIZERS)
        check_float("lr", lr, low=0.0, low_open=True)
        self.master = [p.detach().float().clone().requires_grad_(True) for p in model.parameters()]
        self.model = model.to(torch.bfloat16)  # the compute copy: 2 bytes per weight
        self.optimizer = make_optimizer(optimizer, self.master, lr, momentum)
        self.optimizer_name = optimizer

    def __repr__(self) -> str:
        count = sum(p.numel() for p in self.master)
        return f"MixedPrecision(parameters={count:,}, optimizer={self.optimizer_name!r}, compute=bfloat16)"

    def step(self, X: torch.Tensor, y: torch.Tensor) -> float:
        """Forward and backward in bf16, the update on the fp32 master weights; the loss."""
        if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor) or len(X) != len(y):
            raise ValueError("X and y must be tensors with the same number of examples")
        params = list(self.model.parameters())
        for p in params:
            p.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the loss's softmax stays fp32
            loss = F.cross_entropy(self.model(X), y)
        loss.backward()
        for p, master in zip(params, self.master):
            master.grad = p.grad.float()  # fp32 gradients live only for the update
        self.optimizer.step()
        with torch.no_grad():
            for p, master in zip(params, self.master):
                p.copy_(master)  # rounded to bf16 for the next forward
                master.grad = None
        return loss.item()

    def state_bytes(self) -> MemoryBreakdown:
        """Bytes held now: bf16 weights and gradients; fp32 master weights with the optimizer's
        state (the ZeRO paper's K counts the master copy as optimizer state)."""
        return state_bytes(self.model, self.optimizer, extra_state=self.master)
