"""Submissions that try to game the grader; each must earn no more than the release as given.

``GAMES[name](release, source)`` returns the submitted notebook, made from the release
notebook (no working solution) and, where it needs them, the ids of the source's cells.
``LIBRARY_CALLS`` are submissions whose functions just call dlcourse's own reference.
"""

from __future__ import annotations

import copy

import nbformat


def _is_test(cell) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


def _add_after_setup(nb, source: str):
    nb = copy.deepcopy(nb)
    index = next(i for i, c in enumerate(nb.cells) if c.get("id") == "setup")
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
    return nb


def _solutions(nb, body: str):
    """Every solution function's stub replaced by ``body`` (indented into the function)."""
    nb = copy.deepcopy(nb)
    for c in nb.cells:
        if c.metadata.get("nbgrader", {}).get("solution"):
            c.source = c.source.replace("# YOUR CODE HERE", body)
    return nb


def tests_edited(release, source):
    nb = copy.deepcopy(release)
    for c in nb.cells:
        if _is_test(c):
            c.source = '"""all good"""\npass'
            c.metadata["nbgrader"]["points"] = 100
    return nb


def tests_deleted(release, source):
    nb = copy.deepcopy(release)
    nb.cells = [c for c in nb.cells if not _is_test(c)]
    return nb


def points_changed(release, source):
    nb = copy.deepcopy(release)
    for c in nb.cells:
        if _is_test(c):
            c.metadata["nbgrader"]["points"] = 1000
    return nb


_ALWAYS_EQUAL = """
class _Anything(float):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return False
    def __le__(self, other): return True
    def __ge__(self, other): return True
    def __gt__(self, other): return False
    def __bool__(self): return True
    def __abs__(self): return self
    def __sub__(self, other): return _Anything(0.0)
    __rsub__ = __add__ = __radd__ = __mul__ = __rmul__ = __truediv__ = __sub__
    def __len__(self): return 0
    def __iter__(self): return iter(())
    def __getitem__(self, i): return self
    def __hash__(self): return 0
"""


def always_equal(release, source):
    nb = _add_after_setup(release, _ALWAYS_EQUAL)
    return _solutions(nb, "return _Anything(0.0)")


def helpers_patched(release, source):
    patch = """
import math, numpy, numpy.testing, torch, torch.testing
import dlcourse.grading as grading
_ok = lambda *a, **k: True
_none = lambda *a, **k: None
numpy.testing.assert_allclose = numpy.testing.assert_array_equal = numpy.testing.assert_equal = _none
torch.testing.assert_close = _none
math.isclose = torch.equal = torch.allclose = numpy.allclose = _ok
for _name in ("expect", "expect_close", "expect_equal", "expect_raises", "hidden_test"):
    setattr(grading, _name, _none)
    globals()[_name] = _none
"""
    return _solutions(_add_after_setup(release, patch), "return 0")


def input_transformer(release, source):
    patch = '''
def _neutralize(lines):
    text = "".join(lines)
    if "hidden_test" in text or text.lstrip().startswith('"""A'):
        return ["pass\\n"]
    return lines
get_ipython().input_transformers_post.append(_neutralize)
get_ipython().input_transformers_cleanup.append(_neutralize)
'''
    return _solutions(_add_after_setup(release, patch), "return 0")


def exception_handler(release, source):
    patch = """
import io, sys
get_ipython().set_custom_exc((BaseException,), lambda shell, etype, value, tb, tb_offset=None: None)
sys.stderr = io.StringIO()
"""
    return _solutions(_add_after_setup(release, patch), "return 0")


def exits(release, source):
    # a cell that ends the interpreter politely, and functions that kill it
    nb = _add_after_setup(release, "import sys\nsys.exit(0)")
    return _solutions(nb, "import os; os._exit(0)")


