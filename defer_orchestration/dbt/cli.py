"""Where dbt is invoked for everything but the production assets.

Branch builds, selection previews and load-time parses run the dbt CLI as a
subprocess with every path explicit (project, profiles, target, logs), so nothing is
written into the user's project and no Dagster event is derived from dbt's output.
(The production assets go through dagster-dbt's ``DbtCliResource`` instead, because
there we *want* asset materializations.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from defer_orchestration.lib.errors import DbtInvocationError


# Every dbt process we start for a project with packages has this variable set to the
# packages directory prepared for it (``dbt/packages.py``); a project used in place reads
# it in its dbt_project.yml (``packages-install-path``), one in a checkout we own has its
# install path linked there instead.
ENV_PACKAGES_DIR = "DEFER_ORCH_DBT_PACKAGES_DIR"


def dbt_executable() -> str:
    """The ``dbt`` next to the running interpreter, else the one on PATH."""
    beside = Path(sys.executable).with_name("dbt")
    if beside.is_file():
        return os.fspath(beside)
    found = shutil.which("dbt")
    if found is None:
        raise DbtInvocationError(
            "the dbt CLI is not installed in this environment; run `make install` "
            "(or `pip install -e .`) to install dbt-core and dbt-duckdb."
        )
    return found


def dbt_command() -> list[str]:
    """How we start dbt: dbt's own CLI module under the running interpreter (the same
    environment as ours, whatever is on PATH), with no hook of ours."""
    return [sys.executable, "-m", "dbt.cli.main"]


@dataclass(frozen=True)
class DbtPaths:
    """Where one dbt invocation reads and writes, and the inputs every invocation of a
    project must share (its packages and vars), so no caller can forget one."""

    project_dir: Path
    profiles_dir: Path
    target_path: Path
    log_path: Path
    packages_dir: Path | None = None  # None: the project declares no packages
    vars: Mapping[str, Any] = field(default_factory=dict)  # dbt --vars
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # secrets the profile reads

    def with_(self, **changes: Any) -> DbtPaths:
        """A copy with some fields changed."""
        return replace(self, **changes)


@dataclass(frozen=True)
class DbtRun:
    """What one dbt CLI invocation did."""

    args: tuple[str, ...]
    returncode: int
    output: str
    seconds: float
    target_path: Path
    started_at: float = 0.0  # unix seconds
    log_path: Path | None = None

    def timing(self) -> dict[str, object]:
        """When this command ran and where its dbt.log is (for reports and benchmarks)."""
        return {
            "command": self.args[0] if self.args else "",
            "started": round(self.started_at, 3),
            "finished": round(self.started_at + self.seconds, 3),
            "log_path": os.fspath(self.log_path) if self.log_path else "",
        }

    @property
    def ok(self) -> bool:
        """dbt exited 0."""
        return self.returncode == 0

    def tail(self, lines: int = 30) -> str:
        """The last lines of dbt's output, for error messages."""
        return "\n".join(self.output.rstrip().splitlines()[-lines:])

    def raise_for_failure(self, project_dir: Path) -> None:
        """Raise a ``DbtInvocationError`` with dbt's last lines unless dbt exited 0."""
        if not self.ok:
            raise DbtInvocationError(
                f"`dbt {' '.join(self.args)}` failed (exit {self.returncode}) in "
                f"{project_dir}. Last lines of its output:\n{self.tail()}"
            )

    def run_results(self) -> dict[str, Any] | None:
        """``run_results.json`` of this invocation, if dbt wrote one."""
        path = self.target_path / "run_results.json"
        if not path.is_file():
            return None
        loaded = json.loads(path.read_text(encoding="utf-8"))
        return loaded if isinstance(loaded, dict) else None


# Commands that take no --vars, and commands that take no --target-path.
_NO_VARS = frozenset({"clean", "debug", "init"})
_NO_TARGET_PATH = frozenset({"deps", "clean", "debug", "init"})


def dbt_environment_for(paths: DbtPaths, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """:func:`dbt_environment` plus :data:`ENV_PACKAGES_DIR` for ``paths``."""
    extra = {ENV_PACKAGES_DIR: os.fspath(paths.packages_dir)} if paths.packages_dir else {}
    return dbt_environment({**paths.env, **(env or {}), **extra})


def build_command(args: Sequence[str], paths: DbtPaths, *, target: str | None) -> list[str]:
    """The full argv: how dbt starts, then :func:`dbt_arguments`."""
    return [*dbt_command(), *dbt_arguments(args, paths, target=target)]


def dbt_arguments(args: Sequence[str], paths: DbtPaths, *, target: str | None) -> list[str]:
    """dbt's subcommand and flags, then the vars and our explicit paths.

    Paths are passed as flags rather than left to defaults so that a run never writes
    ``target/`` or ``logs/`` into the project, which may be the user's own checkout.
    """
    command = list(args)
    if paths.vars and args and args[0] not in _NO_VARS:
        command += ["--vars", json.dumps(dict(paths.vars), sort_keys=True)]
    command += ["--project-dir", os.fspath(paths.project_dir)]
    command += ["--profiles-dir", os.fspath(paths.profiles_dir)]
    if not args or args[0] not in _NO_TARGET_PATH:
        command += ["--target-path", os.fspath(paths.target_path)]
    command += ["--log-path", os.fspath(paths.log_path)]
    if target is not None:
        command += ["--target", target]
    return command


# Secrets of our own process that no dbt process inherits: a branch's dbt code could read
# them with env_var(). What a dbt process needs is passed explicitly (``DbtPaths.env``).
INHERITED_SECRETS = frozenset({
    "PGPASSWORD", "PGPASSFILE", "DEFER_ORCH_PG_DSN", "DEFER_ORCH_CI_PGPASSWORD", "DAGSTER_PG_PASSWORD",
})


def dbt_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment dbt runs in: ours without our secrets, plus ``env``, without usage
    pings or colours."""
    run_env = {k: v for k, v in os.environ.items() if k not in INHERITED_SECRETS}
    run_env.update(env or {})
    # dbt otherwise writes a user-level .user.yml and pings for anonymous usage stats.
    run_env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    run_env.setdefault("DBT_USE_COLORS", "false")
    return run_env


def run_dbt(
    args: Sequence[str],
    paths: DbtPaths,
    *,
    target: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> DbtRun:
    """Run one dbt command and return what it did; raise on failure when ``check``."""
    paths.target_path.mkdir(parents=True, exist_ok=True)
    paths.log_path.mkdir(parents=True, exist_ok=True)
    command = build_command(args, paths, target=target)
    run_env = dbt_environment_for(paths, env)
    started_at = time.time()
    started = time.monotonic()
    try:
        completed = subprocess.run(
            command,
            cwd=paths.project_dir,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DbtInvocationError(
            f"`dbt {' '.join(args)}` did not finish within {timeout} s and was stopped."
        ) from exc
    except OSError as exc:
        raise DbtInvocationError(f"could not start dbt ({command[0]}): {exc}") from exc
    result = DbtRun(
        args=tuple(args),
        returncode=completed.returncode,
        output=(completed.stdout or "") + (completed.stderr or ""),
        seconds=time.monotonic() - started,
        target_path=paths.target_path,
        started_at=started_at,
        log_path=paths.log_path,
    )
    if check:
        result.raise_for_failure(paths.project_dir)
    return result
