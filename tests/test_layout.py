"""The package's layout rules (STYLE.md): no import cycles, one caller of the training assignment.

- The import graph of every module under ``fcos_lab/`` and every file of the app (``app/``, whose folder
  Streamlit puts on ``sys.path``) has no cycle. Imports inside functions count as much as module-level
  ones: a lazy import only hides a cycle. ``from a.b import c`` is an edge to ``a.b.c`` when that is a
  module, else to ``a.b``; importing ``a.b.c`` adds no edge to its parent packages.
- :func:`fcos_lab.targets.assign` is called only by :mod:`fcos_lab.objective` (in ``fcos_lab/``, ``app/``
  and ``notebooks/``): every other surface goes through :class:`fcos_lab.objective.Objective`, so the
  app, the statistics and the notebooks assign exactly as training does.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "fcos_lab"
APP = REPO / "app"
NOTEBOOKS = REPO / "notebooks"
ASSIGN = "fcos_lab.targets.assign"


def module_files() -> dict[str, Path]:
    """Module name -> file: ``fcos_lab.*`` by package path, app files by their path below ``app/``."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    for path in sorted(APP.rglob("*.py")):
        modules[".".join(path.relative_to(APP).with_suffix("").parts)] = path
    return modules


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The known modules that ``tree`` imports anywhere (module level, functions, ``TYPE_CHECKING`` blocks)."""
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                child = f"{base}.{alias.name}"
                targets.add(child if child in known else base)
    return {t for t in targets if t in known}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {
        name: imported_modules(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", known) - {name}
        for name, path in files.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for nxt in sorted(graph[node]):
            if color[nxt] == grey:
                return stack[stack.index(nxt):] + [nxt]
            if color[nxt] == white and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        color[node] = black
        return None

    for start in sorted(graph):
        if color[start] == white and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_on_a_hand_made_graph() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_from_import_edges_go_to_the_submodule_when_there_is_one() -> None:
    tree = ast.parse("from fcos_lab.viz import figures\nfrom fcos_lab.targets import assign\n"
                     "def f():\n    import fcos_lab.points\n")
    known = {"fcos_lab.viz", "fcos_lab.viz.figures", "fcos_lab.targets", "fcos_lab.points", "fcos_lab"}
    assert imported_modules(tree, "fcos_lab.x", False, known) == {"fcos_lab.viz.figures", "fcos_lab.targets",
                                                                 "fcos_lab.points"}


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "fcos_lab.objective" in graph and "fcos_app" in graph  # the scan sees the package and the app
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def sources() -> Iterator[tuple[str, str]]:
    """(name, code) of every Python file in fcos_lab/ and app/ and every code cell of notebooks/."""
    for path in sorted([*PACKAGE.rglob("*.py"), *APP.rglob("*.py")]):
        yield str(path.relative_to(REPO)), path.read_text()
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for number, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                # IPython magics and shell escapes are not Python.
                code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
                yield f"{path.relative_to(REPO)} cell {number}", code


def assign_calls(code: str) -> int:
    """How many calls of :func:`fcos_lab.targets.assign` ``code`` makes, under any import alias."""
    tree = ast.parse(code)
    functions, modules = set(), set()  # local names of targets.assign, and of the fcos_lab.targets module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "fcos_lab.targets":
            functions.update(a.asname or a.name for a in node.names if a.name == "assign")
        elif isinstance(node, ast.ImportFrom) and node.module == "fcos_lab":
            modules.update(a.asname or a.name for a in node.names if a.name == "targets")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "fcos_lab.targets":
                    modules.add(alias.asname or alias.name)
    count = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in functions or isinstance(func, ast.Attribute) and func.attr == "assign" and ast.unparse(func.value) in modules:
            count += 1
    return count


def test_assign_calls_are_recognised_under_every_alias() -> None:
    assert assign_calls("from fcos_lab.targets import assign as a\na(1)\nx.assign(2)\n") == 1
    assert assign_calls("from fcos_lab import targets\ntargets.assign(1)\n") == 1
    assert assign_calls("import fcos_lab.targets\nfcos_lab.targets.assign(1)\n") == 1
    assert assign_calls("objective.assign(locations, gt)\n") == 0


def test_only_the_objective_calls_the_training_assignment() -> None:
    callers = {name: n for name, code in sources() if (n := assign_calls(code))}
    assert callers == {"fcos_lab/objective.py": 1}, callers
