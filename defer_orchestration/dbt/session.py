"""One dbt process for a branch run's whole sequence: parse once, preview, build.

A branch run needs dbt three times: to parse the branch, to list what the selection
picks (the pre-flight checks run between listing and building), and to build. As three
CLI processes that costs three interpreter starts with dbt's imports (~3 s each here) and
a second load of the parse. A session is one child process driving dbt's programmatic
API (``dbtRunner``): the parse's ``Manifest`` stays in memory and the listing and the
build reuse it, so a slim run pays dbt's start-up and parse once, like a plain
``dbt build --defer``.

It is still a separate process, not dbt inside the Dagster run worker: stopping a run
kills it like any subprocess, dbt's global state and its DuckDB handle die with it (the
warehouse lock is released when the session ends), and nothing it does can reach
Dagster's event log.

Protocol: the parent writes one JSON object per line to the child's stdin
(``{"args": [...]}``); the child runs it and answers with one JSON line on the stdout
it started with (``{"success": ..., "exception": ...}``). dbt's own log lines for each
command go to the file the request names (``"output"``). EOF on stdin ends the session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from defer_orchestration.dbt import internals
from defer_orchestration.dbt.cli import ENV_PACKAGES_DIR, DbtPaths, DbtRun, dbt_arguments, dbt_environment
from defer_orchestration.lib.errors import DbtInvocationError

# Commands that only read the parsed manifest; any other command (build mutates it while
# merging deferred relations) makes the next command parse again (partially, from disk).
_READ_ONLY = frozenset({"parse", "ls", "list"})


class DbtSession:
    """A dbt child process that runs commands one after another, sharing one parse.

    Use as a context manager; leaving it ends the process (killed if still busy, e.g.
    when the Dagster run is cancelled mid-build).
    """

    def __init__(self, log_dir: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self._env = dict(env or {})
        self._process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._count = 0
        self._pending: PendingCommand | None = None

    def start(self) -> DbtSession:
        """Start the child now (it imports dbt while the caller prepares the checkout)."""
        if self._process is not None:
            return self
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._stderr = open(self._stderr_path(), "a", encoding="utf-8")
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "defer_orchestration.dbt.session"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                text=True,
                env=dbt_environment(self._env),
            )
        except OSError as exc:
            self._stderr.close()
            raise DbtInvocationError(f"could not start a dbt session ({sys.executable}): {exc}") from exc
        return self

    def invoke(
        self,
        args: Sequence[str],
        paths: DbtPaths,
        *,
        target: str | None = None,
        check: bool = False,
        parse_template: Mapping[str, str] | None = None,
    ) -> DbtRun:
        """Run one dbt command (``["build", "--select", ...]``) and return what it did."""
        return self.submit(args, paths, target=target, parse_template=parse_template).wait(check=check)

    def submit(
        self,
        args: Sequence[str],
        paths: DbtPaths,
        *,
        target: str | None = None,
        parse_template: Mapping[str, str] | None = None,
    ) -> PendingCommand:
        """Send one dbt command and return at once; ``.wait()`` on the result for what it
        did. The caller works meanwhile (dbt parses while we talk to the warehouse).
        One command at a time: wait for a command before submitting the next.
        ``parse_template`` (``parse_cache.template_for``): where a parse with no previous
        parse of its own may start from."""
        if self._pending is not None:
            raise RuntimeError("a dbt session runs one command at a time: wait() for the previous one")
        self.start()
        assert self._process is not None and self._process.stdin
        self._count += 1
        output_path = self.log_dir / f"session-{self._count:02d}-{args[0]}.out"
        command = dbt_arguments(args, paths, target=target)
        paths.target_path.mkdir(parents=True, exist_ok=True)
        paths.log_path.mkdir(parents=True, exist_ok=True)
        pending = PendingCommand(self, tuple(args), paths, output_path, time.monotonic(), time.time())
        try:
            self._process.stdin.write(json.dumps(
                    {
                        "args": command,
                        "output": str(output_path),
                        "packages_dir": str(paths.packages_dir) if paths.packages_dir else None,
                        "project_dir": str(paths.project_dir),
                        "parse_template": dict(parse_template) if parse_template else None,
                    }
                ) + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            pending.broken = True
        self._pending = pending
        return pending

    def _reply(self, pending: PendingCommand) -> DbtRun:
        """Read the reply to ``pending`` (blocks until dbt has finished it)."""
        assert self._process is not None and self._process.stdout
        line = ""
        if not pending.broken:
            try:
                line = self._process.stdout.readline()
            except OSError:
                line = ""
        self._pending = None
        args = pending.args
        if not line:
            raise DbtInvocationError(
                f"the dbt session process ended unexpectedly during `dbt {' '.join(args)}` "
                f"(exit {self._process.poll()}). Its error output:\n{self._stderr_tail()}"
            )
        reply = json.loads(line)
        path = pending.output_path
        output = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        if reply.get("exception"):
            output += f"\n{reply['exception']}\n"
        return DbtRun(
            args=args,
            returncode=0 if reply["success"] else (2 if reply.get("exception") else 1),
            output=output,
            seconds=time.monotonic() - pending.started,
            target_path=pending.paths.target_path,
            started_at=pending.started_at,
            log_path=pending.paths.log_path,
        )

    def close(self) -> None:
        """End the session: EOF lets an idle child exit; a busy one is killed."""
        process, self._process = self._process, None
        self._pending = None
        if process is not None:
            try:
                if process.poll() is None and process.stdin:
                    process.stdin.close()
                process.wait(timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                pass
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                if process.stdout:
                    process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def kill(self) -> None:
        """Stop the child at once (whatever it is doing)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self.close()

    def restart(self) -> DbtSession:
        """A fresh child (e.g. after dbt met a locked warehouse): nothing carried over."""
        self.kill()
        return self.start()

    def __enter__(self) -> DbtSession:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None:
            self.kill()  # interrupted (e.g. run cancelled): do not wait for dbt
        else:
            self.close()

    def _stderr_path(self) -> Path:
        return self.log_dir / "session.stderr"

    def _stderr_tail(self, lines: int = 30) -> str:
        path = self._stderr_path()
        if not path.is_file():
            return "(none)"
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]) or "(none)"


