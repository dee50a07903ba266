"""Measurement 7: branch builds in parallel, DuckDB warehouse vs PostgreSQL warehouse
(issue 14).

Per project size and warehouse, on the real stack (:mod:`benchmarks.stack`: code server,
webserver, daemon; runs launched through GraphQL go through Dagster's run queue):

1. **production build**, once: one ``prod_build_job`` on the idle stack, so branch runs
   have a manifest to defer to. Timed and recorded, compared with nothing;
2. **a leaf change** (a new branch editing the project's leaf model, first push), alone on
   the idle stack: the run's queue wait (created -> RUN_START: the daemon's dequeue and
   the run worker's start-up), its duration (RUN_START -> end) split into the phases the
   product reports, then the same commit through the raw CLI (:mod:`benchmarks.raw_cli`:
   ``dbt build --select state:modified+ --defer --state <published manifest dir>`` on a
   checkout, fresh target dir, its own schema in the same warehouse). The two must
   select the same nodes;
3. **eight pushes at once** (:class:`benchmarks.contention.ContentionRepo`: each branch
   changes its own model, mid-DAG model first, then the leaf, then other marts), eight
   ``branch_ci_job`` runs launched back to back: wall time from the first launch to the
   last run's end, per run the queue wait and duration (:mod:`benchmarks.contention_timings`),
   how many branch builds ran at once (from step stats), and the sum of the runs'
   durations (what running them one by one would roughly cost).

Both stacks run the same Dagster instance, ``deploy/postgres/dagster.yaml``: storage on
PostgreSQL (a database of its own per stack on one throwaway server, ``tests/postgres_server.py``),
the queued run coordinator (``max_concurrent_runs: 8``; the queue polled every second, as
in the e2e tests), pools ``default_limit: 1`` and ``branch_builds`` set to 4 with
``dagster instance concurrency set``, as ``make dev-pg`` does. Only the warehouse differs,
and with it the pool a branch build holds: DuckDB's ``duckdb_warehouse`` (1 slot: builds
queue one behind the other) or PostgreSQL's ``branch_builds`` (4 slots). The PostgreSQL
warehouse is the database ``warehouse`` on the same server. Server data, DAGSTER_HOME
and DEFER_ORCH_HOME (the DuckDB file) are on tmpfs when there is one.

The generated project's SQL is DuckDB's (``range()``, ``hash()``, ``double``,
``round(double, n)``). Rather than a second project, the PostgreSQL warehouse database
gets four small compatibility definitions in ``public`` (:data:`POSTGRES_DUCKDB_COMPAT`),
so both warehouses build byte-identical model files (the same checksums, the same
``state:modified`` selections). ``hash`` differs (PostgreSQL's ``hashint8``), so the
generated values differ; every test still passes.

Machine load: a :class:`benchmarks.common.LoadSampler` runs throughout and records per
step the 1-minute load average and the CPU cores used by our processes and by others.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import stack as stack_api
from benchmarks.common import (
    BenchError,
    LoadSampler,
    environ,
    git,
    log,
    pg_server_module,
    ratio,
    stats,
    uptime,
)
from benchmarks.contention import PROJECT_SUBDIR, ContentionRepo
from benchmarks.contention_timings import failure_text, run_timings, warehouse_intervals
from benchmarks.phases import BRANCH_BUILD_STEP, PHASES, phase_split, required
from benchmarks.raw_cli import RawCli

WAREHOUSES = ("duckdb", "postgres")
BRANCH_POOL_LIMIT = 4  # `dagster instance concurrency set branch_builds 4`, as `make dev-pg`
LEAF_BRANCH_PREFIX = "bench/parallel-leaf-"
PRODUCTION_NOTE = (
    "one prod_build_job per size and warehouse, launched through the run queue on the idle "
    "stack before the leaf run and the wave (the branch runs all defer to it); timed, "
    "not compared"
)

# Just enough of DuckDB's dialect for the generated project (benchmarks/generate_project.py)
# to build unchanged on PostgreSQL. Created in `public` of the warehouse database, which is on
# every session's default search_path; `round(float8, int)` is found before pg_catalog's
# `round(numeric, int)` because float8 -> numeric is no implicit cast.
POSTGRES_DUCKDB_COMPAT = """
create domain double as double precision;
create function hash(bigint) returns bigint language sql immutable parallel safe
    as $$ select abs(hashint8($1)::bigint) $$;
