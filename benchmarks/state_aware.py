"""State-aware production at N models with S sources (issue 24): what a scheduled run costs
when (a) nothing changed, (b) a few sources changed, (c) one macro changed, against a full
build measured in the same run, and what observing the sources costs on its own.

    python -m benchmarks.state_aware --models 1000 --sources 50 --changed-sources 5 \\
        --out benchmarks/results/state_aware.json --markdown benchmarks/results/state_aware.md \\
        [--rows 2000] [--work-dir DIR] [--keep]

Steps:

1. The generated project (``benchmarks.generate_project``) with its base models reading
   S dbt sources (``ext.src_NN``, tables written into the warehouse as an external loader
   would, ``bench_rows`` rows each, the columns the base models generated) and a macro
   ``bench_round`` used by a few staging models; committed to ``main`` of a scratch git
   repository. Definitions loaded as a code location would (head parsed once). The Dagster
   instance is the product's (``BatchedEventsInstance``, SQLite under the work directory),
   as ``deploy/*/dagster.yaml`` configures it.
2. ``prod_build_job`` in ``mode: full`` (wall seconds, node-seconds from its run_results).
3. ``mode: state_aware`` as ``prod_build_schedule`` launches it, three times: (a) nothing
   changed; (b) new rows in C sources; (c) the macro changed on main (definitions reloaded
   as after a merge). Each run's rebuilt nodes must be exactly the expected ones (the
   changed sources' descendants; the macro's users and their descendants, by the
   manifest's ``child_map``), else :class:`BenchError`. Per run: wall seconds, node-seconds
   built, node-seconds not spent (``prod_manifest``'s metadata), the observation's seconds,
   and the full build's node-seconds of exactly the rebuilt nodes. After (b) and (c), the
   same nodes built again with plain ``dbt build --select`` (selected as the product selects
   them, no Dagster): what building exactly the affected nodes costs, in wall seconds.
4. The observation alone (``state_aware.observe`` over the head's manifest), 3 times.

Benchmarks are not tests: no timing is asserted. Nothing in the product is wrapped.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import BenchError, fmt_number, git, log, machine_info, product_info, publish_markdown, stats
from benchmarks.generate_project import GeneratedProject, generate_project

SUBDIR = "bench"
MACRO = "{% macro bench_round(x, n) %}round({{ x }}, {{ n }}){% endmacro %}\n"
MACRO_CHANGED = "{% macro bench_round(x, n) %}round(({{ x }}) + 0, {{ n }}){% endmacro %}\n"
MACRO_USERS = 5  # staging models calling bench_round


def _source_sql(rows: int, k: int) -> str:
    """A source table with the base models' columns (deterministic for ``k``)."""
    return (
        f"create or replace table ext.src_{k:02d} as select i as id, "
        f"cast(hash(i + {k}) % {rows} as bigint) as fk, chr(65 + cast(hash(i + {k + 1}) % 5 as integer)) as category, "
        f"date '2020-01-01' + cast(hash(i + {k + 2}) % 1461 as integer) as event_date, "
        f"cast(hash(i + {k + 3}) % 100000 as double) / 100.0 as amount, "
        f"cast(hash(i + {k + 4}) % 1000 as double) / 1000.0 as score from range({rows}) as t(i)"
    )


def _wire_sources(project: GeneratedProject, n_sources: int) -> dict[str, int]:
    """Base model -> the source it now reads; the sources file and the macro written."""
    reads: dict[str, int] = {}
    for i, model in enumerate(project.layers["base"]):
        k = i % n_sources
        reads[model] = k
        project.sql_path(model).write_text(
            f"-- {model}: base model reading source ext.src_{k:02d}\n"
            f"select id, fk, category, event_date, amount, score from {{{{ source('ext', 'src_{k:02d}') }}}}\n"
        )
    tables = "".join(f"      - name: src_{k:02d}\n" for k in range(n_sources))
    (project.path / "models" / "_bench_sources.yml").write_text(
        f"sources:\n  - name: ext\n    schema: ext\n    tables:\n{tables}"
    )
    (project.path / "macros").mkdir(exist_ok=True)
    (project.path / "macros" / "bench_round.sql").write_text(MACRO)
    users = 0
    for model in project.layers["staging"]:
        path = project.sql_path(model)
        text = path.read_text()
        if users < MACRO_USERS and "round(amount, 4) as amount" in text:
            path.write_text(text.replace("round(amount, 4) as amount", "{{ bench_round('amount', 4) }} as amount"))
            users += 1
    if users < MACRO_USERS:
        raise BenchError(f"only {users} staging models could call the macro")
    return reads


