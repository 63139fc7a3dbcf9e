"""The lessons and nbgrader in JupyterLab, in a real (headless) Chromium, as on Binder.

One JupyterLab for the lessons, set up as on Binder (``binder/postBuild`` with HOME in a
temporary folder, started through ``binder/start``) and pinned to one CPU with ``taskset``.
For every ``lessons/*.ipynb``: open it, Run All, wait for the kernel, check that no cell shows
an error and every code cell ran; move the N slider of every panel with the keyboard and check
that its status and figure change. Each lesson's run time and the peak PSS of its kernel and
the kernel's children must stay under Binder's limits (4 minutes, 2 GB); the table goes to
``build/browser/resources.txt``, screenshots to ``build/browser/``.

Then the instructor's view (formgrader lists the assignments of ``assignments/source``) and
the student's (the assignment list fetches a release, and Validate runs its tests).

Without Chromium (``apt-get install chromium``) these tests skip; under ``CI=true`` (.ci/run)
they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.error
from pathlib import Path

import psutil
import pytest
from browser_lab import (
    CELLS_JS,
    ROOT,
    SCROLLER,
    LabServer,
    PeakPss,
    binder_home,
    instructor_env,
    menu,
    move_n_sliders,
    need_browser,
    open_notebook,
    run_all,
    whole_notebook_screenshot,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.serial]  # times a CPU of its own

LESSONS = sorted(p.name for p in (ROOT / "lessons").glob("*.ipynb"))
OUT = ROOT / "build" / "browser"
LIMIT_S = 4 * 60  # Binder shuts an idle session after 10 minutes; a lesson should not come close
LIMIT_MB = 2048  # Binder's memory limit: beyond it the kernel is killed
VIEW = {"width": 1400, "height": 900}
RESULTS: dict[str, dict] = {}  # lesson -> measured numbers, for resources.txt


@pytest.fixture(scope="module")
def browser():
    need_browser()
    from browser_lab import CHROMIUM
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        # --no-sandbox: Chromium's sandbox needs user namespaces, absent in most containers
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def binder_env(tmp_path_factory):
    return binder_home(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def lesson_server(browser, binder_env, tmp_path_factory):
    """JupyterLab on a copy of lessons/ (the committed notebooks stay without outputs)."""
    root = tmp_path_factory.mktemp("lab-root")
    shutil.copytree(ROOT / "lessons", root / "lessons", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    server = LabServer(root, binder_env, tmp_path_factory.mktemp("lab"))
    yield server
    server.stop()
    _write_table()


def _write_table() -> None:
    if not RESULTS:
        return
    lines = [
        "Lessons in JupyterLab (headless Chromium), server and kernels pinned to one CPU (taskset).",
        f"Limits checked: run time < {LIMIT_S} s, peak PSS of kernel + children < {LIMIT_MB} MB.",
        "",
        f"{'lesson':<36} {'open s':>7} {'run s':>7} {'peak PSS MB':>12} {'processes':>10}",
        "(processes: the most seen at once, the kernel included)",
    ]
    for name, r in RESULTS.items():
        lines.append(
            f"{name:<36} {r['open_s']:>7.1f} {r['run_s']:>7.1f} {r['peak_mb']:>12.0f} {r['processes']:>10}"
        )
    moves = [f"  {name}: {m}" for name, r in RESULTS.items() for m in r.get("panels", [])]
    if moves:
        lines += ["", "N slider moved with the keyboard (seconds until status and figure changed):", *moves]
    (OUT / "resources.txt").write_text("\n".join(lines) + "\n")


def test_token_is_required(lesson_server):
    assert lesson_server.status_without_token("/api/contents") == 403
    assert lesson_server.status_without_token("/lab") in (302, 403)  # to the login page
    assert lesson_server.api("/api/contents/lessons")["type"] == "directory"
    tracker = lesson_server.api("/lab/api/settings/@jupyterlab/notebook-extension:tracker")
    assert tracker["settings"]["windowingMode"] == "none"
    assert lesson_server.pinned or not hasattr(os, "sched_getaffinity")


@pytest.mark.timeout(LIMIT_S + 300)
@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_in_jupyterlab(lesson, browser, lesson_server):
    stem = Path(lesson).stem
    page = browser.new_page(viewport=VIEW)
    try:
        start = time.monotonic()
        open_notebook(page, lesson_server, f"lessons/{lesson}", workspace=stem)
        opened = time.monotonic() - start
        if lesson_server.pinned:  # the kernel (and every worker it starts) inherits the one CPU
            assert [len(psutil.Process(k).cpu_affinity()) for k in lesson_server.kernel_pids()] == [1]
        with PeakPss(lesson_server) as pss:
            run_s = run_all(page, timeout=LIMIT_S + 120)
        cells = page.evaluate(CELLS_JS)
        RESULTS[lesson] = {
            "open_s": opened,
            "run_s": run_s,
            "peak_mb": pss.peak_mb,
            "processes": pss.peak_processes,
        }
        _write_table()
        page.evaluate("s => document.querySelector(s).scrollTo(0, 0)", SCROLLER)
        page.screenshot(path=str(OUT / f"{stem}.png"))
        whole_notebook_screenshot(page, OUT / f"{stem}-whole.png")

        errors = [f"cell {c['index']} ({c['source']!r}): {e}" for c in cells for e in c["errors"]]
        assert not errors, f"{lesson} shows errors:\n" + "\n".join(errors)
        not_run = [f"cell {c['index']} ({c['source']!r})" for c in cells if c["count"] is None]
        assert not not_run, f"{lesson}: code cells without an execution count:\n" + "\n".join(not_run)
        assert run_s < LIMIT_S, f"{lesson} took {run_s:.0f} s on one CPU (the limit: {LIMIT_S} s)"
        assert pss.peak_mb < LIMIT_MB, f"{lesson}: kernel and children peaked at {pss.peak_mb:.0f} MB PSS"

        moved = move_n_sliders(page, OUT / stem)
        RESULTS[lesson]["panels"] = moved
        _write_table()
    finally:
        page.close()
        lesson_server.shutdown_sessions()


# --- nbgrader: the instructor's view and the student's ------------------------------------------


def _folders(path: Path) -> list[str]:
    return (
        sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if path.is_dir()
        else []
    )


@pytest.mark.timeout(300)
def test_formgrader_lists_the_assignments(browser, tmp_path):
    names = _folders(ROOT / "assignments" / "source")
    assert names, "assignments/source holds no assignment folder"
    course = tmp_path / "course"  # a copy: the formgrader writes its gradebook into the course
    skip = shutil.ignore_patterns("gradebook.db", "autograded", "submitted", "feedback", ".ipynb_checkpoints")
    shutil.copytree(ROOT / "assignments", course, ignore=skip)
    home = tmp_path / "home"  # no postBuild here: the instructor's full view
    (home / ".jupyter").mkdir(parents=True)
    (home / ".jupyter" / "nbgrader_config.py").write_text(
        f"c = get_config()  # noqa: F821\nc.Exchange.root = {str(tmp_path / 'exchange')!r}\n"
    )
    (tmp_path / "exchange").mkdir()
    server = LabServer(course, instructor_env(home), tmp_path / "lab", pin=False)
    page = browser.new_page(viewport=VIEW)
    try:
        page.goto(server.lab_url("", "formgrader"))
        menu(page, "Nbgrader", "Formgrader")
        table = page.frame_locator("iframe").first
        for name in names:
            table.locator("td.name", has_text=re.compile(f"^{re.escape(name)}$")).first.wait_for(
                timeout=120_000
            )
        page.screenshot(path=str(OUT / "formgrader.png"))
    finally:
        page.close()
        server.stop()


@pytest.mark.timeout(420)
def test_student_view_fetches_and_validates(browser, binder_env, tmp_path):
    released = _folders(ROOT / "assignments" / "release")
    if not released:
        pytest.skip(
            "assignments/release holds no released assignment (nbgrader generate_assignment makes them)"
        )
    student = tmp_path / "student"
    student.mkdir()
    server = LabServer(student, binder_env, tmp_path / "lab", pin=False)
    page = browser.new_page(viewport=VIEW)
    try:
        page.goto(server.lab_url("", "student"))
        # the student view: the instructor's menu items and the formgrader's pages are gone
        page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").first.click()
        items = [t for t in page.locator(".lm-Menu-itemLabel").all_inner_texts() if t.strip()]
        page.keyboard.press("Escape")
        assert items == ["Assignment List"], items
        with pytest.raises(urllib.error.HTTPError, match="404"):
            server.api("/formgrader")
        menu(page, "Nbgrader", "Assignment List")
        for name in released:  # postBuild put every release in the exchange
            page.locator("#released_assignments_list .list_item", has_text=name).first.wait_for(
                timeout=60_000
            )
        name = released[0]
        page.locator("#released_assignments_list .list_item", has_text=name).locator(
            "button", has_text="Fetch"
        ).click()
        fetched = page.locator("#fetched_assignments_list .list_item", has_text=name).first
        fetched.wait_for(timeout=60_000)
        assert sorted(p.name for p in (student / name).glob("*.ipynb")), (
            f"fetch put no notebook in {student / name}"
        )
        fetched.locator(".assignment-notebooks-link").click()
        start = time.monotonic()
        fetched.locator(".nested_list_item button", has_text="Validate").first.click()
        dialog = page.locator(".jp-Dialog").first
        dialog.wait_for(timeout=300_000)
        took = time.monotonic() - start
        page.screenshot(path=str(OUT / "student-validate.png"))
        text = dialog.inner_text()
        # a release has no solutions: its tests fail, and Validate says which
        assert "Validation Results" in text and "failed" in text, text[:2000]
        print(f"validate of {name} (release, no solutions) took {took:.0f} s")
    finally:
        page.close()
        server.stop()
