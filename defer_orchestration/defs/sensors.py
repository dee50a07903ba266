"""Sensors: gather inputs (one ``git ls-remote``), call the pure planner, return a SensorResult.

A tick never runs dbt and never opens the warehouse.
"""

# No `from __future__ import annotations` here: Dagster inspects the `context` and
# config annotations of ops and assets at definition time and needs real types.


import re
from typing import Any

import dagster as dg

from defer_orchestration import constants as c
from defer_orchestration.lib import git
from defer_orchestration.branch.plan import parse_cursor, plan_branch_runs, plan_teardown
from defer_orchestration.lib.errors import BranchNameError, DeferOrchestrationError
from defer_orchestration.lib.schema_names import branch_schema_name
from defer_orchestration.production.plan import plan_main_build
from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings

_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def branch_run_tags(branch: str, sha: str) -> dict[str, str]:
    """Tags that let the UI (and the sensors) find a branch's runs."""
    return {c.BRANCH_TAG: branch, c.SHA_TAG: sha, c.SCHEMA_TAG: branch_schema_name(branch)}


def cancel_branch_runs(
    instance: dg.DagsterInstance, branch: str, *, keep_sha: str | None, reason: str, log
) -> list[str]:
    """Cancel a branch's queued or running CI runs (except those for ``keep_sha``)."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name=c.BRANCH_CI_JOB, tags={c.BRANCH_TAG: branch}, statuses=_ACTIVE
        )
    )
    cancelled = []
    for run in runs:
        if keep_sha is not None and run.tags.get(c.SHA_TAG) == keep_sha:
            continue
        log.info(f"cancelling run {run.run_id} of {branch!r}: {reason}")
        instance.report_engine_event(
            f"branch CI cancels this run: {reason} ({branch!r})", dagster_run=run
        )
        if run.status == dg.DagsterRunStatus.QUEUED:
            instance.run_coordinator.cancel_run(run.run_id)
        elif instance.run_launcher.terminate(run.run_id) is False:
            instance.report_run_canceled(run, message=reason)
        cancelled.append(run.run_id)
    return cancelled


def _heads(context: dg.SensorEvaluationContext, repo: str) -> dict[str, str] | dg.SkipReason:
    try:
        return git.list_branch_heads(repo)
    except DeferOrchestrationError as exc:
        return dg.SkipReason(f"could not list branches of {repo}: {exc}")


def build_branch_ci_sensor(minimum_interval_seconds: int = 30) -> dg.SensorDefinition:
    """``branch_ci_sensor``: one ``branch_ci_job`` run per new branch head.

    Cursor: JSON ``{"version": 1, "heads": {branch: sha}}`` of the heads already
    launched, so a restarted daemon launches no duplicates (``run_key`` = branch@sha
    guards the same from Dagster's side). A new head cancels that branch's older
    queued or running run: a stale result helps nobody.
    """

    @dg.sensor(
        name=c.BRANCH_CI_SENSOR,
        job_name=c.BRANCH_CI_JOB,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
    )
    def branch_ci_sensor(
        context: dg.SensorEvaluationContext,
        settings: DeferOrchSettings,
        branch_settings: BranchCiSettings,
    ):
        repo = branch_settings.repo(settings)
        heads = _heads(context, repo)
        if isinstance(heads, dg.SkipReason):
            return heads
        plan = plan_branch_runs(
            context.cursor,
            heads,
            main_branch=branch_settings.main_branch,
            include=branch_settings.include_patterns(),
            exclude=branch_settings.exclude_patterns(),
        )
        requests = []
        for run in plan.runs:
            try:
                tags = branch_run_tags(run.branch, run.sha)
            except BranchNameError as exc:
                # One unbuildable name must not stall every other branch's CI.
                context.log.warning(f"skipping branch {run.branch[:80]!r}: {exc}")
                continue
            if run.superseded_sha is not None:
                cancel_branch_runs(
                    context.instance, run.branch, keep_sha=run.sha,
                    reason=f"superseded by {run.sha[:12]}", log=context.log,
                )
            requests.append(
                dg.RunRequest(
                    run_key=run.run_key,
                    run_config={"ops": {c.BRANCH_BUILD_OP: {"config": {"branch": run.branch, "sha": run.sha}}}},
                    tags=tags,
                )
            )
        return dg.SensorResult(run_requests=requests, cursor=plan.cursor)

    return branch_ci_sensor


def build_branch_teardown_sensor(minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    """``branch_teardown_sensor``: a ``branch_teardown_job`` run per deleted branch.

    Same cursor format as ``branch_ci_sensor`` (its own cursor). Runs still building a
    deleted branch are cancelled first.
    """

    @dg.sensor(
        name=c.BRANCH_TEARDOWN_SENSOR,
        job_name=c.BRANCH_TEARDOWN_JOB,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
    )
    def branch_teardown_sensor(
        context: dg.SensorEvaluationContext,
        settings: DeferOrchSettings,
        branch_settings: BranchCiSettings,
    ):
        repo = branch_settings.repo(settings)
        heads = _heads(context, repo)
        if isinstance(heads, dg.SkipReason):
            return heads
        plan = plan_teardown(
            context.cursor,
            heads,
            main_branch=branch_settings.main_branch,
            include=branch_settings.include_patterns(),
            exclude=branch_settings.exclude_patterns(),
        )
        previous = parse_cursor(context.cursor)
        requests = []
        for branch in plan.deleted:
            cancel_branch_runs(
                context.instance, branch, keep_sha=None, reason="branch deleted", log=context.log
            )
            requests.append(
                dg.RunRequest(
                    run_key=f"teardown:{branch}@{previous.get(branch, '')}",
                    run_config={"ops": {c.BRANCH_TEARDOWN_OP: {"config": {"branches": [branch]}}}},
                    tags={c.BRANCH_TAG: branch},
                )
            )
        return dg.SensorResult(run_requests=requests, cursor=plan.cursor)

    return branch_teardown_sensor


def cancel_queued_prod_runs(instance: dg.DagsterInstance, *, keep_sha: str, log: Any) -> list[str]:
    """Cancel queued production runs of older heads of main (started ones finish: they
    are already building, and each publishes only if it succeeds)."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name=c.PROD_BUILD_JOB, tags={c.BRANCH_TAG: MAIN_TAG_VALUE},
            statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED],
        )
    )
    cancelled = []
    for run in runs:
        if run.tags.get(c.SHA_TAG) == keep_sha:
            continue
        reason = f"superseded by main@{keep_sha[:12]}"
        log.info(f"cancelling queued production run {run.run_id}: {reason}")
        instance.report_engine_event(f"main_branch_sensor cancels this run: {reason}", dagster_run=run)
        if run.status == dg.DagsterRunStatus.QUEUED:
            instance.run_coordinator.cancel_run(run.run_id)
        else:
            instance.report_run_canceled(run, message=reason)
        cancelled.append(run.run_id)
    return cancelled


