"""A5's cells (sharding, tensor parallelism, memory), for ``build_sources.py``.

A file of its own so that A5 can be read and reviewed apart from A1-A4; ``build_sources.py``
calls :func:`a5_cells` with its cell makers, and writes the notebook with the others.
The checks and helpers the test cells use are :mod:`dlcourse.grading` (A5's own:
:mod:`dlcourse.grading_a5`, re-exported there).
"""

# ruff: noqa: E501 - the notebooks' code is written out here as it reads in a notebook
from __future__ import annotations


def a5_cells(md, setup, solution, test, demo, how_to: str) -> list:
    """The cells of ``a5_sharding``, built with ``build_sources``' cell makers."""
    return [
        md(
            "intro",
            """
# A5: Sharding, tensor parallelism and memory

A model that does not fit one device can be trained anyway, by splitting what each device
holds. **ZeRO** (Rajbhandari et al., SC 2020) shards the training state of data parallelism
over the N workers: stage 1 the optimizer state, stage 2 the gradients too, stage 3 the
parameters too. **Tensor parallelism** (Megatron-LM, Shoeybi et al. 2019) splits a layer's
weight matrix: a column-parallel layer splits its output features, a row-parallel layer its
input features, and one all-reduce forward and one backward put the pieces together. You
will write the ZeRO-1 step, the column- and row-parallel linear layers, and the memory
formula of a layout. Your step then trains a model inside `dlcourse.sharding`'s runtime,
and your layers inside `dlcourse.tensor_parallel`'s, on real processes, compared with
training in one process.

**Notation.** N is the number of workers (ranks), T the tensor-parallel degree. The ZeRO
paper calls the optimizer's bytes per parameter *K*; in this course K is the number of
pipeline stages, so here it is **k_opt**.
"""
            + how_to,
        ),
        setup(
            """
# Setup (locked): imports and the checks the tests use. Run this cell first.
import math
import random

import torch
import torch.distributed as dist
import torch.nn.functional as F

from dlcourse.grading import *

# dlcourse's own versions of what you write here: they raise while your code is graded
GRADED_REFERENCES = [
    "dlcourse.sharding:zero1_step",
    "dlcourse.tensor_parallel:column_parallel_linear",
    "dlcourse.tensor_parallel:row_parallel_linear",
    "dlcourse.tensor_parallel:CopyToParallel.forward",
    "dlcourse.tensor_parallel:CopyToParallel.backward",
    "dlcourse.tensor_parallel:ReduceFromParallel.forward",
    "dlcourse.tensor_parallel:ReduceFromParallel.backward",
    "dlcourse.memory:bytes_per_parameter",
    "dlcourse.memory:optimizer_bytes_per_parameter",
    "dlcourse.memory:predict",
    "dlcourse.sharding:predicted_bytes",
    "dlcourse.sharding:predicted_state_bytes",
]
"""
        ),
        md(
            "md-a5-1",
            """
## A5.1 The ZeRO-1 step

Under ZeRO stage 1 the parameters of the model are views of one flat vector `flat_params`,
zero-padded to a multiple of N, so that each rank **owns** one chunk of `S = len / N`
elements: rank `r` owns `flat_params[r * S:(r + 1) * S]`, and only the owner keeps the
optimizer state of its chunk. After backward, `dlcourse.sharding` calls your step on every
rank with

- `flat_params`: the flat parameters (update them in place);
- `flat_grads`: this rank's gradient, flat and padded like the parameters, **not yet
  averaged** over the ranks;
- `shard_update(param_shard, grad_shard)`: steps the optimizer on `param_shard`, which must
  be this rank's own chunk of `flat_params` (a view, not a copy), with `grad_shard`, the
  **mean** over the N ranks of that chunk's gradient;
- `rank`, `world_size` (N).

Write the three steps: **reduce-scatter** the gradients (rank r receives the sum over the
ranks of chunk r: `dist.reduce_scatter_single(out, inp)`, or an all-reduce and a slice),
turn the sum into a mean, step the own chunk with `shard_update`, then **all-gather** the
updated chunks so that every rank holds all the new parameters
(`dist.all_gather_single(out, inp)`; its input must not be a view of its output).
""",
        ),
        solution(
            "a5_1",
            '''
def zero1_step(flat_params, flat_grads, shard_update, rank, world_size):
    """Reduce-scatter the gradients, step the own chunk, all-gather the parameters."""
    ### BEGIN SOLUTION
    S = flat_params.numel() // world_size
    grad_shard = torch.empty(S, dtype=flat_grads.dtype)
    dist.reduce_scatter_single(grad_shard, flat_grads.contiguous())  # chunk `rank` of the sum
    grad_shard = grad_shard / world_size  # the mean over the N ranks
    mine = flat_params[rank * S : (rank + 1) * S]
    shard_update(mine, grad_shard)
    dist.all_gather_single(flat_params, mine.clone())
    return None
    ### END SOLUTION
    raise NotImplementedError("A5.1: the ZeRO-1 step")
''',
        ),
        test(
            "test_a5_1",
            3,
            '''
"""A5.1: your ZeRO-1 step equals single-process SGD (1 process here, 2 when graded)."""
_params, _grads = a5_flat_state(0, 7)
_got = in_student_process(a5_zero1_in_one_process, guarded(zero1_step, GRADED_REFERENCES), 0)
expect_close(_got, _params - 0.1 * _grads, "flat_params after one step at N = 1 (SGD, lr 0.1)", rtol=1e-6, atol=1e-7)
### BEGIN HIDDEN TESTS
def _hidden():
    # fixed: N = 2 processes, SGD (a sum not divided by N, gathered gradients, the whole vector
    # given to shard_update, or a missing all-gather all change the parameters; at N = 1 they pass)
    rng = rng_for("A5.1", 0)
    seed = rng.randrange(10**6)
    want = a5_zero1_single_process(A5_WORKERS, seed)
    ranks = in_student_process(a5_zero1_on_processes, guarded(zero1_step, GRADED_REFERENCES), A5_WORKERS, seed)
    expect_equal(len(ranks), A5_WORKERS, "ranks that returned")
    for r, got in enumerate(ranks):
        expect_equal(sorted(got), sorted(want), "parameter names")
        for k in sorted(want):
            expect_close(got[k], want[k], f"rank {r}'s {k} after 3 ZeRO-1 steps (N = {A5_WORKERS}) vs one process", rtol=1e-6, atol=1e-6)
    # random vectors of any length in one process (N = 1)
    for case in range(3):
        n = rng.randint(1, 40)
        params, grads = a5_flat_state(seed + case, n)
        got = in_student_process(a5_zero1_in_one_process, guarded(zero1_step, GRADED_REFERENCES), seed + case, n, 0.25)
        expect_close(got, params - 0.25 * grads, f"flat_params of {n} elements after one step at N = 1", rtol=1e-6, atol=1e-7)
hidden_test("A5.1", _hidden)
### END HIDDEN TESTS
''',
        ),
        md(
            "md-a5-2",
            """
## A5.2 The column-parallel linear layer

A dense layer `y = x W^T + b` with `W` of shape `(out, in)`. Split the **output features**
over the N ranks: rank n holds the rows `W_n` of `W` and the slice `b_n` of `b`, takes the
**whole input** `x`, and returns its slice of the output, `y_n = x W_n^T + b_n`. No
communication forward. Backward, each rank's gradient of `x` (`dy_n W_n`) is only its share
of the true `dx`: it must be **all-reduced** (summed over the ranks), Megatron's operator
`f`. Write `column_parallel_linear(x, weight_shard, bias_shard)`, differentiable, with that
all-reduce in its backward (a `torch.autograd.Function` whose `backward` all-reduces, then
`F.linear`). `dlcourse.tensor_parallel` calls it in the first layer of a Megatron MLP block.
""",
        ),
        solution(
            "a5_2",
            '''
class CopyToRanks(torch.autograd.Function):
    """Forward: x unchanged. Backward: the ranks' gradients of x summed (an all-reduce)."""

    @staticmethod
    def forward(ctx, x):
        ### BEGIN SOLUTION
        return x.view_as(x)
        ### END SOLUTION
        raise NotImplementedError("A5.2: f's forward")

    @staticmethod
    def backward(ctx, dx):
        ### BEGIN SOLUTION
        dx = dx.contiguous().clone()  # all_reduce works in place
        dist.all_reduce(dx)
        return dx
        ### END SOLUTION
        raise NotImplementedError("A5.2: f's backward")


def column_parallel_linear(x, weight_shard, bias_shard):
    """This rank's slice of the output features; the gradient of x all-reduced in backward."""
    ### BEGIN SOLUTION
    return F.linear(CopyToRanks.apply(x), weight_shard, bias_shard)
    ### END SOLUTION
    raise NotImplementedError("A5.2: the column-parallel linear layer")
''',
        ),
        test(
            "test_a5_2",
            3,
            '''
"""A5.2: your column-parallel layer trains like the dense layer (1 process here, 2 when graded)."""
_got = in_student_process(a5_tp_in_one_process, guarded(column_parallel_linear, GRADED_REFERENCES), None, 0)
_want = a5_dense(0)
expect_close(_got["outputs"], _want["outputs"], "outputs of two steps at N = 1", rtol=1e-6, atol=1e-6)
for _k in sorted(_want["parameters"]):
    expect_close(_got["parameters"][_k], _want["parameters"][_k], f"{_k} after two steps at N = 1", rtol=1e-6, atol=1e-6)
### BEGIN HIDDEN TESTS
def _hidden():
    # fixed: N = 2 with a layer before the block (a missing backward all-reduce trains it on one
    # rank's share of the gradient; an all-reduce forward doubles the output)
    seed = rng_for("A5.2", 0).randrange(10**6)
    want = a5_dense(seed)
    got = in_student_process(a5_tp_on_processes, guarded(column_parallel_linear, GRADED_REFERENCES), None, A5_WORKERS, seed)
    expect_equal(len(got["outputs"]), A5_WORKERS, "ranks that returned")
    for r in range(A5_WORKERS):
        expect_close(got["outputs"][r], want["outputs"], f"rank {r}'s outputs of two steps (N = {A5_WORKERS})", rtol=1e-6, atol=1e-6)
    expect_equal(sorted(got["parameters"]), sorted(want["parameters"]), "parameter names")
    for k in sorted(want["parameters"]):
        expect_close(got["parameters"][k], want["parameters"][k], f"{k} after two steps (N = {A5_WORKERS}) vs one process", rtol=1e-6, atol=1e-6)
hidden_test("A5.2", _hidden)
### END HIDDEN TESTS
''',
        ),
        md(
            "md-a5-3",
            """
## A5.3 The row-parallel linear layer

Now split the **input features**: rank n holds the columns `W_n` of `W` and takes only its
slice `x_n` of the input (the column-parallel layer's output, after the ReLU). Its
`x_n W_n^T` is a partial sum of the output: one **all-reduce** forward adds the N parts
(Megatron's `g`; its backward passes the gradient unchanged, since every rank needs the
whole `dy`). Every rank holds the whole bias `b`: add it **once**, after the sum. Write
`row_parallel_linear(x_shard, weight_shard, bias)` returning the whole output on every rank.
""",
        ),
        solution(
            "a5_3",
            '''
class SumOverRanks(torch.autograd.Function):
    """Forward: the ranks' partial outputs summed (an all-reduce). Backward: dy unchanged."""

    @staticmethod
    def forward(ctx, y):
        ### BEGIN SOLUTION
        y = y.contiguous().clone()
        dist.all_reduce(y)
        return y
        ### END SOLUTION
        raise NotImplementedError("A5.3: g's forward")

    @staticmethod
    def backward(ctx, dy):
        ### BEGIN SOLUTION
        return dy
        ### END SOLUTION
        raise NotImplementedError("A5.3: g's backward")


def row_parallel_linear(x_shard, weight_shard, bias):
    """The whole output: the ranks' partial products all-reduced, the bias added once."""
    ### BEGIN SOLUTION
    y = SumOverRanks.apply(F.linear(x_shard, weight_shard))
    return y + bias
    ### END SOLUTION
    raise NotImplementedError("A5.3: the row-parallel linear layer")
''',
        ),
        test(
            "test_a5_3",
            2,
            '''
"""A5.3: your row-parallel layer trains like the dense layer (1 process here, 2 when graded)."""
_got = in_student_process(a5_tp_in_one_process, None, guarded(row_parallel_linear, GRADED_REFERENCES), 1)
_want = a5_dense(1)
expect_close(_got["outputs"], _want["outputs"], "outputs of two steps at N = 1", rtol=1e-6, atol=1e-6)
for _k in sorted(_want["parameters"]):
    expect_close(_got["parameters"][_k], _want["parameters"][_k], f"{_k} after two steps at N = 1", rtol=1e-6, atol=1e-6)
### BEGIN HIDDEN TESTS
def _hidden():
    # fixed: N = 2 (the bias added on every rank, before the sum, gives N b; a missing
    # all-reduce leaves each rank a partial sum)
    seed = rng_for("A5.3", 0).randrange(10**6)
    want = a5_dense(seed)
    got = in_student_process(a5_tp_on_processes, None, guarded(row_parallel_linear, GRADED_REFERENCES), A5_WORKERS, seed)
    expect_equal(len(got["outputs"]), A5_WORKERS, "ranks that returned")
    for r in range(A5_WORKERS):
        expect_close(got["outputs"][r], want["outputs"], f"rank {r}'s outputs of two steps (N = {A5_WORKERS})", rtol=1e-6, atol=1e-6)
    expect_equal(sorted(got["parameters"]), sorted(want["parameters"]), "parameter names")
    for k in sorted(want["parameters"]):
        expect_close(got["parameters"][k], want["parameters"][k], f"{k} after two steps (N = {A5_WORKERS}) vs one process", rtol=1e-6, atol=1e-6)
hidden_test("A5.3", _hidden)
### END HIDDEN TESTS
''',
        ),
        md(
            "md-a5-4",
            """
## A5.4 Memory per device

Bytes one device holds of the three kinds of training state (no activations), for a model
of `num_params` parameters P on N data-parallel workers with ZeRO stage 0 (plain data
parallelism), 1, 2 or 3, each data-parallel replica split over T devices by tensor
parallelism (N x T devices in all). The ZeRO paper's arithmetic:

- weights and gradients take `w` bytes per element: 4 in `"fp32"`, 2 in `"mixed"`
  (bf16/fp16 compute);
- the optimizer takes **k_opt** bytes per parameter: 4 bytes per state tensor (SGD 0,
  `"momentum"` 1, `"adam"` 2), plus, in `"mixed"`, the fp32 master copy of the weights
  (4 more). Mixed-precision Adam: k_opt = 4 + 8 = 12, so 2 + 2 + 12 = 16 bytes per parameter;
- tensor parallelism: each device holds `P_T = ceil(P / T)` of the parameters;
- ZeRO (stages 1-3) flattens them into one vector zero-padded to a multiple of N: a rank
  owns a shard of `ceil(P_T / N)` elements, and a full copy on a rank is the padded vector,
  `N * ceil(P_T / N)` elements. Stage 1 shards the optimizer state, stage 2 also the
  gradients, stage 3 also the parameters; what is not sharded is a full copy. Stage 0
  holds `P_T` of everything (no padding).

Return `{"parameters": ..., "gradients": ..., "optimizer": ...}` in bytes (ints). Raise
`ValueError` for a `zero_stage` outside 0-3 or a `precision` other than `"fp32"` or `"mixed"`.
""",
        ),
        solution(
            "a5_4",
            '''
def bytes_per_device(num_params, num_workers, zero_stage, tp=1, optimizer="adam", precision="mixed"):
    """{"parameters", "gradients", "optimizer"}: bytes of training state on one device."""
    ### BEGIN SOLUTION
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    if precision not in ("fp32", "mixed"):
        raise ValueError(f"precision must be 'fp32' or 'mixed', got {precision!r}")
    w = 2 if precision == "mixed" else 4
    k_opt = (4 if precision == "mixed" else 0) + 4 * {"sgd": 0, "momentum": 1, "adam": 2}[optimizer]
    local = -(-num_params // tp)
    if zero_stage == 0:
        return {"parameters": local * w, "gradients": local * w, "optimizer": local * k_opt}
    shard = -(-local // num_workers)
    full = shard * num_workers
    params = shard if zero_stage >= 3 else full
    grads = shard if zero_stage >= 2 else full
    return {"parameters": params * w, "gradients": grads * w, "optimizer": shard * k_opt}
    ### END SOLUTION
    raise NotImplementedError("A5.4: bytes per device")
''',
        ),
        demo(
            "demo-a5-4",
            """
# 7B parameters, mixed-precision Adam, 8 devices: 16 bytes per parameter without sharding.
for _stage in range(4):
    _b = bytes_per_device(7_000_000_000, 8, _stage)
    print(f"ZeRO-{_stage}: {sum(_b.values()) / 1e9:6.1f} GB per device  {_b}")
""",
        ),
        test(
            "test_a5_4",
            2,
            '''
"""A5.4: bytes per device of parameters, gradients and optimizer state."""
_b = bytes_per_device(1000, 1, 0, 1, "sgd", "fp32")
expect(type(_b) is dict, "bytes_per_device must return a dict")
expect_equal([_b.get(_k) for _k in ("parameters", "gradients", "optimizer")], [4000, 4000, 0], "1,000 fp32 parameters, SGD: parameters, gradients, optimizer")
### BEGIN HIDDEN TESTS
def _hidden():
    # fixed: 7B mixed Adam, 16 bytes per parameter (k_opt = 8 differs); stage 2 with padding
    # (parameters sharded at stage 2, or no padding, differ); each stage, tensor parallelism
    cases = [
        (7_000_000_000, 8, 0, 1, "adam", "mixed"),
        (10, 4, 2, 1, "adam", "mixed"),
        (10, 4, 1, 1, "momentum", "fp32"),
        (1000, 2, 3, 2, "sgd", "fp32"),
        (7, 3, 0, 1, "adam", "fp32"),
        (9, 2, 3, 4, "sgd", "mixed"),
        (7_000_000_000, 64, 2, 8, "adam", "mixed"),
    ]
    for seed in range(4):
        rng = rng_for("A5.4", seed)
        cases.append((rng.randint(1, 10**9), rng.randint(1, 64), rng.randint(0, 3), rng.choice([1, 2, 4, 8]), rng.choice(["sgd", "momentum", "adam"]), rng.choice(["fp32", "mixed"])))
    for case in cases:
        with references_disabled(GRADED_REFERENCES):
            got = bytes_per_device(*case)
        expect(type(got) is dict, "bytes_per_device must return a dict")
        expect_equal(sorted(got), ["gradients", "optimizer", "parameters"], "its keys")
        want = a5_memory_reference(*case)
        P, N, stage, T, opt, prec = case
        for k in ("parameters", "gradients", "optimizer"):
            expect_equal(as_int(got[k], f"bytes of {k}"), want[k], f"{k} of bytes_per_device(num_params={P}, num_workers={N}, zero_stage={stage}, tp={T}, optimizer={opt!r}, precision={prec!r})")
    expect_raises("ValueError", bytes_per_device, 10, 2, 4)
    expect_raises("ValueError", bytes_per_device, 10, 2, 1, 1, "adam", "fp8")
hidden_test("A5.4", _hidden)
### END HIDDEN TESTS
''',
        ),
    ]
