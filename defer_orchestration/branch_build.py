"""One branch build, start to finish: check out, preview, build into the branch schema, report.

Dagster-free on purpose (the op in ``jobs.py`` only wires config and metadata), so the
sequence reads top to bottom and every step's failure is a typed error with advice.
dbt runs as a subprocess (``lib/dbt_cli.py``): nothing here can record an event on a
production asset key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from defer_orchestration import constants as c
from defer_orchestration.lib import dbt_args, dbt_artifacts, git, warehouse
from defer_orchestration.lib.branch_summary import BranchBuildSummary, summarize
from defer_orchestration.lib.dbt_args import StateArgs
from defer_orchestration.lib.dbt_cli import DbtPaths, DbtRun, run_dbt
from defer_orchestration.lib.errors import ConfigurationError, DbtInvocationError
from defer_orchestration.lib.schema_names import branch_schema_name, guard_branch_schema
from defer_orchestration.manifest_resolution import PublishedManifest
from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings


@dataclass(frozen=True)
class BranchBuildRequest:
    """What to build: the launchpad config of ``branch_ci_job``."""

    branch: str
    sha: str = ""
    select: str = dbt_args.DEFAULT_BRANCH_SELECT
    exclude: str = ""
    favor_state: bool = False
    full_refresh: bool = False


@dataclass
class BranchBuildReport:
    """What one branch build did."""

    branch: str
    sha: str
    schema: str
    summary: BranchBuildSummary
    manifest: PublishedManifest | None
    state_note: str
    selected_preview: list[str] = field(default_factory=list)
    ls_seconds: float = 0.0
    build_seconds: float = 0.0
    wall_seconds: float = 0.0
    dbt_output_tail: str = ""

    @property
    def ok(self) -> bool:
        """Every selected node built or passed."""
        return self.summary.ok


def mirror_dir(settings: DeferOrchSettings, repo: str) -> Path:
    """Our private mirror of the watched repository (the user's repo is never touched)."""
    key = hashlib.sha256(repo.encode("utf-8")).hexdigest()[:12]
    return settings.home_path() / "git" / f"mirror-{key}.git"


def worktrees_dir(settings: DeferOrchSettings) -> Path:
    """Where scratch worktrees of branch commits live while a run uses them."""
    return settings.scratch_path() / "worktrees"


def worktree_prefix(schema: str) -> str:
    """Name prefix of a branch's worktrees, so teardown can find leftovers."""
    return f"{schema}--"


def run_branch_build(
    request: BranchBuildRequest,
    *,
    settings: DeferOrchSettings,
    branch_settings: BranchCiSettings,
    published: PublishedManifest | None,
    run_id: str,
    log: logging.Logger | None = None,
    clock: Callable[[], float] = time.time,
) -> BranchBuildReport:
    """Build ``request.branch`` slim into its own schema, deferring to ``published``.

    With ``published`` None (no production manifest and ``on_missing_state=full_build``)
    the whole project is built with no deferral.
    """
    log = log or logging.getLogger(__name__)
    started = time.monotonic()
    schema = guard_branch_schema(branch_schema_name(request.branch))
    repo = branch_settings.repo(settings)
    mirror = git.ensure_mirror(repo, mirror_dir(settings, repo))
    sha = git.resolve_commit(mirror, request.sha or f"refs/heads/{request.branch}")
    log.info(f"branch {request.branch!r} at {sha} builds into schema {schema}")

    run_dir = settings.run_dir(run_id) / "branch"
    if published is None:
        state = StateArgs(compare_state=None, defer_state=None)
        select = "" if dbt_args.uses_state_selector(request.select, request.exclude) else request.select
        state_note = "no production manifest: full build, nothing deferred (on_missing_state=full_build)"
    else:
        state = StateArgs(published.path, published.path, favor_state=request.favor_state)
        select = request.select
        state_note = f"compared with and deferred to production manifest {published.version[:12]}"

    with warehouse.connect(
        settings.warehouse_path(), lock_timeout_s=settings.warehouse_lock_timeout_s
    ) as conn:
        # Registered before building, so teardown can drop even a half-built schema.
        warehouse.register_branch_schema(conn, schema, branch=request.branch, sha=sha, now=clock())

    worktree = worktrees_dir(settings) / f"{worktree_prefix(schema)}{sha[:12]}-{run_id[:8]}"
    worktree.parent.mkdir(parents=True, exist_ok=True)
    with git.checked_out(mirror, sha, worktree) as checkout:
        project_dir = (checkout / branch_settings.subdir(settings)).resolve()
        if not (project_dir / "dbt_project.yml").is_file():
            raise ConfigurationError(
                f"commit {sha[:12]} of branch {request.branch!r} has no dbt project at "
                f"{branch_settings.subdir(settings)!r} (no dbt_project.yml). Was the project "
                "moved? Set DEFER_ORCH_PROJECT_SUBDIR to its path inside the repository."
            )
        try:
            profiles_dir = settings.write_profiles(
                run_dir / "profiles", {c.BRANCH_TARGET: schema}, c.BRANCH_TARGET,
                project_dir=project_dir,
            )
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"the dbt project in commit {sha[:12]} of branch {request.branch!r} does not "
                f"parse: {exc} Nothing was built. Fix the branch and push again."
            ) from exc
        paths = DbtPaths(
            project_dir=project_dir,
            profiles_dir=profiles_dir,
            target_path=run_dir / "target",
            log_path=run_dir / "logs",
        )
        preview = _preview(paths, select, request.exclude, state)
        log.info(f"selection preview: {len(preview.selected)} nodes in {preview.run.seconds:.1f}s")
        build: DbtRun | None = None
        if preview.selected:
            build = run_dbt(
                dbt_args.build_args(select, request.exclude, state, full_refresh=request.full_refresh),
                paths,
                target=c.BRANCH_TARGET,
                check=False,
            )
            if build.run_results() is None:
                raise DbtInvocationError(
                    f"dbt build of branch {request.branch!r} failed before running any node "
                    f"(exit {build.returncode}). Last lines of its output:\n{build.tail()}"
                )
        summary = summarize(
            selected=preview.selected,
            branch_manifest=dbt_artifacts.load_json(paths.target_path / "manifest.json", what="branch manifest"),
            branch_run_results=build.run_results() if build else None,
            prod_manifest=_load_or_empty(published, "manifest.json"),
            prod_run_results=_load_or_empty(published, "run_results.json"),
        )
    shutil.rmtree(run_dir / "profiles", ignore_errors=True)
    return BranchBuildReport(
        branch=request.branch,
        sha=sha,
        schema=schema,
        summary=summary,
        manifest=published,
        state_note=state_note,
        selected_preview=list(preview.selected),
        ls_seconds=preview.run.seconds,
        build_seconds=build.seconds if build else 0.0,
        wall_seconds=time.monotonic() - started,
        dbt_output_tail=build.tail(40) if build else "",
    )


