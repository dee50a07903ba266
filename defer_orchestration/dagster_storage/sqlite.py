"""Dagster's SQLite event log storage, writing an event (or a batch) in one transaction per file.

Dagster's ``SqliteEventLogStorage`` keeps one SQLite file per run plus a cross-run
``index.db``. Storing one materialization costs it a fresh engine and a commit in the
run's file, another fresh engine and commit in the index, and two more fresh engines to
ask whether a table and a column exist; a check evaluation costs three commits. Every
commit in WAL mode at the default ``synchronous=FULL`` is an ``fdatasync``.

Here (same files, same tables, same rows):

- a batch is grouped by run; each run's events are one transaction in its file and the
  events Dagster mirrors into the index (asset events with their tags and asset rows,
  check evaluations with their check rows, run status changes) one transaction there;
  ``store_event`` is a batch of one;
- the connection to the index and to the few most recently written run files is kept
  open (no transaction stays open between writes, so nothing stays locked): Dagster's
  engine-per-call closes the last connection to a WAL file after every write, and
  SQLite then checkpoints the file, fsyncs it and deletes the WAL, 4-5 ms an event;
  "does this table/column exist" is answered once;
- a file in WAL mode is written with ``synchronous=NORMAL``: a commit is durable against
  the writing process dying (it is in the WAL, in the operating system's cache) but not
  against the machine losing power before the next checkpoint or durability point. A
  batch holding a run status change or a step's end is written with ``synchronous=FULL``,
  which flushes the WAL, so every earlier commit of that file too. A file not in WAL mode
  (created by an old Dagster) keeps ``FULL`` throughout.

Guarded (``guard.py``; tested with the dagster versions of ``guard.DAGSTER_INTERNALS``).
Touches Dagster's private ``SqliteEventLogStorage._connect``, ``_initdb``,
``_initialized_dbs``, ``_db_lock``, ``_event_to_row``, ``_store_asset_event_tags``,
``_store_asset_event``, ``_has_asset_key_index_cols_on_connection``, ``index_connection``,
``store_asset_check_event``, ``conn_string_for_shard``, ``INDEX_SHARD_NAME``,
``SQLITE_BUSY_TIMEOUT_SECONDS``, ``dagster._core.storage.sql.create_engine``,
``SqlEventLogStorageTable``, ``ASSET_EVENTS``/``ASSET_CHECK_EVENTS``, and
``DagsterSqliteStorage``'s ``_run_storage``/``_event_log_storage``/``_schedule_storage``.
No public API writes several events in one transaction (``store_event_batch`` is a loop
of ``store_event`` in Dagster's SQLite storage). When ``guard.active()`` is false every
override here is Dagster's own method (``super()``) and ``DagsterSqliteBatchedStorage`` is
built by ``DagsterSqliteStorage``'s constructor, with Dagster's stock event log storage.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dagster import EventLogEntry

# The classes extended: Dagster's storage classes, documented (API reference, "Internals")
# for writing a storage of one's own.
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.schedules import SqliteScheduleStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

from defer_orchestration.dagster_storage import guard

try:  # used only when the guard is on; a Dagster that moved them is not a tested version
    import dagster._check as check
    from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME
    from dagster._core.storage.sql import create_engine
    from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
    from dagster._serdes import ConfigurableClassData
except ImportError:  # pragma: no cover (an untested Dagster: guard.active() is False)
    pass
from defer_orchestration.dagster_storage.durability import (
    CachedSchemaLookups,
    all_planned,
    is_durability_point,
    mirrored_in_index,
    store_planned_in_index,
)

__all__ = ["KEPT_RUN_FILES", "DagsterSqliteBatchedStorage", "SqliteBatchedEventLogStorage"]

# Run files whose connection stays open besides the index (a run worker writes one; a
# webserver reading many runs keeps only the latest few open).
KEPT_RUN_FILES = 4


def _note_journal_mode(dbapi_connection: Any, record: Any) -> None:
    """A ``connect`` hook: remember whether the file is in WAL mode (set when Dagster created it)."""
    cursor = dbapi_connection.cursor()
    try:
        (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
    finally:
        cursor.close()
    record.info["wal"] = str(mode).lower() == "wal"


class SqliteBatchedEventLogStorage(CachedSchemaLookups, SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose writes are one transaction per file per batch.

    Configure it like Dagster's (``base_dir``: the directory of the per-run files and
    ``index.db``, by default ``$DAGSTER_HOME/history/runs``), or through
    :class:`DagsterSqliteBatchedStorage` / the instance class in ``instance.py``.
    """

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        # Set before Dagster's constructor, which may already write (reindexing a new index).
        self._engines: collections.OrderedDict[str, Engine] = collections.OrderedDict()
        self._engines_lock = threading.Lock()
        self._secondary_indexes: dict[str, bool] = {}
        self._asset_key_index_cols = False
        self._writing = threading.local()  # the index connection of the batch being written
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> SqliteBatchedEventLogStorage:
        """Built from ``dagster.yaml``: ``config: {base_dir: ...}``, as Dagster's own."""
        return cls(inst_data=inst_data, **config_value)

    # Connections ---------------------------------------------------------------------

    def _engine(self, shard: str) -> Engine:
        """The shard's engine, which keeps its connection: closing the last connection to a
        WAL file checkpoints it, fsyncs and deletes the WAL (4-5 ms per event with Dagster's
        engine-per-call). The index and the :data:`KEPT_RUN_FILES` most recently used run
        files stay open; an older one is closed when a newer one opens."""
        with self._engines_lock:
            engine = self._engines.get(shard)
            if engine is None:
                engine = create_engine(
                    self.conn_string_for_shard(shard),
                    poolclass=QueuePool, pool_size=1, max_overflow=4,
                    connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
                )
                sa_event.listen(engine, "connect", _note_journal_mode)
                self._engines[shard] = engine
                runs = [name for name in self._engines if name != INDEX_SHARD_NAME]
                for name in runs[: max(0, len(runs) - KEPT_RUN_FILES)]:
                    self._engines.pop(name).dispose()
            else:
                self._engines.move_to_end(shard)
            return engine

    @contextmanager
    def _connect(self, shard: str, durable: bool = True) -> Iterator[Connection]:  # type: ignore[override]
        """Dagster's ``_connect`` (one lock, the file created and migrated on first use, one
        transaction) on a kept connection; ``durable=False`` (the batched writes) commits
        without an fsync when the file is in WAL mode. Dagster's own when the guard is off."""
        if not guard.active():
            with super()._connect(shard) as conn:
                yield conn
            return
        with self._db_lock:
            check.str_param(shard, "shard")
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                # A connection opened before Dagster switched a new file to WAL keeps the
                # old journal mode: start from a fresh one.
                engine.dispose()
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                synchronous = "FULL" if durable else "NORMAL"
                if conn.info.get("wal") and conn.info.get("synchronous") != synchronous:
                    # Set outside any transaction, on the driver's connection (SQLAlchemy
                    # would begin one for a statement of its own); kept with the connection.
                    conn.connection.dbapi_connection.execute(f"PRAGMA synchronous={synchronous}")  # type: ignore[union-attr]
                    conn.info["synchronous"] = synchronous
                with conn.begin():
                    yield conn

    def index_connection(self) -> Any:
        """Inside a batch, the batch's own index transaction (Dagster's check-row helpers
        open one of their own otherwise, a commit each)."""
        active = getattr(self._writing, "conn", None) if guard.active() else None
        if active is not None:
            return _reuse(active)
        return super().index_connection()

    def has_secondary_index(self, name: str) -> bool:
        """Asked for every asset read (a query each); cached as dagster-postgres caches it."""
        if not guard.active():
            return bool(super().has_secondary_index(name))
        if name not in self._secondary_indexes:
            self._secondary_indexes[name] = super().has_secondary_index(name)
        return self._secondary_indexes[name]

    def enable_secondary_index(self, name: str) -> None:
        """Dagster's, and the cached answer forgotten."""
        super().enable_secondary_index(name)
        self._secondary_indexes.pop(name, None)

    def _has_asset_key_index_cols_on_connection(self, conn: Connection) -> bool:
        """Asked for every asset event (a ``PRAGMA table_info`` each); columns, once there, stay."""
        if not guard.active():
            return bool(super()._has_asset_key_index_cols_on_connection(conn))
        if not self._asset_key_index_cols:
            self._asset_key_index_cols = super()._has_asset_key_index_cols_on_connection(conn)
        return self._asset_key_index_cols

    def _close_kept_connections(self) -> None:
        with self._engines_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()

    def wipe(self) -> None:
        """Dagster's wipe deletes the run files: their kept connections are closed first."""
        self._close_kept_connections()
        super().wipe()

    def dispose(self) -> None:
        """Dagster's dispose, and the kept connections."""
        super().dispose()
        self._close_kept_connections()

    # Writes --------------------------------------------------------------------------

    def store_event(self, event: EventLogEntry) -> None:
        """One event: a batch of one (Dagster's ``store_event`` when the guard is off)."""
        if not guard.active():
            return super().store_event(event)
        check.inst_param(event, "event", EventLogEntry)
        self.store_event_batch([event])
        return None

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Every event in its run's file (one transaction per run), and what Dagster mirrors
        into the index (one transaction), with the same rows Dagster's ``store_event`` writes.
        Dagster's ``store_event_batch`` when the guard is off."""
        if not guard.active():
            return super().store_event_batch(events)
        check.sequence_param(events, "events", of_type=EventLogEntry)
        by_run: dict[str, list[EventLogEntry]] = {}
        for event in events:
            by_run.setdefault(event.run_id, []).append(event)
        for run_id, run_events in by_run.items():
            durable = any(is_durability_point(event) for event in run_events)
            rows = [self._event_to_row(event) for event in run_events]
            with self._connect(run_id, durable) as conn:
                conn.execute(SqlEventLogStorageTable.insert(), rows)
            mirrored = [(event, row) for event, row in zip(run_events, rows) if mirrored_in_index(event)]
            if mirrored:
                self._store_in_index(mirrored, durable)
        return None

    def _store_in_index(self, mirrored: list[tuple[EventLogEntry, dict[str, Any]]], durable: bool) -> None:
        with self._connect(INDEX_SHARD_NAME, durable) as conn:
            self._writing.conn = conn
            try:
                if all_planned([event for event, _ in mirrored]):
                    # The batch Dagster reports when it creates a run: a row per asset and
                    # check, stored in one statement per table (durability.py).
                    table = SqlEventLogStorageTable
                    ids = conn.execute(
                        table.insert().returning(table.c.id, sort_by_parameter_order=True), [row for _, row in mirrored]
                    ).scalars().all()
                    store_planned_in_index(
                        self, conn, [event for event, _ in mirrored], ids, [row["event"] for _, row in mirrored]
                    )
                    return
                for event, row in mirrored:
                    # Parameters, not values(): SQLAlchemy compiles the statement once.
                    event_id = conn.execute(SqlEventLogStorageTable.insert(), row).inserted_primary_key[0]
                    if event_id is None:
                        check.failed("Cannot store asset event tags for null event id.")
                    event_type = event.dagster_event_type
                    if event_type in ASSET_EVENTS:
                        self._store_asset_event_tags(conn, [event], [event_id])
                        self._store_asset_event(conn, event, event_id)
                    elif event_type in ASSET_CHECK_EVENTS:
                        self.store_asset_check_event(event, event_id)
                    # run status changes: the mirrored row is all Dagster keeps in the index
            finally:
                self._writing.conn = None


