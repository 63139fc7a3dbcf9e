"""The command line: ``dlcourse train`` runs real processes, ``dlcourse simulate`` the simulator.

    dlcourse train --strategy single --model cnn --epochs 5 --batch-size 100
    dlcourse train --strategy ddp --workers 2 --json run.json
    dlcourse simulate --policy async --workers 8 --json sim.json

Every run prints a short summary; ``--json PATH`` writes its metrics (at least
``test_accuracy``, ``test_loss``, ``test_macro_f1``, ``examples_per_s``, ``wall_s``,
``updates``, ``bytes_sent`` and ``staleness`` with ``max``, ``mean``, ``histogram``).
Bad arguments exit with status 2 and one line, never a traceback.

Each strategy or policy is a function of :mod:`dlcourse.commands` (registered below by
name) that takes the parsed arguments and returns the metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# name -> the function of dlcourse.commands that runs it: f(args) -> metrics dict
TRAIN_STRATEGIES = {
    "single": "single",
    "ddp": "ddp",
    "sync-sgd": "sync_sgd",
    "replicated": "replicated",
    "averaging": "averaging",
    "model-parallel": "model_parallel",
    "pipeline": "pipeline",
    "hybrid": "hybrid",
    "tensor-parallel": "tensor_parallel",
    "decentralized": "decentralized",
    "async-ps": "async_ps",
    "zero": "zero",
}
SIMULATE_POLICIES = {
    "sync": "simulate",
    "async": "simulate",
    "softsync": "simulate",
    "bounded": "simulate",
    "decentralized": "simulate_decentralized",
}


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line and exits 2."""

    def error(self, message: str):  # noqa: D401 - argparse's API
        self.exit(2, f"{self.prog}: error: {message}\n")


def _nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _pos_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _pos_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _nonneg_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


