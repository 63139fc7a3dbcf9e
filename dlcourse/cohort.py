"""Grade a whole cohort: one isolated ``nbgrader autograde --student`` per submission, in parallel.

nbgrader grades a class one notebook after another (``nbgrader autograde ASSIGNMENT``), about
half a minute each here: a class of 200 with four assignments is hours. The submissions are
independent, so this module grades them side by side, each in a **workspace** of its own
(a copy of the course's config, the assignment's source, the gradebook as
``generate_assignment`` left it, and that one student's submission). No two jobs share a
file, so none can corrupt another's gradebook or see another's notebook. Each job leaves a
``result.json`` (the grades nbgrader saved in its private gradebook) and its graded notebook;
the **merge** then writes them into the course's gradebook, one at a time, replacing what a
previous grading of the same student wrote (a regrade never doubles a grade, and two jobs
finishing together are merged one after the other). A job that fails (nbgrader's error, a
notebook it cannot read, a timeout) is reported by student; the others are graded and merged.

The same per-student job runs on a scheduler (a Slurm job array, Kubernetes Jobs): every task
runs ``grade_one`` for its student into a shared work folder, and one ``merge`` at the end;
``assignments/README.md`` has the scripts. Used from ``python -m dlcourse.grading cohort |
grade-one | merge`` (:mod:`dlcourse.grading`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from dlcourse._validate import check_int

COURSE_FILES = ("nbgrader_config.py", "regrade.py")  # copied into each workspace
TEMPLATE = "gradebook-template.db"  # the gradebook as generate_assignment left it, read-only
KEYS = "grading_keys.json"  # {student: grading key}; a workspace gets its student's key only


@dataclass
class JobResult:
    """One student's grading job: ``ok``, the seconds it took, and why it failed (one line)."""

    student: str
    ok: bool
    seconds: float
    error: str = ""


@dataclass
class CohortReport:
    """What ``grade_cohort`` did: every job, in student order, and the wall time of the whole."""

    assignment: str
    jobs: int
    results: list[JobResult] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if not r.ok]

    def __repr__(self) -> str:
        graded = len(self.results) - len(self.failed)
        return (
            f"CohortReport({self.assignment}, jobs={self.jobs}, graded={graded}, "
            f"failed={[r.student for r in self.failed]}, wall_s={self.wall_s:.1f})"
        )


def submitted_students(course: Path, assignment: str) -> list[str]:
    """The students with a submission of ``assignment`` (``submitted/<student>/<assignment>/``)."""
    root = Path(course) / "submitted"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / assignment).is_dir())


def _nbgrader() -> str:
    return str(Path(sys.executable).parent / "nbgrader")


def check_course(course: Path, assignment: str) -> None:
    """ValueError unless ``course`` has a gradebook and a source folder of ``assignment``."""
    db = course / "gradebook.db"
    if not db.exists():
        raise ValueError(f"course has no gradebook.db at {db}: run nbgrader generate_assignment {assignment}")
    if not (course / "source" / assignment).is_dir():
        raise ValueError(f"assignment {assignment!r} has no source folder in {course / 'source'}")


def prepare(course: Path, assignment: str, workdir: Path, keys: dict[str, str] | None = None) -> Path:
    """Copy the course's gradebook into ``workdir`` once (the template every job starts from).

    ``keys``: every student's grading key (``dlcourse.grading.grading_key``), written to
    ``workdir/grading_keys.json``. The jobs' workspaces then hold their student's key, never
    the course secret: a job (a container, a cluster node) needs no access to the secret.
    """
    course, workdir = Path(course), Path(workdir)
    check_course(course, assignment)
    db = course / "gradebook.db"
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(db, workdir / TEMPLATE)
    if keys is not None:
        fd = os.open(workdir / KEYS, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keys, f, indent=1, sort_keys=True)
    return workdir / TEMPLATE