create function range(bigint) returns setof bigint language sql immutable parallel safe
    as $$ select generate_series(0::bigint, $1 - 1) $$;
create function round(double precision, integer) returns double precision
    language sql immutable parallel safe
    as $$ select round($1::numeric, $2)::double precision $$;
"""


# The throwaway PostgreSQL server --------------------------------------------------------------


@contextmanager
def postgres(sampler: LoadSampler) -> Iterator[Any]:
    """A throwaway server (``tests/postgres_server.py``) whose ``warehouse`` database speaks
    enough DuckDB for the generated project; on tmpfs when there is one (like the stack's
    state and the DuckDB file), removed afterwards. Its processes count as ours in
    ``sampler``."""
    pg = pg_server_module()
    shm = Path("/dev/shm")
    # A directory of its own directly under /dev/shm or /tmp: as root the server runs as the
    # `postgres` OS user, which cannot enter a mkdtemp'd parent (mode 0700).
    base = Path(tempfile.mkdtemp(prefix="defer-orch-bench-pg-", dir=shm if shm.is_dir() else None))
    try:
        with pg.postgres_server(base) as server:
            conn = server.connect()
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(POSTGRES_DUCKDB_COMPAT)
            finally:
                conn.close()
            pid_file = server.data_dir / "postmaster.pid"
            sampler.add_root(int(pid_file.read_text().split("\n", 1)[0]))
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _filesystem(path: Path) -> str | None:
    done = subprocess.run(["df", "--output=fstype", os.fspath(path)], capture_output=True, text=True)
    lines = done.stdout.split()
    return lines[-1] if done.returncode == 0 and len(lines) > 1 else None


# One warehouse's stack -------------------------------------------------------------------------


class WarehouseStack:
    """The real stack over a :class:`ContentionRepo`, with the product configured for one
    warehouse and the instance of ``deploy/postgres/dagster.yaml`` on ``server``."""

    def __init__(self, warehouse: str, repo: ContentionRepo, root: Path, state: Path, server: Any) -> None:
        from defer_orchestration import constants as c

        e2e = stack_api.e2e()
        self.warehouse = warehouse
        self.repo = repo
        self.root = root
        self.dagster_home = state / "dagster_home"
        self.storage_env = server.dagster_env(server.create_database(f"dagster_{warehouse}"))
        self.warehouse_env = {c.ENV_WAREHOUSE: warehouse, **(server.env() if warehouse == "postgres" else {})}
        logs = root / "logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        workspace = root / "workspace.yaml"
        grpc_port, port = e2e.free_port(), e2e.free_port()
        while port == grpc_port:
            port = e2e.free_port()
        e2e.write_instance(
            self.dagster_home, workspace, grpc_port, source=e2e.POSTGRES_DAGSTER_YAML,
            storage_env=self.storage_env,
        )
        env = e2e.stack_env(
            os.environ,
            {
                **self.storage_env,
                **self.warehouse_env,
                "DAGSTER_HOME": os.fspath(self.dagster_home),
                c.ENV_HOME: os.fspath(state / "home"),
                c.ENV_DBT_PROJECT_DIR: os.fspath(repo.project_dir),
                c.ENV_GIT_REPO: os.fspath(repo.repo),
                c.ENV_PROJECT_SUBDIR: PROJECT_SUBDIR,
            },
        )
        self.stack = e2e.Stack(
            root, env, self.dagster_home, workspace, logs, port, grpc_port, repo=repo.repo, home=state / "home"
        )
        self.set_branch_pool_limit()
        self.settings = self._settings(server)

    def _settings(self, server: Any) -> Any:
        """The product's plain settings for this warehouse, as the stack's runs resolve them
        (for the raw CLI: same warehouse, same dbt threads)."""
        from defer_orchestration.resources import DeferOrchSettings

        pg = {}
        if self.warehouse == "postgres":
            pg = {"pg_host": server.host, "pg_port": str(server.port), "pg_user": server.user,
                  "pg_password": server.password, "pg_database": server.dbname}
        return DeferOrchSettings(
            home=os.fspath(self.stack.home), dbt_project_dir=os.fspath(self.repo.project_dir),
            warehouse_kind=self.warehouse, **pg,
        ).core()

    def set_branch_pool_limit(self) -> None:
        """``dagster instance concurrency set branch_builds 4``: what ``make dev-pg`` runs and
        the deploy README prescribes (a dagster.yaml only sets the default limit)."""
        from defer_orchestration import constants as c

        command = [
            os.fspath(stack_api.e2e().VENV_BIN / "dagster"), "instance", "concurrency", "set",
            c.BRANCH_POOL, str(BRANCH_POOL_LIMIT),
        ]
        done = subprocess.run(command, cwd=self.root, env=self.stack.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(command[1:])} failed:\n{(done.stdout + done.stderr)[-2000:]}")

    @contextmanager
    def instance(self) -> Iterator[Any]:
        """The stack's instance, opened in this process (its storage reads DAGSTER_PG_*)."""
        import dagster as dg

        with environ(self.storage_env), dg.DagsterInstance.from_config(os.fspath(self.dagster_home)) as inst:
            yield inst

    def pool_limits(self) -> dict[str, int | None]:
        """Slots per pool as the instance has them (the run queue's and the steps' limits):
        the limit set for the pool, else the instance's ``default_limit`` (Dagster creates a
        pool's slots with that limit when a step first claims one)."""
        from defer_orchestration import constants as c

        with self.instance() as inst:
            default = inst.get_concurrency_config().pool_config.default_pool_limit
            storage = inst.event_log_storage
            return {
                pool: storage.get_concurrency_info(pool).slot_count or default
                for pool in (c.WAREHOUSE_POOL, c.BRANCH_POOL, c.PRODUCTION_POOL)
            }

    def run_queue(self) -> dict[str, Any]:
        """The run queue's settings as the instance resolved them."""
        with self.instance() as inst:
            config = inst.get_concurrency_config()
            granularity = config.pool_config.pool_granularity
            return {
                "coordinator": type(inst.run_coordinator).__name__,
                "max_concurrent_runs": config.run_queue_config.max_concurrent_runs if config.run_queue_config else None,
                "pool_granularity": getattr(granularity, "value", granularity),
                "storage": type(inst.run_storage).__name__,
            }

    def published_manifest_dir(self) -> Path:
        """Where the latest published production manifest is stored (the raw CLI's ``--state``)."""
        from defer_orchestration.defs.manifest_resolution import latest_published_manifest

        with self.instance() as inst:
            return Path(latest_published_manifest(inst).path)

    def output_metadata(self, run_id: str) -> dict[str, Any]:
        """The branch build step's output metadata, as plain values."""
        with self.instance() as inst:
            for record in inst.all_logs(run_id):
                event = record.dagster_event
                if event is None or event.step_key != BRANCH_BUILD_STEP:
                    continue
                if event.event_type_value == "STEP_OUTPUT":
                    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.metadata.items()}
        raise BenchError(f"branch run {run_id} reported no output from {BRANCH_BUILD_STEP!r}")

    def branch_pool(self) -> str:
        """The pool ``branch_ci_job``'s step holds: the warehouse's choice."""
        from defer_orchestration import constants as c

        return c.WAREHOUSE_POOL if self.settings.warehouse.serialise_writers else c.BRANCH_POOL