# argparse prints the type's __name__ for a ValueError from int()/float()
_nonneg_int.__name__ = _pos_int.__name__ = "integer"
_pos_float.__name__ = _nonneg_float.__name__ = "number"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", choices=["cnn", "mlp"], default="cnn", help="network (default: the lecture's CNN)"
    )
    p.add_argument("--epochs", type=_pos_int, default=1, help="passes over the training data (>= 1)")
    p.add_argument(
        "--batch-size",
        type=_pos_int,
        default=100,
        help="examples per step. The global batch for single, ddp, sync-sgd, averaging, replicated, zero "
        "(split over the N workers), hybrid (over the R replicas), pipeline and model-parallel (into "
        "M micro-batches), tensor-parallel (the same batch on every rank); each worker's own batch for "
        "async-ps, decentralized and simulate",
    )
    p.add_argument(
        "--lr",
        type=_pos_float,
        default=None,
        help="learning rate lambda (default: 1e-3 with Adam, 0.2 for async-ps with --lr-policy staleness, "
        "0.1 otherwise; see --optimizer, --lr-policy)",
    )
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed of model init, shuffles and timing")
    p.add_argument("--workers", type=_pos_int, default=2, help="number of workers N")
    p.add_argument("--servers", type=_pos_int, default=1, help="parameter-server shards k")
    p.add_argument("--softsync", type=_pos_int, default=None, help="updates S the server collects (1..N)")
    p.add_argument("--staleness-bound", type=_nonneg_int, default=None, help="max steps ahead of the slowest")
    p.add_argument(
        "--shared-batches",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="async-ps and the simulated parameter server: workers take the next mini-batch of one shared "
        "order of the run, so fast ones do more (default: yes when asynchronous, S < N; no when "
        "synchronous); --no-shared-batches: each worker its own shard's steps",
    )
    p.add_argument(
        "--max-staleness",
        type=_nonneg_int,
        default=None,
        help="staleness gate sigma_max: delay a worker's pull while an update could exceed it (S = 1)",
    )
    p.add_argument(
        "--lr-policy",
        choices=["constant", "staleness", "zhang"],
        default=None,
        help="the server's lr per update: constant lambda, lambda / max(1, sigma) for a gradient sigma "
        "versions stale, or zhang: lambda / (sigma + 1) (Zhang et al. 2016's count). Default: "
        "staleness (with lr 0.2) for train --strategy async-ps (the "
        "lecture's CNN at a constant 0.1 diverged in about 1 run of 5 there), constant for simulate",
    )
    p.add_argument(
        "--tau", type=_pos_float, default=None, help="quantization threshold for compressed updates"
    )
    p.add_argument("--no-residual", action="store_true", help="drop what compression loses (to show why not)")
    p.add_argument("--data-source", choices=["auto", "subset", "full"], default="auto")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the metrics here")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show a progress bar (training steps, parameter-server or simulated updates)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="dlcourse", description="Distributed deep learning you can run.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)

    train = sub.add_parser("train", help="train on real processes (torch.distributed)")
    train.add_argument("--strategy", choices=sorted(TRAIN_STRATEGIES), default="single")
    _common(train)
    train.add_argument(
        "--optimizer",
        choices=["sgd", "momentum", "adam"],
        default=None,
        help="default: adam (lr 1e-3) for single, ddp, sync-sgd, replicated; plain sgd (lr 0.1) for "
        "averaging, pipeline, model-parallel, hybrid, decentralized; async-ps is plain SGD on the server",
    )
    train.add_argument("--momentum", type=_nonneg_float, default=0.9)
    train.add_argument("--backend", choices=["auto", "gloo", "nccl"], default="auto")
    train.add_argument(
        "--timeout", type=_pos_float, default=60.0, help="seconds before a stuck peer is an error"
    )
    train.add_argument("--average-every", type=_pos_int, default=1, help="steps K between parameter averages")
    train.add_argument(
        "--slow-worker", type=_nonneg_int, default=None, help="rank to slow down (last executor)"
    )
    train.add_argument(
        "--slow-delay", type=_nonneg_float, default=0.0, help="seconds added to each of its steps"
    )
    train.add_argument("--checkpoint-dir", type=Path, default=None)
    train.add_argument("--checkpoint-every", type=_pos_int, default=None, help="steps between checkpoints")
    train.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir"
    )
    train.add_argument(
        "--topology", choices=["all", "ring"], default="all", help="peers of a decentralized worker"
    )
    train.add_argument(
        "--compression",
        choices=["full", "onebit", "sparse"],
        default="full",
        help="with --tau: residual + 1 bit (full), no residual (onebit) or full values (sparse)",
    )
    train.add_argument(
        "--warmup-workers", type=_pos_int, default=None, help="decentralized: workers that start alone"
    )
    train.add_argument(
        "--warmup-fraction", type=_nonneg_float, default=0.0, help="of the first epoch they train alone"
    )
    train.add_argument("--stages", type=_pos_int, default=2, help="pipeline / model-parallel stages K")
    train.add_argument("--microbatches", type=_pos_int, default=4, help="pipeline micro-batches M")
    train.add_argument(
        "--zero-stage",
        type=int,
        choices=[1, 2, 3],
        default=1,
        help="zero: shard the optimizer state (1), also the gradients (2), also the parameters (3)",
    )

    simulate = sub.add_parser("simulate", help="run the deterministic simulated cluster")
    simulate.add_argument("--policy", choices=sorted(SIMULATE_POLICIES) or ["sync"], default="async")
    _common(simulate)
    simulate.add_argument(
        "--device-flops",
        type=_pos_float,
        default=1e10,
        help="FLOP/s of a worker: a gradient takes the model's FLOPs x batch / this (default 1e10)",
    )
    simulate.add_argument(
        "--compute-mean",
        type=_pos_float,
        default=None,
        help="override: mean seconds per gradient (default: from the model's FLOPs and --device-flops)",
    )
    simulate.add_argument("--compute-spread", type=_nonneg_float, default=0.1, help="relative spread of it")
    simulate.add_argument("--straggler-prob", type=_nonneg_float, default=0.0)
    simulate.add_argument("--straggler-slowdown", type=_pos_float, default=4.0)
    simulate.add_argument("--bandwidth", type=_pos_float, default=1e9, help="bytes per second")
    simulate.add_argument("--latency", type=_nonneg_float, default=1e-4, help="seconds per message")
    simulate.add_argument(
        "--apply-time",
        type=_nonneg_float,
        default=None,
        help="server seconds per update with one shard (default: 3 x its bytes at 10 GB/s)",
    )
    simulate.add_argument(
        "--topology", choices=["all", "ring"], default="all", help="peers of a decentralized worker"
    )
    simulate.add_argument(
        "--compression", choices=["full", "onebit", "sparse"], default="full", help="with --tau"
    )
    simulate.add_argument(
        "--evals-per-epoch", type=_pos_int, default=4, help="test evaluations per epoch (curve points)"
    )
    simulate.set_defaults(model="mlp")  # the simulator's default: fast enough for widgets
    _memory_parser(sub)
    return parser


