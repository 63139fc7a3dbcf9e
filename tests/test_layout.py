"""The package's shape: floors without cycles, the command line on top, a map in the docstring."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dlcourse"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """Every dlcourse module ``name`` imports, anywhere in the file (type-only imports included)."""
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from dlcourse.viz import runs` imports the module dlcourse.viz.runs
            targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            targets = [t for t in targets if t in MODULES][:1] if node.module == "dlcourse" else targets
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("dlcourse"):
                found.add(target)
    # a submodule's `from dlcourse.pkg.sub import x` is not an import of the package's __init__
    return {t for t in found if not (t != "dlcourse" and name.startswith(t + "."))} - {"dlcourse"}


GRAPH = {name: _imports(name) for name in MODULES}


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_there_is_no_import_cycle_not_even_a_type_only_one():
    """No module reaches itself through the imports of the package (TYPE_CHECKING ones too)."""
    assert len(GRAPH) > 30
    assert _cycle() is None, " -> ".join(_cycle())


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: a made-up edge back to a module's importer is found."""
    GRAPH["dlcourse.data"].add("dlcourse.train")
    try:
        assert _cycle() is not None
    finally:
        GRAPH["dlcourse.data"].discard("dlcourse.train")


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n not in ("dlcourse.cli", "dlcourse.__main__")))
def test_no_library_module_imports_the_command_line_or_the_grader(name):
    """Only cli (and __main__) sit above commands; nothing in the library imports either, nor grading."""
    assert not GRAPH[name] & {"dlcourse.cli", "dlcourse.commands", "dlcourse.grading"}


@pytest.mark.parametrize(
    "name",
    sorted(n for n in MODULES if not n.startswith(("dlcourse.viz", "dlcourse.cli", "dlcourse.commands"))),
)
def test_no_concept_imports_the_figures_or_panels(name):
    """Concept modules import no display code: viz sits above them."""
    assert not {t for t in GRAPH[name] if t.startswith("dlcourse.viz")}


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_fresh_interpreter_builds_any_registered_policy():
    """Policy registration does not depend on import order: the config module alone suffices."""
    run = _fresh(
        "from dlcourse.sim.config import SimConfig\n"
        "c = SimConfig(policy='decentralized', num_workers=2)\n"
        "print(c.policy)"
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "decentralized"


def test_the_command_line_answers_help_without_loading_torch():
    """`dlcourse --help` and option checking stay light: the library is loaded only to run."""
    run = _fresh(
        "import sys\n"
        "from dlcourse import cli\n"
        "try:\n    cli.main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("False")


def test_the_package_docstring_maps_every_module():
    """help(dlcourse) names every module of the package, each once, in the lecture's terms."""
    import dlcourse

    doc = dlcourse.__doc__
    for name in MODULES:
        short = name.removeprefix("dlcourse.")
        if name in ("dlcourse", "dlcourse.__main__", "dlcourse._validate") or short in ("sim", "viz"):
            continue
        assert short in doc, f"{name} is missing from the package docstring"
