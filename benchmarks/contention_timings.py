"""What the runs of one contention wave waited for, from Dagster's own records.

Pure functions over the run records and event logs :mod:`benchmarks.stack` reads back
(GraphQL shapes): a run's queue wait, its steps' waits for the warehouse pool, its
duration, the intervals its warehouse steps held the pool, and why it failed. Tested on
canned data; nothing here talks to Dagster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Dagster's engine event while a step waits for a pool slot (dagster/_core/events:
# "Step blocked by limit for pool <pool>", then "Step still blocked ..." every few s).
BLOCKED_MESSAGE = "blocked by limit for pool"


def failure_text(events: Sequence[dict[str, Any]]) -> str:
    """What went wrong in a run, from its step failure and run failure events."""
    parts: list[str] = []
    for event in events:
        kind = event.get("__typename")
        if kind == "ExecutionStepFailureEvent":
            parts.append((event.get("failureMetadata") or {}).get("description") or "")
            parts.append((event.get("error") or {}).get("message") or "")
        elif kind in {"RunFailureEvent", "RunCanceledEvent"} and event.get("message"):
            parts.append(event["message"])
        elif kind == "EngineEvent" and "fail" in (event.get("message") or "").lower():
            parts.append(event["message"])
    text = "\n".join(p for p in parts if p)
    return text[-4000:] or "(no failure event: see the stack's logs)"


def _seconds(timestamp: str | float | None) -> float | None:
    """Event timestamps are milliseconds (as strings); run timestamps are seconds."""
    return None if timestamp in (None, "") else float(timestamp) / 1000.0


def pool_waits(
    events: Sequence[dict[str, Any]], step_starts: dict[str, float], pool: str
) -> dict[str, float]:
    """step -> seconds it waited for a ``pool`` slot: first "blocked" event to its start.

    A step that got its slot at once logs no such event and waited 0 s.
    """
    blocked_since: dict[str, float] = {}
    for event in events:
        message = event.get("message") or ""
        step = event.get("stepKey")
        if step and BLOCKED_MESSAGE in message and message.rstrip().endswith(pool):
            stamp = _seconds(event.get("timestamp"))
            if stamp is not None and step not in blocked_since:
                blocked_since[step] = stamp
    return {
        step: max(start - blocked_since[step], 0.0) if step in blocked_since else 0.0
        for step, start in step_starts.items()
    }


def run_timings(
    run: dict[str, Any],
    branch: str | None,
    events: Sequence[dict[str, Any]],
    pooled_steps: set[str],
    pool: str,
    origin: float,
) -> dict[str, Any]:
    """One finished run's queue wait, pool wait, duration and warehouse steps.

    ``origin`` is the wave's first launch (unix seconds): step offsets are relative to it.
    """
    stats = run["stats"]
    created = run["creationTime"]
    enqueued = stats.get("enqueuedTime") or created
    launched = stats.get("launchTime") or enqueued
    started = run["startTime"] or stats.get("startTime") or launched
    ended = run["endTime"] or stats.get("endTime") or started
    steps = [
        s for s in run["stepStats"] if s["stepKey"] in pooled_steps and s["startTime"] is not None
    ]
    waits = pool_waits(events, {s["stepKey"]: s["startTime"] for s in steps}, pool)
    pool_wait = sum(waits.values())
    first_step = min((s["startTime"] for s in steps), default=None)
    return {
        "job": run["jobName"],
        "branch": branch,
        "run_id": run["runId"],
        "status": run["status"],
        "queue_wait_seconds": round(started - created, 3),
        "in_queue_seconds": round(max(launched - enqueued, 0.0), 3),
        "worker_start_seconds": round(max(started - launched, 0.0), 3),
        "pool_wait_seconds": round(pool_wait, 3),
        "run_start_to_first_warehouse_step_seconds": (
            round(first_step - started, 3) if first_step is not None else None
        ),
        "duration_seconds": round(ended - started, 3),
        "end_to_end_seconds": round(ended - created, 3),
        "alone_estimate_seconds": round(max(ended - launched - pool_wait, 0.0), 3),
        "warehouse_steps": [
            {
                "step": s["stepKey"],
                "start_offset_seconds": round(s["startTime"] - origin, 3),
                "seconds": round((s["endTime"] or ended) - s["startTime"], 3),
                "pool_wait_seconds": round(waits[s["stepKey"]], 3),
            }
            for s in sorted(steps, key=lambda s: s["startTime"])
        ],
    }


def warehouse_intervals(
    run: dict[str, Any], pooled_steps: set[str]
) -> list[tuple[str, float, float]]:
    """(label, start, end) of every warehouse step the run started, for ``overlaps``.

    A step with no recorded end ended with its run.
    """
    ended = run["endTime"] or run["startTime"]
    label = f"{run['jobName']}/{run['runId'][:8]}"
    return [
        (f"{label}/{s['stepKey']}", s["startTime"], s["endTime"] or ended)
        for s in run["stepStats"]
        if s["stepKey"] in pooled_steps and s["startTime"] is not None
    ]
