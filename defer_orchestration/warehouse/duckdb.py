"""The embedded default warehouse: DuckDB files, production in one, each branch in its own.

- Production lives in ``<home>/warehouse.duckdb`` (catalog ``warehouse``: the database
  name production's manifest records).
- A branch builds into ``<home>/branches/db_<branch schema>.duckdb``: its own schemas and its
  slice of the registry. It reads production through a **read-only attachment under the
  catalog name production's manifest uses**, so deferred references resolve unchanged and
  any write to production (a post-hook, ``run_query``, an ``on-run-start`` hook, a seed or
  snapshot pinned to a production schema) fails inside DuckDB: ``Cannot execute statement
  of type "DELETE" on database "warehouse" which is attached in read-only mode!``.
- dbt sources resolve to the branch's own catalog (a source's database is the target's);
  :meth:`DuckDBConnection.expose_production_sources` creates views there that read
  production's tables through the read-only attachment.
- While a branch builds, a *guard* process holds production's file open read-only
  (:meth:`DuckDBWarehouse.isolate_branch`). DuckDB allows any number of read-only opens at
  once but no writer beside them, so SQL that detaches the read-only attachment and
  attaches the file again for writing fails with "Could not set lock on file". (The guard
  is a process of its own: POSIX file locks belong to a process, and our own process opens
  and closes production's file during a run, which would release a lock it held.)
- A production build needs the file to itself. :meth:`DuckDBWarehouse.production_write`
  takes a turnstile (an exclusive ``flock``) that new branch builds pass through before
  they start reading, then waits until the running ones have finished: production is never
  starved by a stream of branch builds, and a branch build launched during a production
  build starts right after it.

One file per branch, not one for all branches: branch builds then never lock each other
out (each writes only its own file), teardown is deleting a file, and one branch's code
cannot touch another branch's tables.

Opening retries with backoff when something *outside* the product (a user's DuckDB shell)
holds a file, then fails with a message naming that process.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import duckdb

from defer_orchestration.lib.backoff import backoff_delays
from defer_orchestration.lib.errors import WarehouseError, WarehouseLockedError
from defer_orchestration.lib.schema_names import (
    guard_branch_schema,
    is_branch_schema,
    is_owned_schema,
    quote_identifier,
    quote_string_literal,
)
from defer_orchestration.warehouse.base import (
    REGISTRY_SCHEMA,
    Cursor,
    Relation,
    Warehouse,
    WarehouseConnection,
)

_log = logging.getLogger(__name__)
_LOCK_MARKER = "Could not set lock on file"
_HOLDER = re.compile(r"Conflicting lock is held in (?P<proc>.+?) \(PID (?P<pid>\d+)\)")
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OWNER_END = re.compile(r"_[0-9a-f]{10}(?=_|$)")
BRANCHES_DIR = "branches"
# A branch's file and catalog: ``db_<branch schema>``. Not the schema's own name: DuckDB
# refuses ``a.b`` as ambiguous when ``a`` is both a catalog and a schema.
BRANCH_CATALOG_PREFIX = "db_"
LOCKS_DIR = "locks"
_GUARD_READY = "ready"


def lock_holder(message: str) -> str | None:
    """The process DuckDB names as holding the lock, e.g. ``/usr/bin/duckdb (PID 42)``."""
    match = _HOLDER.search(message)
    return f"{match['proc']} (PID {match['pid']})" if match else None


def branch_catalog(owner: str) -> str:
    """The catalog (and file stem) of branch schema ``owner``'s database."""
    return BRANCH_CATALOG_PREFIX + owner


def owner_of_catalog(catalog: str) -> str | None:
    """The branch schema whose database ``catalog`` is, or None."""
    owner = catalog[len(BRANCH_CATALOG_PREFIX):] if catalog.startswith(BRANCH_CATALOG_PREFIX) else ""
    return owner if is_branch_schema(owner) else None


def owner_candidates(schema: str) -> list[str]:
    """The branch schemas ``schema`` may belong to (itself, or ``<owner>_<suffix>``)."""
    return [schema[: m.end()] for m in _OWNER_END.finditer(schema) if is_branch_schema(schema[: m.end()])]


