"""The spec cache rebuilds exactly the definition dagster-dbt makes, and a load that has it
imports neither dagster-dbt nor dbt-core.

Three real parses (the bundled project, a generated 50-model project, the team project
with its seeds read back as sources), each turned into assets by dagster-dbt and by the
cache, compared field by field and as the repository snapshot a code server sends. A
corrupt, partial or foreign cache file falls back to dagster-dbt. The production build
writes the cache of the manifest it stores, and a fresh process loading that commit never
imports ``dagster_dbt`` or ``dbt``."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from conftest import ProdEnv
from helpers import commit_all, git, init_repo

from defer_orchestration import constants as c
from defer_orchestration.production.fingerprint import code_versions
from defer_orchestration.branch.comparison import commit_manifest_cache, store_commit_manifest
from defer_orchestration.dbt.packages import IN_PLACE_LINE
from defer_orchestration.dbt.project import prepare_manifest
from defer_orchestration.defs.assets import prod_dbt, spec_cache
from defer_orchestration.defs.assets.dbt_translator import build_with_dagster_dbt
from defer_orchestration.production.build import ProdBuildRequest, ProdBuildResult
from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings

pytestmark = pytest.mark.dbt  # parses real projects with dbt (see tests/conftest.py)

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
POOL = "a_pool"
# dagster-dbt attaches these as Python objects; the snapshot (and the cache) hold their placeholder text.
IN_MEMORY_ONLY = {"dagster_dbt/manifest", "dagster_dbt/dagster_dbt_translator"}


def _generated_project(root: Path) -> Path:
    sys.path.insert(0, str(REPO_ROOT))  # benchmarks/ is a sibling package of the product
    from benchmarks.generate_project import generate_project

    return generate_project(root / "generated", 50, seed=0).path


def _team_project(root: Path) -> Path:
    """The team fixture with its local package (the git one is the team tests' own)."""
    shutil.copytree(FIXTURES / "team_project", root / "team_project", ignore=shutil.ignore_patterns("README.md"))
    shutil.copytree(FIXTURES / "team_utils", root / "team_utils")
    # Used in place (no git): the one line the README tells such a project to add, so dbt
    # reads the packages we prepare outside it.
    with open(root / "team_project" / "dbt_project.yml", "a", encoding="utf-8") as project_file:
        project_file.write(f"\n{IN_PLACE_LINE}\n")
    return root / "team_project"


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (project, a dbt parse's manifest.json) for each project under test."""
    root = tmp_path_factory.mktemp("spec_cache")
    projects: dict[str, tuple[Path, str]] = {
        "bundled": (Path(DeferOrchSettings().project_path()), ""),
        "generated": (_generated_project(root), ""),
        "team": (_team_project(root), "{include_experimental: true}"),
    }
    out = {}
    for name, (project, dbt_vars) in projects.items():
        settings = DeferOrchSettings(home=str(root / f"home-{name}"), dbt_project_dir=str(project), dbt_vars=dbt_vars)
        out[name] = (project, prepare_manifest(settings.core()))
    return out


@pytest.fixture(params=["bundled", "generated", "team"])
def manifest(request: pytest.FixtureRequest, parsed: dict[str, tuple[Path, Path]], tmp_path: Path) -> Path:
    """A private copy of one project's manifest (its cache files are this test's)."""
    copy = tmp_path / "manifest.json"
    shutil.copyfile(parsed[request.param][1], copy)
    return copy


def _reference(manifest: Path) -> dg.AssetsDefinition:
    """dagster-dbt's own ``@dbt_assets`` definition, no cache involved."""
    compute = prod_dbt._prod_dbt_compute({})
    return build_with_dagster_dbt(json.loads(manifest.read_text()), compute, name=c.PROD_DBT_OP, pool=POOL)


def _as_built(manifest: Path) -> dg.AssetsDefinition:
    """The reference as ``build_prod_dbt_assets`` serves it: dagster-dbt's definition with
    production's code fingerprints as code versions (no project vars here)."""
    versions = code_versions(json.loads(manifest.read_text()), {})
    return prod_dbt._with_code_versions(_reference(manifest), versions)


def _from_cache(manifest: Path) -> dg.AssetsDefinition:
    cached = spec_cache.read(manifest)
    assert cached is not None, "no readable cache"
    rebuilt = spec_cache.build(cached, prod_dbt._prod_dbt_compute({}), pool=POOL)
    assert rebuilt is not None
    return rebuilt


def _metadata_as_cached(metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        k: dg.MetadataValue.text(f"[{type(v).__name__}] (unserializable)") if k in IN_MEMORY_ONLY else v
        for k, v in metadata.items()
    }


def _deps(deps: Any) -> list[tuple[Any, ...]]:
    return sorted(((d.asset_key, d.partition_mapping, dict(d.metadata or {})) for d in deps), key=repr)


def _assert_same_specs(got: dg.AssetsDefinition, want: dg.AssetsDefinition) -> None:
    got_specs, want_specs = {s.key: s for s in got.specs}, {s.key: s for s in want.specs}
    assert got_specs.keys() == want_specs.keys()
    for key, w in want_specs.items():
        g = got_specs[key]
        for field in ("description", "group_name", "skippable", "code_version", "automation_condition",
                      "partitions_def", "is_virtual", "freshness_policy", "legacy_freshness_policy"):
            assert getattr(g, field) == getattr(w, field), (key, field)
        assert list(g.owners) == list(w.owners), key
        assert dict(g.tags) == dict(w.tags), key
        assert _deps(g.deps) == _deps(w.deps), key
        assert IN_MEMORY_ONLY <= set(w.metadata), key  # the placeholders below stand for something
        assert dict(g.metadata) == _metadata_as_cached(dict(w.metadata)), key
        assert [type(v) for v in g.metadata.values()] == [type(v) for v in _metadata_as_cached(dict(w.metadata)).values()]
    got_checks, want_checks = {s.key: s for s in got.check_specs}, {s.key: s for s in want.check_specs}
    assert got_checks.keys() == want_checks.keys()
    for key, w in want_checks.items():
        g = got_checks[key]
        for field in ("name", "asset_key", "description", "blocking", "automation_condition", "partitions_def"):
            assert getattr(g, field) == getattr(w, field), (key, field)
        assert dict(g.metadata) == dict(w.metadata), key
        assert _deps(g.additional_deps) == _deps(w.additional_deps), key


def _snapshot(assets_def: dg.AssetsDefinition) -> str:
    """The repository a code server would send for a code location holding ``assets_def``."""
    defs = dg.Definitions(
        assets=[assets_def], resources={"settings": DeferOrchSettings(), "branch_settings": BranchCiSettings()}
    )
    return serialize_value(RepositorySnap.from_def(defs.get_repository_def(), defer_snapshots=True))


def test_the_cached_definition_equals_dagster_dbts(manifest: Path) -> None:
    reference = _reference(manifest)
    assert spec_cache.write(manifest, reference) is not None
    rebuilt = _from_cache(manifest)

    assert len(reference.keys) > 10 and len(reference.check_keys) > 10  # a real project, not an empty graph
    assert rebuilt.keys == reference.keys
    assert rebuilt.asset_deps == reference.asset_deps
    assert rebuilt.check_keys == reference.check_keys
    assert dict(rebuilt.keys_by_output_name) == dict(reference.keys_by_output_name)
    assert {n: s.key for n, s in rebuilt.check_specs_by_output_name.items()} == {
        n: s.key for n, s in reference.check_specs_by_output_name.items()
    }
    assert rebuilt.op.name == reference.op.name == c.PROD_DBT_OP
    assert rebuilt.op.tags == reference.op.tags
    assert rebuilt.op.pool == reference.op.pool == POOL
    assert rebuilt.can_subset is reference.can_subset is True
    assert rebuilt.required_resource_keys == reference.required_resource_keys
    assert rebuilt.op.description == reference.op.description
    assert rebuilt.op.retry_policy == reference.op.retry_policy
    assert (rebuilt.partitions_def, rebuilt.backfill_policy) == (reference.partitions_def, reference.backfill_policy)
    _assert_same_specs(rebuilt, reference)
    assert _snapshot(rebuilt) == _snapshot(reference)


def test_build_prod_dbt_assets_writes_the_cache_then_loads_from_it(manifest: Path) -> None:
    reference = _as_built(manifest)
    assert spec_cache.existing(manifest) is None
    first = prod_dbt.build_prod_dbt_assets(manifest, pool=POOL)  # dagster-dbt, writes the cache
    assert spec_cache.existing(manifest) is not None
    second = prod_dbt.build_prod_dbt_assets(manifest, pool=POOL)  # from the cache
    for built in (first, second):
        assert spec_cache.definition_signature(built) == spec_cache.definition_signature(reference)
        assert prod_dbt._keys_by_unique_id(built) == {
            s.metadata["dagster_dbt/unique_id"]: s.key for s in reference.specs
        }


def _corruptions(cache: Path, other: Path) -> Iterator[tuple[str, bytes]]:
    text = cache.read_bytes()
    yield "truncated", text[: len(text) // 2]
    yield "empty", b""
    yield "not json", b"\x00garbage{"
    yield "another manifest's cache", other.read_bytes()
    payload = json.loads(text)
    payload["format"] = 0
    yield "an older format", json.dumps(payload).encode()
    payload = json.loads(text)
    payload["specs"] = payload["specs"][1:]
    yield "a spec missing (outputs disagree)", json.dumps(payload).encode()
    payload = json.loads(text)
    payload["specs"] = payload["specs"] + payload["specs"][:1]
    yield "a spec twice (multi_asset refuses it)", json.dumps(payload).encode()


@pytest.mark.parametrize("manifest", ["generated"], indirect=True)
def test_a_corrupt_cache_falls_back_to_dagster_dbt_and_the_right_graph(
    manifest: Path, parsed: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    want = spec_cache.definition_signature(_as_built(manifest))
    cache = prod_dbt.cache_asset_specs(manifest)
    assert cache is not None
    other = tmp_path / "other" / "manifest.json"
    other.parent.mkdir()
    shutil.copyfile(parsed["bundled"][1], other)
    other_cache = prod_dbt.cache_asset_specs(other)
    assert other_cache is not None
    for what, content in _corruptions(cache, other_cache):
        cache.write_bytes(content)
        assert spec_cache.definition_signature(prod_dbt.build_prod_dbt_assets(manifest, pool=POOL)) == want, what
        assert spec_cache.read(manifest) is not None, f"{what}: the fallback rewrote the cache"


def test_a_changed_manifest_gets_a_new_cache_and_the_old_one_goes(manifest: Path) -> None:
    old = prod_dbt.cache_asset_specs(manifest)
    assert old is not None
    manifest.write_text(manifest.read_text() + "\n")  # same graph, other bytes: another key
    assert spec_cache.read(manifest) is None
    new = prod_dbt.cache_asset_specs(manifest)
    assert new is not None and new != old
    assert not old.exists()


def test_the_production_step_caches_the_specs_of_the_manifest_it_stored(
    parsed: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    # What run_prod_build leaves for the next load: its manifest stored by commit and vars.
    sha, dbt_vars = "a" * 40, {"include_experimental": True}
    core = DeferOrchSettings(home=str(tmp_path / "home"), dbt_project_dir=str(parsed["team"][0])).core()
    assert store_commit_manifest(core, sha, dbt_vars, parsed["team"][1])
    stored = commit_manifest_cache(core, sha, dbt_vars) / "manifest.json"
    result = ProdBuildResult(
        sha=sha, target_path=tmp_path, manifest={}, run_results={}, ran=set(), commands=[], blocking=[], failing_tests=[],
    )
    finish = prod_dbt._cache_stored_specs(core, ProdBuildRequest(sha=sha, vars=dbt_vars), result, logging.getLogger("test"))
    finish()  # the child process caching them has ended
    assert spec_cache.existing(stored) is not None
    want = spec_cache.definition_signature(_reference(stored))
    assert spec_cache.definition_signature(_from_cache(stored)) == want


def test_the_production_step_of_the_session_build_made_sure_of_the_cache(prod_env: ProdEnv) -> None:
    core = prod_env.settings.core()
    stored = commit_manifest_cache(core, prod_env.repo_head, core.dbt_vars) / "manifest.json"
    assert spec_cache.read(stored) is not None
    messages = [
        e.user_message for e in prod_env.instance.all_logs(prod_env.result.run_id)
        if "asset spec cache for the next load" in (e.user_message or "")
    ]
    assert messages and str(spec_cache.existing(stored)) in messages[0]


_LOAD = """
import sys
from defer_orchestration.definitions import build_definitions
from defer_orchestration.resources import DeferOrchSettings
defs = build_definitions(DeferOrchSettings(home=sys.argv[1], dbt_project_dir=sys.argv[2]))
graph = defs.get_repository_def().asset_graph
print(len(graph.get_all_asset_keys()), len(graph.asset_check_keys), "dagster_dbt" in sys.modules, "dbt" in sys.modules)
"""


def _load_in_a_fresh_process(home: Path, project: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    done = subprocess.run(
        [sys.executable, "-c", _LOAD, str(home), str(project)], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def test_a_load_with_the_cache_imports_neither_dagster_dbt_nor_dbt(
    parsed: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    # main's head as a production build leaves it: its manifest stored, its specs cached.
    repo = init_repo(tmp_path / "repo")
    shutil.copytree(parsed["generated"][0], repo / "project")
    commit_all(repo, "generated project")
    project, head = repo / "project", git(repo, "rev-parse", "refs/heads/main")
    home = tmp_path / "home"
    core = DeferOrchSettings(home=str(home), dbt_project_dir=str(project)).core()
    assert store_commit_manifest(core, head, core.dbt_vars, parsed["generated"][1])
    stored = commit_manifest_cache(core, head, core.dbt_vars) / "manifest.json"
    reference = _reference(stored)
    want = [str(len(reference.keys) + 1), str(len(reference.check_keys))]  # + prod_manifest

    cache = prod_dbt.cache_asset_specs(stored)
    assert cache is not None
    assert _load_in_a_fresh_process(home, project) == [*want, "False", "False"]

    cache.unlink()  # no cache: dagster-dbt (and dbt-core) as before, and the load writes it
    assert _load_in_a_fresh_process(home, project) == [*want, "True", "True"]
    assert spec_cache.existing(stored) is not None
    assert _load_in_a_fresh_process(home, project) == [*want, "False", "False"]
