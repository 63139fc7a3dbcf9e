"""Pipelining: keep every stage of a model-parallel network busy with micro-batches.

Plain model parallelism (``dlcourse.model_parallel``) leaves K-1 of K stages idle at any
moment: stage 2 waits for stage 1's activations, stage 1 waits for stage 2's gradients.
GPipe (Huang et al., "GPipe: Efficient Training of Giant Neural Networks using Pipeline
Parallelism", NeurIPS 2019) cuts the batch into M micro-batches: all M forwards flow
through the stages, then all M backwards, then one optimizer step on the accumulated
gradient. The idle time left, the *bubble*, is a fraction (K-1)/(M+K-1) of each stage's
time when stages cost the same. 1F1B (PipeDream-Flush: Narayanan et al., "Memory-Efficient
Pipeline-Parallel DNN Training", ICML 2021) has the same bubble but keeps at most K
micro-batches' activations per stage instead of M.

- :func:`gpipe_step`: our readable GPipe over K processes (send/recv on torch.distributed),
  recording every forward and backward as an :class:`Interval`.
- :func:`torch_pipeline_step`: the same step through ``torch.distributed.pipelining``
  (``ScheduleGPipe`` or ``Schedule1F1B``), the reference our losses are compared with.
- :func:`simulate_schedule`: the same schedules on a virtual clock, deterministic, for plots.
- :class:`PipelineTimeline`: per-stage busy intervals, ``bubble_fraction``, ``peak_inflight``.
- :func:`schedule_steps`: a whole schedule as ``(stage, micro-batch, "F"/"B")`` steps;
  :func:`run_pipeline` runs one step with any such schedule (a student's own included);
  :func:`train_stages` trains with GPipe steps (``dlcourse train --strategy pipeline``, and
  ``model-parallel``, which is M = 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.data import Dataset, check_dataset
from dlcourse.divergence import check_finite, find_diverged
from dlcourse.launcher import WorkerError, launch
from dlcourse.model_parallel import split_model, stage_bounds, stage_shapes
from dlcourse.train import batches, check_training_settings, make_optimizer

SCHEDULES = ("ours", "torch-gpipe", "torch-1f1b")
SIMULATED = ("gpipe", "1f1b")


def gpipe_bubble(num_stages: int, num_microbatches: int) -> float:
    """GPipe's idle fraction with equal stage costs: ``(K - 1) / (M + K - 1)``."""
    check_int("num_stages", num_stages, low=1)
    check_int("num_microbatches", num_microbatches, low=1)
    return (num_stages - 1) / (num_microbatches + num_stages - 1)


def check_microbatches(batch_size: int, num_microbatches: int) -> int:
    """Micro-batch size; the batch must split into ``num_microbatches`` equal parts."""
    check_int("num_microbatches", num_microbatches, low=1)
    if batch_size % num_microbatches:
        raise ValueError(
            f"the batch size ({batch_size}) must be divisible by num_microbatches={num_microbatches} "
            "(equal micro-batches make the step equal full-batch training)"
        )
    return batch_size // num_microbatches


# ----------------------------------------------------------------------------- timelines


@dataclass(frozen=True)
class Interval:
    """One forward ("F") or backward ("B") of one micro-batch on one stage."""

    stage: int  # which stage (rank) ran it
    microbatch: int  # which micro-batch, 0..M-1
    kind: str  # "F" (forward) or "B" (backward)
    start: float  # seconds since the step began (all stages share the origin)
    end: float  # seconds since the step began


