"""The update rules of asynchronous SGD and the ways the lecture tames stale gradients.

**Staleness sigma, one definition for every rule.** A worker pulls the parameters at server
version ``v_pull``, computes a gradient dW_n, and pushes it; the server applies it when it
is at version ``v_now`` (the version *before* the step that contains this update). Its
staleness is ``sigma = v_now - v_pull``: the server versions applied between the pull and
the application of the update (the lecture's "stale gradient problem"; the lecture gives it
no letter, and tau is the compression threshold in this course). A version is one change of
the parameters, so a soft-sync step of S updates is one version. The same ``sigma`` feeds
lambda_n whatever the rule (async, soft sync, bounded staleness), so the simulator, the
real server and a student's rule all see the same number.

How it relates to the papers: Zhang et al. 2016 count the update itself, so their staleness
is ``tau_Z = sigma + 1`` (their n-softsync mean is N/S, ours N/S - 1 in steady state; async
with N equal workers: theirs N, ours N - 1). Ho et al. 2013 count in **clocks** (a worker's
clock is the number of its steps applied; the server clock is the smallest of them): that is
a second, separately named figure here, the **clock lag** (:class:`BoundedStaleness`), never
used as sigma.

1. **Staleness-scaled learning rate** (lambda_n): scale each update by its staleness. The
   default ``"staleness"`` policy is ``lambda_n = lambda / max(1, sigma)`` (:func:`staleness_lr`);
   Zhang, Gupta, Lian, Liu ("Staleness-aware Async-SGD for Distributed Deep Learning",
   IJCAI 2016) divide by their own count, ``lambda / tau_Z = lambda / (sigma + 1)``, which is
   policy ``"zhang"`` (:func:`zhang_lr`). The two agree at sigma = 0 and differ by the factor
   (sigma + 1) / sigma after that (2 at sigma = 1, 1.07 at sigma = 15): ours keeps an update one
   version old at the full lambda. Any ``f(lr, sigma) -> lambda_n`` plugs in.
2. **Soft synchronization**: the server collects S updates from any of the N workers
   (1 <= S <= N), then applies ``W <- W - (1/S) * sum_n lambda_n dW_n`` (``reduce="mean"``,
   the default). We take the *mean* (Zhang et al.'s n-softsync), so that S = N with a
   constant lambda is exactly synchronous gradient averaging, and S = 1 is plain async SGD;
   ``reduce="sum"`` gives the lecture's formula as written, ``W - sum_n lambda_n dW_n``,
   whose step grows with S. The server's version advances by one per applied step.
3. **Bounded staleness**, two gates that delay the fast workers:

   - the **clock gate** of stale synchronous parallel (Ho et al., "More Effective
     Distributed ML via a Stale Synchronous Parallel Parameter Server", NIPS 2013): a worker
     may start its step ``c`` only while ``c - min_n c_n <= bound``, where ``c_n`` counts the
     steps of worker n that the server has applied. A worker starting clock c then sees
     every update of clocks < c - bound (SSP's guarantee), its clock lag is at most
     ``bound``, and with S = 1 its staleness sigma is at most ``(2 bound + 1)(N - 1)``
     versions. Bound 0 is *clock-synchronous* but not synchronous SGD: each gradient is
     still applied alone, at its own sigma <= N - 1. (:func:`within_bound`,
     :class:`BoundedStaleness`.)
   - the **staleness gate**, the lecture's words taken literally ("delay the faster workers
     when necessary to ensure that the maximum staleness is below a certain threshold"): a
     worker may start a step (pull) only if no update could then be applied with a
     staleness above ``max_staleness`` (sigma_max). An update in flight, pulled at
     ``p_u``, can still see every other in-flight update applied before it, so the gate
     asks ``(v - min_u p_u) + |in flight| <= sigma_max`` (:func:`within_staleness`,
     :class:`StalenessGate`). It needs S = 1 and is our construction, not a paper's: it must
     know every update in flight and the current version at the one server, and it bounds
     sigma by the worst case, while the clock gate needs only per-worker step counters,
     which is why SSP's form is the one parameter-server systems implement.

These rules are pure: the simulator (:mod:`dlcourse.sim`) and the real parameter server
call the same functions, and a student's own rule plugs into both. Each of the four has a
seam, taken by :class:`SoftSync`, :class:`BoundedStaleness`, ``SimConfig`` and ``PSConfig``:

- ``staleness_fn(server_version, pulled_version) -> sigma`` (default :func:`staleness`);
- ``lr_policy(lr, sigma) -> lambda_n`` (default :func:`constant_lr`);
- ``aggregate(params, updates, lrs) -> new params``, one soft-sync step that returns new
  tensors and leaves its inputs alone (default: :func:`apply_updates` with the mean);
- ``gate(clocks, worker, bound) -> bool``, the clock gate's test (default
  :func:`within_bound`).
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from dlcourse._validate import check_choice, check_float, check_int

LrPolicy = Callable[[float, int], float]
StalenessFn = Callable[[int, int], int]
Aggregate = Callable[[list[torch.Tensor], list[list[torch.Tensor]], list[float]], Sequence[torch.Tensor]]
Gate = Callable[[list[int], int, "int | None"], bool]
REDUCTIONS = ("mean", "sum")
# the seams a student's rule plugs into, and the call each must accept
RULES = {
    "staleness_fn": "f(server_version, pulled_version) -> sigma",
    "aggregate": "f(params, updates, lrs) -> new params",
    "gate": "f(clocks, worker, bound) -> bool",
}


def check_rule(name: str, rule):
    """``None`` (the library's rule) or a function; ``ValueError`` names the seam and its call."""
    if rule is not None and not callable(rule):
        raise ValueError(f"{name} must be None or a function {RULES[name]}, got {rule!r}")
    return rule


def rule_name(rule) -> str | None:
    """How configs and results write a plugged-in rule: its ``__name__`` (``None``: the library's)."""
    return None if rule is None else getattr(rule, "__name__", repr(rule))


@dataclass
class StalenessRules:
    """A student's rules for a run (None: the library's): the fields ``SimConfig`` and
    ``PSConfig`` share, declared and checked once here."""

    staleness_fn: StalenessFn | None = None  # sigma = f(server_version, pulled_version)
    aggregate: Aggregate | None = None  # soft sync: f(params, updates, lrs) -> new params (the mean)
    gate: Gate | None = None  # bounded staleness: f(clocks, worker, bound) -> may it start? (bool)

    def check_rules(self) -> None:
        """Each rule is None or a function (the configs call this from their ``__post_init__``)."""
        for name in RULES:
            check_rule(name, getattr(self, name))

    def staleness_rule_names(self) -> dict:
        """``{field: name}`` of the rules that are plugged in (the library's are left out)."""
        return {name: rule_name(getattr(self, name)) for name in RULES if getattr(self, name) is not None}


def staleness(server_version: int, pulled_version: int) -> int:
    """``sigma = server_version - pulled_version``: the server versions the gradient is behind."""
    check_int("server_version", server_version, low=0)
    check_int("pulled_version", pulled_version, low=0, high=server_version)
    return server_version - pulled_version


def constant_lr(lr: float, sigma: int) -> float:
    """``lambda_n = lambda`` whatever the staleness sigma (plain async SGD)."""
    return lr


def staleness_lr(lr: float, sigma: int) -> float:
    """``lambda_n = lambda / max(1, sigma)``: staler gradients count less (policy ``"staleness"``).

    Zhang et al. 2016's rule in our count of staleness, with a floor: theirs divides by
    tau_Z = sigma + 1 (:func:`zhang_lr`); this one keeps sigma = 0 and 1 at the full lambda.
    """
    return lr / max(1, sigma)


def zhang_lr(lr: float, sigma: int) -> float:
    """``lambda_n = lambda / (sigma + 1)``: Zhang et al. 2016's lambda / tau_Z as they count (``"zhang"``)."""
    return lr / (sigma + 1)


def within_bound(clocks: Sequence[int], worker: int, bound: int | None) -> bool:
    """The bounded-staleness gate (Ho et al. 2013): ``clocks[worker] - min(clocks) <= bound``.

    ``clocks[n]`` counts the applied steps of worker n; ``bound=None`` never blocks.
    """
    return bound is None or clocks[worker] - min(clocks) <= bound


LR_POLICIES: dict[str, LrPolicy] = {"constant": constant_lr, "staleness": staleness_lr, "zhang": zhang_lr}


def resolve_lr_policy(policy: str | LrPolicy) -> LrPolicy:
    """A policy name (``"constant"``, ``"staleness"``, ``"zhang"``) or a function f(lr, sigma) -> lambda_n."""
    if callable(policy):
        return policy
    return LR_POLICIES[check_choice("lr_policy", policy, LR_POLICIES)]


def lr_policy_name(policy: str | LrPolicy) -> str:
    """How results and reprs write a policy: its name, or a student's function's ``__name__``."""
    if isinstance(policy, str):
        return policy
    if not callable(policy):
        raise ValueError(f"lr_policy must be a policy name or a function f(lr, sigma), got {policy!r}")
    return getattr(policy, "__name__", repr(policy))


def scaled_lr(lr: float, sigma: int, policy: str | LrPolicy = "staleness") -> float:
    """The learning rate lambda_n for one update of staleness ``sigma`` under ``policy``."""
    check_float("lr", lr, low=0.0, low_open=True)
    check_int("sigma", sigma, low=0)
    value = resolve_lr_policy(policy)(lr, sigma)
    if not isinstance(value, (int, float)) or not (value >= 0) or value == float("inf"):
        raise ValueError(
            f"lr_policy must return a finite learning rate >= 0, got {value!r} for sigma={sigma}"
        )
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
    ``staleness_fn`` and ``aggregate`` replace :func:`staleness` and :func:`apply_updates`
    (a student's rules, see the module docstring); what they return is checked.
    """

    def __init__(
        self,
        num_workers: int,
        softsync: int | None = None,
        lr: float = 0.1,
        lr_policy: str | LrPolicy = "constant",
        reduce: str = "mean",
        staleness_fn: StalenessFn | None = None,
        aggregate: Aggregate | None = None,
    ) -> None:
        self.num_workers = check_int("num_workers", num_workers, low=1)
        self.softsync = check_int("softsync", 1 if softsync is None else softsync, low=1, high=num_workers)
        self.lr = check_float("lr", lr, low=0.0, low_open=True)
        self.lr_policy = resolve_lr_policy(lr_policy)
        self.reduce = check_choice("reduce", reduce, REDUCTIONS)
        self.staleness_fn = check_rule("staleness_fn", staleness_fn)
        self.aggregate = check_rule("aggregate", aggregate)
        if aggregate is not None and reduce != "mean":
            raise ValueError(f"reduce must be 'mean' with an aggregate (it takes the mean), got {reduce!r}")
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
        else ``None``: ``sigma = version - pulled_version``, fixed on arrival (the versions
        applied since the pull; the step that applies this update is not counted).
        """
        sigma = self._staleness(pulled_version)
        self._pending.append((grads, sigma))
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

    def _staleness(self, pulled_version: int) -> int:
        if self.staleness_fn is None:
            return staleness(self.version, pulled_version)
        check_int("pulled_version", pulled_version, low=0, high=self.version)
        sigma = self.staleness_fn(self.version, pulled_version)
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Integral) or sigma < 0:
            raise ValueError(
                f"staleness_fn must return a whole number of versions >= 0, got {sigma!r} "
                f"for server_version={self.version}, pulled_version={pulled_version}"
            )
        return int(sigma)

    def _apply_pending(self, params: Sequence[torch.Tensor]) -> list[int]:
        sigmas = [t for _, t in self._pending]
        lrs = [scaled_lr(self.lr, t, self.lr_policy) for t in sigmas]
        updates = [g for g, _ in self._pending]
        if self.aggregate is None:
            apply_updates(params, updates, lrs, self.reduce)
        else:
            self._aggregate(params, updates, lrs)
        self._pending.clear()
        self.version += 1
        return sigmas

    @torch.no_grad()
    def _aggregate(self, params, updates, lrs) -> None:
        # the rule gets copies (it may not change W behind the server's back) and returns new W
        copies = [[g.detach().clone() for g in u] for u in updates]
        new = self.aggregate([p.detach().clone() for p in params], copies, list(lrs))
        if not isinstance(new, (list, tuple)) or len(new) != len(params):
            got = type(new).__name__
            raise ValueError(f"aggregate must return a list of {len(params)} tensors, got {got}")
        for i, (p, n) in enumerate(zip(params, new)):
            if not isinstance(n, torch.Tensor) or n.shape != p.shape:
                got = tuple(n.shape) if isinstance(n, torch.Tensor) else type(n).__name__
                raise ValueError(f"aggregate must return parameter {i} of shape {tuple(p.shape)}, got {got}")
        for p, n in zip(params, new):
            p.copy_(n)

    @property
    def pending(self) -> int:
        """Updates received but not yet applied."""
        return len(self._pending)

    def __repr__(self) -> str:
        return (
            f"SoftSync(num_workers={self.num_workers}, softsync={self.softsync}, lr={self.lr}, "
            f"lr_policy={lr_policy_name(self.lr_policy)}, reduce={self.reduce!r}, "
            f"{_plugged(staleness_fn=self.staleness_fn, aggregate=self.aggregate)}"
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
    ``bound``). It is a separate figure from the staleness sigma, which counts versions.
    A worker that has left the run (:meth:`retire`) no longer counts in that minimum.
    ``gate(clocks, worker, bound) -> bool`` replaces :func:`within_bound` (a student's rule):
    it is asked with the clocks of the workers still in the run.
    """

    def __init__(self, num_workers: int, bound: int | None, gate: Gate | None = None) -> None:
        self.num_workers = check_int("num_workers", num_workers, low=1)
        self.bound = None if bound is None else check_int("staleness_bound", bound, low=0)
        self.gate = check_rule("gate", gate)
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
        live = [w for w in range(self.num_workers) if w not in self.retired or w == worker]
        clocks = [self.clocks[w] for w in live]
        if self.gate is None:
            return within_bound(clocks, live.index(worker), self.bound)
        answer = self.gate(clocks, live.index(worker), self.bound)
        if not isinstance(answer, bool):
            raise ValueError(f"gate must return a bool, got {answer!r} (clocks={clocks}, bound={self.bound})")
        return answer

    def finish(self, worker: int) -> None:
        """One step of worker ``worker`` has been applied by the server."""
        check_int("worker", worker, low=0, high=self.num_workers - 1)
        self.clocks[worker] += 1

    def __repr__(self) -> str:
        retired = f", retired={sorted(self.retired)}" if self.retired else ""
        gate = f", gate={rule_name(self.gate)}" if self.gate is not None else ""
        return (
            f"BoundedStaleness(num_workers={self.num_workers}, bound={self.bound}, "
            f"clocks={self.clocks}{retired}{gate})"
        )


def within_staleness(version: int, in_flight: Sequence[int], max_staleness: int | None) -> bool:
    """The staleness gate (the lecture's bound on staleness itself): may a worker pull now?

    ``version`` is the server's version now, ``in_flight`` the pulled versions of the updates
    that are computed or on their way but not yet applied (one per busy worker). An update
    pulled at ``p`` can still see every other in-flight update applied before it, so after
    this pull its staleness can reach ``(version - p) + len(in_flight)``; the new update's own
    can reach ``len(in_flight)``. The gate answers whether the worst of these stays
    ``<= max_staleness`` (``None`` never blocks). With nothing in flight it always lets the
    worker go, so a run under the gate never deadlocks.
    """
    check_int("version", version, low=0)
    if max_staleness is None:
        return True
    check_int("max_staleness", max_staleness, low=0)
    oldest = min(in_flight, default=version)
    return (version - oldest) + len(in_flight) <= max_staleness


class StalenessGate:
    """The server's staleness gate: it delays a worker whose pull could let an update exceed sigma_max.

    :meth:`start` when a worker is sent the parameters of ``version`` (it pulls),
    :meth:`finish` when the server has applied that worker's update, :meth:`may_start` to ask
    :func:`within_staleness` before answering a pull. Every update applied under it has
    staleness sigma <= ``max_staleness``. Works with S = 1 (each update is its own version);
    a soft-sync group waiting to fill could wait on a worker this gate holds back.
    A worker that left the run (:meth:`retire`) no longer counts as in flight.
    """

    def __init__(self, num_workers: int, max_staleness: int) -> None:
        self.num_workers = check_int("num_workers", num_workers, low=1)
        self.max_staleness = check_int("max_staleness", max_staleness, low=0)
        self.in_flight: dict[int, int] = {}  # worker -> version it pulled, until its update is applied

    def may_start(self, worker: int, version: int) -> bool:
        """May ``worker`` pull the parameters of ``version`` now (start a step)?"""
        check_int("worker", worker, low=0, high=self.num_workers - 1)
        if worker in self.in_flight:
            raise ValueError(
                f"worker {worker} already has an update in flight (pulled {self.in_flight[worker]})"
            )
        return within_staleness(version, list(self.in_flight.values()), self.max_staleness)

    def start(self, worker: int, version: int) -> None:
        """``worker`` pulled ``version``: its update is in flight until :meth:`finish`."""
        check_int("worker", worker, low=0, high=self.num_workers - 1)
        self.in_flight[worker] = check_int("version", version, low=0)

    def finish(self, worker: int) -> None:
        """The server applied ``worker``'s update."""
        check_int("worker", worker, low=0, high=self.num_workers - 1)
        self.in_flight.pop(worker, None)

    retire = finish  # a lost worker's update will never come: it holds nobody back

    def __repr__(self) -> str:
        return (
            f"StalenessGate(num_workers={self.num_workers}, max_staleness={self.max_staleness}, "
            f"in_flight={self.in_flight})"
        )


def _plugged(**rules) -> str:
    """``"name=fn, "`` for each rule that is not the library's (reprs)."""
    return "".join(f"{k}={rule_name(v)}, " for k, v in rules.items() if v is not None)


def staleness_summary(sigmas: Sequence[int]) -> dict:
    """``{"max", "mean", "histogram"}`` of applied updates' staleness sigma (str histogram keys: JSON)."""
    if len(sigmas) == 0:
        return {"max": 0, "mean": 0.0, "histogram": {}}
    for t in sigmas:  # staleness counts steps: a fraction or a negative value is a caller's bug
        if isinstance(t, bool) or not (0 <= t < math.inf) or t != int(t):
            raise ValueError(f"sigmas must hold whole numbers >= 0 (steps behind), got {t!r}")
    counts = Counter(int(t) for t in sigmas)
    return {
        "max": max(counts),
        "mean": sum(sigmas) / len(sigmas),
        "histogram": {str(k): counts[k] for k in sorted(counts)},
    }
