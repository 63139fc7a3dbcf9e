"""Helpers of the browser tests: a JupyterLab server set up as on Binder, and Chromium driving it.

The server runs through ``binder/start`` (one thread per process, loopback gloo) with HOME in a
temporary folder where ``binder/postBuild`` has run (nbgrader's student view), pinned with
``taskset`` to one CPU, with token authentication on. Chromium is Debian's ``chromium``,
driven by Playwright's Python package (never a browser Playwright downloads).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package: `apt-get install chromium`
BIN = Path(sys.executable).parent


def need_browser() -> None:
    """Skip (fail under CI=true, where .ci/run installed Chromium) without Chromium or Playwright."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run does)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "Playwright's Python package is missing (pip install -e '.[dev]')"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests are required in CI: {reason}")
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_cpu() -> list[str]:
    """``taskset -c <cpu>``: this process's first allowed CPU (Binder gives one)."""
    if not shutil.which("taskset") or not hasattr(os, "sched_getaffinity"):
        return []
    return ["taskset", "-c", str(min(os.sched_getaffinity(0)))]


def instructor_env(home: Path) -> dict[str, str]:
    """This environment with HOME=``home`` and no Jupyter settings of the person running the tests."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONNOUSERSITE="1")
    env.pop("MPLBACKEND", None)  # the kernels choose the inline backend, as on Binder
    return env


def binder_home(home: Path) -> dict[str, str]:
    """Run ``binder/postBuild`` with HOME=``home``; return the environment of a Binder session."""
    env = instructor_env(home)
    done = subprocess.run(
        ["bash", str(ROOT / "binder" / "postBuild")],
        cwd=ROOT,
        env=env,
        timeout=300,
        capture_output=True,  # JupyterLab's notes on locking plugins, on every call
        text=True,
    )
    assert done.returncode == 0, f"binder/postBuild failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return env


def write_lab_settings(settings: Path) -> None:
    """JupyterLab user settings of the tests: every cell stays in the page, nothing autosaves."""
    files = {
        # "none": cells outside the view stay in the DOM, so the tests see every cell's output
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
        # no "would you like news?" toast over the notebook in the screenshots
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
    }
    for name, value in files.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


class LabServer:
    """``jupyter lab`` on a free loopback port, token on; ``stop()`` ends its process group."""

    def __init__(
        self, root: Path, env: dict[str, str], work: Path, *, pin: bool = True, bin_dir: Path = BIN
    ) -> None:
        self.root, self.port, self.token = root, free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        settings, workspaces = work / "lab-settings", work / "lab-workspaces"
        write_lab_settings(settings)
        workspaces.mkdir(parents=True, exist_ok=True)
        self.log_path = work / f"jupyterlab-{self.port}.log"
        self.pinned = one_cpu() if pin else []
        cmd = [
            *self.pinned,
            str(bin_dir / "jupyter"),
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={workspaces}",
            # lets the tests read the notebook model (outputs, execution counts); all actions are
            # clicks and keys, as a student makes them
            "--LabApp.expose_app_in_browser=True",
        ]
        if hasattr(os, "getuid") and os.getuid() == 0:
            cmd.append("--allow-root")  # containers run as root
        env = {**env, "JUPYTER_RUNTIME_DIR": str(work / "runtime")}
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                ["bash", str(ROOT / "binder" / "start"), *cmd],
                cwd=root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    def api(self, path: str, *, token: bool = True, method: str = "GET"):
        headers = {"Authorization": f"token {self.token}"} if token else {}
        req = urllib.request.Request(self.url + path, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def status_without_token(self, path: str) -> int:
        """The HTTP status of ``path`` without the token (redirects not followed)."""

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        try:
            with urllib.request.build_opener(NoRedirect).open(self.url + path, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.api("/api/status")
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"JupyterLab did not answer within 180 s:\n{self.log()}")

    def log(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def lab_url(self, path: str, workspace: str) -> str:
        # a workspace of its own per page: no tab of an earlier test is restored
        tree = f"/tree/{path}" if path else ""
        return f"{self.url}/lab/workspaces/{workspace}{tree}?token={self.token}"

    def kernel_pids(self) -> list[int]:
        """The server's kernels (its child processes running ipykernel)."""
        found = []
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if any("ipykernel" in part for part in p.cmdline()):
                    found.append(p.pid)
            except psutil.Error:
                pass
        return found

    def shutdown_sessions(self) -> None:
        for session in self.api("/api/sessions"):
            self.api(f"/api/sessions/{session['id']}", method="DELETE")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class PeakPss:
    """Samples the total PSS of the server's kernels and all their children until stopped.

    PSS (proportional set size) splits shared pages between the processes that map them, so
    a sum over processes is what they cost together (RSS would count torch's libraries once
    per worker).
    """

    def __init__(self, server: LabServer, interval: float = 0.25) -> None:
        self.server, self.interval = server, interval
        self.peak_mb, self.peak_processes = 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            total, count = 0, 0
            for pid in self.server.kernel_pids():
                try:
                    kernel = psutil.Process(pid)
                    for p in [kernel, *kernel.children(recursive=True)]:
                        total += p.memory_full_info().pss
                        count += 1
                except psutil.Error:
                    pass  # a worker that ended between listing and reading
            if total / 2**20 > self.peak_mb:
                self.peak_mb = total / 2**20
            self.peak_processes = max(self.peak_processes, count)
            self._stop.wait(self.interval)