# Launching and checking runs ---------------------------------------------------------------------


def _timeout(n_models: int, runs: int) -> float:
    """A guard against a hung run or wave, far above any expected time (not a measurement)."""
    return 600 + 1.0 * n_models * runs


def _finished_runs(ws: WarehouseStack, branch_of: dict[str, str | None], timeout: float) -> tuple[list, dict]:
    """Wait for the runs; their records and events; a BenchError naming every failed one."""
    stack = ws.stack
    stack_api.wait_all(stack, list(branch_of), timeout)
    runs = [stack_api.run_detail(stack, rid) for rid in branch_of]
    events = {rid: stack_api.run_events(stack, rid) for rid in branch_of}
    failed = [r for r in runs if r["status"] != "SUCCESS"]
    if failed:
        details = "\n\n".join(
            f"{r['jobName']} {r['runId']} ({branch_of[r['runId']] or 'production'}) ended {r['status']}:\n"
            f"{failure_text(events[r['runId']])}"
            for r in failed
        )
        raise BenchError(
            f"{len(failed)} of {len(runs)} runs on the {ws.warehouse} warehouse did not succeed:\n"
            f"{details}\nThe stack's logs are in {stack.logs}."
        )
    return runs, events


def _production_build(ws: WarehouseStack, n_models: int) -> dict[str, Any]:
    from defer_orchestration import constants as c

    run_id = stack_api.submit(ws.stack.client, c.PROD_BUILD_JOB, None, None)
    [run], _ = _finished_runs(ws, {run_id: None}, _timeout(n_models, 1))
    return {
        "run_id": run_id,
        "seconds": round(run["endTime"] - run["creationTime"], 3),
        "duration_seconds": round(run["endTime"] - run["startTime"], 3),
    }