@dataclass(repr=False)
class PipelineTimeline:
    """Who was busy when: the data of a pipeline chart, and the bubble measured from it."""

    num_stages: int  # K
    num_microbatches: int  # M
    schedule: str  # "ours", "torch-gpipe", "gpipe", "1f1b", ...
    intervals: list[Interval] = field(default_factory=list)  # every F and B of every stage
    simulated: bool = False  # True when the times come from the virtual clock, not a real run

    def stage_intervals(self, stage: int) -> list[Interval]:
        """Stage ``stage``'s intervals in time order."""
        return sorted((i for i in self.intervals if i.stage == stage), key=lambda i: i.start)

    @property
    def makespan(self) -> float:
        """Seconds from the first start to the last end over all stages."""
        return max(i.end for i in self.intervals) - min(i.start for i in self.intervals)

    @property
    def busy_s(self) -> list[float]:
        """Per stage: seconds spent computing (forward or backward)."""
        return [sum(i.end - i.start for i in self.stage_intervals(k)) for k in range(self.num_stages)]

    @property
    def idle_s(self) -> list[float]:
        """Per stage: seconds of the makespan spent waiting."""
        return [self.makespan - b for b in self.busy_s]

    @property
    def bubble_fraction(self) -> float:
        """Idle share of all stages' time: ``1 - sum(busy) / (K * makespan)``."""
        return 1.0 - sum(self.busy_s) / (self.num_stages * self.makespan)

    @property
    def expected_bubble(self) -> float:
        """The formula ``(K - 1) / (M + K - 1)`` for equal stage costs."""
        return gpipe_bubble(self.num_stages, self.num_microbatches)

    @property
    def peak_inflight(self) -> list[int]:
        """Per stage: most micro-batches forwarded but not yet backwarded (activations held)."""
        peaks = []
        for k in range(self.num_stages):
            held = peak = 0
            for i in self.stage_intervals(k):
                held += 1 if i.kind == "F" else -1
                peak = max(peak, held)
            peaks.append(peak)
        return peaks

    def replay(self) -> PipelineTimeline:
        """This run on a virtual clock: the schedule's own bubble, whatever the machine's load.

        Each stage runs its intervals in the order it ran them, each as long as it took, but a
        message costs nothing and no process waits for a CPU. A loaded machine only ever adds
        idle time, so a measured run's bubble is at least its replay's.
        """
        K = self.num_stages
        orders = [self.stage_intervals(k) for k in range(K)]
        done: dict[tuple[str, int, int], float] = {}  # (kind, stage, microbatch) -> end
        free, nxt, out = [0.0] * K, [0] * K, []
        while len(out) < len(self.intervals):
            progressed = False
            for k in range(K):
                if nxt[k] == len(orders[k]):
                    continue
                i = orders[k][nxt[k]]
                # a forward needs the previous stage's forward, a backward the next stage's
                # backward; the last stage's backward needs its own forward
                need = ("F", k - 1, i.microbatch) if i.kind == "F" else ("B", k + 1, i.microbatch)
                if i.kind == "F" and k == 0 or i.kind == "B" and k == K - 1:
                    need = None if i.kind == "F" else ("F", k, i.microbatch)
                if need is not None and need not in done:
                    continue
                start = max(free[k], done.get(need, 0.0))
                free[k] = done[(i.kind, k, i.microbatch)] = start + (i.end - i.start)
                out.append(Interval(k, i.microbatch, i.kind, start, free[k]))
                nxt[k] += 1
                progressed = True
            if not progressed:
                raise ValueError("the recorded orders deadlock: not a valid pipeline schedule")
        return PipelineTimeline(K, self.num_microbatches, self.schedule, out, simulated=True)

    def __repr__(self) -> str:
        return (
            f"PipelineTimeline({self.schedule}, K={self.num_stages}, M={self.num_microbatches}, "
            f"makespan={self.makespan:.4g}s, bubble={self.bubble_fraction:.3f} "
            f"(formula {self.expected_bubble:.3f}))"
        )


def schedule_order(
    schedule: str, stage: int, num_stages: int, num_microbatches: int
) -> list[tuple[str, int]]:
    """The order in which ``stage`` runs its forwards and backwards.

    GPipe: all forwards, then all backwards. 1F1B: ``K - 1 - stage`` warm-up forwards, then
    one forward and one backward in turn, then the remaining backwards.
    """
    check_choice("schedule", schedule, SIMULATED)
    M = num_microbatches
    if schedule == "gpipe":
        return [("F", m) for m in range(M)] + [("B", m) for m in range(M)]
    warmup = min(num_stages - 1 - stage, M)
    order = [("F", m) for m in range(warmup)]
    for m in range(M - warmup):
        order += [("F", warmup + m), ("B", m)]
    return order + [("B", m) for m in range(M - warmup, M)]


