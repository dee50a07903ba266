"""The PostgreSQL warehouse's bad days, on a real server: a wrong password, the server
down, a branch schema dropped by hand between two runs. Each ends in a clear result and
nothing written to production."""

from __future__ import annotations

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
