"""Jobs: the production build, branch CI and branch teardown.

Ops here only wire: typed launchpad config in, the procedure in ``branch_build.py`` /
``lib/warehouse.py`` called, metadata out. Every op that opens the warehouse holds
the ``duckdb_warehouse`` pool.
"""

# No `from __future__ import annotations` here: Dagster inspects the `context` and
# config annotations of ops and assets at definition time and needs real types.


import time
from enum import Enum

import dagster as dg
from pydantic import Field

from defer_orchestration import constants as c
from defer_orchestration.branch.build import (
    BranchBuildReport,
    BranchBuildRequest,
    branch_run_dir,
    remove_branch_worktrees,
    run_branch_build,
)
from defer_orchestration.diff import compare as data_diff
from defer_orchestration.dbt import parse_cache
from defer_orchestration.warehouse import duckdb as warehouse
from defer_orchestration.diff.compare import DiffSettings
from defer_orchestration.branch.report import to_markdown
from defer_orchestration.dbt.args import DEFAULT_BRANCH_SELECT
from defer_orchestration.lib.errors import DeferOrchestrationError, NoManifestPublishedError
from defer_orchestration.lib.schema_names import branch_schema_name, guard_branch_schema
from defer_orchestration.defs.manifest_resolution import (
    PublishedManifest,
    latest_published_manifest,
    published_for_commit,
)
from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings

prod_build_job = dg.define_asset_job(
    name=c.PROD_BUILD_JOB,
    selection=dg.AssetSelection.groups(c.RAW_GROUP, c.PROD_DBT_GROUP),
    description="Write the raw sources, `dbt build` into schema prod, then publish "
    "prod_manifest (only when the build succeeded).",
)


class OnMissingState(Enum):
    """What a branch build does when no production manifest has been published."""

    fail = "fail"
    full_build = "full_build"


class OnStaleState(Enum):
    """What a branch build does when the production manifest is older than allowed."""

    warn = "warn"
    fail = "fail"


class BranchCiConfig(dg.Config):
    """Launchpad config of ``branch_ci_job``."""

    branch: str = Field(description="The branch to build (required).")
    sha: str = Field(default="", description="Commit to build; empty means the branch head.")
    select: str = Field(default=DEFAULT_BRANCH_SELECT, description="dbt --select.")
    exclude: str = Field(default="", description="dbt --exclude.")
    favor_state: bool = Field(
        default=False, description="Read unselected parents from prod even if the branch has a copy."
    )
    full_refresh: bool = Field(default=False, description="dbt --full-refresh.")
    on_missing_state: OnMissingState = Field(
        default=OnMissingState.fail,
        description="No production manifest published yet: fail, or build everything.",
    )
    compare_to_merge_base: bool = Field(
        default=True,
        description="Select against the state of the branch's merge-base with main (so a "
        "branch behind main does not rebuild what main changed); defer to the latest prod.",
    )
    max_state_age_hours: float = Field(
        default=24.0, description="A production manifest older than this is stale."
    )
    on_stale_state: OnStaleState = Field(default=OnStaleState.warn, description="warn or fail.")
    retry_of_run_id: str = Field(
        default="",
        description="Re-run only the failed and skipped nodes of that branch run, deferring "
        "exactly as it did. (Re-executing a failed run from the UI does this by itself.)",
    )
    data_diff: bool = Field(
        default=True, description="Compare every built model with its production relation."
    )
    diff_sample_size: int = Field(default=5, description="Sample keys per kind of difference.")
    diff_max_rows: int = Field(
        default=1_000_000,
        description="Above this many rows (either side) the key-level diff is skipped and "
        "reported as such; row counts and schema diffs still run.",
    )
    clone_incremental: bool = Field(
        default=True,
        description="Start selected incremental models from a copy of their production "
        "table, so the branch exercises the incremental path.",
    )
    reuse_parse: bool = Field(
        default=True,
        description="Start dbt's parse from this branch's previous run (partial parsing: "
        "only changed files are re-read; dbt falls back to a full parse by itself when "
        "the cached parse does not match). Turn off to force a full parse.",
    )


def _retry_parent(context: dg.OpExecutionContext, settings: DeferOrchSettings) -> str:
    """The run this one re-executes, when that run's dbt build left results to retry."""
    parent = context.dagster_run.parent_run_id
    if parent and (branch_run_dir(settings, parent) / "target" / "run_results.json").is_file():
        return parent
    return ""


