"""What a branch build would do, without doing it: the selection, why each node is in it,
the parents it would defer and the relation each resolves to, and the pre-flight result.

The same stages as ``branch/build.py`` up to the listing (plan the states, check out,
parse, ``dbt ls``), then the explanation (``branch/reasons.py``) and the pre-flight checks
read-only. Nothing is registered, cloned or built: the warehouse is only read, and only
for the pre-flight (a busy DuckDB file makes it "not checked", never a failure).

Two sources: a branch of the watched repository (checked out into a private worktree,
compared with its merge-base as branch CI does), or a working copy used in place (the
developer's directory, never written; compared with the latest production manifest).
Dagster-free, so ``defer-orch preview`` drives it.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defer_orchestration import constants as c
from defer_orchestration.branch.build import explain_selection, list_selected, load_published, plan_states
from defer_orchestration.branch.checkout import branch_dbt_paths, mirror_dir, worktrees_dir
from defer_orchestration.branch.preflight import (
    DeferredParent,
    MissingRelation,
    deferred_parents,
    missing_deferred_relations,
    preflight_message,
)
from defer_orchestration.branch.reasons import Reason
from defer_orchestration.branch.request import BranchBuildRequest
from defer_orchestration.dbt import artifacts
from defer_orchestration.dbt.args import StateArgs
from defer_orchestration.dbt.cli import DbtPaths
from defer_orchestration.dbt.session import DbtSession
from defer_orchestration.lib import git
from defer_orchestration.lib.errors import ConfigurationError, DbtInvocationError, GitError
from defer_orchestration.lib.manifest_store import PublishedManifest
from defer_orchestration.lib.schema_names import branch_schema_name, guard_branch_schema
from defer_orchestration.lib.settings import RepoSettings, Settings


@dataclass
class BranchPreview:
    """What a build of ``source`` would select, why, and what it would read from production."""

    source: str  # "branch <name>" or "working copy <dir>"
    sha: str | None
    schema: str
    state_note: str
    selected: list[str]
    reasons: Mapping[str, Sequence[Reason]]
    deferred: list[DeferredParent]
    missing: list[MissingRelation] | None  # None: the pre-flight could not be checked
    preflight: str  # "ok", the failure message, or why it was not checked
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The ``preview --json`` document (README, "Developing locally")."""
        return {
            "source": self.source,
            "sha": self.sha,
            "schema": self.schema,
            "state": self.state_note,
            "selected": [
                {"unique_id": uid, "reasons": [dict(r) for r in self.reasons.get(uid, [])]} for uid in self.selected
            ],
            "deferred": [
                {"unique_id": p.unique_id, "relation": p.prod_relation, "needed_by": list(p.needed_by)}
                for p in self.deferred
            ],
            "preflight": {
                "ok": self.missing == [],
                "checked": self.missing is not None,
                "message": self.preflight,
                "missing": [
                    {"unique_id": m.unique_id, "schema": m.schema, "identifier": m.identifier, "cause": m.cause}
                    for m in self.missing or []
                ],
            },
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
        }


def preview_branch(
    request: BranchBuildRequest,
    *,
    settings: Settings,
    repo: RepoSettings,
    published: PublishedManifest,
    clock: Callable[[], float] = time.time,
    published_for_commit: Callable[[str], PublishedManifest | None] = lambda sha: None,
) -> BranchPreview:
    """Preview branch CI for ``request.branch`` of the watched repository."""
    started = time.monotonic()
    schema = guard_branch_schema(branch_schema_name(request.branch))
    token = uuid.uuid4().hex[:12]
    run_dir = settings.scratch_path() / "previews" / token
    try:
        mirror = git.ensure_mirror(repo.repo, mirror_dir(settings, repo.repo))
        try:
            sha = git.resolve_commit(mirror, request.sha or f"refs/heads/{request.branch}")
        except GitError as exc:
            raise ConfigurationError(
                f"branch {request.branch!r} is not in {repo.repo} ({exc}); check its name (`git branch -r`) "
                "or push it first."
            ) from exc
        plan = plan_states(request, settings, repo, mirror, sha, None, published, clock, published_for_commit)
        dest = worktrees_dir(settings) / f"preview-{sha[:12]}-{token[:8]}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with git.checked_out(mirror, sha, dest) as checkout:
            prod_manifest = load_published(published, "manifest.json")
            paths = branch_dbt_paths(
                settings, repo, checkout, run_dir, schema, where=f"commit {sha[:12]} of branch {request.branch!r}",
                vars=plan.vars, production_schemas=artifacts.relation_schemas(prod_manifest),
            )
            preview = _preview_project(
                paths, settings=settings, published=published, state=plan.state, select=plan.select,
                exclude=plan.exclude, schema=schema, run_dir=run_dir, prod_manifest=prod_manifest,
            )
        preview.source, preview.sha, preview.state_note = f"branch {request.branch}", sha, plan.note
        preview.warnings = [*plan.warnings, *preview.warnings]
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    preview.seconds = time.monotonic() - started
    return preview


