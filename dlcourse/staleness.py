"""The update rules of asynchronous SGD and the three ways the lecture tames stale gradients.

**Staleness, one definition for every rule.** A worker pulls the parameters at server
version ``v_pull``, computes a gradient dW_n, and pushes it; the server applies it when it
is at version ``v_now`` (the version *before* the step that contains this update). Its
staleness is ``tau = v_now - v_pull``: the server versions applied between the pull and the
application of the update (the lecture's "stale gradient problem"). A version is one
change of the parameters, so a soft-sync step of S updates is one version. The same
``tau`` feeds lambda_n whatever the rule (async, soft sync, bounded staleness), so the
simulator, the real server and a student's rule all see the same number.

How it relates to the papers: Zhang et al. 2016 count the update itself, so their tau is
ours + 1 (their n-softsync mean is N/S, ours N/S - 1 in steady state; async with N equal
workers: theirs N, ours N - 1). Ho et al. 2013 count in **clocks** (a worker's clock is the
number of its steps applied; the server clock is the smallest of them): that is a second,
separately named figure here, the **clock lag** (:class:`BoundedStaleness`), never used as
tau.

1. **Staleness-scaled learning rate** (lambda_n): scale each update by its staleness,
   ``lambda_n = lambda / max(1, tau)`` by default (Zhang, Gupta, Lian, Liu, "Staleness-aware
   Async-SGD for Distributed Deep Learning", IJCAI 2016). Any ``f(lr, tau) -> lambda_n``
   plugs in.
2. **Soft synchronization**: the server collects S updates from any of the N workers
   (1 <= S <= N), then applies ``W <- W - (1/S) * sum_n lambda_n dW_n``. We take the
   *mean* (Zhang et al.'s n-softsync), so that S = N with a constant lambda is exactly
   synchronous gradient averaging, and S = 1 is plain async SGD; the server's version
   advances by one per applied step. ``reduce="sum"`` gives the lecture's formula as written.
3. **Bounded staleness** (stale synchronous parallel, Ho et al., "More Effective
   Distributed ML via a Stale Synchronous Parallel Parameter Server", NIPS 2013): a worker
   may start its step ``c`` only while ``c - min_n c_n <= bound``, where ``c_n`` counts the
   steps of worker n that the server has applied; the fast workers wait. A worker starting
   clock c then sees every update of clocks < c - bound (SSP's guarantee), its clock lag is
   at most ``bound``, and with S = 1 its staleness tau is at most ``(2 bound + 1)(N - 1)``
   versions (every other worker can have steps c - bound .. c + bound applied while it
   computes step c). Bound 0 is *clock-synchronous* (nobody starts clock c before every
   step of clock c - 1 is applied) but not synchronous SGD: each gradient is still applied
   alone, at its own tau <= N - 1.

These rules are pure: the simulator (:mod:`dlcourse.sim`) and the real parameter server
call the same functions, and a student's own rule plugs into both.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import torch

from dlcourse._validate import check_choice, check_float, check_int

LrPolicy = Callable[[float, int], float]
REDUCTIONS = ("mean", "sum")


def staleness(server_version: int, pulled_version: int) -> int:
    """``tau = server_version - pulled_version``: how many steps the gradient is behind."""
    check_int("server_version", server_version, low=0)
    check_int("pulled_version", pulled_version, low=0, high=server_version)
    return server_version - pulled_version


def constant_lr(lr: float, tau: int) -> float:
    """``lambda_n = lambda`` whatever the staleness (plain async SGD)."""
    return lr


def staleness_lr(lr: float, tau: int) -> float:
    """``lambda_n = lambda / max(1, tau)`` (Zhang et al. 2016): staler gradients count less."""
    return lr / max(1, tau)


LR_POLICIES: dict[str, LrPolicy] = {"constant": constant_lr, "staleness": staleness_lr}


def resolve_lr_policy(policy: str | LrPolicy) -> LrPolicy:
    """A policy name (``"constant"``, ``"staleness"``) or a function ``f(lr, tau) -> lambda_n``."""
    if callable(policy):
        return policy
    return LR_POLICIES[check_choice("lr_policy", policy, LR_POLICIES)]


def lr_policy_name(policy: str | LrPolicy) -> str:
    """How results and reprs write a policy: its name, or a student's function's ``__name__``."""
    if isinstance(policy, str):
        return policy
    if not callable(policy):
        raise ValueError(f"lr_policy must be a policy name or a function f(lr, tau), got {policy!r}")
    return getattr(policy, "__name__", repr(policy))


def scaled_lr(lr: float, tau: int, policy: str | LrPolicy = "staleness") -> float:
    """The learning rate lambda_n for one update of staleness ``tau`` under ``policy``."""
    check_float("lr", lr, low=0.0, low_open=True)
    check_int("tau", tau, low=0)
    value = resolve_lr_policy(policy)(lr, tau)
    if not isinstance(value, (int, float)) or not (value >= 0) or value == float("inf"):
        raise ValueError(f"lr_policy must return a finite learning rate >= 0, got {value!r} for tau={tau}")
    return float(value)


@torch.no_grad()
def apply_updates(
    params: Sequence[torch.Tensor],
    updates: Sequence[Sequence[torch.Tensor]],
    lrs: Sequence[float],
    reduce: str = "mean",
) -> None:
    """``W <- W - (1/S) sum_n lambda_n dW_n`` in place (``reduce="sum"`` drops the 1/S).

    ``updates[n]`` holds one tensor per parameter (worker n's gradient); ``lrs[n]`` is
    its lambda_n. Summation runs in the order given, so results are reproducible.
    """
    check_choice("reduce", reduce, REDUCTIONS)
    if len(updates) == 0 or len(updates) != len(lrs):
        raise ValueError(
            f"updates and lrs must be non-empty and of equal length, got {len(updates)} and {len(lrs)}"
        )
    scale = 1.0 / len(updates) if reduce == "mean" else 1.0
    for i, w in enumerate(params):
        for grads in updates:
            if grads[i].shape != w.shape:
                raise ValueError(
                    f"update for parameter {i} has shape {tuple(grads[i].shape)}, expected {tuple(w.shape)}"
                )
        if len(updates) == 1:  # one update (async): no sum to build first
            w.sub_(updates[0][i].to(w.dtype), alpha=lrs[0] * scale)
            continue
        # sum_n lambda_n dW_n first, then one subtraction: W changes once per server step
        step = updates[0][i].to(w.dtype) * lrs[0]
        for grads, lam in zip(updates[1:], lrs[1:]):
            step.add_(grads[i].to(w.dtype), alpha=lam)
        w.sub_(step, alpha=scale)


class SoftSync:
    """The server side of soft synchronization: collect S updates, then apply them.

    ``receive(params, grads, pulled_version)`` records one update; when S have arrived it
    applies them with :func:`apply_updates`, advances ``version`` and returns the list of
    their staleness values (else ``None``): versions, whatever gate the caller runs.
    """

    def __init__(
        self,
        num_workers: int,
        softsync: int | None = None,
        lr: float = 0.1,
        lr_policy: str | LrPolicy = "constant",
        reduce: str = "mean",
    ) -> None:
        self.num_workers = check_int("num_workers", num_workers, low=1)
        self.softsync = check_int("softsync", 1 if softsync is None else softsync, low=1, high=num_workers)
        self.lr = check_float("lr", lr, low=0.0, low_open=True)
        self.lr_policy = resolve_lr_policy(lr_policy)
        self.reduce = check_choice("reduce", reduce, REDUCTIONS)
        self.version = 0
        self._pending: list[tuple[Sequence[torch.Tensor], int]] = []

    def receive(
        self,
        params: Sequence[torch.Tensor],
        grads: Sequence[torch.Tensor],
        pulled_version: int,
    ) -> list[int] | None:
        """Record worker's update ``grads``, computed from ``pulled_version``; apply at the S-th.

        Returns the staleness of each applied update when this one completes a batch,
        else ``None``: ``tau = version - pulled_version``, fixed on arrival (the versions
        applied since the pull; the step that applies this update is not counted).
        """
        tau = staleness(self.version, pulled_version)
        self._pending.append((grads, tau))
        if len(self._pending) < self.softsync:
            return None
        return self._apply_pending(params)

    def flush(self, params: Sequence[torch.Tensor]) -> list[int] | None:
        """Apply the updates received so far even if fewer than S (the end of a run).

        Returns their staleness values, or ``None`` when nothing was pending.
        """
        if not self._pending:
            return None
        return self._apply_pending(params)

    def _apply_pending(self, params: Sequence[torch.Tensor]) -> list[int]:
        taus = [t for _, t in self._pending]
        lrs = [scaled_lr(self.lr, t, self.lr_policy) for t in taus]
        apply_updates(params, [g for g, _ in self._pending], lrs, self.reduce)
        self._pending.clear()
        self.version += 1
        return taus

    @property
    def pending(self) -> int:
        """Updates received but not yet applied."""
        return len(self._pending)

    def __repr__(self) -> str:
        return (
            f"SoftSync(num_workers={self.num_workers}, softsync={self.softsync}, lr={self.lr}, "
            f"lr_policy={lr_policy_name(self.lr_policy)}, reduce={self.reduce!r}, "
            f"version={self.version}, pending={self.pending})"
        )


class BoundedStaleness:
    """Stale-synchronous-parallel gate: who may start their next step.

    ``clocks[n]`` counts the steps of worker n the server has applied (call :meth:`finish`
    when one is applied, not when it is sent: then a worker allowed to start clock c sees
    every update of clocks < c - bound). Worker n may start its next step while
    ``clocks[n] - min(clocks) <= bound``; ``bound=None`` never blocks (async).
    ``clock`` (= ``min(clocks)``) is the server clock of SSP: the **clock lag** of an update
    is ``clock`` when it is applied minus ``clock`` when its worker pulled (at most
    ``bound``). It is a separate figure from the staleness tau, which counts versions.
    A worker that has left the run (:meth:`retire`) no longer counts in that minimum.
    """

    def __init__(self, num_workers: int, bound: int | None) -> None:
        self.num_workers = check_int("num_workers", num_workers, low=1)
        self.bound = None if bound is None else check_int("staleness_bound", bound, low=0)
        self.clocks = [0] * num_workers
        self.retired: set[int] = set()  # workers that left the run (lost): they hold nobody back

    @property
    def clock(self) -> int:
        """The steps every worker still in the run has finished (all workers', once none is)."""
        live = [c for w, c in enumerate(self.clocks) if w not in self.retired]
        return min(live or self.clocks)

    def retire(self, worker: int) -> None:
        """Worker ``worker`` left the run: the slowest of the others sets the clock from now on."""
        check_int("worker", worker, low=0, high=self.num_workers - 1)
        self.retired.add(worker)

    def may_start(self, worker: int) -> bool:
        check_int("worker", worker, low=0, high=self.num_workers - 1)
        return self.bound is None or self.clocks[worker] - self.clock <= self.bound

    def finish(self, worker: int) -> None:
        """One step of worker ``worker`` has been applied by the server."""
        check_int("worker", worker, low=0, high=self.num_workers - 1)
        self.clocks[worker] += 1

    def __repr__(self) -> str:
        retired = f", retired={sorted(self.retired)}" if self.retired else ""
        return (
            f"BoundedStaleness(num_workers={self.num_workers}, bound={self.bound}, "
            f"clocks={self.clocks}{retired})"
        )


def staleness_summary(taus: Sequence[int]) -> dict:
    """``{"max", "mean", "histogram"}`` of applied updates' staleness (histogram keys are str for JSON)."""
    if len(taus) == 0:
        return {"max": 0, "mean": 0.0, "histogram": {}}
    for t in taus:  # staleness counts steps: a fraction or a negative value is a caller's bug
        if isinstance(t, bool) or not (0 <= t < math.inf) or t != int(t):
            raise ValueError(f"taus must hold whole numbers >= 0 (steps behind), got {t!r}")
    counts = Counter(int(t) for t in taus)
    return {
        "max": max(counts),
        "mean": sum(taus) / len(taus),
        "histogram": {str(k): counts[k] for k in sorted(counts)},
    }
