"""Replication inside one process: Keras' ``multi_gpu_model`` with ``cpu_relocation``.

The lecture's multi-GPU example (the Keras MNIST script) wraps the model with
``multi_gpu_model(model, gpus=N, cpu_relocation=True)``: the weights live on the CPU, each
batch is split into N slices, each GPU runs a replica on its slice, the outputs are
concatenated, and the gradients are merged where the weights are. That is data
parallelism in one process (PyTorch's ``nn.DataParallel`` did the same; Li et al.,
"PyTorch Distributed", VLDB 2020, explain why multi-process DDP replaced it: one Python
thread cannot keep many devices busy). :class:`ReplicatedModel` is that wrapper, built
from ``torch.func.functional_call``; on a machine without GPUs its replicas are CPU ones,
which shows the mechanics but not the speed.

    dlcourse train --strategy replicated --workers 2 --model mlp
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call

from dlcourse._validate import check_int
from dlcourse.models import check_model


class ReplicatedModel(nn.Module):
    """Keras' ``multi_gpu_model(model, gpus=..., cpu_relocation=True)`` in PyTorch.

    The weights stay where ``model`` is (put it on the CPU for ``cpu_relocation=True``).
    Each forward pass replicates them onto every device in ``devices``, scatters the
    batch (one slice per replica), runs the replicas, and gathers the outputs on
    ``output_device``. Backward sends each replica's gradient back to the hosted weights,
    where autograd adds them up: the merge happens on the weights' device. Use it like
    the model itself (``fit(ReplicatedModel(model, ["cpu", "cpu"]), data)``).
    """

    def __init__(self, model: nn.Module, devices: Sequence[str | torch.device], output_device="cpu") -> None:
        super().__init__()
        check_model(model)
        if len(devices) == 0:
            raise ValueError("devices must list at least one device, got []")
        self.module = model
        self.devices = [torch.device(d) for d in devices]
        self.output_device = torch.device(output_device)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        params = dict(self.module.named_parameters())
        buffers = dict(self.module.named_buffers())
        outputs = []
        for device, chunk in zip(self.devices, X.tensor_split(len(self.devices))):  # scatter
            if len(chunk) == 0:
                continue  # fewer examples than replicas
            # replicate: a differentiable copy, so its gradient flows back to the hosted weights
            replica = {name: p.to(device, copy=True) for name, p in params.items()}
            replica.update({name: b.to(device) for name, b in buffers.items()})
            outputs.append(functional_call(self.module, replica, (chunk.to(device),)))
        return torch.cat([y_hat.to(self.output_device) for y_hat in outputs])  # gather

    def __repr__(self) -> str:
        hosted = next(self.module.parameters()).device
        return (
            f"ReplicatedModel({type(self.module).__name__}, devices={[str(d) for d in self.devices]}, "
            f"weights on {hosted}, outputs on {self.output_device})"
        )


def replica_devices(num_replicas: int) -> list[str]:
    """``cuda:0..N-1`` when there are N GPUs, else N CPU replicas."""
    check_int("num_replicas", num_replicas, low=1)
    if torch.cuda.is_available() and torch.cuda.device_count() >= num_replicas:
        return [f"cuda:{i}" for i in range(num_replicas)]
    return ["cpu"] * num_replicas