MEMORY_LAYOUTS = ("dp", "zero1", "zero2", "zero3", "tp", "pp")  # --layout: all devices in one dimension


def _memory_parser(sub) -> None:
    """``dlcourse memory``: the bytes per device of a model size and a layout; runs nothing."""
    p = sub.add_parser("memory", help="bytes per device of a model and a parallel layout (runs nothing)")
    p.add_argument("--params", type=_pos_float, required=True, help="parameters of the model (e.g. 7e9)")
    p.add_argument("--devices", type=_pos_int, default=1, help="devices in all: N x T x K")
    p.add_argument(
        "--layout",
        choices=MEMORY_LAYOUTS,
        nargs="+",
        default=None,
        help="all devices in one dimension: dp (plain data parallel), zero1-3, tp, pp; several: compared",
    )
    p.add_argument(
        "--zero-stage", type=int, choices=[0, 1, 2, 3], default=None, help="ZeRO stage of the N ranks"
    )
    p.add_argument("--tp", type=_pos_int, default=None, help="tensor-parallel degree T")
    p.add_argument("--pp", type=_pos_int, default=None, help="pipeline stages K")
    p.add_argument("--microbatches", type=_pos_int, default=None, help="micro-batches M (default: K)")
    p.add_argument("--schedule", choices=["gpipe", "1f1b"], default="1f1b")
    p.add_argument("--recompute", action="store_true", help="activation recomputation (keep segment inputs)")
    p.add_argument("--segments", type=_pos_int, default=2, help="recomputed segments of the CNN or MLP")
    p.add_argument("--precision", choices=["fp32", "mixed", "fp64"], default="mixed")
    p.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], default="adam")
    p.add_argument("--device-memory-gb", type=_pos_float, default=80.0, help="memory of one device (GB)")
    p.add_argument(
        "--model-kind",
        choices=["cnn", "mlp", "gpt"],
        default=None,
        help="estimate activations for this kind of model (gpt: --seq-len, --d-model, --heads, --layers)",
    )
    p.add_argument(
        "--batch", type=_pos_int, default=None, help="examples per data-parallel replica (default M)"
    )
    p.add_argument("--seq-len", type=_pos_int, default=1024)
    p.add_argument("--d-model", type=_pos_int, default=4096)
    p.add_argument("--heads", type=_pos_int, default=32)
    p.add_argument("--layers", type=_pos_int, default=32)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the accounting here")


def summary(metrics: dict) -> str:
    """A few readable lines about a run."""
    lines = []
    for key in ("strategy", "policy", "model", "workers"):
        if key in metrics:
            lines.append(f"{key:>16}: {metrics[key]}")
    for key in ("test_loss", "test_accuracy", "test_macro_f1"):
        if key in metrics:
            lines.append(f"{key:>16}: {metrics[key]:.4f}")
    if "examples_per_s" in metrics:
        lines.append(f"{'examples/s':>16}: {metrics['examples_per_s']:.1f}")
    for key in ("wall_s", "updates", "bytes_sent"):
        if key in metrics:
            value = metrics[key]
            lines.append(f"{key:>16}: {value:.2f}" if isinstance(value, float) else f"{key:>16}: {value:,}")
    if metrics.get("shared_batches") is not None:  # the parameter server's asynchronous runs
        shared = metrics["shared_batches"]
        line = "one shared order (a fast worker takes more)" if shared else "each worker its own shard"
        lines.append(f"{'batches':>16}: {line}")
    staleness = metrics.get("staleness")
    if staleness:
        # sigma: server versions between an update's pull and its application (lessons 04-05)
        line = f"mean {staleness['mean']:.2f}, max {staleness['max']} (server versions behind)"
        lines.append(f"{'staleness sigma':>16}: {line}")
    lines += _phase_line(metrics.get("phases"))
    lines += _worker_events(metrics)
    lines += _per_worker_lines(metrics.get("per_worker") or [])
    lines += _memory_lines(metrics)
    lines += _per_rank_bytes(metrics.get("per_rank") or [])
    return "\n".join(lines)