# --- in the page -------------------------------------------------------------------------------

# JavaScript run in the page: the current notebook's code cells from its model.
CELLS_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.model) return null;
  const cells = panel.content.model.cells, found = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    const errors = [];
    for (let j = 0; j < cell.outputs.length; j++) {
      const out = cell.outputs.get(j).toJSON();
      if (out.output_type === 'error') errors.push(out.ename + ': ' + out.evalue);
    }
    found.push({index: i, count: cell.executionCount, errors: errors,
                source: cell.sharedModel.getSource().slice(0, 80)});
  }
  return found;
}"""

NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on show
PROMPTS_JS = f"""() => [...document.querySelectorAll('{NOTEBOOK} .jp-CodeCell .jp-InputArea-prompt')]
  .map(e => e.textContent.trim())"""
SCROLLER = f"{NOTEBOOK} .jp-WindowedPanel-outer"  # the element that scrolls the cells


def open_notebook(page, server: LabServer, path: str, workspace: str) -> None:
    """Open ``path`` and wait until its kernel is connected and idle.

    JupyterLab's "Idle" can show before the kernel's websocket is connected (FACTS.md): also
    wait for the server to count the connection.
    """
    page.goto(server.lab_url(path, workspace))
    page.wait_for_selector(f"{NOTEBOOK} .jp-Cell", timeout=120_000)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        sessions = [s for s in server.api("/api/sessions") if s["path"] == path]
        kernel = sessions[0]["kernel"] if sessions else {}
        shown = page.locator(f"{NOTEBOOK} .jp-Notebook-ExecutionIndicator")
        if (
            kernel.get("connections", 0) >= 1
            and kernel.get("execution_state") == "idle"
            and shown.count()
            and shown.first.get_attribute("data-status") == "idle"
        ):
            return
        time.sleep(0.5)
    raise AssertionError(f"the kernel of {path} was not connected and idle within 120 s: {sessions}")


def menu(page, top: str, item: str) -> None:
    """Click ``top`` in the menu bar, then ``item`` in its menu."""
    page.locator(".lm-MenuBar-itemLabel", has_text=top).first.click()
    page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel", has_text=item).first.click()


def run_all(page, timeout: float) -> float:
    """Run > Run All Cells; wait until no cell is queued or running and the kernel is idle.

    Returns the seconds it took. After an error JupyterLab runs no further cell: those keep
    an empty prompt, which the caller sees as cells that did not run.
    """
    start = time.monotonic()
    menu(page, "Run", "Run All Cells")
    indicator = page.locator(f"{NOTEBOOK} .jp-Notebook-ExecutionIndicator").first
    idle_since = None
    while time.monotonic() - start < timeout:
        prompts = page.evaluate(PROMPTS_JS)
        started = bool(prompts) and prompts[0] != "[ ]:"
        busy = any("*" in p for p in prompts) or indicator.get_attribute("data-status") != "idle"
        if started and not busy:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= 1.5:  # idle between two queued cells is brief
                return idle_since - start
        else:
            idle_since = None
        time.sleep(0.25)
    raise AssertionError(
        f"Run All did not finish within {timeout:.0f} s; prompts: {page.evaluate(PROMPTS_JS)}"
    )


def whole_notebook_screenshot(page, path: Path) -> None:
    """One tall screenshot of the whole notebook (the page grows to its height for a moment)."""
    size = page.viewport_size
    height = page.evaluate(
        "s => { const n = document.querySelector(s); return n ? n.scrollHeight : 0; }", SCROLLER
    )
    page.set_viewport_size(
        {"width": size["width"], "height": int(min(max(height + 200, size["height"]), 16000))}
    )
    page.wait_for_timeout(500)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def _whole_element_shot(page, element, path: str) -> None:
    """A screenshot of ``element`` whole: the page grows to its height for a moment."""
    size = page.viewport_size
    box = element.bounding_box() or {"height": 0}
    page.set_viewport_size(
        {"width": size["width"], "height": int(min(max(size["height"], box["height"] + 300), 8000))}
    )
    element.screenshot(path=path)
    page.set_viewport_size(size)


def _status_text(status) -> str:
    """The panel's status without its timing suffix ("(0.42 s)"), once it is not computing."""
    deadline = time.monotonic() + 120
    text = status.inner_text()
    while "computing" in text and time.monotonic() < deadline:
        time.sleep(0.25)
        text = status.inner_text()
    return re.sub(r"\s*\([\d.]+ s\)\s*$", "", text)


