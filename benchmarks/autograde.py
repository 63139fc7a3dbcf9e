"""How long nbgrader takes to autograde one submission (the reference solution) of each assignment.

Runs the real pipeline in a temporary course (``tests/grading_helpers.py``): generate the
assignment, submit the source notebook as one student, ``nbgrader autograde`` it; prints the
median of ``--repeats`` runs per assignment. That time includes executing the notebook in a
kernel and the isolated regrade (judge + sandbox). The target: under 60 s on 2 cores.
The peer, measured in the same run: executing the same notebook once in a kernel (nbclient,
no grading); the ratio is what grading costs on top of running the student's notebook.

    python benchmarks/autograde.py [--repeats 3] [--only a2_staleness]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from grading_helpers import NAMES, Course  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=NAMES, action="append")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    print(f"{'assignment':<22} {'median s':>9}  {'runs (s)':<17} {'execute s':>9} {'ratio':>6}  score")
    for name in args.only or NAMES:
        times, peers, score = [], [], None
        for _ in range(args.repeats):
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


if __name__ == "__main__":
    main()