def _resolve_state(
    instance: dg.DagsterInstance, on_missing: OnMissingState
) -> PublishedManifest | None:
    try:
        return latest_published_manifest(instance)
    except NoManifestPublishedError:
        if on_missing is OnMissingState.full_build:
            return None
        raise


def report_metadata(report: BranchBuildReport) -> dict[str, dg.MetadataValue]:
    """The run's summary as UI metadata: a markdown table plus plottable numbers."""
    summary = report.summary
    counts = summary.counts
    saved = summary.prod_seconds_not_rebuilt
    warning_lines = "".join(f"⚠️ **{w}**\n\n" for w in report.warnings)
    headline = warning_lines + (
        f"**{report.branch}** @ `{report.sha[:12]}` → schema `{report.schema}`: "
        f"{counts.get('selected', 0)} selected, {counts.get('built', 0)} built, "
        f"{counts.get('tests_passed', 0)} tests passed, {counts.get('failed', 0)} failed, "
        f"{counts.get('deferred', 0)} parents deferred to prod; {report.state_note}."
    )
    impact_line = ""
    if report.diffs is not None:
        impact_line = f"\n\n**Impact vs prod:** {data_diff.headline(report.diffs)}"
    elif report.diff_error:
        impact_line = f"\n\n**Impact vs prod:** {report.diff_error}"
    metadata: dict[str, dg.MetadataValue] = {
        "summary": dg.MetadataValue.md(to_markdown(summary, headline=headline + impact_line)),
        "branch": dg.MetadataValue.text(report.branch),
        "sha": dg.MetadataValue.text(report.sha),
        "schema": dg.MetadataValue.text(report.schema),
        "state": dg.MetadataValue.text(report.state_note),
        "warnings": dg.MetadataValue.json(report.warnings),
        "cloned_incremental_rows": dg.MetadataValue.json(report.cloned),
        "selected_nodes": dg.MetadataValue.json(list(summary.selected)),
        "deferred_parents": dg.MetadataValue.json(
            {p.unique_id: p.prod_relation for p in summary.deferred}
        ),
        "dbt_parse_seconds": dg.MetadataValue.float(round(report.parse_seconds, 3)),
        "previous_parse": dg.MetadataValue.text(report.partial_parse),
        "dbt_ls_seconds": dg.MetadataValue.float(round(report.ls_seconds, 3)),
        "dbt_build_seconds": dg.MetadataValue.float(round(report.build_seconds, 3)),
        "branch_node_seconds": dg.MetadataValue.float(summary.branch_seconds),
        "prod_seconds_not_rebuilt": dg.MetadataValue.float(saved),
        "prod_seconds_total": dg.MetadataValue.float(summary.prod_seconds_total),
        **{f"nodes/{k}": dg.MetadataValue.int(v) for k, v in counts.items()},
    }
    if report.diffs is not None:
        metadata["impact"] = dg.MetadataValue.md(data_diff.to_markdown(report.diffs))
        metadata["impact_headline"] = dg.MetadataValue.text(data_diff.headline(report.diffs))
        for key, value in data_diff.to_metadata_numbers(report.diffs).items():
            metadata[key] = (
                dg.MetadataValue.int(value) if isinstance(value, int) else dg.MetadataValue.float(float(value))
            )
    elif report.diff_error:
        metadata["impact_headline"] = dg.MetadataValue.text(report.diff_error)
    if report.manifest is not None:
        metadata["manifest_version"] = dg.MetadataValue.text(report.manifest.version)
        metadata["manifest_sha256"] = dg.MetadataValue.text(report.manifest.manifest_sha256)
        metadata["manifest_producing_run"] = dg.MetadataValue.text(report.manifest.producing_run_id)
    return metadata