@contextmanager
def _reuse(conn: Connection) -> Iterator[Connection]:
    """``conn`` as a context manager that neither commits nor closes it."""
    yield conn


class DagsterSqliteBatchedStorage(DagsterSqliteStorage):
    """Dagster's default SQLite storage (``base_dir`` = the instance's directory: runs in
    ``history/runs.db``, event logs in ``history/runs/``, schedules in ``schedules/``) with
    :class:`SqliteBatchedEventLogStorage` as its event log. Existing files are read as they are.
    With the guard off, exactly Dagster's (its constructor, its stock event log storage)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        if not guard.active():
            DagsterSqliteStorage.__init__(self, base_dir, inst_data=inst_data)
            return
        # Dagster's constructor would open its own event log storage first; build the three here.
        import os

        self.base_dir = check.str_param(base_dir, "base_dir")
        self._inst_data = check.opt_inst_param(inst_data, "inst_data", ConfigurableClassData)
        self._run_storage = SqliteRunStorage.from_local(os.path.join(base_dir, "history", ""))
        self._event_log_storage = SqliteBatchedEventLogStorage(os.path.join(base_dir, "history", "runs", ""))
        self._schedule_storage = SqliteScheduleStorage.from_local(os.path.join(base_dir, "schedules"))
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> DagsterSqliteBatchedStorage:
        """Built from ``dagster.yaml``: ``storage: custom: ... config: {base_dir: ...}``."""
        return cls.from_local(inst_data=inst_data, **config_value)
