"""One production build: an exact commit of main, checked out of the watched repository,
built into production with the configured dbt commands, judged by the publication policy.

Building a commit, not "whatever lies in the project directory", is what lets production
follow main with no reload: a run launched from definitions loaded before a merge still
builds the merge's head, new models included. A project outside any git repository is
built in place (there is no commit to follow).

``mode: changed`` builds only ``state:modified+`` of the head against the latest published
manifest (everything else already is in production) and still publishes the head's
complete manifest, its run results completed from the previous build's.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from defer_orchestration import constants as c
from defer_orchestration.branch.checkout import mirror_dir, worktrees_dir
from defer_orchestration.branch.comparison import store_commit_manifest
from defer_orchestration.dbt import artifacts
from defer_orchestration.dbt.cli import DbtPaths, DbtRun, run_dbt
from defer_orchestration.dbt.owned_checkout import prepare_owned_checkout
from defer_orchestration.dbt.packages import check_in_place, packages_dir_for
from defer_orchestration.dbt.profiles import write_profiles
from defer_orchestration.lib import git
from defer_orchestration.lib.errors import ConfigurationError, DbtInvocationError, GitError, WarehouseError
from defer_orchestration.lib.manifest_store import PublishedManifest
from defer_orchestration.lib.settings import PublishOn, RepoSettings, Settings

BUILD_RECORD = "build.json"  # next to the published artifacts: what was built, for prod_manifest


class ProdMode(Enum):
    """How much of the head a production build rebuilds (lower-case names: Dagster's
    launchpad shows enum names)."""

    full = "full"
    changed = "changed"  # state:modified+ against the latest published manifest


@dataclass(frozen=True)
class ProdBuildRequest:
    """What to build: a commit of main (empty: main's head now), how much, with which vars."""

    sha: str = ""
    mode: ProdMode = ProdMode.full
    vars: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ProdBuildResult:
    """What a production build did (its artifacts are at ``target_path``)."""

    sha: str | None  # None: built in place, outside git
    target_path: Path
    manifest: dict[str, Any]
    run_results: dict[str, Any]  # merged over the commands (and, in changed mode, the previous build)
    ran: set[str]  # unique_ids this build ran
    commands: list[DbtRun]
    blocking: list[str]
    failing_tests: list[str]
    mode: ProdMode = ProdMode.full
    not_rebuilt: list[str] = field(default_factory=list)  # changed mode: unchanged nodes kept
    kept_from: str | None = None  # changed mode: the published version they were kept from
    seconds_saved: float = 0.0
    row_counts: dict[str, int] = field(default_factory=dict)

    @property
    def publishable(self) -> bool:
        """The publication policy lets this build become the deferral state."""
        return not self.blocking


def prod_build_dir(settings: Settings, run_id: str) -> Path:
    """Scratch directory of one production build."""
    return settings.run_dir(run_id) / "prod_build"


def prod_build_target_path(settings: Settings, run_id: str) -> Path:
    """Where a production build leaves the artifacts ``prod_manifest`` publishes."""
    return prod_build_dir(settings, run_id) / "target"


@contextmanager
def checked_out_head(
    settings: Settings, repo: RepoSettings | None, sha: str, run_id: str
) -> Iterator[tuple[str | None, Path]]:
    """(the commit, its project directory) checked out for one build; the project dir in
    place when there is no repository."""
    if repo is None:
        yield None, settings.project_dir
        return
    mirror = git.ensure_mirror(repo.repo, mirror_dir(settings, repo.repo))
    ref = sha or f"refs/heads/{repo.main_branch}"
    try:
        commit = git.resolve_commit(mirror, ref)
    except GitError as exc:
        raise GitError(
            f"cannot build {ref!r} of {repo.repo} into production: {exc} Check that main exists "
            f"(DEFER_ORCH_MAIN_BRANCH={repo.main_branch!r}) or launch with an existing sha."
        ) from exc
    dest = worktrees_dir(settings) / f"prod-{commit[:12]}-{run_id[:8]}"
    with git.checked_out(mirror, commit, dest) as checkout:
        project = (checkout / repo.subdir).resolve()
        if not (project / "dbt_project.yml").is_file():
            raise ConfigurationError(
                f"commit {commit[:12]} of {repo.main_branch} has no dbt project at {repo.subdir!r}; "
                "set DEFER_ORCH_PROJECT_SUBDIR to its path inside the repository."
            )
        yield commit, project


def run_prod_build(
    settings: Settings,
    repo: RepoSettings | None,
    request: ProdBuildRequest,
    *,
    run_id: str,
    latest: PublishedManifest | None,
    log: logging.Logger | None = None,
) -> ProdBuildResult:
    """Build one commit of main into production; never publishes (``prod_manifest`` does).

    Holds the warehouse's ``production_write`` throughout: where writers exclude readers
    (DuckDB), new branch builds wait and running ones finish first."""
    log = log or logging.getLogger(__name__)
    with settings.warehouse.production_write():
        return _run_prod_build(settings, repo, request, run_id=run_id, latest=latest, log=log)


def _run_prod_build(
    settings: Settings,
    repo: RepoSettings | None,
    request: ProdBuildRequest,
    *,
    run_id: str,
    latest: PublishedManifest | None,
    log: logging.Logger,
) -> ProdBuildResult:
    work = prod_build_dir(settings, run_id)
    target = prod_build_target_path(settings, run_id)
    with checked_out_head(settings, repo, request.sha, run_id) as (sha, project):
        where = f"commit {sha[:12]}" if sha else str(project)
        profiles = write_profiles(
            work / "profiles", project, {c.PROD_TARGET: c.PROD_SCHEMA}, c.PROD_TARGET,
            warehouse=settings.warehouse, threads=settings.threads,
        )
        packages = packages_dir_for(project, settings.package_cache(), work / "dbt_packages", vars=request.vars)
        if sha:
            prepare_owned_checkout(project, packages, settings.package_cache())
        else:
            check_in_place(project, packages)
        paths = DbtPaths(project, profiles, target, work / "logs", packages, request.vars, settings.warehouse.dbt_env())
        changed = request.mode is ProdMode.changed and latest is not None
        selection = ["--select", "state:modified+", "--state", str(latest.path)] if changed and latest else []
        runs: list[DbtRun] = []
        documents: list[dict[str, Any]] = []
        manifest: dict[str, Any] = {}
        models_built = settings.publish_on is PublishOn.MODELS_BUILT
        for i, command in enumerate(settings.prod_commands):
            log.info(f"production build of {where}, step {i + 1}/{len(settings.prod_commands)}: dbt {command}")
            step = paths.with_(target_path=work / "steps" / f"{i + 1}-{command}")
            run = run_dbt([command, *selection], step, target=c.PROD_TARGET, check=False)
            runs.append(run)
            results = run.run_results()
            if results is None or not (step.target_path / "manifest.json").is_file():
                raise DbtInvocationError(
                    f"`dbt {command}` of {where} failed before running any node (exit {run.returncode}): "
                    f"the head does not parse or dbt could not start. Nothing was built and the "
                    f"previous production manifest stays the deferral state. Fix main and merge again. "
                    f"dbt said:\n{run.tail()}"
                )
            documents.append(results)
            manifest = artifacts.load_json(step.target_path / "manifest.json", what="production manifest")
            if artifacts.publication_blockers(results, manifest, models_built_suffices=models_built)[0]:
                break  # a later command would only fail (or skip) the same nodes again
    ran = {uid for document in documents for uid in artifacts.result_statuses(document)}
    not_rebuilt: list[str] = []
    saved = 0.0
    if changed and latest is not None:
        previous = artifacts.load_json(latest.path / "run_results.json", what="previous production run_results")
        present = set(artifacts.all_resources(manifest))
        kept = {
            **previous,
            "results": [r for r in previous.get("results") or [] if r.get("unique_id") in present - ran],
        }
        not_rebuilt = sorted(artifacts.result_statuses(kept))
        saved = round(sum(artifacts.execution_times(kept).values()), 3)
        documents.insert(0, kept)
    run_results = artifacts.merge_run_results(documents)
    blocking, failing_tests = artifacts.publication_blockers(run_results, manifest, models_built_suffices=models_built)
    target.mkdir(parents=True, exist_ok=True)
    (target / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (target / "run_results.json").write_text(json.dumps(run_results), encoding="utf-8")
    (target.parent / BUILD_RECORD).write_text(
        json.dumps({"sha": sha, "mode": request.mode.value, "not_rebuilt": len(not_rebuilt), "seconds_saved": saved}),
        encoding="utf-8",
    )
    shutil.rmtree(work / "profiles", ignore_errors=True)
    settings.warehouse.after_production_build(artifacts.relation_schemas(manifest))
    if sha and manifest:
        # The next load of this commit (main's head) takes the asset graph from here: no dbt.
        store_commit_manifest(settings, sha, request.vars, target / "manifest.json")
    statuses = artifacts.result_statuses(run_results)
    built = {uid for uid, status in statuses.items() if uid in ran and status == artifacts.NodeStatus.SUCCESS}
    return ProdBuildResult(
        sha=sha, target_path=target, manifest=manifest, run_results=run_results, ran=ran, commands=runs,
        blocking=blocking, failing_tests=failing_tests, mode=request.mode if changed else ProdMode.full,
        not_rebuilt=not_rebuilt, seconds_saved=saved, row_counts=row_counts(settings, manifest, built, log),
        kept_from=latest.version if changed and latest is not None else None,
    )


def row_counts(settings: Settings, manifest: Mapping[str, Any], unique_ids: set[str], log: logging.Logger) -> dict[str, int]:
    """Row counts of the built tables (not views: counting one runs its whole query, and
    its count changes with its parents anyway; dagster-dbt skips them too), read after dbt
    has released the warehouse."""
    nodes = manifest.get("nodes") or {}
    addresses = {
        uid: address for uid in sorted(unique_ids)
        if (address := artifacts.relation_address(nodes.get(uid) or {}))
        and ((nodes.get(uid) or {}).get("config") or {}).get("materialized") != "view"
    }
    try:
        with settings.warehouse.connect() as conn:
            counted = conn.row_counts(list(addresses.values()))
    except WarehouseError as exc:
        log.warning(f"row counts skipped: {exc}")
        return {}
    return {uid: counted[address] for uid, address in addresses.items() if address in counted}


def read_build_record(target_path: Path) -> dict[str, Any]:
    """What the build of ``target_path`` recorded ({} for artifacts of another origin)."""
    path = target_path.parent / BUILD_RECORD
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
