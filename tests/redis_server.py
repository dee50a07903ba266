"""A throwaway Redis server (Debian's ``redis-server``): the Celery broker and result
backend of the two-host tests and of ``make dev-distributed``.

``redis_server(base_dir)`` starts ``redis-server`` bound to 127.0.0.1 on a free port, with a
generated password, no persistence (no RDB snapshot, no AOF: a broker's queue that
outlives its tests is a bug here) and its files under ``base_dir``, waits until it answers
``PING``, and yields a :class:`RedisServer`. On exit the server is killed and ``base_dir``
removed; if our process dies first, the kernel kills the server with it
(``PR_SET_PDEATHSIG``). ``deploy/celery/ensure_redis.sh`` installs the binary.

No Dagster, no Celery and no project code here.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
INSTALL_HINT = "bash deploy/celery/ensure_redis.sh (apt-get install redis-server)"
_START_TIMEOUT_S = 20.0
_PR_SET_PDEATHSIG = 1


class RedisServerError(RuntimeError):
    """The server could not be found or started; the message says why."""


@dataclass(frozen=True)
class RedisServer:
    """A running server: where it listens and its password."""

    host: str
    port: int
    password: str = field(repr=False)
    pid: int

    def url(self, db: int = 0) -> str:
        """``redis://:PASSWORD@HOST:PORT/DB``: what Celery takes as broker and result backend."""
        return f"redis://:{self.password}@{self.host}:{self.port}/{db}"


def redis_binary() -> str:
    """``redis-server`` on PATH or in /usr/bin."""
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)
    if not found:
        raise RedisServerError(f"no redis-server on PATH or in /usr/bin: {INSTALL_HINT}")
    return found


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def ping(host: str, port: int, password: str, timeout: float = 1.0) -> bool:
    """Whether the server authenticates us and answers ``PING`` (plain RESP, no client library)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            answer = b""
            while answer.count(b"\r\n") < 2:
                chunk = sock.recv(256)
                if not chunk:
                    break
                answer += chunk
            return answer.startswith(b"+OK\r\n+PONG")
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the child: the kernel sends SIGKILL when our process dies (no orphan servers)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@contextmanager
def redis_server(base_dir: Path) -> Iterator[RedisServer]:
    """Run a throwaway Redis in ``base_dir`` (created; removed on exit)."""
    binary = redis_binary()
    base_dir = Path(base_dir).absolute()
    base_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    port = free_port()
    log = base_dir / "redis.log"
    argv = [
        binary, "--bind", HOST, "--port", str(port), "--protected-mode", "yes",
        "--save", "", "--appendonly", "no", "--dir", str(base_dir), "--daemonize", "no",
        "--logfile", str(log), "--requirepass", password,
    ]
    proc = subprocess.Popen(
        argv, cwd=base_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=_die_with_parent,
    )
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not ping(HOST, port, password):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
                raise RedisServerError(f"redis-server did not answer on {HOST}:{port} (exit {proc.poll()}):\n{tail}")
            time.sleep(0.05)
        yield RedisServer(HOST, port, password, proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(base_dir, ignore_errors=True)
