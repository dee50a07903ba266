"""pytest fixtures for a real PostgreSQL server (``tests/postgres_server.py``).

Loaded as a plugin (``pytest_plugins = ["postgres_fixtures"]`` in ``tests/conftest.py``).

``pg_server`` (session)
    One throwaway server per test process (per xdist worker), on tmpfs when there is one.
    Bound to the database ``warehouse``; tests that write should take ``pg_database``.
``pg_database`` (function)
    The same server bound to a fresh database of its own (owned by ``defer``, dropped
    afterwards), so tests never see each other's schemas.

When this machine has no PostgreSQL server binaries, both skip with the command that
installs them (like the browser test without chromium); ``make test`` runs that command.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from postgres_server import PgServer, PgServerUnavailable, find_bin_dir, postgres_server

# tmpfs keeps initdb and every commit off the disk; under 1 GiB free, the system temp dir.
_MIN_SHM_FREE = 1024**3


def _server_parent() -> Path | None:
    """Where the server's directory goes: /dev/shm when it has room, else the temp dir.

    Not pytest's tmp_path: as root its /tmp/pytest-of-root (0700) is closed to the
    ``postgres`` OS user the server runs as.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > _MIN_SHM_FREE:
        return shm
    return None


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PgServer]:
    """A throwaway PostgreSQL server for this test process, as ``defer`` on ``warehouse``."""
    try:
        find_bin_dir()
    except PgServerUnavailable as exc:
        pytest.skip(str(exc))
    workerinput = getattr(request.config, "workerinput", None)  # set on xdist workers
    worker = workerinput["workerid"] if workerinput else "main"
    base = Path(tempfile.mkdtemp(prefix=f"defer_orch_pg_{worker}_", dir=_server_parent()))
    try:
        with postgres_server(base) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[PgServer]:
    """``pg_server`` bound to a fresh database of this test's own, dropped afterwards."""
    name = pg_server.create_database()
    yield pg_server.for_database(name)
    # A test may have stopped the server to simulate an outage: the next one gets it back.
    if not pg_server.running():
        pg_server.start()
    pg_server.drop_database(name)