def push_leaf(repo: ContentionRepo, branch: str) -> str:
    """A new branch from main whose commit edits the project's leaf model; its sha."""
    git(repo.dev, "checkout", "-q", "-B", branch, "origin/main")
    repo.dev_project.change_model(repo.dev_project.leaf_model)
    git(repo.dev, "commit", "-q", "-am", "bench: parallel, change the leaf model")
    git(repo.dev, "push", "-q", "--force", "origin", f"HEAD:refs/heads/{branch}")
    sha = git(repo.dev, "rev-parse", "HEAD")
    git(repo.dev, "checkout", "-q", "--detach", "origin/main")
    return sha


def _leaf_run(
    ws: WarehouseStack, cli: RawCli, n_models: int, rep: int, pooled: set[str], data_diff: bool | None,
    sampler: LoadSampler,
) -> dict[str, Any]:
    """One leaf change, alone: through the queue, then the same commit by the raw CLI."""
    from defer_orchestration import constants as c

    branch = f"{LEAF_BRANCH_PREFIX}{rep + 1}"
    sha = push_leaf(ws.repo, branch)
    with sampler.phase(f"{ws.warehouse}/leaf_run"):
        run_id = stack_api.submit(ws.stack.client, c.BRANCH_CI_JOB, branch, data_diff)
        [run], events = _finished_runs(ws, {run_id: branch}, _timeout(n_models, 1))
    timed = run_timings(run, branch, events[run_id], pooled, ws.branch_pool(), run["creationTime"])
    metadata = ws.output_metadata(run_id)
    log(
        f"N={n_models} {ws.warehouse}: leaf run {timed['duration_seconds']:.1f}s "
        f"(queue wait {timed['queue_wait_seconds']:.1f}s); raw CLI next"
    )
    with sampler.phase(f"{ws.warehouse}/raw_cli"), environ(ws.settings.warehouse.dbt_env()):
        # The warehouse's dbt environment (PostgreSQL: the password variable the profile
        # reads), as the product gives its own dbt processes.
        raw = cli.build(sha, f"{ws.warehouse}-leaf-{rep + 1}")
    selected = sorted(required(metadata, "selected_nodes"))
    if raw["selected_nodes"] != selected:
        raise BenchError(
            f"{ws.warehouse}: the raw CLI ran {len(raw['selected_nodes'])} nodes, the Dagster run "
            f"selected {len(selected)} for the same leaf change"
        )
    log(f"N={n_models} {ws.warehouse}: raw CLI {raw['wall_seconds']:.1f}s")
    return {
        **timed,
        "sha": sha,
        "selected": int(required(metadata, "nodes/selected")),
        "built": int(required(metadata, "nodes/built")),
        "phases": phase_split(metadata, timed["duration_seconds"]),
        "cli_seconds": round(raw["wall_seconds"], 3),
    }


def max_at_once(intervals: Sequence[tuple[str, float, float]]) -> int:
    """The most intervals open at the same moment (touching ends do not overlap)."""
    edges = sorted([(start, 1) for _, start, _ in intervals] + [(end, -1) for _, _, end in intervals])
    at_once = best = 0
    for _, step in edges:  # at equal times an end (-1) sorts before a start (+1)
        at_once += step
        best = max(best, at_once)
    return best


