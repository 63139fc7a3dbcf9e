"""Assignment A5's grading helpers: the student's ZeRO-1 step and tensor-parallel layers on real processes.

A5 (``assignments/source/a5_sharding``) grades four functions that the library's runtimes
call through their seams: the ZeRO-1 step (:mod:`dlcourse.sharding`, Rajbhandari et al.,
"ZeRO: Memory Optimizations Toward Training Trillion Parameter Models", SC 2020), the
column- and row-parallel linear layers (:mod:`dlcourse.tensor_parallel`, Shoeybi et al.,
"Megatron-LM", 2019) and the memory formula of a layout (:mod:`dlcourse.memory`). The
helpers here run a student's function inside those runtimes and return plain data (tensors,
lists, dicts of them), so that the judge of :mod:`dlcourse.grading` can compare what comes
back from the sandbox with the single-process reference it computes itself.

:mod:`dlcourse.grading` re-exports every public name of this module: the notebooks'
``from dlcourse.grading import ...`` and the sandbox's helpers see them there. Nothing else
in the library imports this module.
"""

from __future__ import annotations

A5_WORKERS = 2  # N of the hidden tests' real runs: 2 processes, one thread each


# A5.1 ZeRO-1 ----------------------------------------------------------------------------


def a5_flat_state(seed: int, numel: int):
    """A flat parameter vector and a flat gradient (float32, reproducible) of ``numel`` elements."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(numel, generator=g), torch.randn(numel, generator=g)


def a5_zero1_in_one_process(step_fn, seed: int, numel: int = 7, lr: float = 0.1):
    """The student's ZeRO-1 step in a process group of one (N = 1): the flat parameters after it.

    ``shard_update`` is plain SGD, ``w -= lr * g``, on the chunk it is given, which must be
    the rank's own chunk of ``flat_params`` (the whole vector at N = 1).
    """
    import torch

    params, grads = a5_flat_state(seed, numel)

    def shard_update(param_shard, grad_shard):
        if param_shard.data_ptr() != params.data_ptr() or param_shard.numel() != numel:
            raise ValueError("shard_update needs flat_params[rank * S:(rank + 1) * S], the rank's own chunk")
        with torch.no_grad():
            param_shard.sub_(lr * grad_shard)

    from dlcourse.launcher import one_process_group

    with one_process_group():
        step_fn(params, grads.clone(), shard_update, 0, 1)
    return params.clone()


def _a5_zero1_run(rank, world_size, seed, steps, lr, step_fn):
    """``steps`` SGD steps of ZeRO stage 1 (the student's step), each rank on its part of the batch."""
    import torch.nn.functional as F

    from dlcourse.sharding import ShardedModel

    model = a5_tp_model(seed)
    X, y = a5_tp_batch(seed, 8 * world_size)
    mine = slice(rank * 8, (rank + 1) * 8)  # equal parts: the mean of the ranks' means is the batch's
    sharded = ShardedModel(model, 1, "sgd", lr, step_fn=step_fn)
    for _ in range(steps):
        sharded.step(F.cross_entropy(model(X[mine]), y[mine]))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def a5_zero1_on_processes(step_fn, num_workers: int, seed: int, steps: int = 3, lr: float = 0.5):
    """Every rank's parameters after ZeRO stage 1 with the student's step on real processes.

    :class:`dlcourse.sharding.ShardedModel` (what ``train_zero(stage=1, step_fn=...)`` runs on
    each rank) on a small model, each of the N ranks training on its 8 examples of the batch.
    """
    from dlcourse.launcher import launch

    return launch(
        _a5_zero1_run, num_workers, seed, steps, lr, step_fn,
        backend="gloo", timeout=30, run_timeout=120, threads_per_worker=1,
    )  # fmt: skip


def a5_zero1_single_process(num_workers: int, seed: int, steps: int = 3, lr: float = 0.5):
    """The same steps in one process on the whole batch (the N ranks' parts put together)."""
    import torch
    import torch.nn.functional as F

    model = a5_tp_model(seed)
    X, y = a5_tp_batch(seed, 8 * num_workers)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(X), y).backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# A5.2, A5.3 tensor parallelism ------------------------------------------------------------