def _descendants(manifest: dict[str, Any], roots: Sequence[str]) -> set[str]:
    children = manifest.get("child_map") or {}
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return {u for u in seen if u.startswith(("model.", "seed.", "snapshot."))}


class StateAwareBench:
    """One production of the generated project in a scratch repository and Dagster instance."""

    def __init__(self, root: Path, n_models: int, n_sources: int, rows: int) -> None:
        import dagster as dg

        from defer_orchestration.definitions import build_definitions
        from defer_orchestration.resources import DeferOrchSettings

        self.root, self.rows, self.n_sources = root, rows, n_sources
        repo = root / "repo"
        repo.mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        self.project = generate_project(repo / SUBDIR, n_models, seed=0, rows=rows)
        self.reads = _wire_sources(self.project, n_sources)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "generated project with sources")
        self.repo = repo
        self.settings = DeferOrchSettings(home=str(root / "home"), dbt_project_dir=str(repo / SUBDIR))
        with self.settings.core().warehouse.connect() as conn:
            conn.execute("create schema if not exists ext")
            for k in range(n_sources):
                conn.execute(_source_sql(rows, k))
        # The product's instance class (deploy/*/dagster.yaml): its event batches, as deployed.
        home = root / "dagster"
        home.mkdir()
        (home / "dagster.yaml").write_text(
            "instance_class:\n  module: defer_orchestration.dagster_storage.instance\n  class: BatchedEventsInstance\n"
            "telemetry:\n  enabled: false\n"
        )
        self.instance = dg.DagsterInstance.from_config(str(home))
        started = time.perf_counter()
        self.defs = build_definitions(self.settings)
        self.load_seconds = round(time.perf_counter() - started, 2)

    def close(self) -> None:
        self.instance.dispose()

    def run(self, mode: str) -> dict[str, Any]:
        """One ``prod_build_job`` run in ``mode``: its numbers and what it rebuilt."""
        import dagster as dg

        from defer_orchestration import constants as c
        from defer_orchestration.dbt.artifacts import execution_times, load_json
        from defer_orchestration.production.build import prod_build_target_path

        head = git(self.repo, "rev-parse", "HEAD")
        started = time.perf_counter()
        result = self.defs.resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(
            run_config={"ops": {c.PROD_DBT_OP: {"config": {"sha": head, "mode": mode}}}},
            instance=self.instance, raise_on_error=False,
        )
        wall = round(time.perf_counter() - started, 2)
        if not result.success:
            raise BenchError(f"prod_build_job ({mode}) failed: run {result.run_id}")
        event = self.instance.get_latest_materialization_event(dg.AssetKey(c.PROD_MANIFEST_ASSET))
        if event is None or event.run_id != result.run_id:
            raise BenchError(f"prod_build_job ({mode}) published nothing")
        meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        target = prod_build_target_path(self.settings.core(), result.run_id)
        results = load_json(target / "run_results.json", what="run_results")
        seconds = execution_times(results)
        built = set((meta.get("why_rebuilt") or {}) if mode == "state_aware" else seconds)
        ran = self._ran(target)  # what this run's dbt commands ran (not the results it kept)
        return {
            "wall_s": wall,
            "node_seconds_built": round(sum(seconds.get(u, 0.0) for u in ran), 2),
            "node_seconds": seconds,
            "ran": sorted(ran),
            "rebuilt": sorted(u for u in built if u.startswith(("model.", "seed.", "snapshot."))),
            "rebuilt_by_reason": {k: len(v) for k, v in (meta.get("rebuilt_by_reason") or {}).items()},
            "kept": int(meta.get("nodes_kept") or 0),
            "node_seconds_not_spent": float(meta.get("prod_node_seconds_not_spent") or 0.0),
            "observation_s": float(meta.get("observation_seconds") or 0.0),
            "headline": meta.get("headline") or "",
        }

    @staticmethod
    def _ran(target: Path) -> set[str]:
        """unique_ids the run's own dbt commands ran (not the kept results it carried)."""
        ran: set[str] = set()
        for results in (target.parent / "steps").glob("*/run_results.json"):
            ran |= {r["unique_id"] for r in json.loads(results.read_text())["results"]}
        return ran

    def manifest(self) -> dict[str, Any]:
        from defer_orchestration.defs.manifest_resolution import latest_published_manifest

        return json.loads(latest_published_manifest(self.instance).manifest_path.read_text())

    def change_sources(self, count: int) -> list[str]:
        """New rows in ``count`` sources, straight into the warehouse; their unique_ids."""
        changed = []
        with self.settings.core().warehouse.connect() as conn:
            for k in range(count):
                conn.execute(f"insert into ext.src_{k:02d} select * from ext.src_{k:02d} where id < 10")
                conn.execute(f"update ext.src_{k:02d} set id = id + {self.rows} where rowid >= {self.rows}")
                changed.append(f"source.bench.ext.src_{k:02d}")
        return changed

    def change_macro(self) -> None:
        """Merge a change of the macro on main and reload the definitions (as after a merge)."""
        from defer_orchestration.definitions import build_definitions

        (self.project.path / "macros" / "bench_round.sql").write_text(MACRO_CHANGED)
        git(self.repo, "commit", "-q", "-am", "merge: bench_round changed")
        self.defs = build_definitions(self.settings)

    def plain_dbt_build(self, rebuilt: Sequence[str], name: str) -> dict[str, Any]:
        """``dbt build`` of exactly ``rebuilt`` (and their tests) into production with dbt
        alone, outside Dagster and the product, selected as the product selects them: what
        building exactly the affected nodes costs (the reference of (b) and (c))."""
        from defer_orchestration import constants as c
        from defer_orchestration.dbt.artifacts import execution_times
        from defer_orchestration.dbt.cli import DbtPaths, run_dbt
        from defer_orchestration.dbt.profiles import write_profiles
        from defer_orchestration.production.state import selection

        core = self.settings.core()
        work = self.root / "plain" / name
        profiles = write_profiles(
            work / "profiles", self.project.path, {c.PROD_TARGET: c.PROD_SCHEMA}, c.PROD_TARGET,
            warehouse=core.warehouse, threads=core.threads,
        )
        paths = DbtPaths(self.project.path, profiles, work / "target", work / "logs", None, {}, core.warehouse.dbt_env())
        started = time.perf_counter()
        run = run_dbt(["build", "--select", *selection(self.manifest(), rebuilt)], paths, target=c.PROD_TARGET, check=False)
        wall = round(time.perf_counter() - started, 2)
        results = run.run_results()
        if run.returncode != 0 or results is None:
            raise BenchError(f"plain dbt build of the {len(rebuilt)} rebuilt nodes failed:\n{run.tail()}")
        built = {u for u in execution_times(results) if u.startswith(("model.", "seed.", "snapshot."))}
        if built != set(rebuilt):
            raise BenchError(f"plain dbt build ran {len(built)} nodes, not the {len(rebuilt)} rebuilt ones")
        return {"wall_s": wall, "node_seconds": round(sum(execution_times(results).values()), 2)}

    def observe(self, repeats: int) -> dict[str, Any]:
        from defer_orchestration.production.state_aware import observe

        manifest = self.manifest()
        samples = []
        for _ in range(repeats):
            samples.append(observe(self.settings.core().warehouse, manifest).seconds)
        return stats(samples)


