"""Differential tests: the batched storages (``defer_orchestration/dagster_storage/``) write
exactly the rows Dagster's stock storages write, in every table of Dagster's event-log
schema, and with the guard off (``DEFER_ORCH_INTERNALS=off``, or a Dagster version not in
the tested list) the repository's instance configuration *is* Dagster's stock storage.

The same small jobs (plain Python assets, no dbt) run with the same run ids once on a
stock instance and once on the instance under test; every table of
``SqlEventLogStorageMetadata`` (so a table a future Dagster adds is compared too) is read
from every database (SQLite: the index and each run's file; PostgreSQL: the database) and
compared row by row, in insertion order, with ids, times and durations normalised. A
field Dagster starts writing that the batched write path drops shows up here as a
difference, not as silently missing data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.storage.event_log.schema import SqlEventLogStorageMetadata
from dagster_internals import needs_internals

from defer_orchestration.dagster_storage import guard
from defer_orchestration.dagster_storage.instance import BatchedEventsInstance
from defer_orchestration.lib import internals

REPO_ROOT = Path(__file__).resolve().parents[1]
SQLITE_YAML = REPO_ROOT / ".dagster_home" / "dagster.yaml"
POSTGRES_YAML = REPO_ROOT / "deploy" / "postgres" / "dagster.yaml"
STORAGES = ("sqlite", pytest.param("postgres", marks=pytest.mark.postgres))
INTERNALS_LOGGER = "defer_orchestration.internals"


@pytest.fixture(autouse=True)
def _fresh_guard_decision() -> Iterator[None]:
    """Each test decides (and reports) anew; the next test too, whatever this one set."""
    guard.forget_decision()
    internals.reset_reports()
    yield
    guard.forget_decision()
    internals.reset_reports()


# Instances ---------------------------------------------------------------------------------


@contextmanager
def _instance(tmp: Path, storage: str, kind: str, request: pytest.FixtureRequest) -> Iterator[dg.DagsterInstance]:
    """``kind`` "stock": Dagster's own storage of that sort; "ours": the repository's
    ``dagster.yaml`` (``BatchedEventsInstance``, the batched storages)."""
    home = tmp / f"{storage}_{kind}_{uuid.uuid4().hex[:6]}"
    home.mkdir(parents=True)
    database = None
    if storage == "postgres":
        server = request.getfixturevalue("pg_server")
        database = server.create_database()
        env = server.dagster_env(database)
        pg = {"hostname": env["DAGSTER_PG_HOST"], "port": int(env["DAGSTER_PG_PORT"]),
              "username": env["DAGSTER_PG_USER"], "password": env["DAGSTER_PG_PASSWORD"],
              "db_name": database, "scheme": "postgresql+psycopg2"}
        config = yaml.safe_load(POSTGRES_YAML.read_text(encoding="utf-8"))
        config["storage"]["custom"]["config"] = {"postgres_db": pg}
        if kind == "stock":
            config = {"storage": {"postgres": {"postgres_db": pg}}}
    else:
        config = {} if kind == "stock" else yaml.safe_load(SQLITE_YAML.read_text(encoding="utf-8"))
    config["telemetry"] = {"enabled": False}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance
    finally:
        if database is not None:
            request.getfixturevalue("pg_server").drop_database(database)


# Scenarios: plain Python assets, fixed run ids ------------------------------------------------


def _run_id(n: int) -> str:
    return str(uuid.UUID(int=n))


def _execute(instance: dg.DagsterInstance, assets: list[Any], run_id: str, *, ok: bool = True,
             partition_key: str | None = None) -> dg.ExecuteInProcessResult:
    job = dg.Definitions(assets=assets, jobs=[dg.define_asset_job("job")]).resolve_job_def("job")
    result = job.execute_in_process(instance=instance, run_id=run_id, partition_key=partition_key, raise_on_error=False)
    assert result.success is ok, [e.message for e in result.all_events if e.is_failure]
    return result


def partitioned_asset(instance: dg.DagsterInstance) -> None:
    """Two partitions of a partitioned asset and its partitioned child, one of them twice."""
    parts = dg.StaticPartitionsDefinition(["2024-01", "2024-02"])

    @dg.asset(partitions_def=parts)
    def monthly(context):  # unannotated: this module has `from __future__ import annotations`
        return dg.MaterializeResult(metadata={"partition": context.partition_key, "rows": 7})

    @dg.asset(partitions_def=parts, deps=[monthly])
    def monthly_rollup(context):
        context.log_event(dg.AssetObservation("monthly", partition=context.partition_key, metadata={"seen": 1}))
        return dg.MaterializeResult()

    for n, key in enumerate(("2024-01", "2024-02", "2024-01"), start=1):
        result = _execute(instance, [monthly, monthly_rollup], _run_id(n), partition_key=key)
        assert [m.partition for m in result.asset_materializations_for_node("monthly")] == [key]


def failed_step(instance: dg.DagsterInstance) -> None:
    """A step that fails (with a ``Failure``'s metadata) and the child it skips."""

    @dg.asset
    def sound():
        return dg.MaterializeResult()

    @dg.asset(deps=[sound])
    def broken():
        raise dg.Failure(description="the source is gone", metadata={"attempted": 3})

    @dg.asset(deps=[broken])
    def after_broken():
        return dg.MaterializeResult()

    result = _execute(instance, [sound, broken, after_broken], _run_id(11), ok=False)
    assert [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"] == ["broken"]


def observations(instance: dg.DagsterInstance) -> None:
    """Observations logged by a step (of itself, of another asset, with tags) and one
    reported outside any run."""

    @dg.asset
    def observer(context):
        context.log_event(dg.AssetObservation("observer", metadata={"n": 1}))
        context.log_event(dg.AssetObservation("elsewhere", metadata={"text": "x"}, tags={"t": "1"}))
        return dg.MaterializeResult(data_version=dg.DataVersion("d1"))

    _execute(instance, [observer], _run_id(21))
    _execute(instance, [observer], _run_id(22))
    instance.report_runless_asset_event(dg.AssetObservation("elsewhere", metadata={"runless": True}))


def blocking_check_failure(instance: dg.DagsterInstance) -> None:
    """An asset whose blocking check fails (its child is not run), a passing non-blocking
    check, a warning, and a check that never runs (planned, then resolved as skipped)."""

    @dg.asset(check_specs=[dg.AssetCheckSpec("gate", asset="guarded", blocking=True),
                           dg.AssetCheckSpec("soft", asset="guarded")])
    def guarded():
        return dg.MaterializeResult(check_results=[
            dg.AssetCheckResult(check_name="gate", passed=False, metadata={"bad_rows": 2}),
            dg.AssetCheckResult(check_name="soft", passed=False, severity=dg.AssetCheckSeverity.WARN),
        ])

    @dg.asset(deps=[guarded], check_specs=[dg.AssetCheckSpec("never", asset="after_gate")])
    def after_gate():
        return dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name="never", passed=True)])

    result = _execute(instance, [guarded, after_gate], _run_id(31), ok=False)
    assert not result.asset_materializations_for_node("after_gate")
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {"gate": False, "soft": False}


