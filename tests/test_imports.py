"""The package's import graph: one-way floors, no circle, no import hidden in a function to dodge one, and every
module importable on its own.

The graph is read from the source (``ast``): an edge A → B for every ``import sdnet.B`` / ``from sdnet.B import``
at module level of A (``if TYPE_CHECKING:`` blocks excluded: they never run). ``from sdnet.P import name`` points at
the submodule ``sdnet.P.name`` when that is a module, else at the package ``sdnet.P``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "sdnet"

#: Floors from the bottom up. A module may import modules of its own floor or below, never above. A key names a
#: module or a package (then every module inside it, unless a longer key names it).
FLOORS: dict[str, int] = {
    "sdnet.errors": 0, "sdnet.outputs": 0, "sdnet.utils": 0, "sdnet.config": 0,
    "sdnet.data": 1, "sdnet.models": 1, "sdnet.losses": 1, "sdnet.metrics": 1,
    "sdnet.checkpoint": 2, "sdnet.inference": 2, "sdnet.visualise": 2,
    "sdnet.evaluation": 3, "sdnet.export": 3, "sdnet.analysis": 3, "sdnet.predict_report": 3,
    "sdnet.training": 4, "sdnet.predict": 4, "sdnet.analysis.run_io": 4, "sdnet.analysis.runs": 4,
    "sdnet.analysis.report": 4, "sdnet.analysis.gradients": 4,
    "sdnet.study": 5,
    "sdnet.cli": 6, "sdnet.__main__": 6,
    "sdnet": 7,  # the package's lazy namespace (PEP 562) re-exports from every floor
}

#: The only places that import by name at run time, and why.
RUNTIME_IMPORTS = {
    "sdnet": "PEP 562 lazy re-exports: `import sdnet` stays free of torch",
    "sdnet.cli": "the commands (and torch) load after argument parsing, so `sdnet --help` answers at once",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor(name: str) -> int:
    key = max((k for k in FLOORS if name == k or name.startswith(k + ".")), key=len)
    return FLOORS[key]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node: ast.Import | ast.ImportFrom, here: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "sdnet"]
    base = node.module or ""
    if node.level:  # relative import
        pkg = here.split(".") if MODULES[here].name == "__init__.py" else here.split(".")[:-1]
        base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] != "sdnet":
        return []
    out = []
    for alias in node.names:
        if base == "sdnet" and alias.name == "__version__":  # a constant of the lazy namespace, not a re-export
            continue
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in MODULES else base)
    return out


def imports(name: str) -> tuple[set[str], list[tuple[int, str]]]:
    """(module-level sdnet imports, [(line, target)] of sdnet imports inside functions or classes)."""
    tree = ast.parse(MODULES[name].read_text())
    top: set[str] = set()
    nested: list[tuple[int, str]] = []

    def visit(nodes: list[ast.stmt], inside: bool) -> None:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, name):
                    (nested.append((node.lineno, target)) if inside else top.add(target))
            elif isinstance(node, ast.If) and _is_type_checking(node):
                continue
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(node.body, True)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        visit([c for c in children if isinstance(c, ast.stmt)] + [
                            s for h in children if isinstance(h, ast.ExceptHandler) for s in h.body], inside)

    visit(tree.body, False)
    return top, nested


GRAPH = {name: imports(name)[0] - {name} for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (one per back edge)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    return found


def test_graph_is_read_from_every_module():
    assert len(MODULES) > 60 and "sdnet.checkpoint" in MODULES and "sdnet.cli.commands" in MODULES
    # the reader sees real edges (a canary for the parser itself)
    assert "sdnet.checkpoint" in GRAPH["sdnet.evaluation"] and "sdnet.training" in GRAPH["sdnet.study.runner"]
    assert "sdnet.training.methods" in GRAPH["sdnet.training.trainer"]


def test_no_import_circle():
    # a package's __init__ importing its submodules is an edge like any other: a submodule importing its own
    # package (``from sdnet.models import X`` inside sdnet.models.*) closes a circle and is caught here
    assert _cycles(GRAPH) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_function_level_sdnet_import():
    offenders = [f"{MODULES[name].relative_to(SRC)}:{line} imports {target}"
                 for name in MODULES for line, target in imports(name)[1]]
    assert offenders == []


def test_runtime_imports_only_where_documented():
    users = {name for name, path in MODULES.items() if "import_module(" in path.read_text()}
    assert users == set(RUNTIME_IMPORTS)


def test_floors_point_down():
    upward = [f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)})"
              for a, targets in GRAPH.items() for b in targets
              if floor(b) > floor(a) and b != "sdnet"]
    assert upward == []
    # and nothing below the CLI imports it, nothing imports the package namespace for its re-exports
    assert not [a for a, t in GRAPH.items() if "sdnet" in t and a != "sdnet"]


def test_floor_check_catches_an_upward_import():
    assert floor("sdnet.models.anatomy") < floor("sdnet.training.trainer") < floor("sdnet.cli.commands")
    assert floor("sdnet.analysis.probes") == 3 and floor("sdnet.analysis.runs") == 4


IMPORT_EACH = textwrap.dedent("""
    import importlib, os, sys
    # third-party libraries first (the expensive part), shared by every child; no sdnet module is loaded yet
    import numpy, torch, scipy.stats, nibabel, h5py, yaml, tqdm, matplotlib.figure  # noqa: F401
    assert not [m for m in sys.modules if m == "sdnet" or m.startswith("sdnet.")]
    failed = []
    for name in sys.argv[1:]:
        pid = os.fork()
        if pid == 0:  # a child knows no sdnet module: it imports this one alone
            try:
                importlib.import_module(name)
            except BaseException as exc:  # noqa: BLE001
                print(f"{name}: {type(exc).__name__}: {exc}", flush=True)
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status:
            failed.append(name)
    print("FAILED " + " ".join(failed) if failed else "OK", flush=True)
""")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_each_module_imports_alone():
    """Every module imported first, alone: a child process forked from an interpreter that has loaded the
    third-party libraries but no sdnet module (a fresh interpreter per module would cost ~2 s of torch each)."""
    out = subprocess.run([sys.executable, "-c", IMPORT_EACH, *sorted(n for n in MODULES if n != "sdnet.__main__"
                                                                     and n != "sdnet.cli.__main__")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "OK", out.stdout[-3000:]


LONG = 450


def test_long_modules_say_why_at_their_top():
    """A module over ~450 lines states its reason in its docstring (a paragraph starting ``Length:``)."""
    unexplained = []
    for path in MODULES.values():
        lines = path.read_text().count("\n")
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > LONG and "\nLength: " not in "\n" + doc:
            unexplained.append(f"{path.relative_to(SRC)} ({lines} lines)")
    assert unexplained == []
