"""The layout keeps its promises: no import cycles inside the package, and the core
(``lib/``, ``dbt/``, ``warehouse/``, ``diff/``, ``branch/``, ``production/``) never imports Dagster, so a
command line can drive it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = "defer_orchestration"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE
CORE = ("lib", "dbt", "warehouse", "diff", "branch", "production", "impact", "forge")
DAGSTER = ("dagster", "dagster_dbt", "dagster_webserver", "dagster_graphql")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (function-level imports too);
    ``from pkg import name`` counts as ``pkg.name`` when that is a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(path, modules) if m in modules and m != name} for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph[node]):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_inside_the_package() -> None:
    assert _cycles(_graph()) == []


def test_the_core_never_imports_dagster() -> None:
    modules = _modules()
    offenders = {
        name: sorted(m for m in _imports(path, modules) if m.split(".")[0] in DAGSTER)
        for name, path in modules.items()
        if name.split(".")[1:2] and name.split(".")[1] in CORE
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_importing_the_core_loads_no_dagster() -> None:
    """Transitively too: a command line over the core starts without Dagster."""
    core = [name for name in _modules() if name.split(".")[1:2] and name.split(".")[1] in CORE]
    code = (
        "import importlib, sys\n"
        f"for name in {core!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {DAGSTER!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# Modules that may touch a library's private code: each lists at its top what it touches
# and the versions it was tested with, and falls back to the library's own path (README,
# "Upgrades"). dbt's one public Python API is ``dbt.cli.main`` (dbtRunner).
GUARDED = {
    f"{PACKAGE}.dbt.internals",
    *(f"{PACKAGE}.dagster_storage.{name}" for name in ("sqlite", "postgres", "durability", "instance", "step_context")),
    f"{PACKAGE}.defs.executor",  # dagster-celery's executor loop (DEFER_ORCH_EXECUTOR=celery)
}
PUBLIC_DBT = frozenset({"dbt.cli.main"})


def _private(module: str) -> bool:
    top = module.split(".")[0]
    if top in DAGSTER or top == "dagster_postgres":
        return any(part.startswith("_") for part in module.split(".")[1:])
    return top == "dbt" and module not in PUBLIC_DBT


def test_private_library_code_is_touched_only_in_guarded_modules() -> None:
    modules = _modules()
    offenders = {
        name: sorted(m for m in _imports(path, modules) if _private(m))
        for name, path in modules.items()
        if name not in GUARDED
    }
    assert {name: found for name, found in offenders.items() if found} == {}
    for name in GUARDED & set(modules):
        head = (ast.get_docstring(ast.parse(modules[name].read_text(encoding="utf-8"))) or "").lower()
        assert "tested" in head and "touches" in head or "guard" in head, f"{name} must say what it touches"


def test_no_dbt_method_is_replaced_to_find_packages() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in ROOT.rglob("*.py"))
    assert "_get_project_directories" not in text and "read_project_flags" not in text