def _wave(
    ws: WarehouseStack, n_models: int, pooled: set[str], data_diff: bool | None, sampler: LoadSampler,
) -> dict[str, Any]:
    """Every branch pushed, then one branch_ci_job per branch launched back to back."""
    from defer_orchestration import constants as c

    ws.repo.push_all()
    with sampler.phase(f"{ws.warehouse}/wave"):
        launched_at = time.time()
        branch_of: dict[str, str | None] = {
            stack_api.submit(ws.stack.client, c.BRANCH_CI_JOB, branch, data_diff): branch
            for branch in ws.repo.branches
        }
        launch_seconds = time.time() - launched_at
        runs, events = _finished_runs(ws, branch_of, _timeout(n_models, len(branch_of)))
    pool = ws.branch_pool()
    timed = [run_timings(r, branch_of[r["runId"]], events[r["runId"]], pooled, pool, launched_at) for r in runs]
    intervals = [i for r in runs for i in warehouse_intervals(r, pooled)]
    wall = max(r["endTime"] for r in runs) - launched_at
    durations = sum(t["duration_seconds"] for t in timed)
    at_once = max_at_once(intervals)
    log(
        f"N={n_models} {ws.warehouse}: {len(runs)} pushes at once: {wall:.1f}s wall, up to {at_once} "
        f"builds at once, max queue wait {max(t['queue_wait_seconds'] for t in timed):.1f}s"
    )
    return {
        "wall_seconds": round(wall, 3),
        "launch_seconds": round(launch_seconds, 3),
        "all_succeeded": True,
        "max_builds_at_once": at_once,
        "sum_of_durations_seconds": round(durations, 3),
        "wall_over_sum_of_durations": round(wall / durations, 4) if durations else None,
        "runs": timed,
    }


def _measure_warehouse(
    warehouse: str, n_models: int, root: Path, server: Any, *, branch_runs: int, repeats: int,
    data_diff: bool | None, sampler: LoadSampler,
) -> dict[str, Any]:
    """Production build, ``repeats`` leaf runs (+ raw CLI) and waves on one warehouse's stack."""
    from defer_orchestration import constants as c

    log(f"N={n_models} {warehouse}: generating the project and {branch_runs} branches")
    repo = ContentionRepo(n_models, root, branch_runs)
    stack_error = stack_api.e2e().StackError
    with stack_api.state_dir(f"parallel_{warehouse}") as state:
        ws = WarehouseStack(warehouse, repo, root, state, server)
        leaf_runs: list[dict[str, Any]] = []
        waves: list[dict[str, Any]] = []
        try:
            with sampler.phase(f"{warehouse}/stack_start"):
                start_seconds = stack_api.start(ws.stack, n_models)
            log(f"N={n_models} {warehouse}: stack ready in {start_seconds:.1f}s at {ws.stack.url}")
            pools = ws.pool_limits()
            run_queue = ws.run_queue()
            pooled = stack_api.warehouse_steps(ws.stack, c.BRANCH_CI_JOB, ws.branch_pool())
            log(f"N={n_models} {warehouse}: production build")
            with sampler.phase(f"{warehouse}/production_build"):
                production = _production_build(ws, n_models)
            log(f"N={n_models} {warehouse}: production build {production['seconds']:.1f}s")
            cli = RawCli(
                repo.repo, PROJECT_SUBDIR, settings=ws.settings, main_sha=git(repo.repo, "rev-parse", "main"),
                state_dir=ws.published_manifest_dir(), root=root / "cli",
            )
            for rep in range(repeats):
                log(f"N={n_models} {warehouse} repeat {rep + 1}/{repeats}: leaf change alone")
                leaf_runs.append(_leaf_run(ws, cli, n_models, rep, pooled, data_diff, sampler))
                log(f"N={n_models} {warehouse} repeat {rep + 1}/{repeats}: {branch_runs} pushes at once")
                waves.append(_wave(ws, n_models, pooled, data_diff, sampler))
        except stack_error as exc:
            raise BenchError(f"{exc}\n{ws.stack.all_log_tails(40)}") from exc
        finally:
            ws.stack.stop()
        on_tmpfs = os.fspath(state).startswith("/dev/shm")
    return summarize_warehouse(
        warehouse, ws.branch_pool(), pools, production, leaf_runs, waves,
        stack_start_seconds=start_seconds, state_on_tmpfs=on_tmpfs, branches=repo.branches, run_queue=run_queue,
    )


