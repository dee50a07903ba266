"""Dagster event log storages that write what they are given in one transaction.

Why this package exists: a production build reports one materialization per dbt model,
seed and snapshot and one check evaluation per dbt test, and Dagster's stock SQL event
log storages spend two to four commits and as many fresh connections on each event
(SQLite: the run's file, then the cross-run index file, each commit fsynced; PostgreSQL:
a new authenticated connection per statement), and implement ``store_event_batch`` as a
loop over single events. At 1,000 models that bookkeeping took four times as long as
the ``dbt build`` it recorded.

The classes here are Dagster's own storages with the write path replaced; everything
they read, and the tables they write, are Dagster's:

- ``sqlite.SqliteBatchedEventLogStorage``: an event (or a batch) is one transaction in
  the run's file and one in the index file; connections are reused; in WAL mode commits
  use ``synchronous=NORMAL`` except at durability points (see below).
- ``postgres.PostgresBatchedEventLogStorage``: an event (or a batch) is one transaction
  on one pooled connection; ``synchronous_commit`` is off for it except at durability
  points.
- ``sqlite.DagsterSqliteBatchedStorage`` / ``postgres.DagsterPostgresBatchedStorage``: Dagster's
  composite storages with the event log swapped, for a ``storage: custom:`` section.
- ``instance.BatchedEventsInstance``: a ``DagsterInstance`` that hands Dagster's event
  batches (the planned materializations and check evaluations written when a run is
  created) to ``store_event_batch`` without the ``DAGSTER_EVENT_BATCH_SIZE`` variable
  having to be set in every process that creates runs (webserver, daemon), whose
  default storage is ``DagsterSqliteBatchedStorage`` under the instance's own directory,
  and which can hold a step's events and store them a batch at a time
  (``grouped_events``: the production dbt step, reporting thousands of events after dbt
  has finished, stores them a topological generation of assets at a time).

What is traded (the same for both): a ``store_event`` that returned is committed, so a
killed run process loses nothing it stored. Events a step holds in a group are stored
when the group is flushed (before any read of asset records, before a run status change
or a step's end, and when the step's block ends, however it ends); a run process killed
while holding some loses those, exactly as if the step had not reported them yet, and
never anything stored before them. What an operating-system crash or power
loss (SQLite) or a database-server crash (PostgreSQL) may lose is the last moments of
events committed without a flush to disk, never a run status: run and step boundaries
(run started/succeeded/failed/canceled, step succeeded/failed) are durability points
written with a full flush, which also flushes every event committed before them, and
run records live in the run storage, which is Dagster's and unchanged.

Everything here reaches into Dagster's private code, so all of it sits behind one guard
(``guard.py``: the names touched, the dagster versions tested). With
``DEFER_ORCH_INTERNALS=off``, or on a dagster version not in the tested list, the same
``dagster.yaml`` gives Dagster's stock storages and batching, the production step takes
Dagster's own path (``step_context.py``), and one log line says what was switched off.
"""
