"""Jobs: the production build, branch CI, branch teardown and the branch parse template.

Ops here only wire: typed launchpad config in (generated from the core's request),
resources converted to plain settings, the procedure in ``branch/`` called, metadata
out. Every op that opens the warehouse holds a pool the warehouse chooses (DuckDB: the
single-slot ``duckdb_warehouse``; PostgreSQL: ``branch_builds``, several at once).
"""

# No `from __future__ import annotations` here: Dagster inspects the `context` and
# config annotations of ops and assets at definition time and needs real types.


import dataclasses
import time
import typing
from pathlib import Path

import dagster as dg
from pydantic import Field, create_model

from defer_orchestration import constants as c
from defer_orchestration.branch.build import run_branch_build
from defer_orchestration.branch.parse_template import make_parse_template
from defer_orchestration.branch.report import BranchBuildReport, to_markdown
from defer_orchestration.branch.pr_report import (
    PrReport, build_pr_report, failure_markdown, impact_headline, render_markdown, report_json,
)
from defer_orchestration.branch.reasons import selected_json
from defer_orchestration.branch.request import BranchBuildRequest, OnMissingState
from defer_orchestration.branch.retry import can_retry
from defer_orchestration.branch.teardown import teardown
from defer_orchestration.diff import report as diff_report
from defer_orchestration.lib.errors import DeferOrchestrationError, NoManifestPublishedError
from defer_orchestration.lib.manifest_store import PublishedManifest
from defer_orchestration.lib.timing import Phases
from defer_orchestration.defs.pull_request import PullRequestReporter
from defer_orchestration.defs.manifest_resolution import latest_published_manifest, published_for_commit
from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings

prod_build_job = dg.define_asset_job(
    name=c.PROD_BUILD_JOB,
    selection=dg.AssetSelection.groups(c.RAW_GROUP, c.PROD_DBT_GROUP),
    description="`dbt build` into schema prod (after the demo's synthetic sources, for the "
    "bundled project), then publish prod_manifest (only when the build succeeded).",
)


def _config_class(request_type: type, name: str) -> type[dg.Config]:
    """A Dagster config class with one field per option of ``request_type`` (a dataclass),
    same types, defaults and descriptions: the options are written once, in ``branch/``."""
    hints = typing.get_type_hints(request_type)
    options: dict[str, typing.Any] = {}
    for option in dataclasses.fields(request_type):
        default = option.default if option.default is not dataclasses.MISSING else ...
        options[option.name] = (
            hints[option.name], Field(default=default, description=option.metadata.get("description")),
        )
    model = create_model(name, __base__=dg.Config, **options)
    model.__doc__ = f"Launchpad config of {c.BRANCH_CI_JOB}: {request_type.__doc__}"
    return model


BranchCiConfig = _config_class(BranchBuildRequest, "BranchCiConfig")


def _resolve_state(
    instance: dg.DagsterInstance, on_missing: OnMissingState, home: Path | None = None
) -> PublishedManifest | None:
    try:
        return latest_published_manifest(instance, home=home)
    except NoManifestPublishedError:
        if on_missing is OnMissingState.full_build:
            return None
        raise