class DuckDBConnection(WarehouseConnection):
    """An open DuckDB connection that knows which file holds which schema.

    ``owner`` None: the production scope (production's file is the main catalog; a branch
    schema is looked up in its branch file, attached on first use). ``owner`` a branch
    schema: the branch scope (the branch's file is the main catalog, production attached
    read-only); every schema but the branch's own is production's.
    """

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        *,
        production_catalog: str | None = None,
        branches_dir: Path | None = None,
        owner: str | None = None,
        read_only: bool = False,
    ) -> None:
        self._conn = conn
        # Defaults: one plain file (production is the connection's own catalog, no branch files).
        self._production = production_catalog or str(conn.execute("select current_database()").fetchone()[0])  # type: ignore[index]
        self._branches = branches_dir
        self._owner = owner
        self._read_only = read_only
        self._attached: dict[str, bool] = {}  # branch catalog -> attached

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement (several, separated by ``;``, when there are no parameters)."""
        return self._conn.execute(sql, list(params)) if params else self._conn.execute(sql)

    # Which file holds a schema -----------------------------------------------------------

    def catalog_of(self, schema: str) -> str:
        """The catalog (database file) holding ``schema`` on this connection."""
        if self._owner is not None:
            if schema == REGISTRY_SCHEMA or is_owned_schema(schema, self._owner):
                return branch_catalog(self._owner)
            return self._production
        for owner in owner_candidates(schema):
            if self._attach_branch(owner):
                return branch_catalog(owner)
        return self._production

    def _attach_branch(self, owner: str) -> bool:
        """Attach ``owner``'s file (production scope), once; False when it does not exist."""
        if owner not in self._attached:
            if self._branches is None:
                return False
            path = self._branches / f"{branch_catalog(owner)}.duckdb"
            if not path.is_file():
                return False
            mode = " (READ_ONLY)" if self._read_only else ""
            try:
                self.execute(
                    f"attach {quote_string_literal(os.fspath(path))} as {quote_identifier(branch_catalog(owner))}{mode}"
                )
            except duckdb.Error as exc:
                raise WarehouseError(
                    f"could not open the branch database {path}: {exc}. A build of that branch may "
                    "be running; retry when it has finished."
                ) from exc
            self._attached[owner] = True
        return self._attached[owner]

    def qualify(self, relation: Relation) -> str:
        """``"catalog"."schema"."name"``."""
        schema, name = relation
        return f"{quote_identifier(self.catalog_of(schema))}.{quote_identifier(schema)}.{quote_identifier(name)}"

    def qualify_schema(self, schema: str) -> str:
        """``"catalog"."schema"``."""
        return f"{quote_identifier(self.catalog_of(schema))}.{quote_identifier(schema)}"

    def catalog_sql(self, schema: str) -> str:
        """The catalog of ``schema`` as a string literal."""
        return quote_string_literal(self.catalog_of(schema))

    def list_schemas(self) -> list[str]:
        """Schemas of production and of every branch file (the branch's own on a branch scope)."""
        if self._owner is None and self._branches is not None and self._branches.is_dir():
            for path in sorted(self._branches.glob("*.duckdb")):
                owner = owner_of_catalog(path.stem)
                if owner is not None:
                    self._attach_branch(owner)
        if self._owner is None:
            catalogs = [self._production, *(branch_catalog(owner) for owner in self._attached)]
        else:
            catalogs = [branch_catalog(self._owner), self._production]
        listed = ", ".join(quote_string_literal(c) for c in catalogs)
        rows = self.rows(f"select distinct schema_name from information_schema.schemata where catalog_name in ({listed})")
        return sorted(str(row[0]) for row in rows)

    # Operations --------------------------------------------------------------------------

    data_version_method = "rowhash"

    def data_version_sql(self, relation: Relation) -> str | None:
        """Row count and the sum of every row's 64-bit ``hash`` (over all its columns) as a
        HUGEINT: any inserted, deleted or updated row changes the pair (a sum, not an xor,
        so two equal rows do not cancel), and rewriting the same rows leaves it as it was.
        One scan of the table, no sort."""
        return f"select count(*), sum(hash(r)::hugeint) from {self.qualify(relation)} as r"

    def copy_table(self, source: Relation, target: Relation, *, owner: str | None = None) -> int:
        """``create or replace table <target> as select * from <source>``; its row count."""
        guard_branch_schema(target[0], owner=owner)
        self.execute(f"create schema if not exists {self.qualify_schema(target[0])}")
        self.execute(f"create or replace table {self.qualify(target)} as select * from {self.qualify(source)}")
        return self.row_count(*target)

    def expose_production_sources(self, sources: Sequence[tuple[str, str, str]]) -> list[str]:
        """Views in the branch's file over production's tables, for every source that
        resolves to the branch's catalog and exists in production."""
        if self._owner is None:
            raise WarehouseError("sources are exposed on a branch connection (connect_branch) only")
        existing: dict[str, dict[str, str]] = {}
        exposed = []
        for database, schema, identifier in sources:
            if database.lower() != branch_catalog(self._owner) or is_owned_schema(schema, self._owner):
                continue  # an explicit database resolves by itself; a branch schema is the branch's
            if schema not in existing:
                existing[schema] = self.list_relations(schema)  # production's (routing)
            if identifier not in existing[schema]:
                continue  # not in production: dbt reports the missing relation itself
            branch_schema = f"{quote_identifier(branch_catalog(self._owner))}.{quote_identifier(schema)}"
            view = f"{branch_schema}.{quote_identifier(identifier)}"
            self.execute(f"create schema if not exists {branch_schema}")
            self.execute(f"create or replace view {view} as select * from {self.qualify((schema, identifier))}")
            exposed.append(f"{schema}.{identifier}")
        return exposed


