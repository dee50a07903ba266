"""Sensor ticks against a real git repository: no dbt, no warehouse."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from helpers import commit_all, delete_branch, git, init_repo

from defer_orchestration import constants as c
from defer_orchestration.defs.jobs import build_branch_ci_job
from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings
from defer_orchestration.defs.sensors import build_branch_ci_sensor, build_branch_teardown_sensor


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = init_repo(tmp_path / "repo")
    (repo / "README.md").write_text("hello\n")
    commit_all(repo, "initial")
    return repo


@pytest.fixture
def resources(tmp_path: Path, repo: Path) -> dict[str, object]:
    # The warehouse path points at a file that does not exist: a tick that opened it would fail.
    return {
        "settings": DeferOrchSettings(home=str(tmp_path / "home")),
        "branch_settings": BranchCiSettings(git_repo=str(repo), branch_exclude="wip/*"),
    }


def _commit_on(repo: Path, branch: str, text: str) -> str:
    git(repo, "checkout", "-q", "-B", branch)
    (repo / "file.txt").write_text(text)
    sha = commit_all(repo, text)
    git(repo, "checkout", "-q", "main")
    return sha


def _tick(sensor, instance, cursor, resources):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    return sensor.evaluate_tick(context)


def test_branch_ci_sensor_ticks(repo: Path, resources, tmp_path: Path) -> None:
    sensor = build_branch_ci_sensor()
    with dg.instance_for_test() as instance:
        first = _tick(sensor, instance, None, resources)
        assert first.run_requests == []  # only main exists

        sha_a = _commit_on(repo, "feature/a", "a1")
        _commit_on(repo, "wip/skip-me", "x")
        new_branch = _tick(sensor, instance, first.cursor, resources)
        assert [r.run_key for r in new_branch.run_requests] == [f"feature/a@{sha_a}"]
        request = new_branch.run_requests[0]
        assert request.tags[c.BRANCH_TAG] == "feature/a"
        assert request.tags[c.SHA_TAG] == sha_a
        assert request.run_config["ops"][c.BRANCH_BUILD_OP]["config"] == {
            "branch": "feature/a",
            "sha": sha_a,
        }
        assert json.loads(new_branch.cursor)["heads"] == {"feature/a": sha_a}

        # A restarted daemon re-evaluates with the same cursor: nothing new.
        assert _tick(sensor, instance, new_branch.cursor, resources).run_requests == []

        # A new commit gives a new run and cancels the branch's older, still queued run.
        old_run = instance.create_run_for_job(
            build_branch_ci_job(),
            run_config=request.run_config,
            tags=request.tags,
            status=dg.DagsterRunStatus.NOT_STARTED,
        )
        sha_a2 = _commit_on(repo, "feature/a", "a2")
        new_commit = _tick(sensor, instance, new_branch.cursor, resources)
        assert [r.run_key for r in new_commit.run_requests] == [f"feature/a@{sha_a2}"]
        assert instance.get_run_by_id(old_run.run_id).status == dg.DagsterRunStatus.CANCELED

        # A force push to an older commit is a new head too.
        git(repo, "branch", "-q", "-f", "feature/a", sha_a)
        forced = _tick(sensor, instance, new_commit.cursor, resources)
        assert [r.run_key for r in forced.run_requests] == [f"feature/a@{sha_a}"]

        # Deleting the branch gives no CI run, and drops it from the cursor.
        delete_branch(repo, "feature/a")
        deleted = _tick(sensor, instance, forced.cursor, resources)
        assert deleted.run_requests == []
        assert json.loads(deleted.cursor)["heads"] == {}


def test_teardown_sensor_requests_one_run_per_deleted_branch(repo: Path, resources) -> None:
    sensor = build_branch_teardown_sensor()
    with dg.instance_for_test() as instance:
        sha_a = _commit_on(repo, "feature/a", "a")
        _commit_on(repo, "feature/b", "b")
        seen = _tick(sensor, instance, None, resources)
        assert seen.run_requests == []
        delete_branch(repo, "feature/a")
        gone = _tick(sensor, instance, seen.cursor, resources)
        assert len(gone.run_requests) == 1
        request = gone.run_requests[0]
        assert request.run_key == f"teardown:feature/a@{sha_a}"
        assert request.run_config["ops"][c.BRANCH_TEARDOWN_OP]["config"]["branches"] == ["feature/a"]
        # Same cursor again (daemon restart): the same run_key, which Dagster de-duplicates;
        # the advanced cursor gives nothing.
        assert _tick(sensor, instance, gone.cursor, resources).run_requests == []


def test_unreachable_repository_skips_the_tick_with_a_reason(tmp_path: Path) -> None:
    resources = {
        "settings": DeferOrchSettings(home=str(tmp_path / "home")),
        "branch_settings": BranchCiSettings(git_repo=str(tmp_path / "missing")),
    }
    with dg.instance_for_test() as instance:
        result = _tick(build_branch_ci_sensor(), instance, None, resources)
    assert result.run_requests == []
    assert "could not list branches" in result.skip_message
