"""What this machine offers for distributed training: the first cell of every lesson.

``describe()`` reports the PyTorch version, CPU cores, GPUs and the ``torch.distributed``
backends compiled in (gloo on every build; NCCL only with CUDA; MPI rarely), so a student
sees at once which runtime the lessons will use.
"""

from __future__ import annotations

import os
import platform

import torch
import torch.distributed as dist


def describe() -> dict:
    """A dict of the facts that decide how the course runs on this machine."""
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    backends = [
        name
        for name, available in (
            ("gloo", dist.is_gloo_available()),
            ("nccl", dist.is_nccl_available()),
            ("mpi", dist.is_mpi_available()),
        )
        if available
    ]
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count() or 1,
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "distributed_available": dist.is_available(),
        "backends": backends,
        "default_backend": "nccl" if gpus and "nccl" in backends else "gloo",
    }


def report() -> str:
    """:func:`describe` as aligned lines for printing."""
    facts = describe()
    facts["gpus"] = ", ".join(facts["gpus"]) or "none (the course runs on CPU processes)"
    facts["backends"] = ", ".join(facts["backends"])
    return "\n".join(f"{key:>22}: {value}" for key, value in facts.items())
