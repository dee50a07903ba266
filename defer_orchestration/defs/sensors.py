"""Sensors: gather inputs (one ``git ls-remote``), call the pure planner, return a SensorResult.

A tick never runs dbt and never opens the warehouse.
"""

# No `from __future__ import annotations` here: Dagster inspects the `context` and
# config annotations of ops and assets at definition time and needs real types.


import dagster as dg

from defer_orchestration import constants as c
from defer_orchestration.lib import git
from defer_orchestration.branch.plan import parse_cursor, plan_branch_runs, plan_teardown
from defer_orchestration.lib.errors import BranchNameError, DeferOrchestrationError
from defer_orchestration.lib.schema_names import branch_schema_name
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
