"""Measurement 6: ``prod_build_job`` vs plain ``dbt build``, with Dagster's storage on
SQLite and on PostgreSQL.

One generated project of N models in a scratch git repository (branch ``main``), the
product's definitions over it (as :mod:`benchmarks.branch_runs` sets them up), and per
repeat, in this order:

- **plain dbt**: ``dbt build`` of the project with the venv's dbt, the product's profile
  for the production target (same threads, a DuckDB warehouse), into a *fresh* DuckDB
  file and a fresh target dir;
- **SQLite**: ``prod_build_job`` with ``execute_in_process`` (the in-process executor the
  product's jobs use) on a Dagster instance in a temp ``DAGSTER_HOME`` configured like the
  repo's ``.dagster_home/dagster.yaml`` (its ``instance_class`` and ``storage``: the
  batched SQLite storage of ``defer_orchestration/dagster_storage/``);
- **PostgreSQL**: the same job on an instance whose storage and instance class are
  ``deploy/postgres/dagster.yaml``'s (its ``{env: DAGSTER_PG_*}`` values filled in),
  pointing at a database of its own on a throwaway server (``tests/postgres_server.py``);
- optionally (``storages=``), the same on Dagster's stock storages, ``sqlite_stock``
  (no ``dagster.yaml`` storage settings) and ``postgres_stock`` (``storage: postgres:``),
  to compare before and after in one run.

The warehouse stays DuckDB for all three and every build starts from an empty warehouse
file (the product's file is removed before each job run), so only Dagster's storage
differs between the two job runs. The production build checks out main's head of the
repository from the product's private mirror, which is created before timing (steady
state is a fetch). Per job run the event log gives the number of events the run wrote
(``instance.all_logs(run_id)``) and, from the event timestamps, where the job's time
went: before the dbt step, the dbt step up to its first output (checkout + ``dbt build``
+ row counts), the dbt step's outputs and check results, and the rest (the publishing
step, run start and end).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, BenchError, dbt_env, dbt_executable, git, log, ratio, stats
from benchmarks.generate_project import generate_project

DEPLOY_DAGSTER_YAML = REPO_ROOT / "deploy" / "postgres" / "dagster.yaml"
PROJECT_DAGSTER_YAML = REPO_ROOT / ".dagster_home" / "dagster.yaml"
# The product's instance configurations; the runner measures these.
STORAGES = ("sqlite", "postgres")
# Dagster's stock storages, for a before/after comparison in the same run.
STOCK_STORAGES = ("sqlite_stock", "postgres_stock")
# The dagster.yaml sections that decide how events are stored (not pools, queue, telemetry).
STORAGE_SECTIONS = ("storage", "instance_class")
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# Segments of a job run, from its event log (see :func:`job_segments`).
SEGMENTS = ("before_dbt_step", "dbt_step_until_first_output", "dbt_step_events", "other")


def _pg_module() -> Any:
    """``tests/postgres_server.py`` (no Dagster, no pytest in it): imported, not copied."""
    tests = os.fspath(REPO_ROOT / "tests")
    if tests not in sys.path:
        sys.path.append(tests)
    import postgres_server

    return postgres_server


def _fill_env(value: Any, env: dict[str, str]) -> Any:
    """``{env: NAME}`` -> ``env[NAME]``, recursively (Dagster's own syntax, resolved here)."""
    if isinstance(value, dict):
        if set(value) == {"env"}:
            return env[value["env"]]
        return {k: _fill_env(v, env) for k, v in value.items()}
    return value


def _int_ports(value: Any) -> Any:
    """A ``postgres_db`` section's port as an int: ``{env: ...}`` is an IntSource Dagster
    converts, a literal must be an int."""
    if isinstance(value, dict):
        out = {k: _int_ports(v) for k, v in value.items()}
        if isinstance(out.get("postgres_db"), dict):
            db = out["postgres_db"]
            db["port"] = int(db["port"])
            db.setdefault("params", {})
        return out
    return value


def postgres_storage_yaml(dagster_env: dict[str, str]) -> dict[str, Any]:
    """``deploy/postgres/dagster.yaml``'s storage and instance class with the connection
    filled in (and telemetry off, as there); no run coordinator or pools:
    ``execute_in_process`` uses neither."""
    import yaml

    deploy = yaml.safe_load(DEPLOY_DAGSTER_YAML.read_text(encoding="utf-8"))
    out = {k: _int_ports(_fill_env(deploy[k], dagster_env)) for k in STORAGE_SECTIONS if k in deploy}
    return {**out, "telemetry": {"enabled": False}}


def sqlite_storage_yaml() -> dict[str, Any]:
    """The repo's ``.dagster_home/dagster.yaml`` storage settings (its instance class: the
    batched SQLite storage under the instance's directory), telemetry off."""
    import yaml

    project = yaml.safe_load(PROJECT_DAGSTER_YAML.read_text(encoding="utf-8"))
    return {**{k: project[k] for k in STORAGE_SECTIONS if k in project}, "telemetry": {"enabled": False}}


def stock_postgres_storage_yaml(dagster_env: dict[str, str]) -> dict[str, Any]:
    """dagster-postgres' own ``storage: postgres:`` on the same connection (before this
    repository had storages of its own)."""
    config = postgres_storage_yaml(dagster_env)
    storage = config["storage"]
    postgres = storage.get("postgres") or storage["custom"]["config"]
    return {"storage": {"postgres": postgres}, "telemetry": {"enabled": False}}


@contextlib.contextmanager
def instances(root: Path, storages: tuple[str, ...] = STORAGES) -> Iterator[dict[str, Any]]:
    """The Dagster instances named in ``storages``: SQLite ones in ``root/dagster_<name>``;
    PostgreSQL ones on one throwaway server, a database each, home ``root/dagster_<name>``."""
    import dagster as dg
    import yaml

    pg = _pg_module()
    # Not under the runner's work dir (a mkdtemp, mode 0700, is closed to the `postgres` OS
    # user the server runs as under root): a directory of its own in the system temp dir,
    # the same disk as the SQLite instance's home.
    pg_base = Path(tempfile.mkdtemp(prefix="defer-orch-bench-pg-"))
    try:
        with pg.postgres_server(pg_base) as server, contextlib.ExitStack() as stack:
            opened: dict[str, Any] = {}
            for name in storages:
                home = root / f"dagster_{name}"
                home.mkdir(parents=True)
                if name.startswith("postgres"):
                    env = server.dagster_env(server.create_database(f"dagster_{name}"))
                    config = postgres_storage_yaml(env) if name == "postgres" else stock_postgres_storage_yaml(env)
                else:
                    config = sqlite_storage_yaml() if name == "sqlite" else {"telemetry": {"enabled": False}}
                (home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
                inst = stack.enter_context(dg.DagsterInstance.from_config(os.fspath(home)))
                kind = type(inst.run_storage).__name__
                if name.startswith("postgres") and "Postgres" not in kind:
                    raise BenchError(f"the {name} instance has {kind} run storage")
                opened[name] = inst
            yield {
                **opened,
                "storage_classes": {
                    name: {
                        "instance": type(inst).__name__,
                        "run": type(inst.run_storage).__name__,
                        "event_log": type(inst.event_log_storage).__name__,
                        "schedule": type(inst.schedule_storage).__name__,
                    }
                    for name, inst in opened.items()
                },
                "postgres_server": {
                    "version": server.admin_sql("show server_version")[0][0],
                    "connect_ms": connect_ms(server, server.create_database("connect_probe")),
                    "data_dir_filesystem": _filesystem(pg_base),
                    "settings": dict(pg.SERVER_SETTINGS),
                },
                "sqlite_home_filesystem": _filesystem(root),
            }
    finally:
        shutil.rmtree(pg_base, ignore_errors=True)


def connect_ms(server: Any, dbname: str, samples: int = 20) -> dict[str, Any]:
    """Milliseconds to open (TCP, scram-sha-256 password check), use and close one
    connection, as dagster-postgres does per storage call (its engines use ``NullPool``)."""
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        conn = server.connect(dbname=dbname)
        with conn.cursor() as cur:
            cur.execute("select 1")
        conn.close()
        times.append(1000 * (time.perf_counter() - started))
    return stats(times)


def _filesystem(path: Path) -> str | None:
    """The type of the filesystem ``path`` is on (``df --output=fstype``)."""
    done = subprocess.run(["df", "--output=fstype", os.fspath(path)], capture_output=True, text=True)
    lines = done.stdout.split()
    return lines[-1] if done.returncode == 0 and len(lines) > 1 else None


def _failure_text(result: Any) -> str:
    for event in result.all_node_events:
        if event.is_step_failure:
            data = event.event_specific_data
            desc = data.user_failure_data.description if data.user_failure_data else ""
            return f"{desc}\n{data.error.to_string() if data.error else ''}"[-3000:]
    return "(no step failure event)"


def dbt_step_key(records: list[Any]) -> str:
    """The step that ran dbt: the one that materialized the most assets (publishing the
    manifest materializes one asset of its own)."""
    counts = collections.Counter(
        r.step_key for r in records
        if r.dagster_event is not None and r.step_key and r.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
    )
    if not counts:
        raise BenchError("the production run wrote no asset materialization: which step ran dbt?")
    return counts.most_common(1)[0][0]


def job_segments(records: list[Any], wall: float) -> dict[str, float]:
    """Split a job run's wall seconds by its event log's timestamps.

    The dbt step is the step that wrote asset materializations. ``before_dbt_step``: run
    start to that step's start; ``dbt_step_until_first_output``: its start to its first
    output event (checkout, ``dbt build``, row counts, building the events);
    ``dbt_step_events``: first output to the step's success (one output and materialization
    per built node, one check evaluation per test); ``other``: the rest of the wall time
    (later steps such as publishing, run start and end, ``execute_in_process`` itself).
    """
    by_step: dict[str, list[Any]] = collections.defaultdict(list)
    for record in records:
        if record.dagster_event is not None and record.step_key:
            by_step[record.step_key].append(record)
    events = by_step[dbt_step_key(records)]
    kinds = [e.dagster_event.event_type_value for e in events]
    start = next(e.timestamp for e, k in zip(events, kinds) if k == "STEP_START")
    end = next(e.timestamp for e, k in zip(events, kinds) if k == "STEP_SUCCESS")
    first_output = min(
        e.timestamp for e, k in zip(events, kinds) if k in ("STEP_OUTPUT", "ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION")
    )
    run_start = min(r.timestamp for r in records)
    out = {
        "before_dbt_step": start - run_start,
        "dbt_step_until_first_output": first_output - start,
        "dbt_step_events": end - first_output,
    }
    out["other"] = wall - sum(out.values())
    return {k: round(v, 4) for k, v in out.items()}


class StorageBench:
    """One generated project of N models in a git repo (branch ``main``) and the product's
    definitions over it."""

    def __init__(self, n_models: int, root: Path, *, threads: int = 2) -> None:
        from defer_orchestration import constants as c
        from defer_orchestration.branch.checkout import mirror_dir
        from defer_orchestration.definitions import build_definitions
        from defer_orchestration.lib import git as product_git
        from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings

        self.c = c
        self.n = n_models
        self.root = root
        shutil.rmtree(root, ignore_errors=True)
        self.repo = root / "repo"
        self.repo.mkdir(parents=True)
        git(self.repo, "init", "-q", "-b", "main")
        self.project = generate_project(self.repo / "bench", n_models, seed=0)
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", f"generated bench project, {n_models} models")
        self.settings = DeferOrchSettings(
            home=os.fspath(root / "home"), dbt_project_dir=os.fspath(self.repo / "bench"), threads=threads
        )
        self.branch_settings = BranchCiSettings(git_repo=os.fspath(self.repo), project_subdir="bench")
        self.core = self.settings.core()
        if self.core.warehouse.kind != "duckdb":
            raise BenchError(f"the storage benchmark keeps the warehouse DuckDB, got {self.core.warehouse.kind}")
        self.defs = build_definitions(self.settings, self.branch_settings)
        self.defs.get_repository_def()
        repo = self.branch_settings.repo(self.settings)
        product_git.ensure_mirror(repo, mirror_dir(self.core, repo))
        self.job = self.defs.resolve_job_def(c.PROD_BUILD_JOB)

    def _clear_warehouse(self) -> None:
        path = Path(self.core.warehouse.path)
        for p in (path, path.with_name(path.name + ".wal")):
            p.unlink(missing_ok=True)

    def plain_dbt(self, label: str) -> dict[str, Any]:
        """``dbt build`` of the project into a fresh DuckDB file, fresh target dir."""
        from defer_orchestration.dbt.profiles import write_profiles
        from defer_orchestration.warehouse.duckdb import DuckDBWarehouse

        base = self.root / "plain" / label
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        warehouse = DuckDBWarehouse(base / "warehouse.duckdb")
        project = self.repo / "bench"
        profiles = write_profiles(
            base / "profiles", project, {self.c.PROD_TARGET: self.c.PROD_SCHEMA}, self.c.PROD_TARGET,
            warehouse=warehouse, threads=self.core.threads,
        )
        target = base / "target"
        command = [
            dbt_executable(), "build", "--target", self.c.PROD_TARGET,
            "--project-dir", os.fspath(project), "--profiles-dir", os.fspath(profiles),
            "--target-path", os.fspath(target), "--log-path", os.fspath(base / "logs"),
        ]
        started = time.perf_counter()
        done = subprocess.run(
            command, cwd=project, env={**dbt_env(), **warehouse.dbt_env()}, capture_output=True, text=True
        )
        wall = time.perf_counter() - started
        results_file = target / "run_results.json"
        if done.returncode != 0 or not results_file.is_file():
            raise BenchError(f"plain dbt build of the {self.n}-model project failed:\n{(done.stdout + done.stderr)[-3000:]}")
        results = json.loads(results_file.read_text(encoding="utf-8"))["results"]
        shutil.rmtree(base, ignore_errors=True)
        return {
            "wall_seconds": wall,
            "nodes": len(results),
            "models": sum(1 for r in results if r["unique_id"].startswith("model.")),
            "tests": sum(1 for r in results if r["unique_id"].startswith("test.")),
        }

    def prod_build(self, instance: Any) -> dict[str, Any]:
        """``prod_build_job`` in-process on ``instance``, from an empty warehouse file."""
        self._clear_warehouse()
        echoed = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(echoed):
            result = self.job.execute_in_process(instance=instance, run_config=_QUIET, raise_on_error=False)
        wall = time.perf_counter() - started
        if not result.success:
            raise BenchError(f"prod_build_job of the {self.n}-model project failed:\n{_failure_text(result)}")
        records = instance.all_logs(result.run_id)
        by_type = collections.Counter(
            r.dagster_event.event_type_value if r.dagster_event is not None else "LOG_MESSAGE" for r in records
        )
        dbt_step = dbt_step_key(records)
        in_dbt_step = collections.Counter(
            r.dagster_event.event_type_value for r in records if r.dagster_event is not None and r.step_key == dbt_step
        )
        # The run's scratch (the dbt target and worktree) would pile up over the repeats.
        shutil.rmtree(self.core.run_dir(result.run_id), ignore_errors=True)
        return {
            "wall_seconds": wall,
            "events": len(records),
            "events_by_type": dict(sorted(by_type.items())),
            "dbt_step_events": sum(in_dbt_step.values()),
            "materializations": in_dbt_step.get("ASSET_MATERIALIZATION", 0),  # the dbt step's: one per built node
            "check_evaluations": in_dbt_step.get("ASSET_CHECK_EVALUATION", 0),  # one per test
            "segments": job_segments(records, wall),
        }


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def bench_storage(
    n_models: int, root: Path, *, repeats: int, warmup: bool = False, storages: tuple[str, ...] = STORAGES
) -> dict[str, Any]:
    """Plain ``dbt build`` vs ``prod_build_job`` on each of ``storages`` (default: the
    product's SQLite and PostgreSQL configurations), N models, interleaved per repeat."""
    log(f"N={n_models}: storage benchmark setup (project, definitions, mirror, PostgreSQL server)")
    bench = StorageBench(n_models, root)
    runs: list[dict[str, Any]] = []
    with instances(root, storages) as inst:
        if warmup:
            log(f"N={n_models}: warm-up prod_build_job on {storages[0]} (not measured)")
            bench.prod_build(inst[storages[0]])
        for rep in range(repeats):
            log(f"N={n_models} repeat {rep + 1}/{repeats}: plain dbt build")
            load_before = _loadavg()
            plain = bench.plain_dbt(f"r{rep}")
            runs.append({"kind": "plain_dbt", "repeat": rep, **plain, "loadavg_1min": [load_before, _loadavg()]})
            log(f"  plain dbt build {plain['wall_seconds']:.1f}s ({plain['nodes']} nodes)")
            for storage in storages:
                log(f"N={n_models} repeat {rep + 1}/{repeats}: prod_build_job, {storage} storage")
                load_before = _loadavg()
                job = bench.prod_build(inst[storage])
                # The 1-minute load average before and after: more than the 2 dbt threads and
                # this process means something else ran on the machine meanwhile.
                runs.append({"kind": storage, "repeat": rep, **job, "loadavg_1min": [load_before, _loadavg()]})
                log(f"  prod_build_job on {storage} {job['wall_seconds']:.1f}s ({job['events']} events)")
        setup = {k: inst[k] for k in ("storage_classes", "postgres_server", "sqlite_home_filesystem")}
    return summarize_storage(n_models, runs, setup, storages)


def summarize_storage(
    n_models: int, runs: list[dict[str, Any]], setup: dict[str, Any], storages: tuple[str, ...] = STORAGES
) -> dict[str, Any]:
    """Per storage: job seconds, ratio to plain dbt, events, ms per event of the overhead."""
    plain_runs = [r for r in runs if r["kind"] == "plain_dbt"]
    plain = stats([r["wall_seconds"] for r in plain_runs])
    per_storage = {}
    for storage in storages:
        mine = [r for r in runs if r["kind"] == storage]
        if not mine:
            continue
        seconds = stats([r["wall_seconds"] for r in mine])
        events = int(statistics.median(r["events"] for r in mine))
        overhead = None if plain["median"] is None else seconds["median"] - plain["median"]
        per_storage[storage] = {
            "seconds": seconds,
            "over_plain_dbt": ratio(seconds, plain),
            "overhead_seconds": None if overhead is None else round(overhead, 4),
            "events": events,
            "events_per_node": round(events / plain_runs[0]["nodes"], 3) if plain_runs and plain_runs[0]["nodes"] else None,
            "overhead_ms_per_event": None if overhead is None or not events else round(1000 * overhead / events, 3),
            "dbt_step_events": mine[0]["dbt_step_events"],
            "materializations": mine[0]["materializations"],
            "check_evaluations": mine[0]["check_evaluations"],
            "events_by_type": mine[0]["events_by_type"],
            "segments_median": {k: round(statistics.median(r["segments"][k] for r in mine), 4) for k in SEGMENTS},
        }
    return {
        "n_models": n_models,
        "repeats": len(plain_runs),
        "nodes": plain_runs[0]["nodes"] if plain_runs else None,
        "models": plain_runs[0]["models"] if plain_runs else None,
        "tests": plain_runs[0]["tests"] if plain_runs else None,
        "plain_dbt_seconds": plain,
        "storages": per_storage,
        "setup": setup,
        "runs": runs,
    }