def simulate_schedule(
    num_stages: int,
    num_microbatches: int,
    schedule: str = "gpipe",
    forward_s: float = 1.0,
    backward_s: float = 2.0,
) -> PipelineTimeline:
    """The schedule on a virtual clock: deterministic, instant, for plots and lessons.

    A forward of micro-batch m on stage k starts when stage k is free and stage k-1 has
    finished its forward of m; a backward when stage k+1 has finished its backward of m.
    """
    check_int("num_stages", num_stages, low=1)
    check_int("num_microbatches", num_microbatches, low=1)
    check_float("forward_s", forward_s, low=0.0, low_open=True)
    check_float("backward_s", backward_s, low=0.0, low_open=True)
    K = num_stages
    orders = [schedule_order(schedule, k, K, num_microbatches) for k in range(K)]
    done: dict[tuple[str, int, int], float] = {}  # (kind, stage, microbatch) -> end time
    free = [0.0] * K
    nxt = [0] * K
    intervals = []
    while any(nxt[k] < len(orders[k]) for k in range(K)):
        progressed = False
        for k in range(K):
            if nxt[k] == len(orders[k]):
                continue
            kind, m = orders[k][nxt[k]]
            needs = ("F", k - 1, m) if kind == "F" else ("B", k + 1, m)
            first = (kind == "F" and k == 0) or (kind == "B" and k == K - 1)
            if not first and needs not in done:
                continue
            start = max(free[k], 0.0 if first else done[needs])
            end = start + (forward_s if kind == "F" else backward_s)
            intervals.append(Interval(k, m, kind, start, end))
            done[(kind, k, m)] = free[k] = end
            nxt[k] += 1
            progressed = True
        assert progressed, "schedule deadlocked"  # cannot happen for the two orders above
    return PipelineTimeline(K, num_microbatches, schedule, intervals, simulated=True)


Step = tuple[int, int, str]  # (stage, micro-batch, "F" or "B"): one entry of a whole schedule


def schedule_steps(schedule: str, num_stages: int, num_microbatches: int) -> list[Step]:
    """A whole pipeline schedule as an ordered list of ``(stage, micro-batch, "F"/"B")`` steps.

    The steps in the order they start on the virtual clock of :func:`simulate_schedule`
    (ties broken by stage), so reading the list is reading the timeline left to right.
    """
    timeline = simulate_schedule(num_stages, num_microbatches, schedule)
    ordered = sorted(timeline.intervals, key=lambda i: (i.start, i.stage))
    return [(i.stage, i.microbatch, i.kind) for i in ordered]


def check_stage_order(order: Sequence[tuple[str, int]], num_microbatches: int) -> list[tuple[str, int]]:
    """``order`` as a list, if it runs every micro-batch's forward and then its backward once."""
    order = [tuple(step) for step in order]
    want = {(kind, m) for kind in "FB" for m in range(num_microbatches)}
    if len(order) != len(want) or set(order) != want:
        raise ValueError(
            f"order must hold ('F', m) and ('B', m) once for every micro-batch m < {num_microbatches}, "
            f"got {order}"
        )
    if any(order.index(("B", m)) < order.index(("F", m)) for m in range(num_microbatches)):
        raise ValueError(f"order must run each micro-batch's forward before its backward, got {order}")
    return order


def stage_orders(
    steps: Sequence[Step], num_stages: int, num_microbatches: int
) -> list[list[tuple[str, int]]]:
    """Each stage's own order of ``("F"/"B", m)`` from a whole schedule of steps, checked."""
    check_int("num_stages", num_stages, low=1)
    orders: list[list[tuple[str, int]]] = [[] for _ in range(num_stages)]
    for step in steps:
        if not (isinstance(step, (tuple, list)) and len(step) == 3):
            raise ValueError(f"steps must be (stage, micro-batch, 'F' or 'B') triples, got {step!r}")
        stage, m, kind = step
        check_int("stage", stage, low=0, high=num_stages - 1)
        check_int("micro-batch", m, low=0, high=num_microbatches - 1)
        check_choice("kind", kind, ("F", "B"))
        orders[stage].append((kind, m))
    return [check_stage_order(order, num_microbatches) for order in orders]