def a5_tp_model(seed: int):
    """Linear(10, 16) -> Tanh -> [Linear(16, 12) -> ReLU -> Linear(12, 6)], the bracket split.

    The layer before the block needs the gradient of the block's input, so a column-parallel
    layer that does not all-reduce it in backward trains that layer wrongly.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 6))


def a5_tp_batch(seed: int, batch: int = 8):
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(batch, 10, generator=g), torch.randint(0, 6, (batch,), generator=g)


def _a5_sgd_steps(model, X, y, steps: int, lr: float):
    """``steps`` plain SGD steps on one batch: every step's output and loss."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    outputs, losses = [], []
    for _ in range(steps):
        out = model(X)
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        outputs.append(out.detach().clone())
        losses.append(loss.item())
    return outputs, losses


def _a5_tp_run(rank, world_size, seed, steps, lr, column_fn, row_fn):
    """``steps`` SGD steps of the model with its block split: outputs, losses, the dense parameters."""
    from dlcourse.tensor_parallel import gather_dense, parallelize

    dense = a5_tp_model(seed)
    X, y = a5_tp_batch(seed)
    tp = parallelize(dense, rank, world_size, column_fn=column_fn, row_fn=row_fn)
    outputs, losses = _a5_sgd_steps(tp, X, y, steps, lr)
    gather_dense(tp, dense)
    return {
        "outputs": outputs,
        "losses": losses,
        "parameters": {k: v.detach().clone() for k, v in dense.state_dict().items()},
    }


def a5_tp_in_one_process(column_fn, row_fn, seed: int, steps: int = 2, lr: float = 0.5):
    """The split model in a process group of one (N = 1): what :func:`_a5_tp_run` returns."""
    from dlcourse.launcher import one_process_group

    with one_process_group():
        return _a5_tp_run(0, 1, seed, steps, lr, column_fn, row_fn)


def a5_tp_on_processes(column_fn, row_fn, num_workers: int, seed: int, steps: int = 2, lr: float = 0.5):
    """Every rank's outputs and losses, and the gathered dense parameters, on real processes.

    ``column_fn`` / ``row_fn``: the student's layer, or None for the library's (so each
    task is graded alone).
    """
    from dlcourse.launcher import launch

    parts = launch(
        _a5_tp_run, num_workers, seed, steps, lr, column_fn, row_fn,
        backend="gloo", timeout=30, run_timeout=120, threads_per_worker=1,
    )  # fmt: skip
    return {
        "outputs": [p["outputs"] for p in parts],
        "losses": [p["losses"] for p in parts],
        "parameters": parts[0]["parameters"],
    }


def a5_dense(seed: int, steps: int = 2, lr: float = 0.5):
    """The same steps on the dense model in one process (no split, no process group)."""
    model = a5_tp_model(seed)
    X, y = a5_tp_batch(seed)
    outputs, losses = _a5_sgd_steps(model, X, y, steps, lr)
    return {
        "outputs": outputs,
        "losses": losses,
        "parameters": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }


def a5_column_slice(outputs, rank: int, world_size: int):
    """Rank ``rank``'s columns of each output (what a column-parallel layer returns there)."""
    part = outputs[0].shape[-1] // world_size
    return [o[..., rank * part : (rank + 1) * part] for o in outputs]


# A5.4 memory --------------------------------------------------------------------------------


def a5_memory_reference(num_params, num_workers, zero_stage, tp, optimizer, precision):
    """Bytes per device of parameters, gradients and optimizer state (:func:`dlcourse.memory.predict`)."""
    from dlcourse.memory import Layout, predict

    b = predict(
        Layout(
            num_params=num_params, num_workers=num_workers, zero_stage=zero_stage, tp=tp,
            optimizer=optimizer, precision=precision,
        )
    )  # fmt: skip
    return {"parameters": int(b.parameters), "gradients": int(b.gradients), "optimizer": int(b.optimizer)}


__all__ = [
    "A5_WORKERS",
    "a5_column_slice",
    "a5_dense",
    "a5_flat_state",
    "a5_memory_reference",
    "a5_zero1_single_process",
    "a5_tp_batch",
    "a5_tp_in_one_process",
    "a5_tp_model",
    "a5_tp_on_processes",
    "a5_zero1_in_one_process",
    "a5_zero1_on_processes",
]
