"""Every lesson teaches the same way: predict, run, a figure, an assert on the run, prose, exercises.

These read the committed notebooks (nbval runs them, see pyproject's testpaths); what they
check is the shape the issues ask of a lesson, so that a lesson cannot quietly lose it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(p for p in (ROOT / "lessons").glob("[0-9][0-9]_*.ipynb") if not p.name.startswith("00_"))
MIN_WORDS = 600  # of prose in markdown cells, code excluded


def _cells(path: Path, kind: str) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == kind]


def _assert_cells(path: Path) -> list[str]:
    return [src for src in _cells(path, "code") if re.search(r"^\s*assert\b", src, re.M)]


def _prose_words(path: Path) -> int:
    text = "\n".join(_cells(path, "markdown"))
    text = re.sub(r"```.*?```", " ", text, flags=re.S)  # code blocks are not prose
    return len(re.findall(r"[A-Za-z][A-Za-z'-]*", text))


def test_lessons_exist_in_order():
    """Lessons are numbered 01..07 after 00, without gaps."""
    numbers = [int(p.name[:2]) for p in LESSONS]
    assert numbers == list(range(1, len(numbers) + 1))


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_a_lesson_keeps_its_kernelspec(path):
    """Without a kernelspec JupyterLab opens a kernel chooser instead of a kernel (FACTS.md)."""
    assert nbformat.read(path, as_version=4).metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_a_lesson_checks_its_claims_with_at_least_three_real_asserts(path):
    """Each assert cell starts with a one-line docstring and asserts something that can fail."""
    cells = _assert_cells(path)
    assert len(cells) >= 3, f"{path.name} has {len(cells)} assert cells"
    for src in cells:
        tree = ast.parse(src)
        doc = ast.get_docstring(tree)
        assert doc and "\n" not in doc.strip(), (
            f"{path.name}: an assert cell lacks a one-line docstring:\n{src}"
        )
        for node in ast.walk(tree):
            if isinstance(node, ast.Assert):
                assert not isinstance(node.test, ast.Constant), (
                    f"{path.name}: `assert <constant>` cannot fail"
                )


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_a_lesson_draws_a_figure_or_panel_and_asks_to_predict(path):
    code = "\n".join(_cells(path, "code"))
    prose = "\n".join(_cells(path, "markdown")).lower()
    assert "dlcourse.viz" in code or "matplotlib" in code, f"{path.name} shows no figure or panel"
    assert prose.count("predict") >= 2, f"{path.name} should ask the student to predict before running"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_a_lesson_explains_in_prose_and_ends_with_exercises_and_references(path):
    words = _prose_words(path)
    assert words >= MIN_WORDS, f"{path.name} has {words} words of prose, fewer than {MIN_WORDS}"
    prose = "\n".join(_cells(path, "markdown"))
    exercises = prose[prose.lower().find("## exercises") :] if "## exercises" in prose.lower() else ""
    assert exercises, f"{path.name} has no '## Exercises' section"
    assert 3 <= exercises.count("<details>") <= 5, f"{path.name}: 3-5 exercises, each with a collapsed hint"
    assert "## references" in prose.lower(), f"{path.name} has no '## References' section"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_a_lesson_imports_the_library_and_pastes_none_of_it(path):
    """Functions the lesson defines are the student's own; the library's are imported."""
    code = "\n".join(_cells(path, "code"))
    assert "from dlcourse" in code or "import dlcourse" in code
    library = "\n".join(p.read_text() for p in (ROOT / "dlcourse").rglob("*.py"))
    defined = re.findall(r"^def (\w+)\(", code, re.M) + re.findall(r"^class (\w+)\b", code, re.M)
    pasted = [name for name in defined if re.search(rf"^\s*(def|class) {name}\b", library, re.M)]
    assert not pasted, f"{path.name} redefines library code: {pasted}"


def test_every_lesson_is_what_its_builder_writes(tmp_path):
    """The notebooks are generated: rebuilding each one gives the committed file, byte for byte."""
    import subprocess
    import sys

    notebooks = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
    for path in notebooks:
        builder = ROOT / "lessons" / "build" / f"{path.stem}.py"
        subprocess.run(
            [sys.executable, str(builder), str(tmp_path)], check=True, capture_output=True, timeout=120
        )
        built = tmp_path / path.name
        assert built.read_text() == path.read_text(), (
            f"run {builder.relative_to(ROOT)} and commit the notebook"
        )
    assert {p.stem for p in notebooks} == {
        p.stem for p in (ROOT / "lessons" / "build").glob("[0-9][0-9]_*.py")
    }
