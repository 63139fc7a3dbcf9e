"""The five nbgrader assignments, graded by the real nbgrader pipeline in a temporary course.

For every assignment, one ``nbgrader autograde`` call grades: the reference solution (full
marks), the release as given (0, no crash), every negative control (loses exactly the
points its row in ``assignments/negative_controls`` names) and every gaming submission of
``assignments/gaming`` (no more than the release). The release has no solution and no
hidden test, ``nbgrader validate --invert`` says every test fails on it, the feedback names
failed tests without the hidden tests' source, and the committed sources and release equal
what ``build_sources.py`` and ``generate_assignment`` produce today.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "assignments"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import build_sources  # noqa: E402
from gaming import GAMES, LIBRARY_CALLS, library_calls  # noqa: E402
from grading_helpers import NAMES, Course, patched  # noqa: E402
from negative_controls import CONTROLS  # noqa: E402


def _strip(nb: nbformat.NotebookNode) -> str:
    nb = nbformat.from_dict(nb)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    return nbformat.writes(nb)


def test_sources_equal_the_builder(tmp_path):
    build_sources.build(tmp_path)
    for name in NAMES:
        want = (tmp_path / name / f"{name}.ipynb").read_text()
        got = (ROOT / "assignments" / "source" / name / f"{name}.ipynb").read_text()
        assert got == want, f"{name}: run python assignments/build_sources.py"
        # the checks come from the installed package: no folder carries a copy a student could edit
        for folder in ("source", "release"):
            assert not (ROOT / "assignments" / folder / name / "grading.py").exists()


def test_every_task_names_itself_in_its_stub():
    for name, cells in build_sources.ASSIGNMENTS.items():
        for c in cells:
            if c.metadata.get("nbgrader", {}).get("solution"):
                assert 'raise NotImplementedError("A' in c.source.split("### END SOLUTION")[-1], (name, c.id)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    course = Course(tmp_path_factory.mktemp("course"))
    for name in NAMES:
        course.generate(name)
    return course


@pytest.mark.slow
def test_release_is_committed_as_generated(released):
    for name in NAMES:
        committed = ROOT / "assignments" / "release" / name
        generated = released.path / "release" / name
        assert sorted(p.name for p in committed.iterdir()) == sorted(p.name for p in generated.iterdir())
        for p in generated.iterdir():
            assert (committed / p.name).read_text() == p.read_text(), f"regenerate {committed / p.name}"


@pytest.mark.slow
def test_release_has_no_solution_and_no_hidden_test(released):
    for name in NAMES:
        text = (released.path / "release" / name / f"{name}.ipynb").read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "hidden_test(", "_hidden"):
            assert marker not in text, (name, marker)
        assert text.count('raise NotImplementedError(\\"A') >= 4


@pytest.mark.slow
def test_validate_invert_says_every_test_fails_on_the_release(released):
    for name in NAMES:
        proc = released.nbgrader(
            "validate", "--invert", str(released.path / "release" / name / f"{name}.ipynb"), check=False
        )
        out = proc.stdout + proc.stderr
        assert "Success! The notebook does not pass any tests." in out, out[-2000:]


def _grade(tmp_path, name: str, extra_students: dict, timeout: int | None = None, reference: bool = True):
    course = Course(tmp_path / "course", timeout=timeout)
    course.generate(name)
    source, release = course.source_notebook(name), course.release_notebook(name)
    if reference:
        course.submit("reference", name, source)
    course.submit("release", name, release)
    for student, make in extra_students.items():
        course.submit(student, name, make(release, source))
    proc = course.autograde(name, check=False)  # a submission that kills its kernel is still graded
    scores = course.scores(name)
    missing = set(extra_students) | {"release"} | ({"reference"} if reference else set())
    assert missing <= set(scores), f"not graded: {missing - set(scores)}\n{proc.stderr[-3000:]}"
    return course, scores, course.max_scores(name)


def _controls(name):
    return {
        f"control{i}": (lambda rel, src, row=row: patched(src, row[1], row[2], row[3]))
        for i, row in enumerate(CONTROLS[name])
    }


# Every game on A2 (no process launches in its visible tests: the cheapest to grade, and the one
# with the infinite loop, which needs the short timeout); on the others, the games whose outcome
# depends on the assignment's own cells (its tests edited, its library references called).
GAMES_FOR = {name: ("tests_edited",) for name in NAMES}
GAMES_FOR["a2_staleness"] = tuple(GAMES)


def check_reference_release_controls_and_gaming(tmp_path, name):
    """One autograde of every submission of ``name``, then what each must have earned.

    Called by ``tests/test_autograde_<name>.py``: one file per assignment, so that make test's
    workers (xdist, a file at a time) share the four autogrades of several minutes each.
    """
    controls = _controls(name)
    games = {g: GAMES[g] for g in GAMES_FOR[name]}
    games["library_calls"] = lambda rel, src: library_calls(name, src)
    timeout = 60 if "infinite_loop" in games else None  # the loop costs this much per call
    course, scores, max_scores = _grade(tmp_path, name, {**controls, **games}, timeout=timeout)

    assert scores["reference"] == max_scores, "the reference solution earns full marks"
    assert set(scores["release"].values()) == {0.0}, "the release as given earns 0"
    for i, (label, _, _, _, loses) in enumerate(CONTROLS[name]):
        lost = {k for k, v in scores[f"control{i}"].items() if v < max_scores[k]}
        assert lost == set(loses), f"negative control {label!r} lost {sorted(lost)}, expected {loses}"
        assert all(scores[f"control{i}"][k] in (0.0, max_scores[k]) for k in max_scores)

    release_total = sum(scores["release"].values())
    for student in GAMES_FOR[name]:
        got = scores.get(student, {})
        assert sum(got.values()) <= release_total, f"{student} earned {got}"
    # a function that just calls the library's reference earns nothing for its task
    for cell_id in LIBRARY_CALLS[name]:
        assert scores["library_calls"][f"test_{cell_id}"] == 0.0, (cell_id, scores["library_calls"])
    if name == "a2_staleness":
        # the input transformer fooled the kernel (its test cells became `pass`): the judge failed them
        graded = course.path / "autograded" / "input_transformer" / name / f"{name}.ipynb"
        outputs = [o for c in nbformat.read(graded, as_version=4).cells for o in c.get("outputs", [])]
        assert any(o.get("ename") == "IsolatedRegradeError" for o in outputs)

    # feedback: failed tests are named, hidden tests' source is not shown
    course.nbgrader("generate_feedback", name, "--force")
    for i, (label, _, _, _, loses) in enumerate(CONTROLS[name]):
        html = (course.path / "feedback" / f"control{i}" / name / f"{name}.html").read_text()
        for grade_id in loses:  # "test_a2_3" -> the cell's docstring starts "A2.3:"
            task = grade_id.removeprefix("test_").upper().replace("_", ".", 1).replace("_", ".")
            assert f"{task}:" in html, (label, task)
        assert "Error" in html or "hidden test failed" in html, label
        for hidden in ("_hidden", "BEGIN HIDDEN TESTS", "_reference_round", "_reference_bubble", "rng_for("):
            assert hidden not in html, (label, hidden)


def _judge(tmp_path, solution: str) -> dict:
    """Verdicts of ``python -m dlcourse.grading judge`` on a two-task notebook solved by ``solution``."""
    import json
    import subprocess

    def meta(grade_id, **kw):
        return {"nbgrader": {"grade_id": grade_id, "schema_version": 3, "task": False, **kw}}

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from dlcourse.grading import expect_equal, hidden_test",
            metadata=meta("setup", grade=False, solution=False, locked=True),
        ),
        nbformat.v4.new_code_cell(solution, metadata=meta("s1", grade=False, solution=True, locked=False)),
        nbformat.v4.new_code_cell(
            "expect_equal(double(2), 4, 'double(2)')",
            metadata=meta("t1", grade=True, solution=False, locked=True, points=1),
        ),
        nbformat.v4.new_code_cell(
            "assert double(21) == 42",
            metadata=meta("t2", grade=True, solution=False, locked=True, points=1),
        ),
    ]
    path, out = tmp_path / "nb.ipynb", tmp_path / "verdicts.json"
    nbformat.write(nb, path)
    subprocess.run(
        [sys.executable, "-m", "dlcourse.grading", "judge", str(path), str(out), "30"],
        cwd=tmp_path,
        check=True,
        timeout=300,
    )
    return {k: v["ok"] for k, v in json.loads(out.read_text()).items()}


@pytest.mark.slow
def test_judge_is_not_fooled_by_what_student_code_does(tmp_path):
    """Patched checks, an int whose == is always true, os._exit: the judge fails them all."""
    assert _judge(tmp_path, "def double(x):\n    return 2 * x") == {"t1": True, "t2": True}
    patching = (
        "import dlcourse.grading as grading, builtins\n"
        "grading.expect_equal = lambda *a, **k: None\n"
        "class Yes(int):\n"
        "    def __eq__(self, other): return True\n"
        "def double(x):\n"
        "    return Yes(0)\n"
    )
    assert _judge(tmp_path, patching) == {"t1": False, "t2": False}
    exiting = "import os\ndef double(x):\n    os._exit(0)"
    assert _judge(tmp_path, exiting) == {"t1": False, "t2": False}
