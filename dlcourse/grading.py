"""Grading helpers of the dlcourse assignments, and the isolated regrade that nbgrader runs.

The assignments' notebooks (``assignments/``) ``from dlcourse.grading import *``: on a
student's machine and at autograde the installed package answers, so a submission cannot
bring its own copy. Nothing else in the library imports this module. It has three roles:

1. **In the notebook** (the student's kernel): the checks the test cells use. They compare
   plain values (``float``, ``int``, lists of them) with explicit arithmetic, never through
   ``numpy.testing``, ``torch.testing``, ``math.isclose`` or ``torch.equal``, and they check
   the exact type of a result, so that an object whose ``==`` is always true fails.
2. **The sandbox** (``python -m dlcourse.grading sandbox``): a plain Python process (no IPython: no
   input transformers, no custom exception handlers) that runs the locked cells and the
   student's cells, with the library's reference versions of the graded functions disabled,
   and answers calls of the student's functions with plain data.
3. **The judge** (``python -m dlcourse.grading judge NOTEBOOK``): runs the restored test cells in a
   process where *no student code ever runs*: every name the student's cells define is a
   proxy that calls into the sandbox and gets back plain data (numbers, lists, tensors
   rebuilt here). Whatever a student's code patches, prints or fakes happens in the
   sandbox (or in their own kernel) and cannot change the judge's verdict; to pass, the
   data coming back must be right. ``regrade.py`` (an nbgrader preprocessor) runs the
   judge after nbgrader has executed the notebook, and a test cell keeps its points only
   if it passed in the kernel *and* in the judge.

A helper that needs the student's function inside real worker processes (the launcher,
the parameter server) runs in the sandbox: ``in_student_process(helper, ...)`` in a test
cell; it returns plain data that the judge compares with the reference it computes itself.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import hashlib
import hmac
import importlib
import json
import os
import random
import select
import subprocess
import sys
import time
import traceback

JUDGE = False  # True in the judge process: student code never runs here

# ----------------------------------------------------------------------------- checks


class FailedCheck(AssertionError):
    """A test's check did not hold (a plain AssertionError with a one-line message)."""


def expect(condition: bool, message: str) -> None:
    if condition is not True:  # `is True`: an object that claims truth is not enough
        raise FailedCheck(message)


def as_int(x, what: str) -> int:
    """``x`` as a Python int; only ints (and numpy's) are accepted, never bools or look-alikes."""
    import numpy as np

    t = type(x)
    if t is int:
        return x
    if t in (np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint16, np.uint32, np.uint64):
        return int(x)
    raise FailedCheck(f"{what}: expected an int, got {t.__name__}")


def as_float(x, what: str) -> float:
    """``x`` as a Python float; ints, floats, numpy scalars and 0-d/1-element tensors only."""
    import numpy as np
    import torch

    t = type(x)
    if t is float:
        return x
    if t is int:
        return float(x)
    if t in (np.float64, np.float32, np.float16, np.int64, np.int32):
        return float(x)
    if t is torch.Tensor and x.numel() == 1:
        return float(x.detach().reshape(-1).double().numpy()[0])
    raise FailedCheck(f"{what}: expected a number, got {t.__name__}")


def as_float_list(x, what: str) -> list[float]:
    """A tensor, array or (nested) list of numbers, flattened into Python floats."""
    import numpy as np
    import torch

    t = type(x)
    if t is torch.Tensor:
        return [float(v) for v in x.detach().reshape(-1).double().numpy()]
    if t is np.ndarray:
        return [float(v) for v in np.asarray(x, dtype=np.float64).reshape(-1)]
    if t in (list, tuple):
        out: list[float] = []
        for i, v in enumerate(x):
            if type(v) in (list, tuple, torch.Tensor, np.ndarray):
                out += as_float_list(v, f"{what}[{i}]")
            else:
                out.append(as_float(v, f"{what}[{i}]"))
        return out
    raise FailedCheck(f"{what}: expected a tensor or a list of numbers, got {t.__name__}")


def expect_close(got, want, what: str, rtol: float = 1e-6, atol: float = 1e-9) -> None:
    """Every number of ``got`` within ``atol + rtol * |want|`` of ``want`` (plain arithmetic)."""
    g, w = (
        as_float_list([got] if _is_number(got) else got, what),
        as_float_list([want] if _is_number(want) else want, what + " (reference)"),
    )
    if len(g) != len(w):
        raise FailedCheck(f"{what}: expected {len(w)} values, got {len(g)}")
    for i, (a, b) in enumerate(zip(g, w)):
        if a != a or b != b:  # NaN
            raise FailedCheck(f"{what}: value {i} is NaN (expected {b!r}, got {a!r})")
        bound = atol + rtol * (b if b >= 0 else -b)
        diff = a - b if a >= b else b - a
        if not diff <= bound:
            raise FailedCheck(f"{what}: value {i} is {a!r}, expected {b!r} (tolerance {bound:.2g})")


