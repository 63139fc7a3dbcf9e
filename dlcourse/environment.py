"""What this machine offers for distributed training: the first cell of every lesson.

``describe()`` reports the PyTorch version, CPU cores, GPUs and the ``torch.distributed``
backends compiled in (gloo on every build; NCCL only with CUDA; MPI rarely), so a student
sees at once which runtime the lessons will use.

**What "equal" means across devices.** On NVIDIA GPUs since Ampere, cuDNN runs float32
convolutions in TF32 by default (``torch.backends.cudnn.allow_tf32 = True``): inputs are
rounded to a 10-bit mantissa (unit roundoff ``2**-11``, about 5e-4, against float32's 6e-8)
before they are multiplied. A model split over ``cuda:0`` and the CPU then differs from the
CPU model by far more than float32 rounding (2e-2 relative on the lecture's CNN, measured on
an H200). The course compares devices in full float32: :func:`full_float32` turns TF32 off
for cuDNN and for matrix products while a comparison runs, and the tolerance stays float32's
(1e-5). :func:`round_to_tf32` emulates TF32's rounding on any device, so the size of the
effect can be shown on a CPU.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator

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


# bits of float32's 23-bit mantissa that TF32 drops (it keeps 10)
_TF32_DROPPED_BITS = 13


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """Run the block with TF32 off for cuDNN and matrix products, then restore the settings.

    Use it wherever results of different devices are compared (a split model against the
    one-device model, a GPU replica against the CPU): float32 then means float32 everywhere.
    On a CPU-only build the flags exist and nothing else changes.
    """
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """``x`` (float32) rounded to TF32's 10-bit mantissa, to nearest, ties to even, as tensor cores do.

    A convolution of rounded inputs shows on a CPU what TF32 does to a GPU's result.
    """
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a float32 tensor, got {got}")
    bits = x.contiguous().view(torch.int32)
    half = 1 << (_TF32_DROPPED_BITS - 1)
    lowest_kept = (bits >> _TF32_DROPPED_BITS) & 1  # ties go to the even neighbour
    rounded = (bits + (half - 1) + lowest_kept) & ~((1 << _TF32_DROPPED_BITS) - 1)
    finite = torch.isfinite(x)  # inf and nan keep their bits
    return torch.where(finite, rounded.view(torch.float32), x)
