"""The README as a test: every ``dlcourse ...`` command shown in README.md and docs/*.md runs as written.

Issue 17. A command is a line of a code block (indented or fenced) that starts with
``dlcourse``, or an inline code span that is a whole command (``dlcourse train --strategy ddp
--workers 2``; a template such as ``--strategy {single, ddp, ...}`` is not one). Each runs in
a fresh folder, as ``python -m dlcourse ARGS`` (the same program as the ``dlcourse`` script),
with nothing added except where :data:`SHORTENED` says so, and must:

- exit with status 0 (``--help`` too),
- print a finite ``test_loss`` and a ``test_accuracy`` above chance (10 classes: > 0.15),
  except the examples listed in :data:`NEAR_CHANCE`, which show a method failing on purpose.

A command meant to fail is marked in the document with a trailing ``# fails: exit N``
comment and must exit with exactly that status (2: a bad argument; 1: a run that failed, e.g.
diverged), with one line on stderr and no traceback.

Not run: ``torchrun ... -m dlcourse train`` in docs/scaling-out.md (several GPUs or several
machines; tests/test_torchrun.py runs that path on loopback), and Python code blocks.
"""

from __future__ import annotations

import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHANCE = 0.1  # ten digits

# Commands that would take more than a minute on 2 idle cores run with `--epochs 1` added
# (argparse takes the last value): command as written -> why.
SHORTENED = {
    "dlcourse train --strategy single --model cnn --epochs 5 --batch-size 100": (
        "five epochs of the CNN in one process: several minutes on 2 cores"
    ),
}

# Commands whose point is that training goes badly (exit 0 and a finite loss are still checked):
# command as written -> why its accuracy may sit near chance.
NEAR_CHANCE = {
    "dlcourse train --strategy decentralized --model mlp --tau 0.003 --no-residual": (
        "the README's 'what is lost': one-bit updates without the residual barely train (0.138 measured)"
    ),
}

_FAILS = re.compile(r"#\s*fails:\s*exit\s+(\d+)")


def _commands(text: str) -> list[tuple[str, int]]:
    """``(command, expected exit status)`` for every dlcourse command shown in ``text``."""
    found: list[tuple[str, int]] = []
    fenced = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced = not fenced
            continue
        in_code = fenced or line.startswith("    ")
        if in_code and stripped.startswith("dlcourse "):
            status = _FAILS.search(stripped)
            command = stripped.split("#", 1)[0].strip()
            found.append((command, int(status.group(1)) if status else 0))
    # inline code spans, which may wrap across lines in the prose
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    for span in re.findall(r"`(dlcourse [^`]+)`", prose):
        command = " ".join(span.split())
        if "{" not in command and "--" in command:
            found.append((command, 0))
    return found


def readme_commands() -> list[tuple[str, str, int]]:
    """``(document, command, expected status)``, each command once."""
    seen, out = set(), []
    for doc in DOCUMENTS:
        for command, status in _commands(doc.read_text()):
            if command not in seen:
                seen.add(command)
                out.append((doc.name, command, status))
    return out


COMMANDS = readme_commands()


def test_the_documents_show_commands():
    """The extraction finds the README's commands (a renamed heading must not silently empty it)."""
    assert len(COMMANDS) >= 20, COMMANDS
    assert {1, 2} <= {status for _, _, status in COMMANDS}, "the README marks no failing example"
    shown = {c for _, c, _ in COMMANDS}
    assert set(SHORTENED) | set(NEAR_CHANCE) <= shown, "a listed command is no longer in the README"


def _value(name: str, stdout: str) -> float | None:
    m = re.search(rf"^\s*{name}: (\S+)$", stdout, re.MULTILINE)
    return float(m.group(1)) if m else None


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(900)
@pytest.mark.parametrize("doc, command, status", COMMANDS, ids=[c for _, c, _ in COMMANDS])
def test_command_runs_as_written(doc, command, status, tmp_path, no_orphans):
    args = shlex.split(command)[1:]
    if command in SHORTENED:
        args += ["--epochs", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "dlcourse", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=840,
    )
    said = f"{doc}: `{command}` exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == status, said
    if status != 0:  # a failing example: one line of its own (a progress bar aside), no traceback
        said_lines = [line for line in proc.stderr.splitlines() if line.startswith("dlcourse")]
        assert "Traceback" not in proc.stderr and len(said_lines) == 1, said
        return
    if "--help" in args:
        assert "usage: dlcourse" in proc.stdout, said
        return
    if args[0] == "memory":  # accounting only, nothing trained: a table with a total per layout
        assert "total" in proc.stdout and "fits" in proc.stdout, said
        return
    loss, accuracy = _value("test_loss", proc.stdout), _value("test_accuracy", proc.stdout)
    assert loss is not None and math.isfinite(loss), said
    assert accuracy is not None, said
    if command not in NEAR_CHANCE:
        assert accuracy > CHANCE + 0.05, said