def expect_equal(got, want, what: str) -> None:
    """``got`` equals ``want``, both turned into plain data first (ints, floats, str, lists)."""
    g, w = _plain(got, what), _plain(want, what + " (reference)")
    if _canon(g) != _canon(w):
        raise FailedCheck(f"{what}: got {_short(g)}, expected {_short(w)}")


def _is_number(x) -> bool:
    import numpy as np

    return type(x) in (int, float) or isinstance(x, np.generic)


def _plain(x, what: str):
    """Plain data with exact types; anything else (a look-alike object) fails the check."""
    import numpy as np
    import torch

    t = type(x)
    if x is None or t in (bool, int, float, str):
        return x
    if isinstance(x, np.generic) and t.__module__ == "numpy":
        return x.item()
    if t in (list, tuple):
        return [_plain(v, f"{what}[{i}]") for i, v in enumerate(x)]
    if t is torch.Tensor or t is np.ndarray:
        return x.tolist() if t is np.ndarray else x.detach().cpu().numpy().tolist()
    raise FailedCheck(f"{what}: expected plain data (numbers, lists, tensors), got {t.__name__}")


def _canon(x) -> str:
    # a canonical text: comparing two Python strings cannot be redefined by a student
    return json.dumps(x, sort_keys=True)


def _short(x) -> str:
    s = repr(x)
    return s if len(s) < 160 else s[:157] + "..."


KEY_ENV = "DLCOURSE_GRADING_KEY"  # the student's grading key, set by regrade.SeedHiddenInputs
PRACTICE_KEY = "practice"  # without a key (a notebook run outside autograde): fixed draws


def grading_key(secret: str, student: str) -> str:
    """The key that seeds a student's hidden inputs: HMAC-SHA256(course secret, student id).

    Only this key reaches the processes that run a student's code, never the secret: a
    student who prints their environment learns their own key (which gives them their own
    inputs, not the answers), and nothing about anyone else's.
    """
    if type(secret) is not str or len(secret) < 16:
        raise ValueError(f"secret must be a str of at least 16 characters, got {type(secret).__name__}")
    if type(student) is not str or not student:
        raise ValueError(f"student must be a non-empty str, got {student!r}")
    return hmac.new(secret.encode(), f"student/{student}".encode(), hashlib.sha256).hexdigest()


def rng_for(task: str, seed: int) -> random.Random:
    """A random generator for one hidden case, seeded by the grading key, the task and the case.

    The key (``DLCOURSE_GRADING_KEY``: :func:`grading_key` of the course secret and the student
    id, set at autograde) makes the draws the same at every regrade of a student and different
    between students; they cannot be predicted without the course secret.
    """
    key = os.environ.get(KEY_ENV) or PRACTICE_KEY
    digest = hmac.new(key.encode(), f"{task}/{seed}".encode(), hashlib.sha256).hexdigest()
    return random.Random(digest)  # a str seed is hashed with SHA-512: the same in every process


def hidden_test(task: str, body) -> None:
    """Run a hidden test; a failure is reported in one line (no source of the hidden test shown).

    In the kernel the line goes to stderr, which nbgrader grades as a failure; in the judge
    the failure is raised.
    """
    try:
        body()
    except BaseException as e:  # noqa: BLE001 - every failure counts, SystemExit included
        if JUDGE:
            raise
        sys.stderr.write(f"{task}: hidden test failed: {type(e).__name__}: {e}\n")
        sys.stderr.flush()


# ----------------------------------------------------------------------------- references


def _resolve(ref: str):
    """``"module:Qual.name"`` -> (owner object, attribute name, function)."""
    module_name, qualname = ref.split(":")
    owner = importlib.import_module(module_name)
    parts = qualname.split(".")
    for p in parts[:-1]:
        owner = getattr(owner, p)
    return owner, parts[-1], getattr(owner, parts[-1])


def _disabled_reference(*args, **kwargs):
    raise RuntimeError(
        "this is dlcourse's reference implementation: it is disabled while your code is graded"
    )


_saved_code: dict[int, object] = {}


def _disable(refs) -> list:
    """Replace the code of every reference function in ``refs``; returns what to restore."""
    undo = []
    try:
        for ref in refs:
            _, _, fn = _resolve(ref)
            fn = getattr(fn, "__func__", fn)
            while hasattr(fn, "__wrapped__"):  # a decorated function (torch.no_grad): its inner one
                fn = fn.__wrapped__
            if id(fn) in _saved_code:
                continue
            _saved_code[id(fn)] = fn.__code__
            # every reference to this function object (saved aliases included) now raises
            fn.__code__ = _disabled_reference.__code__
            undo.append(fn)
    except BaseException:
        _enable(undo)
        raise
    return undo


def _enable(undo) -> None:
    for fn in undo:
        fn.__code__ = _saved_code.pop(id(fn))