@dg.op(pool=c.WAREHOUSE_POOL, out=dg.Out(dg.Nothing))
def branch_build(
    context: dg.OpExecutionContext,
    config: BranchCiConfig,
    settings: DeferOrchSettings,
    branch_settings: BranchCiSettings,
):
    """Slim-build one branch commit into its own schema, deferring to the latest prod manifest."""
    try:
        retry_of = config.retry_of_run_id or _retry_parent(context, settings)
        published = None if retry_of else _resolve_state(context.instance, config.on_missing_state)
        report = run_branch_build(
            BranchBuildRequest(
                branch=config.branch,
                sha=config.sha,
                select=config.select,
                exclude=config.exclude,
                favor_state=config.favor_state,
                full_refresh=config.full_refresh,
                compare_to_merge_base=config.compare_to_merge_base,
                max_state_age_hours=config.max_state_age_hours,
                fail_on_stale_state=config.on_stale_state is OnStaleState.fail,
                clone_incremental=config.clone_incremental,
                reuse_parse=config.reuse_parse,
                retry_of_run_id=retry_of,
                diff=DiffSettings(
                    enabled=config.data_diff,
                    sample_size=config.diff_sample_size,
                    key_diff_max_rows=config.diff_max_rows,
                ),
            ),
            settings=settings,
            branch_settings=branch_settings,
            published=published,
            run_id=context.run_id,
            log=context.log,
            published_for_commit=lambda sha: published_for_commit(context.instance, sha),
        )
    except DeferOrchestrationError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    metadata = report_metadata(report)
    if not report.ok:
        failed = [u for u, s in report.summary.statuses.items() if s in {"error", "fail"}]
        raise dg.Failure(
            description=(
                f"branch {report.branch!r} built with {len(failed)} failing nodes "
                f"({', '.join(failed[:10])}). Fix them and push again; production is untouched."
            ),
            metadata={**metadata, "dbt_output": dg.MetadataValue.md(f"```\n{report.dbt_output_tail}\n```")},
            allow_retries=False,
        )
    if not report.summary.selected:
        context.log.info("nothing selected: the branch changes no dbt node; succeeded without building")
    yield dg.Output(None, metadata=metadata)


@dg.job(
    name=c.BRANCH_CI_JOB,
    description="Slim CI for one branch commit: `dbt build --select state:modified+ --defer` into "
    "the branch's own schema. Records a summary, never a production asset event.",
)
def branch_ci_job():
    branch_build()


class BranchTeardownConfig(dg.Config):
    """Launchpad config of ``branch_teardown_job``."""

    branches: list[str] = []  # branches whose schemas to drop
    drop_idle: bool = False  # also drop registered schemas idle longer than the TTL


@dg.op(pool=c.WAREHOUSE_POOL)
def branch_teardown(
    context: dg.OpExecutionContext,
    config: BranchTeardownConfig,
    settings: DeferOrchSettings,
    branch_settings: BranchCiSettings,
) -> dg.Output[None]:
    """Drop branch schemas (and their scratch worktrees); only schemas this system created."""
    try:
        targets = {guard_branch_schema(branch_schema_name(b)): b for b in config.branches}
    except DeferOrchestrationError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    dropped: list[str] = []
    ttl_seconds = branch_settings.schema_ttl_days * 86400
    with warehouse.connect(
        settings.warehouse_path(), lock_timeout_s=settings.warehouse_lock_timeout_s
    ) as conn:
        registered = warehouse.registered_branch_schemas(conn)
        if config.drop_idle:
            now = time.time()
            for schema, (branch, last_built) in registered.items():
                if now - last_built > ttl_seconds:
                    targets.setdefault(schema, branch)
        for schema, branch in sorted(targets.items()):
            if schema not in registered:
                context.log.info(f"{schema} ({branch!r}) was never created by branch CI; skipped")
                continue
            if warehouse.drop_branch_schema(conn, schema):
                dropped.append(schema)
            warehouse.forget_branch_schema(conn, schema)
    removed = [
        str(p)
        for schema in targets
        for p in remove_branch_worktrees(settings, branch_settings, schema)
    ]
    forgotten_parses = [
        schema for schema in targets
        if parse_cache.drop(parse_cache.cache_dir(settings.home_path(), schema))
    ]
    context.log.info(f"dropped {dropped}; removed worktrees {removed}; parse caches {forgotten_parses}")
    return dg.Output(
        None,
        metadata={
            "dropped_schemas": dg.MetadataValue.json(dropped),
            "removed_worktrees": dg.MetadataValue.json(removed),
            "removed_parse_caches": dg.MetadataValue.json(forgotten_parses),
            "dropped_count": dg.MetadataValue.int(len(dropped)),
        },
    )


@dg.job(
    name=c.BRANCH_TEARDOWN_JOB,
    description="Drop the schemas of deleted (or long idle) branches. Never touches anything "
    "but schemas branch CI created.",
)
def branch_teardown_job():
    branch_teardown()