def move_n_sliders(page, prefix: Path) -> list[str]:
    """In every panel with an N slider: one arrow key on the focused handle; status and figure change.

    Returns one line per panel: the value before and after, and the seconds the redraw took.
    Screenshots of each panel before and after go to ``<prefix>-panel<i>-{before,after}.png``.
    """
    done = []
    panels = page.locator(f"{NOTEBOOK} .dlcourse-panel")
    for i in range(panels.count()):
        panel = panels.nth(i)
        handle = panel.locator(".dlcourse-slider-num_workers .noUi-handle").first
        if not handle.count():
            continue
        status, figure = panel.locator(".dlcourse-status").first, panel.locator(".dlcourse-figure").first
        before_status, before_src = _status_text(status), figure.get_attribute("src")
        before = handle.get_attribute("aria-valuenow")
        _whole_element_shot(page, panel, f"{prefix}-panel{i}-before.png")
        key = "ArrowLeft" if before == handle.get_attribute("aria-valuemax") else "ArrowRight"
        handle.focus()
        start = time.monotonic()
        handle.press(key)
        while time.monotonic() - start < 120:
            if _status_text(status) != before_status and figure.get_attribute("src") != before_src:
                break
            time.sleep(0.1)
        took = time.monotonic() - start
        _whole_element_shot(page, panel, f"{prefix}-panel{i}-after.png")
        after = handle.get_attribute("aria-valuenow")
        assert after != before, f"panel {i}: {key} on the focused N handle left N at {before}"
        assert _status_text(status) != before_status, f"panel {i}: the status stayed {before_status!r}"
        assert figure.get_attribute("src") != before_src, f"panel {i}: the figure did not change"
        message = panel.locator(".dlcourse-message").first
        assert not message.inner_text().strip(), f"panel {i} shows an error: {message.inner_text()}"
        done.append(f"panel {i}: N {before} -> {after} with {key}, redrawn in {took:.1f} s")
    return done