@contextlib.contextmanager
def references_disabled(refs):
    """While the block runs, dlcourse's reference versions of ``refs`` raise RuntimeError.

    ``refs``: ``"module:qualname"`` strings. A no-op in the judge (no student code runs there;
    in the sandbox they are disabled for good before the student's cells run).
    """
    if JUDGE or os.environ.get("DLCOURSE_SANDBOX") == "1":
        yield
        return
    undo = _disable(refs)
    try:
        yield
    finally:
        _enable(undo)


def in_student_process(helper, *args, **kwargs):
    """Run ``helper(*args, **kwargs)`` where the student's code runs; returns plain data.

    In the kernel that is here. In the judge it is the sandbox (the judge overrides this).
    """
    return helper(*args, **kwargs)


def guarded(fn, refs):
    """``fn`` that disables ``refs`` while it runs, in whatever process calls it (a worker, a server).

    In the judge ``fn`` is a proxy and comes back unchanged: the sandbox guards its calls.
    """
    if JUDGE:
        return fn
    return _Guarded(fn, tuple(refs))


class _Guarded:
    def __init__(self, fn, refs):
        self.fn, self.refs = fn, refs
        self.__name__ = getattr(fn, "__name__", "student_function")

    def __call__(self, *args, **kwargs):
        undo = _disable(self.refs)  # only for the call: the library's own code still runs around it
        try:
            return self.fn(*args, **kwargs)
        finally:
            _enable(undo)


def expect_raises(error: str, fn, *args, what: str = "") -> None:
    """``fn(*args)`` raises an exception of class name ``error`` (from the student's code)."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        # in the judge the sandbox reports the class name of what the student's code raised
        raised = (getattr(e, "type_name", None) if JUDGE else None) or type(e).__name__
        if raised != error:
            raise FailedCheck(f"{what or fn.__name__}: expected {error}, got {raised}: {e}") from None
        return
    raise FailedCheck(f"{what or fn.__name__}{tuple(args)!r}: expected {error}, nothing was raised")


class StudentError(FailedCheck):
    """The student's code raised (in the sandbox); ``type_name`` is the exception's class name."""

    def __init__(self, type_name: str, message: str):
        self.type_name = type_name
        super().__init__(f"{type_name}: {message}")


# ----------------------------------------------------------------------------- plain data on the wire

_DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")


def encode(x):
    """Plain data as JSON-able values; tensors and arrays as dtype, shape and bytes."""
    import numpy as np
    import torch

    t = type(x)
    if x is None or t in (bool, int, str):
        return x
    if t is float:
        return {"float": repr(x)}
    if t in (list, tuple):
        return {"list" if t is list else "tuple": [encode(v) for v in x]}
    if t is dict:
        return {"dict": [[encode(k), encode(v)] for k, v in x.items()]}
    if isinstance(x, np.generic) and t.__module__ == "numpy":
        return encode(x.item())
    if t is torch.Tensor or t is np.ndarray:
        a = x.detach().cpu().contiguous().numpy() if t is torch.Tensor else np.ascontiguousarray(x)
        if str(a.dtype) not in _DTYPES:
            raise TypeError(f"cannot send an array of dtype {a.dtype}")
        return {
            "tensor" if t is torch.Tensor else "ndarray": str(a.dtype),
            "shape": list(a.shape),
            "data": base64.b64encode(a.tobytes()).decode(),
        }
    if isinstance(x, _Proxy):
        return {"student": x.__name__}
    raise TypeError(f"a {t.__name__} cannot be passed between the judge and the student's code")


def decode(x, resolve=None):
    """Inverse of :func:`encode`, building only plain types (and real tensors)."""
    import numpy as np
    import torch

    if x is None or type(x) in (bool, int, str):
        return x
    if type(x) is not dict or len(x) not in (1, 3):
        raise ValueError(f"malformed value on the wire: {_short(x)}")
    if "float" in x:
        return float(x["float"])
    if "list" in x:
        return [decode(v, resolve) for v in x["list"]]
    if "tuple" in x:
        return tuple(decode(v, resolve) for v in x["tuple"])
    if "dict" in x:
        return {decode(k, resolve): decode(v, resolve) for k, v in x["dict"]}
    if "student" in x:
        if resolve is None:
            raise ValueError("a function cannot come back from the student's code")
        return resolve(x["student"])
    kind = "tensor" if "tensor" in x else "ndarray"
    dtype = x[kind]
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not allowed")
    shape = [int(s) for s in x["shape"]]
    a = np.frombuffer(base64.b64decode(x["data"]), dtype=np.dtype(dtype)).reshape(shape).copy()
    return torch.from_numpy(a) if kind == "tensor" else a


# ----------------------------------------------------------------------------- the sandbox (child)


def _cell_code(source: str) -> str:
    """A cell's source as plain Python (IPython magics become calls that fail here)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001
        return source