def retried_step(instance: dg.DagsterInstance) -> None:
    """A step that fails its first attempt and succeeds on its retry (``RetryPolicy``), and one
    that asks for a retry itself (``RetryRequested``)."""

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=1))
    def flaky(context):
        if context.retry_number == 0:
            raise RuntimeError("first attempt fails")
        return dg.MaterializeResult(metadata={"attempt": context.retry_number})

    @dg.asset(deps=[flaky])
    def asks_again(context):
        if context.retry_number == 0:
            raise dg.RetryRequested(max_retries=1)
        return dg.MaterializeResult()

    result = _execute(instance, [flaky, asks_again], _run_id(41))
    kinds = [e.event_type_value for e in result.all_events]
    assert kinds.count("STEP_UP_FOR_RETRY") == 2 and kinds.count("STEP_RESTARTED") == 2


SCENARIOS: dict[str, Callable[[dg.DagsterInstance], None]] = {
    f.__name__: f for f in (partitioned_asset, failed_step, observations, blocking_check_failure, retried_step)
}


# Every table, row by row, normalised ----------------------------------------------------------

_DURATION = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|s|sec|seconds)\b")
_VOLATILE_KEYS = {"timestamp", "duration_ms", "start_time", "end_time", "elapsed_time"}
_RANDOM_KEYS = {"log_key"}  # a random name per process (captured logs)
_ID_KEYS = {"storage_id", "event_id"}


