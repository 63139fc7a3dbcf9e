"""scripts/gpu_check.sh's promise: the GPU tests run where only PyTorch and pytest are installed.

A bare GPU image has no nbval, nbgrader, ipywidgets, Jupyter or mlxtend (../shared/FACTS.md).
Here those imports are made to fail, and the files the script selects must still be collected
with the script's own pytest options (pyproject's addopts name nbval's flag and are overridden).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
BARE = (
    "nbval",
    "nbgrader",
    "nbformat",
    "nbclient",
    "ipywidgets",
    "IPython",
    "jupyter",
    "mlxtend",
    "playwright",
)

# a meta-path finder that refuses the Jupyter stack, then pytest as the script calls it
RUN_BARE = f"""
import sys
class Bare:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0].startswith({BARE!r}):
            raise ModuleNotFoundError(f"No module named {{name!r}} (not on a bare GPU image)")
sys.meta_path.insert(0, Bare())
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def gpu_files() -> list[str]:
    """The files the script collects: those holding a GPU test."""
    return sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").glob("test_*.py")
        if "pytest.mark.gpu" in p.read_text()
    )


def test_the_script_overrides_addopts_and_selects_the_gpu_files():
    text = SCRIPT.read_text()
    assert '-o addopts=""' in text and "-m gpu" in text
    assert re.search(r'grep -l "pytest.mark.gpu" tests/test_\*\.py', text)
    assert len(gpu_files()) >= 3


def test_gpu_tests_are_collected_without_the_jupyter_stack():
    files = gpu_files()
    args = ["-o", "addopts=", "-p", "no:nbval", "-p", "no:cacheprovider", "-m", "gpu", "--collect-only", "-q"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", RUN_BARE, *args, *files], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert len(collected) >= 5, done.stdout  # the five GPU tests of 2026-12-04, and any added since
    assert all(line.split("::")[0] in files for line in collected)
