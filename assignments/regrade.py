"""The isolated regrade: an nbgrader preprocessor that runs after the notebook was executed.

nbgrader grades a test cell by its output in the student's own kernel, where the student's
code ran first and could have changed anything (an IPython input transformer can rewrite a
test cell before it runs). This preprocessor runs ``python -m dlcourse.grading judge`` on the executed
notebook: the restored test cells run again in a process where no student code runs, the
student's functions answering from a sandbox process with plain data (see :mod:`dlcourse.grading`).
A test cell that passed in the kernel but not in the judge gets an error output, so that
nbgrader's SaveAutoGrades gives it 0 points and the feedback says why. It can only take
points away.

``StartRegrade`` (before nbgrader's Execute) starts the judge on the restored notebook, so
that it runs while the kernel executes the notebook; ``IsolatedRegrade`` (after Execute)
collects its verdicts. The judge gets ``ExecutePreprocessor.timeout`` seconds per call into
the student's code (the one timeout of ``nbgrader_config.py``) and a bound on the notebook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import nbformat
from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Unicode


def _failed(cell) -> bool:
    return any(
        o.output_type == "error" or (o.output_type == "stream" and o.name == "stderr") for o in cell.outputs
    )


class SafeExecute(Execute):
    """nbgrader's Execute, except that a kernel that dies fails the cells it did not finish.

    A student's ``os._exit`` (or a crash) kills the kernel; plain Execute then raises and
    nbgrader gives up on the whole notebook ("error processing assignment"). Here the
    cells that had finished keep their outputs, every other code cell gets an error, and
    grading goes on.
    """

    def preprocess(self, nb: NotebookNode, resources=None, km=None):
        self.record_timing = True  # a cell that finished has the time of the kernel's reply
        for cell in nb.cells:
            cell.get("metadata", {}).pop("execution", None)  # never trust a submission's own timings
        try:
            return super().preprocess(nb, resources, km)
        except DeadKernelError as e:
            for cell in nb.cells:
                finished = "shell.execute_reply" in cell.get("metadata", {}).get("execution", {})
                if cell.cell_type == "code" and not finished:
                    cell.outputs.append(
                        NotebookNode(
                            output_type="error",
                            ename="DeadKernelError",
                            evalue=f"the kernel died before this cell finished: {e}",
                            traceback=[],
                        )
                    )
            return nb, resources


def _tests(nb):
    return [
        c
        for c in nb.cells
        if c.cell_type == "code"
        and c.metadata.get("nbgrader", {}).get("grade")
        and not c.metadata["nbgrader"].get("solution")
    ]


def _timeout(config) -> float:
    # the one execution timeout, ExecutePreprocessor.timeout (nbgrader's Execute reads it too)
    value = config.get("ExecutePreprocessor", {}).get("timeout", 60)
    return float(value or 60)


class _Judge:
    """The judge process of one notebook, started before the kernel runs it."""

    def __init__(self, nb: NotebookNode, cwd: str, timeout: float):
        self.tmp = tempfile.TemporaryDirectory(prefix="dlcourse-regrade-")
        path = os.path.join(self.tmp.name, "notebook.ipynb")
        self.out = os.path.join(self.tmp.name, "verdicts.json")
        nbformat.write(nb, path)
        self.limit = timeout * (len(_tests(nb)) + 2) + 60
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dlcourse.grading", "judge", path, self.out, str(timeout)],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def verdicts(self) -> dict:
        try:
            self.proc.wait(self.limit)
            with open(self.out) as f:
                return json.load(f)
        except (subprocess.TimeoutExpired, OSError, ValueError) as e:
            self.proc.kill()
            return {"__error__": {"ok": False, "message": f"the regrade did not finish: {e}"}}
        finally:
            self.tmp.cleanup()


_running: dict[str, _Judge] = {}  # notebook path -> its judge, from StartRegrade to IsolatedRegrade


def _key(resources: dict) -> str:
    meta = resources.get("metadata", {})
    return os.path.join(meta.get("path") or os.getcwd(), meta.get("name", ""))


class SeedHiddenInputs(NbGraderPreprocessor):
    """Give the grading of this notebook its student's key, from the course secret.

    The hidden tests draw their random inputs from ``dlcourse.grading.rng_for``, seeded by
    ``DLCOURSE_GRADING_KEY``: HMAC-SHA256(course secret, student id). Set here, in nbgrader's
    process, before the kernel and the judge start (both inherit it): every regrade of a
    submission draws the same inputs, two students draw different ones. The secret itself
    stays in this process; it is read from ``secret_file`` (``assignments/README.md``). A
    cohort job's workspace has no secret but its student's key, in ``keys_file``
    (``dlcourse.cohort``).
    """

    secret_file = Unicode(
        "course_secret", help="the file holding the course secret (never released nor committed)"
    ).tag(config=True)
    keys_file = Unicode(
        "grading_keys.json", help="{student: key}, used where there is no secret_file (a cohort job)"
    ).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict):
        from dlcourse.grading import KEY_ENV, grading_key, read_secret

        student = resources["nbgrader"]["student"]
        if not os.path.exists(self.secret_file) and os.path.exists(self.keys_file):
            with open(self.keys_file) as f:
                key = json.load(f).get(student)
            if key is None:
                raise ValueError(f"keys_file {self.keys_file!r} has no key for student {student!r}")
        else:
            key = grading_key(read_secret(self.secret_file), student)  # names the file if it is missing
        os.environ[KEY_ENV] = key
        return nb, resources


class StartRegrade(NbGraderPreprocessor):
    """Start the judge on the restored notebook while the kernel executes it (they run side by side)."""

    def preprocess(self, nb: NotebookNode, resources: dict):
        if _tests(nb):
            cwd = resources.get("metadata", {}).get("path") or os.getcwd()
            _running[_key(resources)] = _Judge(nb, cwd, _timeout(self.config))
        return nb, resources


class IsolatedRegrade(NbGraderPreprocessor):
    """Fail in the notebook every test cell that failed in the judge (started by StartRegrade)."""

    def preprocess(self, nb: NotebookNode, resources: dict):
        tests = _tests(nb)
        if not tests:
            return nb, resources
        judge = _running.pop(_key(resources), None)
        if judge is None:  # StartRegrade was not configured: judge now
            cwd = resources.get("metadata", {}).get("path") or os.getcwd()
            judge = _Judge(nb, cwd, _timeout(self.config))
        verdicts = judge.verdicts()
        trouble = verdicts.get("__error__", {}).get("message", "")
        for cell in tests:
            grade_id = cell.metadata["nbgrader"]["grade_id"]
            verdict = verdicts.get(grade_id, {"ok": False, "message": trouble or "no verdict"})
            if verdict.get("ok") is True or _failed(cell):
                continue
            self.log.warning("isolated regrade failed %s: %s", grade_id, verdict.get("message"))
            cell.outputs.append(
                NotebookNode(
                    output_type="error",
                    ename="IsolatedRegradeError",
                    evalue=f"{grade_id}: failed when regraded apart from your notebook's kernel: "
                    f"{verdict.get('message', '')[:500]}",
                    traceback=[],
                )
            )
        return nb, resources


class ScrubTracebacks(NbGraderPreprocessor):
    """Tracebacks in test cells become one line, ``ename: evalue``.

    IPython's traceback shows the lines around the failing one, which in a test cell can be
    the hidden tests (restored at autograde); the feedback must not show them. The error
    stays an error, so the grade does not change.
    """

    def preprocess(self, nb: NotebookNode, resources: dict):
        for cell in _tests(nb):
            for output in cell.outputs:
                if output.output_type == "error":
                    output.traceback = [f"{output.ename}: {output.evalue}"]
        return nb, resources