@dataclass(frozen=True)
class DuckDBWarehouse(Warehouse):
    """Production in the DuckDB file at ``path``; branches in ``branches/`` beside it."""

    path: Path
    lock_timeout_s: float = 60.0
    # How long a production build waits for running branch builds to finish reading (and a
    # branch build for a production build to finish writing).
    production_wait_s: float = 3600.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    kind = "duckdb"
    serialise_writers = True

    # Where things are --------------------------------------------------------------------

    @property
    def production_catalog(self) -> str:
        """The catalog name DuckDB gives production's file (its stem), as manifests record it."""
        return Path(self.path).stem

    @property
    def branches_dir(self) -> Path:
        """The directory of the branch files."""
        return Path(self.path).parent / BRANCHES_DIR

    def branch_path(self, owner: str) -> Path:
        """The file of branch schema ``owner`` (and its custom schemas)."""
        return self.branches_dir / f"{branch_catalog(guard_branch_schema(owner))}.duckdb"

    def _locks(self) -> Path:
        locks = Path(self.path).parent / LOCKS_DIR
        locks.mkdir(parents=True, exist_ok=True)
        return locks

    # Opening -----------------------------------------------------------------------------

    def _open(self, path: Path, *, read_only: bool, what: str) -> duckdb.DuckDBPyConnection:
        """Open ``path``, retrying with backoff while another process holds its lock."""
        path.parent.mkdir(parents=True, exist_ok=True)
        delays = backoff_delays(self.lock_timeout_s)
        while True:
            try:
                return duckdb.connect(str(path), read_only=read_only)
            except duckdb.IOException as exc:
                message = str(exc)
                if _LOCK_MARKER not in message:
                    raise WarehouseError(f"could not open {what} {path}: {message}") from exc
                delay = next(delays, None)
                if delay is None:
                    raise WarehouseLockedError(
                        f"{what} {path} is locked by {lock_holder(message) or 'another process'}; "
                        f"waited {self.lock_timeout_s:.0f} s. {self.lock_advice()}"
                    ) from exc
                self.sleep(delay)

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[WarehouseConnection]:
        """Production's file (branch files attached when a branch schema is named)."""
        path = Path(self.path)
        if read_only and not path.exists():
            raise WarehouseError(f"the warehouse {path} does not exist yet; run prod_build_job to create it.")
        conn = self._open(path, read_only=read_only, what="the warehouse")
        try:
            yield DuckDBConnection(
                conn, production_catalog=self.production_catalog, branches_dir=self.branches_dir,
                read_only=read_only,
            )
        finally:
            conn.close()

    @contextmanager
    def connect_branch(self, owner: str) -> Iterator[WarehouseConnection]:
        """The branch's file, production attached read-only under its own catalog name."""
        conn = self._open(self.branch_path(owner), read_only=False, what="the branch database")
        try:
            if Path(self.path).is_file():
                self._attach_production(conn)
            yield DuckDBConnection(
                conn, production_catalog=self.production_catalog, branches_dir=self.branches_dir, owner=owner
            )
        finally:
            conn.close()

    @contextmanager
    def _branch_only(self, owner: str) -> Iterator[WarehouseConnection]:
        """The branch's file alone (no production attached)."""
        conn = self._open(self.branch_path(owner), read_only=False, what="the branch database")
        try:
            yield DuckDBConnection(
                conn, production_catalog=self.production_catalog, branches_dir=self.branches_dir, owner=owner
            )
        finally:
            conn.close()

    def _attach_production(self, conn: duckdb.DuckDBPyConnection) -> None:
        sql = (
            f"attach {quote_string_literal(os.fspath(self.path))} as "
            f"{quote_identifier(self.production_catalog)} (READ_ONLY)"
        )
        delays = backoff_delays(self.lock_timeout_s)
        while True:
            try:
                conn.execute(sql)
                return
            except duckdb.Error as exc:
                message = str(exc)
                delay = next(delays, None)
                if _LOCK_MARKER not in message:
                    raise WarehouseError(f"could not attach production ({self.path}) read-only: {message}") from exc
                if delay is None:
                    raise WarehouseLockedError(
                        f"the warehouse {self.path} is locked by {lock_holder(message) or 'another process'}; "
                        f"waited {self.lock_timeout_s:.0f} s. {self.lock_advice()}"
                    ) from exc
                self.sleep(delay)

    # dbt ---------------------------------------------------------------------------------

    def dbt_output(self, schema: str, *, threads: int) -> dict[str, Any]:
        """A dbt-duckdb target writing into ``schema`` of production's file."""
        return {"type": "duckdb", "path": os.fspath(self.path), "schema": schema, "threads": threads}

    def dbt_branch_output(
        self, owner: str, schema: str, *, threads: int, production_schemas: Sequence[str] = ()
    ) -> dict[str, Any]:
        """A dbt-duckdb target writing the branch's file, production attached read-only.

        Its search path lists production's schemas after the branch's own, so SQL that names
        a production relation without its database (``raw.orders``, written by hand rather
        than through ``source()``) still reads production (when production's file could be
        read as the profile was written: DuckDB refuses a search path naming a missing schema)."""
        output: dict[str, Any] = {
            "type": "duckdb", "path": os.fspath(self.branch_path(owner)), "schema": schema, "threads": threads,
        }
        if Path(self.path).is_file():
            output["attach"] = [{"path": os.fspath(self.path), "alias": self.production_catalog, "read_only": True}]
            existing = self._production_schemas_now()
            if existing is not None:  # DuckDB refuses a search path naming a missing schema
                named = sorted(s for s in set(production_schemas) & existing if _PLAIN_NAME.fullmatch(s))
                path = [f"{branch_catalog(owner)}.main", *(f"{self.production_catalog}.{s}" for s in named)]
                output["settings"] = {"search_path": ",".join(path)}
        return output

    def _production_schemas_now(self) -> set[str] | None:
        """Production's schemas, or None when its file cannot be read right now (a
        production build holds it)."""
        try:
            conn = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error:
            return None
        try:
            return {str(row[0]) for row in conn.execute("select schema_name from information_schema.schemata").fetchall()}
        finally:
            conn.close()

    def locked_by(self, message: str) -> str | None:
        """DuckDB's "Could not set lock on file" and the process it names."""
        if _LOCK_MARKER not in message:
            return None
        return lock_holder(message) or ""

    def describe(self) -> str:
        """The file's path."""
        return f"the DuckDB file {self.path}"

    def lock_advice(self) -> str:
        """DuckDB allows one writing process per file."""
        return (
            "DuckDB allows one writing process per file: close that process (e.g. a DuckDB shell or "
            "notebook) and relaunch this run."
        )

    # Locks and isolation -----------------------------------------------------------------

    @contextmanager
    def _flock(self, name: str, what: str) -> Iterator[None]:
        """An exclusive ``flock`` on ``locks/<name>``, waiting up to ``production_wait_s``."""
        with open(self._locks() / name, "a") as handle:
            deadline = time.monotonic() + self.production_wait_s
            waiting = False
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if not waiting:  # once: a person at a terminal sees why nothing happens
                        waiting = True
                        _log.info(f"waiting (up to {self.production_wait_s:.0f} s): {what}")
                    if time.monotonic() > deadline:
                        raise WarehouseLockedError(
                            f"{what}: waited {self.production_wait_s:.0f} s. Check the running builds "
                            "in the Dagster UI (a stuck one can be cancelled), then relaunch."
                        ) from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def schema_lock(self, schema: str) -> AbstractContextManager[None]:
        """One operation per branch at a time (a run and a teardown of it never overlap)."""
        return self._flock(f"{guard_branch_schema(schema)}.schema.lock", f"branch {schema} is held by another operation")

    @contextmanager
    def production_write(self) -> Iterator[None]:
        """Keep new branch builds out (the turnstile), then wait until the running ones have
        stopped reading production's file."""
        with self._flock("production.turnstile", "another production build holds the warehouse"):
            if Path(self.path).is_file():
                self._wait_for_readers()
            yield

    def _wait_for_readers(self) -> None:
        deadline = time.monotonic() + self.production_wait_s
        delays = backoff_delays(self.production_wait_s)
        while True:
            try:
                duckdb.connect(str(self.path)).close()
                return
            except duckdb.IOException as exc:
                message = str(exc)
                delay = next(delays, None)
                if _LOCK_MARKER not in message or delay is None or time.monotonic() > deadline:
                    raise WarehouseLockedError(
                        f"production ({self.path}) is held by {lock_holder(message) or 'another process'}; "
                        f"the production build waited {self.production_wait_s:.0f} s for it. {self.lock_advice()}"
                    ) from exc
                self.sleep(delay)

    @contextmanager
    def isolate_branch(self, owner: str, *, production_schemas: Sequence[str] = ()) -> Iterator[str]:
        """Pass the turnstile (behind a waiting production build), then hold production's
        file read-only in a guard process for the whole branch build."""
        guard_branch_schema(owner)
        with self._flock("production.turnstile", "a production build holds the warehouse"):
            guard = _start_guard(Path(self.path), self.lock_timeout_s) if Path(self.path).is_file() else None
        try:
            yield self.isolation(owner)
        finally:
            if guard is not None:
                _stop_guard(guard)

    def isolation(self, owner: str | None = None) -> str:
        """Read-only production, a file per branch."""
        where = f"`{self.branch_path(owner).relative_to(Path(self.path).parent)}`" if owner else "a file of its own"
        return (
            f"production read-only: the branch's dbt wrote only its own database {where} and read "
            f"production through a read-only attachment (`{self.production_catalog}`); a guard held "
            "production's file against writers meanwhile."
        )

    # Registry ----------------------------------------------------------------------------

    def register_branch_schemas(
        self, owner: str, schemas: Sequence[str], *, branch: str, sha: str, now: float
    ) -> None:
        """The registry rows live in the branch's own file (production is not needed)."""
        with self._branch_only(owner) as conn:
            for schema in schemas:
                conn.register_branch_schema(
                    schema, branch=branch, sha=sha, now=now, owner=None if schema == owner else owner
                )

    def registered_branch_schemas(self) -> dict[str, tuple[str, float]]:
        """Every branch file's registry rows (only schemas that file's branch owns). A file
        being written by a running build is skipped (it is not idle)."""
        found: dict[str, tuple[str, float]] = {}
        if not self.branches_dir.is_dir():
            return found
        for path in sorted(self.branches_dir.glob("*.duckdb")):
            owner = owner_of_catalog(path.stem)
            if owner is None:
                continue
            try:
                conn = duckdb.connect(str(path), read_only=True)
            except duckdb.Error:
                continue
            try:
                rows = conn.execute(
                    f"select schema_name, branch, last_built_at from {quote_identifier(REGISTRY_SCHEMA)}.branch_schemas"
                ).fetchall()
            except duckdb.Error:
                rows = []  # no registry yet: nothing this system built there
            finally:
                conn.close()
            for schema, branch, at in rows:
                if is_owned_schema(str(schema), owner):
                    found[str(schema)] = (str(branch), float(at))
        return found

    def drop_branch(self, owner: str, schemas: Sequence[str]) -> list[str]:
        """Delete the branch's file: its schemas and registry rows go with it."""
        path = self.branch_path(owner)
        if not path.is_file():
            return []
        conn = self._open(path, read_only=True, what="the branch database")
        try:
            present = {
                str(row[0]) for row in conn.execute("select schema_name from information_schema.schemata").fetchall()
            }
        finally:
            conn.close()
        for leftover in (path, path.with_name(path.name + ".wal")):
            leftover.unlink(missing_ok=True)
        return [schema for schema in schemas if schema in present]