def summarize_warehouse(
    warehouse: str, pool: str, pools: dict[str, int | None], production: dict[str, Any],
    leaf_runs: list[dict[str, Any]], waves: list[dict[str, Any]], **setup: Any,
) -> dict[str, Any]:
    """One warehouse's leaf runs and waves as medians (min–max) over the repeats."""
    leaf = stats([r["duration_seconds"] for r in leaf_runs])
    cli = stats([r["cli_seconds"] for r in leaf_runs])
    end_to_end = stats([r["end_to_end_seconds"] for r in leaf_runs])
    return {
        "warehouse": warehouse,
        "branch_pool": pool,
        "branch_pool_limit": pools.get(pool),
        "pool_limits": pools,
        "production_build": production,
        "leaf": {
            "seconds": leaf,
            "queue_wait_seconds": stats([r["queue_wait_seconds"] for r in leaf_runs]),
            "end_to_end_seconds": end_to_end,
            "cli_seconds": cli,
            "over_cli": ratio(leaf, cli),
            "end_to_end_over_cli": ratio(end_to_end, cli),
            "selected_nodes": leaf_runs[0]["selected"] if leaf_runs else None,
            "built_models": leaf_runs[0]["built"] if leaf_runs else None,
            "phases_median": {
                p: stats([r["phases"][p] for r in leaf_runs])["median"] for p in PHASES
            } if leaf_runs else None,
            "runs": leaf_runs,
        },
        "wave": {
            "wall_seconds": stats([w["wall_seconds"] for w in waves]),
            "max_queue_wait_seconds": stats([max(r["queue_wait_seconds"] for r in w["runs"]) for w in waves]),
            "sum_of_durations_seconds": stats([w["sum_of_durations_seconds"] for w in waves]),
            "max_builds_at_once": max((w["max_builds_at_once"] for w in waves), default=None),
            "repeats": waves,
        },
        **setup,
    }


def bench_parallel(
    n_models: int,
    root: Path,
    *,
    branch_runs: int = 8,
    repeats: int = 1,
    data_diff: bool | None = None,
    warehouses: Sequence[str] = WAREHOUSES,
) -> dict[str, Any]:
    """The leaf run (and raw CLI) and ``branch_runs`` pushes at once, ``repeats`` times, on
    each of ``warehouses``, over a generated project of ``n_models`` models.

    ``data_diff``: None runs branch_ci_job with the product's default. Every stack and the
    PostgreSQL server are stopped before this returns or raises.
    """
    unknown = sorted(set(warehouses) - set(WAREHOUSES))
    if branch_runs < 1 or repeats < 1 or unknown or not warehouses:
        raise ValueError(
            f"branch_runs and repeats must be >= 1 and warehouses among {WAREHOUSES}; got "
            f"{branch_runs}, {repeats}, {list(warehouses)}"
        )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    uptime_before = uptime()
    per_warehouse: dict[str, dict[str, Any]] = {}
    with LoadSampler() as sampler:
        with postgres(sampler) as server:
            server_info = {
                "version": server.admin_sql("show server_version")[0][0],
                "data_dir_filesystem": _filesystem(server.data_dir.parent),
                "settings": dict(pg_server_module().SERVER_SETTINGS),
            }
            for warehouse in warehouses:
                per_warehouse[warehouse] = _measure_warehouse(
                    warehouse, n_models, root / warehouse, server, branch_runs=branch_runs,
                    repeats=repeats, data_diff=data_diff, sampler=sampler,
                )
        load = sampler.summary()
    for warehouse, row in per_warehouse.items():
        row["load"] = {k.split("/", 1)[1]: v for k, v in load.items() if k.startswith(f"{warehouse}/")}
    duck, pg = per_warehouse.get("duckdb"), per_warehouse.get("postgres")
    return {
        "n_models": n_models,
        "branch_runs": branch_runs,
        "repeats": repeats,
        "data_diff": data_diff,
        "production_build": PRODUCTION_NOTE,
        "dagster_instance": "deploy/postgres/dagster.yaml (PostgreSQL storage, QueuedRunCoordinator "
                            "polled every second, max_concurrent_runs 8, pools default_limit 1, "
                            f"branch_builds {BRANCH_POOL_LIMIT}) for both warehouses",
        "postgres_server": server_info,
        "warehouses": per_warehouse,
        "postgres_over_duckdb": {
            "wave_wall": ratio(pg["wave"]["wall_seconds"], duck["wave"]["wall_seconds"]),
            "leaf_run": ratio(pg["leaf"]["seconds"], duck["leaf"]["seconds"]),
            "leaf_cli": ratio(pg["leaf"]["cli_seconds"], duck["leaf"]["cli_seconds"]),
        } if duck and pg else None,
        "uptime": {"before": uptime_before, "after": uptime()},
    }
