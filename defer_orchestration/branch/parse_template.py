"""The parse template: production's latest commit parsed for a branch target, so that a
branch's first run re-parses only the files it changed (see ``dbt/parse_cache.py``).

Made once per production manifest, outside any branch run (``branch_parse_template_job``,
launched by ``branch_parse_template_sensor`` when production publishes a manifest): the
commit production built is checked out at the stable path of a placeholder branch schema
and parsed with the branch profile for that schema, the same vars and the same packages
a branch run of that commit uses. It runs no SQL and writes nothing to the warehouse.

With an object store as the artifact store the template is published there too, under
:func:`template_key`, and a host whose home holds no template for production's latest
commit fetches it before a branch's first parse (:func:`fetch_parse_template`), adapted
to its own paths (``dbt/parse_cache.install_template``). A template missing from the
store, corrupt or unreachable never fails a branch run: dbt parses in full and the run
says why in its warnings.

Dagster-free, so a command line can drive it.
"""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defer_orchestration import constants as c
from defer_orchestration.branch.checkout import (
    branch_checkout,
    branch_dbt_paths,
    mirror_dir,
    worktree_prefix,
    worktrees_dir,
)
from defer_orchestration.branch.retry import branch_run_dir
from defer_orchestration.dbt import artifacts, parse_cache
from defer_orchestration.dbt.session import DbtSession
from defer_orchestration.dbt.packages import package_key
from defer_orchestration.lib import git
from defer_orchestration.lib.artifact_store import parse_store
from defer_orchestration.lib.errors import ConfigurationError, DbtInvocationError, DeferOrchestrationError, GitError
from defer_orchestration.lib.manifest_store import PublishedManifest
from defer_orchestration.lib.settings import RepoSettings, Settings


_SHA = re.compile(r"[0-9a-f]{40}")
# Where templates live in an object store: <url>/parses/template/<key>/.
TEMPLATE_KIND = "template"


@dataclass(frozen=True)
class ParseTemplate:
    """What was made: for which commit, how long dbt's parse took, where it is kept."""

    sha: str
    token: str
    seconds: float
    path: Path
    location: str = ""  # where it was published (an object store), or ""


def make_parse_template(
    settings: Settings,
    repo: RepoSettings,
    published: PublishedManifest,
    *,
    run_id: str,
    log: logging.Logger | None = None,
) -> ParseTemplate:
    """Parse the commit of ``published`` for the placeholder branch schema and keep the
    parse as the template first branch runs start from."""
    log = log or logging.getLogger(__name__)
    sha = published.git_sha or ""
    if not _SHA.fullmatch(sha):
        raise ConfigurationError(
            f"production's manifest {published.version} names no git commit ({sha or 'none'}): it was "
            "built outside a git repository, which branch runs never check out. No parse template "
            "was made; branch runs parse in full."
        )
    token = parse_cache.template_token()
    run_dir = branch_run_dir(settings, run_id)
    where = f"commit {sha[:12]} (production's, parsed as a branch template)"
    prod_manifest = artifacts.load_json(published.path / "manifest.json", what="production manifest.json")
    try:
        mirror = git.ensure_mirror(repo.repo, mirror_dir(settings, repo.repo))
        with branch_checkout(settings, mirror, token, sha, run_id) as (checkout, stable):
            if not stable:
                raise GitError(
                    "another parse template is being made right now (its checkout is locked); "
                    "this one is not needed. Nothing was changed."
                )
            paths = branch_dbt_paths(
                settings, repo, checkout, run_dir, token, where=where, vars=settings.dbt_vars,
                production_schemas=artifacts.relation_schemas(prod_manifest),
            )
            with DbtSession(run_dir / "logs", env=settings.warehouse.branch_dbt_env()) as dbt:
                parse = dbt.invoke(["parse"], paths, target=c.BRANCH_TARGET)
            if not parse.ok:
                raise DbtInvocationError(
                    f"{where} does not parse for a branch target, so branch runs parse in full. "
                    f"dbt said:\n{parse.tail()}"
                )
            if not parse_cache.keep_template(
                paths.target_path, settings.home, project_dir=paths.project_dir, token=token, sha=sha
            ):
                raise DbtInvocationError(
                    f"dbt parsed {where} but the parse could not be kept under "
                    f"{parse_cache.template_dir(settings.home)}; check that the directory is writable."
                )
            location = _publish(settings, repo, paths.project_dir, paths.target_path, sha=sha, token=token,
                                production_schemas=artifacts.relation_schemas(prod_manifest))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    log.info(f"parse template for {sha[:12]} made in {parse.seconds:.1f}s" + (f", published to {location}" if location else ""))
    return ParseTemplate(sha, token, parse.seconds, parse_cache.template_dir(settings.home), location)


