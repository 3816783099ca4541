"""The package's layers: every import points down the stack, no module imports itself back, none is long.

    foundation (errors, params, registry, fileio, metadata, suite, claims)
      <- data, models <- methods <- explain <- metrics <- engine <- cli
    report <- foundation only (tables and plots are functions of records)

Every ``import`` counts, at module level or inside a function or ``if TYPE_CHECKING:``: a lazy
import is still a dependency, and hiding a cycle in a function is how the old engine grew two.
One exception: the registries (foundation) name their value types (``Registry[type[Method]]``)
under ``if TYPE_CHECKING:`` only; those imports never run and are left out.

Within ``methods``, metrics, explainers and reports may use the method contract
(``xbench.methods.base``) but no paper's method (egt, ecr, lap, tame, coded_resnext, ...): what
they need from a model lives in ``models`` (``output``, ``contract``, ``fields``, ``exits``, ...).

No module is longer than :data:`MAX_LINES` lines: a longer one holds more than one thing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "xbench"
FOUNDATION = {"errors", "params", "registry", "fileio", "metadata", "suite", "claims", "__init__"}
BELOW = {
    "foundation": set(),
    "data": {"foundation"},
    "models": {"foundation"},
    "methods": {"foundation", "data", "models"},
    "explain": {"foundation", "data", "models", "methods"},
    "metrics": {"foundation", "data", "models", "methods", "explain"},
    "report": {"foundation"},
    "engine": {"foundation", "data", "models", "methods", "explain", "metrics", "report"},
    "cli": {"foundation", "data", "models", "methods", "explain", "metrics", "report", "engine"},
    "__main__": {"cli"},
}


def layer(module: str) -> str:
    """``xbench.metrics.context`` -> ``metrics``; top-level foundation modules -> ``foundation``."""
    top = module.split(".")[1] if "." in module else "__init__"
    return "foundation" if top in FOUNDATION else top


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


#: Modules whose ``if TYPE_CHECKING:`` imports are type names only (see the module docstring).
TYPE_NAMES_ONLY = {"xbench.registry"}


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            inside |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return inside


def imports(path: Path, skip_type_checking: bool = False) -> set[str]:
    """Every ``xbench`` module ``path`` imports (``from xbench.a import b``: ``xbench.a.b`` if it is a module)."""
    found = set()
    tree = ast.parse(path.read_text())
    skipped = type_checking_nodes(tree) if skip_type_checking else set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "xbench"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "xbench":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports(path, name in TYPE_NAMES_ONLY) & MODULES.keys() for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_stack(module: str) -> None:
    own = layer(module)
    wrong = sorted(i for i in GRAPH[module] if layer(i) != own and layer(i) not in BELOW[own])
    assert not wrong, f"{module} ({own}) imports {wrong}, which are not below it"


#: Layers that may import from ``methods`` only its contract, never a paper's method.
CONTRACT_ONLY = {"metrics", "explain", "report"}
METHOD_CONTRACT = {"xbench.methods.base"}


def paper_method_imports(imported: set[str]) -> list[str]:
    """The modules of ``imported`` in the ``methods`` layer other than its contract (the package included)."""
    return sorted(i for i in imported if layer(i) == "methods" and i not in METHOD_CONTRACT)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) in CONTRACT_ONLY))
def test_metrics_import_no_paper_method(module: str) -> None:
    wrong = paper_method_imports(GRAPH[module])
    assert not wrong, f"{module} imports {wrong}; only {sorted(METHOD_CONTRACT)} may be imported from methods"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles of module imports, each as a path that ends where it starts."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for dep in sorted(graph[name]):
            # Importing a module runs its package's __init__ first: that edge is not a cycle.
            if dep == name or name.startswith(dep + "."):
                continue
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    return cycles


def test_no_import_cycles() -> None:
    cycles = find_cycles(GRAPH)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """A lazy import inside a function is found, a cycle through it is reported, and a metric may not import engine."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from xbench.engine import cell\n    import xbench.report.records\n")
    assert imports(source) == {"xbench.engine.cell", "xbench.report.records"}
    typed = tmp_path / "t.py"
    typed.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from xbench.engine import cell\n")
    assert imports(typed) == {"xbench.engine.cell"} and imports(typed, skip_type_checking=True) == set()
    graph = {"xbench.a": {"xbench.b"}, "xbench.b": {"xbench.c"}, "xbench.c": {"xbench.a"}, "xbench.d": set()}
    assert find_cycles(graph) == [["xbench.a", "xbench.b", "xbench.c", "xbench.a"]]
    assert find_cycles({"xbench.p": set(), "xbench.p.m": {"xbench.p"}}) == []  # a module and its package
    assert "engine" not in BELOW["metrics"] and layer("xbench.engine.cell") == "engine"
    assert layer("xbench.metrics.context") not in BELOW["report"]
    assert layer("xbench.suite") == "foundation" and layer("xbench") == "foundation"
    metric = tmp_path / "metric.py"
    metric.write_text(
        "from xbench.methods.base import Method\nfrom xbench.methods.tame import TAME\n"
        "from xbench.methods import egt\nimport xbench.methods\n"
    )
    assert paper_method_imports(imports(metric)) == ["xbench.methods", "xbench.methods.egt", "xbench.methods.tame"]
    assert paper_method_imports({"xbench.methods.base", "xbench.models.output", "xbench.models.contract"}) == []
    assert "methods" not in BELOW["models"] and "models" in BELOW["methods"]


#: Most lines a module of the package may have.
MAX_LINES = 600


def long_modules(paths: list[Path], limit: int = MAX_LINES) -> list[str]:
    """``"path: N lines"`` for every file of ``paths`` longer than ``limit`` lines."""
    counts = {path: len(path.read_text().splitlines()) for path in paths}
    shown = {
        path: path.relative_to(PACKAGE.parent) if path.is_relative_to(PACKAGE.parent) else path.name for path in paths
    }
    return [f"{shown[path]}: {n} lines" for path, n in counts.items() if n > limit]


def test_no_module_is_over_the_line_limit(tmp_path: Path) -> None:
    long = long_modules(sorted(PACKAGE.rglob("*.py")))
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"
    over = tmp_path / "over.py"
    over.write_text("x = 1\n" * (MAX_LINES + 1))
    at = tmp_path / "at.py"
    at.write_text("x = 1\n" * MAX_LINES)
    assert long_modules([over, at]) == [f"over.py: {MAX_LINES + 1} lines"]
