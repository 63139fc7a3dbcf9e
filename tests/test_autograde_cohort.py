"""Grades an instructor can stand behind: the same inputs and scores at every regrade, a cohort in parallel.

The hidden inputs come from ``rng_for``, keyed by HMAC(course secret, student id): fixed per
student, different between students, unknown without the secret. ``python -m dlcourse.grading
cohort`` grades every submission in its own workspace, two at a time here, and merges the
grades into the course's gradebook; ``merge`` does the same for jobs run elsewhere (a Slurm
array, Kubernetes Jobs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "assignments"))

from grading_helpers import Course, patched, with_cell_after  # noqa: E402
from negative_controls import CONTROLS  # noqa: E402

from dlcourse import grading  # noqa: E402

SECRET = "x" * 16 + " test secret"


def _draws(monkeypatch, key, task="A4.1", seed=0, n=5):
    if key is None:
        monkeypatch.delenv(grading.KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(grading.KEY_ENV, key)
    rng = grading.rng_for(task, seed)
    return [rng.random() for _ in range(n)]


def test_hidden_inputs_depend_on_the_key_task_and_case_only(monkeypatch):
    """Same key, task and case: the same draws (no clock); another student, task or case: others."""
    ann, bob = grading.grading_key(SECRET, "ann"), grading.grading_key(SECRET, "bob")
    assert _draws(monkeypatch, ann) == _draws(monkeypatch, ann)
    assert _draws(monkeypatch, ann) != _draws(monkeypatch, bob)
    assert _draws(monkeypatch, ann, task="A4.2") != _draws(monkeypatch, ann)
    assert _draws(monkeypatch, ann, seed=1) != _draws(monkeypatch, ann)
    # without a key (a student running the source notebook), fixed practice draws
    assert _draws(monkeypatch, None) == _draws(monkeypatch, grading.PRACTICE_KEY) != _draws(monkeypatch, ann)
    # the key hides the secret: another secret, other keys
    assert grading.grading_key(SECRET + "!", "ann") != ann
    assert SECRET not in ann


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_two_students_never_share_a_key(a, b):
    """HMAC of the student id: different ids, different keys; the same id, the same key."""
    assert (grading.grading_key(SECRET, a) == grading.grading_key(SECRET, b)) == (a == b)


def test_the_secret_and_the_key_check_their_arguments(tmp_path):
    with pytest.raises(ValueError, match="secret must be a str of at least 16"):
        grading.grading_key("short", "ann")
    with pytest.raises(ValueError, match="student must be a non-empty str"):
        grading.grading_key(SECRET, "")
    path = str(tmp_path / "course_secret")
    with pytest.raises(ValueError, match="does not exist: create the course secret"):
        grading.read_secret(path)
    grading.write_secret(path)
    first = grading.read_secret(path)
    assert len(first) == 64 and os.stat(path).st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="already holds a secret; rotate it with --force"):
        grading.write_secret(path)
    grading.write_secret(path, force=True)  # rotation: a new secret
    assert grading.read_secret(path) != first


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dlcourse.grading", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=3600,
    )


def test_the_grading_commands_refuse_bad_arguments_in_one_line(tmp_path):
    for args, words in (
        (["cohort", "a4_pipelines", "--jobs", "0"], "--jobs: must be an integer >= 1"),
        (["cohort", "a4_pipelines", "--course", str(tmp_path)], "no gradebook.db"),
        (["merge", "a4_pipelines"], "--workdir"),
        (["nonsense"], "invalid choice"),
    ):
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# A submission that records, in its own kernel, the inputs its A4.1 function is called with,
# and the environment its code sees (the student's key is there, the secret is not).
SPY = """
import os
if os.environ.get("DLCOURSE_SANDBOX") != "1":  # the kernel, not the judge's sandbox
    with open("environ.txt", "w") as f:
        f.write(repr(sorted(os.environ.items())))
    _cut = cut_into_stages
    def cut_into_stages(num_layers, num_stages):
        with open("inputs.txt", "a") as f:
            f.write(f"{num_layers} {num_stages}\\n")
        return _cut(num_layers, num_stages)
"""

NAME = "a4_pipelines"


def _snapshot(course: Course) -> dict:
    """Everything a grading leaves: scores per student, feedback pages, the spies' recorded inputs."""
    feedback = {
        p.parts[-3]: p.read_text() for p in sorted((course.path / "feedback").glob(f"*/{NAME}/{NAME}.html"))
    }
    inputs = {
        p.parts[-3]: p.read_text() for p in sorted((course.path / "autograded").glob(f"*/{NAME}/inputs.txt"))
    }
    return {"scores": course.scores(NAME), "feedback": feedback, "inputs": inputs}


