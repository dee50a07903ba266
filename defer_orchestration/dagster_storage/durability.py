"""What the SQLite and PostgreSQL storages here share: which events they write with a full
flush, which Dagster mirrors into its cross-run tables, and the schema lookups they cache.

Guarded (``guard.py``). Touches Dagster's private event-type groups ``ASSET_EVENTS``,
``ASSET_CHECK_EVENTS`` and ``EVENT_TYPE_TO_PIPELINE_RUN_STATUS`` (Dagster's own definition of
what its storages mirror and what changes a run's status: following them keeps a new event
type Dagster adds there classified as Dagster classifies it; no public API lists them), and
wraps ``has_table``/``has_asset_key_col`` of its SQL event log storages. With the guard off
the lookups are Dagster's own, uncached.

:func:`store_planned_in_index` writes the cross-run rows of a batch of *planned* events
(what Dagster reports, one per asset and per check, when it creates a run: 2,800 for a
1,000-model dbt project with its tests) in three statements instead of one to three per
event. It writes the rows Dagster's ``_store_asset_event`` / ``_store_asset_event_tags`` /
``_store_asset_check_evaluation_planned`` write, built by Dagster's own private
``_get_asset_entry_values``, ``_event_insert_timestamp`` and
``_has_asset_key_index_cols_on_connection`` and its tables ``AssetKeyTable`` and
``AssetCheckExecutionsTable`` (tests/test_event_storage_differential.py compares every table
with Dagster's own storage). Dagster inserts an asset row and, on a unique-key conflict,
updates it with the same values: here one upsert (``ON CONFLICT (asset_key) DO UPDATE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from defer_orchestration.dagster_storage import guard

try:
    from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, EVENT_TYPE_TO_PIPELINE_RUN_STATUS
except ImportError:  # a Dagster that moved them is not a tested one: the guard is off, nothing here is asked
    ASSET_CHECK_EVENTS = ASSET_EVENTS = EVENT_TYPE_TO_PIPELINE_RUN_STATUS = ()  # type: ignore[assignment]
try:
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, AssetKeyTable
except ImportError:  # pragma: no cover (an untested Dagster: guard.active() is False)
    pass

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



PLANNED = frozenset({
    dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
})


def all_planned(events: Sequence[dg.EventLogEntry]) -> bool:
    """A batch of nothing but planned materializations and check evaluations (the batch
    Dagster reports when it creates a run)."""
    return bool(events) and all(event.dagster_event_type in PLANNED for event in events)


def store_planned_in_index(
    storage: Any, conn: Any, events: Sequence[dg.EventLogEntry], event_ids: Sequence[int], serialized: Sequence[str]
) -> None:
    """The asset rows, asset tags and check-execution rows Dagster writes for each of
    ``events`` (all planned, already stored with ``event_ids`` as ``serialized``, the event
    rows' ``event`` column: what Dagster serializes again for a check's row), in one
    statement per table."""
    has_cols = storage._has_asset_key_index_cols_on_connection(conn)
    assets: dict[str, dict[str, Any]] = {}  # by asset key: the last event's values win, as in Dagster's update
    asset_events: list[tuple[dg.EventLogEntry, int]] = []
    checks: list[dict[str, Any]] = []
    for event, event_id, text in zip(events, event_ids, serialized, strict=True):
        dagster_event = event.get_dagster_event()
        if dagster_event.event_type is dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
            if dagster_event.asset_key is None:
                continue
            asset_events.append((event, event_id))
            values = storage._get_asset_entry_values(event, event_id, has_cols)
            if values:
                key = dagster_event.asset_key.to_string()
                assets.pop(key, None)
                assets[key] = {"asset_key": key, **values}
            continue
        planned = dagster_event.event_specific_data
        partition_keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        for partition_key in partition_keys:
            checks.append({
                "asset_key": planned.asset_key.to_string(),
                "check_name": planned.check_name,
                "partition": partition_key,
                "run_id": event.run_id,
                "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
                "evaluation_event": text,
                "evaluation_event_timestamp": storage._event_insert_timestamp(event),
                "evaluation_event_storage_id": event_id,
            })
    if asset_events:
        storage._store_asset_event_tags(conn, [e for e, _ in asset_events], [i for _, i in asset_events])
    if assets:
        rows = list(assets.values())
        columns = [name for name in rows[0] if name != "asset_key"]
        if any(set(row) != set(rows[0]) for row in rows):  # never for planned events; Dagster's path if so
            for event, event_id in asset_events:
                storage._store_asset_event(conn, event, event_id)
        else:
            upsert = _dialect_insert(conn)(AssetKeyTable)
            conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=[AssetKeyTable.c.asset_key],
                    set_={name: upsert.excluded[name] for name in columns},
                ),
                rows,
            )
    if checks:
        conn.execute(AssetCheckExecutionsTable.insert(), checks)


def _dialect_insert(conn: Any) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert
