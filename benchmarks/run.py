"""Benchmark runner for defer-orchestration's slim CI (issue 6).

    python -m benchmarks.run --sizes 100 1000 --repeats 3 --out benchmarks/results/latest.json

Measures, on projects made by :mod:`benchmarks.generate_project`:

1. **slim vs full**: ``branch_ci_job`` run end to end through Dagster (in-process,
   ``execute_in_process`` on a local instance) for a leaf, a mid-DAG and a hub change,
   against a full build (``select: "fqn:*"``) of the same branch commit.
2. **orchestration overhead**: the same slim branch run vs the raw CLI
   ``dbt build --select state:modified+ --defer --state <published manifest dir>`` on a
   checkout of the branch commit, with a fresh target dir, into the same warehouse.
   A second CLI variant ("seeded") first parses ``main`` into the target dir with the
   run's own profile, leaving a ``partial_parse.msgpack`` there (what a cached parse of
   the branch's previous push or of its merge-base would give), and times only the
   build: what skipping the full parse would save. Each branch is then pushed again
   (the same model changed once more) and run again: the product starts that run from
   the branch's previous parse. Every Dagster run is also split into phases (mirror
   fetch, worktree, the dbt session's parse / ls / build, artifacts + summary, Dagster
   itself) by timing the product's functions in-process; no product code is changed.
3. **code-location load**: ``build_definitions`` in a fresh subprocess, first load (dbt
   parse) and warm load (parsed manifest cached), with seconds and peak RSS.
4. **sensor tick**: ``branch_ci_sensor.evaluate_tick`` with 1 / 100 / 1,000 branches
   (first tick: every branch new; steady state: nothing new; one branch moved).

Results are printed as markdown tables and written as JSON (``--out``). Timings are
medians over ``--repeats`` runs with min-max; ratios are taken within one invocation.
Benchmarks are not tests: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if os.fspath(REPO_ROOT) not in sys.path:
    sys.path.insert(0, os.fspath(REPO_ROOT))

from benchmarks.generate_project import GeneratedProject, generate_project  # noqa: E402

SCHEMA_VERSION = 1
CHANGES = ("leaf", "mid", "hub")
MEASUREMENTS = ("slim", "overhead", "load", "sensor", "contention")
TARGETS = {
    "leaf_slim_over_full_at_1000": 0.10,
    "dagster_over_cli": 1.10,
    "second_push_over_cli": 1.0,  # "then go under 1.0x" (strictly below)
    "sensor_tick_seconds_at_1000_branches": 1.0,
}
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}
_NOT_PARTIAL = "Unable to do partial parsing"


class BenchError(RuntimeError):
    """A benchmark step did not do what it must (a failed run, a wrong selection)."""


# Small helpers ----------------------------------------------------------------------------


def log(message: str) -> None:
    """Progress on stderr, with a timestamp (stdout carries the tables)."""
    stamp = _dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def stats(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and the samples themselves (seconds or MB)."""
    values = [float(v) for v in samples]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "samples": []}
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "n": len(values),
        "samples": [round(v, 4) for v in values],
    }


def ratio(numerator: dict[str, Any] | None, denominator: dict[str, Any] | None) -> float | None:
    """Ratio of two medians, or None when either is missing."""
    if not numerator or not denominator:
        return None
    a, b = numerator.get("median"), denominator.get("median")
    if a is None or not b:
        return None
    return round(a / b, 4)


def git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    """git with a fixed identity and no user or system configuration."""
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **_GIT_ENV},
        input=stdin,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def dbt_executable() -> str:
    """The dbt next to this interpreter (the product's own rule)."""
    from defer_orchestration.dbt.cli import dbt_executable as find

    return find()


def dbt_env() -> dict[str, str]:
    """Environment of every dbt subprocess the runner starts (same as the product's)."""
    return {
        **os.environ,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_USE_COLORS": "false",
    }


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import importlib.metadata as md

    versions = {}
    for dist in ("dagster", "dagster-dbt", "dbt-core", "dbt-duckdb", "duckdb"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "cpus": os.cpu_count(),
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in load] if load else None,
        "versions": versions,
    }


# What one dbt invocation spent its time on (from its dbt.log) ----------------------------

# (segment, marker that ends it); a segment starts where the previous one ended, the
# first at the process spawn. Markers are the first matching line of the invocation.
_DBT_MARKERS = {
    "adapter": "[info ] [MainThread]: Registered adapter:",
    "manifest_written": "[MainThread]: Wrote artifact WritableManifest",
    "found": "[info ] [MainThread]: Found ",
    "concurrency": "[info ] [MainThread]: Concurrency:",
    "finished": "[info ] [MainThread]: Finished running ",
    "end": "[MainThread]: Command `dbt ",
}
DBT_SEGMENTS = ("startup", "parse", "select", "execute", "write_artifacts", "exit")


def _seconds_of_day(text: str) -> float | None:
    try:
        h, m, rest = text.split(":")
        return int(h) * 3600 + int(m) * 60 + float(rest)
    except ValueError:
        return None


def dbt_log_invocations(log_file: Path) -> list[dict[str, float]]:
    """Per invocation in ``dbt.log`` (in order): seconds-of-day of each marker's first line."""
    if not log_file.is_file():
        return []
    sections: list[dict[str, float]] = []
    for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("====") and " | " in line:
            sections.append({})
            continue
        if not sections or len(line) < 16 or line[2] != ":":
            continue
        for marker, needle in _DBT_MARKERS.items():
            if marker not in sections[-1] and needle in line:
                stamp = _seconds_of_day(line[:15])
                if stamp is not None:
                    sections[-1][marker] = stamp
    return sections


def _wall_to_seconds_of_day(wall: float) -> float:
    moment = _dt.datetime.fromtimestamp(wall)
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


def dbt_split(markers: dict[str, float], spawned: float, exited: float) -> dict[str, float | None]:
    """An invocation's wall time split into segments (seconds; None where a marker is missing).

    startup: process spawn to "Registered adapter" (interpreter, imports, flags, project
    and profile); parse: to the first "Wrote artifact WritableManifest" (full parse, or
    loading and checking ``partial_parse.msgpack``, then writing manifest.json and
    partial_parse.msgpack); select: to "Concurrency" for a build (reading --state,
    state:modified selection, deferral, graph), for ``ls`` everything up to the end;
    execute: the nodes; write_artifacts: manifest and run_results after the run; exit:
    the end line to the process exit (usage-event flush, interpreter shutdown).
    """
    start = _wall_to_seconds_of_day(spawned)
    stop = _wall_to_seconds_of_day(exited)
    if stop < start:  # past midnight
        stop += 86400
    points = {k: (v + 86400 if v < start - 3600 else v) for k, v in markers.items()}
    chain = [("startup", "adapter"), ("parse", "manifest_written")]
    if "concurrency" in points:
        chain += [("select", "concurrency"), ("execute", "finished"), ("write_artifacts", "end")]
    else:
        chain += [("select", "end")]
    out: dict[str, float | None] = {k: None for k in DBT_SEGMENTS}
    previous = start
    for segment, marker in chain:
        if marker not in points:
            return out | {"total": exited - spawned}
        if segment == "parse" and "concurrency" in points and points[marker] > points["concurrency"]:
            # A build in the product's dbt session reuses the session's parse: the only
            # manifest it writes is the one after the run.
            out[segment] = 0.0
            continue
        out[segment] = max(points[marker] - previous, 0.0)
        previous = points[marker]
    out["exit"] = max(stop - previous, 0.0)
    out["total"] = exited - spawned
    return out