MAIN_TAG_VALUE = "main"  # the branch tag of production runs requested for main's heads


def build_main_branch_sensor(minimum_interval_seconds: int = 30) -> dg.SensorDefinition:
    """``main_branch_sensor``: one ``prod_build_job`` run per new head of main.

    Cursor: JSON ``{"version": 1, "main": sha}`` of the head last requested; ``run_key``
    ``main@<sha>`` guards restarts from Dagster's side too. A newer head cancels the queued
    production runs of older ones. One ``git ls-remote`` a tick: no dbt, no warehouse.
    """

    @dg.sensor(
        name=c.MAIN_BRANCH_SENSOR,
        job_name=c.PROD_BUILD_JOB,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
    )
    def main_branch_sensor(
        context: dg.SensorEvaluationContext,
        settings: DeferOrchSettings,
        branch_settings: BranchCiSettings,
    ):
        try:
            repo = branch_settings.repo(settings)
        except DeferOrchestrationError as exc:
            return dg.SkipReason(f"no repository to follow: {exc}")
        heads = _heads(context, repo)
        if isinstance(heads, dg.SkipReason):
            return heads
        try:
            plan = plan_main_build(context.cursor, heads, main_branch=branch_settings.main_branch)
        except DeferOrchestrationError as exc:
            return dg.SkipReason(str(exc))
        if plan.missing_main:
            return dg.SkipReason(
                f"{repo} has no branch {branch_settings.main_branch!r} (deleted or renamed?): nothing to "
                "build; production keeps its latest manifest. Set DEFER_ORCH_MAIN_BRANCH if main was renamed."
            )
        if plan.sha is None:
            return dg.SensorResult(run_requests=[], cursor=plan.cursor)
        cancel_queued_prod_runs(context.instance, keep_sha=plan.sha, log=context.log)
        request = dg.RunRequest(
            run_key=plan.run_key,
            run_config={"ops": {c.PROD_DBT_OP: {"config": {"sha": plan.sha}}}},
            tags={c.BRANCH_TAG: MAIN_TAG_VALUE, c.SHA_TAG: plan.sha},
        )
        return dg.SensorResult(run_requests=[request], cursor=plan.cursor)

    return main_branch_sensor


def build_branch_parse_template_sensor(minimum_interval_seconds: int = 30) -> dg.SensorDefinition:
    """``branch_parse_template_sensor``: one ``branch_parse_template_job`` run per newly
    published production manifest (``run_key`` = the manifest's commit), so each branch's
    first CI run starts from a parse of what production just built."""

    @dg.asset_sensor(
        name=c.BRANCH_PARSE_TEMPLATE_SENSOR,
        asset_key=dg.AssetKey(c.PROD_MANIFEST_ASSET),
        job_name=c.BRANCH_PARSE_TEMPLATE_JOB,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
    )
    def branch_parse_template_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
        materialization = asset_event.asset_materialization
        metadata = materialization.metadata if materialization is not None else {}
        sha = metadata.get("git_sha")
        sha_text = str(getattr(sha, "value", sha) or "")
        if not re.fullmatch(r"[0-9a-f]{40}", sha_text):
            return dg.SkipReason(
                f"the new prod_manifest names no git commit ({sha_text or 'none'}); no parse template to make"
            )
        return dg.RunRequest(run_key=f"template@{sha_text}", tags={c.SHA_TAG: sha_text})

    return branch_parse_template_sensor
