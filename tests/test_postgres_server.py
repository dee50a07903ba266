"""The throwaway PostgreSQL server of the tests (tests/postgres_server.py) and the Dagster
instance of deploy/postgres/dagster.yaml, on a real server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from postgres_fixtures import _server_parent
from postgres_server import PgServer, PgServerError, postgres_server, remove_cluster

pytestmark = pytest.mark.postgres

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY_YAML = REPO_ROOT / "deploy" / "postgres" / "dagster.yaml"


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """An empty directory the ``postgres`` OS user can reach (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="defer_orch_pg_test_", dir=_server_parent()))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by init) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _exited(pid: int, timeout: float = 5.0) -> bool:
    """Wait up to ``timeout`` for ``pid`` to be gone."""
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _pg_ctl_status(server: PgServer, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``pg_ctl status`` as the server's OS user (pg_ctl refuses to run as root)."""
    argv = [str(server.bin_dir / "pg_ctl"), "status", "-D", str(data_dir)]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/")


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (e.g. a data directory)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def test_defer_owns_warehouse_and_creates_schemas_without_being_superuser(
    pg_database: PgServer,
) -> None:
    with pg_database.connect() as conn, conn.cursor() as cur:
        cur.execute("create schema prod")
        cur.execute("create table prod.t as select 1 as x")
        cur.execute("select current_user, current_database(), (select sum(x) from prod.t)")
        assert cur.fetchone() == ("defer", pg_database.dbname, 1)
    conn.close()
    [(superuser, createdb)] = pg_database.admin_sql(
        "select rolsuper, rolcreatedb from pg_roles where rolname = %s", (pg_database.user,)
    )
    assert (superuser, createdb) == (False, False)
    owners = pg_database.admin_sql(
        "select d.datname, pg_get_userbyid(d.datdba) from pg_database d where datname in (%s, %s)",
        ("warehouse", pg_database.dbname),
    )
    assert dict(owners) == {"warehouse": "defer", pg_database.dbname: "defer"}


def test_databases_are_isolated_from_each_other(pg_server: PgServer) -> None:
    first = pg_server.for_database(pg_server.create_database())
    second = pg_server.for_database(pg_server.create_database())
    try:
        with first.connect() as conn, conn.cursor() as cur:
            cur.execute("create schema only_in_first")
        conn.close()
        with second.connect() as conn, conn.cursor() as cur:
            cur.execute("select nspname from pg_namespace where nspname = 'only_in_first'")
            assert cur.fetchall() == []
        conn.close()
    finally:
        pg_server.drop_database(first.dbname)
        pg_server.drop_database(second.dbname)
    assert not pg_server.admin_sql(
        "select 1 from pg_database where datname in (%s, %s)", (first.dbname, second.dbname)
    )


def test_env_and_dsn_are_enough_for_libpq(
    pg_database: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(pg_database.env()) == {"PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"}
    for key, value in pg_database.env().items():
        monkeypatch.setenv(key, value)
    from_env = psycopg2.connect("")  # libpq reads PG* only
    from_dsn = psycopg2.connect(pg_database.dsn())
    try:
        for conn in (from_env, from_dsn):
            with conn.cursor() as cur:
                cur.execute("select current_user, current_database(), inet_server_port()")
                assert cur.fetchone() == ("defer", pg_database.dbname, pg_database.port)
    finally:
        from_env.close()
        from_dsn.close()
    assert pg_database.password not in repr(pg_database)


def test_a_wrong_password_is_refused(pg_server: PgServer) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        pg_server.connect(password="not-" + pg_server.password)
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        pg_server.connect(user="postgres", password="postgres")  # nor the superuser


def test_stop_refuses_connections_and_start_brings_the_data_back(pg_database: PgServer) -> None:
    with pg_database.connect() as conn, conn.cursor() as cur:
        cur.execute("create schema survives")
    conn.close()
    pg_database.stop()
    assert not pg_database.running()
    with pytest.raises(psycopg2.OperationalError, match="Connection refused|could not connect"):
        pg_database.connect(connect_timeout=3)
    pg_database.start()
    assert pg_database.running()
    with pg_database.connect() as conn, conn.cursor() as cur:
        cur.execute("select count(*) from pg_namespace where nspname = 'survives'")
        assert cur.fetchone() == (1,)
    conn.close()


def test_exit_stops_the_server_and_removes_its_directory(server_dir: Path) -> None:
    with postgres_server(server_dir) as server:
        data_dir = server.data_dir
        running = _pg_ctl_status(server, data_dir)
        assert running.returncode == 0 and "server is running" in running.stdout, running
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        assert _alive(pid) and _processes_mentioning(str(data_dir))
    stopped = _pg_ctl_status(server, data_dir)
    assert stopped.returncode in (3, 4), stopped  # 3: not running, 4: no data directory
    assert _exited(pid)
    assert not _processes_mentioning(str(server_dir))
    assert not server_dir.exists()


def test_an_error_in_the_body_still_stops_and_removes(server_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with postgres_server(server_dir) as server:
            pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
            raise RuntimeError("boom")
    assert _exited(pid)
    assert not server_dir.exists()


def test_a_killed_owner_leaves_no_server_behind(server_dir: Path) -> None:
    """SIGKILL skips every ``finally``: the watchdog stops the server and removes its files."""
    code = (
        "import sys, time; from pathlib import Path; from postgres_server import postgres_server\n"
        "with postgres_server(Path(sys.argv[1])) as server:\n"
        "    print(server.data_dir, flush=True); time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code, str(server_dir)],
        cwd=Path(__file__).parent, stdout=subprocess.PIPE, text=True,
    )
    try:
        data_dir = Path(owner.stdout.readline().strip())
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        assert _alive(pid)
    finally:
        owner.kill()
        owner.wait()
    assert _exited(pid, timeout=30)
    deadline = time.monotonic() + 10
    while server_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server_dir.exists()


def test_a_directory_in_use_is_refused_and_remove_cluster_clears_a_leftover(
    server_dir: Path,
) -> None:
    (server_dir / "someone_elses.txt").write_text("keep me")
    with pytest.raises(PgServerError, match="not empty"):
        with postgres_server(server_dir):
            pass
    with pytest.raises(PgServerError, match="does not hold a throwaway cluster"):
        remove_cluster(server_dir)
    assert (server_dir / "someone_elses.txt").read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another OS user")
def test_as_root_a_directory_the_postgres_user_cannot_reach_is_named(tmp_path: Path) -> None:
    # pytest's tmp dirs live under /tmp/pytest-of-root, mode 0700.
    with pytest.raises(PgServerError, match="cannot reach .*/tmp or /dev/shm"):
        with postgres_server(tmp_path / "pg"):
            pass
    assert not (tmp_path / "pg").exists()


def test_deploy_dagster_yaml_puts_every_storage_on_postgres(
    pg_database: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/postgres/dagster.yaml, read with only the DAGSTER_PG_* variables set."""
    import dagster as dg
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    for key, value in pg_database.dagster_env().items():
        monkeypatch.setenv(key, value)
    shutil.copy(DEPLOY_YAML, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.run_queue_config.max_concurrent_runs >= 5  # prod + 4 branch builds
        assert instance.telemetry_enabled is False
        # The tables are where DAGSTER_PG_DB says, and a run round-trips through them.
        run = instance.create_run_for_job(dg.GraphDefinition("g").to_job(), run_id=None)
        assert instance.get_run_by_id(run.run_id) is not None
    tables = pg_database.admin_sql(
        "select table_name from information_schema.tables where table_schema = 'public'",
        dbname=pg_database.dbname,
    )
    assert {"runs", "event_logs", "jobs", "job_ticks"} <= {t for (t,) in tables}
