"""The package's layout stays as documented: no import cycle, few top-level modules, short modules.

Imports are read from the source with ``ast`` (function-level imports included: a lazy import still
ties two modules together), so the test needs nothing importable and catches a cycle however deep.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hydrapick"
MAX_LINES = 450
MAX_TOP_LEVEL_MODULES = 8


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """hydrapick modules that ``name`` imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                stem = ".".join(anchor + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import sub` imports the submodule sub; `from pkg import name` imports pkg itself.
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
        else:
            continue
        for target in targets:
            # "a.b.c" imports a.b.c if it is a module, else the nearest package that exists.
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts = parts[:-1]
            if parts and ".".join(parts) != name:
                found.add(".".join(parts))
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    # A package's __init__ that only re-exports its submodules is its face: importing the package means
    # importing those submodules, which is what the edges from the submodules to it already say.
    return graph


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nothing_imports_the_public_face():
    # hydrapick/__init__.py is the top floor (the public API, imported lazily): a module inside the
    # package that imported it would tie every floor to the top.
    users = sorted(name for name, deps in import_graph().items() if "hydrapick" in deps)
    assert not users, f"modules importing the package root (import from its own module instead): {users}"


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_imports_are_read_from_every_form():
    modules = all_modules()
    graph = import_graph()
    assert "hydrapick.model.anchors" in graph["hydrapick.model.losses"]  # from .anchors import x
    assert "hydrapick.config" in graph["hydrapick.model.anchors"]  # from ..config import x
    assert modules


def test_modules_stay_short():
    long = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            long[rel] = n
    assert not long, f"modules over {MAX_LINES} lines (split them by concept): {long}"


def test_few_top_level_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules directly under hydrapick/: {top}"