def report_metadata(report: BranchBuildReport) -> dict[str, dg.MetadataValue]:
    """The run's summary as UI metadata: a markdown table plus plottable numbers."""
    summary = report.summary
    counts = summary.counts
    metadata: dict[str, dg.MetadataValue] = {
        "summary": dg.MetadataValue.md(to_markdown(summary, headline=report.headline(), reasons=report.reasons)),
        "why_selected": dg.MetadataValue.json(selected_json(report.reasons)),
        "branch": dg.MetadataValue.text(report.branch),
        "sha": dg.MetadataValue.text(report.sha),
        "schema": dg.MetadataValue.text(report.schema),
        "state": dg.MetadataValue.text(report.state_note),
        "warnings": dg.MetadataValue.json(report.warnings),
        "cloned_incremental_rows": dg.MetadataValue.json(report.cloned),
        "selected_nodes": dg.MetadataValue.json(list(summary.selected)),
        "deferred_parents": dg.MetadataValue.json({p.unique_id: p.prod_relation for p in summary.deferred}),
        "previous_parse": dg.MetadataValue.text(report.partial_parse),
        **{
            f"dbt_{command}_seconds": dg.MetadataValue.float(round(seconds, 3))
            for command, seconds in report.dbt_seconds.items()
        },
        "phase_seconds": dg.MetadataValue.json(dict(report.phases)),
        "dbt_commands": dg.MetadataValue.json(list(report.dbt_commands)),
        "branch_node_seconds": dg.MetadataValue.float(summary.branch_seconds),
        "prod_seconds_not_rebuilt": dg.MetadataValue.float(summary.prod_seconds_not_rebuilt),
        "prod_seconds_total": dg.MetadataValue.float(summary.prod_seconds_total),
        **{f"nodes/{k}": dg.MetadataValue.int(v) for k, v in counts.items()},
    }
    if report.diffs is not None:
        metadata["impact"] = dg.MetadataValue.md(diff_report.to_markdown(report.diffs))
        metadata["impact_headline"] = dg.MetadataValue.text(diff_report.headline(report.diffs))
        for key, value in diff_report.to_metadata_numbers(report.diffs).items():
            metadata[key] = (
                dg.MetadataValue.int(value) if isinstance(value, int) else dg.MetadataValue.float(float(value))
            )
    elif report.diff_error:
        metadata["impact_headline"] = dg.MetadataValue.text(report.diff_error)
    if report.reasons_error:
        metadata["why_selected_error"] = dg.MetadataValue.text(report.reasons_error)
    # The pull-request body's data (`defer-orch report RUN_ID` renders it).
    pr = build_pr_report(report, reasons=report.reasons, branch_manifest=report.branch_manifest)
    metadata[c.PR_REPORT_METADATA] = dg.MetadataValue.json(report_json(pr))
    if report.impact is not None:
        metadata["column_impact"] = dg.MetadataValue.json(report.impact.to_dict())
        metadata["column_impact_headline"] = dg.MetadataValue.text(impact_headline(pr["impact"] or []))
    elif report.impact_error:
        metadata["column_impact_headline"] = dg.MetadataValue.text(report.impact_error)
    if report.manifest is not None:
        metadata["manifest_version"] = dg.MetadataValue.text(report.manifest.version)
        metadata["manifest_sha256"] = dg.MetadataValue.text(report.manifest.manifest_sha256)
        metadata["manifest_producing_run"] = dg.MetadataValue.text(report.manifest.producing_run_id)
    return metadata


def branch_build(
    context: dg.OpExecutionContext,
    config: BranchCiConfig,
    settings: DeferOrchSettings,
    branch_settings: BranchCiSettings,
):
    """Slim-build one branch commit into its own schema, deferring to the latest prod manifest."""
    request = BranchBuildRequest.from_values(config)
    phases = Phases()
    try:
        forge = branch_settings.forge()
    except DeferOrchestrationError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    reporter = (
        PullRequestReporter(forge, branch=request.branch, run_id=context.run_id, log=context.log) if forge else None
    )
    try:
        core = settings.core()
        parent = context.dagster_run.parent_run_id
        retry_of = request.retry_of_run_id or (parent if parent and can_retry(core, parent) else "")
        request = dataclasses.replace(request, retry_of_run_id=retry_of)
        with phases.phase("resolve_manifest"):
            published = None if retry_of else _resolve_state(context.instance, request.on_missing_state, core.home)
        report = run_branch_build(
            request,
            settings=core,
            repo=branch_settings.repo_settings(settings),
            published=published,
            run_id=context.run_id,
            log=context.log,
            published_for_commit=lambda sha: published_for_commit(context.instance, sha, home=core.home),
            phases=phases,
            on_commit=reporter.start if reporter else None,
        )
    except DeferOrchestrationError as exc:
        forge_metadata = (
            reporter.finish(ok=False, body_markdown=failure_markdown(request.branch, str(exc)), impact=None,
                            sha=request.sha)
            if reporter else {}
        )
        raise dg.Failure(description=str(exc), metadata=forge_metadata, allow_retries=False) from exc
    metadata = report_metadata(report)
    if reporter is not None:
        pr = metadata[c.PR_REPORT_METADATA].value
        metadata.update(reporter.finish(
            ok=report.ok, body_markdown=render_markdown(typing.cast(PrReport, pr)), impact=pr.get("impact"),
        ))
    if not report.ok:
        raise dg.Failure(
            description=report.failure_message(),
            metadata={**metadata, "dbt_output": dg.MetadataValue.md(f"```\n{report.dbt_output_tail}\n```")},
            allow_retries=False,
        )
    if not report.summary.selected:
        context.log.info("nothing selected: the branch changes no dbt node; succeeded without building")
    yield dg.Output(None, metadata=metadata)