def sandbox_main(rfd: int, wfd: int) -> None:
    os.environ["DLCOURSE_SANDBOX"] = "1"
    rd, wr = os.fdopen(rfd, "r"), os.fdopen(wfd, "w")

    def reply(obj) -> None:
        wr.write(json.dumps(obj) + "\n")
        wr.flush()

    import torch  # noqa: F401 - the slow import overlaps the judge's own

    init = json.loads(rd.readline())
    # the helpers a test asks for by name: this module's, taken before any student cell runs
    # (a student's cell may define a function of the same name; it is never the helper)
    helpers = {k: v for k, v in globals().items() if callable(v) and not k.startswith("_")}
    sys.path.insert(0, os.getcwd())
    guard = list(init["guard"])
    ns: dict = {"__name__": "__main__", "__builtins__": __builtins__}
    errors = []
    for i, cell in enumerate(init["cells"]):
        # the student's cells run with the library's references of the graded functions disabled
        undo = [] if cell["trusted"] else _disable(guard)
        try:
            exec(compile(_cell_code(cell["source"]), f"<cell {i}>", "exec"), ns)  # noqa: S102
        except BaseException as e:  # noqa: BLE001 - like a notebook: the next cell still runs
            errors.append(f"cell {i}: {type(e).__name__}: {e}")
        finally:
            _enable(undo)
    reply({"ready": True, "errors": errors})

    def student(name):
        return _Guarded(ns[name], tuple(guard))

    for line in rd:
        request = json.loads(line)
        try:
            fn = helpers.get(request["name"]) if request["kind"] == "helper" else ns.get(request["name"])
            if not callable(fn):
                raise NameError(f"name {request['name']!r} is not defined by your notebook")
            args = decode(request["args"], student)
            kwargs = decode(request["kwargs"], student)
            if request["kind"] == "student":
                fn = _Guarded(fn, tuple(guard))
            reply({"ok": encode(fn(*args, **kwargs))})
        except BaseException as e:  # noqa: BLE001
            reply({"error": type(e).__name__, "message": str(e)[:2000]})