def _check(what: str, got: Sequence[str], expected: set[str]) -> None:
    if set(got) != expected:
        raise BenchError(
            f"{what}: rebuilt {len(got)} nodes, expected {len(expected)} "
            f"(extra {sorted(set(got) - expected)[:5]}, missing {sorted(expected - set(got))[:5]})"
        )


def run(n_models: int, n_sources: int, n_changed: int, rows: int, work: Path) -> dict[str, Any]:
    """Every measurement (see the module docstring)."""
    bench = StateAwareBench(work, n_models, n_sources, rows)
    try:
        log(f"full build of {n_models} models, {n_sources} sources")
        full = bench.run("full")
        manifest = bench.manifest()
        full_seconds = full["node_seconds"]
        scenarios: dict[str, Any] = {}
        log("(a) nothing changed")
        scenarios["nothing_changed"] = bench.run("state_aware")
        _check("nothing changed", scenarios["nothing_changed"]["rebuilt"], set())
        log(f"(b) {n_changed} sources changed")
        changed = bench.change_sources(n_changed)
        scenarios["sources_changed"] = bench.run("state_aware")
        _check("sources changed", scenarios["sources_changed"]["rebuilt"], _descendants(manifest, changed))
        log("(b) the same nodes with plain dbt")
        scenarios["sources_changed"]["plain_dbt"] = bench.plain_dbt_build(scenarios["sources_changed"]["rebuilt"], "b")
        log("(c) one macro changed")
        users = [u for u, n in manifest["nodes"].items() if "macro.bench.bench_round" in (n.get("depends_on") or {}).get("macros", [])]
        bench.change_macro()
        scenarios["macro_changed"] = bench.run("state_aware")
        _check("macro changed", scenarios["macro_changed"]["rebuilt"], set(users) | _descendants(manifest, users))
        log("(c) the same nodes with plain dbt")
        scenarios["macro_changed"]["plain_dbt"] = bench.plain_dbt_build(scenarios["macro_changed"]["rebuilt"], "c")
        for scenario in scenarios.values():
            # What building exactly the same nodes (tests included) took in the full build.
            scenario["full_node_seconds_of_rebuilt"] = round(sum(full_seconds.get(u, 0.0) for u in scenario.pop("ran")), 2)
            scenario["wall_vs_full"] = round(scenario["wall_s"] / full["wall_s"], 4)
            scenario["rebuilt"] = len(scenario.pop("rebuilt"))
            scenario.pop("node_seconds")
        full["nodes"] = len(full.pop("rebuilt"))
        full.pop("node_seconds")
        full.pop("ran")
        log("observation alone")
        observation = bench.observe(3)
        return {
            "models": n_models, "sources": n_sources, "changed_sources": n_changed, "rows": rows,
            "macro_users": len(users), "definitions_load_s": bench.load_seconds,
            "full": full, "state_aware": scenarios, "observation_s": observation,
        }
    finally:
        bench.close()


