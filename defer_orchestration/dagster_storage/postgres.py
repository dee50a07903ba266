"""Dagster's PostgreSQL event log storage, writing an event (or a batch) in one transaction
on one pooled connection.

dagster-postgres opens a new connection (TCP, password check) for every statement group
(``NullPool``): storing one materialization costs it three connections and three commits
(the event, the asset rows, and a ``has_table`` probe), a check evaluation three, and its
``store_event_batch`` batches only materializations and observations.

Here (same tables, same rows, the same ``NOTIFY`` for version skew):

- an event or a batch of any kinds is one transaction: the events inserted in one
  statement, then their tags, asset rows and check rows;
- the engine keeps one connection (``pool_size=1``, more opened on demand and closed when
  returned; ``pool_pre_ping`` replaces one the server dropped), as dagster-postgres' own
  webserver mode does;
- the transaction runs with ``synchronous_commit=off`` unless it holds a durability point
  (a run status change or a step's end): the server acknowledges the commit before its
  WAL reaches disk. The writing process dying loses nothing (the server has it); the
  server crashing may lose the last few hundred milliseconds of such commits (at most
  three ``wal_writer_delay``), never a run status, and the database stays consistent. A
  server already running with ``synchronous_commit=off`` is unaffected either way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import dagster._check as check
import sqlalchemy as db
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._serdes import ConfigurableClassData
from dagster_postgres import (
    DagsterPostgresStorage,
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)
from dagster_postgres.event_log.event_log import CHANNEL_NAME
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)
from sqlalchemy.engine import Connection

from defer_orchestration.dagster_storage.durability import CachedSchemaLookups, is_durability_point

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
        super().__init__(postgres_url, should_autocreate_tables, inst_data=inst_data, token_provider=token_provider)
        self._engine.dispose()
        self._engine = create_pg_engine(
            self.postgres_url, token_provider,
            isolation_level="AUTOCOMMIT", pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW,
            pool_pre_ping=True, pool_recycle=POOL_RECYCLE_SECONDS,
        )

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PostgresBatchedEventLogStorage:
        """Built from ``dagster.yaml``, with dagster-postgres' own config schema."""
        return cls(inst_data=inst_data, **_connection_kwargs(config_value))

    # Connections ---------------------------------------------------------------------

    def _connect(self) -> Any:
        """Inside a batch, the batch's own connection (Dagster's check-row helpers would
        otherwise open one of their own, a commit each)."""
        active = getattr(self._writing, "conn", None)
        if active is not None:
            return _reuse(active)
        return super()._connect()

    # Writes --------------------------------------------------------------------------

    def store_event(self, event: EventLogEntry) -> None:
        """One event: a batch of one."""
        check.inst_param(event, "event", EventLogEntry)
        self.store_event_batch([event])

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """The events, their tags, asset rows and check rows in one transaction."""
        check.sequence_param(events, "events", of_type=EventLogEntry)
        if not events:
            return
        durable = any(is_durability_point(event) for event in events)
        with super()._connect() as base:
            conn = base.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                if not durable:
                    conn.execute(db.text("SET LOCAL synchronous_commit TO OFF"))
                self._writing.conn = conn
                try:
                    self._store(conn, events)
                finally:
                    self._writing.conn = None

    def _store(self, conn: Connection, events: Sequence[EventLogEntry]) -> None:
        result = conn.execute(
            self.prepare_insert_event_batch(events).returning(
                SqlEventLogStorageTable.c.run_id, SqlEventLogStorageTable.c.id
            )
        )
        # PostgreSQL returns the rows of a multi-row INSERT ... RETURNING in VALUES order
        # (dagster-postgres' own batch relies on it too).
        ids = [(str(run_id), cast(int, event_id)) for run_id, event_id in result.fetchall()]
        if len(ids) != len(events):
            check.failed(f"stored {len(ids)} rows for {len(events)} events")
        for event, (run_id, event_id) in zip(events, ids):
            # LISTEN/NOTIFY is no longer used by Dagster's watcher; kept, as dagster-postgres
            # keeps it, for readers of another version. Delivered at commit.
            conn.execute(db.text(f"NOTIFY {CHANNEL_NAME}, :notify_id"), {"notify_id": f"{run_id}_{event_id}"})
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
    ) -> DagsterPostgresBatchedStorage:
        """Built from ``dagster.yaml``, with dagster-postgres' own config schema."""
        return cls(inst_data=inst_data, **_connection_kwargs(config_value))