@dataclass(frozen=True)
class _Preview:
    selected: list[str]
    run: DbtRun


def _preview(paths: DbtPaths, select: str, exclude: str, state: StateArgs) -> _Preview:
    """``dbt ls`` of the selection: what the build will run, recorded before running it."""
    run = run_dbt(dbt_args.ls_args(select, exclude, state), paths, target=c.BRANCH_TARGET, check=False)
    if not run.ok:
        raise DbtInvocationError(
            "the branch's dbt project does not parse or its selection is invalid; nothing was "
            f"built. Fix the branch and push again. dbt said:\n{run.tail()}"
        )
    found = dbt_args.parse_ls_output(run.output.splitlines())
    selected = sorted(
        o["unique_id"] for o in found if o.get("resource_type") not in {"source", "exposure", "metric", "semantic_model", "saved_query"}
    )
    return _Preview(selected, run)


def _load_or_empty(published: PublishedManifest | None, name: str) -> dict:
    if published is None:
        return {}
    return dbt_artifacts.load_json(published.path / name, what=f"production {name}")


def remove_branch_worktrees(settings: DeferOrchSettings, branch_settings: BranchCiSettings, schema: str) -> list[Path]:
    """Remove scratch worktrees a branch's runs left behind (e.g. after a killed run)."""
    root = worktrees_dir(settings)
    if not root.is_dir():
        return []
    removed = []
    repo = branch_settings.repo(settings)
    mirror = mirror_dir(settings, repo)
    for path in sorted(root.iterdir()):
        if path.name.startswith(worktree_prefix(schema)):
            if mirror.exists():
                git.remove_worktree(mirror, path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
