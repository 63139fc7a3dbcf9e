"""Write the source notebooks of the five assignments (run: python assignments/build_sources.py).

The notebooks are generated from this readable file, so that they can be reviewed as code
and rebuilt exactly; ``tests/test_assignments.py`` checks that the committed
``source/<name>/<name>.ipynb`` equal what this script writes. The checks the test cells
import are :mod:`dlcourse.grading`, from the installed package (no copy travels with a notebook).

Cells carry nbgrader's metadata: a locked setup cell, a solution cell per task (its
solution between ``### BEGIN SOLUTION`` / ``### END SOLUTION``, followed by the task's own
``raise NotImplementedError("A2.3: ...")`` that the released stub keeps), and a locked,
graded test cell per task with its points, visible tests and hidden tests.
"""

# ruff: noqa: E501 - the notebooks' code is written out here as it reads in a notebook
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def _nbgrader(grade_id: str, *, grade=False, solution=False, locked=False, points=None) -> dict:
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def md(cell_id: str, text: str):
    return nbformat.v4.new_markdown_cell(text.strip("\n"), id=cell_id)


def setup(code: str):
    meta = {"deletable": False, "editable": False, **_nbgrader("setup", locked=True)}
    return nbformat.v4.new_code_cell(code.strip("\n"), id="setup", metadata=meta)


def solution(grade_id: str, code: str):
    return nbformat.v4.new_code_cell(
        code.strip("\n"), id=grade_id, metadata=_nbgrader(grade_id, solution=True)
    )


def test(grade_id: str, points: int, code: str):
    meta = {
        "deletable": False,
        "editable": False,
        **_nbgrader(grade_id, grade=True, locked=True, points=points),
    }
    return nbformat.v4.new_code_cell(code.strip("\n"), id=grade_id, metadata=meta)


def demo(cell_id: str, code: str):
    return nbformat.v4.new_code_cell(code.strip("\n"), id=cell_id)


