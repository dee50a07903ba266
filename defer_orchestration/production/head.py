"""The manifest the code location loads: a parse of main's head.

Production builds commits of main, so the asset graph is parsed from main's head too
(not from whatever lies in the project directory): every code-location load catches up
with the latest merge. The parse is cached by commit and vars (``state_cache/``, shared
with the merge-base parses of branch builds, and seeded by every production build), so a
reload with no new merge runs no dbt. When the head's manifest is already there, the load
asks the watched repository for main's head alone (``git ls-remote``) and neither fetches
nor waits for the mirror's lock, which a branch or production build may be holding for a
fetch. A project outside any git repository is parsed in place.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

from defer_orchestration.branch.checkout import mirror_dir
from defer_orchestration.branch.comparison import commit_manifest_cache, parse_commit_manifest
from defer_orchestration.dbt.project import prepare_manifest
from defer_orchestration.lib import git
from defer_orchestration.lib.errors import ConfigurationError, GitError
from defer_orchestration.lib.settings import RepoSettings, Settings
from defer_orchestration.production.state_aware import project_vars, project_vars_from_yaml


def main_head(settings: Settings, repo: RepoSettings) -> str:
    """main's head in our mirror of the watched repository (fetched now)."""
    mirror = git.ensure_mirror(repo.repo, mirror_dir(settings, repo.repo))
    try:
        return git.resolve_commit(mirror, f"refs/heads/{repo.main_branch}")
    except GitError as exc:
        raise ConfigurationError(
            f"the watched repository {repo.repo} has no branch {repo.main_branch!r} to build "
            f"production from ({exc}). Set DEFER_ORCH_MAIN_BRANCH to its main branch."
        ) from exc


def stored_head_manifest(settings: Settings, repo: RepoSettings) -> Path | None:
    """The cached manifest.json of main's head as the watched repository has it now, or None
    when there is none yet (or git could not say: the caller's fetch then reports why)."""
    try:
        head = git.branch_head(repo.repo, repo.main_branch)
    except GitError:
        return None
    if head is None:
        return None
    manifest = commit_manifest_cache(settings, head, settings.dbt_vars) / "manifest.json"
    return manifest if manifest.is_file() else None


def prepare_head_manifest(settings: Settings, repo: RepoSettings | None) -> Path:
    """A manifest.json of main's head parsed for the prod target (the project directory
    in place when ``repo`` is None)."""
    if repo is None:
        return prepare_manifest(settings)
    stored = stored_head_manifest(settings, repo)
    if stored is not None:
        return stored
    mirror = mirror_dir(settings, repo.repo)
    head = main_head(settings, repo)
    state, _ = parse_commit_manifest(settings, repo, mirror, head, vars=settings.dbt_vars)
    return state / "manifest.json"


def head_project_vars(settings: Settings, repo: RepoSettings | None) -> dict[str, Any]:
    """The vars main's head gives its nodes (``vars:`` of its ``dbt_project.yml`` with
    DEFER_ORCH_DBT_VARS over them), for the code versions of the loaded asset graph: dbt's
    manifest does not record them. Read from our mirror (every production build of the
    head fetched it); when the mirror cannot say, DEFER_ORCH_DBT_VARS alone (a var changed
    in ``dbt_project.yml`` then shows in the next load's code versions only after a
    production build of that head)."""
    if repo is None:
        return project_vars(settings.project_dir, settings.dbt_vars)
    try:
        head = git.branch_head(repo.repo, repo.main_branch)
        mirror = mirror_dir(settings, repo.repo)
        if head is None or not mirror.is_dir():
            return dict(settings.dbt_vars)
        path = posixpath.normpath(posixpath.join(repo.subdir, "dbt_project.yml"))
        text = git.run_git(["show", f"{head}:{path}"], cwd=mirror)
    except GitError:
        return dict(settings.dbt_vars)
    return project_vars_from_yaml(text, settings.dbt_vars)
