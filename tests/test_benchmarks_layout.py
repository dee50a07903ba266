"""The benchmarks' own structure: no import cycle among their modules, and no patching of
product code (phases come from the metadata the product records, not from wrapping its
functions). Static checks over the source; nothing is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for p in BENCHMARKS.glob("*.py")}


def _benchmark_imports(tree: ast.Module, known: set[str]) -> set[str]:
    """Benchmark modules ``tree`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "benchmarks":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from benchmarks import stack
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "benchmarks" and len(parts) > 1:
                    found.add(parts[1])
    return found & known


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, a]``), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        path.append(node)
        for nxt in sorted(graph[node]):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done and (found := visit(nxt, path)):
                return found
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (found := visit(start, [])):
            return found
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_benchmark_modules() -> None:
    modules = _modules()
    graph = {name: _benchmark_imports(tree, set(modules)) - {name} for name, tree in modules.items()}
    assert graph["run"], "benchmarks/run.py should import the measurement modules"
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"
    # run.py is the entry point: nothing imports it.
    assert not [name for name, deps in graph.items() if "run" in deps]


def test_benchmarks_patch_no_product_code() -> None:
    offences = []
    for name, tree in _modules().items():
        product_names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("defer_orchestration"):
                product_names.update(alias.asname or alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                product_names.update(
                    (alias.asname or alias.name).split(".")[0]
                    for alias in node.names
                    if alias.name.startswith("defer_orchestration")
                )
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
                offences.append(f"{name}.py:{node.lineno}: setattr")
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign) else []
            )
            for target in targets:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                        and target.value.id in product_names:
                    offences.append(f"{name}.py:{node.lineno}: assigns {target.value.id}.{target.attr}")
    assert not offences, offences