def _normalise_json(value: Any, ids: dict[int, str], home: str) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if (key in _VOLATILE_KEYS or key.endswith("_timestamp")) and isinstance(item, (int, float)):
                out[key] = "<time>"
            elif key in _RANDOM_KEYS and item:
                out[key] = "<random>"
            elif (key in _ID_KEYS or key.endswith("storage_id")) and isinstance(item, int):
                out[key] = ids.get(item, f"<unknown id {item}>")
            else:
                out[key] = _normalise_json(item, ids, home)
        return out
    if isinstance(value, list):
        return [_normalise_json(item, ids, home) for item in value]
    if isinstance(value, str):
        return _DURATION.sub("<duration>", value.replace(home, "<home>"))
    return value


def _normalise_value(column: sa.Column, value: Any, ids: dict[int, str], home: str) -> Any:
    if value is None:
        return None
    if isinstance(column.type, (sa.DateTime, sa.TIMESTAMP)) or column.name.endswith("_timestamp"):
        return "<time>"
    if column.name == "event_id" or column.name.endswith("storage_id"):
        return ids.get(int(value), f"<unknown id {value}>")
    if isinstance(value, str) and value[:1] in "{[":
        try:
            parsed = json.loads(value)
        except ValueError:
            pass
        else:
            return json.dumps(_normalise_json(parsed, ids, home), sort_keys=True)
    if isinstance(value, str):
        return _DURATION.sub("<duration>", value.replace(home, "<home>"))
    return value


