"""The baseline of measurement 2: the same branch commit built by the raw dbt CLI.

``dbt build --select state:modified+ --defer --state <published manifest dir>`` on a
``git worktree`` of the commit, with a profiles.yml into the same warehouse (its own
schema) and a fresh target dir: what a team without the orchestration would run. The
"seeded" variant first parses ``main`` into the target dir with the same profile, so
the build finds a ``partial_parse.msgpack`` there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import BenchError, dbt_env, dbt_executable, git
from benchmarks.dbt_log import dbt_split, log_sections

_NOT_PARTIAL = "Unable to do partial parsing"


def _run_results(target: Path) -> dict[str, Any] | None:
    path = target / "run_results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class RawCli:
    """Raw dbt CLI builds of commits of ``repo`` (project in ``repo/subdir``), deferring to
    the production manifest in ``state_dir``; scratch files under ``root``."""

    def __init__(
        self, repo: Path, subdir: str, *, settings: Any, main_sha: str, state_dir: Path, root: Path
    ) -> None:
        self.repo = repo
        self.subdir = subdir
        self.settings = settings  # the product's plain Settings: warehouse and dbt threads
        self.main_sha = main_sha
        self.state_dir = state_dir
        self.root = root

    def _profiles(self, dest: Path, schema: str) -> Path:
        from defer_orchestration.dbt.profiles import profile_name, write_profiles_dir

        return write_profiles_dir(
            dest,
            profile_name(self.repo / self.subdir),
            {"branch": self.settings.warehouse.dbt_output(schema, threads=self.settings.threads)},
            default_target="branch",
        )

    @contextlib.contextmanager
    def _checkout(self, sha: str, dest: Path) -> Iterator[Path]:
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        git(self.repo, "worktree", "add", "-q", "--detach", "--force", os.fspath(dest), sha)
        try:
            yield dest / self.subdir
        finally:
            git(self.repo, "worktree", "remove", "--force", "--force", os.fspath(dest))

    def seed_parse(self, profiles: Path, target: Path, label: str) -> float:
        """``dbt parse`` of main into ``target`` with the run's own profile; its seconds.

        Leaves ``partial_parse.msgpack`` there, as a branch's previous run (or a parse of
        its merge-base with the branch's profile) would. dbt reuses it only when dbt
        version, --vars, profile/target names, the profile's connection info (including
        the *schema*) and dbt_project.yml match; the project's path may differ (main is
        checked out at another path than the branch, as the product's worktrees are).
        """
        seed_dir = self.root / f"{label}-seed"
        with self._checkout(self.main_sha, seed_dir / "main") as project_dir:
            command = [
                dbt_executable(), "parse", "--target", "branch",
                "--project-dir", os.fspath(project_dir), "--profiles-dir", os.fspath(profiles),
                "--target-path", os.fspath(target), "--log-path", os.fspath(seed_dir / "logs"),
            ]
            started = time.perf_counter()
            done = subprocess.run(command, cwd=project_dir, env=dbt_env(), capture_output=True, text=True)
            seconds = time.perf_counter() - started
        if done.returncode != 0 or not (target / "partial_parse.msgpack").is_file():
            raise BenchError(f"seed parse failed:\n{(done.stdout + done.stderr)[-3000:]}")
        for name in ("manifest.json", "semantic_manifest.json", "run_results.json"):
            (target / name).unlink(missing_ok=True)
        shutil.rmtree(seed_dir, ignore_errors=True)
        return seconds

    def build(self, sha: str, label: str, *, seeded: bool = False) -> dict[str, Any]:
        """Raw ``dbt build --select state:modified+ --defer --state <manifest>`` of ``sha``:
        wall seconds, the dbt.log split, the nodes it ran."""
        base = self.root / label
        shutil.rmtree(base, ignore_errors=True)
        profiles = self._profiles(base / "profiles", f"cli_{label}".replace("-", "_"))
        target = base / "target"
        target.mkdir(parents=True)
        seed_seconds = self.seed_parse(profiles, target, label) if seeded else None
        with self._checkout(sha, base / "checkout") as project_dir:
            command = [
                dbt_executable(), "build", "--select", "state:modified+", "--defer",
                "--state", os.fspath(self.state_dir), "--target", "branch",
                "--project-dir", os.fspath(project_dir), "--profiles-dir", os.fspath(profiles),
                "--target-path", os.fspath(target), "--log-path", os.fspath(base / "logs"),
            ]
            spawned = time.time()
            started = time.perf_counter()
            done = subprocess.run(command, cwd=project_dir, env=dbt_env(), capture_output=True, text=True)
            wall = time.perf_counter() - started
            exited = time.time()
        results = _run_results(target)
        if done.returncode != 0 or results is None:
            raise BenchError(f"raw dbt build of {sha[:12]} failed:\n{(done.stdout + done.stderr)[-3000:]}")
        output = done.stdout + done.stderr
        sections = log_sections(base / "logs")
        shutil.rmtree(base / "checkout", ignore_errors=True)
        return {
            "wall_seconds": wall,
            "dbt_split": dbt_split(sections[-1], spawned, exited) if sections else None,
            "selected_nodes": sorted(r["unique_id"] for r in results["results"]),
            "partial_parse_used": _NOT_PARTIAL not in output and "Starting full parse" not in output,
            "seed_parse_seconds": seed_seconds,
        }