# ----------------------------------------------------------------------------- our GPipe


def gpipe_step(
    stage: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    num_microbatches: int,
    *,
    prev_rank: int | None,
    next_rank: int | None,
    in_shape: tuple[int, ...] | None = None,
    loss_fn: Callable = F.cross_entropy,
    stage_cost_s: float = 0.0,
    order: Sequence[tuple[str, int]] | None = None,
) -> tuple[list[float], list[Interval]]:
    """One pipeline step of this rank's ``stage``: GPipe's M forwards, then M backwards.

    ``order`` runs this stage's forwards and backwards in another order instead, a list of
    ``("F" | "B", micro-batch)`` (see :func:`schedule_order`, :func:`stage_orders`): 1F1B,
    or a student's own schedule.

    ``prev_rank`` / ``next_rank`` are the ranks of the neighbouring stages (``None`` on the first /
    last stage). The first stage cuts ``X`` into M micro-batches; the others receive
    activations of ``in_shape`` (one micro-batch's input to this stage); the last stage
    computes ``loss_fn(y_hat, y_m)``. Gradients accumulate in ``stage``'s parameters (call
    ``zero_grad`` before, ``step`` after); each micro-batch's loss is divided by M, so the
    accumulated gradient is the full-batch gradient of the mean loss. ``stage_cost_s`` pads
    every forward and backward to at least that many seconds: equal, known stage costs make
    the bubble measurable on a noisy machine. Returns the last stage's micro-batch losses
    (empty elsewhere) and this stage's intervals.
    """
    M = num_microbatches
    micro = check_microbatches(len(X), M)
    check_float("stage_cost_s", stage_cost_s, low=0.0)
    first, last = prev_rank is None, next_rank is None
    if not first and in_shape is None:
        raise ValueError("in_shape must be given on every stage but the first (the shape it receives)")
    rank = dist.get_rank()
    intervals, sends = [], []
    dist.barrier()  # a common origin for every stage's clock
    origin = time.perf_counter()

    def timed(kind: str, m: int, work: Callable[[], torch.Tensor | None]):
        start = time.perf_counter()
        out = work()
        time.sleep(max(0.0, start + stage_cost_s - time.perf_counter()))  # the injected cost
        intervals.append(Interval(rank, m, kind, start - origin, time.perf_counter() - origin))
        return out

    order = schedule_order("gpipe", 0, 1, M) if order is None else check_stage_order(order, M)
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}
    losses: dict[int, torch.Tensor] = {}
    for kind, m in order:
        if kind == "F":  # ---- forward: micro-batch m flows down the pipeline
            if first:
                x_in = X[m * micro : (m + 1) * micro]
            else:
                # activations arrive in the order the previous stage sent them: a stage that
                # takes its forwards in another order than its neighbour mixes micro-batches up
                x_in = torch.empty(in_shape)
                dist.recv(x_in, src=prev_rank)  # idle until the previous stage sends
                x_in.requires_grad_()
            y_hat = timed("F", m, lambda x_in=x_in: stage(x_in))
            if last:
                losses[m] = loss_fn(y_hat, y[m * micro : (m + 1) * micro])  # cheap next to a stage
            else:
                # isend: a blocking send could stall this stage until the next one is ready
                sends.append(dist.isend(y_hat.detach().contiguous(), dst=next_rank))
            inputs[m], outputs[m] = x_in, y_hat
            continue
        # ---- backward: micro-batch m's gradient flows back up
        if last:
            timed("B", m, lambda m=m: (losses[m] / M).backward())
        else:
            grad = torch.empty_like(outputs[m])
            dist.recv(grad, src=next_rank)  # idle until the next stage sends
            timed("B", m, lambda m=m, grad=grad: outputs[m].backward(grad))
        if not first:
            sends.append(dist.isend(inputs[m].grad.contiguous(), dst=prev_rank))
        del outputs[m], inputs[m]  # micro-batch m's activations are freed here
    for work in sends:
        work.wait()
    return [losses[m].item() for m in sorted(losses)], intervals