def product_info() -> dict[str, Any]:
    """Which product code was measured (the repository's HEAD and whether it was modified)."""
    try:
        sha = git(REPO_ROOT, "rev-parse", "HEAD")
        dirty = git(REPO_ROOT, "status", "--porcelain", "--", "defer_orchestration")
    except (BenchError, OSError):
        return {"git_sha": None, "dirty_files": None}
    return {"git_sha": sha, "dirty_files": [line[3:] for line in dirty.splitlines()]}


# Phase timing of one in-process branch run ------------------------------------------------


class PhaseRecorder:
    """Times the product's own functions during a run, by wrapping them in place.

    Times are *exclusive*: a wrapped function called inside another wrapped function
    is subtracted from its caller, so the phases add up to the run's wall time minus
    what Dagster itself spends (``dagster`` = wall - sum of phases). Only used around
    in-process ``execute_in_process`` calls (the op runs in this thread).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[list[float]] = []  # [start, time spent in wrapped callees]
        self._undo: list[tuple[object, str, object]] = []
        self.dbt_calls: list[tuple[str, float, float, Path]] = []  # command, spawned, exited, log dir

    def _enter(self) -> None:
        self._stack.append([time.perf_counter(), 0.0])

    def _exit(self, label: str) -> None:
        start, inner = self._stack.pop()
        elapsed = time.perf_counter() - start
        self.seconds[label] += elapsed - inner
        if self._stack:
            self._stack[-1][1] += elapsed

    def wrap(self, owner: object, attr: str, label: str | Callable[..., str]) -> None:
        original = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            name = label(*args, **kwargs) if callable(label) else label
            self._enter()
            try:
                return original(*args, **kwargs)
            finally:
                self._exit(name)

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def wrap_context_manager(self, owner: object, attr: str, label: str) -> None:
        """Time entering and leaving (opening, closing); the block's body counts for its caller."""
        original = getattr(owner, attr)

        @contextlib.contextmanager
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            manager = original(*args, **kwargs)
            self._enter()
            try:
                value = manager.__enter__()
            finally:
                self._exit(label)
            try:
                yield value
            except BaseException:
                self._enter()
                try:
                    if not manager.__exit__(*sys.exc_info()):
                        raise
                finally:
                    self._exit(label)
            else:
                self._enter()
                try:
                    manager.__exit__(None, None, None)
                finally:
                    self._exit(label)

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def __enter__(self) -> PhaseRecorder:
        from defer_orchestration.branch import build as branch_build
        from defer_orchestration.defs import jobs
        from defer_orchestration.dbt import artifacts as dbt_artifacts
        from defer_orchestration.lib import git as product_git
        from defer_orchestration.warehouse import duckdb as warehouse

        self.wrap(jobs, "_resolve_state", "resolve_manifest")
        self.wrap(jobs, "run_branch_build", "branch_build_other")
        self.wrap(jobs, "report_metadata", "report_metadata")
        self.wrap(product_git, "ensure_mirror", "git_mirror")
        self.wrap(product_git, "resolve_commit", "git_mirror")
        self.wrap(product_git, "add_worktree", "worktree")
        self.wrap(product_git, "remove_worktree", "worktree")
        # Steps the product may or may not have (it evolves): wrapped when present.
        for owner, attr, label in (
            (product_git, "merge_base", "git_mirror"),
            (branch_build, "choose_comparison", "choose_comparison"),
            (branch_build, "_preflight_and_clone", "preflight"),
            (branch_build, "_impact", "data_diff"),
        ):
            if hasattr(owner, attr):
                self.wrap(owner, attr, label)
        # Opening and closing the warehouse file (the queries inside count for their step).
        self.wrap_context_manager(warehouse, "connect", "warehouse_open")
        self.wrap(warehouse, "register_branch_schema", "warehouse_register")
        # dbt: the merge-base parse (a CLI process) and the run's dbt session commands.
        self.wrap(branch_build, "run_dbt", lambda args, *a, **k: f"dbt_{args[0]}")
        # A session command is sent (submit) and later waited for; the phase is the time
        # the run is blocked waiting, the dbt split spans sending to the reply.
        from defer_orchestration.dbt.session import DbtSession, PendingCommand

        self.wrap(PendingCommand, "wait", lambda pending, *a, **k: f"dbt_{pending.args[0]}")
        self.wrap(DbtSession, "close", "dbt_session_exit")
        timed_wait, submit = PendingCommand.wait, DbtSession.submit
        sent: dict[int, float] = {}

        def timed_submit(session: Any, *a: Any, **k: Any) -> Any:
            pending = submit(session, *a, **k)
            sent[id(pending)] = time.time()
            return pending

        def wait(pending: Any, *a: Any, **k: Any) -> Any:
            try:
                return timed_wait(pending, *a, **k)
            finally:
                spawned = sent.pop(id(pending), time.time())
                self.dbt_calls.append((pending.args[0], spawned, time.time(), Path(pending.paths.log_path)))

        self._undo.append((DbtSession, "submit", submit))
        setattr(DbtSession, "submit", timed_submit)
        setattr(PendingCommand, "wait", wait)
        self.wrap(branch_build, "summarize", "summary")
        self.wrap(dbt_artifacts, "load_json", "load_artifacts")
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()


PHASES = (
    "dagster",
    "resolve_manifest",
    "git_mirror",
    "choose_comparison",
    "worktree",
    "warehouse_open",
    "warehouse_register",
    "dbt_parse",
    "dbt_ls",
    "preflight",
    "dbt_build",
    "dbt_session_exit",
    "data_diff",
    "load_artifacts",
    "summary",
    "branch_build_other",
    "report_metadata",
)


# 1 + 2: branch runs through Dagster, full builds, raw CLI --------------------------------


def _output_metadata(result: Any) -> dict[str, Any]:
    for event in result.all_node_events:
        if event.is_successful_output:
            return {k: getattr(v, "value", v) for k, v in event.event_specific_data.metadata.items()}
    return {}


def _failure_text(result: Any) -> str:
    for event in result.all_node_events:
        if event.is_step_failure:
            data = event.event_specific_data
            desc = data.user_failure_data.description if data.user_failure_data else ""
            return f"{desc}\n{data.error.to_string() if data.error else ''}"[-3000:]
    return "(no step failure event)"


