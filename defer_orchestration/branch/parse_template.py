"""The parse template: production's latest commit parsed for a branch target, so that a
branch's first run re-parses only the files it changed (see ``dbt/parse_cache.py``).

Made once per production manifest, outside any branch run (``branch_parse_template_job``,
launched by ``branch_parse_template_sensor`` when production publishes a manifest): the
commit production built is checked out at the stable path of a placeholder branch schema
and parsed with the branch profile for that schema, the same vars and the same packages
a branch run of that commit uses. It runs no SQL and writes nothing to the warehouse.

Dagster-free, so a command line can drive it.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from defer_orchestration import constants as c
from defer_orchestration.branch.checkout import branch_checkout, branch_dbt_paths, mirror_dir
from defer_orchestration.branch.retry import branch_run_dir
from defer_orchestration.dbt import artifacts, parse_cache
from defer_orchestration.dbt.session import DbtSession
from defer_orchestration.lib import git
from defer_orchestration.lib.errors import ConfigurationError, DbtInvocationError, GitError
from defer_orchestration.lib.manifest_store import PublishedManifest
from defer_orchestration.lib.settings import RepoSettings, Settings


_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class ParseTemplate:
    """What was made: for which commit, how long dbt's parse took, where it is kept."""

    sha: str
    token: str
    seconds: float
    path: Path


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
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    log.info(f"parse template for {sha[:12]} made in {parse.seconds:.1f}s")
    return ParseTemplate(sha, token, parse.seconds, parse_cache.template_dir(settings.home))

