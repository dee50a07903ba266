"""The production schedule."""

from __future__ import annotations

import dagster as dg

from defer_orchestration import constants as c


def build_prod_build_schedule(cron: str = c.DEFAULT_PROD_CRON) -> dg.ScheduleDefinition:
    """``prod_build_schedule`` on ``cron`` (DEFER_ORCH_PROD_CRON, default daily at 03:00 UTC)."""
    return dg.ScheduleDefinition(
        name=c.PROD_BUILD_SCHEDULE,
        job_name=c.PROD_BUILD_JOB,
        cron_schedule=cron,
        execution_timezone="UTC",
        description="Scheduled production build; each success publishes a new prod_manifest.",
    )


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
