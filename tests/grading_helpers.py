"""Run the real nbgrader pipeline on a temporary copy of the course (tests and benchmarks).

``Course(tmp)`` copies ``assignments/`` (config, regrade, sources) into ``tmp``;
``generate(name)`` runs ``nbgrader generate_assignment``; ``submit(student, name, nb)``
lays a submission out as ``nbgrader collect`` would (``submitted/<student>/<name>/``);
``autograde(name)`` grades every submitted student in one nbgrader call; ``scores(name)``
reads ``{student: {grade_id: points}}`` from the gradebook. The course holds a fixed test
secret (``course_secret``), so the hidden inputs are the same in every run of the tests.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = ROOT / "assignments"
NAMES = ("a1_data_parallelism", "a2_staleness", "a3_compression", "a4_pipelines", "a5_sharding")


TEST_SECRET = "a test course secret, never a real one"


class Course:
    def __init__(self, path: Path, timeout: int | None = None, secret: str = TEST_SECRET):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        for name in ("nbgrader_config.py", "regrade.py"):
            shutil.copy(ASSIGNMENTS / name, self.path / name)
        shutil.copytree(ASSIGNMENTS / "source", self.path / "source", dirs_exist_ok=True)
        (self.path / "course_secret").write_text(secret + "\n")  # what the instructor's folder holds
        self.secret = secret
        self.timeout = timeout  # overrides ExecutePreprocessor.timeout (tests of infinite loops)

    def nbgrader(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        bin_dir = str(Path(sys.executable).parent)
        env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
        extra = [f"--ExecutePreprocessor.timeout={self.timeout}"] if self.timeout else []
        proc = subprocess.run(
            [os.path.join(bin_dir, "nbgrader"), *args, *extra],
            cwd=self.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"nbgrader {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
            )
        return proc

    def generate(self, name: str) -> Path:
        self.nbgrader("generate_assignment", name, "--force")
        return self.path / "release" / name

    def source_notebook(self, name: str) -> nbformat.NotebookNode:
        return nbformat.read(self.path / "source" / name / f"{name}.ipynb", as_version=4)

    def release_notebook(self, name: str) -> nbformat.NotebookNode:
        return nbformat.read(self.path / "release" / name / f"{name}.ipynb", as_version=4)

    def submit(self, student: str, name: str, nb: nbformat.NotebookNode) -> None:
        folder = self.path / "submitted" / student / name
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / f"{name}.ipynb")

    def autograde(self, name: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.nbgrader("autograde", name, "--force", check=check)

    def scores(self, name: str) -> dict[str, dict[str, float]]:
        from nbgrader.api import Gradebook

        out: dict[str, dict[str, float]] = {}
        with Gradebook(f"sqlite:///{self.path / 'gradebook.db'}") as gb:
            for submission in gb.assignment_submissions(name):
                grades = {}
                for nb in submission.notebooks:
                    for grade in nb.grades:
                        grades[grade.name] = float(grade.score)
                out[submission.student_id] = grades
        return out

    def max_scores(self, name: str) -> dict[str, float]:
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{self.path / 'gradebook.db'}") as gb:
            assignment = gb.find_assignment(name)
            return {c.name: float(c.max_score) for nb in assignment.notebooks for c in nb.grade_cells}


# ----------------------------------------------------------------------------- submissions


def cell(nb: nbformat.NotebookNode, cell_id: str):
    for c in nb.cells:
        if c.get("id") == cell_id:
            return c
    raise KeyError(cell_id)


def patched(nb: nbformat.NotebookNode, cell_id: str, find: str, replace: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose cell ``cell_id`` has ``find`` replaced by ``replace`` (which must occur)."""
    nb = copy.deepcopy(nb)
    c = cell(nb, cell_id)
    if find not in c.source:
        raise ValueError(f"{find!r} is not in cell {cell_id}")
    c.source = c.source.replace(find, replace)
    return nb


def with_cell_after(nb: nbformat.NotebookNode, after_id: str, source: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` with a new (student's) code cell after cell ``after_id``."""
    nb = copy.deepcopy(nb)
    index = next(i for i, c in enumerate(nb.cells) if c.get("id") == after_id)
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
    return nb
