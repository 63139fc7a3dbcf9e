"""`make lab` really starts JupyterLab on lessons/, passing LAB_ARGS through."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_make_lab_serves_the_lessons(tmp_path):
    port = _free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    args = f"--no-browser --port {port} --ip 127.0.0.1 --IdentityProvider.token=secret-token"
    proc = subprocess.Popen(
        ["make", "-s", "lab", f"LAB_ARGS={args}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so the whole process group can be stopped
    )
    try:
        seen, deadline, url = [], time.monotonic() + 120, None
        while time.monotonic() < deadline and url is None:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            match = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=\S+", line)
            url = match.group(0) if match else None
        assert url, "JupyterLab printed no URL:\n" + "".join(seen[-30:])
        # the printed URL masks the token; the server may still be binding: poll with ours
        page, until = None, time.monotonic() + 60
        while page is None and time.monotonic() < until:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/lab?token=secret-token", timeout=10
                ) as r:
                    page = r.read().decode()
            except OSError:
                time.sleep(0.5)
        assert page is not None and "JupyterLab" in page
        # the server's root is lessons/: the first lesson is at the top of its contents API
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/contents", headers={"Authorization": "token secret-token"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            assert b"00_start_here.ipynb" in r.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
