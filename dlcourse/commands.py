"""What each ``dlcourse`` command runs: parsed arguments in, the run's metrics dict out.

One function per strategy of ``dlcourse train`` and per family of ``dlcourse simulate``,
named after it (``ddp(args)``, ``async_ps(args)``, ``simulate(args)``, ...). Each turns the
options into the library's configuration, calls the library, and returns the metrics of
:func:`dlcourse.metrics.run_metrics`. The parser, the summary and the exit codes are
:mod:`dlcourse.cli`'s. Library modules are imported inside the functions, so that
``dlcourse --help`` and a bad option answer without loading torch.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from typing import Any

from dlcourse._validate import check_choice

# ---------------------------------------------------------------------------- shared

# --strategy async-ps's --lr-policy and --lr unless given: at a constant 0.1 the default CNN
# diverged in about 1 run of 5; lambda / tau with lambda = 0.2 converged in 10 of 10 (seeds
# 0-9, 0.83-0.92; lambda = 0.1 also 10 of 10 but only 0.69-0.85): benchmarks/async_ps_seeds.py
ASYNC_PS_LR_POLICY = "staleness"
ASYNC_PS_LR = {"staleness": 0.2, "zhang": 0.2, "constant": 0.1}


def training_settings(args: argparse.Namespace, default_optimizer: str) -> dict[str, Any]:
    """The settings every strategy trains with, named as :func:`dlcourse.train.fit` names them.

    ``--optimizer`` falls back to the strategy's ``default_optimizer``; ``--lr`` to 1e-3 for
    Adam and 0.1 otherwise (Adam's steps are already scaled per coordinate).
    """
    check_choice("default_optimizer", default_optimizer, ("sgd", "momentum", "adam"))
    optimizer = args.optimizer or default_optimizer
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr if args.lr is not None else (1e-3 if optimizer == "adam" else 0.1),
        "optimizer": optimizer,
        "momentum": args.momentum,
        "seed": args.seed,
    }


def _processes(count: int) -> None:
    """Check that ``count`` real processes can start here; warn when they exceed what fits.

    :func:`dlcourse.resources.fit_workers` sizes a run to the CPU quota and free memory. The
    command line runs what was asked (the user chose N), but says so when it will be slow or
    short of memory, and refuses (a ``ValueError``: exit 2) when not even one process fits.
    """
    import sys

    from dlcourse.launcher import under_torchrun
    from dlcourse.resources import fit_workers

    if under_torchrun():  # torchrun started the processes already, one per rank
        return
    allowed, why = fit_workers(count)
    if allowed == 0:
        raise ValueError(why)
    if allowed < count:
        print(f"dlcourse: warning: {why}; running all {count} anyway (expect it to be slow)", file=sys.stderr)


def _data(args: argparse.Namespace):
    from dlcourse.data import load_mnist

    return load_mnist(args.data_source, seed=0)


# ---------------------------------------------------------------------------- train


def single(args: argparse.Namespace) -> dict[str, Any]:
    """``--strategy single``: the lecture's Keras example in PyTorch, one process, Adam."""
    from dlcourse.metrics import run_metrics
    from dlcourse.models import make_model
    from dlcourse.train import evaluate, fit

    split = _data(args)
    model = make_model(args.model, seed=args.seed)
    history = fit(model, split.train, **training_settings(args, "adam"), progress=args.progress)
    return run_metrics(
        "single",
        evaluate(model, split.test),
        examples_per_s=history.examples_per_s,
        wall_s=history.wall_s,
        updates=len(history.step_loss),
        bytes_sent=0,
        model=args.model,
        data_source=split.source,
        epochs=args.epochs,
        epoch_loss=history.epoch_loss,
    )


def _workers(args: argparse.Namespace) -> int:
    """N: ``--workers``, or under ``torchrun`` the world size it set up (one rank per process)."""
    from dlcourse.launcher import under_torchrun

    return int(os.environ["WORLD_SIZE"]) if under_torchrun() else args.workers


def _data_parallel_config(args: argparse.Namespace, default_optimizer: str):
    """A :class:`~dlcourse.worker_run.DataParallelConfig` from ``dlcourse train``'s options."""
    from dlcourse.data_parallel import DataParallelConfig

    if args.slow_delay > 0 and args.slow_worker is None:
        raise ValueError("--slow-delay needs --slow-worker RANK (which worker to slow down)")
    return DataParallelConfig(
        model=args.model,
        **training_settings(args, default_optimizer),
        average_every=args.average_every,
        slow_worker=args.slow_worker,
        slow_delay=args.slow_delay,
        checkpoint_dir=str(args.checkpoint_dir) if args.checkpoint_dir is not None else None,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
    )


def _data_parallel(train_fn, args: argparse.Namespace, default_optimizer: str) -> dict[str, Any]:
    """Run ``train_fn`` (train_ddp, train_sync_sgd, train_averaging) from the options.

    Synchronous: every update has staleness 0. ``per_worker`` holds every rank's clocks.
    """
    from dlcourse.metrics import run_metrics

    config = _data_parallel_config(args, default_optimizer)
    _processes(_workers(args))
    split = _data(args)
    result = train_fn(
        split.train, _workers(args), config, test=split.test, backend=args.backend, timeout=args.timeout
    )
    return run_metrics(
        result.strategy,
        result.test,
        examples_per_s=result.examples_per_s,
        wall_s=result.wall_s,
        updates=result.updates,
        bytes_sent=result.bytes_sent,
        model=args.model,
        workers=result.num_workers,
        data_source=split.source,
        epochs=args.epochs,
        per_worker=result.per_worker,
        step_loss=result.step_loss,
        phases=result.phases,
        config=asdict(config),
    )


def _every_step(args: argparse.Namespace) -> None:
    if args.average_every != 1:
        raise ValueError(
            f"--average-every applies to --strategy averaging; {args.strategy} averages every step"
        )


def ddp(args: argparse.Namespace) -> dict[str, Any]:
    """``--strategy ddp``: DistributedDataParallel, Adam by default."""
    from dlcourse.data_parallel import train_ddp

    _every_step(args)
    return _data_parallel(train_ddp, args, "adam")


def zero(args: argparse.Namespace) -> dict[str, Any]:
    """``--strategy zero --zero-stage {1,2,3}``: ZeRO, Adam by default; bytes per rank vs the formula."""
    from dlcourse.sharding import train_zero

    _every_step(args)
    results = []

    def train_fn(*a: Any, **kw: Any):
        results.append(train_zero(*a, stage=args.zero_stage, **kw))
        return results[-1]

    metrics = _data_parallel(train_fn, args, "adam")
    extra = results[0].extra
    metrics.update(
        zero_stage=args.zero_stage,
        memory=extra["memory"],  # per rank: most bytes held at the end of a step, by kind
        memory_peak=extra["peak_state"],  # per rank: most bytes at once (with a gathered layer)
        memory_predicted=extra["predicted"],  # dlcourse.sharding.predicted_bytes
        step_bytes=extra["step_bytes"],  # all ranks together, per step
    )
    return metrics


def sync_sgd(args: argparse.Namespace) -> dict[str, Any]:
    """``--strategy sync-sgd``: the gradient all-reduce written out, Adam by default."""
    from dlcourse.data_parallel import train_sync_sgd

    _every_step(args)
    return _data_parallel(train_sync_sgd, args, "adam")


def averaging(args: argparse.Namespace) -> dict[str, Any]:
    """``--strategy averaging``: the lecture's parameter averaging every K steps, plain SGD."""
    from dlcourse.averaging import train_averaging

    return {**_data_parallel(train_averaging, args, "sgd"), "average_every": args.average_every}


def replicated(args: argparse.Namespace) -> dict[str, Any]:
    """``--strategy replicated``: multi_gpu_model in one process, weights on the CPU."""
    from dlcourse.collectives import parameter_bytes
    from dlcourse.metrics import run_metrics
    from dlcourse.models import make_model
    from dlcourse.replication import ReplicatedModel, replica_devices
    from dlcourse.train import evaluate, fit

    config = _data_parallel_config(args, "adam")
    given = {  # options of the multi-process strategies that one process cannot honour
        "--slow-worker": config.slow_worker is not None,
        "--checkpoint-dir": config.checkpoint_dir is not None,
        "--average-every": config.average_every != 1,
    }
    unsupported = [option for option, used in given.items() if used]
    if unsupported:
        raise ValueError(f"{', '.join(unsupported)}: not available with --strategy replicated (one process)")
    devices = replica_devices(args.workers)
    split = _data(args)
    pmodel = ReplicatedModel(make_model(config.model, seed=config.seed), devices)  # weights on the CPU
    history = fit(
        pmodel, split.train, **training_settings(args, "adam"), progress=args.progress, runtime="replicated"
    )
    updates = len(history.step_loss)
    return run_metrics(
        "replicated",
        evaluate(pmodel, split.test),
        examples_per_s=history.examples_per_s,
        wall_s=history.wall_s,
        updates=updates,
        # each step copies the weights to every replica and brings each gradient back
        bytes_sent=2 * len(devices) * parameter_bytes(pmodel.module) * updates,
        model=config.model,
        workers=len(devices),
        devices=[str(d) for d in pmodel.devices],
        data_source=split.source,
        epochs=config.epochs,
        step_loss=history.step_loss,
        config=asdict(config),
    )


def pipeline(args: argparse.Namespace, num_microbatches: int | None = None) -> dict[str, Any]:
    """``--strategy pipeline --stages K --microbatches M``: GPipe on K processes, plain SGD."""
    from dlcourse.metrics import run_metrics
    from dlcourse.model_parallel import stage_bounds
    from dlcourse.models import make_model
    from dlcourse.pipeline import PipelineConfig, train_stages
    from dlcourse.train import evaluate

    config = PipelineConfig(
        num_microbatches=args.microbatches if num_microbatches is None else num_microbatches,
        **training_settings(args, "sgd"),
    )
    split = _data(args)
    model = make_model(args.model, seed=args.seed)
    stage_bounds(len(model), args.stages)  # a bad --stages is one line, before any warning
    _processes(args.stages)
    run = train_stages(model, split.train, args.stages, config, timeout=args.timeout)
    return run_metrics(
        "pipeline" if num_microbatches is None else "model-parallel",
        evaluate(model, split.test),
        examples_per_s=run.steps * args.batch_size / run.wall_s if run.wall_s > 0 else 0.0,
        wall_s=run.wall_s,
        updates=run.steps,
        bytes_sent=run.bytes_sent,
        model=args.model,
        stages=args.stages,
        microbatches=config.num_microbatches,
        data_source=split.source,
        epochs=args.epochs,
        step_loss=run.step_loss,
    )


def model_parallel(args: argparse.Namespace) -> dict[str, Any]:
    """``--strategy model-parallel --stages K``: a layer group per process, one micro-batch."""
    return pipeline(args, num_microbatches=1)


def hybrid(args: argparse.Namespace) -> dict[str, Any]:
    """``--strategy hybrid --stages K --workers R``: K pipeline stages times R data-parallel replicas."""
    from dlcourse.hybrid import HybridConfig, run_hybrid
    from dlcourse.metrics import run_metrics
    from dlcourse.models import make_model
    from dlcourse.train import evaluate

    config = HybridConfig(num_stages=args.stages, **training_settings(args, "sgd"))
    split = _data(args)
    model = make_model(args.model, seed=args.seed)
    _processes(args.stages * args.workers)
    result = run_hybrid(model, split.train.X, split.train.y, args.workers, config, timeout=args.timeout)
    model.load_state_dict(result.state_dict)
    return run_metrics(
        "hybrid",
        evaluate(model, split.test),
        examples_per_s=result.steps * args.batch_size / result.wall_s if result.wall_s > 0 else 0.0,
        wall_s=result.wall_s,
        updates=result.steps,
        bytes_sent=result.bytes_sent,
        model=args.model,
        stages=args.stages,
        workers=args.workers,
        data_source=split.source,
        epochs=args.epochs,
        replicas_agree=result.replicas_agree,
        step_loss=result.step_loss,
    )


def tensor_parallel(args: argparse.Namespace) -> dict[str, Any]:
    """``--strategy tensor-parallel --workers N``: the dense MLP block split over N ranks (Megatron).

    Every rank sees the same batch. Reports per rank the bytes it holds (measured storages)
    next to the formula's (parameters, and parameters + gradients + optimizer state), and the
    peak bytes of saved activations.
    """
    from dlcourse.memory import activation_bytes
    from dlcourse.metrics import run_metrics
    from dlcourse.models import make_model
    from dlcourse.precision import bytes_per_parameter
    from dlcourse.tensor_parallel import TensorParallelConfig, tp_parameters_per_rank, train_tensor_parallel

    given = {  # options of the data-parallel strategies that tensor-parallel does not take
        "--slow-worker": args.slow_worker is not None,
        "--checkpoint-dir": args.checkpoint_dir is not None,
        "--resume": args.resume,
        "--average-every": args.average_every != 1,
    }
    unsupported = [option for option, used in given.items() if used]
    if unsupported:
        raise ValueError(f"{', '.join(unsupported)}: not available with --strategy tensor-parallel")
    config = TensorParallelConfig(model=args.model, **training_settings(args, "sgd"))
    config.check_workers(_workers(args))  # a degree that does not divide: one line, before any warning
    _processes(_workers(args))
    split = _data(args)
    result = train_tensor_parallel(
        split.train, _workers(args), config, test=split.test, backend=args.backend, timeout=args.timeout
    )
    count = tp_parameters_per_rank(make_model(args.model), result.num_workers)
    per_parameter = bytes_per_parameter(config.optimizer, mixed=False)  # float32: weights, grads, state
    activations = activation_bytes(args.model, args.batch_size, tp=result.num_workers)  # saved per step
    per_rank = [
        {
            **r,
            "state_bytes": r["state_bytes"].as_dict(),
            "predicted_parameter_bytes": per_parameter["weights"] * count,
            "predicted_state_bytes": per_parameter["total"] * count,
            "predicted_activation_bytes": activations,
        }
        for r in result.extra["per_rank"]
    ]
    return run_metrics(
        "tensor-parallel",
        result.test,
        examples_per_s=result.examples_per_s,
        wall_s=result.wall_s,
        updates=result.updates,
        bytes_sent=result.bytes_sent,
        model=args.model,
        workers=result.num_workers,
        data_source=split.source,
        epochs=args.epochs,
        per_worker=result.per_worker,
        per_rank=per_rank,
        step_loss=result.step_loss,
    )


def _variant(args: argparse.Namespace) -> str:
    """The compression variant: ``--no-residual`` is the one-bit variant without residual."""
    return "onebit" if args.no_residual else args.compression


def decentralized(args: argparse.Namespace) -> dict[str, Any]:
    """``--strategy decentralized``: peers exchange compressed updates, no server."""
    from dlcourse.decentralized import DecentralizedConfig, train_decentralized

    named_alike = (
        "tau",
        "topology",
        "model",
        "epochs",
        "batch_size",
        "warmup_workers",
        "warmup_fraction",
        "seed",
    )
    config = DecentralizedConfig(
        **{name: getattr(args, name) for name in named_alike},  # options named as the config's fields
        variant=_variant(args),
        lr=args.lr if args.lr is not None else 0.1,
    )
    _processes(args.workers)
    split = _data(args)
    result = train_decentralized(
        config, args.workers, train=split.train, test=split.test, timeout=args.timeout
    )
    return {**result.metrics(), "data_source": split.source}


def async_ps(args: argparse.Namespace) -> dict[str, Any]:
    """``--strategy async-ps``: k server processes, N workers (arguments checked before spawning)."""
    from dlcourse.parameter_server import PSConfig, run_parameter_server

    config = PSConfig(
        num_workers=args.workers,
        num_servers=args.servers,
        softsync=1 if args.softsync is None else args.softsync,
        staleness_bound=args.staleness_bound,
        max_staleness=args.max_staleness,
        shared_batches=args.shared_batches,
        # the defaults that converge (see ASYNC_PS_LR_POLICY)
        lr=ASYNC_PS_LR[args.lr_policy or ASYNC_PS_LR_POLICY] if args.lr is None else args.lr,
        lr_policy=args.lr_policy or ASYNC_PS_LR_POLICY,
        model=args.model,
        batch_size=args.batch_size,
        epochs=args.epochs,
        seed=args.seed,
        data_source=args.data_source,
        slow_worker=args.slow_worker,
        slow_delay=args.slow_delay,
        timeout=args.timeout,
    )
    _processes(config.num_workers + config.num_servers)
    result = run_parameter_server(config, progress=bool(args.progress))
    slowed = {"slow_worker": args.slow_worker, "slow_delay": args.slow_delay} if args.slow_delay > 0 else {}
    return {**result.metrics(), "lr_policy": str(config.lr_policy), **slowed}


# ---------------------------------------------------------------------------- simulate


def sim_config(args: argparse.Namespace):
    """The :class:`~dlcourse.sim.SimConfig` of ``dlcourse simulate``'s options."""
    from dlcourse.sim import SimConfig

    return SimConfig(
        num_workers=args.workers,
        policy=args.policy,
        softsync=args.softsync,
        staleness_bound=args.staleness_bound,
        max_staleness=args.max_staleness,
        lr=args.lr if args.lr is not None else 0.1,
        lr_policy=args.lr_policy or "constant",
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device_flops=args.device_flops,
        compute_mean=args.compute_mean,
        compute_spread=args.compute_spread,
        straggler_prob=args.straggler_prob,
        straggler_slowdown=args.straggler_slowdown,
        bandwidth=args.bandwidth,
        latency=args.latency,
        apply_time=args.apply_time,
        servers=args.servers,
        evals_per_epoch=args.evals_per_epoch,
        seed=args.seed,
        shared_batches=args.shared_batches,
    )


def _simulate(config, args: argparse.Namespace):
    """``simulate(config)`` on ``--data-source``, with a tqdm bar of the updates unless ``--no-progress``.

    The bar counts what :meth:`dlcourse.sim.Cluster.applied` records (the policy reports
    every update there); it wraps this one run's cluster and leaves the policy as it is.
    """
    from dlcourse.sim import POLICIES, default_data, simulate

    data = default_data(args.data_source)
    if not args.progress:
        return simulate(config, data)
    from tqdm.auto import tqdm

    policy = POLICIES[config.policy]

    def with_bar(cluster) -> None:
        bar = tqdm(total=cluster.total_steps, desc=f"simulate {config.policy}", unit="update", leave=False)
        applied = cluster.applied

        def counted(taus, examples, params) -> None:
            bar.update(len(taus))
            applied(taus, examples, params)

        cluster.applied = counted
        try:
            policy(cluster)
        finally:
            bar.close()

    POLICIES[config.policy] = with_bar
    try:
        return simulate(config, data)
    finally:
        POLICIES[config.policy] = policy


def simulate(args: argparse.Namespace) -> dict[str, Any]:
    """``dlcourse simulate --policy sync|async|softsync|bounded``: the simulated parameter server."""
    return _simulate(sim_config(args), args).to_json()


def simulate_decentralized(args: argparse.Namespace) -> dict[str, Any]:
    """``dlcourse simulate --policy decentralized``: compressed peer-to-peer SGD, simulated."""
    from dlcourse.sim import DecentralizedSimConfig

    config = DecentralizedSimConfig.extend(
        sim_config(args), tau=args.tau, variant=_variant(args), topology=args.topology
    )
    metrics = _simulate(config, args).to_json()
    metrics["compression"] = "dense" if config.tau is None else config.variant
    return metrics


# ---------------------------------------------------------------------------- memory

_ONE_DIMENSION = {  # --layout name -> (zero stage, which dimension takes every device)
    "dp": (0, "num_workers"),
    "zero1": (1, "num_workers"),
    "zero2": (2, "num_workers"),
    "zero3": (3, "num_workers"),
    "tp": (0, "tp"),
    "pp": (0, "pp"),
}


def _memory_layouts(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(label, Layout) for each --layout, or the one layout --zero-stage/--tp/--pp describe."""
    from dlcourse.memory import Layout

    explicit = args.zero_stage is not None or args.tp is not None or args.pp is not None
    if args.layout and explicit:
        raise ValueError("give --layout or --zero-stage/--tp/--pp, not both")
    if args.params != int(args.params):
        raise ValueError(f"params must be a whole number of parameters, got {args.params}")
    shapes = []  # (label, stage, N, T, K)
    for name in args.layout or []:
        stage, dim = _ONE_DIMENSION[name]
        sizes = {"num_workers": 1, "tp": 1, "pp": 1, dim: args.devices}
        shapes.append((name, stage, sizes["num_workers"], sizes["tp"], sizes["pp"]))
    if not shapes:
        tp, pp = args.tp or 1, args.pp or 1
        if args.devices % (tp * pp):
            raise ValueError(f"devices ({args.devices}) must be a multiple of tp x pp ({tp} x {pp})")
        n, stage = args.devices // (tp * pp), args.zero_stage or 0
        shapes.append((f"N={n} T={tp} K={pp}" + (f" zero{stage}" if stage else ""), stage, n, tp, pp))
    layouts = []
    for label, stage, n, tp, pp in shapes:
        m = args.microbatches or pp
        layouts.append(
            (
                label,
                Layout(
                    num_params=int(args.params),
                    num_workers=n,
                    zero_stage=stage,
                    tp=tp,
                    pp=pp,
                    microbatches=m,
                    schedule=args.schedule,
                    recompute=args.recompute,
                    segments=args.segments,
                    precision=args.precision,
                    optimizer=args.optimizer,
                    model_kind=args.model_kind,
                    batch=args.batch or m,
                    seq_len=args.seq_len,
                    d_model=args.d_model,
                    heads=args.heads,
                    layers=args.layers,
                ),
            )
        )
    return layouts


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """``dlcourse memory``: bytes per device of each layout (:func:`dlcourse.memory.plan`); runs nothing."""
    from dlcourse.memory import plan

    device_memory = args.device_memory_gb * 1e9
    rows, lines = [], []
    for label, layout in _memory_layouts(args):
        p = plan(layout, device_memory=device_memory)
        rows.append(
            {
                "layout": label,
                "num_workers": layout.num_workers,
                "tp": layout.tp,
                "pp": layout.pp,
                "zero_stage": layout.zero_stage,
                **p.memory.as_dict(),
                "fits": p.fits,
            }
        )
    kinds = ("parameters", "gradients", "optimizer", "activations", "total")
    unit, scale = ("GB", 1e9) if max(r["total"] for r in rows) >= 1e9 else ("MB", 1e6)
    lines.append(
        f"{int(args.params):,} parameters on {args.devices} devices, {args.precision} {args.optimizer}"
        + (", recompute" if args.recompute else "")
        + f"; {unit} per device (1 {unit} = {scale:.0e} bytes), device memory {args.device_memory_gb:g} GB"
    )
    lines.append(f"{'layout':<20}{'N':>4}{'T':>4}{'K':>4}" + "".join(f"{k:>13}" for k in kinds) + "   fits")
    for r in rows:
        lines.append(
            f"{r['layout']:<20}{r['num_workers']:>4}{r['tp']:>4}{r['pp']:>4}"
            + "".join(f"{r[k] / scale:>13.3f}" for k in kinds)
            + ("   yes" if r["fits"] else "   no")
        )
    return {"params": int(args.params), "devices": args.devices, "layouts": rows, "table": "\n".join(lines)}