def _run_results(target: Path) -> dict[str, Any] | None:
    path = target / "run_results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class BranchBench:
    """One generated project of N models in a git repo, a production build, and its branches."""

    def __init__(self, n_models: int, root: Path, *, threads: int = 2, data_diff: bool | None = None) -> None:
        import dagster as dg

        from defer_orchestration import constants as c
        from defer_orchestration.branch.build import mirror_dir
        from defer_orchestration.definitions import build_definitions
        from defer_orchestration.lib import git as product_git
        from defer_orchestration.defs.manifest_resolution import latest_published_manifest
        from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings

        self.c = c
        self.n = n_models
        self.data_diff = data_diff  # None: the product's default
        self.root = root
        shutil.rmtree(root, ignore_errors=True)
        self.repo = root / "repo"
        self.repo.mkdir(parents=True)
        git(self.repo, "init", "-q", "-b", "main")
        self.project = generate_project(self.repo / "bench", n_models, seed=0)
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", f"generated bench project, {n_models} models")
        self.main_sha = git(self.repo, "rev-parse", "HEAD")
        # Branches are made in a developer clone and pushed, as in real life.
        self.dev = root / "dev"
        git(root, "clone", "-q", os.fspath(self.repo), os.fspath(self.dev))
        self.dev_project = GeneratedProject.load(self.dev / "bench")

        self.settings = DeferOrchSettings(
            home=os.fspath(root / "home"), dbt_project_dir=os.fspath(self.repo / "bench"), threads=threads
        )
        self.branch_settings = BranchCiSettings(git_repo=os.fspath(self.repo), project_subdir="bench")
        started = time.monotonic()
        self.defs = build_definitions(self.settings, self.branch_settings)
        self.defs.get_repository_def()
        self.load_seconds = time.monotonic() - started
        (root / "dagster_home").mkdir()
        self.instance = dg.DagsterInstance.local_temp(os.fspath(root / "dagster_home"))

        log(f"N={n_models}: production build (prod_build_job)")
        started = time.monotonic()
        echoed = io.StringIO()  # dagster-dbt echoes dbt's output on stdout; stdout is for tables
        with contextlib.redirect_stdout(echoed):
            prod = self.defs.resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(
                instance=self.instance, run_config=_QUIET, raise_on_error=False
            )
        self.prod_seconds = time.monotonic() - started
        if not prod.success:
            raise BenchError(
                f"production build of the {n_models}-model project failed:\n{echoed.getvalue()[-3000:]}"
            )
        self.published = latest_published_manifest(self.instance)
        log(f"N={n_models}: production build done in {self.prod_seconds:.1f}s")
        # The first branch run would clone our private mirror; steady state is a fetch.
        repo = self.branch_settings.repo(self.settings)
        product_git.ensure_mirror(repo, mirror_dir(self.settings, repo))

    def model_for(self, change: str) -> str:
        return {"leaf": self.project.leaf_model, "mid": self.project.mid_model, "hub": self.project.hub_model}[change]

    def push_change(self, branch: str, change: str) -> str:
        """Push ``branch`` = main + one changed model; return its sha."""
        git(self.dev, "checkout", "-q", "-B", branch, "origin/main")
        self.dev_project.change_model(self.model_for(change))
        git(self.dev, "commit", "-q", "-am", f"bench: change the {change} model")
        git(self.dev, "push", "-q", "--force", "origin", f"HEAD:refs/heads/{branch}")
        sha = git(self.dev, "rev-parse", "HEAD")
        git(self.dev, "checkout", "-q", "--detach", "origin/main")
        return sha

    def push_ref(self, branch: str, sha: str) -> None:
        """Another branch name at an existing commit (its own, fresh schema)."""
        git(self.repo, "update-ref", f"refs/heads/{branch}", sha)

    def run_dagster(self, branch: str, *, select: str | None = None) -> dict[str, Any]:
        """``branch_ci_job`` in-process; wall seconds, product metadata and phase split."""
        config: dict[str, Any] = {"branch": branch}
        if select:
            config["select"] = select
        if self.data_diff is not None:
            config["data_diff"] = self.data_diff
        job = self.defs.resolve_job_def(self.c.BRANCH_CI_JOB)
        with PhaseRecorder() as phases:
            started = time.perf_counter()
            result = job.execute_in_process(
                run_config={"ops": {"branch_build": {"config": config}}, **_QUIET},
                instance=self.instance,
                raise_on_error=False,
            )
            wall = time.perf_counter() - started
        if not result.success:
            raise BenchError(f"branch_ci_job for {branch!r} failed:\n{_failure_text(result)}")
        metadata = _output_metadata(result)
        split = dict(phases.seconds)
        split["dagster"] = wall - sum(split.values())
        dbt: dict[str, Any] = {}
        seen: dict[Path, int] = {}
        for command, spawned, exited, log_dir in phases.dbt_calls:
            index = seen[log_dir] = seen.get(log_dir, -1) + 1
            sections = dbt_log_invocations(log_dir / "dbt.log")
            if index < len(sections):
                dbt[command] = dbt_split(sections[index], spawned, exited)
        return {
            "branch": branch,
            "wall_seconds": wall,
            "selected": int(metadata.get("nodes/selected", 0)),
            "built": int(metadata.get("nodes/built", 0)),
            "tests_passed": int(metadata.get("nodes/tests_passed", 0)),
            "deferred": int(metadata.get("nodes/deferred", 0)),
            "selected_nodes": sorted(metadata.get("selected_nodes") or []),
            "dbt_parse_seconds": float(metadata.get("dbt_parse_seconds", 0.0)),
            "dbt_ls_seconds": float(metadata.get("dbt_ls_seconds", 0.0)),
            "dbt_build_seconds": float(metadata.get("dbt_build_seconds", 0.0)),
            "branch_node_seconds": float(metadata.get("branch_node_seconds", 0.0)),
            "previous_parse": metadata.get("previous_parse"),
            "phases": {k: round(split.get(k, 0.0), 4) for k in PHASES},
            "dbt_parse_split": dbt.get("parse"),
            "dbt_ls_split": dbt.get("ls"),
            "dbt_build_split": dbt.get("build"),
        }

    # The raw CLI --------------------------------------------------------------------------

    def _profiles(self, dest: Path, schema: str) -> Path:
        from defer_orchestration.dbt.profiles import profile_name, write_profiles_dir

        return write_profiles_dir(
            dest,
            profile_name(self.repo / "bench"),
            {"branch": self.settings.dbt_output(schema)},
            default_target="branch",
        )

    @contextlib.contextmanager
    def _checkout(self, sha: str, dest: Path) -> Iterator[Path]:
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        git(self.repo, "worktree", "add", "-q", "--detach", "--force", os.fspath(dest), sha)
        try:
            yield dest / "bench"
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
        seed_dir = self.root / "cli" / f"{label}-seed"
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

    def run_cli(self, sha: str, label: str, *, seeded: bool = False) -> dict[str, Any]:
        """Raw ``dbt build --select state:modified+ --defer --state <manifest>`` of ``sha``."""
        base = self.root / "cli" / label
        shutil.rmtree(base, ignore_errors=True)
        profiles = self._profiles(base / "profiles", f"cli_{label}".replace("-", "_"))
        target = base / "target"
        target.mkdir(parents=True)
        seed_seconds = self.seed_parse(profiles, target, label) if seeded else None
        with self._checkout(sha, base / "checkout") as project_dir:
            command = [
                dbt_executable(), "build", "--select", "state:modified+", "--defer",
                "--state", os.fspath(self.published.path), "--target", "branch",
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
        sections = dbt_log_invocations(base / "logs" / "dbt.log")
        shutil.rmtree(base / "checkout", ignore_errors=True)
        return {
            "wall_seconds": wall,
            "dbt_split": dbt_split(sections[-1], spawned, exited) if sections else None,
            "selected_nodes": sorted(r["unique_id"] for r in results["results"]),
            "partial_parse_used": _NOT_PARTIAL not in output and "Starting full parse" not in output,
            "seed_parse_seconds": seed_seconds,
        }


def bench_branch_runs(
    n_models: int,
    root: Path,
    *,
    repeats: int,
    changes: Sequence[str],
    overhead: bool,
    seeded: bool,
    warmup: bool = True,
    data_diff: bool | None = None,
) -> dict[str, Any]:
    """Slim vs full (and the raw CLI) for one project size."""
    bench = BranchBench(n_models, root, data_diff=data_diff)
    if warmup:
        # Untimed (the first dbt invocations after a production build are slower: cold
        # caches of dbt's imports, the mirror, the warehouse file).
        log(f"N={n_models}: warm-up branch run (not measured)")
        warmup_sha = bench.push_change("bench/warmup", changes[0])
        bench.run_dagster("bench/warmup")
        if overhead:
            bench.run_cli(warmup_sha, "warmup")
    runs: list[dict[str, Any]] = []
    for rep in range(repeats):
        shas: dict[str, str] = {}
        for change in changes:
            branch = f"bench/r{rep}-{change}"
            sha = shas[change] = bench.push_change(branch, change)
            log(f"N={n_models} repeat {rep + 1}/{repeats}: {change} change, slim through Dagster")
            slim = bench.run_dagster(branch)
            runs.append({"kind": "slim", "change": change, "repeat": rep, **slim})
            log(f"  slim {slim['wall_seconds']:.1f}s ({slim['selected']} nodes selected)")
            if overhead:
                cli = bench.run_cli(sha, f"r{rep}-{change}")
                if cli["selected_nodes"] != slim["selected_nodes"]:
                    raise BenchError(
                        f"raw CLI selected {len(cli['selected_nodes'])} nodes, Dagster "
                        f"{len(slim['selected_nodes'])} for the {change} change"
                    )
                runs.append({"kind": "cli", "change": change, "repeat": rep, **cli})
                log(f"  raw CLI {cli['wall_seconds']:.1f}s")
            # The same branch pushed again (the same model changed once more): the run
            # starts from the branch's previous parse (the product's parse cache).
            bench.push_change(branch, change)
            log(f"N={n_models} repeat {rep + 1}/{repeats}: {change} change pushed again, slim through Dagster")
            again = bench.run_dagster(branch)
            if again["selected_nodes"] != slim["selected_nodes"]:
                raise BenchError(f"the second push of the {change} branch selected different nodes")
            runs.append({"kind": "slim_again", "change": change, "repeat": rep, **again})
            log(f"  second push {again['wall_seconds']:.1f}s (previous parse: {again['previous_parse']})")
            if seeded:
                cli_seeded = bench.run_cli(sha, f"r{rep}-{change}-seeded", seeded=True)
                if cli_seeded["selected_nodes"] != slim["selected_nodes"]:
                    raise BenchError(f"seeded raw CLI selected different nodes for the {change} change")
                runs.append({"kind": "cli_seeded", "change": change, "repeat": rep, **cli_seeded})
                log(
                    f"  raw CLI, seeded partial parse {cli_seeded['wall_seconds']:.1f}s "
                    f"(partial parse used: {cli_seeded['partial_parse_used']})"
                )
        # One full build per repeat, of one of this repeat's branch commits (rotating):
        # a full build's cost does not depend on which model the branch changed.
        change = changes[rep % len(changes)]
        branch = f"bench/r{rep}-{change}-full"
        bench.push_ref(branch, shas[change])
        log(f"N={n_models} repeat {rep + 1}/{repeats}: full build of the {change} branch")
        full = bench.run_dagster(branch, select="fqn:*")
        runs.append({"kind": "full", "change": change, "repeat": rep, **full})
        log(f"  full {full['wall_seconds']:.1f}s ({full['selected']} nodes)")
    for run in runs:
        run.pop("selected_nodes", None)
    return summarize_branch_runs(bench, runs, changes)


def _median_split(splits: Sequence[dict[str, float | None] | None]) -> dict[str, float | None] | None:
    """Median of each segment over runs (None when no run had it)."""
    present = [x for x in splits if x]
    if not present:
        return None
    out: dict[str, float | None] = {}
    for key in (*DBT_SEGMENTS, "total"):
        values = [x[key] for x in present if x.get(key) is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    return out


def summarize_branch_runs(bench: BranchBench, runs: list[dict[str, Any]], changes: Sequence[str]) -> dict[str, Any]:
    """Per change: slim, full, CLI stats, ratios and the median phase split."""

    def pick(kind: str, change: str | None = None) -> list[dict[str, Any]]:
        return [r for r in runs if r["kind"] == kind and (change is None or r["change"] == change)]

    full = stats([r["wall_seconds"] for r in pick("full")])
    per_change = {}
    for change in changes:
        slim_runs = pick("slim", change)
        slim = stats([r["wall_seconds"] for r in slim_runs])
        again_runs = pick("slim_again", change)
        again = stats([r["wall_seconds"] for r in again_runs]) if again_runs else None
        cli_runs = pick("cli", change)
        seeded_runs = pick("cli_seeded", change)
        cli = stats([r["wall_seconds"] for r in cli_runs]) if cli_runs else None
        seeded = stats([r["wall_seconds"] for r in seeded_runs]) if seeded_runs else None
        per_change[change] = {
            "model": bench.model_for(change),
            "selected_nodes": slim_runs[0]["selected"],
            "built_models": slim_runs[0]["built"],
            "tests_passed": slim_runs[0]["tests_passed"],
            "deferred_parents": slim_runs[0]["deferred"],
            "slim_seconds": slim,
            "slim_over_full": ratio(slim, full),
            "branch_node_seconds": stats([r["branch_node_seconds"] for r in slim_runs]),
            "dbt_ls_seconds": stats([r["dbt_ls_seconds"] for r in slim_runs]),
            "dbt_build_seconds": stats([r["dbt_build_seconds"] for r in slim_runs]),
            "dbt_parse_seconds": stats([r["dbt_parse_seconds"] for r in slim_runs]),
            "second_push_seconds": again,
            "second_push_previous_parse": [r["previous_parse"] for r in again_runs],
            "second_push_dbt_parse_seconds": stats([r["dbt_parse_seconds"] for r in again_runs]) if again_runs else None,
            "second_push_over_cli": ratio(again, cli) if again_runs else None,
            "second_push_over_full": ratio(again, full) if again_runs else None,
            "second_push_phases_median": {
                p: round(statistics.median(r["phases"].get(p, 0.0) for r in again_runs), 4) for p in PHASES
            } if again_runs else None,
            "phases_median": {
                p: round(statistics.median(r["phases"].get(p, 0.0) for r in slim_runs), 4) for p in PHASES
            },
            "cli_seconds": cli,
            "dbt_split_median": {
                "product_parse": _median_split([r.get("dbt_parse_split") for r in slim_runs]),
                "product_ls": _median_split([r.get("dbt_ls_split") for r in slim_runs]),
                "product_build": _median_split([r.get("dbt_build_split") for r in slim_runs]),
                "product_again_parse": _median_split([r.get("dbt_parse_split") for r in again_runs]),
                "cli_build": _median_split([r.get("dbt_split") for r in cli_runs]),
                "cli_seeded_build": _median_split([r.get("dbt_split") for r in seeded_runs]),
            },
            "dagster_over_cli": ratio(slim, cli),
            "cli_seeded_seconds": seeded,
            "cli_seeded_partial_parse_used": [r["partial_parse_used"] for r in seeded_runs],
            "cli_seeded_over_cli": ratio(seeded, cli),
            "dagster_over_cli_seeded": ratio(slim, seeded),
        }
    full_runs = pick("full")
    return {
        "n_models": bench.n,
        "production_build_seconds": round(bench.prod_seconds, 3),
        "in_process_load_seconds": round(bench.load_seconds, 3),
        "cold_parse_seconds": stats([r["seed_parse_seconds"] for r in runs if r.get("seed_parse_seconds")]),
        "full": {
            "seconds": full,
            "selected_nodes": full_runs[0]["selected"],
            "built_models": full_runs[0]["built"],
            "branch_node_seconds": stats([r["branch_node_seconds"] for r in full_runs]),
            "phases_median": {
                p: round(statistics.median(r["phases"].get(p, 0.0) for r in full_runs), 4) for p in PHASES
            },
            "of_branches": [r["change"] for r in full_runs],
            "dbt_split_median": {
                "product_parse": _median_split([r.get("dbt_parse_split") for r in full_runs]),
                "product_ls": _median_split([r.get("dbt_ls_split") for r in full_runs]),
                "product_build": _median_split([r.get("dbt_build_split") for r in full_runs]),
            },
        },
        "changes": per_change,
        "runs": runs,
    }


# 3: code-location load in a fresh process ------------------------------------------------


def _load_child(project: str, home: str) -> None:
    """Body of the fresh process: import, build the definitions, snapshot them; print JSON."""
    started = time.perf_counter()
    import dagster  # noqa: F401

    from defer_orchestration import definitions
    from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings

    out: dict[str, Any] = {"import_seconds": time.perf_counter() - started}
    for attr, key in (("prepare_manifest", "prepare_manifest_seconds"), ("build_prod_dbt_assets", "dbt_assets_seconds")):
        original = getattr(definitions, attr)

        def timed(*args: Any, _original: Any = original, _key: str = key, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                out[_key] = time.perf_counter() - t

        setattr(definitions, attr, timed)
    t = time.perf_counter()
    defs = definitions.build_definitions(DeferOrchSettings(home=home, dbt_project_dir=project), BranchCiSettings())
    out["build_definitions_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    repo_def = defs.get_repository_def()
    out["repository_def_seconds"] = time.perf_counter() - t
    out["asset_count"] = len(repo_def.asset_graph.get_all_asset_keys())
    # What a code server does next: snapshot the repository for the webserver/daemon.
    try:
        from dagster._core.remote_representation.external_data import RepositorySnap
        from dagster_shared.serdes import serialize_value

        t = time.perf_counter()
        snap = serialize_value(RepositorySnap.from_def(repo_def, defer_snapshots=True))
        out["snapshot_seconds"] = time.perf_counter() - t
        out["snapshot_mb"] = len(snap) / 2**20
    except Exception as exc:  # a private API; the rest of the numbers still stand
        out["snapshot_error"] = repr(exc)
    out["total_in_process_seconds"] = time.perf_counter() - started
    # ru_maxrss survives fork+exec on Linux: a child started by a big parent reports the
    # parent's RSS at fork. VmHWM (/proc) is this process image's own high-water mark.
    out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_rss_mb"] = _vm_hwm_mb() or out["ru_maxrss_mb"]
    # The dbt parse subprocess: an upper bound (max of dbt's peak and this process at fork).
    out["children_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("BENCH_LOAD_JSON " + json.dumps(out), flush=True)


def _vm_hwm_mb() -> float | None:
    """Peak resident set size of this process image (Linux), MB."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def _load_once(project: Path, home: Path) -> dict[str, Any]:
    env = {**dbt_env(), "PYTHONPATH": os.pathsep.join([os.fspath(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "_load_child", os.fspath(project), os.fspath(home)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True,
    )
    wall = time.perf_counter() - started
    lines = [l for l in done.stdout.splitlines() if l.startswith("BENCH_LOAD_JSON ")]
    if done.returncode != 0 or not lines:
        raise BenchError(f"load subprocess failed:\n{(done.stdout + done.stderr)[-3000:]}")
    result = json.loads(lines[-1].split(" ", 1)[1])
    result["process_wall_seconds"] = wall
    return result


_LOAD_KEYS = (
    "process_wall_seconds", "import_seconds", "build_definitions_seconds", "prepare_manifest_seconds",
    "dbt_assets_seconds", "repository_def_seconds", "snapshot_seconds", "peak_rss_mb", "ru_maxrss_mb",
    "children_peak_rss_mb",
)


def bench_load(n_models: int, root: Path, *, repeats: int, first_repeats: int) -> dict[str, Any]:
    """First load (parses) and warm load (manifest cached) of an N-model project."""
    shutil.rmtree(root, ignore_errors=True)
    project = generate_project(root / "project", n_models, seed=0).path
    first, warm = [], []
    for rep in range(first_repeats):
        log(f"load N={n_models}: first load {rep + 1}/{first_repeats} (parses)")
        first.append(_load_once(project, root / f"home-{rep}"))
    for rep in range(repeats):
        log(f"load N={n_models}: warm load {rep + 1}/{repeats}")
        warm.append(_load_once(project, root / "home-0"))

    def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            key: stats([s[key] for s in samples if s.get(key) is not None])
            for key in _LOAD_KEYS
        } | {"asset_count": samples[0].get("asset_count"), "snapshot_mb": samples[0].get("snapshot_mb")}

    return {"n_models": n_models, "first": summary(first), "warm": summary(warm)}


# 4: sensor ticks -----------------------------------------------------------------------------


def _repo_with_branches(repo: Path, count: int) -> None:
    """A repository with ``main`` and ``count`` branches, each its own commit (one git fast-import)."""
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    when = "1700000000 +0000"
    parts = [
        "commit refs/heads/main\nmark :1\n"
        f"committer bench <bench@example.com> {when}\ndata 4\nmain\n"
        "M 644 inline README\ndata 6\nhello\n\n"
    ]
    for i in range(count):
        body = f"branch {i}\n"
        parts.append(
            f"commit refs/heads/feature/bench-{i:05d}\nmark :{i + 2}\n"
            f"committer bench <bench@example.com> {when}\ndata 7\nchange\nfrom :1\n"
            f"M 644 inline change.txt\ndata {len(body)}\n{body}\n"
        )
    git(repo, "fast-import", "--quiet", stdin="".join(parts))


def bench_sensor(branch_counts: Sequence[int], root: Path, *, repeats: int) -> list[dict[str, Any]]:
    """``branch_ci_sensor`` tick time: first tick, steady state, one branch moved."""
    import dagster as dg

    from defer_orchestration.lib import git as product_git
    from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings
    from defer_orchestration.defs.sensors import build_branch_ci_sensor

    sensor = build_branch_ci_sensor()
    results = []
    with tempfile.TemporaryDirectory(dir=root) as dagster_home:
        instance = dg.DagsterInstance.local_temp(dagster_home)
        for count in branch_counts:
            repo = root / f"sensor-repo-{count}"
            _repo_with_branches(repo, count)
            resources = {
                "settings": DeferOrchSettings(home=os.fspath(root / "sensor-home")),
                "branch_settings": BranchCiSettings(git_repo=os.fspath(repo)),
            }
            ls_remote: list[float] = []
            original = product_git.list_branch_heads

            def timed_heads(repo_arg: str) -> dict[str, str]:
                t = time.perf_counter()
                try:
                    return original(repo_arg)
                finally:
                    ls_remote.append(time.perf_counter() - t)

            def tick(cursor: str | None) -> tuple[float, Any]:
                context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
                started = time.perf_counter()
                result = sensor.evaluate_tick(context)
                return time.perf_counter() - started, result

            product_git.list_branch_heads = timed_heads
            try:
                samples = max(repeats, 5)
                first, steady, moved = [], [], []
                cursor = None
                for _ in range(samples):
                    seconds, result = tick(None)
                    first.append(seconds)
                    cursor = result.cursor
                    requested = len(result.run_requests or [])
                first_ls = list(ls_remote)
                ls_remote.clear()
                for _ in range(samples):
                    seconds, result = tick(cursor)
                    steady.append(seconds)
                    if result.run_requests:
                        raise BenchError("a steady-state tick requested runs")
                steady_ls = list(ls_remote)
                # One branch gets a new commit: one run request (and one cancel lookup).
                sha = git(repo, "commit-tree", "-p", "refs/heads/main", "-m", "moved", "refs/heads/main^{tree}")
                git(repo, "update-ref", "refs/heads/feature/bench-00000", sha)
                for _ in range(samples):
                    seconds, result = tick(cursor)
                    moved.append(seconds)
                    if len(result.run_requests or []) != 1:
                        raise BenchError("a tick after one push did not request exactly one run")
            finally:
                product_git.list_branch_heads = original
            if requested != count:
                raise BenchError(f"first tick requested {requested} runs for {count} branches")
            log(
                f"sensor, {count} branches: first tick {statistics.median(first):.3f}s, "
                f"steady {statistics.median(steady):.3f}s"
            )
            results.append({
                "branches": count,
                "first_tick_seconds": stats(first),
                "first_tick_run_requests": requested,
                "steady_tick_seconds": stats(steady),
                "one_moved_tick_seconds": stats(moved),
                "ls_remote_seconds_first": stats(first_ls),
                "ls_remote_seconds_steady": stats(steady_ls),
            })
            shutil.rmtree(repo, ignore_errors=True)
    return results


# Report ------------------------------------------------------------------------------------


def _fmt(s: dict[str, Any] | None, digits: int = 1) -> str:
    if not s or s.get("median") is None:
        return "–"
    if s["n"] == 1:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def _r(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Which of issue 6's targets the measured medians meet."""
    out: dict[str, Any] = {}
    for size in results.get("branch_runs", []):
        n = size["n_models"]
        leaf = size["changes"].get("leaf")
        if leaf is not None and n == 1000:
            out["leaf_slim_over_full_at_1000"] = {
                "target": TARGETS["leaf_slim_over_full_at_1000"],
                "measured": leaf["slim_over_full"],
                "met": leaf["slim_over_full"] is not None and leaf["slim_over_full"] <= TARGETS["leaf_slim_over_full_at_1000"],
            }
        if leaf is not None and n == 1000 and leaf.get("second_push_over_full") is not None:
            out["leaf_slim_over_full_at_1000 (second push)"] = {
                "target": TARGETS["leaf_slim_over_full_at_1000"],
                "measured": leaf["second_push_over_full"],
                "met": leaf["second_push_over_full"] <= TARGETS["leaf_slim_over_full_at_1000"],
            }
        for change, data in size["changes"].items():
            if data.get("dagster_over_cli") is not None:
                out[f"dagster_over_cli/{n}/{change}"] = {
                    "target": TARGETS["dagster_over_cli"],
                    "measured": data["dagster_over_cli"],
                    "met": data["dagster_over_cli"] <= TARGETS["dagster_over_cli"],
                }
            if data.get("second_push_over_cli") is not None:
                out[f"second_push_over_cli/{n}/{change}"] = {
                    "target": TARGETS["second_push_over_cli"],
                    "measured": data["second_push_over_cli"],
                    "met": data["second_push_over_cli"] < TARGETS["second_push_over_cli"],
                }
    for row in results.get("sensor", []):
        if row["branches"] == 1000:
            worst = max(row["first_tick_seconds"]["median"], row["steady_tick_seconds"]["median"])
            out["sensor_tick_seconds_at_1000_branches"] = {
                "target": TARGETS["sensor_tick_seconds_at_1000_branches"],
                "measured": worst,
                "met": worst <= TARGETS["sensor_tick_seconds_at_1000_branches"],
            }
    return out


def render_markdown(results: dict[str, Any]) -> str:
    """The tables for the README (and stdout)."""
    lines: list[str] = []
    runs = results.get("branch_runs", [])
    if runs:
        lines += [
            "**1. Slim vs full** (branch_ci_job through Dagster, in-process; wall seconds, median (min–max))",
            "",
            "| N | change | selected nodes | models built | slim s, first push | full s | slim / full | "
            "slim s, second push | second push / full |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for size in runs:
            for change, d in size["changes"].items():
                lines.append(
                    f"| {size['n_models']} | {change} | {d['selected_nodes']} | {d['built_models']} | "
                    f"{_fmt(d['slim_seconds'])} | {_fmt(size['full']['seconds'])} | {_r(d['slim_over_full'])} | "
                    f"{_fmt(d.get('second_push_seconds'))} | {_r(d.get('second_push_over_full'))} |"
                )
        lines += [""]
        if any(d.get("cli_seconds") for s in runs for d in s["changes"].values()):
            lines += [
                "**2. Orchestration overhead** (same branch commit and selection; raw CLI = "
                "`dbt build --select state:modified+ --defer --state <manifest>` in a fresh target dir; "
                "seeded = the same, its target dir holding a `partial_parse.msgpack` from a parse of main with the same profile; "
                "first push = a new branch, nothing cached; second push = the same branch pushed again, the run starts "
                "from the branch's previous parse)",
                "",
                "| N | change | Dagster s, first push | raw CLI s | Dagster / CLI | Dagster s, second push | "
                "second push / CLI | CLI seeded s | seeded / CLI |",
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for size in runs:
                for change, d in size["changes"].items():
                    lines.append(
                        f"| {size['n_models']} | {change} | {_fmt(d['slim_seconds'])} | {_fmt(d['cli_seconds'])} | "
                        f"{_r(d['dagster_over_cli'])} | {_fmt(d.get('second_push_seconds'))} | "
                        f"{_r(d.get('second_push_over_cli'))} | {_fmt(d['cli_seeded_seconds'])} | "
                        f"{_r(d['cli_seeded_over_cli'])} |"
                    )
            lines += [""]
        lines += [
            "**Where a branch run's time goes** (median seconds per phase of the Dagster runs, "
            "timed in-process around the product's own functions; Dagster = wall minus all phases; "
            "dbt parse = the time the run waits for the parse: registering the schema and reading "
            "production's artifacts happen while dbt parses)",
            "",
            "| N | change | wall | Dagster | resolve manifest | git + merge-base | worktree | warehouse open + register | "
            "dbt parse (waited for) | dbt ls | pre-flight | dbt build + process exit | data diff | artifacts + summary | other |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        combined = False
        for size in runs:
            rows = [(c, d["slim_seconds"]["median"], d["phases_median"]) for c, d in size["changes"].items()]
            rows += [
                (f"{c}, second push", d["second_push_seconds"]["median"], d["second_push_phases_median"])
                for c, d in size["changes"].items() if d.get("second_push_seconds")
            ]
            rows.append(("full", size["full"]["seconds"]["median"], size["full"]["phases_median"]))
            for change, wall, p in rows:
                g = lambda *keys: sum(p.get(k, 0.0) for k in keys)  # noqa: E731
                warehouse = f"{g('warehouse_open', 'warehouse_register'):.2f}"
                preflight = f"{g('preflight'):.2f}"
                diff = f"{g('data_diff'):.1f}"
                if "warehouse_combined" in p:  # recorded before the split (see combined_note)
                    warehouse, preflight, diff = "in *", "in *", f"{g('warehouse_combined'):.1f}*"
                    combined = True
                lines.append(
                    f"| {size['n_models']} | {change} | {wall:.1f} | {g('dagster'):.2f} | {g('resolve_manifest'):.2f} | "
                    f"{g('git_mirror', 'choose_comparison'):.2f} | {g('worktree'):.2f} | "
                    f"{warehouse} | {g('dbt_parse'):.1f} | {g('dbt_ls'):.1f} | {preflight} | "
                    f"{g('dbt_build', 'dbt_session_exit'):.1f} | {diff} | {g('load_artifacts', 'summary'):.2f} | "
                    f"{g('branch_build_other', 'report_metadata'):.2f} |"
                )
        if combined:
            lines += [
                "",
                "\\* recorded by an earlier version of this runner that timed whole warehouse blocks: "
                "warehouse open + register + pre-flight + data diff together (the data diff is nearly all of it).",
            ]
        lines += [
            "",
            "**Inside each dbt invocation** (median seconds, from dbt.log timestamps and the process's "
            "spawn/exit (for the product's dbt session: from sending the command to its reply): startup = "
            "interpreter + imports + project/profile/adapter (in a session, the first command pays what "
            "the import overlapping git work did not hide); parse = full parse or "
            "partial-parse load, + writing manifest.json (0 when the session's parse is reused); select = "
            "reading --state, selection, deferral, graph (for `ls`: everything after parsing, incl. "
            "printing); execute = the nodes; artifacts = writing manifest/run_results; exit = usage "
            "flush + interpreter shutdown, or the reply)",
            "",
            "| N | change | invocation | total | startup | parse | select | execute | artifacts | exit |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        labels = {
            "product_parse": "Dagster run: `parse` (session start)",
            "product_ls": "Dagster run: `ls` (same session)",
            "product_build": "Dagster run: `build` (same session)",
            "product_again_parse": "second push: `parse` from the previous parse",
            "cli_build": "raw CLI `dbt build`",
            "cli_seeded_build": "raw CLI, seeded parse",
        }
        for size in runs:
            entries = [(c, d.get("dbt_split_median") or {}) for c, d in size["changes"].items()]
            entries.append(("full", size["full"].get("dbt_split_median") or {}))
            for change, splits in entries:
                for key, label in labels.items():
                    x = splits.get(key)
                    if not x:
                        continue
                    cells = " | ".join(_r(x.get(k), 1) for k in ("total", *DBT_SEGMENTS))
                    lines.append(f"| {size['n_models']} | {change} | {label} | {cells} |")
        lines += [""]
    loads = results.get("load", [])
    if loads:
        lines += [
            "**3. Code-location load** (fresh process: import + `build_definitions` + repository + "
            "snapshot; first load runs `dbt parse`, warm load finds the parsed manifest)",
            "",
            "| N | assets | first load s | of which dbt parse s | warm load s | of which import s | "
            "peak RSS first MB | peak RSS warm MB | dbt parse peak RSS MB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in loads:
            f, w = row["first"], row["warm"]
            lines.append(
                f"| {row['n_models']} | {f['asset_count'] or '–'} | {_fmt(f['process_wall_seconds'])} | "
                f"{_fmt(f['prepare_manifest_seconds'])} | {_fmt(w['process_wall_seconds'])} | "
                f"{_fmt(w['import_seconds'])} | {_fmt(f['peak_rss_mb'], 0)} | {_fmt(w['peak_rss_mb'], 0)} | "
                f"{_fmt(f['children_peak_rss_mb'], 0)} |"
            )
        lines += [""]
    sensor = results.get("sensor", [])
    if sensor:
        lines += [
            "**4. branch_ci_sensor tick** (`evaluate_tick`; first = every branch new, steady = nothing "
            "new, moved = one branch got a new commit)",
            "",
            "| branches | first tick s | run requests | steady tick s | one moved s | git ls-remote s |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for row in sensor:
            lines.append(
                f"| {row['branches']} | {_fmt(row['first_tick_seconds'], 3)} | {row['first_tick_run_requests']} | "
                f"{_fmt(row['steady_tick_seconds'], 3)} | {_fmt(row['one_moved_tick_seconds'], 3)} | "
                f"{_fmt(row['ls_remote_seconds_steady'], 3)} |"
            )
        lines += [""]
    contention = results.get("contention", [])
    if contention:
        from benchmarks.contention import render_contention

        lines += render_contention(contention)
    met = results.get("targets", {})
    if met:
        lines += ["**Targets**", "", "| target | limit | measured | met |", "|---|---:|---:|---|"]
        for name, t in met.items():
            lines.append(f"| {name} | {t['target']} | {_r(t['measured'], 3)} | {'yes' if t['met'] else 'no'} |")
        lines += [""]
    return "\n".join(lines)


# Entry point -------------------------------------------------------------------------------


def current_invocations(invocations: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The invocations (oldest first) whose results a merged file still holds: each
    section comes from the last invocation that measured it."""
    owner = {section: i for i, inv in enumerate(invocations) for section in inv.get("sections", [])}
    return [inv for i, inv in enumerate(invocations) if i in owner.values()]


def _parse_repeats_at(values: Sequence[str]) -> dict[int, int]:
    out = {}
    for value in values:
        size, _, count = value.partition("=")
        try:
            out[int(size)] = int(count)
        except ValueError:
            raise SystemExit(f"--repeats-at expects SIZE=COUNT, got {value!r}") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100], help="project sizes (models) for branch runs")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median, min-max)")
    parser.add_argument("--repeats-at", action="append", default=[], metavar="SIZE=COUNT",
                        help="fewer (or more) repeats for one size, e.g. 1000=2 (branch runs and load)")
    parser.add_argument("--changes", nargs="+", choices=CHANGES, default=list(CHANGES))
    parser.add_argument("--load-sizes", type=int, nargs="*", default=None,
                        help="sizes for the code-location load (default: --sizes)")
    parser.add_argument("--load-first-repeats", type=int, default=None,
                        help="first loads (each a full dbt parse) per size (default: the size's repeats)")
    parser.add_argument("--branches", type=int, nargs="*", default=[1, 100, 1000], help="branch counts for sensor ticks")
    parser.add_argument("--skip", nargs="*", choices=MEASUREMENTS, default=[],
                        help="measurements to skip (slim = every branch run; overhead = the raw CLI runs)")
    parser.add_argument("--contention-sizes", type=int, nargs="*", default=[100],
                        help="project sizes for the contention measurement (the real Dagster stack)")
    parser.add_argument("--contention-branches", type=int, default=3,
                        help="branch runs launched together with one prod_build_job")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the untimed warm-up branch run per size (smoke tests)")
    parser.add_argument("--no-data-diff", action="store_true",
                        help="run branch_ci_job with data_diff: false (default: the product's default, on)")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: print (and --markdown) the tables of an existing --out file")
    parser.add_argument("--update", action="store_true",
                        help="keep the sections of an existing --out file that this invocation skips")
    parser.add_argument("--seeded", action="store_true",
                        help="also time the raw CLI with a seeded partial parse (one extra parse + build per change)")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch directory (default: a new temp dir, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "latest.json")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_load_child"]:
        _load_child(argv[1], argv[2])
        return 0
    args = build_parser().parse_args(argv)
    if args.render_only:
        results = json.loads(args.out.read_text(encoding="utf-8"))
        results["targets"] = targets(results)
        markdown = render_markdown(results)
        print(markdown)
        if args.markdown:
            args.markdown.write_text(markdown + "\n", encoding="utf-8")
        return 0
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    repeats_at = _parse_repeats_at(args.repeats_at)
    skip = set(args.skip)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="defer-orch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "meta": {
            "command": "python -m benchmarks.run " + " ".join(argv),
            "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "product": product_info(),
            "args": {k: (os.fspath(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "repeats_by_size": {},
        },
        "branch_runs": [],
        "load": [],
        "sensor": [],
        "contention": [],
    }
    try:
        if "slim" not in skip:
            for n in args.sizes:
                reps = repeats_at.get(n, args.repeats)
                results["meta"]["repeats_by_size"][str(n)] = reps
                results["branch_runs"].append(
                    bench_branch_runs(
                        n, work / f"branch-n{n}", repeats=reps, changes=args.changes,
                        overhead="overhead" not in skip, seeded=args.seeded and "overhead" not in skip,
                        warmup=not args.no_warmup, data_diff=False if args.no_data_diff else None,
                    )
                )
                shutil.rmtree(work / f"branch-n{n}", ignore_errors=True) if not args.keep else None
        if "load" not in skip:
            for n in args.load_sizes if args.load_sizes is not None else args.sizes:
                reps = repeats_at.get(n, args.repeats)
                first = args.load_first_repeats if args.load_first_repeats is not None else reps
                results["load"].append(bench_load(n, work / f"load-n{n}", repeats=reps, first_repeats=min(first, reps)))
        if "sensor" not in skip and args.branches:
            results["sensor"] = bench_sensor(args.branches, work, repeats=args.repeats)
        if "contention" not in skip:
            from benchmarks.contention import bench_contention

            for n in args.contention_sizes:
                log(f"N={n}: contention, prod_build_job + {args.contention_branches} branch runs at once")
                results["contention"].append(
                    bench_contention(
                        n, work / f"contention-n{n}", branch_runs=args.contention_branches,
                        repeats=repeats_at.get(n, args.repeats),
                        data_diff=False if args.no_data_diff else None,
                    )
                )
    finally:
        results["meta"]["total_seconds"] = round(time.monotonic() - started, 1)
        measured = {
            "branch_runs": "slim" not in skip,
            "load": "load" not in skip,
            "sensor": "sensor" not in skip and bool(args.branches),
            "contention": "contention" not in skip,
        }
        invocation = {
            key: results["meta"][key]
            for key in ("command", "started_at", "total_seconds", "product", "repeats_by_size")
        } | {"sections": [k for k, v in measured.items() if v]}
        results["meta"]["invocations"] = [invocation]
        if args.update and args.out.is_file():
            previous = json.loads(args.out.read_text(encoding="utf-8"))
            for section, fresh in measured.items():
                if not fresh and previous.get(section):
                    results[section] = previous[section]
            earlier = previous.get("meta", {}).get("invocations") or []
            results["meta"]["invocations"] = current_invocations([*earlier, invocation])
        results["targets"] = targets(results)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    markdown = render_markdown(results)
    print(markdown)
    print(f"(total {results['meta']['total_seconds']} s; JSON: {args.out})")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