class Sandbox:
    """The student's code in a process of its own; ``call(name, args, kwargs)`` returns plain data."""

    def __init__(self, cells: list[str], guard: list[str], cwd: str, timeout: float):
        self.cells, self.guard, self.cwd, self.timeout = cells, guard, cwd, timeout
        self.proc = None
        self.ready = False
        self.start_errors: list[str] = []

    def start(self) -> None:
        self.spawn()
        self.initialize()

    def spawn(self) -> None:
        """Start the process (it imports while the judge prepares; the cells follow in initialize)."""
        self.ready = False
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dlcourse.grading", "sandbox", str(to_child_r), str(from_child_w)],
            cwd=self.cwd,
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # so that its workers can be ended with it
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._w = os.fdopen(to_child_w, "w")
        self._r = os.fdopen(from_child_r, "r")

    def initialize(self) -> None:
        self._send({"cells": self.cells, "guard": self.guard})
        ready = self._receive(self.timeout * 2)
        self.start_errors = ready.get("errors", [])
        self.ready = True

    def _send(self, obj) -> None:
        self._w.write(json.dumps(obj) + "\n")
        self._w.flush()

    def _receive(self, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise TimeoutError(f"your code did not answer within {timeout:g} s")
            ready, _, _ = select.select([self._r], [], [], min(left, 0.5))
            if ready:
                line = self._r.readline()
                if not line:
                    code = self.proc.wait(5)
                    self.proc = None
                    raise RuntimeError(f"the process running your code ended (exit code {code})")
                return json.loads(line)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def call(self, name: str, args, kwargs, kind: str = "student"):
        if not self.alive():
            raise RuntimeError("the process running your code has ended")
        request = {"name": name, "kind": kind, "args": encode(list(args)), "kwargs": encode(dict(kwargs))}
        try:
            self._send(request)
        except (BrokenPipeError, OSError) as e:
            self.stop()
            raise RuntimeError("the process running your code has ended") from e
        answer = self._receive(self.timeout)
        if type(answer) is not dict:
            raise ValueError("malformed answer from the student's process")
        if "error" in answer:
            raise StudentError(str(answer["error"]), f"{name}: {answer.get('message', '')}")
        return decode(answer.get("ok"))

    def stop(self) -> None:
        if self.proc is not None:
            import signal

            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.proc.wait(5)
            self.proc = None


class _Proxy:
    """Stands in the judge for a function the student defined: calls it in the sandbox."""

    def __init__(self, sandbox: Sandbox, name: str):
        self._sandbox, self.__name__ = sandbox, name

    def __call__(self, *args, **kwargs):
        return self._sandbox.call(self.__name__, args, kwargs)

    def __repr__(self) -> str:
        return f"<student's {self.__name__}>"


# ----------------------------------------------------------------------------- the judge (parent)


def _defined_names(source: str) -> set[str]:
    """Names a cell defines at module level (functions, classes, assignments, imports).

    Definitions inside ``if`` / ``try`` / ``with`` / loops at the top count too; those inside
    functions and classes do not.
    """
    try:
        tree = ast.parse(_cell_code(source))
    except SyntaxError:
        return set()
    names: set[str] = set()
    blocks = [tree.body]
    while blocks:
        for node in blocks.pop():
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            elif isinstance(node, (ast.If, ast.For, ast.While, ast.With, ast.Try)):
                if isinstance(node, ast.For):
                    names.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
                for field in ("body", "orelse", "finalbody"):
                    blocks.append(getattr(node, field, []))
                blocks.extend(h.body for h in getattr(node, "handlers", []))
    return names


def judge(notebook_path: str, timeout: float) -> dict[str, dict]:
    """``{grade_id: {"ok": bool, "message": str}}`` for every autograded test cell."""
    global JUDGE
    import nbformat

    JUDGE = True
    sys.modules[__name__].JUDGE = True
    nb = nbformat.read(notebook_path, as_version=4)
    trusted, untrusted, tests = [], [], []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            tests.append(cell)  # restored from the gradebook by nbgrader (OverwriteCells)
        elif meta.get("locked") and not meta.get("solution"):
            trusted.append(cell.source)  # restored from the source version too
        else:
            untrusted.append(cell.source)
    # the sandbox runs the notebook's cells in their order, the tests left out
    sandbox_cells = []
    for c in nb.cells:
        meta = c.metadata.get("nbgrader", {}) if c.cell_type == "code" else None
        if meta is None or (meta.get("grade") and not meta.get("solution")):
            continue
        sandbox_cells.append(
            {"source": c.source, "trusted": bool(meta.get("locked") and not meta.get("solution"))}
        )
    sandbox = Sandbox(sandbox_cells, [], os.path.dirname(os.path.abspath(notebook_path)), timeout)
    sandbox.spawn()
    ns: dict = {"__name__": "__judge__"}
    grading = importlib.import_module("dlcourse.grading")  # the module the test cells import
    grading.JUDGE = True
    for source in trusted:
        exec(compile(_cell_code(source), "<locked cell>", "exec"), ns)  # noqa: S102
    sandbox.guard = list(ns.get("GRADED_REFERENCES", []))
    student_names = set().union(*(_defined_names(s) for s in untrusted)) if untrusted else set()
    for name in sorted(student_names - set(ns)):
        ns[name] = _Proxy(sandbox, name)

    def run_there(helper, *args, **kwargs):
        return sandbox.call(getattr(helper, "__name__", str(helper)), args, kwargs, kind="helper")

    ns["in_student_process"] = run_there
    verdicts: dict[str, dict] = {}
    broken = None  # the student's cells never finished running: every test fails alike
    try:
        for cell in tests:
            grade_id = cell.metadata["nbgrader"]["grade_id"]
            if broken is not None:
                verdicts[grade_id] = {"ok": False, "message": broken}
                continue
            try:
                try:
                    if sandbox.proc is not None and not sandbox.ready:
                        sandbox.initialize()
                    elif not sandbox.alive():
                        sandbox.start()  # again: a test before ended it
                except TimeoutError as e:
                    broken = f"your notebook's cells did not finish running: {e}"
                    raise
                exec(compile(_cell_code(cell.source), f"<test {grade_id}>", "exec"), dict(ns))  # noqa: S102
                verdicts[grade_id] = {"ok": True, "message": ""}
            except BaseException as e:  # noqa: BLE001
                verdicts[grade_id] = {"ok": False, "message": f"{type(e).__name__}: {e}"}
    finally:
        sandbox.stop()
    return verdicts


# ----------------------------------------------------------------------------- assignment helpers
# Each returns plain data (numbers, lists, tensors, dicts of tensors), so that it can run in
# the sandbox and its result be judged elsewhere.


def small_mnist(train: int = 240, test: int = 100):
    """The first ``train`` / ``test`` digits of the shipped MNIST subset (cached)."""
    key = (train, test)
    if key not in _DATA:
        from dlcourse.data import MnistSplit, load_mnist

        split = load_mnist("subset", seed=0)
        _DATA[key] = MnistSplit(split.train[:train], split.test[:test], split.source)
    return _DATA[key]


_DATA: dict = {}


# A1 ------------------------------------------------------------------------------------


def a1_rank_gradients(rank: int, seed: int, shapes):
    """The gradient rank ``rank`` holds before averaging (random, reproducible)."""
    import torch

    g = torch.Generator().manual_seed(seed * 1000 + rank)
    return [torch.randn(tuple(s), generator=g, dtype=torch.float64) for s in shapes]


def _a1_gradients_worker(rank, world_size, average_gradients, seed, shapes):
    import torch

    model = torch.nn.Module()
    for i, s in enumerate(shapes):
        model.register_parameter(f"p{i}", torch.nn.Parameter(torch.zeros(tuple(s), dtype=torch.float64)))
    for p, g in zip(model.parameters(), a1_rank_gradients(rank, seed, shapes)):
        p.grad = g.clone()
    average_gradients(model)
    return [p.grad.detach().clone() for p in model.parameters()]


def a1_gradients_on_processes(average_gradients, num_workers: int, seed: int, shapes):
    """Every rank's gradients after the student's ``average_gradients`` on real processes."""
    from dlcourse.launcher import launch

    return launch(
        _a1_gradients_worker, num_workers, average_gradients, seed, [list(s) for s in shapes],
        backend="gloo", timeout=30, run_timeout=90, threads_per_worker=1,
    )  # fmt: skip


def a1_in_one_process(average, seed: int, shapes, what: str = "grad"):
    """The student's ``average(model)`` in a group of one process: ``what`` ("grad"/"param") after it."""
    import torch

    from dlcourse.launcher import one_process_group

    with one_process_group():
        model = torch.nn.Module()
        for i, g in enumerate(a1_rank_gradients(0, seed, shapes)):
            model.register_parameter(f"p{i}", torch.nn.Parameter(g.clone() * 2))
            model.get_parameter(f"p{i}").grad = g.clone()
        average(model)
        return [(p.grad if what == "grad" else p).detach().clone() for p in model.parameters()]


def a1_averaging_config(seed: int):
    from dlcourse.worker_run import DataParallelConfig

    return DataParallelConfig(model="mlp", batch_size=20, lr=0.1, seed=seed, max_steps=3, dtype="float64")


def a1_averaging_on_processes(average_parameters, num_workers: int, seed: int):
    """Final parameters of parameter averaging (K = 1) with the student's averaging, on processes."""
    from dlcourse.averaging import train_averaging

    result = train_averaging(
        small_mnist(200, 50).train, num_workers, a1_averaging_config(seed), average=average_parameters,
        backend="gloo", timeout=30, run_timeout=120, threads_per_worker=1,
    )  # fmt: skip
    return {k: v.detach().clone() for k, v in result.parameters.items()}


def a1_single_machine(num_workers: int, seed: int):
    """The same steps on one machine, on the concatenated batches (the lecture's equivalence)."""
    from dlcourse.averaging import train_reference

    result = train_reference(small_mnist(200, 50).train, num_workers, a1_averaging_config(seed))
    return {k: v.detach().clone() for k, v in result.parameters.items()}


def least_squares_gradient(w, X, y):
    """Gradient of ``mean((X w - y)^2) / 2`` at ``w`` (lists of floats in, list out)."""
    import torch

    w, X, y = (torch.tensor(v, dtype=torch.float64) for v in (w, X, y))
    return (X.T @ (X @ w - y) / len(y)).tolist()


# A2 ------------------------------------------------------------------------------------


def a2_simulate(**config):
    """``simulate`` on a small slice of MNIST: the staleness of every update and the final parameters."""
    from dlcourse.sim import SimConfig, simulate

    defaults = dict(num_workers=4, model="mlp", batch_size=20, epochs=1, evals_per_epoch=1, lr=0.1)
    result = simulate(SimConfig(**{**defaults, **config}), small_mnist(240, 50))
    return {"staleness": list(result.staleness), "params": result.params.detach().clone()}


def a2_ps_config(lr_policy="constant", aggregate=None):
    from dlcourse.parameter_server import PSConfig

    return PSConfig(
        num_workers=2, softsync=2, lr=0.1, lr_policy=lr_policy, aggregate=aggregate, model="mlp",
        batch_size=20, steps=3, train_examples=200, test_examples=50, snapshots=0, timeout=30,
        run_timeout=120,
    )  # fmt: skip


def a2_parameter_server(lr_policy="constant", aggregate=None):
    """Final parameters of a real parameter server (synchronous, N = S = 2) with these rules."""
    from dlcourse.parameter_server import run_parameter_server

    result = run_parameter_server(a2_ps_config(lr_policy, aggregate))
    return [p.detach().clone() for p in result.parameters]


def a2_async_parameter_server(staleness_fn=None, gate=None):
    """A real asynchronous run (N = 3, S = 1, bound 0, worker 0 slow) with these rules: what the server saw.

    ``{"staleness": the tau it counted per update, "versions": [server version, pulled version]
    per update, "clock_lag": the gate's clock lag per update}`` (server 0).
    """
    from dlcourse.parameter_server import PSConfig, run_parameter_server

    config = PSConfig(
        num_workers=3, softsync=1, staleness_bound=0, slow_worker=0, slow_delay=0.03, lr=0.05,
        staleness_fn=staleness_fn, gate=gate, model="mlp", batch_size=20, steps=4, train_examples=240,
        test_examples=50, snapshots=0, timeout=30, run_timeout=120,
    )  # fmt: skip
    result = run_parameter_server(config)
    return {
        "staleness": list(result.staleness),
        "versions": [list(v) for v in result.update_versions],
        "clock_lag": list(result.clock_lag),
    }


def a2_parameter_server_reference(lr_policy):
    """What that run must give, computed in one process: each step W -= mean_n lambda dW_n."""
    import torch
    import torch.nn.functional as F

    from dlcourse.data import shard
    from dlcourse.models import make_model
    from dlcourse.parameter_server import worker_schedule
    from dlcourse.parameter_server.protocol import load_data
    from dlcourse.staleness import apply_updates

    config = a2_ps_config(lr_policy)
    train, _ = load_data(config)
    shards = shard(train, config.num_workers)
    orders = [worker_schedule(shards[n], config, n) for n in range(config.num_workers)]
    model = make_model(config.model, seed=config.seed)
    params = list(model.parameters())
    for t in range(config.steps):
        grads = []
        for n in range(config.num_workers):
            idx = orders[n][t]
            loss = F.cross_entropy(model(shards[n].X[idx]), shards[n].y[idx])
            grads.append(torch.autograd.grad(loss, params))
        lam = float(lr_policy(config.lr, 0))
        apply_updates(params, grads, [lam] * config.num_workers, "mean")
    return [p.detach().clone() for p in params]


# A3 ------------------------------------------------------------------------------------


def a3_decentralized(residual_fn, tau: float, seed: int):
    """One worker of decentralized SGD compressing with ``residual_fn`` (None: the library's step).

    One worker: the run is deterministic (a peer's updates arrive when they do), and it applies
    its own compressed update, so what its compressor sends decides the model it ends with.
    """
    from dlcourse.decentralized import DecentralizedConfig, train_decentralized

    data = small_mnist(300, 100)
    config = DecentralizedConfig(tau=tau, residual_fn=residual_fn, model="mlp", batch_size=30, seed=seed)
    result = train_decentralized(config, 1, train=data.train, test=data.test, timeout=30, run_timeout=90)
    return {"test_loss": float(result.test_loss), "elements_sent": int(result.elements_sent)}


def elias_gamma_bits(gaps) -> str:
    """Reference bit string of the gaps: ``floor(log2 g)`` zeros, then ``g`` in binary."""
    return "".join("0" * (int(g).bit_length() - 1) + format(int(g), "b") for g in gaps)


# A4 ------------------------------------------------------------------------------------


def a4_model(seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 5)
    )