def stage_input_shapes(model: nn.Sequential, num_stages: int, micro_shape: tuple[int, ...]) -> list[tuple]:
    """The shape of one micro-batch's input to every stage (stage 0: ``micro_shape``)."""
    outputs = stage_shapes(split_model(model, num_stages), micro_shape)
    return [tuple(micro_shape)] + [tuple(s) for s in outputs[:-1]]


def gpipe_worker(
    rank: int,
    world_size: int,
    model: nn.Sequential,
    X: torch.Tensor,
    y: torch.Tensor,
    num_microbatches: int,
    schedule: str = "ours",
    stage_cost_s: float = 0.0,
    orders: Sequence[Sequence[tuple[str, int]]] | None = None,
) -> dict:
    """Worker function: one pipeline step of ``model`` cut into ``world_size`` stages.

    Returns ``{"losses", "grads", "intervals"}`` for this rank (losses on the last rank;
    intervals only for ``schedule="ours"``, which runs ``orders[rank]`` when given).
    """
    stage = split_model(model, world_size)[rank]
    if schedule == "ours":
        micro = check_microbatches(len(X), num_microbatches)
        in_shape = stage_input_shapes(model, world_size, (micro, *X.shape[1:]))[rank]
        prev = rank - 1 if rank > 0 else None
        nxt = rank + 1 if rank < world_size - 1 else None
        losses, intervals = gpipe_step(
            stage,
            X,
            y,
            num_microbatches,
            prev_rank=prev,
            next_rank=nxt,
            in_shape=in_shape,
            stage_cost_s=stage_cost_s,
            order=None if orders is None else orders[rank],
        )
    else:
        losses, intervals = torch_pipeline_step(stage, rank, world_size, X, y, num_microbatches, schedule), []
    grads = {name: p.grad.clone() for name, p in stage.named_parameters()}
    return {"losses": losses, "grads": grads, "intervals": intervals}


# ----------------------------------------------------------------------------- the reference


def torch_pipeline_step(
    stage: nn.Module,
    rank: int,
    world_size: int,
    X: torch.Tensor,
    y: torch.Tensor,
    num_microbatches: int,
    schedule: str = "torch-gpipe",
    loss_fn: Callable = F.cross_entropy,
) -> list[float]:
    """The same step through ``torch.distributed.pipelining``; returns the last stage's losses.

    Its schedules divide the accumulated gradient by M (``scale_grads=True``), which is what
    our ``loss / M`` does, so the gradients are comparable.
    """
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    check_choice("schedule", schedule, SCHEDULES[1:])
    check_microbatches(len(X), num_microbatches)
    cls = ScheduleGPipe if schedule == "torch-gpipe" else Schedule1F1B
    pipe_stage = PipelineStage(stage, rank, world_size, torch.device("cpu"))
    runner = cls(pipe_stage, n_microbatches=num_microbatches, loss_fn=loss_fn)
    losses: list[torch.Tensor] = []
    if rank == 0:
        runner.step(X)
    elif rank == world_size - 1:
        runner.step(target=y, losses=losses)
    else:
        runner.step()
    return [loss.item() for loss in losses]


# ----------------------------------------------------------------------------- running it


@dataclass(repr=False)
class PipelineResult:
    """One pipeline step across processes: the losses, the gradients and (ours) the timeline."""

    schedule: str  # "ours", "torch-gpipe" or "torch-1f1b"
    losses: list[float]  # the M micro-batch losses (the last stage's)
    grads: dict[str, torch.Tensor]  # every parameter's accumulated gradient, full-model names
    timeline: PipelineTimeline | None  # who was busy when (None for torch's schedules)

    def __repr__(self) -> str:
        return f"PipelineResult({self.schedule}, M={len(self.losses)}, timeline={self.timeline!r})"


