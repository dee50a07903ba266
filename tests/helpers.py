"""Test helpers: real git repositories and scratch copies of the bundled dbt project."""

from __future__ import annotations

import os
import shutil
import subprocess
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