@dataclass
class PendingCommand:
    """A command sent to a dbt session whose reply has not been read yet."""

    session: DbtSession
    args: tuple[str, ...]
    paths: DbtPaths
    output_path: Path
    started: float  # monotonic
    started_at: float  # unix seconds
    broken: bool = False  # the child was gone before the command could be sent

    def wait(self, *, check: bool = False) -> DbtRun:
        """Block until dbt has finished the command; what it did (raise on failure if
        ``check``)."""
        run = self.session._reply(self)
        if check:
            run.raise_for_failure(self.paths.project_dir)
        return run


# --- the child ---------------------------------------------------------------------


def _serve(requests: IO[str], replies: IO[str]) -> None:
    """Run each request with dbt's programmatic API until EOF."""
    from dbt.cli.main import dbtRunner  # imported here: the parent never loads dbt

    internals.install()  # guarded: dbt's own behaviour on untested versions or when switched off
    manifest: Any = None
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        args: list[str] = request["args"]
        # As run_dbt sets it for a dbt process (a project used in place reads it).
        if request.get("packages_dir"):
            os.environ[ENV_PACKAGES_DIR] = request["packages_dir"]
        else:
            os.environ.pop(ENV_PACKAGES_DIR, None)
        internals.set_parse_template(request.get("parse_template"))
        with open(request["output"], "w", encoding="utf-8") as out:
            real_stdout, sys.stdout = sys.stdout, out
            try:
                unused = internals.unused_template_line(request.get("parse_template"))
                if unused:
                    print(unused, flush=True)
                result = dbtRunner(manifest=manifest).invoke(list(args))
            finally:
                sys.stdout = real_stdout
        command = args[0]
        if command == "parse" and result.success:
            manifest = result.result
        elif command not in _READ_ONLY:
            manifest = None
        exception = result.exception
        replies.write(
            json.dumps(
                {
                    "success": bool(result.success),
                    "exception": f"{type(exception).__name__}: {exception}" if exception else None,
                }
            )
            + "\n"
        )
        replies.flush()


def main() -> None:
    """Entry point of the child: replies go to the stdout it started with; everything
    else written to file descriptor 1 (stray prints, C libraries) goes to stderr."""
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = os.fdopen(1, "w", encoding="utf-8", closefd=False)
    _serve(sys.stdin, replies)


if __name__ == "__main__":
    main()