def a4_batch(seed: int, batch: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 20, generator=g), torch.randint(0, 5, (batch,), generator=g)


def _a4_worker(rank, world_size, model, X, y, num_microbatches, schedules):
    from dlcourse.pipeline import gpipe_worker, stage_orders

    out = []
    for steps in schedules:  # one step per schedule, from the same initial parameters
        orders = stage_orders(steps, world_size, num_microbatches)
        out.append(
            gpipe_worker(rank, world_size, model, X, y, num_microbatches, "ours", 0.0, orders)["grads"]
        )
    return out


def a4_pipeline_gradients(schedules, num_stages: int, num_microbatches: int, seed: int):
    """Gradients of one pipeline step per schedule, each stage a process following its steps.

    ``dlcourse.pipeline.run_pipeline(..., schedule=steps)`` does this for one schedule; the
    schedules here share one launch of the processes.
    """
    from dlcourse.launcher import launch

    X, y = a4_batch(seed, 4 * num_microbatches)
    schedules = [[tuple(s) for s in steps] for steps in schedules]
    parts = launch(
        _a4_worker, num_stages, a4_model(seed), X, y, num_microbatches, schedules,
        backend="gloo", timeout=30, run_timeout=120, threads_per_worker=1,
    )  # fmt: skip
    return [{k: v for part in parts for k, v in part[j].items()} for j in range(len(schedules))]


