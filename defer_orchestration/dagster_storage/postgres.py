"""Dagster's PostgreSQL event log storage, writing an event (or a batch) in one transaction
on one pooled connection.

dagster-postgres opens a new connection (TCP, password check) for every statement group
(``NullPool``): storing one materialization costs it three connections and three commits
(the event, the asset rows, and a ``has_table`` probe), a check evaluation three, and its
``store_event_batch`` batches only materializations and observations.

Here (same tables, same rows, the same ``NOTIFY`` for version skew):

- an event or a batch of any kinds is one transaction: the events inserted (and announced
  with ``NOTIFY``) in one statement, then their tags, asset rows and check rows;
- writes go through one kept connection (opened on first write, ``READ COMMITTED``):
  no pool checkout, liveness ping or isolation switch per event. A connection the server
  dropped is replaced and the batch retried once, when the batch's first statement found
  it dead (nothing was written); any other failure is raised as Dagster's would be.
  Reads keep dagster-postgres' pooled engine (``pool_size=1``, ``pool_pre_ping``);
- the writing connection runs with ``synchronous_commit=off``, a transaction holding a
  durability point (a run status change or a step's end) with the server's own setting:
  the server acknowledges other commits before their WAL reaches disk. The writing
  process dying loses nothing (the server has it); the server crashing may lose the last
  few hundred milliseconds of such commits (at most three ``wal_writer_delay``), never a
  run status, and the database stays consistent. A server already running with
  ``synchronous_commit=off`` is unaffected either way.

Guarded (``guard.py``; tested with the dagster versions of ``guard.DAGSTER_INTERNALS``).
Touches dagster-postgres' private ``PostgresEventLogStorage._connect``, ``_engine``,
``_event_to_row``, ``_store_asset_event_tags``, ``_store_asset_event``,
``store_asset_check_event``, ``CHANNEL_NAME``, Dagster's ``SqlEventLogStorageTable``,
``ASSET_EVENTS``/``ASSET_CHECK_EVENTS``, and ``DagsterPostgresStorage``'s
``_run_storage``/``_event_log_storage``/``_schedule_storage``. No public API writes events
of every kind in one transaction or keeps the writing connection (dagster-postgres'
``store_event_batch`` batches materializations and observations only, each statement on a
new connection). When ``guard.active()`` is false every override here is
dagster-postgres' own (``super()``, its ``NullPool`` engine kept) and
``DagsterPostgresBatchedStorage`` is built by ``DagsterPostgresStorage``'s constructor,
with the stock event log storage.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import sqlalchemy as db
from dagster import EventLogEntry
from dagster_postgres import (
    DagsterPostgresStorage,
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)
from sqlalchemy.engine import Connection

from defer_orchestration.dagster_storage import guard

try:  # used only when the guard is on; a version that moved them is not a tested one
    import dagster._check as check
    from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
    from dagster._serdes import ConfigurableClassData
    from dagster_postgres.event_log.event_log import CHANNEL_NAME
    from dagster_postgres.utils import (
        create_pg_engine,
        get_token_provider_from_config,
        pg_url_from_config,
        retry_pg_connection_fn,
    )
except ImportError:  # pragma: no cover (an untested Dagster: guard.active() is False)
    pass
from defer_orchestration.dagster_storage.durability import (
    CachedSchemaLookups,
    all_planned,
    is_durability_point,
    store_planned_in_index,
)

__all__ = ["DagsterPostgresBatchedStorage", "PostgresBatchedEventLogStorage"]

# Connections kept per storage object: one, like dagster-postgres' webserver mode.
POOL_SIZE = 1
# Opened beyond it when threads write at once (closed when returned).
MAX_OVERFLOW = 10
POOL_RECYCLE_SECONDS = 3600


def _connection_kwargs(config_value: Any) -> dict[str, Any]:
    """What dagster-postgres' storages take from their ``dagster.yaml`` config."""
    return {
        "postgres_url": pg_url_from_config(config_value),
        "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
        "token_provider": get_token_provider_from_config(config_value),
    }


