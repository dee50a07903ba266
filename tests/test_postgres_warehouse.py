"""The PostgreSQL warehouse's bad days, on a real server: a wrong password, the server
down (before a run, and in the middle of its dbt build), a branch schema dropped by hand
between two runs. Each ends in a clear result and nothing written to production."""

from __future__ import annotations

import re
import threading
import time

import pytest

from helpers import push_branch, run_branch, step_metadata

from defer_orchestration.definitions import build_definitions
from defer_orchestration.lib.errors import WarehouseError
from defer_orchestration.lib.schema_names import branch_schema_name, quote_identifier
from defer_orchestration.resources import DeferOrchSettings
from defer_orchestration.warehouse import open_warehouse

pytestmark = [pytest.mark.dbt, pytest.mark.postgres]

MODEL = "dbt_project/models/marts/customers.sql"


def _prod_rows(env) -> int:
    with env.settings.warehouse().connect(read_only=True) as conn:
        return conn.row_count("prod", "customers")


def test_a_wrong_password_fails_the_run_without_showing_it(postgres_prod_env, tmp_path) -> None:
    env = postgres_prod_env
    branch = "feature/pg-wrong-password"
    push_branch(env.repo, branch, {MODEL: (env.repo / MODEL).read_text() + "\n-- x\n"}, tmp_path)
    fields = ("home", "dbt_project_dir", "warehouse_kind", "pg_host", "pg_port", "pg_user", "pg_database")
    wrong = DeferOrchSettings(**{f: getattr(env.settings, f) for f in fields}, pg_password="not-the-password")
    defs = build_definitions(wrong, env.defs.resources["branch_settings"])
    result = defs.resolve_job_def("branch_ci_job").execute_in_process(
        run_config={"ops": {"branch_build": {"config": {"branch": branch}}}}, instance=env.instance, raise_on_error=False
    )
    assert not result.success
    message = step_metadata(result)["__failure__"]
    assert "could not connect to PostgreSQL database" in message and f":{wrong.pg_port}" in message
    assert "PGPASSWORD" in message and "not-the-password" not in message


def test_the_server_down_fails_the_run_naming_host_and_port(postgres_prod_env, pg_server, tmp_path) -> None:
    env = postgres_prod_env
    branch = "feature/pg-down"
    push_branch(env.repo, branch, {MODEL: (env.repo / MODEL).read_text() + "\n-- y\n"}, tmp_path)
    before = _prod_rows(env)
    pg_server.stop()
    try:
        result = run_branch(env, branch)
        with pytest.raises(WarehouseError, match=rf"{pg_server.host}:{pg_server.port}.*Check that the server is running"):
            with env.settings.warehouse().connect():
                pass
    finally:
        pg_server.start()
    assert not result.success
    assert f"{pg_server.host}:{pg_server.port}" in step_metadata(result)["__failure__"]
    assert _prod_rows(env) == before


# A leaf whose branch build sleeps inside the warehouse, so the server can be stopped while
# dbt builds it; long enough never to finish on its own (the shutdown ends it).
SLOW_LEAF = "dbt_project/models/marts/daily_revenue.sql"
SLOW_BRANCH = "feature/pg-down-mid-run"
SLEEP_S = 120


def _prod_fingerprint(env) -> dict[str, tuple[str, int]]:
    """Every relation of ``prod``: name -> (type, row count)."""
    with env.settings.warehouse().connect(read_only=True) as conn:
        return {
            name: (kind, conn.row_count("prod", name))
            for name, kind in conn.list_relations("prod").items()
        }


def _sleeping_queries(pg_server, dbname: str) -> int:
    """Statements of ``dbname`` inside ``pg_sleep`` right now (found by wait event: the
    query text in pg_stat_activity is cut at 1 kB, before a model's end)."""
    [(count,)] = pg_server.admin_sql(
        "select count(*) from pg_stat_activity where datname = %s and state = 'active' "
        "and wait_event = 'PgSleep'",
        (dbname,),
    )
    return int(count)


