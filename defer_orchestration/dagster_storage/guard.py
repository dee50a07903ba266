"""The one switch for every private Dagster internal this package and the production step use.

Guarded modules (each lists at its top what it touches):

- ``sqlite.py`` / ``postgres.py``: the batched event log storages and their composite storages;
- ``instance.py``: ``BatchedEventsInstance`` (its default storage, event batches without
  ``DAGSTER_EVENT_BATCH_SIZE``, ``grouped_events``);
- ``durability.py``: which event types are durability points / mirrored in the index;
- ``step_context.py``: the production dbt step's shortcuts into Dagster's step context.

:func:`active` decides once per process, at first use (never at import), through
:func:`defer_orchestration.lib.internals.enabled`: off when ``DEFER_ORCH_INTERNALS=off`` is
set or the installed dagster is not in :data:`DAGSTER_INTERNALS`'s tested list, in which case
it logs once, naming the version and what was switched off, and every guarded class and
function takes Dagster's own path (stock storages, stock batching, stock step events).
"""

from __future__ import annotations

import os
import threading

from defer_orchestration.lib.internals import ENV_SWITCH, Internal, enabled

__all__ = ["DAGSTER_INTERNALS", "active", "forget_decision"]

DAGSTER_INTERNALS = Internal(
    name="batched Dagster event storage and step-event shortcuts",
    distribution="dagster",
    # The exact versions the test suite ran these internals on (constraints/newest.txt; a
    # version is added once tests/test_event_storage_differential.py passes on it with the
    # version listed). constraints/oldest.txt's 1.13.5 was tried and is not listed: its SQL
    # event log storages have no `_store_asset_event_tags`, so there Dagster's own path runs.
    tested=("1.13.27",),
    touches=(
        "SqliteEventLogStorage._connect/_initdb/_event_to_row/_store_asset_event(_tags)/index_connection",
        "SqlEventLogStorage._get_asset_entry_values/_event_insert_timestamp, AssetKeyTable, "
        "AssetCheckExecutionsTable (a run's planned events stored in one statement per table)",
        "PostgresEventLogStorage._connect/_engine/_event_to_row/_store_asset_event(_tags)",
        "DagsterSqliteStorage/DagsterPostgresStorage private storage attributes",
        "InstanceRef.config_defaults, DagsterInstance._get_event_batch_size/handle_new_event batches",
        "StepExecutionContext._data_version_cache._fetch_input_asset_version_info/get_output_asset_keys",
        "AssetCheckResult._get_target_materialization_data, AssetLayer lookups",
    ),
)

# (the DEFER_ORCH_INTERNALS value it was made under, the decision)
_decision: tuple[str | None, bool] | None = None
_lock = threading.Lock()


def active() -> bool:
    """Whether the guarded Dagster internals are used in this process: decided (and, when
    not, logged) on the first call, then the same answer for the life of the process, so a
    storage, the instance and the step never disagree halfway through a run. (Decided
    again only if ``DEFER_ORCH_INTERNALS`` itself changes, which a deployed process never
    sees and a test that sets it does.)"""
    global _decision
    switch = os.environ.get(ENV_SWITCH)
    decided = _decision
    if decided is None or decided[0] != switch:
        with _lock:
            decided = _decision
            if decided is None or decided[0] != switch:
                decided = _decision = (switch, enabled(DAGSTER_INTERNALS))
    return decided[1]


def forget_decision() -> None:
    """Decide again on the next :func:`active` (tests that change the environment)."""
    global _decision
    with _lock:
        _decision = None