def notebook(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    nb.cells = list(cells)
    return nb


HOW_TO = """
**How this works.** Write your code where it says `YOUR CODE HERE`, replacing the
`raise NotImplementedError(...)` line. Each task is followed by a test cell with a few
visible tests; run it to check your work. When grading, hidden tests also run: fixed cases
chosen to catch the usual mistakes, and random inputs drawn for you (the same at every
regrade of your work, different for every student); your functions also run inside the
library's real runtimes. Before submitting: *Kernel > Restart and Run All*, or
`nbgrader validate` on this file. Do not edit or delete the test cells: they are restored
from the instructor's copy and graded anyway. Your code must not call `dlcourse`'s own
version of the function you are writing: it is switched off while your code is graded.
"""

# =====================================================================================
# A1 data parallelism

A1 = [
    md(
        "intro",
        """
# A1: Data parallelism

Every worker holds a complete copy of the model and trains on its own slice of the data;
the workers' results are combined by **averaging** (Lecture: *Data Parallelism*,
*Parameter Averaging*). You will write the pieces: shard the data, all-reduce-average the
gradients, average the parameters, and check numerically when parameter averaging equals
training on one machine, and when it does not. Your collectives then run on real
processes through `dlcourse.launcher`.
"""
        + HOW_TO,
    ),
    setup(
        """
# Setup (locked): imports and the checks the tests use. Run this cell first.
import math
import random

import torch
import torch.distributed as dist

from dlcourse.grading import *

# dlcourse's own versions of what you write here: they raise while your code is graded
GRADED_REFERENCES = [
    "dlcourse.data:shard",
    "dlcourse.collectives:average_gradients",
    "dlcourse.collectives:average_parameters",
]
"""
    ),
    md(
        "md-a1-1",
        """
## A1.1 Shard the data

Cut the indices `0 .. num_examples - 1` into `num_workers` **equal, disjoint, contiguous**
shards: shard `n` holds `[n*m, (n+1)*m)` with `m = num_examples // num_workers`. The last
`num_examples % num_workers` examples are dropped, so that every worker processes the same
number of examples (one of the conditions of the lecture's equivalence). Raise `ValueError`
when `num_workers < 1` or `num_examples < num_workers`.
""",
    ),
    solution(
        "a1_1",
        '''
def shard_indices(num_examples, num_workers):
    """A list of num_workers lists of indices: equal, disjoint, contiguous; the remainder dropped."""
    ### BEGIN SOLUTION
    if num_workers < 1 or num_examples < num_workers:
        raise ValueError(f"need 1 <= num_workers <= num_examples, got {num_workers}, {num_examples}")
    m = num_examples // num_workers
    return [list(range(n * m, (n + 1) * m)) for n in range(num_workers)]
    ### END SOLUTION
    raise NotImplementedError("A1.1: shard the data")
''',
    ),
    test(
        "test_a1_1",
        2,
        '''
"""A1.1: shards are equal, disjoint, contiguous; the remainder is dropped."""
assert shard_indices(6, 3) == [[0, 1], [2, 3], [4, 5]]
assert shard_indices(7, 2) == [[0, 1, 2], [3, 4, 5]]
### BEGIN HIDDEN TESTS
def _hidden():
    # fixed: a remainder to drop (the last shard taking it, or ceil-sized shards, differ), one worker, one example each
    cases = [(10, 3), (7, 4), (9, 9), (5, 1), (11, 2)]
    for seed in range(4):
        rng = rng_for("A1.1", seed)
        n_workers = rng.randint(1, 9)
        cases.append((rng.randint(n_workers, 500), n_workers))
    for n, n_workers in cases:
        with references_disabled(GRADED_REFERENCES):
            got = shard_indices(n, n_workers)
        m = n // n_workers
        expect_equal(got, [list(range(k * m, (k + 1) * m)) for k in range(n_workers)], f"shard_indices({n}, {n_workers})")
    expect_raises("ValueError", shard_indices, 3, 4)
    expect_raises("ValueError", shard_indices, 5, 0)
hidden_test("A1.1", _hidden)
### END HIDDEN TESTS
''',
    ),
    md(
        "md-a1-2",
        """
## A1.2 All-reduce-average the gradients

Inside a worker process (a process group is running), replace every parameter's gradient
by its **mean over the N workers**: one `dist.all_reduce` (a sum) per gradient, then a
division by N. Skip parameters whose `.grad` is `None`. Work in place.
""",
    ),
    solution(
        "a1_2",
        '''
def average_gradients(model):
    """Every worker's p.grad becomes the mean of the N workers' p.grad (in place)."""
    ### BEGIN SOLUTION
    world_size = dist.get_world_size()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(world_size)
    return None
    ### END SOLUTION
    raise NotImplementedError("A1.2: all-reduce-average the gradients")
''',
    ),
    test(
        "test_a1_2",
        3,
        '''
"""A1.2: your average_gradients leaves every rank the mean gradient (1 process here, 3 when graded)."""
_shapes = [(3, 2), (4,)]
_grads = in_student_process(a1_in_one_process, guarded(average_gradients, GRADED_REFERENCES), 0, _shapes, "grad")
expect_close(_grads, a1_rank_gradients(0, 0, _shapes), "the mean of one worker's gradients is its own", rtol=1e-12)
### BEGIN HIDDEN TESTS
def _hidden():
    rng = rng_for("A1.2", 0)
    seed = rng.randrange(10**6)
    shapes = [(rng.randint(1, 5), rng.randint(1, 4)), (rng.randint(1, 6),), (2, 3)]  # every parameter, not the first only
    ranks = in_student_process(a1_gradients_on_processes, guarded(average_gradients, GRADED_REFERENCES), 3, seed, shapes)
    per_rank = [a1_rank_gradients(r, seed, shapes) for r in range(3)]
    want = [sum(g[i] for g in per_rank) / 3 for i in range(len(shapes))]
    expect_equal(len(ranks), 3, "ranks that returned")
    for r, grads in enumerate(ranks):
        expect_close(grads, want, f"rank {r}'s gradients (3 workers)", rtol=1e-9)
hidden_test("A1.2", _hidden)
### END HIDDEN TESTS
''',
    ),
    md(
        "md-a1-3",
        """
## A1.3 One round of parameter averaging

Step 4 of the lecture's procedure: set every worker's parameters to the **average of the
workers' parameters** (in place, inside a worker process). The test runs the library's
parameter-averaging runtime (`dlcourse.averaging.train_averaging`) on real processes with
*your* function as its averaging step, averaging after every mini-batch with plain SGD and
equal shards, and compares the result with training on one machine on the concatenated
batches: the lecture says they are equal.
""",
    ),
    solution(
        "a1_3",
        '''
def average_parameters(model):
    """Every worker's parameters become the mean of the N workers' parameters (in place)."""
    ### BEGIN SOLUTION
    world_size = dist.get_world_size()
    with torch.no_grad():
        for p in model.parameters():
            dist.all_reduce(p.data, op=dist.ReduceOp.SUM)
            p.data.div_(world_size)
    return None
    ### END SOLUTION
    raise NotImplementedError("A1.3: one round of parameter averaging")
''',
    ),
    test(
        "test_a1_3",
        3,
        '''
"""A1.3: averaging every step with your average_parameters equals single-machine SGD."""
_shapes = [(2, 3)]
_params = in_student_process(a1_in_one_process, guarded(average_parameters, GRADED_REFERENCES), 1, _shapes, "param")
expect_close(_params, [2 * g for g in a1_rank_gradients(0, 1, _shapes)], "one worker's average is its own parameters")
### BEGIN HIDDEN TESTS
def _hidden():
    seed = rng_for("A1.3", 0).randrange(1, 1000)
    got = in_student_process(a1_averaging_on_processes, guarded(average_parameters, GRADED_REFERENCES), 2, seed)
    want = a1_single_machine(2, seed)
    for k in want:
        expect_close(got[k], want[k], f"parameter {k} (seed {seed})", rtol=1e-7, atol=1e-9)
hidden_test("A1.3", _hidden)
### END HIDDEN TESTS
''',
    ),
    md(
        "md-a1-4",
        """
## A1.4 When does averaging equal single-machine SGD?

Take linear least squares, loss `mean((X w - y)^2) / 2`, whose gradient is
`X^T (X w - y) / n` (`least_squares_gradient(w, X, y)` computes it for you). Write one
round of parameter averaging with averaging period H (`average_every`): every worker starts
from `w`, takes H plain SGD steps (learning rate `lr`) on **its whole local batch**
`(Xs[n], ys[n])`, and the round returns the plain mean of the N workers' parameters (every
worker counts once, whatever its batch size). Inputs and output are lists of floats.

Then see the lecture's claim in numbers: with H = 1 and equal batch sizes the round equals
one SGD step on the concatenated batch; with H = 2 it does not.
""",
    ),
    solution(
        "a1_4",
        '''
def averaging_round(w, Xs, ys, lr, average_every):
    """Mean over workers of w after H = average_every SGD steps on each worker's (Xs[n], ys[n])."""
    ### BEGIN SOLUTION
    finals = []
    for X, y in zip(Xs, ys):
        v = list(w)
        for _ in range(average_every):
            g = least_squares_gradient(v, X, y)
            v = [a - lr * b for a, b in zip(v, g)]
        finals.append(v)
    return [sum(col) / len(finals) for col in zip(*finals)]
    ### END SOLUTION
    raise NotImplementedError("A1.4: a round of parameter averaging")
''',
    ),
    demo(
        "demo-a1-4",
        """
# See it: averaging once per step equals one SGD step on all the data; twice per round does not.
_rng = random.Random(0)
_Xs = [[[_rng.gauss(0, 1) for _ in range(3)] for _ in range(4)] for _ in range(2)]
_ys = [[_rng.gauss(0, 1) for _ in range(4)] for _ in range(2)]
_w = [0.5, -0.2, 0.1]
_sgd = [a - 0.1 * b for a, b in zip(_w, least_squares_gradient(_w, _Xs[0] + _Xs[1], _ys[0] + _ys[1]))]
for _steps in (1, 2):
    _gap = max(abs(a - b) for a, b in zip(averaging_round(_w, _Xs, _ys, 0.1, _steps), _sgd))
    print(f"H={_steps}: largest difference from single-machine SGD = {_gap:.2e}")
""",
    ),
    test(
        "test_a1_4",
        2,
        '''
"""A1.4: a round of parameter averaging; equal to single-machine SGD at H = 1 only."""
_w = averaging_round([1.0, 0.0], [[[1.0, 0.0]], [[0.0, 1.0]]], [[0.0], [1.0]], 0.5, 1)
expect_close(_w, [0.75, 0.25], "averaging_round, 2 workers, 1 step")
### BEGIN HIDDEN TESTS
def _reference_round(w, Xs, ys, lr, steps):
    finals = []
    for X, y in zip(Xs, ys):
        v = list(w)
        for _ in range(steps):
            v = [a - lr * b for a, b in zip(v, least_squares_gradient(v, X, y))]
        finals.append(v)
    return [sum(c) / len(finals) for c in zip(*finals)]
def _hidden():
    # fixed: unequal batch sizes (a mean weighted by batch size differs) and H = 3 (H ignored, or
    # averaged gradients applied H times, differ)
    Xs = [[[1.0, 2.0], [0.5, -1.0]], [[-1.0, 0.0]], [[0.0, 1.0], [2.0, 1.0], [1.0, -1.0]]]
    ys = [[1.0, 0.0], [2.0], [0.5, -0.5, 1.0]]
    for H in (1, 3):
        with references_disabled(GRADED_REFERENCES):
            got = averaging_round([0.2, -0.3], Xs, ys, 0.1, H)
        expect_close(got, _reference_round([0.2, -0.3], Xs, ys, 0.1, H), f"averaging_round, unequal batches, H={H}", rtol=1e-9, atol=1e-12)
    for seed in range(3):
        rng = rng_for("A1.4", seed)
        d, n, N = rng.randint(1, 4), rng.randint(2, 5), rng.randint(2, 4)
        Xs = [[[rng.gauss(0, 1) for _ in range(d)] for _ in range(n)] for _ in range(N)]
        ys = [[rng.gauss(0, 1) for _ in range(n)] for _ in range(N)]
        w = [rng.gauss(0, 1) for _ in range(d)]
        lr = rng.uniform(0.05, 0.3)
        with references_disabled(GRADED_REFERENCES):
            one = averaging_round(w, Xs, ys, lr, 1)
            two = averaging_round(w, Xs, ys, lr, 2)
        expect_close(one, _reference_round(w, Xs, ys, lr, 1), f"averaging_round, H=1 (seed {seed})", rtol=1e-9, atol=1e-12)
        expect_close(two, _reference_round(w, Xs, ys, lr, 2), f"averaging_round, H=2 (seed {seed})", rtol=1e-9, atol=1e-12)
        # the lecture's equivalence: one step on the concatenated batch
        big_X = [row for X in Xs for row in X]
        big_y = [v for y in ys for v in y]
        sgd = [a - lr * b for a, b in zip(w, least_squares_gradient(w, big_X, big_y))]
        expect_close(one, sgd, "H=1 equals single-machine SGD", rtol=1e-9, atol=1e-12)
hidden_test("A1.4", _hidden)
### END HIDDEN TESTS
''',
    ),
]

# =====================================================================================
# A2 staleness

A2 = [
    md(
        "intro",
        """
# A2: Stale gradients

In asynchronous SGD a worker's gradient arrives after the server has moved on: it is
**stale** (Lecture: *Stale Gradient Problem*). You will write the lecture's rules: the
staleness σ of an update, the staleness-scaled learning rate λ_n, the soft-sync
aggregator that waits for S updates, and the bounded-staleness gate. Each of your rules
then drives `dlcourse`'s simulated cluster (and the lr rule a real parameter server), and
the runs are compared number for number with the library's.
"""
        + HOW_TO,
    ),
    setup(
        """
# Setup (locked): imports and the checks the tests use. Run this cell first.
import math
import random

import torch

from dlcourse.grading import *

# dlcourse's own versions of what you write here: they raise while your code is graded
GRADED_REFERENCES = [
    "dlcourse.staleness:staleness",
    "dlcourse.staleness:staleness_lr",
    "dlcourse.staleness:apply_updates",
    "dlcourse.staleness:within_bound",
]
"""
    ),
    md(
        "md-a2-1",
        """
## A2.1 Staleness of an update

A worker pulled the parameters at server version `pulled_version`; its update reaches the
server at version `server_version`. Its staleness is σ = `server_version - pulled_version`:
the server versions applied between its pull and its push (Zhang et al. 2016 count the
update itself: theirs is σ + 1).
Raise `ValueError` when a version is negative or `pulled_version > server_version`.
""",
    ),
    solution(
        "a2_1",
        '''
def staleness(server_version, pulled_version):
    """sigma = server_version - pulled_version (ValueError if negative or pulled after now)."""
    ### BEGIN SOLUTION
    if server_version < 0 or pulled_version < 0 or pulled_version > server_version:
        raise ValueError(f"need 0 <= pulled_version <= server_version, got {pulled_version}, {server_version}")
    return server_version - pulled_version
    ### END SOLUTION
    raise NotImplementedError("A2.1: staleness of an update")
''',
    ),
    test(
        "test_a2_1",
        2,
        '''
"""A2.1: staleness of an update; the simulator and a real parameter server count staleness with your function."""
assert staleness(5, 5) == 0
assert staleness(7, 3) == 4
### BEGIN HIDDEN TESTS
def _hidden():
    # fixed: sigma 0, 1 and 7 (Zhang's count, sigma + 1, and pulled - server differ)
    for v, p in ((0, 0), (1, 0), (10, 3)):
        with references_disabled(GRADED_REFERENCES):
            got = staleness(v, p)
        expect_equal(as_int(got, f"staleness({v}, {p})"), v - p, f"staleness({v}, {p})")
    for seed in range(3):
        rng = rng_for("A2.1", seed)
        for _ in range(10):
            v = rng.randrange(0, 10 ** rng.randint(1, 6))
            p = rng.randint(0, v)
            with references_disabled(GRADED_REFERENCES):
                got = staleness(v, p)
            expect_equal(as_int(got, f"staleness({v}, {p})"), v - p, f"staleness({v}, {p})")
    expect_raises("ValueError", staleness, 3, 4)
    expect_raises("ValueError", staleness, -1, -2)
    expect_raises("ValueError", staleness, 2, -1)
    config = dict(policy="softsync", softsync=2, seed=rng_for("A2.1", 9).randrange(100))
    want = a2_simulate(**config)
    with references_disabled(["dlcourse.staleness:staleness"]):
        got = a2_simulate(staleness_fn=guarded(staleness, GRADED_REFERENCES), **config)
    expect_equal(got["staleness"], want["staleness"], "staleness of the simulated updates")
    expect_close(got["params"], want["params"], "final parameters of the simulation", rtol=1e-5, atol=1e-7)
    real = in_student_process(a2_async_parameter_server, staleness_fn=guarded(staleness, GRADED_REFERENCES))
    counted = [as_int(t, "staleness counted by the real server") for t in real["staleness"]]
    expect_equal(counted, [v - p for v, p in real["versions"]], "staleness of a real parameter server's updates")
hidden_test("A2.1", _hidden)
### END HIDDEN TESTS
''',
    ),
    md(
        "md-a2-2",
        """
## A2.2 Staleness-scaled learning rate

Scale each update's learning rate λ by its staleness σ (Zhang et al. 2016):
λ_n = `lr / max(1, sigma)`. Return a float. Your function is a learning-rate policy
`f(lr, sigma)` that `dlcourse`'s simulator and real parameter server accept
(`lr_policy=staleness_lr`).
""",
    ),
    solution(
        "a2_2",
        '''
def staleness_lr(lr, sigma):
    """lambda_n = lr / max(1, sigma)."""
    ### BEGIN SOLUTION
    return lr / max(1, sigma)
    ### END SOLUTION
    raise NotImplementedError("A2.2: staleness-scaled learning rate")
''',
    ),
    test(
        "test_a2_2",
        3,
        '''
"""A2.2: lambda_n = lr / max(1, sigma); it drives the simulator and a real parameter server."""
assert staleness_lr(0.1, 0) == 0.1
assert abs(staleness_lr(0.1, 4) - 0.025) < 1e-12
### BEGIN HIDDEN TESTS
def _hidden():
    # fixed: sigma 0 to 7 (lr / sigma, lr / (sigma + 1), lr / sigma**2, lr / sqrt(sigma) differ)
    cases = [(0.3, sigma) for sigma in (0, 1, 2, 4, 7)]
    for seed in range(3):
        rng = rng_for("A2.2", seed)
        cases += [(rng.uniform(1e-4, 2.0), rng.randint(0, 64)) for _ in range(10)]
    for lr, sigma in cases:
        with references_disabled(GRADED_REFERENCES):
            got = staleness_lr(lr, sigma)
        expect_close(as_float(got, "staleness_lr"), lr / max(1, sigma), f"staleness_lr({lr}, {sigma})", rtol=1e-12)
    config = dict(policy="async", seed=rng_for("A2.2", 9).randrange(100))
    want = a2_simulate(lr_policy="staleness", **config)
    with references_disabled(["dlcourse.staleness:staleness_lr"]):
        got = a2_simulate(lr_policy=staleness_lr, **config)
    expect_equal(got["staleness"], want["staleness"], "staleness of the simulated updates")
    expect_close(got["params"], want["params"], "simulated parameters with your lr rule", rtol=1e-5, atol=1e-7)
    got = in_student_process(a2_parameter_server, guarded(staleness_lr, GRADED_REFERENCES))
    want = a2_parameter_server_reference(lambda lr, sigma: lr / max(1, sigma))
    expect_close(got, want, "parameters of the real parameter server with your lr rule", rtol=1e-4, atol=1e-6)
hidden_test("A2.2", _hidden)
### END HIDDEN TESTS
''',
    ),
    md(
        "md-a2-3",
        """
## A2.3 Soft-sync aggregator

The server waits for S updates ΔW_n (`updates[n]`, each a list of tensors, one per
parameter), then applies their **mean** scaled by each one's learning rate λ_n (`lrs[n]`):
W ← W − (1/S) Σ_n λ_n ΔW_n. Return the new parameters as a new list of tensors (leave the
inputs unchanged). With S = N and equal λ_n this is synchronous SGD; with S = 1 it is plain
async SGD.
""",
    ),
    solution(
        "a2_3",
        '''
def soft_sync(params, updates, lrs):
    """New parameters W - (1/S) sum_n lrs[n] * updates[n], S = len(updates); inputs unchanged."""
    ### BEGIN SOLUTION
    S = len(updates)
    new = []
    for i, w in enumerate(params):
        step = sum(lam * u[i] for u, lam in zip(updates, lrs))
        new.append(w - step / S)
    return new
    ### END SOLUTION
    raise NotImplementedError("A2.3: soft-sync aggregator")
''',
    ),
    test(
        "test_a2_3",
        3,
        '''
"""A2.3: the soft-sync aggregator; it applies the soft-sync steps of the simulator and of a real parameter server."""
_new = soft_sync([torch.tensor([1.0, 2.0])], [[torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 2.0])]], [0.5, 0.5])
expect_close(_new, [0.75, 1.5], "soft_sync of 2 updates")
### BEGIN HIDDEN TESTS
def _hidden():
    # fixed: S = 3 updates with unequal rates, 2 parameters (a sum, one rate for all, the mean
    # rate times the mean update, a division by the number of parameters all differ)
    params = [torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([[0.5, 0.0], [1.0, 3.0]], dtype=torch.float64)]
    updates = [[torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 2.0], [0.0, -1.0]])], [torch.tensor([0.0, 4.0]), torch.tensor([[0.0, 1.0], [2.0, 0.0]])], [torch.tensor([-2.0, 1.0]), torch.tensor([[3.0, 0.0], [1.0, 1.0]])]]
    updates = [[u.double() for u in update] for update in updates]
    lrs = [0.1, 0.5, 1.0]
    with references_disabled(GRADED_REFERENCES):
        got = soft_sync([p.clone() for p in params], updates, lrs)
    want = [w - sum(l * u[i] for u, l in zip(updates, lrs)) / 3 for i, w in enumerate(params)]
    expect_equal(len(got), 2, "number of parameter tensors")
    for i in range(2):
        expect_close(got[i], want[i], f"parameter {i} (S=3, unequal rates)", rtol=1e-9, atol=1e-12)
    for seed in range(4):
        rng = rng_for("A2.3", seed)
        g = torch.Generator().manual_seed(rng.randrange(10**6))
        shapes = [tuple(rng.randint(1, 4) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 3))]
        S = rng.randint(1, 5)
        params = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
        updates = [[torch.randn(s, generator=g, dtype=torch.float64) for s in shapes] for _ in range(S)]
        lrs = [rng.uniform(0.01, 1.0) for _ in range(S)]
        before = [p.clone() for p in params]
        with references_disabled(GRADED_REFERENCES):
            got = soft_sync(params, updates, lrs)
        want = [w - sum(l * u[i] for u, l in zip(updates, lrs)) / S for i, w in enumerate(before)]
        expect_equal(len(got), len(want), "number of parameter tensors")
        for i, (a, b) in enumerate(zip(got, want)):
            expect_equal(list(a.shape), list(b.shape), f"shape of parameter {i}")
            expect_close(a, b, f"parameter {i} (S={S}, seed {seed})", rtol=1e-9, atol=1e-12)
        expect_close(params, before, "the inputs must be left unchanged", rtol=0, atol=0)
    config = dict(policy="softsync", softsync=2, seed=rng_for("A2.3", 9).randrange(100))
    want = a2_simulate(**config)
    with references_disabled(["dlcourse.staleness:apply_updates"]):
        got = a2_simulate(aggregate=guarded(soft_sync, GRADED_REFERENCES), **config)
    expect_equal(got["staleness"], want["staleness"], "staleness of the simulated updates")
    expect_close(got["params"], want["params"], "simulated parameters with your soft sync", rtol=1e-5, atol=1e-7)
    got = in_student_process(a2_parameter_server, aggregate=guarded(soft_sync, GRADED_REFERENCES))
    want = a2_parameter_server_reference(lambda lr, sigma: lr)
    expect_close(got, want, "parameters of the real parameter server with your soft sync", rtol=1e-4, atol=1e-6)
hidden_test("A2.3", _hidden)
### END HIDDEN TESTS
''',
    ),
    md(
        "md-a2-4",
        """
## A2.4 Bounded-staleness gate

`clocks[n]` counts the steps worker n has finished. Worker `worker` may start its next
step only while it is at most `bound` steps ahead of the slowest:
`clocks[worker] - min(clocks) <= bound`. `bound=None` never blocks. Return a `bool`.
""",
    ),
    solution(
        "a2_4",
        '''
def may_start(clocks, worker, bound):
    """True when worker may start its next step under the staleness bound (None: always)."""
    ### BEGIN SOLUTION
    if bound is None:
        return True
    return clocks[worker] - min(clocks) <= bound
    ### END SOLUTION
    raise NotImplementedError("A2.4: bounded-staleness gate")
''',
    ),
    test(
        "test_a2_4",
        2,
        '''
"""A2.4: the bounded-staleness gate; it holds back the fast workers of the simulator and of a real parameter server."""
assert may_start([3, 1, 2], 0, 2) is True
assert may_start([4, 1, 2], 0, 2) is False
assert may_start([9, 0], 0, None) is True
### BEGIN HIDDEN TESTS
def _hidden():
    # fixed: a lag equal to the bound (< instead of <=), bound 0 (treated as None), the slowest
    # not worker 0 (clocks[0] instead of min), max instead of min, None with a large lag
    cases = [([3, 1, 2], 0, 2), ([4, 1, 2], 0, 2), ([1, 0], 0, 0), ([0, 0], 1, 0), ([3, 1, 4], 2, 2), ([2, 5, 6], 2, 3), ([9, 0], 0, None)]
    for seed in range(3):
        rng = rng_for("A2.4", seed)
        for _ in range(15):
            clocks = [rng.randint(0, 12) for _ in range(rng.randint(1, 8))]
            cases.append((clocks, rng.randrange(len(clocks)), rng.choice([None, 0, 1, 2, 3, 5])))
    for clocks, worker, bound in cases:
        with references_disabled(GRADED_REFERENCES):
            got = may_start(list(clocks), worker, bound)
        want = bound is None or clocks[worker] - min(clocks) <= bound
        expect(type(got) is bool, f"may_start must return a bool, got {type(got).__name__}")
        expect_equal(got, want, f"may_start({clocks}, {worker}, {bound})")
    config = dict(policy="bounded", staleness_bound=1, worker_speeds=(1.0, 1.0, 2.0, 4.0), seed=rng_for("A2.4", 9).randrange(100))
    want = a2_simulate(**config)
    with references_disabled(["dlcourse.staleness:within_bound"]):
        got = a2_simulate(gate=guarded(may_start, GRADED_REFERENCES), **config)
    expect_equal(got["staleness"], want["staleness"], "staleness of the simulated updates")
    expect_close(got["params"], want["params"], "simulated parameters with your gate", rtol=1e-5, atol=1e-7)
    real = in_student_process(a2_async_parameter_server, gate=guarded(may_start, GRADED_REFERENCES))
    # bound 0, N = 3: every update applied at clock lag 0, and sigma <= (2 * 0 + 1) * (3 - 1)
    expect_equal(max(real["clock_lag"]), 0, "largest clock lag of a real run with bound 0")
    expect(max(v - p for v, p in real["versions"]) <= 2, "a real run with bound 0 let an update be more than 2 versions stale")
hidden_test("A2.4", _hidden)
### END HIDDEN TESTS
''',
    ),
]

# =====================================================================================
# A3 compression

A3 = [
    md(
        "intro",
        """
# A3: Compressed updates

In decentralized asynchronous SGD the workers send each other their updates, heavily
compressed (Lecture: *Compressed/Quantized Update Vector*, *Residual Vector*; Strom 2015):
only the elements at or above a threshold `tau` travel, each as one bit for `+tau` or
`-tau`; their positions are sent as entropy-coded gaps; what is not sent stays in a
residual and is sent later, delayed but not lost. You will write the quantizer, the
residual step, a gap coder for the indexes and its decoder; your quantizer then compresses
the updates of a real decentralized run.
"""
        + HOW_TO,
    ),
    setup(
        """
# Setup (locked): imports and the checks the tests use. Run this cell first.
import math
import random

import torch

from dlcourse.grading import *

# dlcourse's own versions of what you write here: they raise while your code is graded
GRADED_REFERENCES = [
    "dlcourse.compression:quantize",
    "dlcourse.compression:residual_step",
    "dlcourse.compression:sparsify",
]
"""
    ),
    md(
        "md-a3-1",
        """
## A3.1 One-bit quantizer

`quantize(r, tau)`: a tensor of `r`'s shape and dtype holding `+tau` where `r >= tau`,
`-tau` where `r <= -tau`, and 0 elsewhere.
""",
    ),
    solution(
        "a3_1",
        '''
def quantize(r, tau):
    """sign(r) * tau where |r| >= tau, else 0 (same shape and dtype as r)."""
    ### BEGIN SOLUTION
    tau_t = torch.tensor(tau, dtype=r.dtype)
    return torch.where(r.abs() >= tau_t, torch.sign(r) * tau_t, torch.zeros((), dtype=r.dtype))
    ### END SOLUTION
    raise NotImplementedError("A3.1: one-bit quantizer")
''',
    ),
    test(
        "test_a3_1",
        2,
        '''
"""A3.1: the 1-bit +-tau quantizer."""
expect_close(quantize(torch.tensor([0.3, -0.05, -0.2, 0.1]), 0.1), [0.1, 0.0, -0.1, 0.1], "quantize")
### BEGIN HIDDEN TESTS
def _hidden():
    # fixed: values exactly +-tau (a strict > differs), beyond and below it, in both dtypes
    cases = [(torch.tensor([0.5, -0.5, 0.25, -0.75, 0.0, 1.5], dtype=dtype), 0.5, "exact") for dtype in (torch.float64, torch.float32)]
    for seed in range(4):
        rng = rng_for("A3.1", seed)
        g = torch.Generator().manual_seed(rng.randrange(10**6))
        dtype = rng.choice([torch.float32, torch.float64])
        cases.append((torch.randn(tuple(rng.randint(1, 6) for _ in range(rng.randint(1, 3))), generator=g, dtype=dtype), rng.uniform(0.05, 1.5), seed))
    for r, tau, seed in cases:
        dtype = r.dtype
        with references_disabled(GRADED_REFERENCES):
            got = quantize(r.clone(), tau)
        expect(type(got) is torch.Tensor, f"quantize must return a tensor, got {type(got).__name__}")
        expect_equal(list(got.shape), list(r.shape), "shape")
        expect_equal(str(got.dtype), str(r.dtype), "dtype")
        t = torch.tensor(tau, dtype=dtype)
        want = torch.where(r.abs() >= t, torch.sign(r) * t, torch.zeros((), dtype=dtype))
        expect_close(got, want, f"quantize (tau={tau:.3f}, seed {seed})", rtol=0, atol=0)
hidden_test("A3.1", _hidden)
### END HIDDEN TESTS
''',
    ),
    md(
        "md-a3-2",
        """
## A3.2 The residual step

One step of the scheme on worker n: add the new `update` to the residual, send what the
quantizer gives for it, keep the rest: `r = residual + update; sent = quantize(r, tau);
new_residual = r - sent`. Return `(sent, new_residual)` as new tensors. Conservation: over
any number of steps, `sum(sent) + final residual == sum(updates)`.
""",
    ),
    solution(
        "a3_2",
        '''
def residual_step(residual, update, tau):
    """(sent, new_residual): r = residual + update; sent = quantize(r, tau); new_residual = r - sent."""
    ### BEGIN SOLUTION
    r = residual + update
    sent = quantize(r, tau)
    return sent, r - sent
    ### END SOLUTION
    raise NotImplementedError("A3.2: the residual step")
''',
    ),
    test(
        "test_a3_2",
        3,
        '''
"""A3.2: the residual step: delayed, not lost (conservation over many steps)."""
_sent, _res = residual_step(torch.tensor([0.05, 0.0]), torch.tensor([0.06, -0.02]), 0.1)
expect_close(_sent, [0.1, 0.0], "sent")
expect_close(_res, [0.01, -0.02], "residual", atol=1e-7)
### BEGIN HIDDEN TESTS
def _hidden():
    # fixed: three steps where the residual carries an element over the threshold (dropping the
    # residual, keeping r instead of r - sent, or quantizing the update alone all differ)
    fixed = [torch.tensor(u, dtype=torch.float64) for u in ([0.3, -0.2, 0.6], [0.3, -0.4, 0.0], [0.0, 0.0, 0.0])]
    for seed in ["fixed", 0, 1, 2]:
        rng = rng_for("A3.2", seed)
        g = torch.Generator().manual_seed(rng.randrange(10**6))
        n, steps, tau = rng.randint(1, 40), rng.randint(2, 12), rng.uniform(0.2, 1.0)
        if seed == "fixed":
            n, steps, tau = 3, 3, 0.5
        residual = torch.zeros(n, dtype=torch.float64)
        total_sent = torch.zeros(n, dtype=torch.float64)
        total_update = torch.zeros(n, dtype=torch.float64)
        ref_residual = torch.zeros(n, dtype=torch.float64)
        for _ in range(steps):
            update = fixed.pop(0) if seed == "fixed" else torch.randn(n, generator=g, dtype=torch.float64) * 0.4
            with references_disabled(GRADED_REFERENCES):
                out = residual_step(residual.clone(), update.clone(), tau)
            expect(type(out) in (tuple, list) and len(out) == 2, "residual_step must return (sent, new_residual)")
            sent, residual = out
            expect(type(sent) is torch.Tensor and type(residual) is torch.Tensor, "sent and residual must be tensors")
            r = ref_residual + update
            t = torch.tensor(tau, dtype=torch.float64)
            want_sent = torch.where(r.abs() >= t, torch.sign(r) * t, torch.zeros((), dtype=torch.float64))
            ref_residual = r - want_sent
            expect_close(sent, want_sent, f"sent (seed {seed})", rtol=0, atol=1e-12)
            expect_close(residual, ref_residual, f"residual (seed {seed})", rtol=1e-9, atol=1e-12)
            total_sent += sent
            total_update += update
        expect_close(total_sent + residual, total_update, "conservation: sum(sent) + residual == sum(updates)", rtol=1e-9, atol=1e-9)
hidden_test("A3.2", _hidden)
### END HIDDEN TESTS
''',
    ),
    md(
        "md-a3-3",
        """
## A3.3 A gap coder for the indexes, and its decoder

The sent positions are sparse and cluster, so send the **gaps** between consecutive sorted
indexes (the first counted from -1, so every gap is `>= 1`), each coded with
**Elias gamma**: `floor(log2 g)` zeros, then `g` in binary. For indexes `[0, 1, 5]` the gaps
are `[1, 1, 4]` and the bits `"1" + "1" + "00100"`. `gap_encode(indices)` returns that bit
string (a `str` of `"0"`/`"1"`); `gap_decode(bits)` returns the list of indexes.
""",
    ),
    solution(
        "a3_3",
        '''
def gap_encode(indices):
    """Elias-gamma bit string of the gaps between sorted distinct indexes (first gap from -1)."""
    ### BEGIN SOLUTION
    bits, previous = [], -1
    for i in indices:
        g = i - previous
        if g < 1:
            raise ValueError("indices must be strictly increasing and >= 0")
        bits.append("0" * (g.bit_length() - 1) + format(g, "b"))
        previous = i
    return "".join(bits)
    ### END SOLUTION
    raise NotImplementedError("A3.3: gap coder")


def gap_decode(bits):
    """The indexes that gap_encode turned into bits."""
    ### BEGIN SOLUTION
    indices, pos, previous = [], 0, -1
    while pos < len(bits):
        zeros = 0
        while bits[pos + zeros] == "0":
            zeros += 1
        g = int(bits[pos + zeros : pos + 2 * zeros + 1], 2)
        pos += 2 * zeros + 1
        previous += g
        indices.append(previous)
    return indices
    ### END SOLUTION
    raise NotImplementedError("A3.3: gap decoder")
''',
    ),
    test(
        "test_a3_3",
        3,
        '''
"""A3.3: the Elias-gamma gap coder and its decoder (round trip, exact bits)."""
assert gap_encode([0, 1, 5]) == "1" + "1" + "00100"
assert gap_decode("1" + "1" + "00100") == [0, 1, 5]
### BEGIN HIDDEN TESTS
def _hidden():
    # fixed: index 0 alone (gap 1), a first index > 0, gaps of 1, 2, 7 and a power of two (1024)
    cases = [[0], [3], [0, 2, 3, 10, 1034]]
    for seed in range(4):
        rng = rng_for("A3.3", seed)
        n = rng.randint(1, 3000)
        density = rng.choice([0.01, 0.05, 0.3])
        cases.append(sorted(rng.sample(range(n), max(1, int(n * density)))))
    for seed, idx in enumerate(cases):
        with references_disabled(GRADED_REFERENCES):
            bits = gap_encode(list(idx))
        gaps = [b - a for a, b in zip([-1] + idx[:-1], idx)]
        expect(type(bits) is str, f"gap_encode must return a str, got {type(bits).__name__}")
        expect_equal(bits, elias_gamma_bits(gaps), f"bits of {len(idx)} indexes (seed {seed})")
        with references_disabled(GRADED_REFERENCES):
            back = gap_decode(elias_gamma_bits(gaps))
        expect_equal(back, idx, f"decoded indexes (seed {seed})")
hidden_test("A3.3", _hidden)
### END HIDDEN TESTS
''',
    ),
    md(
        "md-a3-4",
        """
## A3.4 Bits per index against the entropy

How good is the coder? Compare its **bits per index** with the **empirical entropy of the
gaps** (`-sum p log2 p` over the distinct gap values, in bits per gap): a coder that knew
the gaps' distribution could not do better on average. `coding_report(indices)` returns
`(bits_per_index, entropy_bits_per_gap)` as two floats, using your `gap_encode`.
""",
    ),
    solution(
        "a3_4",
        '''
def coding_report(indices):
    """(bits per index of gap_encode, empirical entropy of the gaps in bits per gap)."""
    ### BEGIN SOLUTION
    gaps = [b - a for a, b in zip([-1] + list(indices[:-1]), indices)]
    counts = {}
    for g in gaps:
        counts[g] = counts.get(g, 0) + 1
    entropy = -sum(c / len(gaps) * math.log2(c / len(gaps)) for c in counts.values())
    return len(gap_encode(indices)) / len(indices), float(entropy)
    ### END SOLUTION
    raise NotImplementedError("A3.4: bits per index vs the entropy")
''',
    ),
    demo(
        "demo-a3-4",
        """
# Clustered positions (many gaps of 1) code well below a plain 32-bit index.
_rng = random.Random(1)
_idx = sorted({_rng.randrange(2000) // 3 * 3 + _rng.randrange(2) for _ in range(300)})
print("bits per index, entropy of the gaps:", coding_report(_idx))
""",
    ),
    test(
        "test_a3_4",
        2,
        '''
"""A3.4: bits per index of your coder and the entropy of the gaps."""
_bits, _h = coding_report([0, 1, 2, 3])
expect_close([_bits, _h], [1.0, 0.0], "coding_report of 4 consecutive indexes")
### BEGIN HIDDEN TESTS
def _hidden():
    # fixed: gaps 1, 1, 1, 3, 1, 4 (entropy > 0: nats differ; not uniform: log2 of the distinct gaps differs)
    cases = [[0, 1, 2, 5, 6, 10]]
    for seed in range(3):
        rng = rng_for("A3.4", seed)
        cases.append(sorted(rng.sample(range(5000), rng.randint(2, 400))))
    for idx in cases:
        gaps = [b - a for a, b in zip([-1] + idx[:-1], idx)]
        counts = {}
        for g in gaps:
            counts[g] = counts.get(g, 0) + 1
        h = -sum(c / len(gaps) * math.log2(c / len(gaps)) for c in counts.values())
        with references_disabled(GRADED_REFERENCES):
            got = coding_report(list(idx))
        expect(type(got) in (tuple, list) and len(got) == 2, "coding_report must return two numbers")
        expect_close(as_float(got[0], "bits per index"), len(elias_gamma_bits(gaps)) / len(idx), "bits per index", rtol=1e-9)
        expect_close(as_float(got[1], "entropy"), h, "entropy of the gaps", rtol=1e-9, atol=1e-12)
hidden_test("A3.4", _hidden)
### END HIDDEN TESTS
''',
    ),
    md(
        "md-a3-5",
        """
## A3.5 Your compressor in a decentralized run

Nothing to write: this test trains with `dlcourse.decentralized` on a real worker process
whose compressor runs **your** `residual_step` (which calls your `quantize`):
`DecentralizedConfig(residual_fn=residual_step)`. It compares the run with the library's
own: the same elements sent, the same model.
""",
    ),
    test(
        "test_a3_5",
        2,
        '''
"""A3.5: your quantizer and residual step compress the updates of a real decentralized run like the library's."""
expect_close(quantize(torch.tensor([0.02, -0.001]), 0.01), [0.01, 0.0], "quantize, as the run calls it")
### BEGIN HIDDEN TESTS
def _hidden():
    rng = rng_for("A3.5", 0)
    tau, seed = rng.choice([0.002, 0.005, 0.01]), rng.randrange(100)
    got = in_student_process(a3_decentralized, guarded(residual_step, GRADED_REFERENCES), tau, seed)
    want = a3_decentralized(None, tau, seed)
    expect_equal(got["elements_sent"], want["elements_sent"], "elements sent")
    expect_close(got["test_loss"], want["test_loss"], "test loss of the trained model", rtol=1e-6)
hidden_test("A3.5", _hidden)
### END HIDDEN TESTS
''',
    ),
]

# =====================================================================================
# A4 pipelines

A4 = [
    md(
        "intro",
        """
# A4: Pipelines

Model parallelism puts each part of the network on its own machine (Lecture: *Model
Parallelism*). Alone, it leaves all but one stage idle; cutting the batch into
micro-batches keeps the stages busy (GPipe; 1F1B). You will cut a model into stages, write
the GPipe and 1F1B schedules as ordered lists of `(stage, micro_batch, "F" or "B")` steps,
and compute the bubble. Your schedules then run on real processes
(`dlcourse.pipeline.run_pipeline(..., schedule=your_steps)`), and the gradients are
compared with plain autograd.
"""
        + HOW_TO,
    ),
    setup(
        """
# Setup (locked): imports and the checks the tests use. Run this cell first.
import math
import random

import torch

from dlcourse.grading import *

# dlcourse's own versions of what you write here: they raise while your code is graded
GRADED_REFERENCES = [
    "dlcourse.model_parallel:stage_bounds",
    "dlcourse.pipeline:schedule_order",
    "dlcourse.pipeline:schedule_steps",
    "dlcourse.pipeline:simulate_schedule",
    "dlcourse.pipeline:gpipe_bubble",
]


def stage_order_of(steps, stage):
    return [(kind, m) for s, m, kind in steps if s == stage]


def respects_dependencies(steps, num_stages):
    # F(k, m) after F(k-1, m); B(k, m) after B(k+1, m) and after F(k, m)
    done = set()
    for stage, m, kind in steps:
        needs = []
        if kind == "F" and stage > 0:
            needs.append((stage - 1, m, "F"))
        if kind == "B":
            needs.append((stage, m, "F"))
            if stage < num_stages - 1:
                needs.append((stage + 1, m, "B"))
        if any(n not in done for n in needs):
            return False
        done.add((stage, m, kind))
    return True
"""
    ),
    md(
        "md-a4-1",
        """
## A4.1 Cut the model into stages

Cut `num_layers` consecutive layers into `num_stages` contiguous stages, as `[start, stop)`
pairs. Stage sizes differ by at most one layer; the earlier stages get the extra layers.
Raise `ValueError` when `num_stages > num_layers` or `num_stages < 1`.
""",
    ),
    solution(
        "a4_1",
        '''
def cut_into_stages(num_layers, num_stages):
    """[(start, stop), ...] for each stage: contiguous, sizes differ by <= 1, earlier ones larger."""
    ### BEGIN SOLUTION
    if num_stages < 1 or num_stages > num_layers:
        raise ValueError(f"need 1 <= num_stages <= num_layers, got {num_stages}, {num_layers}")
    size, extra = divmod(num_layers, num_stages)
    bounds, start = [], 0
    for k in range(num_stages):
        stop = start + size + (1 if k < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds
    ### END SOLUTION
    raise NotImplementedError("A4.1: cut the model into stages")
''',
    ),
    test(
        "test_a4_1",
        2,
        '''
"""A4.1: contiguous stages whose sizes differ by at most one, the earlier ones larger."""
expect_equal(cut_into_stages(5, 2), [(0, 3), (3, 5)], "cut_into_stages(5, 2)")
### BEGIN HIDDEN TESTS
def _hidden():
    # fixed: remainders 1 and 2 (ceil(L/K)-sized stages with the last taking the rest, floor-sized
    # ones, and the later stages getting the extra layers all differ), K = L, K = 1
    cases = [(7, 3), (10, 4), (11, 4), (4, 4), (9, 1)]
    for seed in range(4):
        rng = rng_for("A4.1", seed)
        layers = rng.randint(1, 40)
        cases.append((layers, rng.randint(1, layers)))
    for layers, stages in cases:
        with references_disabled(GRADED_REFERENCES):
            got = cut_into_stages(layers, stages)
        size, extra = divmod(layers, stages)
        want, start = [], 0
        for k in range(stages):
            want.append([start, start + size + (1 if k < extra else 0)])
            start = want[-1][1]
        expect_equal(got, want, f"cut_into_stages({layers}, {stages})")
    expect_raises("ValueError", cut_into_stages, 2, 3)
    expect_raises("ValueError", cut_into_stages, 3, 0)
hidden_test("A4.1", _hidden)
### END HIDDEN TESTS
''',
    ),
    md(
        "md-a4-2",
        """
## A4.2 The GPipe schedule

A schedule is the ordered list of steps `(stage, micro_batch, "F" or "B")` the pipeline
runs. In GPipe each stage runs all M forwards, then all M backwards (micro-batches in
order). A forward of micro-batch m on stage k needs stage k-1's forward of m; a backward
needs stage k+1's backward of m. Return the steps in the order they **start** when each
starts as soon as it can (ties: lower stage first), where a forward takes 1 time unit and a backward 2. With K = 2, M = 2: `(0,0,F) (0,1,F) (1,0,F) (1,1,F) (1,0,B) (0,0,B) (1,1,B) (0,1,B)`
""",
    ),
    solution(
        "a4_2",
        '''
def _timeline(orders, num_stages):
    """Each stage's ordered (kind, m) steps on a clock (F takes 1, B 2); all steps sorted by start."""
    ### BEGIN SOLUTION
    done, free, nxt, starts = {}, [0] * num_stages, [0] * num_stages, []
    while any(nxt[k] < len(orders[k]) for k in range(num_stages)):
        for k in range(num_stages):
            if nxt[k] == len(orders[k]):
                continue
            kind, m = orders[k][nxt[k]]
            needs = (k - 1, m, "F") if kind == "F" else (k + 1, m, "B")
            first = (kind == "F" and k == 0) or (kind == "B" and k == num_stages - 1)
            if not first and needs not in done:
                continue
            start = max(free[k], 0 if first else done[needs])
            done[(k, m, kind)] = free[k] = start + (1 if kind == "F" else 2)
            starts.append((start, k, m, kind))
            nxt[k] += 1
    return [(k, m, kind) for _, k, m, kind in sorted(starts)]
    ### END SOLUTION
    raise NotImplementedError("A4.2: a helper that orders the steps by their start (optional)")


def gpipe_schedule(num_stages, num_microbatches):
    """GPipe: every stage runs all forwards, then all backwards; steps in order of start."""
    ### BEGIN SOLUTION
    M = num_microbatches
    order = [("F", m) for m in range(M)] + [("B", m) for m in range(M)]
    return _timeline([order] * num_stages, num_stages)
    ### END SOLUTION
    raise NotImplementedError("A4.2: the GPipe schedule")
''',
    ),
    test(
        "test_a4_2",
        3,
        '''
"""A4.2: the GPipe schedule as an ordered list of (stage, micro-batch, F/B) steps."""
_steps = gpipe_schedule(2, 2)
expect_equal(_steps, [(0, 0, "F"), (0, 1, "F"), (1, 0, "F"), (1, 1, "F"), (1, 0, "B"), (0, 0, "B"), (1, 1, "B"), (0, 1, "B")], "gpipe_schedule(2, 2)")
### BEGIN HIDDEN TESTS
def _hidden():
    from dlcourse.pipeline import schedule_steps
    # fixed: K < M, K > M, one stage, one micro-batch (backwards in reverse, stage by stage
    # instead of by start, ties to the later stage all differ)
    cases = [(3, 4), (4, 2), (1, 3), (2, 1)]
    for seed in range(4):
        rng = rng_for("A4.2", seed)
        cases.append((rng.randint(1, 5), rng.randint(1, 8)))
    for K, M in cases:
        with references_disabled(GRADED_REFERENCES):
            got = gpipe_schedule(K, M)
        want = schedule_steps("gpipe", K, M)
        expect(type(got) is list, "gpipe_schedule must return a list")
        expect_equal(sorted(map(list, got)), sorted(map(list, want)), f"the steps of GPipe (K={K}, M={M})")
        for k in range(K):
            expect_equal(stage_order_of(got, k), stage_order_of(want, k), f"stage {k}'s order (K={K}, M={M})")
        expect(respects_dependencies([tuple(s) for s in got], K), f"the order must respect the dependencies (K={K}, M={M})")
        expect_equal(got, want, f"gpipe_schedule({K}, {M})")
hidden_test("A4.2", _hidden)
### END HIDDEN TESTS
''',
    ),
    md(
        "md-a4-3",
        """
## A4.3 The 1F1B schedule

1F1B (PipeDream-Flush) keeps fewer micro-batches' activations: stage k first runs
`min(K - 1 - k, M)` warm-up forwards, then alternates one forward and one backward, then
runs the remaining backwards. Return its steps in order of start, as in A4.2 (you may reuse
the helper you wrote there).
""",
    ),
    solution(
        "a4_3",
        '''
def one_f_one_b_schedule(num_stages, num_microbatches):
    """1F1B: warm-up forwards, then one forward / one backward in turn, then the rest."""
    ### BEGIN SOLUTION
    M, orders = num_microbatches, []
    for k in range(num_stages):
        warmup = min(num_stages - 1 - k, M)
        order = [("F", m) for m in range(warmup)]
        for m in range(M - warmup):
            order += [("F", warmup + m), ("B", m)]
        orders.append(order + [("B", m) for m in range(M - warmup, M)])
    return _timeline(orders, num_stages)
    ### END SOLUTION
    raise NotImplementedError("A4.3: the 1F1B schedule")
''',
    ),
    test(
        "test_a4_3",
        3,
        '''
"""A4.3: the 1F1B schedule as an ordered list of steps."""
_steps = one_f_one_b_schedule(2, 2)
expect_equal(stage_order_of(_steps, 0), [("F", 0), ("F", 1), ("B", 0), ("B", 1)], "stage 0 of 1F1B(2, 2)")
expect_equal(stage_order_of(_steps, 1), [("F", 0), ("B", 0), ("F", 1), ("B", 1)], "stage 1 of 1F1B(2, 2)")
### BEGIN HIDDEN TESTS
def _hidden():
    from dlcourse.pipeline import schedule_steps
    # fixed: fewer micro-batches than warm-up steps (the min with M), more, K = M (no warm-up,
    # K - k warm-ups, ties to the later stage all differ)
    cases = [(4, 2), (4, 6), (3, 3), (1, 2)]
    for seed in range(4):
        rng = rng_for("A4.3", seed)
        cases.append((rng.randint(1, 5), rng.randint(1, 8)))
    for K, M in cases:
        with references_disabled(GRADED_REFERENCES):
            got = one_f_one_b_schedule(K, M)
        want = schedule_steps("1f1b", K, M)
        expect(type(got) is list, "one_f_one_b_schedule must return a list")
        for k in range(K):
            expect_equal(stage_order_of(got, k), stage_order_of(want, k), f"stage {k}'s order (K={K}, M={M})")
        expect(respects_dependencies([tuple(s) for s in got], K), f"the order must respect the dependencies (K={K}, M={M})")
        expect_equal(got, want, f"one_f_one_b_schedule({K}, {M})")
hidden_test("A4.3", _hidden)
### END HIDDEN TESTS
''',
    ),
    md(
        "md-a4-4",
        """
## A4.4 The bubble

Run a schedule on a virtual clock: stage k runs its own steps in the schedule's order, a
forward takes `forward_s` and a backward `backward_s`, and a step starts once its stage is
free and its dependency (A4.2) has finished. The **bubble** is the idle share of all
stages' time: `1 - sum(busy) / (K * makespan)`. For GPipe with equal stage costs it is
`(K - 1) / (M + K - 1)`; for other orders (one micro-batch at a time, or any order you
like) it is not: run the steps you are given.
""",
    ),
    solution(
        "a4_4",
        '''
def bubble_fraction(steps, num_stages, forward_s=1.0, backward_s=1.0):
    """Idle share of all stages' time when the schedule `steps` runs on a virtual clock."""
    ### BEGIN SOLUTION
    orders = [[(kind, m) for s, m, kind in steps if s == k] for k in range(num_stages)]
    done, free, nxt, busy = {}, [0.0] * num_stages, [0] * num_stages, [0.0] * num_stages
    while any(nxt[k] < len(orders[k]) for k in range(num_stages)):
        for k in range(num_stages):
            if nxt[k] == len(orders[k]):
                continue
            kind, m = orders[k][nxt[k]]
            needs = (k - 1, m, "F") if kind == "F" else (k + 1, m, "B")
            first = (kind == "F" and k == 0) or (kind == "B" and k == num_stages - 1)
            if not first and needs not in done:
                continue
            cost = forward_s if kind == "F" else backward_s
            start = max(free[k], 0.0 if first else done[needs])
            done[(k, m, kind)] = free[k] = start + cost
            busy[k] += cost
            nxt[k] += 1
    makespan = max(free)
    return 1.0 - sum(busy) / (num_stages * makespan)
    ### END SOLUTION
    raise NotImplementedError("A4.4: the bubble fraction")
''',
    ),
    demo(
        "demo-a4-4",
        """
# More micro-batches, a smaller bubble: (K - 1) / (M + K - 1) for GPipe.
for _M in (1, 2, 4, 8):
    print(f"K=4, M={_M}: bubble {bubble_fraction(gpipe_schedule(4, _M), 4):.3f}, formula {3 / (_M + 3):.3f}")
""",
    ),
    test(
        "test_a4_4",
        2,
        '''
"""A4.4: the bubble fraction of a schedule on a virtual clock."""
expect_close(bubble_fraction([(0, 0, "F"), (1, 0, "F"), (1, 0, "B"), (0, 0, "B")], 2), 0.5, "bubble of K=2, M=1")
### BEGIN HIDDEN TESTS
def _reference_bubble(steps, K, f, b):
    orders = [[(kind, m) for s, m, kind in steps if s == k] for k in range(K)]
    done, free, nxt = {}, [0.0] * K, [0] * K
    while any(nxt[k] < len(orders[k]) for k in range(K)):
        for k in range(K):
            if nxt[k] < len(orders[k]):
                kind, m = orders[k][nxt[k]]
                needs = (k - 1, m, "F") if kind == "F" else (k + 1, m, "B")
                first = (kind == "F" and k == 0) or (kind == "B" and k == K - 1)
                if first or needs in done:
                    done[(k, m, kind)] = free[k] = max(free[k], 0.0 if first else done[needs]) + (f if kind == "F" else b)
                    nxt[k] += 1
    busy = sum(f if kind == "F" else b for _, _, kind in steps)
    return 1.0 - busy / (K * max(free))
def _hidden():
    from dlcourse.pipeline import schedule_steps
    # fixed: one micro-batch at a time through all stages (the closed form and GPipe's order
    # differ); a custom order with backward 2x forward (charging every step one cost, or
    # swapping the costs, differ); GPipe and 1F1B with unequal costs; one stage
    unpipelined = [(k, m, kind) for m in range(2) for kind, ks in (("F", range(3)), ("B", range(2, -1, -1))) for k in ks]
    custom = [(0, 0, "F"), (0, 1, "F"), (1, 0, "F"), (1, 1, "F"), (1, 1, "B"), (1, 0, "B"), (0, 0, "B"), (0, 1, "B")]
    cases = [(unpipelined, 3, 1.0, 1.0, "unpipelined"), (custom, 2, 1.0, 2.0, "a custom order"), (schedule_steps("gpipe", 3, 4), 3, 1.0, 2.0, "gpipe"), (schedule_steps("1f1b", 4, 3), 4, 1.0, 3.0, "1f1b"), (schedule_steps("gpipe", 1, 3), 1, 1.0, 2.0, "gpipe")]
    for seed in range(4):
        rng = rng_for("A4.4", seed)
        K, M = rng.randint(1, 5), rng.randint(1, 8)
        kind = rng.choice(["gpipe", "1f1b"])
        cases.append((schedule_steps(kind, K, M), K, rng.uniform(0.5, 2.0), rng.uniform(0.5, 3.0), kind))
    for steps, K, f, b, label in cases:
        M = len(steps) // (2 * K)
        with references_disabled(GRADED_REFERENCES):
            got = bubble_fraction(list(steps), K, f, b)
        expect_close(as_float(got, "bubble_fraction"), _reference_bubble(steps, K, f, b), f"bubble of {label} (K={K}, M={M}, forward {f:.3g} s, backward {b:.3g} s)", rtol=1e-9, atol=1e-12)
hidden_test("A4.4", _hidden)
### END HIDDEN TESTS
''',
    ),
    md(
        "md-a4-5",
        """
## A4.5 Your schedules on real processes

Nothing to write: this test runs one training step of a small network cut into stages on
real processes, each stage following its part of **your** GPipe and 1F1B schedules
(as `dlcourse.pipeline.run_pipeline(..., schedule=steps)` does), and compares the gradients
with plain autograd on the whole batch.
""",
    ),
    test(
        "test_a4_5",
        2,
        '''
"""A4.5: your GPipe and 1F1B schedules, run on 2 processes, give autograd's gradients."""
expect_equal(len(gpipe_schedule(2, 3)) + len(one_f_one_b_schedule(2, 3)), 24, "steps of both schedules")
### BEGIN HIDDEN TESTS
def _hidden():
    rng = rng_for("A4.5", 0)
    seed, M = rng.randrange(100), rng.choice([2, 3, 4])
    want = a4_autograd_gradients(M, seed)
    with references_disabled(GRADED_REFERENCES):
        schedules = [gpipe_schedule(2, M), one_f_one_b_schedule(2, M)]
    results = in_student_process(a4_pipeline_gradients, schedules, 2, M, seed)
    for label, got in zip(("GPipe", "1F1B"), results):
        expect_equal(sorted(got), sorted(want), "parameter names")
        for k in want:
            expect_close(got[k], want[k], f"gradient of {k} ({label}, M={M})", rtol=1e-4, atol=1e-6)
hidden_test("A4.5", _hidden)
### END HIDDEN TESTS
''',
    ),
]

# =====================================================================================
# A5 sharding: its cells are in build_a5.py

sys.path.insert(0, str(HERE))
from build_a5 import a5_cells  # noqa: E402

A5 = a5_cells(md, setup, solution, test, demo, HOW_TO)

ASSIGNMENTS = {
    "a1_data_parallelism": A1,
    "a2_staleness": A2,
    "a3_compression": A3,
    "a4_pipelines": A4,
    "a5_sharding": A5,
}


def _grading_imports(cells) -> str:
    """``from dlcourse.grading import (...)`` of exactly the names the notebook's code uses."""
    from dlcourse import grading

    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    used = sorted(set(re.findall(r"\b[A-Za-z_]\w*\b", code)) & set(grading.__all__))
    return "from dlcourse.grading import (\n" + "".join(f"    {n},\n" for n in used) + ")"


def _tidy(path: Path) -> None:
    """ruff format and import sorting, so that the notebooks pass the project's lint as written."""
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        raise RuntimeError(f"build_sources.py needs ruff next to {sys.executable} (pip install ruff)")
    subprocess.run([str(ruff), "check", "--quiet", "--fix", "--select", "I", str(path)], check=False)
    subprocess.run([str(ruff), "format", "--quiet", str(path)], check=True)


def build(root: Path = HERE / "source") -> list[Path]:
    """Write every source notebook; returns their paths."""
    paths = []
    for name, cells in ASSIGNMENTS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.ipynb"
        nb = notebook(cells)
        for c in nb.cells:
            if c.get("id") == "setup":
                c.source = c.source.replace("from dlcourse.grading import *", _grading_imports(nb.cells))
        nbformat.validate(nb)
        path.write_text(nbformat.writes(nb) + "\n")
        _tidy(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "source"):
        print("wrote", p)