def _read_grades(db: Path, assignment: str, student: str) -> dict:
    """The grades nbgrader saved for ``student`` in the gradebook ``db`` (plain data)."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db}") as gb:
        sub = gb.find_submission(assignment, student)
        return {
            "student": student,
            "timestamp": sub.timestamp.isoformat() if sub.timestamp else None,
            "notebooks": {
                nb.name: {
                    "late_submission_penalty": nb.late_submission_penalty,
                    "grades": {g.name: [g.auto_score, g.needs_manual_grade] for g in nb.grades},
                    "comments": {c.name: c.auto_comment for c in nb.comments},
                }
                for nb in sub.notebooks
            },
        }


def grade_one(
    course: Path,
    assignment: str,
    student: str,
    workdir: Path,
    timeout: float = 3600.0,
    threads: int | None = None,
) -> JobResult:
    """Autograde one student's submission in its own workspace ``workdir/<student>``.

    Needs ``workdir/gradebook-template.db`` (:func:`prepare`). Leaves ``result.json`` and
    ``autograded/<student>/<assignment>/`` there for :func:`merge`; the course is only read.
    """
    start = time.perf_counter()
    course, workdir = Path(course).resolve(), Path(workdir).resolve()
    space = workdir / student
    try:
        if space.exists():
            shutil.rmtree(space)
        space.mkdir(parents=True)
        for name in COURSE_FILES:
            if (course / name).exists():
                shutil.copy(course / name, space / name)
        if (workdir / KEYS).exists():  # this student's key only (regrade.SeedHiddenInputs reads it)
            key = json.loads((workdir / KEYS).read_text()).get(student)
            if key is None:
                raise RuntimeError(f"no grading key for {student!r} in {workdir / KEYS}: run prepare again")
            (space / KEYS).write_text(json.dumps({student: key}))
        elif (course / "course_secret").exists():  # no keys prepared: the job derives the key itself
            shutil.copy(course / "course_secret", space / "course_secret")
        shutil.copytree(course / "source" / assignment, space / "source" / assignment)
        shutil.copytree(
            course / "submitted" / student / assignment, space / "submitted" / student / assignment
        )
        shutil.copy(workdir / TEMPLATE, space / "gradebook.db")
        env = dict(
            os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
        )
        if threads is not None:  # jobs side by side: one core's share each, not every core each
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        with open(space / "nbgrader.log", "w") as log:
            proc = subprocess.Popen(
                [_nbgrader(), "autograde", assignment, "--student", student, "--force"],
                cwd=space,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its kernels and workers end with it on a timeout
            )
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise RuntimeError(f"grading took longer than {timeout:g} s") from None
        graded = space / "autograded" / student / assignment
        if code != 0 or not graded.is_dir():
            raise RuntimeError(
                f"nbgrader autograde failed (exit {code}): {_last_error(space / 'nbgrader.log')}"
            )
        result = _read_grades(space / "gradebook.db", assignment, student)
        if not any(nb["grades"] for nb in result["notebooks"].values()):
            raise RuntimeError("nbgrader saved no grade")
        (space / "result.json").write_text(json.dumps(result, indent=1, sort_keys=True))
        return JobResult(student, True, time.perf_counter() - start)
    except Exception as e:  # noqa: BLE001 - one student's failure is reported, the cohort goes on
        (space / "result.json").unlink(missing_ok=True)
        return JobResult(student, False, time.perf_counter() - start, f"{type(e).__name__}: {e}")


def _last_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "Error" in ln]
    return (errors or lines or ["no output"])[-1][:300]


def merge_result(course: Path, assignment: str, result: dict, graded: Path) -> None:
    """Write one job's grades into the course's gradebook and its graded notebook into ``autograded/``.

    The student's previous grades of ``assignment`` are replaced, never added to: merging the
    same result twice leaves the gradebook as merging it once. A grade a person gave by hand
    (``manual_score``) is kept and flagged for review, as nbgrader's own autograde does.
    """
    import warnings

    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    course, student = Path(course), result["student"]
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb, warnings.catch_warnings():
        # nbgrader's add_submission autoflushes half-built rows (it warns in its own autograde too)
        warnings.simplefilter("ignore", SAWarning)
        gb.update_or_create_student(student)
        kwargs = {"timestamp": result["timestamp"]} if result["timestamp"] else {}
        gb.update_or_create_submission(assignment, student, **kwargs)
        for notebook, data in result["notebooks"].items():
            nb = gb.find_submission_notebook(notebook, assignment, student)
            nb.late_submission_penalty = data["late_submission_penalty"]
            for name, (score, needs_manual) in data["grades"].items():
                grade = gb.find_grade(name, notebook, assignment, student)
                grade.auto_score = score
                grade.needs_manual_grade = bool(needs_manual or grade.manual_score is not None)
            for name, text in data["comments"].items():
                gb.find_comment(name, notebook, assignment, student).auto_comment = text
        gb.db.commit()
    target = course / "autograded" / student / assignment
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(graded, target)


def merge(course: Path, assignment: str, workdir: Path) -> list[str]:
    """Merge every finished job in ``workdir`` (a ``<student>/result.json`` each); returns the students."""
    merged = []
    for result_file in sorted(Path(workdir).glob("*/result.json")):
        result = json.loads(result_file.read_text())
        graded = result_file.parent / "autograded" / result["student"] / assignment
        merge_result(course, assignment, result, graded)
        merged.append(result["student"])
    return merged


def generate_feedback(course: Path, assignment: str) -> subprocess.CompletedProcess:
    """``nbgrader generate_feedback`` for every graded student (one call, in the course folder)."""
    return subprocess.run(
        [_nbgrader(), "generate_feedback", assignment, "--force"],
        cwd=course,
        capture_output=True,
        text=True,
        timeout=3600,
    )


def grade_cohort(
    course: Path,
    assignment: str,
    jobs: int = 2,
    workdir: Path | None = None,
    students: list[str] | None = None,
    feedback: bool = True,
    timeout: float = 3600.0,
    log=print,
    keys: dict[str, str] | None = None,
) -> CohortReport:
    """Autograde every submission of ``assignment`` with ``jobs`` isolated jobs at once, merge, feedback.

    ``course``: the nbgrader course folder (``gradebook.db`` from ``generate_assignment``,
    ``submitted/``). ``workdir``: where the jobs' workspaces go (default
    ``<course>/cohort/<assignment>``; kept afterwards for inspection). ``keys``: the students'
    grading keys (:func:`prepare`); ``python -m dlcourse.grading cohort`` derives them from
    the course secret, so that no workspace holds the secret.
    """
    jobs = check_int("jobs", jobs, low=1)
    course = Path(course).resolve()
    check_course(course, assignment)
    students = submitted_students(course, assignment) if students is None else list(students)
    if not students:
        raise ValueError(f"no submissions of {assignment!r} in {course / 'submitted'}")
    workdir = Path(workdir) if workdir is not None else course / "cohort" / assignment
    if workdir.exists():
        shutil.rmtree(workdir)  # results of an earlier grading must not be merged again
    prepare(course, assignment, workdir, keys)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    report = CohortReport(assignment, jobs)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(grade_one, course, assignment, s, workdir, timeout, threads) for s in students]
        for future in as_completed(futures):  # merged here, in this one thread: one writer
            job = future.result()
            if job.ok:
                space = workdir / job.student
                result = json.loads((space / "result.json").read_text())
                merge_result(course, assignment, result, space / "autograded" / job.student / assignment)
                log(f"graded {job.student} in {job.seconds:.1f} s")
            else:
                log(f"FAILED {job.student}: {job.error}")
            report.results.append(job)
    report.results.sort(key=lambda r: r.student)
    if feedback:
        proc = generate_feedback(course, assignment)
        if proc.returncode != 0:
            log(f"generate_feedback failed: {proc.stderr.strip().splitlines()[-1:]}")
    report.wall_s = time.perf_counter() - start
    return report