def _phase_line(phases) -> list[str]:
    """Where the seconds went (dlcourse.worker_run.run_phases): start-up, training, ..., tear-down."""
    if not isinstance(phases, dict) or not phases:
        return []
    parts = ", ".join(f"{key[:-2].replace('_', ' ')} {value:.2f} s" for key, value in phases.items())
    return [f"{'time':>16}: {parts} (total {sum(phases.values()):.2f} s)"]


def _per_rank_bytes(per_rank: list[dict]) -> list[str]:
    """One line per rank: bytes held, measured (and the formula's): parameters, parameters +
    gradients + optimizer state; and the peak bytes of saved activations."""
    rows = [r for r in per_rank if isinstance(r, dict) and isinstance(r.get("state_bytes"), dict)]
    if not rows:
        return []

    def cell(measured: int, predicted) -> str:
        predicted = f"{predicted:,}" if isinstance(predicted, int) else "-"
        return f"{measured:>11,} ({predicted:>11})"

    lines = [
        f"{'peak bytes':>16}:  rank       params (predicted)        state (predicted)"
        "  activations (predicted)"
    ]
    for i, r in enumerate(rows):
        held = r["state_bytes"]
        state = held["parameters"] + held["gradients"] + held["optimizer"]
        lines.append(
            f"{'':>16}  {i:>5}  {cell(held['parameters'], r.get('predicted_parameter_bytes'))}"
            f"  {cell(state, r.get('predicted_state_bytes'))}"
            f"  {cell(r.get('peak_activation_bytes', 0), r.get('predicted_activation_bytes'))}"
        )
    return lines


def _memory_lines(metrics: dict) -> list[str]:
    """ZeRO: bytes each rank held (most at a step's end) / the formula's; peak: most at once in a step."""
    held, predicted, peak = metrics.get("memory"), metrics.get("memory_predicted"), metrics.get("memory_peak")
    if not isinstance(held, list) or not isinstance(predicted, dict) or not isinstance(peak, list):
        return []
    kinds = ("parameters", "gradients", "optimizer")
    lines = [
        f"{'bytes per rank':>16}:  rank" + "".join(f"{k + ' held/formula':>30}" for k in kinds) + "   peak"
    ]
    for rank, (m, top) in enumerate(zip(held, peak)):
        cells = "".join(f"{f'{m[k]:,} / {predicted[k]:,}':>30}" for k in kinds)
        lines.append(f"{'':>16}  {rank:>5}{cells}   {top:,}")
    return lines


def _worker_events(metrics: dict) -> list[str]:
    """Lines for the workers a run lost (with the updates each contributed) or slowed on purpose."""
    lines = []
    lost = metrics.get("lost_workers") or {}
    for worker, updates in sorted(lost.items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"{'lost worker':>16}: worker {worker} after {updates} updates (the others finished without it)"
        )
    config = metrics.get("config") if isinstance(metrics.get("config"), dict) else {}
    slow = metrics.get("slow_worker", config.get("slow_worker"))
    delay = metrics.get("slow_delay", config.get("slow_delay")) or 0.0
    if slow is not None and delay > 0:
        lines.append(f"{'slowed':>16}: worker {slow}, {delay:g} s added to each of its steps (on purpose)")
    return lines


# per-worker clocks, in the order a step spends them; wait_s is where a fast worker idles
_CLOCKS = {"step_s": "step", "compute_s": "compute", "sync_s": "wait", "delay_s": "delay"}


def _ms(seconds: float | None) -> str:
    return f"{1000 * seconds:.1f}" if isinstance(seconds, (int, float)) else "-"


