"""The results file as markdown tables (stdout, ``--markdown``, the README) and the
targets of issue 6 they meet.

Pure: reads the JSON the measurements wrote, measures nothing and imports no
measurement, so ``--render-only`` works on any results file, including one written by
an earlier version of the runner (its phase columns are rendered as they were recorded).
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import fmt_number, fmt_stats, stats
from benchmarks.dbt_log import DBT_SEGMENTS

TARGETS = {
    "leaf_slim_over_full_at_1000": 0.10,
    "dagster_over_cli": 1.10,
    "second_push_over_cli": 1.0,  # "then go under 1.0x" (strictly below)
    "sensor_tick_seconds_at_1000_branches": 1.0,
}
CONTENTION_TITLE = "**5. Warehouse contention**"

# Columns of the phase table: (header, phases summed, digits). Every phase of
# benchmarks.phases.PHASES is in exactly one column.
PHASE_COLUMNS = (
    ("Dagster", ("dagster",), 2),
    ("resolve manifest", ("resolve_manifest",), 2),
    ("git mirror + comparison", ("git_mirror", "comparison"), 2),
    ("checkout", ("checkout",), 2),
    ("register schema", ("register_schema",), 2),
    ("dbt parse (waited for)", ("dbt_parse",), 1),
    ("read artifacts", ("read_artifacts",), 2),
    ("dbt ls", ("dbt_ls",), 1),
    ("pre-flight", ("preflight",), 2),
    ("dbt build + session exit", ("dbt_build", "dbt_session_exit"), 1),
    ("data diff", ("data_diff",), 1),
    ("summary + cleanup", ("summary", "cleanup"), 2),
)
PHASE_SOURCE = "as the branch build reports them (`phase_seconds`: exclusive wall seconds per stage)"
# Results recorded before the product reported its phases: the runner timed the
# product's functions in-process, under these labels.
LEGACY_PHASE_COLUMNS = (
    ("Dagster", ("dagster",), 2),
    ("resolve manifest", ("resolve_manifest",), 2),
    ("git + merge-base", ("git_mirror", "choose_comparison"), 2),
    ("worktree", ("worktree",), 2),
    ("warehouse open + register", ("warehouse_open", "warehouse_register"), 2),
    ("dbt parse (waited for)", ("dbt_parse",), 1),
    ("dbt ls", ("dbt_ls",), 1),
    ("pre-flight", ("preflight",), 2),
    ("dbt build + process exit", ("dbt_build", "dbt_session_exit"), 1),
    ("data diff", ("data_diff",), 1),
    ("artifacts + summary", ("load_artifacts", "summary"), 2),
    ("other", ("branch_build_other", "report_metadata"), 2),
)
LEGACY_PHASE_SOURCE = "timed in-process around the product's own functions"
_DBT_SPLIT_LABELS = {
    "product_parse": "Dagster run: `parse` (session start)",
    "product_ls": "Dagster run: `ls` (same session)",
    "product_build": "Dagster run: `build` (same session)",
    "product_again_parse": "second push: `parse` from the previous parse",
    "cli_build": "raw CLI `dbt build`",
    "cli_seeded_build": "raw CLI, seeded parse",
}


def _target(name: str, measured: float | None, met: bool) -> dict[str, Any]:
    return {"target": TARGETS[name], "measured": measured, "met": met}


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Which of issue 6's targets the measured medians meet."""
    out: dict[str, Any] = {}
    limit = TARGETS["leaf_slim_over_full_at_1000"]
    for size in results.get("branch_runs", []):
        n = size["n_models"]
        leaf = size["changes"].get("leaf")
        if leaf is not None and n == 1000:
            measured = leaf["slim_over_full"]
            out["leaf_slim_over_full_at_1000"] = _target(
                "leaf_slim_over_full_at_1000", measured, measured is not None and measured <= limit
            )
        if leaf is not None and n == 1000 and leaf.get("second_push_over_full") is not None:
            measured = leaf["second_push_over_full"]
            out["leaf_slim_over_full_at_1000 (second push)"] = _target(
                "leaf_slim_over_full_at_1000", measured, measured <= limit
            )
        for change, data in size["changes"].items():
            if data.get("dagster_over_cli") is not None:
                measured = data["dagster_over_cli"]
                out[f"dagster_over_cli/{n}/{change}"] = _target(
                    "dagster_over_cli", measured, measured <= TARGETS["dagster_over_cli"]
                )
            if data.get("second_push_over_cli") is not None:
                measured = data["second_push_over_cli"]
                out[f"second_push_over_cli/{n}/{change}"] = _target(
                    "second_push_over_cli", measured, measured < TARGETS["second_push_over_cli"]
                )
    for row in results.get("sensor", []):
        if row["branches"] == 1000:
            worst = max(row["first_tick_seconds"]["median"], row["steady_tick_seconds"]["median"])
            out["sensor_tick_seconds_at_1000_branches"] = _target(
                "sensor_tick_seconds_at_1000_branches",
                worst,
                worst <= TARGETS["sensor_tick_seconds_at_1000_branches"],
            )
    return out


