"""The production schedule and the branch-schema TTL sweep."""

# No `from __future__ import annotations` here: Dagster inspects the `context` and
# resource annotations of schedules at definition time and needs real types.

import dagster as dg

from defer_orchestration import constants as c
from defer_orchestration.lib import git
from defer_orchestration.lib.errors import DeferOrchestrationError
from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings


def build_prod_build_schedule(cron: str = c.DEFAULT_PROD_CRON) -> dg.ScheduleDefinition:
    """``prod_build_schedule`` on ``cron`` (DEFER_ORCH_PROD_CRON, default daily at 03:00 UTC):
    builds main's head as it is when the schedule fires (one ``git ls-remote``), in
    ``mode: state_aware``: only the nodes whose code or input data changed since their last
    build (or missing, failed, too old) are rebuilt; the rest are kept."""

    @dg.schedule(
        name=c.PROD_BUILD_SCHEDULE,
        job_name=c.PROD_BUILD_JOB,
        cron_schedule=cron,
        execution_timezone="UTC",
        description="Scheduled production build of main's head; each success publishes a new prod_manifest.",
    )
    def prod_build_schedule(
        context: dg.ScheduleEvaluationContext, settings: DeferOrchSettings, branch_settings: BranchCiSettings
    ):
        state_aware = {"mode": "state_aware"}  # only what changed in code or in data
        if branch_settings.repo_settings_or_none(settings) is None:
            # a project outside git: built in place
            return dg.RunRequest(run_config={"ops": {c.PROD_DBT_OP: {"config": state_aware}}})
        try:
            repo = branch_settings.repo(settings)
            head = git.list_branch_heads(repo).get(branch_settings.main_branch)
        except DeferOrchestrationError as exc:
            return dg.SkipReason(f"could not read main's head of the watched repository: {exc}")
        if head is None:
            return dg.SkipReason(f"the watched repository has no branch {branch_settings.main_branch!r}")
        return dg.RunRequest(
            run_config={"ops": {c.PROD_DBT_OP: {"config": {"sha": head, **state_aware}}}},
            tags={c.BRANCH_TAG: "main", c.SHA_TAG: head},
        )

    return prod_build_schedule


def build_branch_schema_ttl_schedule() -> dg.ScheduleDefinition:
    """Daily sweep dropping branch schemas idle longer than DEFER_ORCH_SCHEMA_TTL_DAYS."""
    return dg.ScheduleDefinition(
        name=c.BRANCH_SCHEMA_TTL_SCHEDULE,
        job_name=c.BRANCH_TEARDOWN_JOB,
        cron_schedule="30 4 * * *",
        execution_timezone="UTC",
        run_config={"ops": {c.BRANCH_TEARDOWN_OP: {"config": {"branches": [], "drop_idle": True}}}},
        description="Drop branch schemas nobody has built for longer than the TTL.",
    )