def _database_rows(engine: sa.engine.Engine, home: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of Dagster's event-log schema, row by row in id order, normalised; an
    event's storage id becomes its position in ``event_logs`` wherever it is referred to."""
    tables = {}
    with engine.connect() as conn:
        existing = set(sa.inspect(conn).get_table_names())
        event_ids = [row[0] for row in conn.execute(sa.text("select id from event_logs order by id"))]
        ids = {event_id: f"<event {i}>" for i, event_id in enumerate(event_ids)}
        for table in SqlEventLogStorageMetadata.sorted_tables:
            if table.name not in existing:
                tables[table.name] = [("<table missing>",)]
                continue
            columns = [col for col in table.columns if col.name != "id"]
            rows = conn.execute(sa.select(*columns).order_by(table.c.id)).fetchall()
            tables[table.name] = [
                tuple(_normalise_value(col, value, ids, home) for col, value in zip(columns, row)) for row in rows
            ]
    return tables


def _all_rows(instance: dg.DagsterInstance) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
    """Per database (SQLite: ``index`` and each run's file; PostgreSQL: ``database``), its tables."""
    storage = instance.event_log_storage
    home = instance.root_directory
    if hasattr(storage, "conn_string_for_shard"):  # every file Dagster's SQLite storage made
        files = sorted(Path(home, "history", "runs").glob("*.db"))
        assert files, "no SQLite event log files where both configurations keep them"
        shards = [path.name.removesuffix(".db") for path in files]  # "" holds runless events
        urls = {shard: storage.conn_string_for_shard(shard) for shard in shards}
    else:
        urls = {"database": storage.postgres_url}
    found = {}
    for name, url in urls.items():
        engine = sa.create_engine(url)
        try:
            found[name] = _database_rows(engine, home)
        finally:
            engine.dispose()
    return found


def _first_difference(ours: list[Any], stock: list[Any]) -> str:
    """Where two tables' normalised rows first differ, down to the JSON field."""
    if len(ours) != len(stock):
        return f"{len(ours)} rows where Dagster's storage has {len(stock)}"
    for i, (mine, theirs) in enumerate(zip(ours, stock)):
        for j, (a, b) in enumerate(zip(mine, theirs)):
            if a != b:
                try:
                    flat_a, flat_b = _flatten(json.loads(a)), _flatten(json.loads(b))
                except (TypeError, ValueError):
                    return f"row {i}, column {j}: {a!r} where Dagster's storage has {b!r}"
                keys = sorted(k for k in set(flat_a) | set(flat_b) if flat_a.get(k) != flat_b.get(k))
                return f"row {i}, column {j}: " + "; ".join(
                    f"{k}={flat_a.get(k)!r} where Dagster's storage has {flat_b.get(k)!r}" for k in keys[:5]
                )
    return "same rows"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def _compare(ours: dict[str, dict[str, list[Any]]], stock: dict[str, dict[str, list[Any]]]) -> None:
    assert sorted(ours) == sorted(stock)
    for database in stock:
        assert sorted(ours[database]) == sorted(stock[database])
        for table, rows in stock[database].items():
            assert ours[database][table] == rows, (
                f"{database}: table {table} differs from Dagster's stock storage: "
                f"{_first_difference(ours[database][table], rows)}"
            )


def _run_everywhere(tmp: Path, storage: str, request: pytest.FixtureRequest, scenarios: list[str],
                    *, ours_type: Callable[[dg.DagsterInstance], None]) -> dict[str, Any]:
    """Run ``scenarios`` on a stock instance and on ours; compare every table; return the rows."""
    rows = {}
    for kind in ("stock", "ours"):
        with _instance(tmp, storage, kind, request) as instance:
            if kind == "ours":
                ours_type(instance)
            else:
                assert "Batched" not in type(instance.event_log_storage).__name__
            for name in scenarios:
                SCENARIOS[name](instance)
            rows[kind] = _all_rows(instance)
    _compare(rows["ours"], rows["stock"])
    return rows["stock"]


def _batched(instance: dg.DagsterInstance) -> None:
    assert type(instance) is BatchedEventsInstance
    assert "Batched" in type(instance.event_log_storage).__name__


def _stock_storage(instance: dg.DagsterInstance) -> None:
    """The repository's instance class, with the guard off: Dagster's own storage classes."""
    assert type(instance) is BatchedEventsInstance
    storage = instance.event_log_storage
    assert type(storage).__module__.startswith(("dagster.", "dagster_postgres.")), type(storage)
    assert instance._get_event_batch_size() == 0  # Dagster's default: DAGSTER_EVENT_BATCH_SIZE unset


# Tests --------------------------------------------------------------------------------------


@needs_internals
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("storage", STORAGES)
def test_batched_storage_writes_every_table_as_dagster_does(
    storage: str, scenario: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scenario on Dagster's stock storage and on the batched one: every event-log
    table, in every database, holds the same rows (ids, times and durations normalised)."""
    monkeypatch.delenv(internals.ENV_SWITCH, raising=False)
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    stock = _run_everywhere(tmp_path, storage, request, [scenario], ours_type=_batched)
    assert any(stock[db]["event_logs"] for db in stock), "nothing was stored: nothing was compared"
    # What the scenario was for is there (columns without `id`: see the schema).
    index = stock["index" if storage == "sqlite" else "database"]
    kinds = [row[2] for row in index["event_logs"]]
    if scenario == "partitioned_asset":
        partitions = [row[6] for row in index["event_logs"] if row[2] == "ASSET_MATERIALIZATION"]
        assert sorted(partitions) == ["2024-01"] * 4 + ["2024-02"] * 2
    elif scenario == "observations":
        assert kinds.count("ASSET_OBSERVATION") == 5
        assert {row[0] for row in index["asset_keys"]} == {'["observer"]', '["elsewhere"]'}
    elif scenario == "blocking_check_failure":
        statuses = {row[1]: row[4] for row in index["asset_check_executions"]}  # check_name -> status
        assert statuses == {"gate": "FAILED", "soft": "FAILED", "never": "PLANNED"}
    elif scenario == "failed_step":
        assert "ASSET_FAILED_TO_MATERIALIZE" in kinds or kinds.count("ASSET_MATERIALIZATION") == 1
    elif scenario == "retried_step":
        run_log = stock[_run_id(41)] if storage == "sqlite" else index
        assert [row[2] for row in run_log["event_logs"]].count("STEP_UP_FOR_RETRY") == 2


def _switched_off_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == INTERNALS_LOGGER and "switched off" in r.getMessage()]


@pytest.mark.parametrize("storage", STORAGES)
def test_with_internals_off_the_instance_stores_events_as_dagster_does(
    storage: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``DEFER_ORCH_INTERNALS=off``: the repository's ``dagster.yaml`` loads, its instance
    uses Dagster's own storage classes and batch size, stores exactly the rows of Dagster's
    stock storage, and one line says what was switched off."""
    monkeypatch.setenv(internals.ENV_SWITCH, "off")
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    caplog.set_level(logging.WARNING, logger=INTERNALS_LOGGER)
    # Off, the storage classes are Dagster's own (asserted): one scenario shows the rows agree.
    _run_everywhere(tmp_path, storage, request, ["blocking_check_failure"], ours_type=_stock_storage)
    [line] = _switched_off_lines(caplog)
    assert "DEFER_ORCH_INTERNALS=off" in line and "_get_event_batch_size" in line


@pytest.mark.parametrize("storage", STORAGES)
def test_an_untested_dagster_version_gets_dagsters_own_storage(
    storage: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dagster version not in the tested list: the same fallback as the switch, and the
    line names the installed version."""
    monkeypatch.delenv(internals.ENV_SWITCH, raising=False)
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    monkeypatch.setattr(guard, "DAGSTER_INTERNALS", dataclasses.replace(guard.DAGSTER_INTERNALS, tested=("0.0.1",)))
    caplog.set_level(logging.WARNING, logger=INTERNALS_LOGGER)
    _run_everywhere(tmp_path, storage, request, ["failed_step"], ours_type=_stock_storage)
    [line] = _switched_off_lines(caplog)
    assert f"dagster {dg.__version__} is not among the versions it was tested with (0.0.1)" in line


@pytest.mark.parametrize("storage", STORAGES)
def test_batched_storage_classes_built_directly_delegate_to_dagster_when_off(
    storage: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``storage: custom:`` or ``event_log_storage`` section naming the batched classes
    directly: with the guard off they write through Dagster's own ``store_event`` (one
    commit per event and table, as stock), never their batched path."""
    from defer_orchestration.dagster_storage import postgres as pg_storage
    from defer_orchestration.dagster_storage import sqlite as sqlite_storage

    monkeypatch.setenv(internals.ENV_SWITCH, "off")
    if storage == "sqlite":
        event_log = sqlite_storage.SqliteBatchedEventLogStorage(str(tmp_path / "runs"))
        composite = sqlite_storage.DagsterSqliteBatchedStorage(str(tmp_path / "home"))
    else:
        server = request.getfixturevalue("pg_server")
        database = server.create_database()
        env = server.dagster_env(database)
        url = (f"postgresql+psycopg2://{env['DAGSTER_PG_USER']}:{env['DAGSTER_PG_PASSWORD']}"
               f"@{env['DAGSTER_PG_HOST']}:{env['DAGSTER_PG_PORT']}/{database}")
        event_log = pg_storage.PostgresBatchedEventLogStorage(url)
        composite = pg_storage.DagsterPostgresBatchedStorage(url)
        assert isinstance(event_log._engine.pool, sa.pool.NullPool)  # dagster-postgres' own engine
    try:
        assert "Batched" not in type(composite.event_log_storage).__name__
        monkeypatch.setattr(event_log, "_store_in_index" if storage == "sqlite" else "_store",
                            lambda *a, **k: pytest.fail("the batched write path ran with the guard off"))
        with dg.instance_for_test() as scratch:
            run = scratch.create_run_for_job(dg.GraphDefinition("g").to_job(), run_id=None)
        entries = [
            dg.EventLogEntry(
                error_info=None, level=10, user_message="", run_id=run.run_id, timestamp=time.time(),
                dagster_event=dg.DagsterEvent(
                    event_type_value="ASSET_MATERIALIZATION", job_name="g",
                    event_specific_data=_materialization_data(f"asset_{i}"),
                ),
            )
            for i in range(3)
        ]
        event_log.store_event_batch(entries)
        event_log.store_event(entries[0])
        assert len(event_log.get_logs_for_run(run.run_id)) == 4
        # (dagster-postgres' own batch updates the asset table for a batch's last event only.)
        assert dg.AssetKey("asset_2") in event_log.get_asset_keys()
    finally:
        event_log.dispose()
        composite.event_log_storage.dispose()
        if storage == "postgres":
            server.drop_database(database)


def _materialization_data(key: str) -> Any:
    from dagster._core.events import StepMaterializationData

    return StepMaterializationData(dg.AssetMaterialization(key))


@needs_internals
def test_the_comparison_catches_a_write_the_batched_path_drops(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drift these tests exist for: a row Dagster writes that the batched path does not
    (here, an asset event's tags, as if Dagster had moved them to a new helper) fails the
    comparison, naming the database and table (here the index's tags, and the next run's
    events already, whose data-version lineage Dagster reads from those tags)."""
    from defer_orchestration.dagster_storage.sqlite import SqliteBatchedEventLogStorage

    monkeypatch.delenv(internals.ENV_SWITCH, raising=False)
    monkeypatch.setattr(SqliteBatchedEventLogStorage, "_store_asset_event_tags", lambda *args: None)
    with pytest.raises(AssertionError, match="table (asset_event_tags|event_logs) differs from Dagster's stock storage"):
        _run_everywhere(tmp_path, "sqlite", request, ["failed_step"], ours_type=_batched)


_MOVED_NAMES = """
import importlib, types
# Modules as a later Dagster might have them: without the private names the guarded
# modules import (Dagster's own code keeps its names: the stand-ins serve the import only).
MOVED = {"dagster._core.events": {"ASSET_EVENTS", "DagsterEventBatchMetadata"},
         "dagster._core.storage.event_log.schema": {"SqlEventLogStorageTable"},
         "dagster._core.storage.event_log.sqlite.sqlite_event_log": {"INDEX_SHARD_NAME"},
         "dagster_postgres.event_log.event_log": {"CHANNEL_NAME"}}
import dagster, dagster_postgres, dagster._core.storage.event_log, dagster._core.storage.sqlite_storage  # noqa
real = {name: importlib.import_module(name) for name in MOVED}
for name, gone in MOVED.items():
    stand_in = types.ModuleType(name)
    stand_in.__dict__.update({k: v for k, v in vars(real[name]).items() if k not in gone})
    sys.modules[name] = stand_in
from defer_orchestration.dagster_storage import instance, postgres, sqlite, step_context  # noqa: F401
sys.modules.update(real)
import dagster as dg
with dg.DagsterInstance.from_config(sys.argv[1]) as inst:
    assert type(inst).__name__ == "BatchedEventsInstance", type(inst)
    assert type(inst.event_log_storage).__module__.startswith("dagster."), type(inst.event_log_storage)

    @dg.asset
    def one():
        return dg.MaterializeResult()

    assert dg.materialize([one], instance=inst).success
    assert inst.fetch_materializations(dg.AssetKey("one"), limit=1).records
print("stock")
"""


def test_a_dagster_that_moved_the_private_names_still_loads_the_configuration(tmp_path: Path) -> None:
    """The guarded modules import with the private names they use gone (as a Dagster that
    moved them would be: not a tested version, so the guard is off); the repository's
    ``dagster.yaml`` loads, and runs are stored by Dagster's own storage."""
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(SQLITE_YAML.read_text(encoding="utf-8"), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", "import sys\n" + _MOVED_NAMES, str(home)],
        env={**__import__("os").environ, internals.ENV_SWITCH: "off", "DAGSTER_HOME": str(home)},
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("stock"), done.stderr[-3000:]
    assert "switched off (DEFER_ORCH_INTERNALS=off is set)" in done.stderr
