"""What the Dagster instance recorded about branch runs, read through its public API."""

from __future__ import annotations

from typing import Any

from defer_orchestration import constants as c


def plain(value: Any) -> Any:
    """A metadata value's payload (``MetadataValue.json(x)`` -> ``x``)."""
    return getattr(value, "value", value)


def step_metadata(instance: Any, run_id: str, step: str = c.BRANCH_BUILD_OP) -> dict[str, Any]:
    """The output metadata of ``step`` in ``run_id``, or its failure's metadata plus
    ``__failure__`` (the failure description); empty when it reported neither."""
    import dagster as dg

    found: dict[str, Any] = {}
    for record in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_OUTPUT, dg.DagsterEventType.STEP_FAILURE}):
        event = record.dagster_event
        if event is None or event.step_key != step:
            continue
        data = event.event_specific_data
        if event.event_type == dg.DagsterEventType.STEP_OUTPUT:
            found.update({k: plain(v) for k, v in data.metadata.items()})
        else:
            failure = data.user_failure_data
            found.update({k: plain(v) for k, v in (failure.metadata if failure else {}).items()})
            found["__failure__"] = (failure.description if failure else "") or str(data.error.message if data.error else "")
    return found


def run_branch(run: Any) -> str | None:
    """The branch a ``branch_ci_job`` run built: the sensor's tag, else its launchpad config."""
    tagged = run.tags.get(c.BRANCH_TAG)
    if tagged:
        return str(tagged)
    ops = (run.run_config or {}).get("ops") or {}
    config = (ops.get(c.BRANCH_BUILD_OP) or {}).get("config") or {}
    branch = config.get("branch")
    return str(branch) if branch else None


def latest_branch_runs(instance: Any, limit: int = 1000) -> dict[str, Any]:
    """branch -> its newest ``branch_ci_job`` run among the last ``limit`` (sensor-launched
    and launchpad runs alike), from one query."""
    import dagster as dg

    latest: dict[str, Any] = {}
    for run in instance.get_runs(filters=dg.RunsFilter(job_name=c.BRANCH_CI_JOB), limit=limit):  # newest first
        branch = run_branch(run)
        if branch and branch not in latest:
            latest[branch] = run
    return latest


def run_times(instance: Any, run_id: str) -> tuple[float | None, float | None]:
    """(start, end) of a run in unix seconds, None when unknown."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return None, None
    return record.start_time, record.end_time
