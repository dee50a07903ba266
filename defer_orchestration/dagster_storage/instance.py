"""``BatchedEventsInstance``: Dagster's instance with its event batches switched on and the
batched SQLite storage as its default.

Dagster already groups some events into batches: when a run is created it reports one
"planned" event per asset and per asset check it will execute (2,798 for a 1,000-model
dbt project), marked as one batch. It hands a batch to the storage's
``store_event_batch`` only when the environment variable ``DAGSTER_EVENT_BATCH_SIZE`` is
set, read in whichever process creates the run (the webserver for a launch from the UI,
the daemon for sensors and schedules, the caller of ``execute_in_process``), and with
stock OSS storages a batch is a loop of single writes anyway. Here, with storages that
write a batch in one transaction, batching is on by default at
:data:`DEFAULT_EVENT_BATCH_SIZE`; a set ``DAGSTER_EVENT_BATCH_SIZE`` still wins
(``0`` switches batching off).

Configured in ``dagster.yaml``::

    instance_class:
      module: defer_orchestration.dagster_storage.instance
      class: BatchedEventsInstance

Without a ``storage`` section the instance then keeps everything where Dagster's default
SQLite storage keeps it, under the instance's directory, with
:class:`~defer_orchestration.dagster_storage.sqlite.SqliteBatchedEventLogStorage` as the
event log. (Dagster's ``storage: sqlite: base_dir:`` cannot name our class, and a
``storage: custom:`` section would need the directory spelled out.)

Guarded (``guard.py``; tested with the dagster versions of ``guard.DAGSTER_INTERNALS``).
Touches Dagster's private ``config_defaults`` hook of a custom instance class and
``InstanceRef.config_defaults``, ``DagsterInstance._get_event_batch_size`` (the only
instance-level batch setting: Dagster's public one is the ``DAGSTER_EVENT_BATCH_SIZE``
variable, which would have to be set in every process that creates runs, and defaults to
off), ``handle_new_event(batch_metadata=...)`` and ``DagsterEventBatchMetadata`` (to hand a
group's events to Dagster's own batch path). When ``guard.active()`` is false the instance
is a stock ``DagsterInstance``: Dagster's default storages, its batch size (from
``DAGSTER_EVENT_BATCH_SIZE``, off when unset), and ``grouped_events`` holds nothing (each
event is stored as it is reported). ``dagster.yaml`` naming this class loads either way.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import yaml
from dagster import DagsterInstance, EventLogEntry

from defer_orchestration.dagster_storage import guard

# Private names are imported where they are used, once the guard said yes (or, for
# config_defaults with the guard off, from the module that calls it): a Dagster that moved
# them is not a tested version, and this module must still load for the guard to fall back.
if TYPE_CHECKING:
    from dagster._core.events import DagsterEventBatchMetadata
    from dagster._serdes import ConfigurableClassData
from defer_orchestration.dagster_storage.durability import is_durability_point

__all__ = ["DEFAULT_EVENT_BATCH_SIZE", "BatchedEventsInstance", "EventGroup", "grouped_events"]

# Events per store_event_batch call when DAGSTER_EVENT_BATCH_SIZE is not set. A batch is
# buffered in memory by the process creating a run only until that run's planned events
# are all reported, and written in one transaction.
DEFAULT_EVENT_BATCH_SIZE = 1000
EVENT_BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"

_SQLITE = "defer_orchestration.dagster_storage.sqlite"


class EventGroup:
    """Events of one run reported in this thread, held until :meth:`flush` hands them to
    the storage as one batch (one transaction). See :meth:`BatchedEventsInstance.grouped_events`."""

    def __init__(self, instance: "BatchedEventsInstance", run_id: str, limit: int) -> None:
        self.instance, self.run_id, self.limit = instance, run_id, limit
        self.pending: list[EventLogEntry] = []

    def flush(self) -> None:
        """Store what is held, as one batch (Dagster's own batch path: stored, then each
        event's subscribers and run bookkeeping, as for any event)."""
        from dagster._core.events import DagsterEventBatchMetadata

        events, self.pending = self.pending, []
        batch_id = uuid.uuid4().hex
        for i, event in enumerate(events):
            self.instance._handle_now(event, DagsterEventBatchMetadata(batch_id, i == len(events) - 1))


class _NoGroup:
    """What :func:`grouped_events` gives an instance that does not group (or whose
    grouping the guard switched off): nothing held."""

    def flush(self) -> None:
        return None


@contextmanager
def grouped_events(instance: Any, run_id: str) -> Iterator[EventGroup | _NoGroup]:
    """``instance.grouped_events(run_id)`` when the instance groups events, else a group
    that holds nothing (each event is stored as it is reported)."""
    group = getattr(instance, "grouped_events", None)
    if not callable(group):
        yield _NoGroup()
        return
    with group(run_id) as opened:
        yield opened


class BatchedEventsInstance(DagsterInstance):
    """A ``DagsterInstance`` that writes Dagster's event batches with ``store_event_batch``
    by default, and whose default storage is ``DagsterSqliteBatchedStorage``."""

    @classmethod
    def config_schema(cls) -> Mapping[str, Any]:
        """No options of its own."""
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, ConfigurableClassData | None]:
        """Dagster's defaults, with the batched SQLite storage in the same directories
        (Dagster's defaults as they are when the guard is off)."""
        from dagster._core.instance.ref import InstanceRef

        if not guard.active():
            return InstanceRef.config_defaults(base_dir)
        from dagster._serdes import ConfigurableClassData

        defaults = dict(InstanceRef.config_defaults(base_dir))
        defaults["storage"] = ConfigurableClassData(
            _SQLITE, "DagsterSqliteBatchedStorage", yaml.dump({"base_dir": base_dir}, default_flow_style=False)
        )
        defaults["event_log_storage"] = ConfigurableClassData(
            _SQLITE, "SqliteBatchedEventLogStorage",
            yaml.dump({"base_dir": os.path.join(base_dir, "history", "runs", "")}, default_flow_style=False),
        )
        return defaults

    # Grouped events ----------------------------------------------------------------------

    @property
    def _groups(self) -> threading.local:
        groups = self.__dict__.get("_event_groups")
        if groups is None:
            groups = self.__dict__.setdefault("_event_groups", threading.local())
        return groups

    @contextmanager
    def grouped_events(self, run_id: str, limit: int | None = None) -> Iterator[EventGroup | _NoGroup]:
        """Hold the events of ``run_id`` this thread reports until the group is flushed
        (by the caller, every ``limit`` events, before a durability point or a read of
        asset records, and when the block ends, however it ends), each flush one batch.

        For a step reporting thousands of events at once (the production dbt step, after
        dbt has finished): one transaction per flush instead of one per event. What a flush
        stored is committed; events held when the process dies were never stored, as if
        the step had not reported them yet. A run status change or a step's end is never
        held: everything held before it is stored first, then it.

        With the guard off, a group that holds nothing: Dagster stores each event as it
        is reported."""
        if not guard.active():
            yield _NoGroup()
            return
        group = EventGroup(self, run_id, limit or max(1, self._get_event_batch_size() or DEFAULT_EVENT_BATCH_SIZE))
        outer = getattr(self._groups, "current", None)
        self._groups.current = group
        try:
            yield group
        finally:
            self._groups.current = outer
            group.flush()

    def _held(self) -> EventGroup | None:
        return getattr(self._groups, "current", None)

    def _flush_held(self) -> None:
        group = self._held()
        if group is not None and group.pending:
            group.flush()

    def handle_new_event(self, event: EventLogEntry, *, batch_metadata: DagsterEventBatchMetadata | None = None) -> None:
        """Dagster's, except for events of a group open in this thread (see :meth:`grouped_events`)."""
        group = self._held()
        if group is None or batch_metadata is not None or event.run_id != group.run_id:
            return self._handle_now(event, batch_metadata)
        if is_durability_point(event):
            group.flush()
            return self._handle_now(event, None)
        group.pending.append(event)
        if len(group.pending) >= group.limit:
            group.flush()
        return None

    def _handle_now(self, event: EventLogEntry, batch_metadata: DagsterEventBatchMetadata | None) -> None:
        super().handle_new_event(event, batch_metadata=batch_metadata)

    # Reads that must see held events (what a step reads back about its own materializations).

    def get_asset_records(self, *args: Any, **kwargs: Any) -> Any:
        self._flush_held()
        return super().get_asset_records(*args, **kwargs)

    def fetch_materializations(self, *args: Any, **kwargs: Any) -> Any:
        self._flush_held()
        return super().fetch_materializations(*args, **kwargs)

    def fetch_observations(self, *args: Any, **kwargs: Any) -> Any:
        self._flush_held()
        return super().fetch_observations(*args, **kwargs)

    def _get_event_batch_size(self) -> int:
        """``DAGSTER_EVENT_BATCH_SIZE`` when set (read per call, as Dagster does), else
        :data:`DEFAULT_EVENT_BATCH_SIZE`; Dagster's own answer when the guard is off."""
        if not guard.active():
            return int(super()._get_event_batch_size())
        value = os.getenv(EVENT_BATCH_SIZE_ENV, "").strip()
        return int(value) if value else DEFAULT_EVENT_BATCH_SIZE
