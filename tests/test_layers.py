"""The package's layers, read from its import statements: the runtime needs no PyTorch and no module of the
training side, and no two modules import each other (directly or round a loop)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import emotorch

PACKAGE = Path(emotorch.__file__).parent
BASE = {"emotorch", "emotorch.choices", "emotorch.errors"}  # what every layer may import


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:  # Alembic's scripts, run by Alembic, not imported
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its file (top level, functions, TYPE_CHECKING)."""
    modules = module_files()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                ]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return groups


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 40 and graph["emotorch.training.train"]  # the graph was read, not empty
    assert cycles(graph) == []


def test_cycles_are_found():
    """The check above can fail: a loop of three modules is one group."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_runtime_imports_nothing_from_the_training_side_or_above():
    graph = import_graph()
    runtime = [m for m in graph if m.startswith("emotorch.runtime")]
    assert "emotorch.runtime.registry" in runtime
    wrong = {m: sorted(t for t in graph[m] if not (t.startswith("emotorch.runtime") or t in BASE)) for m in runtime}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_the_runtime_imports_without_pytorch():
    """Every runtime module imports with PyTorch made unimportable (as in the lean install)."""
    runtime = sorted(m for m in module_files() if m.startswith("emotorch.runtime"))
    code = (
        "import sys\nfor blocked in ('torch', 'torchvision'):\n    sys.modules[blocked] = None\n"
        + "".join(f"import {m}\n" for m in runtime)
        + "print(len(sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def unexplained_local_imports(path: Path) -> list[str]:
    """Imports inside functions with no comment saying why: on the import's lines, or on the line above the
    block of imports it belongs to."""
    lines = path.read_text().splitlines()
    found = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import | ast.ImportFrom):
                start = node.lineno - 1
                while start > 0 and (
                    not lines[start - 1].strip() or lines[start - 1].lstrip().startswith(("import ", "from "))
                ):
                    start -= 1
                said = lines[start - 1].lstrip().startswith("#") or any(
                    "#" in lines[i] for i in range(start, node.end_lineno)
                )
                if not said:
                    found.append(f"{path.name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return found


def test_every_import_inside_a_function_says_why(tmp_path):
    unexplained = [line for path in module_files().values() for line in unexplained_local_imports(path)]
    assert unexplained == []
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import json\n\n    return json\n")
    assert unexplained_local_imports(sample) == ["sample.py:2: import json"]  # the check can fail