def _grade_rows(course: Course) -> int:
    import sqlite3

    with sqlite3.connect(course.path / "gradebook.db") as db:
        return db.execute("select count(*) from grade").fetchone()[0]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_cohort_graded_twice_in_parallel_gets_identical_grades_and_feedback(tmp_path):
    """A regrade: same gradebook and feedback; two students, two inputs; a crash reported; a safe merge."""
    course = Course(tmp_path / "course", secret=SECRET)
    course.generate(NAME)
    source = course.source_notebook(NAME)
    ceil_control = next(row for row in CONTROLS[NAME] if row[0].startswith("stages sized ceil"))
    spy = with_cell_after(source, "a4_1", SPY)
    for student, nb in {
        "reference": source,
        "spy_ann": spy,
        "spy_bob": spy,
        "ceil_stages": patched(source, *ceil_control[1:4]),
    }.items():
        course.submit(student, NAME, nb)
        (course.path / "submitted" / student / NAME / "timestamp.txt").write_text("2026-12-01 12:00:00 UTC")
    crash = course.path / "submitted" / "crash" / NAME
    crash.mkdir(parents=True)
    (crash / f"{NAME}.ipynb").write_text("{ this is not a notebook")

    first = _cli("cohort", NAME, "--jobs", "2", "--course", str(course.path))
    assert first.returncode == 1, first.stdout + first.stderr  # one submission failed
    assert "FAILED crash" in first.stdout and "4 graded, 1 failed" in first.stdout, first.stdout
    once = _snapshot(course)
    rows = _grade_rows(course)

    max_scores = course.max_scores(NAME)
    assert set(once["scores"]) == {"reference", "spy_ann", "spy_bob", "ceil_stages"}
    for student in ("reference", "spy_ann", "spy_bob"):
        assert once["scores"][student] == max_scores, student
    lost = {k for k, v in once["scores"]["ceil_stages"].items() if v < max_scores[k]}
    assert lost == set(ceil_control[4])
    assert set(once["feedback"]) == set(once["scores"])
    # the same notebook, two students: different hidden inputs (the visible case is shared)
    assert once["inputs"]["spy_ann"] != once["inputs"]["spy_bob"]
    assert once["inputs"]["spy_ann"].startswith("5 2\n")
    # the student's code saw its key, never the secret; neither the release nor feedback holds it
    environ = (course.path / "autograded" / "spy_ann" / NAME / "environ.txt").read_text()
    assert grading.KEY_ENV in environ and grading.grading_key(SECRET, "spy_ann") in environ
    assert SECRET not in environ
    # ... nor any file of the jobs' workspaces: each holds its student's key, not the secret
    for folder in ("release", "feedback", "autograded", "cohort"):
        for path in (course.path / folder).rglob("*"):
            assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path

    second = _cli("cohort", NAME, "--jobs", "2", "--course", str(course.path))
    assert second.returncode == 1 and "4 graded, 1 failed" in second.stdout, second.stdout
    again = _snapshot(course)
    assert again["scores"] == once["scores"], "a regrade changed scores"
    assert again["inputs"] == once["inputs"], "a regrade changed the hidden inputs"
    for student, html in once["feedback"].items():
        if again["feedback"][student] != html:
            import difflib

            diff = difflib.unified_diff(
                html.splitlines(), again["feedback"][student].splitlines(), lineterm=""
            )
            pytest.fail(f"a regrade changed {student}'s feedback:\n" + "\n".join(list(diff)[:40]))
    assert _grade_rows(course) == rows, "a regrade added grades"

    # the scheduler's path: the jobs' results merged into another copy of the course
    other = Course(tmp_path / "other", secret=SECRET)
    other.generate(NAME)
    workdir = course.path / "cohort" / NAME
    for _ in range(2):  # merging twice leaves what merging once does
        merged = _cli("merge", NAME, "--course", str(other.path), "--workdir", str(workdir))
        assert merged.returncode == 0 and "merged 4:" in merged.stdout, merged.stdout + merged.stderr
        assert other.scores(NAME) == once["scores"]
        assert _grade_rows(other) == _grade_rows(course)
    shutil.rmtree(workdir)


@pytest.mark.slow  # generate_assignment: about 10 s alone, more on a loaded machine
def test_merge_replaces_a_students_grades_and_keeps_a_graders_score(tmp_path):
    """Merging one job's result twice, then a regrade's: one grade per cell, the last scores, manual kept."""
    from nbgrader.api import Gradebook

    from dlcourse.cohort import merge_result

    course = Course(tmp_path / "course", secret=SECRET)
    course.generate(NAME)
    cells = course.max_scores(NAME)
    graded = tmp_path / "graded"
    graded.mkdir()
    (graded / f"{NAME}.ipynb").write_text("{}")

    def result(score):
        grades = {name: [score * points, False] for name, points in cells.items()}
        notebook = {"late_submission_penalty": None, "grades": grades, "comments": {}}
        return {"student": "ann", "timestamp": "2026-12-01T12:00:00", "notebooks": {NAME: notebook}}

    merge_result(course.path, NAME, result(1.0), graded)
    rows = _grade_rows(course)
    merge_result(course.path, NAME, result(1.0), graded)
    assert _grade_rows(course) == rows == len(cells)
    assert course.scores(NAME) == {"ann": cells}
    with Gradebook(f"sqlite:///{course.path / 'gradebook.db'}") as gb:  # a grader's own score
        gb.find_grade("test_a4_1", NAME, NAME, "ann").manual_score = 1.5
        gb.db.commit()
    merge_result(course.path, NAME, result(0.0), graded)  # a regrade that earns nothing
    with Gradebook(f"sqlite:///{course.path / 'gradebook.db'}") as gb:
        grades = {g.name: g for g in gb.find_submission_notebook(NAME, NAME, "ann").grades}
        assert {name: g.auto_score for name, g in grades.items()} == {name: 0.0 for name in cells}
        assert grades["test_a4_1"].manual_score == 1.5 and grades["test_a4_1"].needs_manual_grade
        assert not any(g.needs_manual_grade for name, g in grades.items() if name != "test_a4_1")
    assert (course.path / "autograded" / "ann" / NAME / f"{NAME}.ipynb").exists()
    assert _grade_rows(course) == rows
