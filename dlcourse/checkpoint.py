"""Checkpoints that survive a crash: write to a temporary file, then rename.

A data-parallel run that dies after hours should not start again from step 0, and a
checkpoint written half-way when the machine died must not be mistaken for a good one.
Two habits give both:

- **Atomic replace.** The state goes to ``checkpoint.pt.tmp-<pid>`` in the same folder,
  is flushed to disk (``fsync``), and is then renamed over ``checkpoint.pt``. A rename
  within one file system is atomic (POSIX ``rename(2)``), so a reader sees either the old
  checkpoint or the new one, never a torn one.
- **Checked loading.** A checkpoint carries a format tag, the strategy that wrote it and a
  *fingerprint* of the settings that must not change across a resume (model, N, batch
  size, lr, seed, ...). A truncated file, some other file, or a checkpoint of another run
  raises :class:`CheckpointError` (a ``ValueError``) saying which.

Every rank reads the same folder on resume: on several machines it must be a shared file
system (see ``docs/scaling-out.md``). The training loops that use this module are in
:mod:`dlcourse.data_parallel` and :mod:`dlcourse.averaging`; resume gives exactly the
parameters of an uninterrupted run because the batch order is a function of
``(seed, epoch, rank)`` alone and the optimizer state is saved with the weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dlcourse._validate import check_int

FORMAT = "dlcourse-checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, foreign, or belongs to a different run."""


@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly where it stopped."""

    strategy: str  # the training strategy that wrote it ("ddp", "averaging", ...)
    step: int  # optimizer steps completed by every worker
    fingerprint: dict[str, Any]  # settings a resume must share (model, num_workers, lr, seed, ...)
    states: list[dict[str, Any]]  # per rank (or one shared): {"model": ..., "optimizer": ..., ...}
    extra: dict[str, Any] = field(default_factory=dict)  # history so far, e.g. {"step_loss": [...]}

    def __repr__(self) -> str:
        return f"Checkpoint(strategy={self.strategy!r}, step={self.step}, states={len(self.states)})"


def checkpoint_path(directory: str | os.PathLike) -> Path:
    """Where the checkpoint of ``directory`` lives (one file, replaced on every save)."""
    return Path(directory) / FILENAME


def save_checkpoint(directory: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` into ``directory`` atomically; return its path."""
    if not isinstance(checkpoint, Checkpoint):
        raise ValueError(f"checkpoint must be a Checkpoint, got {type(checkpoint).__name__}")
    check_int("step", checkpoint.step, low=0)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(directory)
    tmp = directory / f"{FILENAME}.tmp-{os.getpid()}"
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "strategy": checkpoint.strategy,
        "step": checkpoint.step,
        "fingerprint": dict(checkpoint.fingerprint),
        "states": checkpoint.states,
        "extra": checkpoint.extra,
    }
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, target)  # atomic: readers see the old file or the new one, never half
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves the previous checkpoint as it was
        raise
    try:  # make the rename itself durable (a directory fsync; not possible on every OS)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return target


def load_checkpoint(
    directory: str | os.PathLike,
    *,
    strategy: str | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> Checkpoint:
    """Read the checkpoint in ``directory`` and check that this run may resume from it.

    ``strategy`` and ``fingerprint``, when given, must match what the checkpoint was
    written with; any difference raises :class:`CheckpointError` naming the setting.
    """
    path = checkpoint_path(directory)
    if not path.exists():
        raise CheckpointError(f"no checkpoint to resume from: {str(path)!r} does not exist")
    try:
        # weights_only: a checkpoint is data; never run code from a file found on disk
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip, pickle and OS errors all mean "unreadable"
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or not a checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'unreadable'})"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a dlcourse checkpoint (no {FORMAT!r} format tag)")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {payload.get('version')!r}; "
            f"this dlcourse reads version {VERSION}"
        )
    if strategy is not None and payload["strategy"] != strategy:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written by strategy {payload['strategy']!r}, "
            f"cannot resume strategy {strategy!r} from it"
        )
    if fingerprint is not None:
        saved = payload["fingerprint"]
        for key in sorted(set(saved) | set(fingerprint)):
            if saved.get(key) != fingerprint.get(key):
                raise CheckpointError(
                    f"checkpoint {str(path)!r} belongs to another run: it has {key}={saved.get(key)!r}, "
                    f"this run has {key}={fingerprint.get(key)!r}"
                )
    return Checkpoint(
        strategy=payload["strategy"],
        step=payload["step"],
        fingerprint=payload["fingerprint"],
        states=payload["states"],
        extra=payload.get("extra", {}),
    )
