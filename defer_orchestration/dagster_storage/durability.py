"""What the SQLite and PostgreSQL storages here share: which events they write with a full
flush, which Dagster mirrors into its cross-run tables, and the schema lookups they cache.

Guarded (``guard.py``). Touches Dagster's private event-type groups ``ASSET_EVENTS``,
``ASSET_CHECK_EVENTS`` and ``EVENT_TYPE_TO_PIPELINE_RUN_STATUS`` (Dagster's own definition of
what its storages mirror and what changes a run's status: following them keeps a new event
type Dagster adds there classified as Dagster classifies it; no public API lists them), and
wraps ``has_table``/``has_asset_key_col`` of its SQL event log storages. With the guard off
the lookups are Dagster's own, uncached.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from defer_orchestration.dagster_storage import guard

try:
    from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, EVENT_TYPE_TO_PIPELINE_RUN_STATUS
except ImportError:  # a Dagster that moved them is not a tested one: the guard is off, nothing here is asked
    ASSET_CHECK_EVENTS = ASSET_EVENTS = EVENT_TYPE_TO_PIPELINE_RUN_STATUS = ()  # type: ignore[assignment]

# A run's status changes and a step's end: after one of these is stored, everything the
# run reported before it is on disk, whatever happens to the machine afterwards.
DURABILITY_POINTS = frozenset(EVENT_TYPE_TO_PIPELINE_RUN_STATUS) | {
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.RUN_DEQUEUED,
}

_MIRRORED: frozenset[Any] = (
    frozenset(ASSET_EVENTS) | frozenset(ASSET_CHECK_EVENTS) | frozenset(EVENT_TYPE_TO_PIPELINE_RUN_STATUS)
)


def is_durability_point(event: dg.EventLogEntry) -> bool:
    """A run status change or a step's end: written with a full flush to disk."""
    return event.dagster_event_type in DURABILITY_POINTS


def mirrored_in_index(event: dg.EventLogEntry) -> bool:
    """Events Dagster's SQLite storage also writes into the cross-run index file: asset
    events, check evaluations (planned and done) and run status changes."""
    return event.dagster_event_type in _MIRRORED


class CachedSchemaLookups:
    """Mixed in before a Dagster SQL event log storage: its "does this table / asset-key
    column exist" lookups, asked for every asset event and read (a connection or a schema
    inspection each), answered from memory once true (a table or column, once there, stays)."""

    _known_tables: set[str]
    _asset_key_cols: set[str]

    def has_table(self, table_name: str) -> bool:
        if not guard.active():
            return bool(super().has_table(table_name))  # type: ignore[misc]
        known = self.__dict__.setdefault("_known_tables", set())
        if table_name in known:
            return True
        found = bool(super().has_table(table_name))  # type: ignore[misc]
        if found:
            known.add(table_name)
        return found

    def has_asset_key_col(self, column_name: str) -> bool:
        if not guard.active():
            return bool(super().has_asset_key_col(column_name))  # type: ignore[misc]
        known = self.__dict__.setdefault("_asset_key_cols", set())
        if column_name in known:
            return True
        found = bool(super().has_asset_key_col(column_name))  # type: ignore[misc]
        if found:
            known.add(column_name)
        return found