# Measurements 1 and 2 ----------------------------------------------------------------------


def _slim_vs_full(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
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
                f"{fmt_stats(d['slim_seconds'])} | {fmt_stats(size['full']['seconds'])} | "
                f"{fmt_number(d['slim_over_full'])} | {fmt_stats(d.get('second_push_seconds'))} | "
                f"{fmt_number(d.get('second_push_over_full'))} |"
            )
    return lines + [""]


def _overhead(runs: list[dict[str, Any]]) -> list[str]:
    if not any(d.get("cli_seconds") for s in runs for d in s["changes"].values()):
        return []
    lines = [
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
                f"| {size['n_models']} | {change} | {fmt_stats(d['slim_seconds'])} | {fmt_stats(d['cli_seconds'])} | "
                f"{fmt_number(d['dagster_over_cli'])} | {fmt_stats(d.get('second_push_seconds'))} | "
                f"{fmt_number(d.get('second_push_over_cli'))} | {fmt_stats(d['cli_seeded_seconds'])} | "
                f"{fmt_number(d['cli_seeded_over_cli'])} |"
            )
    return lines + [""]


def _phase_rows(size: dict[str, Any]) -> list[tuple[str, float, dict[str, float]]]:
    changes = size["changes"]
    rows = [(c, d["slim_seconds"]["median"], d["phases_median"]) for c, d in changes.items()]
    rows += [
        (f"{c}, second push", d["second_push_seconds"]["median"], d["second_push_phases_median"])
        for c, d in changes.items()
        if d.get("second_push_seconds")
    ]
    rows.append(("full", size["full"]["seconds"]["median"], size["full"]["phases_median"]))
    return rows


def _phases(runs: list[dict[str, Any]]) -> list[str]:
    legacy = any("worktree" in p for size in runs for _, _, p in _phase_rows(size))
    columns, source = (LEGACY_PHASE_COLUMNS, LEGACY_PHASE_SOURCE) if legacy else (PHASE_COLUMNS, PHASE_SOURCE)
    lines = [
        f"**Where a branch run's time goes** (median seconds per phase of the Dagster runs, {source}; "
        "Dagster = wall minus all phases; dbt parse = the time the run waits for the parse: registering "
        "the schema and reading production's artifacts happen while dbt parses)",
        "",
        "| N | change | wall | " + " | ".join(header for header, _, _ in columns) + " |",
        "|---:|---|---:|" + "---:|" * len(columns),
    ]
    for size in runs:
        for change, wall, phases in _phase_rows(size):
            cells = " | ".join(f"{sum(phases.get(k, 0.0) for k in keys):.{digits}f}" for _, keys, digits in columns)
            lines.append(f"| {size['n_models']} | {change} | {wall:.1f} | {cells} |")
    return lines


