"""What a simulation produced: :class:`SimResult` (timeline, staleness, curves, throughput, model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from dlcourse._validate import check_choice
from dlcourse.sim.cluster import EvalPoint, TraceEvent
from dlcourse.sim.config import SimConfig
from dlcourse.staleness import staleness_summary


@dataclass(repr=False)
class SimResult:
    """What a simulation produced: timeline, staleness, curves, throughput, final model."""

    config: SimConfig  # the run's configuration
    trace: list[TraceEvent]  # every worker interval, in the order they were scheduled
    server_busy: list[tuple[float, float]]  # (start, end) of each update the server applied
    link_busy: list[list[tuple[float, float]]]  # per server shard: (start, end) its link was sending
    staleness: list[int]  # sigma of every applied update (server versions since its pull), in order applied
    clock_lag: list[int]  # policy "bounded": the SSP clock lag of every applied update (else empty)
    pull_log: list[tuple[int, int, int]]  # (worker, its step, updates applied by then) of every pull
    apply_log: list[tuple[int, int]]  # (worker, its step) of every applied update, in order
    evals: list[EvalPoint]  # test metrics at epoch 0, evals_per_epoch times per epoch, and the end
    step_loss: list[float]  # training loss of every gradient computed, in order of computing
    virtual_s: float  # virtual seconds from the first pull to the last applied update
    examples: int  # training examples whose gradients were applied
    updates: int  # gradients applied by the server
    server_steps: int  # times the server changed the parameters (its version)
    bytes_sent: int  # bytes of all pulls and pushes
    idle_fraction: list[float]  # per worker: share of virtual time spent waiting (or done early)
    server_utilization: float  # share of virtual time the server was busy applying updates (its CPU)
    link_utilization: list[float]  # per server shard: share of virtual time its link was sending
    params: torch.Tensor  # final parameters, flat (torch.nn.utils.vector_to_parameters loads them)
    data_source: str  # "subset" or "full" (or "custom" for data passed in)
    real_s: float  # host seconds the simulation took
    eval_s: float  # of which host seconds spent evaluating on the test set
    # shared batches: (worker, item of dlcourse.data.shared_order) of every gradient, in order computed
    handed: list[tuple[int, int]] = field(default_factory=list)

    @property
    def examples_per_s(self) -> float:
        """Throughput: training examples applied per virtual second."""
        return self.examples / self.virtual_s if self.virtual_s > 0 else 0.0

    @property
    def test(self) -> EvalPoint:
        """The final evaluation."""
        return self.evals[-1]

    def epoch_curve(self, metric: str = "loss") -> list[float]:
        """``metric`` of the first evaluation at or after each whole epoch 1..epochs."""
        check_choice("metric", metric, ("loss", "accuracy", "macro_f1"))
        out = []
        for e in range(1, self.config.epochs + 1):
            point = next((p for p in self.evals if p.epoch >= e - 1e-9), self.evals[-1])
            out.append(getattr(point, metric))
        return out

    def time_curve(self, metric: str = "loss") -> tuple[list[float], list[float]]:
        """``(virtual seconds, metric)`` of every evaluation: the curve over time."""
        check_choice("metric", metric, ("loss", "accuracy", "macro_f1"))
        return [p.time for p in self.evals], [getattr(p, metric) for p in self.evals]

    def staleness_summary(self) -> dict:
        return staleness_summary(self.staleness)

    def load_into(self, model: torch.nn.Module) -> torch.nn.Module:
        """Copy the final parameters into ``model`` (same architecture) and return it."""
        torch.nn.utils.vector_to_parameters(self.params, model.parameters())
        return model

    def to_json(self, trace: bool = False) -> dict:
        """Metrics with the keys every runtime writes (DESIGN.md); times are virtual.

        ``wall_s`` is the virtual duration (so ``examples_per_s = examples / wall_s``);
        ``real_s`` is what the simulation cost on this machine. ``trace=True`` adds the
        timeline (large for long runs).
        """
        c = self.config
        out: dict[str, Any] = {
            "policy": c.policy,
            "model": c.model,
            "workers": c.num_workers,
            "softsync": c.effective_softsync,
            "staleness_bound": c.effective_bound,
            "servers": c.servers,
            "epochs": c.epochs,
            "shared_batches": c.effective_shared_batches,
            "data_source": self.data_source,
            "clock": "virtual",
            "test_accuracy": self.test.accuracy,
            "test_loss": self.test.loss,
            "test_macro_f1": self.test.macro_f1,
            "examples_per_s": self.examples_per_s,
            "wall_s": self.virtual_s,
            "virtual_s": self.virtual_s,
            "real_s": self.real_s,
            "eval_s": self.eval_s,
            "updates": self.updates,
            "server_steps": self.server_steps,
            "bytes_sent": self.bytes_sent,
            "staleness": self.staleness_summary(),
            "idle_fraction": self.idle_fraction,
            "server_utilization": self.server_utilization,
            "server_link_utilization": self.link_utilization,
            "clock_lag": staleness_summary(self.clock_lag) if self.clock_lag else None,
            "epoch_loss": self.epoch_curve("loss"),
            "epoch_accuracy": self.epoch_curve("accuracy"),
            "evals": [p._asdict() for p in self.evals],
            "config": c.as_dict(),
        }
        if trace:
            out["trace"] = [e._asdict() for e in self.trace]
            out["server_busy"] = [list(b) for b in self.server_busy]
            out["link_busy"] = [[list(b) for b in link] for link in self.link_busy]
        return out

    def __repr__(self) -> str:
        s = self.staleness_summary()
        return (
            f"SimResult(policy={self.config.policy!r}, num_workers={self.config.num_workers}, "
            f"virtual_s={self.virtual_s:.2f}, examples_per_s={self.examples_per_s:.1f}, "
            f"test_accuracy={self.test.accuracy:.4f}, staleness_mean={s['mean']:.2f}, "
            f"staleness_max={s['max']}, updates={self.updates})"
        )
