"""Which events the storages here write with a full flush, and which Dagster mirrors
into its cross-run tables: one place, shared by the SQLite and PostgreSQL storages."""

from __future__ import annotations

from dagster._core.events import (
    ASSET_CHECK_EVENTS,
    ASSET_EVENTS,
    EVENT_TYPE_TO_PIPELINE_RUN_STATUS,
    DagsterEventType,
)
from dagster._core.events.log import EventLogEntry

# A run's status changes and a step's end: after one of these is stored, everything the
# run reported before it is on disk, whatever happens to the machine afterwards.
DURABILITY_POINTS = frozenset(EVENT_TYPE_TO_PIPELINE_RUN_STATUS) | {
    DagsterEventType.STEP_SUCCESS,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.RUN_DEQUEUED,
}

_MIRRORED = frozenset(ASSET_EVENTS) | frozenset(ASSET_CHECK_EVENTS) | frozenset(EVENT_TYPE_TO_PIPELINE_RUN_STATUS)


def is_durability_point(event: EventLogEntry) -> bool:
    """A run status change or a step's end: written with a full flush to disk."""
    return event.dagster_event_type in DURABILITY_POINTS


def mirrored_in_index(event: EventLogEntry) -> bool:
    """Events Dagster's SQLite storage also writes into the cross-run index file: asset
    events, check evaluations (planned and done) and run status changes."""
    return event.dagster_event_type in _MIRRORED