@pytest.fixture(scope="module")
def down_mid_build(postgres_prod_env, pg_server, tmp_path_factory) -> dict:
    """A branch run whose dbt build is inside the slow leaf when the server stops (a
    watcher thread polls pg_stat_activity); the server is started again afterwards."""
    env = postgres_prod_env
    final = "\n)\n\nselect * from daily"
    model = (env.repo / SLOW_LEAF).read_text()
    assert final in model, f"{SLOW_LEAF} no longer ends with {final!r}"
    slow = model.replace(
        final,
        f"\n),\n\nslow as (select 1 as one from pg_sleep({SLEEP_S}))\n\n"
        "select daily.* from daily cross join slow",
    )
    push_branch(env.repo, SLOW_BRANCH, {SLOW_LEAF: slow}, tmp_path_factory.mktemp("pg_down"))
    before = _prod_fingerprint(env)
    dbname = env.settings.pg_database
    run_over = threading.Event()
    stopped_after: list[float] = []
    watcher_errors: list[BaseException] = []
    started = time.monotonic()

    def stop_the_server_when_dbt_sleeps() -> None:
        try:
            while not run_over.is_set():
                if _sleeping_queries(pg_server, dbname):
                    stopped_after.append(time.monotonic() - started)
                    pg_server.stop()
                    return
                time.sleep(0.2)
        except BaseException as exc:  # reported by the tests, not lost in the thread
            watcher_errors.append(exc)

    watcher = threading.Thread(target=stop_the_server_when_dbt_sleeps, daemon=True)
    watcher.start()
    try:
        result = run_branch(env, SLOW_BRANCH)
    finally:
        run_over.set()
        watcher.join(timeout=60)
        # The session's server must serve the tests after this one, whatever happened.
        pg_server.start()
    return {
        "result": result,
        "seconds": time.monotonic() - started,
        "stopped_after": stopped_after,
        "watcher_errors": watcher_errors,
        "prod_before": before,
    }


def test_the_server_going_down_mid_build_fails_the_run_and_leaves_prod_alone(
    postgres_prod_env, pg_server, down_mid_build
) -> None:
    env = postgres_prod_env
    assert not down_mid_build["watcher_errors"], down_mid_build["watcher_errors"]
    assert down_mid_build["stopped_after"], "the run ended before dbt reached the slow model"
    # The shutdown ended the run, not the model's sleep.
    assert down_mid_build["seconds"] < SLEEP_S - 30, down_mid_build
    result = down_mid_build["result"]
    assert not result.success
    failure = step_metadata(result)
    # dbt saw the server go (libpq's words for a shutdown under a running statement).
    lost = r"server closed the connection unexpectedly|terminating connection due to administrator"
    assert re.search(lost, str(failure["__failure__"])), failure
    # The server is back, production is exactly as it was, nothing half-built remains.
    assert pg_server.running()
    assert _prod_fingerprint(env) == down_mid_build["prod_before"]
    with env.settings.warehouse().connect(read_only=True) as conn:
        assert conn.list_relations(branch_schema_name(SLOW_BRANCH)) == {}


def test_the_server_going_down_mid_build_says_what_happened_and_what_to_do(
    pg_server, down_mid_build
) -> None:
    message = step_metadata(down_mid_build["result"])["__failure__"]
    assert f"{pg_server.host}:{pg_server.port}" in message, message
    assert re.search(r"connection|server", message, re.IGNORECASE), message
    assert re.search(r"relaunch|launch .*again|re-?run", message, re.IGNORECASE), message
    assert "Fix them and push again" not in message, message


def test_a_branch_schema_dropped_by_hand_is_rebuilt_by_the_next_run(postgres_prod_env, tmp_path) -> None:
    env = postgres_prod_env
    branch = "feature/pg-dropped"
    push_branch(env.repo, branch, {MODEL: (env.repo / MODEL).read_text() + "\n-- z\n"}, tmp_path)
    assert run_branch(env, branch).success
    schema = branch_schema_name(branch)
    with env.settings.warehouse().connect() as conn:
        conn.execute(f"drop schema {quote_identifier(schema)} cascade")
    push_branch(env.repo, branch, {MODEL: (env.repo / MODEL).read_text() + "\n-- z again\n"}, tmp_path)
    again = run_branch(env, branch)
    assert again.success, step_metadata(again).get("__failure__")
    with env.settings.warehouse().connect(read_only=True) as conn:
        assert "customers" in conn.list_relations(schema)


def test_a_read_only_connection_refuses_writes(postgres_prod_env) -> None:
    with postgres_prod_env.settings.warehouse().connect(read_only=True) as conn:
        with pytest.raises(Exception, match="read-only"):
            conn.execute("create table prod.should_not_exist as select 1 as x")


def test_configuration_errors_name_the_variables(tmp_path) -> None:
    from defer_orchestration.lib.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="PGUSER and PGDATABASE"):
        open_warehouse("postgres", home=tmp_path, lock_timeout_s=1, postgres={})
    with pytest.raises(ConfigurationError, match="PGPORT"):
        open_warehouse("postgres", home=tmp_path, lock_timeout_s=1, postgres={"user": "u", "dbname": "d", "port": "x"})
    house = open_warehouse(
        "postgres", home=tmp_path, lock_timeout_s=1,
        postgres={"dsn": "postgresql://u:secret@db.example:6543/analytics"},
    )
    assert (house.host, house.port, house.user, house.dbname) == ("db.example", 6543, "u", "analytics")
    assert "secret" not in repr(house) and "secret" not in house.describe()
    assert house.dbt_output("prod", threads=2)["password"].startswith("{{ env_var(")
    assert not house.serialise_writers