def _dbt_splits(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
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
    for size in runs:
        entries = [(c, d.get("dbt_split_median") or {}) for c, d in size["changes"].items()]
        entries.append(("full", size["full"].get("dbt_split_median") or {}))
        for change, splits in entries:
            for key, label in _DBT_SPLIT_LABELS.items():
                x = splits.get(key)
                if not x:
                    continue
                cells = " | ".join(fmt_number(x.get(k), 1) for k in ("total", *DBT_SEGMENTS))
                lines.append(f"| {size['n_models']} | {change} | {label} | {cells} |")
    return lines + [""]


# Measurements 3, 4 and 5 ---------------------------------------------------------------------


def _load(loads: list[dict[str, Any]]) -> list[str]:
    lines = [
        "**3. Code-location load** (fresh process: import + `build_definitions` + repository + "
        "snapshot; first load: a production build of main's head stored its manifest; warm: the "
        "same home again; cold: a new home, clone + `dbt parse`)",
        "",
        "| N | assets | first load s | warm load s | of which import s | cold load s | "
        "of which clone + dbt parse s | peak RSS first MB | dbt parse peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in loads:
        f, w = row["first"], row["warm"]
        cold = row.get("cold") or {}
        cold_wall = fmt_stats(cold["process_wall_seconds"]) if cold else "–"
        cold_parse = fmt_stats(cold["prepare_manifest_seconds"]) if cold else "–"
        cold_rss = fmt_stats(cold["children_peak_rss_mb"], 0) if cold else "–"
        lines.append(
            f"| {row['n_models']} | {f.get('asset_count') or '–'} | {fmt_stats(f['process_wall_seconds'])} | "
            f"{fmt_stats(w['process_wall_seconds'])} | {fmt_stats(w['import_seconds'])} | {cold_wall} | "
            f"{cold_parse} | {fmt_stats(f['peak_rss_mb'], 0)} | {cold_rss} |"
        )
    return lines + [""]


def _sensor(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "**4. branch_ci_sensor tick** (`evaluate_tick`; first = every branch new, steady = nothing "
        "new, moved = one branch got a new commit)",
        "",
        "| branches | first tick s | run requests | steady tick s | one moved s | git ls-remote s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        # Older results timed the ls-remote inside the steady ticks.
        ls_remote = row.get("ls_remote_seconds") or row.get("ls_remote_seconds_steady")
        lines.append(
            f"| {row['branches']} | {fmt_stats(row['first_tick_seconds'], 3)} | {row['first_tick_run_requests']} | "
            f"{fmt_stats(row['steady_tick_seconds'], 3)} | {fmt_stats(row['one_moved_tick_seconds'], 3)} | "
            f"{fmt_stats(ls_remote, 3)} |"
        )
    return lines + [""]


def render_contention(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of measurement 5: one table row per project size."""
    lines = [
        f"{CONTENTION_TITLE} (a production build plus N branch runs launched at once through GraphQL on "
        "the real stack; every warehouse step holds the `duckdb_warehouse` pool, limit 1; "
        "wall = first launch to last run end; queue wait = run created to run start: the "
        "daemon keeps a run queued while the pool has no free slot for its first step, plus "
        "the run worker's start-up; pool wait = steps of a started run waiting for the slot; "
        "overlapping = pairs of warehouse steps that ran at the same time, must be 0)",
        "",
        "| N | runs at once | all succeeded | wall s | max queue wait s | max pool wait s | "
        "warehouse steps overlapping |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        waves = row.get("repeats") or []
        succeeded = bool(waves) and all(w.get("all_succeeded") for w in waves)
        pool = row.get("max_pool_wait_seconds") or stats(
            [max(r["pool_wait_seconds"] for r in w["runs"]) for w in waves if w.get("runs")]
        )
        overlapping = sum(len(w.get("overlapping_warehouse_steps") or []) for w in waves)
        lines.append(
            f"| {row['n_models']} | {row['branch_runs'] + 1} | {'yes' if succeeded else 'no'} | "
            f"{fmt_stats(row.get('wall_seconds'))} | {fmt_stats(row.get('max_queue_wait_seconds'))} | "
            f"{fmt_stats(pool)} | {overlapping} |"
        )
    lines.append("")
    return lines


STORAGE_TITLE = "**6. Dagster storage: `prod_build_job` vs plain `dbt build`**"
_STORAGE_LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def render_storage(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of measurement 6: one row per size and storage, then where the job's
    time went."""
    lines = [
        f"{STORAGE_TITLE} (same generated project, threads and DuckDB warehouse kind, every build from an "
        "empty warehouse file; plain = the venv's `dbt build` with a fresh target dir; job = "
        "`prod_build_job` with `execute_in_process` on an instance whose storage is SQLite (temp "
        "DAGSTER_HOME) or PostgreSQL (`deploy/postgres/dagster.yaml`'s storage on a throwaway server); "
        "wall seconds, median (min–max); events = entries the run wrote to the event log; ms per event = "
        "(job − plain) / events)",
        "",
        "| N | repeats | nodes (models + tests) | plain dbt s | storage | job s | job / plain | "
        "overhead s | events | events per node | overhead ms per event |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for storage, d in row["storages"].items():
            lines.append(
                f"| {row['n_models']} | {row['repeats']} | {row['nodes']} ({row['models']} + {row['tests']}) | "
                f"{fmt_stats(row['plain_dbt_seconds'])} | {_STORAGE_LABELS.get(storage, storage)} | "
                f"{fmt_stats(d['seconds'])} | {fmt_number(d['over_plain_dbt'])} | "
                f"{fmt_number(d['overhead_seconds'], 1)} | {d['events']} | {fmt_number(d['events_per_node'], 2)} | "
                f"{fmt_number(d['overhead_ms_per_event'], 2)} |"
            )
    for row in rows:
        connect = ((row.get("setup") or {}).get("postgres_server") or {}).get("connect_ms")
        if connect:
            lines += ["", f"N={row['n_models']}: one PostgreSQL connection (TCP + scram-sha-256, `select 1`, close; "
                      f"dagster-postgres opens one per storage call: `NullPool`) takes {fmt_stats(connect, 2)} ms."]
            break
    lines += [
        "",
        "Where the job's time goes (median seconds, from the run's event timestamps: before = run start to "
        "the dbt step's start; dbt step = its start to its first output: checkout of main's head, "
        "`dbt build`, row counts; events = the dbt step's outputs, materializations and check results; "
        "other = the rest of the wall: publishing step, run start and end)",
        "",
        "| N | storage | job s | before | dbt step | events | other | materializations | check results |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for storage, d in row["storages"].items():
            seg = d["segments_median"]
            cells = " | ".join(
                fmt_number(seg.get(k), 1)
                for k in ("before_dbt_step", "dbt_step_until_first_output", "dbt_step_events", "other")
            )
            lines.append(
                f"| {row['n_models']} | {_STORAGE_LABELS.get(storage, storage)} | {fmt_stats(d['seconds'])} | "
                f"{cells} | {d['materializations']} | {d['check_evaluations']} |"
            )
    return lines + [""]


PARALLEL_TITLE = "**7. Branch builds in parallel: DuckDB vs PostgreSQL warehouse**"
_WAREHOUSE_LABELS = {"duckdb": "DuckDB", "postgres": "PostgreSQL"}


def _load_cell(load: dict[str, Any] | None) -> str:
    """``mean load (others' cores)`` of one step, from a LoadSampler summary entry."""
    if not load or not load.get("loadavg_1min"):
        return "–"
    return f"{load['loadavg_1min']['mean']:.1f} ({load['others_cores']:.1f})"


def render_parallel(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of measurement 7: the pushes at once, the leaf run vs the raw CLI, the
    leaf run's phases, and how the production builds were made."""
    lines = [
        f"{PARALLEL_TITLE} (the real stack, runs launched through GraphQL into Dagster's run queue; "
        "the same instance for both warehouses: `deploy/postgres/dagster.yaml`, PostgreSQL storage, "
        "`max_concurrent_runs` 8, the queue polled every second; a branch build holds `duckdb_warehouse` "
        "(1 slot) on DuckDB, `branch_builds` (4 slots) on PostgreSQL; wall = first launch to last run end; "
        "queue wait = run created to run start (the daemon holds a run while its pool has no free slot, "
        "then the run worker starts: worker start-up = run launched to run start); "
        "sum of durations = the runs' start-to-end times added up; "
        "load = mean 1-minute load average during the wave (our processes count too), in brackets the "
        "CPU cores other processes used meanwhile)",
        "",
        "| N | warehouse | pushes at once | all succeeded | wall s | sum of durations s | wall / sum | "
        "builds at once (max) | max queue wait s | queue waits s (launch order) | worker start-up s | "
        "load (others' cores) |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        for warehouse, d in row["warehouses"].items():
            wave = d["wave"]
            waves = wave.get("repeats") or []
            succeeded = bool(waves) and all(w.get("all_succeeded") for w in waves)
            waits = ", ".join(f"{r['queue_wait_seconds']:.0f}" for r in waves[-1]["runs"]) if waves else "–"
            last = waves[-1] if waves else {}
            starts = stats([r["worker_start_seconds"] for r in last.get("runs", []) if "worker_start_seconds" in r])
            lines.append(
                f"| {row['n_models']} | {_WAREHOUSE_LABELS.get(warehouse, warehouse)} | {row['branch_runs']} | "
                f"{'yes' if succeeded else 'no'} | {fmt_stats(wave['wall_seconds'])} | "
                f"{fmt_stats(wave['sum_of_durations_seconds'])} | "
                f"{fmt_number(last.get('wall_over_sum_of_durations'))} | "
                f"{wave['max_builds_at_once']} | {fmt_stats(wave['max_queue_wait_seconds'])} | {waits} | "
                f"{fmt_stats(starts)} | {_load_cell((d.get('load') or {}).get('wave'))} |"
            )
    lines += [
        "",
        "Leaf change alone (a new branch editing the leaf model, the stack otherwise idle; run = "
        "run start to end; queue = created to start: dequeue and run worker start-up; raw CLI = "
        "`dbt build --select state:modified+ --defer --state <published manifest>` on a fresh checkout "
        "and target dir, its own schema in the same warehouse, same selection, no data diff)",
        "",
        "| N | warehouse | nodes selected | models built | run s | queue s | created to end s | raw CLI s | "
        "run / CLI | created to end / CLI | load (others' cores) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for warehouse, d in row["warehouses"].items():
            leaf = d["leaf"]
            lines.append(
                f"| {row['n_models']} | {_WAREHOUSE_LABELS.get(warehouse, warehouse)} | {leaf['selected_nodes']} | "
                f"{leaf['built_models']} | {fmt_stats(leaf['seconds'])} | {fmt_stats(leaf['queue_wait_seconds'])} | "
                f"{fmt_stats(leaf['end_to_end_seconds'])} | {fmt_stats(leaf['cli_seconds'])} | "
                f"{fmt_number(leaf['over_cli'])} | {fmt_number(leaf['end_to_end_over_cli'])} | "
                f"{_load_cell((d.get('load') or {}).get('leaf_run'))} |"
            )
    lines += [
        "",
        f"The leaf run's phases (median seconds, {PHASE_SOURCE}; Dagster = run duration minus all phases)",
        "",
        "| N | warehouse | run | " + " | ".join(header for header, _, _ in PHASE_COLUMNS) + " |",
        "|---:|---|---:|" + "---:|" * len(PHASE_COLUMNS),
    ]
    for row in rows:
        for warehouse, d in row["warehouses"].items():
            phases = d["leaf"].get("phases_median") or {}
            cells = " | ".join(
                f"{sum(phases.get(k, 0.0) for k in keys):.{digits}f}" for _, keys, digits in PHASE_COLUMNS
            )
            lines.append(
                f"| {row['n_models']} | {_WAREHOUSE_LABELS.get(warehouse, warehouse)} | "
                f"{fmt_stats(d['leaf']['seconds'])} | {cells} |"
            )
    lines.append("")
    for row in rows:
        builds = ", ".join(
            f"{_WAREHOUSE_LABELS.get(w, w)} {d['production_build']['seconds']:.1f} s"
            for w, d in row["warehouses"].items()
        )
        versus = row.get("postgres_over_duckdb") or {}
        lines.append(
            f"N={row['n_models']}: production build: {row['production_build']} ({builds}). "
            f"PostgreSQL / DuckDB: wave wall {fmt_number(versus.get('wave_wall'))}, leaf run "
            f"{fmt_number(versus.get('leaf_run'))}, raw CLI {fmt_number(versus.get('leaf_cli'))}."
        )
        if row.get("uptime"):
            lines.append(
                f"N={row['n_models']}: `uptime` before: {row['uptime']['before']}; "
                f"after: {row['uptime']['after']}."
            )
    return lines + [""]


def _targets(met: dict[str, Any]) -> list[str]:
    lines = ["**Targets**", "", "| target | limit | measured | met |", "|---|---:|---:|---|"]
    for name, t in met.items():
        lines.append(f"| {name} | {t['target']} | {fmt_number(t['measured'], 3)} | {'yes' if t['met'] else 'no'} |")
    return lines + [""]


def render_markdown(results: dict[str, Any]) -> str:
    """The tables for the README (and stdout)."""
    lines: list[str] = []
    runs = results.get("branch_runs", [])
    if runs:
        lines += _slim_vs_full(runs) + _overhead(runs) + _phases(runs) + _dbt_splits(runs)
    if results.get("load"):
        lines += _load(results["load"])
    if results.get("sensor"):
        lines += _sensor(results["sensor"])
    if results.get("contention"):
        lines += render_contention(results["contention"])
    if results.get("storage"):
        lines += render_storage(results["storage"])
    if results.get("parallel"):
        lines += render_parallel(results["parallel"])
    if results.get("targets"):
        lines += _targets(results["targets"])
    return "\n".join(lines)