def _per_worker_lines(per_worker: list[dict]) -> list[str]:
    """One line per worker: mean step, compute and wait time (ms), the last-executor picture.

    A synchronous step lasts as long as the slowest worker's: the fast ones show it as wait.
    A clock a strategy cannot measure (DDP hides its wait inside backward) prints as "-".
    """
    per_worker = [w for w in per_worker if isinstance(w, dict)]
    clocks = [key for key in _CLOCKS if any(key in w for w in per_worker)]
    if not clocks:
        return []
    lines = [f"{'per worker':>16}:  rank  steps" + "".join(f"{_CLOCKS[k] + ' ms':>12}" for k in clocks)]
    for i, w in enumerate(per_worker):
        cells = "".join(f"{_ms(w.get(k)):>12}" for k in clocks)
        lines.append(f"{'':>16}  {w.get('rank', i):>5}  {w.get('steps', ''):>5}{cells}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "memory":
        return _memory(args)
    registry = TRAIN_STRATEGIES if args.command == "train" else SIMULATE_POLICIES
    name = args.strategy if args.command == "train" else args.policy
    if name not in registry:
        print(
            f"dlcourse {args.command}: error: {name!r} is not available; choose from {sorted(registry)}",
            file=sys.stderr,
        )
        return 2
    if args.json is not None and not args.json.parent.exists():
        print(
            f"dlcourse {args.command}: error: --json: folder {str(args.json.parent)!r} does not exist",
            file=sys.stderr,
        )
        return 2
    start = time.perf_counter()
    try:
        from dlcourse import commands

        metrics = getattr(commands, registry[name])(args)
    except ValueError as e:
        # library functions validate their arguments; a student sees one line
        print(f"dlcourse {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError) as e:
        from dlcourse.divergence import find_diverged
        from dlcourse.launcher import WorkerError  # imported late: `--help` stays free of torch

        diverged = find_diverged(e)
        if diverged is not None:
            # a run that blew up is a result: one line, exit 1, and the JSON says where
            print(f"dlcourse {args.command}: {diverged}", file=sys.stderr)
            if args.json is not None:
                metrics = _diverged_metrics(args, name, diverged)
                args.json.write_text(json.dumps(metrics, indent=2, default=float) + "\n")
                print(f"dlcourse {args.command}: metrics so far: {args.json}", file=sys.stderr)
            return 1
        if not isinstance(e, (WorkerError, TimeoutError)):
            raise
        # a failed run, not a bad argument: the worker's own traceback is the useful part,
        # the parent's stack through the launcher is not
        print(f"dlcourse {args.command}: error: {e}", file=sys.stderr)
        return 1
    metrics.setdefault("total_s", time.perf_counter() - start)
    print(summary(metrics))
    if args.json is not None:
        args.json.write_text(json.dumps(metrics, indent=2, default=float) + "\n")
        print(f"{'metrics':>16}: {args.json}")
    return 0


def _memory(args: argparse.Namespace) -> int:
    """``dlcourse memory``: print the accounting table (and write --json); bad values exit 2."""
    if args.json is not None and not args.json.parent.exists():
        print(
            f"dlcourse memory: error: --json: folder {str(args.json.parent)!r} does not exist",
            file=sys.stderr,
        )
        return 2
    try:
        from dlcourse import commands

        result = commands.memory(args)
    except ValueError as e:
        print(f"dlcourse memory: error: {e}", file=sys.stderr)
        return 2
    print(result["table"])
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{'accounting':>16}: {args.json}")
    return 0


def _diverged_metrics(args: argparse.Namespace, name: str, diverged) -> dict:
    """The JSON of a run that diverged: its settings, ``"diverged": true``, where, and the
    simulator's curves up to there (what it recorded before it stopped)."""
    metrics = {}
    partial = getattr(diverged, "partial", None)
    if partial is not None and hasattr(partial, "to_json"):
        try:
            metrics = partial.to_json()
        except Exception:  # noqa: BLE001 - the partial record is a bonus; the divergence is the result
            metrics = {}
    key = "strategy" if args.command == "train" else "policy"
    settings = {"model": args.model, "workers": args.workers, "epochs": args.epochs, "seed": args.seed}
    return {key: name, **settings, "lr": args.lr, **metrics, **diverged.as_dict()}


if __name__ == "__main__":
    sys.exit(main())