def markdown(results: dict[str, Any], product: dict[str, Any], when: str, cpus: int | None) -> str:
    full = results["full"]
    rows = []
    labels = {
        "nothing_changed": "(a) nothing changed",
        "sources_changed": f"(b) {results['changed_sources']} sources changed",
        "macro_changed": f"(c) 1 macro changed ({results['macro_users']} models call it)",
    }
    for key, label in labels.items():
        s = results["state_aware"][key]
        plain = s.get("plain_dbt") or {}
        plain_cell = f"{fmt_number(plain['wall_s'], 1)}" if plain else "(nothing to build)"
        rows.append(
            f"| {label} | {s['rebuilt']} | {s['kept']} | {fmt_number(s['wall_s'], 1)} | {fmt_number(s['wall_vs_full'], 3)} | "
            f"{plain_cell} | "
            f"{fmt_number(s['node_seconds_built'], 1)} | {fmt_number(s['full_node_seconds_of_rebuilt'], 1)} | "
            f"{fmt_number(s['node_seconds_not_spent'], 1)} | {fmt_number(s['observation_s'], 2)} |"
        )
    obs = results["observation_s"]
    return "\n".join([
        f"### State-aware production at {results['models']:,} models, {results['sources']} sources",
        "",
        f"Product at `{str(product.get('git_sha') or '')[:7]}`, {when}, {cpus} CPUs, DuckDB, {results['rows']:,} rows per "
        "source and model. `prod_build_job` in process; the full build measured in the same run. Rebuilt sets checked "
        "against the manifest's child_map.",
        "",
        "| run | nodes rebuilt | kept | wall s | × full | plain `dbt build` of exactly those nodes, wall s | node-s built (with tests) | node-s of the same in the full build | node-s not spent | observation s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| full build | {full['nodes']} | 0 | {fmt_number(full['wall_s'], 1)} | 1 | | {fmt_number(full['node_seconds_built'], 1)} | | | |",
        *rows,
        "",
        f"Observing the {results['sources']} sources alone (row hash of each, plus one catalog query per production "
        f"schema): {fmt_number(obs['median'], 2)} s median of {obs['n']}.",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--sources", type=int, default=50)
    parser.add_argument("--changed-sources", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_state_aware_"))
    info, product = machine_info(), product_info()
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    try:
        results = run(args.models, args.sources, args.changed_sources, args.rows, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    document = {"benchmark": "state_aware", "when": when, "machine": info, "product": product, "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    publish_markdown(markdown(results, product, when, info.get("cpus")), args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