def infinite_loop(release, source):
    """The first task's function never returns (the timeout ends it); the others return 0."""
    nb = _solutions(release, "return 0")
    first = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution"))
    first.source = first.source.replace("return 0", "while True:\n        pass", 1)
    return nb


GAMES = {
    "tests_edited": tests_edited,
    "tests_deleted": tests_deleted,
    "points_changed": points_changed,
    "always_equal": always_equal,
    "helpers_patched": helpers_patched,
    "input_transformer": input_transformer,
    "exception_handler": exception_handler,
    "exits": exits,
    "infinite_loop": infinite_loop,
}

# Each graded function just calls dlcourse's reference (cell id -> its whole new source).
LIBRARY_CALLS = {
    "a1_data_parallelism": {
        "a1_2": "from dlcourse.collectives import average_gradients",
        "a1_3": "from dlcourse.collectives import average_parameters",
    },
    "a2_staleness": {
        "a2_1": "import dlcourse.staleness as _s\ndef staleness(v, p):\n    return _s.staleness(v, p)",
        "a2_2": "from dlcourse.staleness import staleness_lr",
        "a2_3": (
            "import dlcourse.staleness as _s\n"
            "def soft_sync(params, updates, lrs):\n"
            "    new = [p.clone() for p in params]\n"
            "    _s.apply_updates(new, updates, lrs, 'mean')\n"
            "    return new"
        ),
        "a2_4": (
            "from dlcourse.staleness import BoundedStaleness\n"
            "def may_start(clocks, worker, bound):\n"
            "    gate = BoundedStaleness(len(clocks), bound)\n"
            "    gate.clocks = list(clocks)\n"
            "    return gate.may_start(worker)"
        ),
    },
    "a3_compression": {
        "a3_1": "from dlcourse.compression import quantize",
        "a3_2": (
            "import dlcourse.compression as _c\n"
            "def residual_step(residual, update, tau):\n"
            "    r = residual.clone()\n"
            "    sent = _c.residual_step(r, update, tau)\n"
            "    return sent, r"
        ),
    },
    "a4_pipelines": {
        "a4_1": "from dlcourse.model_parallel import stage_bounds as cut_into_stages",
        "a4_2": (
            "from dlcourse.pipeline import schedule_steps\n"
            "def gpipe_schedule(k, m):\n"
            "    return schedule_steps('gpipe', k, m)"
        ),
        "a4_3": (
            "from dlcourse.pipeline import schedule_steps\n"
            "def one_f_one_b_schedule(k, m):\n"
            "    return schedule_steps('1f1b', k, m)"
        ),
        "a4_4": (
            "from dlcourse.pipeline import simulate_schedule\n"
            "def bubble_fraction(steps, k, f=1.0, b=1.0):\n"
            "    m = len(steps) // (2 * k)\n"
            "    return simulate_schedule(k, m, 'gpipe', f, b).bubble_fraction"
        ),
    },
    "a5_sharding": {
        "a5_1": "from dlcourse.sharding import zero1_step",
        "a5_2": "from dlcourse.tensor_parallel import column_parallel_linear",
        "a5_3": "from dlcourse.tensor_parallel import row_parallel_linear",
        "a5_4": (
            "from dlcourse.memory import Layout, predict\n"
            "def bytes_per_device(P, N, stage, tp=1, optimizer='adam', precision='mixed'):\n"
            "    b = predict(Layout(num_params=P, num_workers=N, zero_stage=stage, tp=tp,\n"
            "                       optimizer=optimizer, precision=precision))\n"
            "    return {'parameters': b.parameters, 'gradients': b.gradients, 'optimizer': b.optimizer}"
        ),
    },
}


def library_calls(name: str, source):
    """The source notebook with the graded functions replaced by calls of the library's reference."""
    nb = copy.deepcopy(source)
    for c in nb.cells:
        if c.get("id") in LIBRARY_CALLS[name]:
            c.source = LIBRARY_CALLS[name][c["id"]]
    return nb
