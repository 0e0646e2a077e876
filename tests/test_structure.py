"""The package's shape (ARCHITECTURE.md): no import cycles, modules of a readable size, one
definition of each repeated concept. Plain source analysis: no TensorFlow is imported."""

import ast
import collections
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "kerascnn"
#: "no library module over about 450 lines" (issue 11); the line count of the largest allowed.
MAX_LINES = 470


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the kerascnn modules it imports, at module level or inside functions.

    ``from . import x`` is an edge to the submodule ``x`` (Python imports the parent package
    first in any case, which is no cycle of the code); ``from .. import name`` of a name defined
    in a package's ``__init__`` is an edge to that package.
    """
    modules = _modules()
    graph = collections.defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("kerascnn"):
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edge = sub if sub in modules else target
                    if edge in modules and edge != name:
                        graph[name].add(edge)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules and alias.name != name:
                        graph[name].add(alias.name)
    return graph


def cycles(graph) -> list[list[str]]:
    state, stack, found = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_checker_finds_a_cycle():  # the test above can fail
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_ground_floor_imports_nothing_of_kerascnn():
    graph = import_graph()
    for module in ("kerascnn.errors", "kerascnn.files", "kerascnn.catalog", "kerascnn.backend"):
        assert not graph.get(module, set()) - {"kerascnn.errors"}, module


def test_no_library_module_is_long():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def _definitions(name: str) -> list[str]:
    """Modules defining a function or class called ``name`` (top level or nested)."""
    where = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
                where.append(module)
    return where


def test_each_repeated_concept_has_one_definition():
    assert _definitions("UserError") == ["kerascnn.errors"]
    assert _definitions("EvalTransform") == ["kerascnn.transforms"]
    assert _definitions("RunDir") == ["kerascnn.runs"]
    assert _definitions("ModelRef") == ["kerascnn.sources"]         # what a MODEL argument names
    assert _definitions("versions") == ["kerascnn.sources"]         # integer version folders
    assert _definitions("latest_version") == ["kerascnn.sources"]
    assert _definitions("inference_model") == ["kerascnn.inference"]
    assert _definitions("validation_data") == ["kerascnn.runs"]     # a run's validation pipeline
    assert not _definitions("_max_pool_ceil") and not _definitions("_pool")  # one ceil-mode pool
    for module, path in _modules().items():  # "newest integer version folder", written once
        if module != "kerascnn.sources":
            assert "name.isdigit() and" not in path.read_text(encoding="utf-8"), module