def template_key(
    settings: Settings,
    repo: RepoSettings,
    *,
    sha: str,
    token: str,
    vars: Mapping[str, Any],
    project_dir: Path,
    production_schemas: Sequence[str],
) -> str:
    """The key a template of commit ``sha`` is published under: the commit and what makes
    dbt accept it for a run (dbt's version, the branch profile's connection for the
    placeholder schema ``token``, vars, the packages' lock, the project's subdirectory).

    A run computes it from its own settings and checkout: a run whose template dbt would
    reject finds none under its key."""
    output = settings.warehouse.dbt_branch_output(
        token, token, threads=settings.threads, production_schemas=production_schemas
    )
    return parse_cache.published_key(sha, {
        "kind": TEMPLATE_KIND,
        "token": token,
        "dbt_core": parse_cache.dbt_core_version(),
        "profile": parse_cache.profile_identity(output),
        "vars": dict(vars),
        "packages": package_key(project_dir) or "",
        "subdir": repo.subdir,
    })


def template_project_dir(settings: Settings, repo: RepoSettings, token: str) -> Path:
    """Where this host checks a template's commit out (``branch_checkout``'s stable path
    for the placeholder schema): what a kept template must name as its project."""
    return (worktrees_dir(settings) / f"{worktree_prefix(token)}checkout" / repo.subdir).resolve()


def _publish(
    settings: Settings, repo: RepoSettings, project_dir: Path, target_path: Path, *, sha: str, token: str,
    production_schemas: Sequence[str],
) -> str:
    """Publish the template just kept to the object store, if the artifact store is one; its
    location ("" for a directory store: one host's template is not shared)."""
    store = parse_store(settings.artifact_store, home=settings.home)
    if store is None:
        return ""
    key = template_key(
        settings, repo, sha=sha, token=token, vars=settings.dbt_vars, project_dir=project_dir,
        production_schemas=production_schemas,
    )
    meta = {"sha": sha, "token": token, "project_dir": str(project_dir), "home": str(settings.home.resolve())}
    try:
        return store.publish_parse(TEMPLATE_KIND, key, {parse_cache.PARSE_FILE: target_path / parse_cache.PARSE_FILE}, meta)
    except DeferOrchestrationError as exc:
        raise type(exc)(
            f"the parse template of commit {sha[:12]} was kept on this host but not published, so other "
            f"hosts parse their branches' first runs in full: {exc}"
        ) from exc


def fetch_parse_template(
    settings: Settings,
    repo: RepoSettings,
    *,
    sha: str | None,
    project_dir: Path,
    vars: Mapping[str, Any],
    production_schemas: Sequence[str],
    log: logging.Logger | None = None,
) -> str | None:
    """Make sure this host holds the template of production's commit ``sha`` before a
    branch's first parse, fetching it from the object store when it does not.

    ``project_dir`` is the branch's checkout (its packages' lock is part of the key). Never
    raises for the store's sake: returns the warning the run reports when the published
    template could not be used (missing, corrupt, unreachable) and nothing else usable was
    here, so dbt parses in full; None otherwise. A store where no host ever published a
    template (``branch_parse_template_sensor`` is off) is logged, not warned about on every
    first run."""
    log = log or logging.getLogger(__name__)
    store = parse_store(settings.artifact_store, home=settings.home)
    if store is None or not sha or not _SHA.fullmatch(sha):
        return None
    local = parse_cache.template_meta(settings.home)
    if local.get("sha") == sha:
        return None
    token = parse_cache.template_token()
    here = template_project_dir(settings, repo, token)
    older = local.get("sha", "") if parse_cache.template_for(settings.home, token, here) is not None else ""
    fallback = (
        f"this branch's first run started from this host's older template (commit {older[:12]}) instead"
        if older else "dbt parsed this branch's first run in full"
    )
    staging = settings.home / "parse_cache" / f".download-{uuid.uuid4().hex[:8]}"
    try:
        key = template_key(
            settings, repo, sha=sha, token=token, vars=vars, project_dir=project_dir,
            production_schemas=production_schemas,
        )
        fetched = store.fetch_parse(TEMPLATE_KIND, key, staging)
        if fetched is None:
            if older:
                return None  # nothing newer published yet: this host's own template serves
            if not store.has_parses(TEMPLATE_KIND):
                # No host publishes templates (branch_parse_template_sensor is off): not news.
                log.info(f"no parse template is published in {store.url}; dbt parses this first run in full")
                return None
            return (
                f"no parse template of production's commit {sha[:12]} is published at "
                f"{store.parse_location(TEMPLATE_KIND, key)} (branch_parse_template_job has not made one, "
                f"or made it with other settings: dbt version, profile, vars or packages), so {fallback}."
            )
        if fetched.meta.get("sha") != sha or not parse_cache.install_template(
            fetched.path / parse_cache.PARSE_FILE, settings.home, project_dir=here, meta=fetched.meta
        ):
            return (
                f"the published parse template {fetched.location} could not be adapted to this host "
                f"(it names another commit or layout), so it was not used and {fallback}. Rerun "
                "branch_parse_template_job to publish a fresh one."
            )
        log.info(f"parse template of {sha[:12]} fetched from {fetched.location}")
        return None
    except (DeferOrchestrationError, ValueError) as exc:
        return (
            f"the published parse template of production's commit {sha[:12]} could not be used, so "
            f"{fallback}: {exc}"
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)

