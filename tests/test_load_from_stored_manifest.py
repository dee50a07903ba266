"""A code-location load of main's head from the manifest a production build stored is the
load after a fresh parse: the same assets, dependencies and checks, with no dbt, no fetch
of the mirror and no wait for its lock. Main moving on (or git failing) falls back to the
parse. Real git; the equality test runs dbt (one parse) on top of the session's build."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from conftest import ProdEnv
from helpers import commit_all, git, init_repo

from defer_orchestration.branch import comparison
from defer_orchestration.branch.comparison import commit_manifest_cache, store_commit_manifest
from defer_orchestration.definitions import build_definitions
from defer_orchestration.defs.manifest_resolution import latest_published_manifest
from defer_orchestration.lib import git as product_git
from defer_orchestration.lib.errors import GitError
from defer_orchestration.lib.settings import RepoSettings
from defer_orchestration.production import head as head_module
from defer_orchestration.production.head import prepare_head_manifest, stored_head_manifest
from defer_orchestration.resources import DeferOrchSettings


def _graph(defs: dg.Definitions) -> tuple[dict[dg.AssetKey, frozenset[dg.AssetKey]], frozenset[dg.AssetCheckKey]]:
    """Every asset key with its parents, and every check key, of the loaded definitions."""
    graph = defs.resolve_asset_graph()
    deps = {key: frozenset(graph.get(key).parent_keys) for key in graph.get_all_asset_keys()}
    return deps, frozenset(graph.asset_check_keys)


def _refuse(what: str) -> Callable[..., None]:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a load of a stored head manifest {what}")

    return refuse


@pytest.mark.dbt
def test_definitions_from_a_stored_production_manifest_equal_those_after_a_fresh_parse(
    prod_env: ProdEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = prod_env.settings.project_path()
    head = git(prod_env.repo, "rev-parse", "refs/heads/main")
    # What a production build of main's head leaves: its manifest stored by commit.
    built_manifest = latest_published_manifest(prod_env.instance).manifest_path
    stored = DeferOrchSettings(home=str(tmp_path / "stored"), dbt_project_dir=str(project))
    assert store_commit_manifest(stored.core(), head, stored.core().dbt_vars, built_manifest)
    parsed = DeferOrchSettings(home=str(tmp_path / "parsed"), dbt_project_dir=str(project))

    fresh = build_definitions(parsed)  # a new home: clone, dbt parse of main's head
    assert (commit_manifest_cache(parsed.core(), head, parsed.core().dbt_vars) / "manifest.json").is_file()
    monkeypatch.setattr(comparison, "run_dbt", _refuse("ran dbt"))
    monkeypatch.setattr(product_git, "ensure_mirror", _refuse("fetched the mirror"))
    from_store = build_definitions(stored)

    fresh_deps, fresh_checks = _graph(fresh)
    store_deps, store_checks = _graph(from_store)
    assert len(fresh_deps) > 20 and len(fresh_checks) > 20  # the bundled project, not an empty graph
    assert store_deps == fresh_deps
    assert store_checks == fresh_checks


def _repo_with_main(root: Path) -> tuple[Path, str]:
    repo = init_repo(root / "repo")
    (repo / "README").write_text("one\n")
    return repo, commit_all(repo, "one")


def _settings(root: Path, repo: Path) -> tuple[DeferOrchSettings, RepoSettings]:
    settings = DeferOrchSettings(home=str(root / "home"), dbt_project_dir=str(repo))
    return settings, RepoSettings(repo=str(repo), subdir=".", main_branch="main")


def _store(settings: DeferOrchSettings, sha: str, root: Path) -> Path:
    manifest = root / f"manifest-{sha[:7]}.json"
    manifest.write_text('{"nodes": {}}')
    assert store_commit_manifest(settings.core(), sha, settings.core().dbt_vars, manifest)
    return commit_manifest_cache(settings.core(), sha, settings.core().dbt_vars) / "manifest.json"


def test_a_stored_head_manifest_is_used_without_touching_the_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, sha = _repo_with_main(tmp_path)
    settings, repo_settings = _settings(tmp_path, repo)
    cached = _store(settings, sha, tmp_path)
    monkeypatch.setattr(product_git, "ensure_mirror", _refuse("fetched the mirror"))
    monkeypatch.setattr(head_module, "parse_commit_manifest", _refuse("parsed"))
    assert stored_head_manifest(settings.core(), repo_settings) == cached
    assert prepare_head_manifest(settings.core(), repo_settings) == cached


def test_main_moving_on_falls_back_to_its_own_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, old = _repo_with_main(tmp_path)
    settings, repo_settings = _settings(tmp_path, repo)
    _store(settings, old, tmp_path)
    (repo / "README").write_text("two\n")
    new = commit_all(repo, "two")
    assert stored_head_manifest(settings.core(), repo_settings) is None  # never the old commit's
    parsed: list[str] = []

    def parse(settings: object, repo: object, mirror: Path, sha: str, *, vars: object) -> tuple[Path, None]:
        parsed.append(sha)
        return tmp_path / "parsed", None

    monkeypatch.setattr(head_module, "parse_commit_manifest", parse)
    assert prepare_head_manifest(settings.core(), repo_settings) == tmp_path / "parsed" / "manifest.json"
    assert parsed == [new]  # fetched, then main's new head parsed


def test_git_failing_falls_back_to_the_fetch_and_its_message(tmp_path: Path) -> None:
    settings, _ = _settings(tmp_path, tmp_path)
    missing = RepoSettings(repo=str(tmp_path / "no-such-repo"), subdir=".", main_branch="main")
    assert stored_head_manifest(settings.core(), missing) is None
    with pytest.raises(GitError):
        prepare_head_manifest(settings.core(), missing)


def test_branch_head_reads_exactly_the_branch(tmp_path: Path) -> None:
    repo, sha = _repo_with_main(tmp_path)
    git(repo, "branch", "feature/main")  # ls-remote's pattern "refs/heads/main" is a tail match
    (repo / "README").write_text("other\n")
    git(repo, "checkout", "-q", "-b", "x/refs/heads/main")
    commit_all(repo, "elsewhere")
    assert product_git.branch_head(str(repo), "main") == sha
    assert product_git.branch_head(str(repo), "absent") is None
    with pytest.raises(GitError):
        product_git.branch_head(str(repo), "--upload-pack=touch")