def a4_autograd_gradients(num_microbatches: int, seed: int):
    """The same gradients from plain autograd on the whole batch (mean loss)."""
    import torch.nn.functional as F

    model = a4_model(seed)
    X, y = a4_batch(seed, 4 * num_microbatches)
    F.cross_entropy(model(X), y).backward()
    return {k: p.grad.detach().clone() for k, p in model.named_parameters()}


# A5 ------------------------------------------------------------------------------------
# in a module of its own; imported here so that the notebooks' `from dlcourse.grading import`
# and the sandbox's helpers (this module's globals) include them
from dlcourse.grading_a5 import *  # noqa: E402, F403
from dlcourse.grading_a5 import __all__ as _A5_NAMES  # noqa: E402


def write_secret(path: str, force: bool = False) -> str:
    """Write a new course secret (64 hex digits, readable by its owner only) to ``path``.

    Refuses to replace an existing secret unless ``force``: a new secret changes every
    student's hidden inputs, so it is made once a term (``assignments/README.md``).
    """
    import secrets

    if os.path.exists(path) and not force:
        raise ValueError(f"path {path!r} already holds a secret; rotate it with --force")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    os.chmod(path, 0o600)
    return path


def read_secret(path: str) -> str:
    """The course secret in ``path`` (ValueError naming the path when there is none)."""
    try:
        with open(path) as f:
            secret = f.read().strip()
    except FileNotFoundError:
        raise ValueError(
            f"secret_file {path!r} does not exist: create the course secret with "
            f"`python -m dlcourse.grading secret {path}` (assignments/README.md)"
        ) from None
    if len(secret) < 16:
        raise ValueError(f"secret_file {path!r} holds {len(secret)} characters; at least 16 are needed")
    return secret