def _check_run(model, X, y, num_stages, num_microbatches, timeout) -> None:
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"model must be an nn.Sequential (cut by layer index), got {type(model).__name__}")
    stage_bounds(len(model), num_stages)
    if len(X) != len(y) or len(X) == 0:
        raise ValueError(f"X and y must have the same non-zero length, got {len(X)} and {len(y)}")
    check_microbatches(len(X), num_microbatches)
    check_float("timeout", timeout, low=0.0, low_open=True)


def run_pipeline(
    model: nn.Sequential,
    X: torch.Tensor,
    y: torch.Tensor,
    num_stages: int,
    num_microbatches: int,
    *,
    schedule: str | Sequence[Step] = "ours",
    stage_cost_s: float = 0.0,
    timeout: float = 30.0,
) -> PipelineResult:
    """One pipeline step of ``model`` over ``num_stages`` processes with M micro-batches.

    ``schedule``: ``"ours"`` (our GPipe), ``"torch-gpipe"`` / ``"torch-1f1b"`` (PyTorch's),
    or a whole schedule as ``(stage, micro-batch, "F"/"B")`` steps (:func:`schedule_steps`,
    or a student's own) that our processes follow, each stage in its own order.
    """

    _check_run(model, X, y, num_stages, num_microbatches, timeout)
    orders = None
    if not isinstance(schedule, str):
        orders = stage_orders(schedule, num_stages, num_microbatches)
        schedule = "ours"
    check_choice("schedule", schedule, SCHEDULES)
    check_float("stage_cost_s", stage_cost_s, low=0.0)
    parts = launch(
        gpipe_worker, num_stages, model, X, y, num_microbatches, schedule, stage_cost_s, orders,
        timeout=timeout, run_timeout=4 * timeout + 10 * num_microbatches * stage_cost_s,
    )  # fmt: skip
    timeline = None
    if schedule == "ours":
        intervals = [i for part in parts for i in part["intervals"]]
        timeline = PipelineTimeline(num_stages, num_microbatches, schedule, intervals)
    grads = {name: g for part in parts for name, g in part["grads"].items()}
    return PipelineResult(schedule, parts[-1]["losses"], grads, timeline)


def _bubble_worker(rank, world_size, model, X, y, microbatches, stage_cost_s) -> list[list[Interval]]:
    return [
        gpipe_worker(rank, world_size, model, X, y, m, "ours", stage_cost_s)["intervals"]
        for m in microbatches
    ]


def measure_bubble(
    model: nn.Sequential,
    X: torch.Tensor,
    y: torch.Tensor,
    num_stages: int = 2,
    microbatches: tuple[int, ...] = (1, 2, 4, 8),
    *,
    stage_cost_s: float = 0.05,
    timeout: float = 30.0,
) -> list[PipelineTimeline]:
    """Measured timelines of our GPipe for each M in ``microbatches``, in one launch.

    Every forward and backward is padded to ``stage_cost_s`` so that stage costs are
    equal and the bubble, not the machine's noise, decides the timeline.
    """

    if len(microbatches) == 0:
        raise ValueError("microbatches must list at least one M, got an empty list")
    for m in microbatches:
        _check_run(model, X, y, num_stages, m, timeout)
    check_float("stage_cost_s", stage_cost_s, low=0.0)
    budget = sum(2 * (m + num_stages) * stage_cost_s for m in microbatches)
    parts = launch(
        _bubble_worker, num_stages, model, X, y, tuple(microbatches), stage_cost_s,
        timeout=timeout, run_timeout=4 * timeout + 4 * budget,
    )  # fmt: skip
    return [
        PipelineTimeline(num_stages, m, "ours", [i for part in parts for i in part[j]])
        for j, m in enumerate(microbatches)
    ]


# ----------------------------------------------------------------------------- training


@dataclass
class PipelineConfig:
    """How :func:`train_pipeline_worker` trains (one value per CLI option)."""

    num_microbatches: int = 4  # M; 1 is plain model parallelism
    epochs: int = 1  # passes over the training data
    batch_size: int = 100  # examples per step, cut into M micro-batches (must divide by M)
    lr: float = 0.1  # learning rate
    optimizer: str = "sgd"  # "sgd", "momentum" or "adam" (each stage steps its own parameters)
    momentum: float = 0.9  # for "momentum"
    seed: int = 0  # shuffle order, the same on every stage

    def __post_init__(self) -> None:
        check_microbatches(self.batch_size, self.num_microbatches)  # checks num_microbatches too
        check_training_settings(self)