def preview_working_copy(
    project_dir: Path,
    *,
    settings: Settings,
    published: PublishedManifest,
    schema: str,
    select: str = "state:modified+",
    exclude: str = "",
    vars: Mapping[str, Any] | None = None,
) -> BranchPreview:
    """Preview a build of the dbt project at ``project_dir`` as it is on disk (uncommitted
    edits included), compared with and deferring to the latest production manifest."""
    from defer_orchestration.dbt.packages import check_in_place, packages_dir_for
    from defer_orchestration.dbt.profiles import profile_name, write_profiles_dir

    started = time.monotonic()
    project_dir = project_dir.resolve()
    if not (project_dir / "dbt_project.yml").is_file():
        raise ConfigurationError(
            f"no dbt project at {project_dir} (no dbt_project.yml); run from your project or pass --project-dir."
        )
    run_vars = dict(settings.dbt_vars) | dict(vars or {})
    run_dir = settings.scratch_path() / "previews" / uuid.uuid4().hex[:12]
    try:
        prod_manifest = load_published(published, "manifest.json")
        profiles = write_profiles_dir(
            run_dir / "profiles", profile_name(project_dir),
            {c.BRANCH_TARGET: settings.warehouse.dbt_branch_output(
                schema, schema, threads=settings.threads,
                production_schemas=artifacts.relation_schemas(prod_manifest),
            )},
            default_target=c.BRANCH_TARGET,
        )
        packages = packages_dir_for(project_dir, settings.package_cache(), run_dir / "dbt_packages", vars=run_vars)
        check_in_place(project_dir, packages)
        paths = DbtPaths(
            project_dir, profiles, run_dir / "target", run_dir / "logs", packages, run_vars,
            settings.warehouse.branch_dbt_env(),
        )
        state = StateArgs(published.path, published.path)
        preview = _preview_project(
            paths, settings=settings, published=published, state=state, select=select, exclude=exclude,
            schema=schema, run_dir=run_dir, prod_manifest=prod_manifest,
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    commit = git.commit_info(project_dir)
    preview.source, preview.sha = f"working copy {project_dir}", commit.sha
    preview.state_note = f"compared with production manifest {published.version[:12]}"
    if commit.dirty:
        preview.warnings.append("the working copy has uncommitted changes: they are included")
    preview.seconds = time.monotonic() - started
    return preview


def _preview_project(
    paths: DbtPaths,
    *,
    settings: Settings,
    published: PublishedManifest,
    state: StateArgs,
    select: str,
    exclude: str,
    schema: str,
    run_dir: Path,
    prod_manifest: dict[str, Any],
) -> BranchPreview:
    """Parse, list, explain and pre-flight one project for the branch target."""
    with DbtSession(run_dir / "session", env=settings.warehouse.branch_dbt_env()) as dbt:
        parse = dbt.invoke(["parse"], paths, target=c.BRANCH_TARGET)
        if not parse.ok:
            raise DbtInvocationError(f"the dbt project does not parse; fix it first. dbt said:\n{parse.tail()}")
        selected, _ = list_selected(dbt, paths, select, exclude, state)
    branch_manifest = artifacts.load_json(paths.target_path / "manifest.json", what="branch manifest")
    reasons, reasons_error = explain_selection(selected, branch_manifest, state, prod_manifest, published)
    deferred = deferred_parents(selected, branch_manifest, prod_manifest)
    missing, message = _preflight(settings, deferred, prod_manifest, published, schema, state.favor_state)
    return BranchPreview(
        source="", sha=None, schema=schema, state_note="", selected=selected, reasons=reasons,
        deferred=deferred, missing=missing, preflight=message,
        warnings=[reasons_error] if reasons_error else [],
    )


def _preflight(
    settings: Settings,
    deferred: list[DeferredParent],
    prod_manifest: dict[str, Any],
    published: PublishedManifest,
    schema: str,
    favor_state: bool,
) -> tuple[list[MissingRelation] | None, str]:
    """The pre-flight's verdict, reading the warehouse (read-only); a warehouse that cannot
    be read now (a DuckDB file being written) leaves it unchecked, saying why."""
    if not deferred:
        return [], "ok: nothing is deferred"
    prod_results = load_published(published, "run_results.json")
    try:
        with settings.warehouse.connect(read_only=True) as conn:
            relations: dict[str, set[str]] = {}

            def exists(schema_name: str, name: str) -> bool:
                if schema_name not in relations:
                    try:
                        relations[schema_name] = set(conn.list_relations(schema_name))
                    except Exception:  # noqa: BLE001 - a branch schema not created yet
                        relations[schema_name] = set()
                return name in relations[schema_name]

            missing = missing_deferred_relations(
                deferred, prod_manifest=prod_manifest, prod_run_results=prod_results, exists=exists,
                branch_schema=schema, favor_state=favor_state,
            )
    except Exception as exc:  # noqa: BLE001 - advisory: say why it was not checked
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"not checked: {settings.warehouse.describe()} could not be read now ({first})"
    return missing, ("ok: every deferred relation exists" if not missing else preflight_message(missing))