class PostgresBatchedEventLogStorage(CachedSchemaLookups, PostgresEventLogStorage):
    """``PostgresEventLogStorage`` whose writes are one transaction per batch, on a kept
    connection. Configured like Dagster's (``postgres_db`` / ``postgres_url``)."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        self._writing = threading.local()
        self._writer_lock = threading.Lock()
        self._writer: Connection | None = None
        super().__init__(postgres_url, should_autocreate_tables, inst_data=inst_data, token_provider=token_provider)
        if not guard.active():  # dagster-postgres' own engine (a connection per statement)
            return
        self._engine.dispose()
        self._engine = create_pg_engine(
            self.postgres_url, token_provider,
            isolation_level="AUTOCOMMIT", pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW,
            pool_pre_ping=True, pool_recycle=POOL_RECYCLE_SECONDS,
        )

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PostgresEventLogStorage:
        """Built from ``dagster.yaml``, with dagster-postgres' own config schema; with the
        guard off, dagster-postgres' own storage from the same config."""
        if not guard.active():
            return PostgresEventLogStorage.from_config_value(inst_data, config_value)
        return cls(inst_data=inst_data, **_connection_kwargs(config_value))

    # Connections ---------------------------------------------------------------------

    def _connect(self) -> Any:
        """Inside a batch, the batch's own connection (Dagster's check-row helpers would
        otherwise open one of their own, a commit each)."""
        active = getattr(self._writing, "conn", None) if guard.active() else None
        if active is not None:
            return _reuse(active)
        return super()._connect()

    # Writes --------------------------------------------------------------------------

    def store_event(self, event: EventLogEntry) -> None:
        """One event: a batch of one (dagster-postgres' ``store_event`` when the guard is off)."""
        if not guard.active():
            return super().store_event(event)
        check.inst_param(event, "event", EventLogEntry)
        self.store_event_batch([event])
        return None

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """The events, their tags, asset rows and check rows in one transaction
        (dagster-postgres' ``store_event_batch`` when the guard is off)."""
        if not guard.active():
            return super().store_event_batch(events)
        check.sequence_param(events, "events", of_type=EventLogEntry)
        if not events:
            return None
        durable = any(is_durability_point(event) for event in events)
        with self._writer_lock:
            for attempt in (1, 2):
                conn = self._writer_connection()
                progress = {"first_statement_done": False}
                try:
                    with conn.begin():
                        if durable:  # the server's own setting: flushed before the commit returns
                            conn.execute(db.text("SET LOCAL synchronous_commit TO DEFAULT"))
                            progress["first_statement_done"] = True
                        self._writing.conn = conn
                        try:
                            self._store(conn, events, progress)
                        finally:
                            self._writing.conn = None
                    return None
                except db.exc.DBAPIError as exc:
                    self._drop_writer()
                    if attempt == 2 or not exc.connection_invalidated or progress["first_statement_done"]:
                        raise
        return None

    def _writer_connection(self) -> Connection:
        """The kept writing connection, opened (with dagster-postgres' connection retries)
        on first use: ``READ COMMITTED``, ``synchronous_commit=off`` for the session."""
        if self._writer is None:
            conn = retry_pg_connection_fn(self._engine.connect).execution_options(isolation_level="READ COMMITTED")
            try:
                conn.execute(db.text("SET synchronous_commit TO OFF"))
                conn.commit()
            except Exception:
                conn.close()
                raise
            self._writer = conn
        return self._writer

    def _drop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.invalidate()
                writer.close()
            except Exception:  # already broken: nothing to release
                pass

    def dispose(self) -> None:
        """dagster-postgres' dispose, and the writing connection."""
        with self._writer_lock:
            self._drop_writer()
        super().dispose()

    def _store(self, conn: Connection, events: Sequence[EventLogEntry], progress: dict[str, bool]) -> None:
        table = SqlEventLogStorageTable
        rows = [self._event_to_row(event) for event in events]
        # One event (nearly every write) as keyword values: SQLAlchemy caches that statement's
        # compiled form; a multi-row VALUES list is compiled anew each time.
        insert = table.insert().values(**rows[0]) if len(rows) == 1 else table.insert().values(rows)
        stored = insert.returning(table.c.run_id, table.c.id).cte("stored")
        # LISTEN/NOTIFY is no longer used by Dagster's watcher; kept, as dagster-postgres
        # keeps it, for readers of another version: "<run_id>_<event id>", delivered at commit.
        notify = db.func.pg_notify(CHANNEL_NAME, stored.c.run_id + "_" + db.cast(stored.c.id, db.Text))
        result = conn.execute(db.select(stored.c.run_id, stored.c.id, notify).order_by(stored.c.id))
        progress["first_statement_done"] = True
        # Ids come from the table's sequence in VALUES order, so ordered by id the rows are
        # the events' (dagster-postgres relies on RETURNING keeping that order).
        ids = [(str(run_id), cast(int, event_id)) for run_id, event_id, _ in result.fetchall()]
        if len(ids) != len(events):
            check.failed(f"stored {len(ids)} rows for {len(events)} events")
        if all_planned(events):  # the batch Dagster reports when it creates a run (durability.py)
            store_planned_in_index(self, conn, events, [event_id for _, event_id in ids], [row["event"] for row in rows])
            return
        for event, (_, event_id) in zip(events, ids):
            event_type = event.dagster_event_type
            if event_type in ASSET_EVENTS and event.get_dagster_event().asset_key:
                self._store_asset_event_tags(conn, [event], [event_id])
                self._store_asset_event(conn, event, event_id)
            if event_type in ASSET_CHECK_EVENTS:
                self.store_asset_check_event(event, event_id)


@contextmanager
def _reuse(conn: Connection) -> Iterator[Connection]:
    """``conn`` as a context manager that neither commits nor closes it."""
    yield conn


class DagsterPostgresBatchedStorage(DagsterPostgresStorage):
    """dagster-postgres' composite storage (run, event log, schedule storage in one
    database) with :class:`PostgresBatchedEventLogStorage` as its event log; the same
    config as ``storage: postgres:`` under ``storage: custom: ... config:``."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        if not guard.active():  # exactly dagster-postgres' composite storage
            DagsterPostgresStorage.__init__(
                self, postgres_url, should_autocreate_tables, inst_data=inst_data, token_provider=token_provider
            )
            return
        self.postgres_url = postgres_url
        self.should_autocreate_tables = check.bool_param(should_autocreate_tables, "should_autocreate_tables")
        self._inst_data = check.opt_inst_param(inst_data, "inst_data", ConfigurableClassData)
        self._run_storage = PostgresRunStorage(postgres_url, should_autocreate_tables, token_provider=token_provider)
        self._event_log_storage = PostgresBatchedEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._schedule_storage = PostgresScheduleStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        super(DagsterPostgresStorage, self).__init__()

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> DagsterPostgresStorage:
        """Built from ``dagster.yaml``, with dagster-postgres' own config schema; with the
        guard off, dagster-postgres' own composite storage from the same config."""
        if not guard.active():
            return DagsterPostgresStorage.from_config_value(inst_data, config_value)
        return cls(inst_data=inst_data, **_connection_kwargs(config_value))