def train_pipeline_worker(
    rank: int, world_size: int, model: nn.Sequential, X: torch.Tensor, y: torch.Tensor, config: PipelineConfig
) -> dict:
    """Worker function: train stage ``rank`` of ``model`` with GPipe steps; return its weights."""
    stage = split_model(model, world_size)[rank]
    opt = make_optimizer(config.optimizer, stage.parameters(), config.lr, config.momentum)
    micro = config.batch_size // config.num_microbatches
    shapes = stage_input_shapes(model, world_size, (micro, *X.shape[1:]))
    prev = rank - 1 if rank > 0 else None
    nxt = rank + 1 if rank < world_size - 1 else None
    sent = 0  # elements this stage sends per micro-batch; the same every step
    if nxt is not None:
        sent += torch.Size(shapes[rank + 1]).numel()  # activations forward: the next stage's input
    if prev is not None:
        sent += torch.Size(shapes[rank]).numel()  # gradients back: this stage's input
    bytes_per_step = config.num_microbatches * sent * X.element_size()
    generator = torch.Generator().manual_seed(config.seed)
    step_loss, bytes_sent, steps = [], 0, 0
    start = time.perf_counter()
    for _ in range(config.epochs):
        for idx in batches(len(X), config.batch_size, generator):
            if len(idx) != config.batch_size:
                continue  # a last partial batch would not split into M equal micro-batches
            opt.zero_grad(set_to_none=True)
            losses, _ = gpipe_step(
                stage,
                X[idx],
                y[idx],
                config.num_microbatches,
                prev_rank=prev,
                next_rank=nxt,
                in_shape=shapes[rank],
            )
            opt.step()
            steps += 1
            if losses:  # the last stage: a loss that blew up stops the run (Diverged)
                step_loss.append(sum(losses) / len(losses))
                runtime = "model-parallel" if config.num_microbatches == 1 else "pipeline"
                check_finite(step_loss[-1], runtime=runtime, index=steps, worker=rank)
            bytes_sent += bytes_per_step
    return {
        "state": {k: v.clone() for k, v in stage.state_dict().items()},
        "step_loss": step_loss,
        "wall_s": time.perf_counter() - start,
        "steps": steps,
        "bytes_sent": bytes_sent,
    }


@dataclass
class StagesRun:
    """What training a pipeline on K processes did (the model itself holds the weights)."""

    steps: int  # optimizer steps (full batches)
    wall_s: float  # seconds of the slowest stage
    bytes_sent: int  # activations and gradients across all cuts
    step_loss: list[float]  # mean micro-batch loss of every step (from the last stage)


def train_stages(
    model: nn.Sequential, train: Dataset, num_stages: int, config: PipelineConfig, *, timeout: float = 60.0
) -> StagesRun:
    """Train ``model`` cut into ``num_stages`` processes with GPipe steps; load the result into it.

    Model parallelism is the special case ``config.num_microbatches == 1``.
    """
    if not isinstance(config, PipelineConfig):
        raise ValueError(f"config must be a PipelineConfig, got {type(config).__name__}")
    check_dataset("train", train)
    stage_bounds(len(model), num_stages)
    try:
        parts = launch(
            train_pipeline_worker,
            num_stages,
            model,
            train.X,
            train.y,
            config,
            backend="gloo",
            timeout=timeout,
        )
    except WorkerError as e:
        diverged = find_diverged(e)  # the last stage's loss blew up: say where
        if diverged is None:
            raise
        raise diverged from None
    model.load_state_dict({k: v for part in parts for k, v in part["state"].items()})
    return StagesRun(
        steps=parts[-1]["steps"],
        wall_s=max(part["wall_s"] for part in parts),
        bytes_sent=sum(part["bytes_sent"] for part in parts),
        step_loss=parts[-1]["step_loss"],
    )
