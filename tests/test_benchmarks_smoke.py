"""Smoke tests for the synthetic benchmark project generator (benchmarks/generate_project.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

# `benchmarks` is a top-level package of the repo, not part of the installed distribution.
_REPO = os.fspath(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from benchmarks.generate_project import (  # noqa: E402
    LAYERS,
    GeneratedProject,
    generate_project,
)

N = 30
REF = re.compile(r"ref\('([A-Za-z0-9_]+)'\)")


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _children_from_sql(project: GeneratedProject) -> dict[str, set[str]]:
    """The DAG as the SQL files spell it (independent of the generator's metadata)."""
    kids: dict[str, set[str]] = {m: set() for m in project.models}
    for sql in (project.path / "models").rglob("*.sql"):
        for parent in REF.findall(sql.read_text(encoding="utf-8")):
            kids[parent].add(sql.stem)
    return kids


def _descendants(kids: dict[str, set[str]], model: str) -> set[str]:
    seen: set[str] = set()
    queue = deque(kids[model])
    while queue:
        node = queue.popleft()
        if node not in seen:
            seen.add(node)
            queue.extend(kids[node])
    return seen


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> GeneratedProject:
    return generate_project(tmp_path_factory.mktemp("bench") / "p", N, seed=0)


def test_structure(project: GeneratedProject) -> None:
    assert len(project.models) == N == len(set(project.models))
    sql_files = sorted((project.path / "models").rglob("*.sql"))
    assert sorted(p.stem for p in sql_files) == sorted(project.models)
    assert set(project.layers) == set(LAYERS)
    assert all(project.layers[layer] for layer in LAYERS)
    assert sum(len(v) for v in project.layers.values()) == N
    assert set(project.hubs) <= set(project.layers["core"])
    assert project.hub_model in project.hubs
    assert (project.path / "dbt_project.yml").is_file()
    assert "DBT_DUCKDB_PATH" in (project.path / "profiles.yml").read_text(encoding="utf-8")
    # every model has at least a unique test on id
    yml = "".join(p.read_text(encoding="utf-8") for p in (project.path / "models").rglob("*.yml"))
    assert yml.count("- unique") == N


def test_same_seed_is_byte_identical(project: GeneratedProject, tmp_path: Path) -> None:
    again = generate_project(tmp_path / "again", N, seed=0)
    assert _files(again.path) == _files(project.path)
    other = generate_project(tmp_path / "other", N, seed=1)
    assert _files(other.path) != _files(project.path)


def test_leaf_mid_hub(project: GeneratedProject) -> None:
    kids = _children_from_sql(project)
    assert kids[project.leaf_model] == set()
    mid = _descendants(kids, project.mid_model)
    hub = _descendants(kids, project.hub_model)
    assert 1 <= len(mid) < len(hub)
    assert project.descendants(project.hub_model) == frozenset(hub)


def test_change_model_changes_checksum(tmp_path: Path) -> None:
    gen = generate_project(tmp_path / "p", N, seed=0)
    path = gen.sql_path(gen.mid_model)
    before = path.read_text(encoding="utf-8")
    assert gen.change_model(gen.mid_model) == path
    once = path.read_text(encoding="utf-8")
    gen.change_model(gen.mid_model)
    twice = path.read_text(encoding="utf-8")
    digests = {hashlib.sha256(t.encode()).hexdigest() for t in (before, once, twice)}
    assert len(digests) == 3
    assert once.startswith(before) and REF.findall(twice) == REF.findall(before)
    # only that file changed
    fresh = generate_project(tmp_path / "fresh", N, seed=0)
    changed = {k for k, v in _files(gen.path).items() if _files(fresh.path).get(k) != v}
    assert changed == {gen.sql_paths[gen.mid_model].as_posix()}


def _dbt() -> str:
    beside = Path(sys.executable).with_name("dbt")
    if beside.is_file():
        return os.fspath(beside)
    found = shutil.which("dbt")
    if found is None:
        pytest.skip("dbt CLI not installed")
    return found


@pytest.mark.dbt
def test_dbt_parse(tmp_path: Path) -> None:
    gen = generate_project(tmp_path / "p", N, seed=0)
    target = tmp_path / "target"
    env = dict(os.environ, DBT_DUCKDB_PATH=os.fspath(tmp_path / "b.duckdb"),
               DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    proc = subprocess.run(
        [_dbt(), "parse",
         "--project-dir", os.fspath(gen.path), "--profiles-dir", os.fspath(gen.path),
         "--target-path", os.fspath(target), "--log-path", os.fspath(tmp_path / "logs")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    models = {n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert models == set(gen.models)
    tests = [n for n in manifest["nodes"].values() if n["resource_type"] == "test"]
    assert len(tests) >= N