def _start_guard(path: Path, timeout_s: float) -> subprocess.Popen[str]:
    """A process holding ``path`` open read-only until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "defer_orchestration.warehouse.duckdb", os.fspath(path), str(timeout_s)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != _GUARD_READY:
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        error = [part.split(": ", 1)[-1] for part in (stderr or "").strip().splitlines()]
        raise WarehouseLockedError(
            f"could not hold production ({path}) read-only for the branch build: "
            f"{error[-1] if error else line or 'the guard process exited'}. Nothing was built; relaunch."
        )
    return proc


def _stop_guard(proc: subprocess.Popen[str]) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _guard_main(argv: Sequence[str], stdin: IO[str], stdout: IO[str]) -> int:
    """``python -m defer_orchestration.warehouse.duckdb <file> <timeout>``: open read-only
    (waiting while a writer holds it), say "ready", hold until stdin closes."""
    path, timeout = Path(argv[0]), float(argv[1])
    warehouse = DuckDBWarehouse(path, lock_timeout_s=timeout)
    conn = warehouse._open(path, read_only=True, what="the warehouse")
    try:
        stdout.write(_GUARD_READY + "\n")
        stdout.flush()
        stdin.read()
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(_guard_main(sys.argv[1:], sys.stdin, sys.stdout))
