"""A throwaway PostgreSQL server, for the tests and for ``make dev-pg``.

``postgres_server(base_dir)`` runs ``initdb`` in ``base_dir``, starts the cluster on a free
loopback port and yields a :class:`PgServer` holding "production's credentials": the login
role ``defer`` (a generated password, no superuser) owning the database ``warehouse``, so
it can create schemas there. On exit the server is stopped and ``base_dir`` removed, also
when the body raised, and by a watchdog process when ours dies without cleaning up.

Authentication is a real server's over TCP: ``127.0.0.1`` asks for a password
(scram-sha-256), so a wrong one is refused. The unix socket lives in ``base_dir``, which
only the server's OS user (and root) can enter, and trusts its peer: that is how
:meth:`PgServer.admin_sql` acts as the superuser ``postgres`` without a password.

It is a test server: no fsync, no synchronous commit, no full-page writes. A machine crash
loses its data; nothing in it is meant to outlive the ``with`` block.

PostgreSQL refuses to run as root. When we are root, every server command runs as the OS
user ``postgres`` (``runuser -u postgres --``) and ``base_dir`` is chowned to it, so the
directories above ``base_dir`` must be searchable by that user: ``/tmp`` and ``/dev/shm``
are, pytest's ``/tmp/pytest-of-root`` (mode 0700) is not.

Not pytest-postgresql (10.0), although it is the usual fixture: it runs ``pg_ctl`` as the
current user with no way to name another, and a ``runuser`` wrapper passed as its
``pg_ctl`` only gets a trust-auth server going: with a password its ``initdb --pwfile``
reads a root-only temp file the ``postgres`` user cannot open, so the password-checking
server these tests need does not start as root.

Also a command line, for ``make dev-pg``::

    python tests/postgres_server.py --dir DIR [--dagster-db NAME] -- COMMAND [ARG...]

starts a server in ``DIR``, runs ``COMMAND`` with ``PG*`` (database ``warehouse``) and
``DAGSTER_PG_*`` (database ``NAME``) set, and stops the server when ``COMMAND`` ends.

No Dagster here: the module is imported by pytest plugins and by the command line alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:  # psycopg2 is imported when a connection is made, not with the module.
    from psycopg2.extensions import connection as PgConnection

HOST = "127.0.0.1"
USER = "defer"
DBNAME = "warehouse"
SUPERUSER = "postgres"
# The OS user that runs the server when we are root (Debian's package creates it).
SERVER_OS_USER = "postgres"
INSTALL_HINT = "run `bash tests/ensure_postgres.sh` (installs Debian's postgresql-15)"

# A test server: durability off (the cluster dies with the test), room for a Dagster stack's
# connections (webserver, daemon, code server, run workers, dbt threads).
SERVER_SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "logging_collector": "off",
    "password_encryption": "'scram-sha-256'",
}
# The kernel's limit on a unix socket path (sun_path) is 108 bytes including the NUL.
_SOCKET_PATH_MAX = 107
_START_ATTEMPTS = 3


class PgServerError(RuntimeError):
    """The throwaway server could not be set up, started or stopped; the message says why."""


class PgServerUnavailable(PgServerError):
    """No PostgreSQL server binaries here (``tests/ensure_postgres.sh`` installs them)."""


def find_bin_dir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Debian keeps them out of PATH, under ``/usr/lib/postgresql/<major>/bin``: the highest
    major installed wins; otherwise whatever ``initdb`` is on PATH.
    """
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else -1,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise PgServerUnavailable(
        f"no PostgreSQL server binaries (initdb) under /usr/lib/postgresql/*/bin or on PATH: "
        f"{INSTALL_HINT}"
    )


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now (taken again if we lose the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class _Cluster:
    """The files and processes of one cluster: what stop/start/status act on."""

    base_dir: Path
    bin_dir: Path
    run_as: str | None  # OS user running the server commands; None: ourselves
    port: int = 0

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgresql.log"

    def run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one of the server's programs, as the server's OS user."""
        argv = [str(self.bin_dir / program), *args]
        if self.run_as:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        # Our own PG* variables (a PgServer.env() exported by a caller) must not steer
        # initdb/pg_ctl; cwd is a directory the server's user may enter.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        done = subprocess.run(
            argv, cwd=self.base_dir, env=env, capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            raise PgServerError(
                f"{program} {' '.join(args)} failed (exit {done.returncode}):\n"
                f"{(done.stdout + done.stderr).strip()}\n{self.log_tail()}"
            )
        return done

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log, for error messages."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return f"--- {self.log_file} (last {lines} lines) ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )

    def running(self) -> bool:
        """``pg_ctl status``: 0 is running, 3 not running, 4 no (readable) data directory."""
        if not self.data_dir.is_dir():
            return False
        return self.run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if self.running():
            return
        self.run(
            "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_file),
            "-w", "-t", "60", "-s",
        )

    def stop(self) -> None:
        """Stop the server: fast shutdown, immediate if that hangs, SIGKILL as a last resort."""
        if not self.running():
            return
        for mode in ("fast", "immediate"):
            done = self.run(
                "pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "20", "-s",
                check=False,
            )
            if done.returncode == 0 and not self.running():
                return
        pid = self.postmaster_pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def postmaster_pid(self) -> int | None:
        """The server's process id from ``postmaster.pid`` (None when it is not running)."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if first.strip().isdigit() else None

    def configure(self, port: int) -> None:
        """Append our settings to postgresql.conf (later lines win, so a new port just appends)."""
        self.port = port
        settings = {
            **SERVER_SETTINGS,
            "port": str(port),
            "unix_socket_directories": f"'{self.socket_dir}'",
        }
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# --- tests/postgres_server.py ---\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())


@dataclass(frozen=True)
class PgServer:
    """A running throwaway server, seen as the login role ``user`` on database ``dbname``.

    ``for_database`` gives the same server bound to another database; ``stop``/``start``
    act on the server itself, whichever database a ``PgServer`` is bound to.
    """

    host: str
    port: int
    user: str
    password: str = field(repr=False)  # never in a repr, a log line or a test id
    dbname: str
    superuser: str
    _cluster: _Cluster = field(repr=False, compare=False)

    # Connection settings ------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The standard libpq variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE)."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": self.dbname,
        }

    def dagster_env(self, dbname: str | None = None) -> dict[str, str]:
        """The ``DAGSTER_PG_*`` variables ``deploy/postgres/dagster.yaml`` reads, for
        ``dbname`` (default: this server's database)."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": dbname or self.dbname,
        }

    def dsn(self) -> str:
        """A ``postgresql://`` URL for ``user`` on ``dbname`` (it holds the password)."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(self.dbname, safe='')}"
        )

    def connect(self, **overrides: Any) -> PgConnection:
        """A psycopg2 connection as ``user`` over TCP (password checked); ``overrides`` go to
        ``psycopg2.connect`` (e.g. ``password="wrong"``, ``dbname=...``)."""
        import psycopg2

        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": self.dbname,
            "connect_timeout": 10,
        }
        params.update(overrides)
        return psycopg2.connect(**params)

    # Administration (as the superuser, over the unix socket) ------------------------------
    def admin_sql(
        self, sql: str, params: Sequence[Any] | None = None, *, dbname: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        """Run ``sql`` as the superuser in ``dbname`` (autocommit); return its rows, if any."""
        import psycopg2

        conn = psycopg2.connect(
            host=str(self._cluster.socket_dir),
            port=self.port,
            user=self.superuser,
            dbname=dbname,
            connect_timeout=10,
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database owned by ``user`` (``name`` or a generated one); its name."""
        name = name or f"db_{secrets.token_hex(6)}"
        self.admin_sql(f"create database {quote_ident(name)} owner {quote_ident(self.user)}")
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name`` even while clients are connected to it."""
        self.admin_sql(f"drop database if exists {quote_ident(name)} with (force)")

    def for_database(self, dbname: str) -> PgServer:
        """This server, seen as ``user`` on ``dbname``."""
        return dataclasses.replace(self, dbname=dbname)

    # The server process ---------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the server (to simulate it going down); :meth:`start` brings it back."""
        self._cluster.stop()

    def start(self) -> None:
        """Start the server again on the same port with the same data."""
        self._cluster.start()

    def running(self) -> bool:
        """Whether the server is up (``pg_ctl status``)."""
        return self._cluster.running()

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (owned by the server's OS user)."""
        return self._cluster.data_dir

    @property
    def bin_dir(self) -> Path:
        """Where ``pg_ctl``, ``psql`` etc. of this server are."""
        return self._cluster.bin_dir

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log."""
        return self._cluster.log_tail(lines)


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (database and role names are never spliced raw)."""
    if not name or "\x00" in name:
        raise ValueError(f"not a valid identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


@contextmanager
def postgres_server(base_dir: Path) -> Iterator[PgServer]:
    """Run a throwaway server whose files live in ``base_dir``; see the module docstring.

    ``base_dir`` must be missing or empty; it is removed on exit. As root it is chowned to
    the ``postgres`` OS user, which must be able to reach it.
    """
    base_dir = Path(base_dir).absolute()
    if base_dir.exists() and any(base_dir.iterdir()):
        raise PgServerError(
            f"{base_dir} is not empty: the throwaway server needs a directory of its own "
            f"(a server left behind there is removed with remove_cluster({str(base_dir)!r}))"
        )
    bin_dir = find_bin_dir()
    run_as = _server_os_user()
    cluster = _Cluster(base_dir, bin_dir, run_as)
    base_dir.mkdir(parents=True, exist_ok=True)
    watchdog = _start_watchdog(cluster)
    try:
        _prepare_dir(base_dir, run_as)
        cluster.run(
            "initdb", "-D", str(cluster.data_dir), "-U", SUPERUSER,
            "--auth-local=trust", "--auth-host=scram-sha-256",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )
        _start_on_free_port(cluster)
        server = PgServer(
            host=HOST,
            port=cluster.port,
            user=USER,
            password=secrets.token_urlsafe(18),
            dbname=DBNAME,
            superuser=SUPERUSER,
            _cluster=cluster,
        )
        server.admin_sql(f"create role {quote_ident(USER)} login password %s", (server.password,))
        server.create_database(DBNAME)
        yield server
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(base_dir, ignore_errors=True)
            watchdog.kill()
            watchdog.wait()


# If this process dies without running its `finally` (SIGKILL, a crashed xdist worker), the
# watchdog stops the server and removes its directory. Its own session: Ctrl-C spares it.
_WATCHDOG = """
parent=$1 data=$2 base=$3; shift 3
while kill -0 "$parent" 2>/dev/null; do sleep 1; done
if [ -d "$data" ]; then "$@" stop -D "$data" -m immediate -w -t 20 >/dev/null 2>&1; fi
rm -rf "$base"
"""


def _start_watchdog(cluster: _Cluster) -> subprocess.Popen[bytes]:
    """A ``sh`` that cleans up after us once our process is gone (killed by the caller when
    the normal cleanup has run)."""
    pg_ctl = [str(cluster.bin_dir / "pg_ctl")]
    if cluster.run_as:
        pg_ctl = ["runuser", "-u", cluster.run_as, "--", *pg_ctl]
    return subprocess.Popen(
        ["sh", "-c", _WATCHDOG, "pg-watchdog", str(os.getpid()), str(cluster.data_dir),
         str(cluster.base_dir), *pg_ctl],
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def remove_cluster(base_dir: Path) -> None:
    """Stop a server left running in ``base_dir`` (a killed ``make dev-pg``) and remove it.

    Refuses a directory that does not look like one of ours, so it never deletes anything else.
    """
    base_dir = Path(base_dir).absolute()
    if not base_dir.exists():
        return
    if not (base_dir / "data" / "PG_VERSION").is_file() and any(base_dir.iterdir()):
        raise PgServerError(f"{base_dir} does not hold a throwaway cluster; not removing it")
    _Cluster(base_dir, find_bin_dir(), _server_os_user()).stop()
    shutil.rmtree(base_dir, ignore_errors=True)


def _server_os_user() -> str | None:
    """``postgres`` when we are root (the server refuses root), else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise PgServerUnavailable(
            f"running as root, but there is no {SERVER_OS_USER!r} OS user to run PostgreSQL "
            f"as: {INSTALL_HINT}"
        ) from None
    return SERVER_OS_USER


def _prepare_dir(base_dir: Path, run_as: str | None) -> None:
    """Make ``base_dir`` the server's own (0700); check the unix socket path fits."""
    socket_path = base_dir / ".s.PGSQL.65535"
    if len(str(socket_path)) > _SOCKET_PATH_MAX:
        raise PgServerError(
            f"{base_dir} is too long a path for the server's unix socket "
            f"({len(str(socket_path))} > {_SOCKET_PATH_MAX} bytes): use a shorter directory"
        )
    os.chmod(base_dir, 0o700)
    if run_as is None:
        return
    entry = pwd.getpwnam(run_as)
    os.chown(base_dir, entry.pw_uid, entry.pw_gid)
    reach = subprocess.run(
        ["runuser", "-u", run_as, "--", "test", "-w", str(base_dir)],
        capture_output=True,
        check=False,
    )
    if reach.returncode != 0:
        raise PgServerError(
            f"the {run_as!r} OS user cannot reach {base_dir}: a directory above it is not "
            "searchable by that user (as root, put the server under /tmp or /dev/shm)"
        )


def _start_on_free_port(cluster: _Cluster) -> None:
    """Start on a free port; if another process takes the port first, try another one."""
    for attempt in range(1, _START_ATTEMPTS + 1):
        cluster.configure(free_port())
        try:
            cluster.start()
            return
        except PgServerError:
            lost_race = re.search(r"could not (bind|create listen)", cluster.log_tail(50))
            if attempt == _START_ATTEMPTS or not lost_race:
                raise


# Command line (make dev-pg) ---------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Start a server in ``--dir``, run the command with its variables, stop the server."""
    parser = argparse.ArgumentParser(
        prog="python tests/postgres_server.py",
        description="Run COMMAND against a throwaway PostgreSQL server that stops with it.",
    )
    parser.add_argument("--dir", type=Path, required=True, help="the server's directory")
    parser.add_argument(
        "--dagster-db", default="dagster",
        help="database for Dagster's storage, exported as DAGSTER_PG_* (default: dagster)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")

    remove_cluster(args.dir)
    started = time.monotonic()
    with postgres_server(args.dir) as server:
        server.create_database(args.dagster_db)
        env = {**os.environ, **server.env(), **server.dagster_env(args.dagster_db)}
        print(
            f"postgres_server: PostgreSQL on {server.host}:{server.port} as {server.user} "
            f"(warehouse: {server.dbname}, Dagster: {args.dagster_db}; files in {args.dir}), "
            f"up in {time.monotonic() - started:.1f} s; it stops when the command ends.",
            file=sys.stderr,
            flush=True,
        )
        proc = subprocess.Popen(command, env=env)

        def forward(signum: int, _frame: object) -> None:
            proc.send_signal(signum)

        # Ctrl-C reaches the command from the terminal already; SIGTERM/SIGHUP are passed on.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGHUP, forward)
        code = proc.wait()
    print("postgres_server: server stopped and removed", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
