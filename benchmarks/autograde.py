"""How long nbgrader takes to autograde: one submission, or a whole cohort in parallel.

Runs the real pipeline in a temporary course (``tests/grading_helpers.py``: generate the
assignment, submit, autograde).

**One submission** (default): the reference solution of each assignment, the median of
``--repeats`` runs. That time includes executing the notebook in a kernel and the isolated
regrade (judge + sandbox). The peer, measured in the same run: executing the same notebook
once in a kernel (nbclient, no grading); the ratio is what grading costs on top of running it.

**A cohort** (``--cohort N``): N submissions of each assignment (the reference, the blank
release and every negative control, in turn), graded twice from the same gradebook and
secret: sequentially as nbgrader does (``nbgrader autograde ASSIGNMENT``: every student in one
process, one after another: the peer) and with ``python -m dlcourse.grading cohort --jobs J``
(isolated jobs side by side, merged). It prints both times, the seconds per submission, the
speed-up (sequential / parallel) and whether the two gradebooks hold the same grades.

    python benchmarks/autograde.py [--repeats 3] [--only a2_staleness]
    python benchmarks/autograde.py --cohort 30 --jobs 2 [--only a4_pipelines]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "assignments"))

from grading_helpers import NAMES, Course, patched  # noqa: E402


def _failures(path: Path) -> str:
    """The error outputs of a graded notebook's cells, one line each (when a run lost points)."""
    import nbformat

    lines = []
    for c in nbformat.read(path, as_version=4).cells:
        for o in c.get("outputs", []):
            if o.output_type == "error" or o.get("name") == "stderr":
                lines.append(
                    f"  {c.get('id')}: {o.get('ename', 'stderr')}: {(o.get('evalue') or o.get('text'))[:300]}"
                )
    return "\n".join(lines)


def _execute(path: Path) -> float:
    """Seconds to run the notebook once in a fresh kernel, in its folder (the peer: no grading)."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
    return time.perf_counter() - start


def one_submission(names, repeats: int) -> None:
    print(f"{'assignment':<22} {'median s':>9}  {'runs (s)':<17} {'execute s':>9} {'ratio':>6}  score")
    for name in names:
        times, peers, score = [], [], None
        for _ in range(repeats):
            with tempfile.TemporaryDirectory(prefix="dlcourse-bench-") as tmp:
                course = Course(Path(tmp))
                course.generate(name)
                course.submit("reference", name, course.source_notebook(name))
                peers.append(_execute(course.path / "source" / name / f"{name}.ipynb"))
                start = time.perf_counter()
                course.autograde(name)
                times.append(time.perf_counter() - start)
                scores = course.scores(name)["reference"]
                score = f"{sum(scores.values()):g}/{sum(course.max_scores(name).values()):g}"
                if scores != course.max_scores(name):
                    print(_failures(course.path / "autograded" / "reference" / name / f"{name}.ipynb"))
        runs = " ".join(f"{t:.1f}" for t in times)
        median, peer = statistics.median(times), statistics.median(peers)
        print(f"{name:<22} {median:>9.1f}  {runs:<17} {peer:>9.1f} {median / peer:>6.2f}  {score}")


def _cohort_course(path: Path, name: str, size: int) -> Course:
    """A course with ``size`` submissions of ``name``: reference, release, controls, in turn."""
    from negative_controls import CONTROLS

    course = Course(path)
    course.generate(name)
    source, release = course.source_notebook(name), course.release_notebook(name)
    kinds = [source, release] + [patched(source, row[1], row[2], row[3]) for row in CONTROLS[name]]
    for i in range(size):
        course.submit(f"s{i:03d}", name, kinds[i % len(kinds)])
    return course


def cohort(names, size: int, jobs: int) -> None:
    from dlcourse.cohort import grade_cohort
    from dlcourse.grading import grading_key

    print(f"{size} submissions each; sequential: one `nbgrader autograde`; parallel: cohort --jobs {jobs}")
    print(
        f"{'assignment':<22} {'n':>3} {'sequential s':>12} {'s/sub':>6} {'parallel s':>10} {'s/sub':>6} "
        f"{'speed-up':>8}  grades"
    )
    for name in names:
        with tempfile.TemporaryDirectory(prefix="dlcourse-bench-") as tmp:
            seq = _cohort_course(Path(tmp) / "sequential", name, size)
            par = _cohort_course(Path(tmp) / "parallel", name, size)
            start = time.perf_counter()
            seq.autograde(name, check=False)
            seq_s = time.perf_counter() - start
            a = seq.scores(name)
            start = time.perf_counter()
            keys = {s: grading_key(par.secret, s) for s in a}  # as `python -m dlcourse.grading cohort` does
            report = grade_cohort(par.path, name, jobs=jobs, feedback=False, log=lambda line: None, keys=keys)
            par_s = time.perf_counter() - start
            b = par.scores(name)
            same = "identical" if a == b and len(a) == size else f"DIFFER ({len(a)} vs {len(b)} graded)"
            if report.failed:
                same += f"; failed: {[r.student for r in report.failed]}"
            print(
                f"{name:<22} {size:>3} {seq_s:>12.1f} {seq_s / size:>6.1f} {par_s:>10.1f} "
                f"{par_s / size:>6.1f} {seq_s / par_s:>7.2f}x  {same}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=NAMES, action="append")
    parser.add_argument(
        "--cohort", type=int, default=0, help="submissions per assignment (0: one submission)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="parallel jobs of the cohort grading")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.cohort < 0 or args.jobs < 1:
        parser.error("--cohort must be >= 0 and --jobs >= 1")
    if args.cohort:
        cohort(args.only or NAMES, args.cohort, args.jobs)
    else:
        one_submission(args.only or NAMES, args.repeats)


if __name__ == "__main__":
    main()
