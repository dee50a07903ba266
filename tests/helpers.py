"""Test helpers: real git repositories and scratch copies of the bundled dbt project."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from defer_orchestration.resources import BUNDLED_DBT_PROJECT_DIR

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity and no user/system config."""
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.parent)}
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def init_repo(repo: Path) -> Path:
    """An empty repository on branch ``main``."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    return repo


def commit_all(repo: Path, message: str) -> str:
    """Commit everything in the work tree; return the new HEAD sha."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def copy_bundled_project(dest: Path) -> Path:
    """A scratch copy of the bundled dbt project (without anything dbt generated)."""
    shutil.copytree(
        BUNDLED_DBT_PROJECT_DIR,
        dest,
        ignore=shutil.ignore_patterns("target", "logs", "dbt_packages", "*.duckdb", ".user.yml"),
    )
    return dest


def repo_with_bundled_project(repo: Path, subdir: str = "dbt_project") -> Path:
    """A git repository whose ``main`` holds the bundled project at ``subdir``; returns the repo."""
    init_repo(repo)
    copy_bundled_project(repo / subdir)
    commit_all(repo, "bundled dbt project")
    return repo


def push_branch(repo: Path, branch: str, edits: dict[str, str | None], scratch: Path) -> str:
    """Push ``branch`` (from main) with ``edits`` applied, as a developer would; return its sha.

    ``edits`` maps paths relative to the repository to new contents (None deletes). The
    work is done in a throwaway clone so the repository's own checkout is never touched.
    """
    clone = scratch / f"clone-{abs(hash(branch)) % 10**8}-{len(list(scratch.glob('clone-*')))}"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True, capture_output=True)
    git(clone, "checkout", "-q", "-b", branch, "origin/main")
    for relative, content in edits.items():
        path = clone / relative
        if content is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    sha = commit_all(clone, f"change on {branch}")
    git(clone, "push", "-q", "--force", "origin", f"HEAD:refs/heads/{branch}")
    shutil.rmtree(clone)
    return sha


def delete_branch(repo: Path, branch: str) -> None:
    """Delete a branch in the repository (as after a merged pull request)."""
    git(repo, "branch", "-q", "-D", branch)


def run_branch(env, branch: str, instance=None, **config):
    """Launch ``branch_ci_job`` in-process for ``branch`` with launchpad ``config``."""
    from defer_orchestration import constants as c

    return env.defs.resolve_job_def(c.BRANCH_CI_JOB).execute_in_process(
        run_config={"ops": {c.BRANCH_BUILD_OP: {"config": {"branch": branch, **config}}}},
        instance=instance or env.instance,
        raise_on_error=False,
    )


def step_metadata(result) -> dict[str, object]:
    """Output metadata of the branch step; on failure its failure metadata plus
    ``__failure__`` (the failure description)."""
    for event in result.all_node_events:
        if event.is_successful_output:
            return {k: v.value for k, v in event.event_specific_data.metadata.items()}
        if event.is_step_failure:
            data = event.event_specific_data
            failure = data.user_failure_data
            meta = {k: v.value for k, v in (failure.metadata if failure else {}).items()}
            return {"__failure__": (failure.description if failure else "") + str(data.error), **meta}
    return {}


def branch_run_results(env, result) -> dict[str, dict]:
    """unique_id -> result entry of the branch run's dbt run_results.json."""
    import json

    path = env.settings.core().run_dir(result.run_id) / "branch" / "target" / "run_results.json"
    return {r["unique_id"]: r for r in json.loads(path.read_text())["results"]}


@contextmanager
def fast_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory on tmpfs when there is one (else under the system temp dir).

    Dagster's SQLite event log fsyncs once per event and a production build writes one
    per dbt node: on a real disk that adds ~10 s per build. Removed afterwards.
    """
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and shutil.disk_usage(shm).free > 2 * 1024**3 else None
    path = Path(tempfile.mkdtemp(prefix=f"defer_orch_{prefix}_", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def record_publication(instance, stored, *, created_at: float | None = None) -> None:
    """Record in ``instance`` what ``prod_manifest`` records when it publishes ``stored``
    (a ``ManifestStore`` version): the fields manifest resolution reads."""
    import time

    import dagster as dg

    from defer_orchestration import constants as c

    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=c.PROD_MANIFEST_ASSET,
            metadata={
                "store_path": dg.MetadataValue.path(str(stored.path)),
                "sha256": stored.files["manifest.json"],
                "run_results_sha256": stored.files["run_results.json"],
                "dbt_version": "1.11.0",
                "created_at": dg.MetadataValue.timestamp(
                    time.time() if created_at is None else created_at
                ),
            },
        )
    )


# --- parses compared (tests of dbt/parse_cache.py's template) ---------------------------

# Fields that differ between two parses of the same files whatever the route.
_VOLATILE = {"created_at", "generated_at", "invocation_id", "invocation_started_at"}


def comparable(manifest: dict) -> dict:
    """A manifest without its timestamps and invocation ids: what two parses of the same
    files with the same profile must agree on, node by node."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return {k: strip(v) for k, v in manifest.items() if k != "metadata"}


def assert_same_parse(got: dict, fresh: dict) -> None:
    """Equal, section by section and node by node, with the first difference named."""
    got, fresh = comparable(got), comparable(fresh)
    assert sorted(got) == sorted(fresh)
    for section in fresh:
        if isinstance(fresh[section], dict):
            assert sorted(got[section]) == sorted(fresh[section]), section
            for key in fresh[section]:
                assert got[section][key] == fresh[section][key], f"{section}[{key}] differs"
        else:
            assert got[section] == fresh[section], section


def branch_manifest(env, result) -> dict:
    import json

    """The run's manifest.json, its own scratch directory (compiled paths) named ``<run>``."""
    run_dir = env.settings.core().run_dir(result.run_id)
    text = (run_dir / "branch" / "target" / "manifest.json").read_text()
    return json.loads(text.replace(json.dumps(str(run_dir))[1:-1], "<run>"))
