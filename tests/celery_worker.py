"""A Celery worker of the product's jobs, as ``deploy/celery/README.md`` starts one: for the
two-host tests and for ``make dev-distributed``.

``start_worker`` runs ``dagster-celery worker start -A dagster_celery.app -y
deploy/celery/celery.yaml -q QUEUE -n NAME -- --concurrency=1`` in a process group of its
own (so killing the group kills the worker, its pool process and any dbt it runs: a host
going away), logging to a file, with the environment given (its own ``DAGSTER_HOME`` and
``DEFER_ORCH_HOME``: workers share no disk). ``wait_ready`` polls the log for Celery's
"ready." line.

One task at a time per worker (``--concurrency=1``): a step holds a warehouse pool and runs
dbt, which brings its own threads; a second worker process would be a second copy of the
code location in memory for no gain on small machines. Scale with more workers.

No Dagster here (the worker is a subprocess).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CELERY_YAML = REPO_ROOT / "deploy" / "celery" / "celery.yaml"
APP = "dagster_celery.app"


class CeleryWorkerError(RuntimeError):
    """The worker did not start; the message holds its log's tail."""


@dataclass
class CeleryWorker:
    """A running worker: its Celery name (``NAME@host``), queue, process and log."""

    name: str
    queue: str
    proc: subprocess.Popen[bytes]
    log: Path
    log_offset: int = 0  # where this start's lines begin (a restart appends to the same log)

    @property
    def hostname(self) -> str:
        """The name Celery reports for it (``-n NAME`` becomes ``NAME@<host>``)."""
        return f"{self.name}@{socket.gethostname()}"

    def log_tail(self, lines: int = 60) -> str:
        """The end of the worker's log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return f"--- {self.log} ---\n" + "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until Celery logs that the worker is ready (it has connected to the broker)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CeleryWorkerError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with open(self.log, "rb") as handle:
                    handle.seek(self.log_offset)
                    if b" ready." in handle.read():
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise CeleryWorkerError(f"worker {self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the whole worker (its Celery main process, pool process and their
        children): what a host going away does. Nothing of it cleans up."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group (Celery's warm shutdown), then SIGKILL what is left."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


def worker_argv(bin_dir: Path, name: str, queue: str, config_yaml: Path = CELERY_YAML) -> list[str]:
    """The command line of one worker listening on ``queue`` only."""
    return [
        str(bin_dir / "dagster-celery"), "worker", "start", "-A", APP, "-y", str(config_yaml),
        "-q", queue, "-n", name, "--loglevel", "INFO", "--", "--concurrency=1", "--without-gossip",
        "--without-mingle",
    ]


def start_worker(
    bin_dir: Path, name: str, queue: str, env: Mapping[str, str], log: Path, *, cwd: Path = REPO_ROOT
) -> CeleryWorker:
    """Start a worker (see the module docstring); it is not ready until :meth:`CeleryWorker.wait_ready`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    offset = log.stat().st_size if log.exists() else 0
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', os.environ.get('PATH', ''))}"}
    with open(log, "ab") as handle:
        proc = subprocess.Popen(
            worker_argv(bin_dir, name, queue), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return CeleryWorker(name, queue, proc, log, offset)
