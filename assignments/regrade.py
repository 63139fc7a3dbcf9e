"""The isolated regrade: an nbgrader preprocessor that runs after the notebook was executed.

nbgrader grades a test cell by its output in the student's own kernel, where the student's
code ran first and could have changed anything (an IPython input transformer can rewrite a
test cell before it runs). This preprocessor runs ``grading.py judge`` on the executed
notebook: the restored test cells run again in a process where no student code runs, the
student's functions answering from a sandbox process with plain data (see ``grading.py``).
A test cell that passed in the kernel but not in the judge gets an error output, so that
nbgrader's SaveAutoGrades gives it 0 points and the feedback says why. It can only take
points away.

The judge gets ``ExecutePreprocessor.timeout`` seconds per call into the student's code
(the one timeout of ``nbgrader_config.py``) and a bound on the whole notebook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import nbformat
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

GRADING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grading.py")


def _failed(cell) -> bool:
    return any(
        o.output_type == "error" or (o.output_type == "stream" and o.name == "stderr") for o in cell.outputs
    )


class IsolatedRegrade(NbGraderPreprocessor):
    """Re-run the test cells against the student's functions in a sandbox; fail what fails there."""

    def _timeout(self) -> float:
        # the one execution timeout, ExecutePreprocessor.timeout (nbgrader's Execute reads it too)
        value = self.config.get("ExecutePreprocessor", {}).get("timeout", 60)
        return float(value or 60)

    def preprocess(self, nb: NotebookNode, resources: dict):
        tests = [
            c
            for c in nb.cells
            if c.cell_type == "code"
            and c.metadata.get("nbgrader", {}).get("grade")
            and not c.metadata["nbgrader"].get("solution")
        ]
        if not tests:
            return nb, resources
        timeout = self._timeout()
        cwd = resources.get("metadata", {}).get("path") or os.getcwd()
        with tempfile.TemporaryDirectory(prefix="dlcourse-regrade-") as tmp:
            path, out = os.path.join(tmp, "notebook.ipynb"), os.path.join(tmp, "verdicts.json")
            nbformat.write(nb, path)
            try:
                subprocess.run(
                    [sys.executable, GRADING, "judge", path, out, str(timeout)],
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=timeout * (len(tests) + 2) + 60,
                    check=False,
                )
                with open(out) as f:
                    verdicts = json.load(f)
            except (subprocess.TimeoutExpired, OSError, ValueError) as e:
                verdicts = {"__error__": {"ok": False, "message": f"the regrade did not finish: {e}"}}
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
