"""``defer-orch`` as a user types it: a subprocess against the session's Dagster instance,
its DuckDB warehouse and its git repository (tests/conftest.py::prod_env)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import delete_branch, push_branch, run_branch

from defer_orchestration.lib.manifest_store import sha256_file

pytestmark = pytest.mark.dbt  # uses the session's production build (see tests/conftest.py)


def defer_orch(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (beside this interpreter) as a user would."""
    script = Path(sys.executable).with_name("defer-orch")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "defer_orchestration.cli.main"]
    return subprocess.run([*command, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def cli_env(prod_env, **extra: str) -> dict[str, str]:
    """The variables the code location of ``prod_env`` reads, for the command line."""
    settings = prod_env.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEFER_ORCH_", "DAGSTER_"))}
    env.update({
        "DAGSTER_HOME": str(prod_env.instance.root_directory),
        "DEFER_ORCH_HOME": settings.home,
        "DEFER_ORCH_DBT_PROJECT_DIR": settings.dbt_project_dir,
    })
    env.update(extra)
    return env


def test_state_pull_writes_the_verified_manifest_plain_dbt_can_defer_to(prod_env, tmp_path: Path) -> None:
    done = defer_orch("state", "pull", "--to", str(tmp_path / "state"), "--json", env=cli_env(prod_env))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert set(document) >= {"version", "sha", "path", "created_at", "dbt_version"}
    assert document["sha"] == prod_env.repo_head and document["path"] == str((tmp_path / "state").resolve())
    from defer_orchestration.defs.manifest_resolution import latest_published_manifest

    published = latest_published_manifest(prod_env.instance)
    assert document["version"] == published.version
    assert sha256_file(tmp_path / "state" / "manifest.json") == published.manifest_sha256
    text = defer_orch("state", "pull", "--to", str(tmp_path / "again"), env=cli_env(prod_env))
    assert text.returncode == 0 and published.version[:12] in text.stdout and "--defer --state" in text.stdout


def test_state_pull_fails_with_one_line_when_something_is_missing(prod_env, tmp_path: Path) -> None:
    env = cli_env(prod_env)
    del env["DAGSTER_HOME"]
    unset = defer_orch("state", "pull", "--to", str(tmp_path / "s"), env=env)
    assert unset.returncode == 2 and "DAGSTER_HOME is not set" in unset.stderr
    assert len(unset.stderr.strip().splitlines()) == 1 and "Traceback" not in unset.stderr
    (tmp_path / "empty_home").mkdir()
    none = defer_orch("state", "pull", "--to", str(tmp_path / "s"), env={**env, "DAGSTER_HOME": str(tmp_path / "empty_home")})
    assert none.returncode == 1 and "no successful production build has published a manifest" in none.stderr
    assert len(none.stderr.strip().splitlines()) == 1 and "Traceback" not in none.stderr


def test_a_corrupt_published_manifest_is_refused_not_copied(tmp_path: Path) -> None:
    """A copy of a published version whose manifest was damaged after publication."""
    import dagster as dg

    from defer_orchestration.lib.manifest_store import ManifestStore
    from helpers import record_publication

    source = tmp_path / "build"
    source.mkdir()
    (source / "manifest.json").write_text('{"nodes": {}}')
    (source / "run_results.json").write_text('{"results": []}')
    stored = ManifestStore(tmp_path / "artifacts").publish(source)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        record_publication(instance, stored)
    (stored.path / "manifest.json").write_text('{"nodes": {"tampered": 1}}')
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFER_ORCH_")}
    done = defer_orch("state", "pull", "--to", str(tmp_path / "s"), env={**env, "DAGSTER_HOME": str(home)})
    assert done.returncode == 1 and "sha256" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "s" / "manifest.json").exists()


def test_status_lists_production_each_watched_branch_and_the_ttl_sweep(prod_env, tmp_path: Path) -> None:
    branch = "feature/status-shown"
    model = "dbt_project/models/marts/payment_method_summary.sql"
    push_branch(prod_env.repo, branch, {model: (prod_env.repo / model).read_text() + "\n-- status\n"}, tmp_path)
    result = run_branch(prod_env, branch)
    assert result.success
    try:
        done = defer_orch("status", "--json", env=cli_env(prod_env, DEFER_ORCH_SCHEMA_TTL_DAYS="0"))
        assert done.returncode == 0, done.stderr
        document = json.loads(done.stdout)
        assert document["production"]["sha"] == prod_env.repo_head
        entry = next(b for b in document["branches"] if b["branch"] == branch)
        assert entry["run_id"] == result.run_id and entry["state"] == "SUCCESS"
        assert entry["selected"] >= 1 and entry["manifest_version"] == document["production"]["version"]
        # TTL 0 days: every registered schema is due, this branch's among them.
        assert document["warehouse_problem"] is None
        assert entry["schema"] in {d["schema"] for d in document["ttl_due"]}
        text = defer_orch("status", env=cli_env(prod_env))
        assert text.returncode == 0 and branch in text.stdout and "production" in text.stdout
    finally:
        delete_branch(prod_env.repo, branch)


def test_an_unknown_command_or_option_is_a_usage_error() -> None:
    done = defer_orch("state", "pull", "--nope", env=dict(os.environ))
    assert done.returncode == 2 and "No such option" in done.stderr
    helped = defer_orch("--help", env=dict(os.environ))
    assert helped.returncode == 0 and "state" in helped.stdout and "status" in helped.stdout
