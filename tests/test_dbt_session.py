"""The dbt session: one dbt process whose commands share one parse (real dbt, no warehouse)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import copy_bundled_project

from defer_orchestration.dbt import args as dbt_args
from defer_orchestration.dbt.cli import DbtPaths
from defer_orchestration.dbt.profiles import write_profiles
from defer_orchestration.dbt.session import DbtSession
from defer_orchestration.lib.errors import DbtInvocationError
from defer_orchestration.resources import DeferOrchSettings

pytestmark = pytest.mark.dbt

ORDERS = "models/marts/orders.sql"


def _paths(tmp_path: Path) -> DbtPaths:
    project = copy_bundled_project(tmp_path / "project")
    settings = DeferOrchSettings(home=str(tmp_path / "home"), dbt_project_dir=str(project))
    core = settings.core()
    profiles = write_profiles(
        tmp_path / "profiles", project, {"branch": "br_session"}, "branch", warehouse=core.warehouse, threads=1
    )
    return DbtPaths(project, profiles, tmp_path / "target", tmp_path / "logs")


def _listed(run) -> set[str]:
    return {o["unique_id"] for o in dbt_args.parse_ls_output(run.output.splitlines())}


def test_commands_after_a_parse_reuse_it_until_a_build(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    with DbtSession(tmp_path / "session-logs") as dbt:
        parse = dbt.invoke(["parse"], paths, target="branch", check=True)
        assert parse.ok and (paths.target_path / "manifest.json").is_file()
        # The model's file goes away after the parse: a command that re-parsed would not
        # know it; the session's listing still comes from the parse in memory.
        (paths.project_dir / ORDERS).unlink()
        ls_args = ["ls", "--select", "orders", "--resource-type", "model", "--output", "json", "--output-keys", "unique_id", "--quiet"]
        assert _listed(dbt.invoke(ls_args, paths, target="branch", check=True)) == {"model.shop.orders"}
        # A command that is not read-only (here: a failing `run` of nothing) drops the
        # shared parse; the next command parses again and sees the file is gone.
        dbt.invoke(["run", "--select", "orders", "--exclude", "orders"], paths, target="branch")
        assert _listed(dbt.invoke(ls_args, paths, target="branch")) == set()


def test_a_failing_command_reports_dbts_error_and_the_session_goes_on(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    with DbtSession(tmp_path / "session-logs") as dbt:
        bad = dbt.invoke(["ls", "--select", "no_such_method:x"], paths, target="branch")
        assert not bad.ok and bad.returncode == 2
        assert "no_such_method" in bad.output
        with pytest.raises(DbtInvocationError, match="failed \\(exit 2\\)"):
            bad.raise_for_failure(paths.project_dir)
        assert dbt.invoke(["parse"], paths, target="branch").ok


def test_a_dead_session_process_is_a_clear_error(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    dbt = DbtSession(tmp_path / "session-logs").start()
    try:
        dbt._process.kill()  # as the OOM killer would
        dbt._process.wait()
        with pytest.raises(DbtInvocationError, match="dbt session process ended unexpectedly"):
            dbt.invoke(["parse"], paths, target="branch")
    finally:
        dbt.close()
    assert dbt._process is None


def test_a_submitted_command_runs_while_the_caller_works(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    with DbtSession(tmp_path / "session-logs") as dbt:
        pending = dbt.submit(["parse"], paths, target="branch")
        with pytest.raises(RuntimeError, match="one command at a time"):
            dbt.submit(["ls"], paths, target="branch")
        assert pending.wait(check=True).ok
        assert (paths.target_path / "manifest.json").is_file()