def _command_line(argv: list[str]) -> int:
    """``cohort``, ``grade-one``, ``merge`` and ``secret``: the instructor's commands (exit 2 on bad use)."""
    import argparse
    from pathlib import Path

    from dlcourse import cohort

    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # one line and exit 2, as the course's command line does
            self.exit(2, f"{self.prog}: error: {message}\n")

    def keys_for(course: str, assignment: str, secret_file: str | None) -> dict[str, str]:
        cohort.check_course(Path(course), assignment)  # a missing gradebook is said first
        secret = read_secret(secret_file or os.path.join(course, "course_secret"))
        return {s: grading_key(secret, s) for s in cohort.submitted_students(course, assignment)}

    def positive(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
        return int(text)

    parser = Parser(prog="python -m dlcourse.grading", description="Grade the dlcourse assignments.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    c = sub.add_parser("cohort", help="autograde every submission in parallel, merge, generate feedback")
    c.add_argument("assignment")
    c.add_argument("--jobs", type=positive, default=os.cpu_count() or 1, help="submissions graded at once")
    c.add_argument("--course", default=".", help="the nbgrader course folder (default: here)")
    c.add_argument("--workdir", default=None, help="the jobs' workspaces (default: COURSE/cohort/ASSIGNMENT)")
    c.add_argument("--student", action="append", help="grade only these (repeatable)")
    c.add_argument("--no-feedback", action="store_true")
    c.add_argument("--secret-file", default=None, help="the course secret (default: COURSE/course_secret)")
    o = sub.add_parser("grade-one", help="one student's job in its own workspace (a scheduler's task)")
    o.add_argument("assignment")
    o.add_argument("student")
    o.add_argument("--course", default=".")
    o.add_argument("--workdir", required=True)
    m = sub.add_parser("merge", help="merge finished jobs into the course's gradebook")
    m.add_argument("assignment")
    m.add_argument("--course", default=".")
    m.add_argument("--workdir", required=True)
    m.add_argument("--feedback", action="store_true", help="then nbgrader generate_feedback")
    p = sub.add_parser("prepare", help="copy the gradebook the jobs start from into WORKDIR")
    p.add_argument("assignment")
    p.add_argument("--course", default=".")
    p.add_argument("--workdir", required=True)
    p.add_argument("--secret-file", default=None, help="the course secret (default: COURSE/course_secret)")
    s = sub.add_parser("secret", help="write a new course secret (once a term)")
    s.add_argument("path")
    s.add_argument("--force", action="store_true", help="replace an existing secret (rotation)")
    args = parser.parse_args(argv)
    try:
        if args.command == "cohort":
            keys = keys_for(args.course, args.assignment, args.secret_file)
            report = cohort.grade_cohort(
                args.course,
                args.assignment,
                args.jobs,
                args.workdir,
                args.student,
                not args.no_feedback,
                keys=keys,
            )
            print(f"{len(report.results) - len(report.failed)} graded, {len(report.failed)} failed, "
                  f"{report.wall_s:.1f} s with {args.jobs} jobs")  # fmt: skip
            return 1 if report.failed else 0
        if args.command == "prepare":
            keys = keys_for(args.course, args.assignment, args.secret_file)
            print(cohort.prepare(args.course, args.assignment, args.workdir, keys))
            return 0
        if args.command == "grade-one":
            job = cohort.grade_one(args.course, args.assignment, args.student, args.workdir)
            print(
                f"graded {job.student} in {job.seconds:.1f} s"
                if job.ok
                else f"FAILED {job.student}: {job.error}"
            )
            return 0 if job.ok else 1
        if args.command == "merge":
            merged = cohort.merge(args.course, args.assignment, args.workdir)
            print(f"merged {len(merged)}: {' '.join(merged)}")
            if args.feedback:
                return cohort.generate_feedback(args.course, args.assignment).returncode
            return 0
        print("wrote", write_secret(args.path, args.force))
        return 0
    except ValueError as e:
        print(f"python -m dlcourse.grading {args.command}: error: {e}", file=sys.stderr)
        return 2


def main(argv: list[str]) -> None:
    if argv[:1] == ["sandbox"]:
        sandbox_main(int(argv[1]), int(argv[2]))
    elif argv[:1] == ["judge"]:
        notebook, out, timeout = argv[1], argv[2], float(argv[3])
        try:
            verdicts = judge(notebook, timeout)
        except BaseException as e:  # noqa: BLE001 - a verdict file says what went wrong
            verdicts = {"__error__": {"ok": False, "message": traceback.format_exc() or str(e)}}
        with open(out, "w") as f:
            json.dump(verdicts, f)
    else:
        raise SystemExit(_command_line(argv))


# what `from dlcourse.grading import *` gives a notebook: the checks and the assignment helpers
__all__ = sorted(
    name
    for name, value in list(globals().items())
    if not name.startswith("_")
    and (getattr(value, "__module__", None) == __name__ or name in _A5_NAMES)
    and name
    not in (
        "Sandbox",
        "judge",
        "main",
        "sandbox_main",
        "encode",
        "decode",
        "write_secret",
        "read_secret",
        "grading_key",
    )  # fmt: skip
)

if __name__ == "__main__":
    main(sys.argv[1:])
