"""The Binder configuration (binder/), checked as far as it can be without Binder itself.

Fast checks read the files: the CPU build of PyTorch from the CPU index, this package with its
lab extras, postBuild's student view, start's environment, the README's launch badge.

The slow check builds what repo2docker would: a fresh virtual environment (no system site
packages) installed from ``binder/requirements.txt`` with the CPU index line dropped and the
torch pin written as the Makefile's ``TORCH_SPEC`` (pip finds that build on the local disk
index here), then ``binder/postBuild`` with HOME in a temporary folder; JupyterLab's and the
server's extension lists show the student view, a server started through ``binder/start``
serves the assignment list but no formgrader, and lesson 00 runs there (nbclient).
What only Binder shows: the image build itself, its 1 CPU / 2 GB limits, the launch link.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
from browser_lab import LabServer, instructor_env

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
INSTRUCTOR_PLUGINS = ["formgrader", "create-assignment", "course-list"]


def _torch_pin() -> str:
    """The exact torch version binder/requirements.txt installs (without the +cpu label)."""
    pins = re.findall(r"^torch==(\S+)\+cpu\s*$", (BINDER / "requirements.txt").read_text(), re.M)
    assert len(pins) == 1, "binder/requirements.txt must pin exactly one torch==X.Y.Z+cpu"
    return pins[0]


def test_requirements_take_the_cpu_build_and_this_package():
    lines = [line.strip() for line in (BINDER / "requirements.txt").read_text().splitlines()]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert "-e .[lab]" in lines
    makefile = (ROOT / "Makefile").read_text()
    spec = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", makefile, re.M)
    assert spec, "the Makefile's TORCH_SPEC is no longer an exact pin"
    assert _torch_pin() == spec.group(1), "binder/ and the Makefile install different torch versions"


def test_postbuild_and_start_as_repo2docker_wants_them():
    post = (BINDER / "postBuild").read_text()
    assert post.startswith("#!/bin/bash\n") and re.search(r"^set -e", post, re.M)
    for plugin in INSTRUCTOR_PLUGINS:
        assert f"@jupyter/nbgrader:{plugin}" in post
    assert "nbgrader.server_extensions.formgrader" in post
    start = (BINDER / "start").read_text()
    assert start.startswith("#!/bin/bash\n") and start.rstrip().splitlines()[-1] == 'exec "$@"'
    for setting in [
        "OMP_NUM_THREADS=1",
        "MKL_NUM_THREADS=1",
        "MASTER_ADDR=127.0.0.1",
        "GLOO_SOCKET_IFNAME=lo",
    ]:
        assert setting in start
    for script in ("postBuild", "start"):
        assert os.access(BINDER / script, os.X_OK), f"binder/{script} is not executable"


def test_start_passes_its_environment_on():
    out = subprocess.run(
        [
            "bash",
            str(BINDER / "start"),
            sys.executable,
            "-c",
            "import os; print(os.environ['OMP_NUM_THREADS'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "1"


def test_readme_has_the_launch_badge():
    readme = (ROOT / "README.md").read_text()
    assert (
        "(https://mybinder.org/v2/gh/dlcourse/dlcourse/main?urlpath=lab/tree/lessons/00_start_here.ipynb)"
        in readme
    )


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert done.returncode == 0, (
        f"{cmd} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


@pytest.mark.slow
@pytest.mark.binder
@pytest.mark.timeout(2400)
def test_binder_environment_from_scratch(tmp_path):
    timings = {}
    start = time.monotonic()
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])  # no --system-site-packages: only what binder/ says
    bin_dir = venv / "bin"
    # repo2docker's install, with the local wheel source in place of the CPU index
    requirements = tmp_path / "requirements.txt"
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    lines = [line for line in lines if not line.startswith(("--extra-index-url", "--index-url"))]
    lines = [re.sub(r"^torch==(\S+)\+cpu$", r"torch==\1", line) for line in lines]
    requirements.write_text("\n".join(lines) + "\n")
    # from the repository's root, as repo2docker runs it (-e .); no .pyc up front: saves minutes
    _run(
        [bin_dir / "python", "-m", "pip", "install", "--quiet", "--no-compile", "-r", requirements], cwd=ROOT
    )
    timings["pip install"] = time.monotonic() - start
    torch_version = _run([bin_dir / "python", "-c", "import torch; print(torch.__version__)"]).stdout.strip()
    assert torch_version == f"{_torch_pin()}+cpu"

    home = tmp_path / "home"
    env = instructor_env(home)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"  # the new environment's jupyter and python
    step = time.monotonic()
    _run(["bash", BINDER / "postBuild"], cwd=ROOT, env=env)
    timings["postBuild"] = time.monotonic() - step

    labext = _run([bin_dir / "jupyter", "labextension", "list"], env=env)
    listed = labext.stdout + labext.stderr
    assert re.search(r"@jupyter/nbgrader v\S+ .*enabled", listed), listed
    disabled = listed.split("Disabled extensions:")[-1]
    for plugin in INSTRUCTOR_PLUGINS:
        assert f"@jupyter/nbgrader:{plugin}" in disabled, listed
    assert "assignment-list" not in disabled and "validate-assignment" not in disabled, listed

    serverext = _run([bin_dir / "jupyter", "server", "extension", "list"], env=env)
    listed = re.sub(r"\x1b\[[0-9;]*m", "", serverext.stdout + serverext.stderr)  # no colours
    user = listed.split(f"Config dir: {home / '.jupyter'}")[1].split("Config dir:")[0]
    assert "nbgrader.server_extensions.formgrader disabled" in user, listed  # the user's file wins

    # what a student's session serves: the assignment list, not the formgrader
    server = LabServer(tmp_path, env, tmp_path / "lab", pin=False, bin_dir=bin_dir)
    try:
        assert server.api("/assignments?course_id=dlcourse")["success"]
        with pytest.raises(urllib.error.HTTPError, match="404"):
            server.api("/formgrader")
    finally:
        server.stop()

    step = time.monotonic()
    run_lesson = (
        "import nbformat, nbclient, sys; nb = nbformat.read(sys.argv[1], 4); "
        "nbclient.NotebookClient(nb, timeout=600, kernel_name='python3').execute(); print('ok')"
    )
    lesson = ROOT / "lessons" / "00_start_here.ipynb"
    out = _run(
        ["bash", BINDER / "start", bin_dir / "python", "-c", run_lesson, lesson], cwd=tmp_path, env=env
    )
    assert out.stdout.strip().endswith("ok")
    timings["lesson 00"] = time.monotonic() - step
    timings["total"] = time.monotonic() - start
    print("binder check:", ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
