"""Divergence: a run whose loss (or parameters) blew up, said in words.

Every runtime calls :func:`check_finite` on its loss (and, where a value crosses a process
boundary, on gradients or parameters). A non-finite value, or a loss above
:data:`LOSS_LIMIT`, raises :class:`Diverged`: which
runtime, at which update / epoch / step, on which worker, the value, and what to try. A
diverged run is a *result*, not a crash: the CLI exits 1 with one line and writes
``"diverged": true`` with where into the JSON; a panel shows the sentence as its message.

In a multi-process run the worker's :class:`Diverged` reaches the parent inside the
launcher's :class:`~dlcourse.launcher.WorkerError` (as text): :func:`find_diverged` reads it
back from there.
"""

from __future__ import annotations

import math
import re

import torch

__all__ = ["LOSS_LIMIT", "Diverged", "check_finite", "find_diverged", "hint_for"]

# what to try, per runtime: the lecture's remedies for each kind of run
_ASYNC_HINT = (
    "a lower --lr, --lr-policy staleness (lr / max(1, sigma)), soft sync (--softsync S > 1) "
    "or a staleness bound (--staleness-bound b)"
)
_HINTS = {
    "async-ps": _ASYNC_HINT,
    "simulate": _ASYNC_HINT,
    "decentralized": "a lower --lr, or fewer workers starting at once (--warmup-workers)",
}
_DEFAULT_HINT = "a lower --lr (or --optimizer sgd instead of adam / momentum)"

# A mean cross-entropy above this is a blown-up model, even while it is still finite: an
# untrained 10-class model has ln 10 = 2.3, and 50 means the right class gets probability
# below e^-50 on average. The lecture's small models stay finite for a long time at a huge
# lr (the MLP at lr 100 reaches 1e9 without overflowing), so "not finite" alone would let
# such a run finish and print accuracy 0.1; this catches it within a few updates.
LOSS_LIMIT = 50.0


def hint_for(runtime: str) -> str:
    """What to try when ``runtime`` diverges (a simulator policy counts as ``simulate``)."""
    if runtime.startswith("simulate"):
        return _HINTS["simulate"]
    return _HINTS.get(runtime, _DEFAULT_HINT)


class Diverged(RuntimeError):
    """A run's loss, gradient or parameters became non-finite (nan or inf); the run stopped.

    ``runtime``: the strategy or simulator policy (``"single"``, ``"async-ps"``,
    ``"simulate async"``); ``where``: ``"update"``, ``"epoch"`` or ``"step"`` and ``index``
    (counted from 1); ``worker``: the worker (or rank / stage) that saw it, None if not one;
    ``what``: ``"loss"``, ``"gradient"`` or ``"parameters"``; ``value``: the offending value
    (for a tensor, its first non-finite entry); ``hint``: what to try. ``partial`` may hold
    what the run recorded before it stopped (the simulator puts its SimResult there, so a
    panel can draw the curves up to the divergence). A subclass of RuntimeError: the CLI
    reports it with exit status 1.
    """

    def __init__(
        self,
        runtime: str,
        where: str,
        index: int,
        worker: int | None = None,
        value: float = math.nan,
        what: str = "loss",
        hint: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.where = where
        self.index = int(index)
        self.worker = None if worker is None else int(worker)
        self.value = float(value)
        self.what = what
        self.hint = hint or hint_for(runtime)
        self.partial = None
        on = f" on worker {self.worker}" if self.worker is not None else ""
        above = f" (above the limit {LOSS_LIMIT:g})" if math.isfinite(self.value) else ""
        super().__init__(
            f"{runtime} diverged at {where} {self.index}{on}: the {what} is {self.value:.4g}{above}; "
            f"the run stopped there. Try {self.hint}."
        )

    def __reduce__(self):  # picklable across processes, with every field
        return (
            Diverged,
            (self.runtime, self.where, self.index, self.worker, self.value, self.what, self.hint),
        )

    def as_dict(self) -> dict:
        """The JSON fields of a diverged run: ``diverged`` (True), ``diverged_at`` and the message."""
        return {
            "diverged": True,
            "diverged_at": {
                "runtime": self.runtime,
                "where": self.where,
                "index": self.index,
                "worker": self.worker,
                "what": self.what,
                "value": str(self.value),  # nan / inf are not JSON
            },
            "message": str(self),
        }


def _first_bad(value) -> float | None:
    """None if ``value`` (a number, a tensor or a sequence of tensors) is finite, else a bad entry."""
    if isinstance(value, (list, tuple)):
        for v in value:
            bad = _first_bad(v)
            if bad is not None:
                return bad
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            value = value.detach().item()
        else:
            finite = torch.isfinite(value.detach())
            if bool(finite.all()):
                return None
            return float(value.detach()[~finite].reshape(-1)[0])
    value = float(value)
    return None if math.isfinite(value) else value


def check_finite(
    value,
    *,
    runtime: str,
    where: str = "update",
    index: int,
    worker: int | None = None,
    what: str = "loss",
    hint: str | None = None,
):
    """Return ``value`` if it is finite (and a loss at most :data:`LOSS_LIMIT`); else raise
    :class:`Diverged` saying where.

    ``value``: a loss (a number or a one-element tensor), a tensor (gradient, parameters)
    or a list of tensors. The keywords are :class:`Diverged`'s fields.
    """
    bad = _first_bad(value)
    if bad is None and what == "loss":
        loss = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
        bad = loss if loss > LOSS_LIMIT else None
    if bad is not None:
        raise Diverged(runtime, where, index, worker=worker, value=bad, what=what, hint=hint)
    return value


_PATTERN = re.compile(
    r"(?P<runtime>[\w -]+?) diverged at (?P<where>\w+) (?P<index>\d+)(?: on worker (?P<worker>\d+))?: "
    r"the (?P<what>\w+) is (?P<value>[-+\w.]+)(?: \(above the limit [\d.e+]+\))?; "
    r"the run stopped there\. Try (?P<hint>.*?)\.(?:$|\n)",
    re.MULTILINE,
)


def find_diverged(error: BaseException) -> Diverged | None:
    """The :class:`Diverged` inside ``error``: itself, or one a worker process raised.

    A worker's exception reaches the parent as text (the launcher's ``WorkerError`` message,
    traceback, and the reasons of lost ranks); the sentence :class:`Diverged` writes is
    read back into one. None when the error is not a divergence.
    """
    if isinstance(error, Diverged):
        return error
    texts = [str(error), getattr(error, "message", ""), getattr(error, "worker_traceback", "")]
    texts += [getattr(x, "reason", "") for x in getattr(error, "lost", [])]
    texts += [getattr(x, "worker_traceback", "") for x in getattr(error, "lost", [])]
    for text in texts:
        m = _PATTERN.search(text or "")
        if m:
            runtime = m["runtime"].removeprefix("Diverged: ").strip()
            runtime = runtime.rsplit(": ", 1)[-1]
            worker = int(m["worker"]) if m["worker"] is not None else None
            return Diverged(
                runtime, m["where"], int(m["index"]), worker, float(m["value"]), m["what"], m["hint"]
            )
    if error.__cause__ is not None:
        return find_diverged(error.__cause__)
    return None