def _one_op_job(name: str, op: dg.OpDefinition, description: str) -> dg.JobDefinition:
    """A job of the single op ``op``."""

    @dg.job(name=name, description=description)
    def job():
        op()

    return job


def build_branch_ci_job(pool: str = c.WAREHOUSE_POOL) -> dg.JobDefinition:
    """``branch_ci_job``, its step holding ``pool`` (the warehouse's choice)."""
    return _one_op_job(
        c.BRANCH_CI_JOB,
        dg.op(name=c.BRANCH_BUILD_OP, pool=pool, out=dg.Out(dg.Nothing))(branch_build),
        "Slim CI for one branch commit: `dbt build --select state:modified+ --defer` into "
        "the branch's own schema. Records a summary, never a production asset event.",
    )


class BranchTeardownConfig(dg.Config):
    """Launchpad config of ``branch_teardown_job``."""

    branches: list[str] = []  # branches whose schemas to drop
    drop_idle: bool = False  # also drop registered schemas idle longer than the TTL


def branch_teardown(
    context: dg.OpExecutionContext,
    config: BranchTeardownConfig,
    settings: DeferOrchSettings,
    branch_settings: BranchCiSettings,
) -> dg.Output[None]:
    """Drop branch schemas (and their scratch worktrees); only schemas this system created."""
    idle_before = time.time() - branch_settings.schema_ttl_days * 86400 if config.drop_idle else None
    try:
        report = teardown(
            settings.core(), branch_settings.repo_settings(settings), config.branches, idle_before=idle_before
        )
    except DeferOrchestrationError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    for schema in report.skipped:
        context.log.info(f"{schema} was never created by branch CI; skipped")
    removed = [str(p) for p in report.removed_worktrees]
    context.log.info(f"dropped {report.dropped}; removed worktrees {removed}; parse caches {report.removed_parse_caches}")
    return dg.Output(
        None,
        metadata={
            "dropped_schemas": dg.MetadataValue.json(report.dropped),
            "removed_worktrees": dg.MetadataValue.json(removed),
            "removed_parse_caches": dg.MetadataValue.json(report.removed_parse_caches),
            "dropped_count": dg.MetadataValue.int(len(report.dropped)),
        },
    )


def build_branch_teardown_job(pool: str = c.WAREHOUSE_POOL) -> dg.JobDefinition:
    """``branch_teardown_job``, its step holding ``pool``."""
    return _one_op_job(
        c.BRANCH_TEARDOWN_JOB,
        dg.op(name=c.BRANCH_TEARDOWN_OP, pool=pool)(branch_teardown),
        "Drop the schemas of deleted (or long idle) branches. Never touches anything "
        "but schemas branch CI created.",
    )


def branch_parse_template(
    context: dg.OpExecutionContext,
    settings: DeferOrchSettings,
    branch_settings: BranchCiSettings,
) -> dg.Output[None]:
    """Parse production's latest commit for a branch target, so each branch's first run
    re-parses only the files it changed. Runs no SQL."""
    try:
        published = latest_published_manifest(context.instance, home=settings.core().home)
        made = make_parse_template(
            settings.core(), branch_settings.repo_settings(settings), published,
            run_id=context.run_id, log=context.log,
        )
    except DeferOrchestrationError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    return dg.Output(
        None,
        metadata={
            "sha": dg.MetadataValue.text(made.sha),
            "manifest_version": dg.MetadataValue.text(published.version),
            "dbt_parse_seconds": dg.MetadataValue.float(round(made.seconds, 3)),
            "path": dg.MetadataValue.path(str(made.path)),
            **({"store_location": dg.MetadataValue.url(made.location)} if made.location else {}),
        },
    )


def build_branch_parse_template_job() -> dg.JobDefinition:
    """``branch_parse_template_job``: no pool (it never opens the warehouse for writing)."""
    return _one_op_job(
        c.BRANCH_PARSE_TEMPLATE_JOB,
        dg.op(name=c.BRANCH_PARSE_TEMPLATE_OP, out=dg.Out(dg.Nothing))(branch_parse_template),
        "Parse production's latest commit for a branch target: a branch's first CI run "
        "then re-parses only the files it changed instead of the whole project.",
    )
