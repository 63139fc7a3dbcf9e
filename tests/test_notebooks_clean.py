"""Notebooks are committed without outputs, and import the library instead of pasting it."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "lessons").glob("*.ipynb")) + sorted(
    (ROOT / "assignments" / "source").glob("*/*.ipynb")
)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"cells {dirty} of {path.name} have outputs: clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_dlcourse(path):
    nb = nbformat.read(path, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "dlcourse" in source, f"{path.name} should use the library, not paste it"


def test_there_is_a_first_lesson():
    assert (ROOT / "lessons" / "00_start_here.ipynb") in NOTEBOOKS
