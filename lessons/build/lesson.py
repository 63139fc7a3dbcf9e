"""What every lesson builder shares: cells with stable ids, and writing the notebook.

A builder (``lessons/build/NN_name.py``) lists its cells and ends with
``write("NN_name.ipynb", cells)``: the notebook goes to ``lessons/`` without outputs, with
ids ``cell-00, cell-01, ...`` (a rebuild changes only the cells that were edited), and is
then formatted by ruff as the project's lint requires. ``tests/test_lessons.py`` rebuilds
every lesson and checks that the committed notebook is what its builder writes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

LESSONS = Path(__file__).resolve().parents[1]
METADATA = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def markdown(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip("\n"))


def code_cell(text: str) -> nbformat.NotebookNode:
    return new_code_cell(text.strip("\n"))


class Cells(list):
    """Cells in order: ``md(text)`` and ``code(text)`` append one."""

    def md(self, text: str) -> None:
        self.append(markdown(text))

    def md_split(self, text: str) -> None:
        """A markdown cell; a prediction prompt starts a cell of its own (tests/test_lesson_claims.py)."""
        head, prompt, rest = text.partition("\n**Predict.**")
        self.md(head)
        if prompt:
            self.md("**Predict.**" + rest)

    def code(self, text: str) -> None:
        self.append(code_cell(text))


def write(name: str, cells: list) -> Path:
    """Write ``name`` from ``cells``, ruff-formatted, to ``lessons/`` (or to the folder given as
    the builder's first argument: the test's); returns its path."""
    out = (Path(sys.argv[1]) if len(sys.argv) > 1 else LESSONS) / name
    for number, cell in enumerate(cells):
        cell.id = f"cell-{number:02d}"
    nbformat.write(new_notebook(cells=list(cells), metadata=METADATA), out)
    ruff = Path(sys.executable).parent / "ruff"
    config = LESSONS.parent / "pyproject.toml"  # the project's settings wherever the notebook goes
    subprocess.run(
        [str(ruff if ruff.exists() else "ruff"), "format", "--quiet", "--config", str(config), str(out)],
        check=True,
    )
    print(f"wrote {out}")
    return out
