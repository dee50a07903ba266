"""Every third-party module the product (or its tests) imports is a declared dependency.

A module that merely arrives with dagster or dbt today (msgpack, sqlalchemy, yaml, ...)
may not tomorrow, and constraints/oldest.txt only pins what pyproject.toml declares.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections import defaultdict
from collections.abc import Iterable
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(requirements: Iterable[str]) -> set[str]:
    return {_normalise(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]) for req in requirements}


RUNTIME = _declared(PYPROJECT["project"]["dependencies"])
DEV = _declared(PYPROJECT["project"]["optional-dependencies"]["dev"])
# Extras the product imports only when the user chooses them (DEFER_ORCH_EXECUTOR=celery).
EXTRAS = _declared(PYPROJECT["project"]["optional-dependencies"]["distributed"])


@cache
def _owners() -> dict[str, frozenset[str]]:
    """Module name (top level, and top two levels for namespaces such as ``dbt.adapters``)
    to the installed distributions whose files hold it."""
    owners: dict[str, set[str]] = defaultdict(set)
    for dist in metadata.distributions():
        name = _normalise(dist.metadata["Name"])
        for file in dist.files or ():
            parts = file.parts
            if not parts or ".." in parts or not parts[-1].endswith((".py", ".so", ".pyi")):
                continue
            module = [*parts[:-1], parts[-1].split(".", 1)[0]]
            if module[-1] == "__init__":
                module.pop()
            if not module or module[0].endswith((".dist-info", ".data")):
                continue
            owners[module[0]].add(name)
            if len(module) > 1:
                owners[".".join(module[:2])].add(name)
    return {module: frozenset(names) for module, names in owners.items()}


def _imports(root: Path) -> dict[str, set[str]]:
    """Absolute imports under ``root``: dotted module name -> files importing it."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found[name].add(str(path.relative_to(ROOT)))
    return found


def _undeclared(root: Path, declared: set[str], local: set[str]) -> list[str]:
    owners = _owners()
    problems = []
    for module, files in sorted(_imports(root).items()):
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in local:
            continue
        two = ".".join(module.split(".")[:2])
        providers = owners.get(two) or owners.get(top)
        if not providers:
            problems.append(f"{module}: no installed distribution provides it ({sorted(files)[0]})")
        elif not providers & declared:
            problems.append(f"{module} comes from {sorted(providers)}, none declared ({sorted(files)[0]})")
    return problems


def test_the_products_imports_are_declared_dependencies() -> None:
    assert _undeclared(ROOT / "defer_orchestration", RUNTIME | EXTRAS, {"defer_orchestration"}) == []


def test_the_tests_imports_are_declared_dependencies() -> None:
    local = {path.stem for path in (ROOT / "tests").rglob("*.py")} | {"tests", "defer_orchestration", "benchmarks"}
    assert _undeclared(ROOT / "tests", RUNTIME | DEV, local) == []


@pytest.mark.parametrize("name", ["oldest", "newest"])
def test_every_direct_dependency_is_pinned_in_the_constraints(name: str) -> None:
    pinned = {
        _normalise(line.split("==", 1)[0])
        for line in (ROOT / "constraints" / f"{name}.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert sorted(RUNTIME - pinned) == []


def test_the_oldest_constraints_are_the_pins_lower_bounds() -> None:
    """constraints/oldest.txt and pyproject.toml agree: each pin's lower bound is the
    version oldest.txt installs (a bare ``>=1.11`` matches ``1.11.0``)."""
    oldest = {
        _normalise(name): version
        for name, version in (
            line.split("==", 1)
            for line in (ROOT / "constraints" / "oldest.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")
        )
    }

    def release(version: str) -> tuple[int, ...]:
        numbers = tuple(int(part) for part in version.split("."))
        return numbers + (0,) * (3 - len(numbers))

    disagree = []
    for req in PYPROJECT["project"]["dependencies"]:
        name = _normalise(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0])
        bound = re.search(r">=\s*([0-9.]+)", req)
        if bound and release(bound.group(1)) != release(oldest[name]):
            disagree.append(f"{req} but constraints/oldest.txt has {name}=={oldest[name]}")
    assert disagree == []
