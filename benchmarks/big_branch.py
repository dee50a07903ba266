"""One branch at a large N (issue 16, target 4): a leaf change through ``branch_ci_job``
against the raw dbt CLI, with the production build behind it made **once by the raw CLI**.

    python -m benchmarks.big_branch --models 10000 --out benchmarks/results/big_branch.json \\
        --markdown benchmarks/results/big_branch.md [--repeats 1] [--work-dir DIR] [--keep]

Steps (each timed, with ``uptime`` before and after):

1. A generated project of N models (:mod:`benchmarks.generate_project`) committed to
   ``main`` of a scratch git repository, and a developer clone (as
   :class:`benchmarks.branch_runs.BranchBench`).
2. **Production, built once by the raw dbt CLI** instead of ``prod_build_job`` (which
   costs about 1.3x a plain ``dbt build``: Dagster's events; see measurement 6 of
   ``benchmarks/README.md``): main's commit checked out (``git worktree``), the product's
   own profile for the ``prod`` target (``write_profiles`` into the product's warehouse,
   schema ``prod``), ``dbt build``. Its artifacts are then published as production would:
   the product's artifact store (``ManifestStore.publish``), the product's publication
   policy checked (``publication_blockers``), main's manifest stored for the commit
   (``store_commit_manifest``: the code-location load then runs no dbt, as after any
   production build), and a runless ``prod_manifest`` materialization recorded with the
   metadata ``prod_manifest`` itself computes (``manifest_metadata``, with the build
   record ``{"sha": main's sha}``): ``git_sha`` is main's commit, so branch runs compare
   with that version directly (merge-base = main) and the parse template is made from it.
3. The definitions (``build_definitions``, in-process), the product's git mirror, and
   ``branch_parse_template_job`` in-process (what ``branch_parse_template_sensor``
   launches after each publication).
4. Per repeat: a new branch changing the leaf model pushed from the developer clone, run
   through ``branch_ci_job`` in-process (first push: starts from the parse template), the
   same commit through the raw CLI (:class:`benchmarks.raw_cli.RawCli`: fresh checkout,
   full parse, ``dbt build --select state:modified+ --defer --state``; it must select the
   same nodes), then the branch pushed again (the same model changed once more) and run
   again (starts from the branch's previous parse).

Writes JSON (every number) and a short markdown table. Benchmarks are not tests: no
timing is asserted. Nothing in the product is wrapped or patched.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if os.fspath(REPO_ROOT) not in sys.path:
    sys.path.insert(0, os.fspath(REPO_ROOT))

from benchmarks.branch_runs import BranchBench  # noqa: E402
from benchmarks.common import (  # noqa: E402
    BenchError, LoadSampler, dbt_env, dbt_executable, fmt_number, fmt_stats, git, log, machine_info, product_info,
    publish_markdown, ratio, stats, uptime,
)
from benchmarks.dbt_log import dbt_split, log_files, log_sections, median_split  # noqa: E402
from benchmarks.generate_project import GeneratedProject, generate_project  # noqa: E402
from benchmarks.phases import PHASES, output_metadata  # noqa: E402
from benchmarks.raw_cli import RawCli  # noqa: E402

SCHEMA_VERSION = 1
PRODUCTION_NOTE = (
    "Production was built once with the raw dbt CLI (`dbt build` of main's commit with the "
    "product's prod profile, into the product's warehouse, schema prod), not with "
    "prod_build_job, to save time (prod_build_job costs about 1.3x a plain dbt build); its "
    "artifacts were published into the product's artifact store and recorded as a prod_manifest "
    "materialization with the metadata prod_manifest computes (git_sha = main's commit)."
)
PRODUCER = "raw-cli-production-build"  # the published version's producing_run_id
PRODUCTION_RECORD = "production.json"  # in the work dir: the build and publication, for --reuse-production


def rotated(log_dir: Path) -> bool:
    """Whether dbt rotated ``log_dir/dbt.log`` (backups ``dbt.log.1`` ... exist)."""
    return len(log_files(log_dir)) > 1


def dbt_splits_with_rotation(commands: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """:func:`benchmarks.phases.dbt_command_splits` over rotated logs too: command ->
    split of its last invocation (the entries of the product's ``dbt_commands``)."""
    seen: dict[Path, int] = {}
    cache: dict[Path, list[dict[str, float]]] = {}
    out: dict[str, dict[str, float | None]] = {}
    for entry in sorted(commands, key=lambda e: float(e["started"])):
        log_dir = Path(entry["log_path"])
        index = seen[log_dir] = seen.get(log_dir, -1) + 1
        sections = cache.setdefault(log_dir, log_sections(log_dir))
        if index < len(sections):
            out[entry["command"]] = dbt_split(sections[index], float(entry["started"]), float(entry["finished"]))
    return out


class Steps:
    """Each step's wall seconds and ``uptime`` before and after, plus the CPU split of the
    machine meanwhile (:class:`~benchmarks.common.LoadSampler`)."""

    def __init__(self, sampler: LoadSampler) -> None:
        self.sampler = sampler
        self.records: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {"step": name, "uptime_before": uptime()}
        started = time.perf_counter()
        try:
            with self.sampler.phase(name):
                yield record
        finally:
            record["seconds"] = round(time.perf_counter() - started, 3)
            record["uptime_after"] = uptime()
            self.records.append(record)


class BigBranchBench(BranchBench):
    """:class:`BranchBench` (its ``push_change``, ``run_dagster`` and ``model_for``) over a
    production made once by the raw dbt CLI and published as ``prod_manifest`` would."""

    def __init__(
        self, n_models: int, root: Path, steps: Steps, *, threads: int = 2, data_diff: bool | None = None,
        progress: dict[str, Any] | None = None, reuse_production: bool = False,
    ) -> None:  # BranchBench.__init__ (prod_build_job) is deliberately not called
        import dagster as dg

        from defer_orchestration import constants as c
        from defer_orchestration.branch.checkout import mirror_dir
        from defer_orchestration.definitions import build_definitions
        from defer_orchestration.defs.manifest_resolution import latest_published_manifest
        from defer_orchestration.lib import git as product_git
        from defer_orchestration.resources import BranchCiSettings, DeferOrchSettings

        progress = {} if progress is None else progress
        self.c = c
        self.n = n_models
        self.data_diff = data_diff
        self.root = root
        self.steps = steps
        self.repo = root / "repo"
        self.dev = root / "dev"
        record_file = root / PRODUCTION_RECORD
        reuse = reuse_production and record_file.is_file()
        if not reuse:
            shutil.rmtree(root, ignore_errors=True)
            with steps.step("generate_project") as record:
                self.repo.mkdir(parents=True)
                git(self.repo, "init", "-q", "-b", "main")
                generate_project(self.repo / "bench", n_models, seed=0)
                git(self.repo, "add", "-A")
                git(self.repo, "commit", "-q", "-m", f"generated bench project, {n_models} models")
                git(root, "clone", "-q", os.fspath(self.repo), os.fspath(self.dev))
                record["main_sha"] = git(self.repo, "rev-parse", "HEAD")
            (root / "home").mkdir()
            (root / "dagster_home").mkdir()
        self.main_sha = git(self.repo, "rev-parse", "refs/heads/main")
        self.project = GeneratedProject.load(self.repo / "bench")
        self.dev_project = GeneratedProject.load(self.dev / "bench")
        if len(self.project.models) != n_models:
            raise BenchError(f"{self.repo} holds {len(self.project.models)} models, not {n_models}")
        log(f"N={n_models}: project {'reused' if reuse else 'generated and committed'} ({self.main_sha[:12]})")

        self.settings = DeferOrchSettings(
            home=os.fspath(root / "home"), dbt_project_dir=os.fspath(self.repo / "bench"), threads=threads
        )
        self.branch_settings = BranchCiSettings(git_repo=os.fspath(self.repo), project_subdir="bench")
        self.core = self.settings.core()
        self.instance = dg.DagsterInstance.local_temp(os.fspath(root / "dagster_home"))

        if reuse:
            # An earlier invocation's production (its build and publication), same N: dbt
            # only, so it does not depend on the product version measured now.
            saved = json.loads(record_file.read_text(encoding="utf-8"))
            if saved["main_sha"] != self.main_sha:
                raise BenchError(f"{record_file} is of commit {saved['main_sha']}, main is {self.main_sha}")
            self.production = {**saved["production"], "reused_from": os.fspath(record_file)}
            self.publication = saved["publication"]
            log(f"N={n_models}: production reused from {record_file} "
                f"(built in {self.production['wall_seconds']:.1f}s by an earlier invocation)")
        else:
            log(f"N={n_models}: production build, raw dbt CLI (once; not prod_build_job)")
            with steps.step("production_build_raw_cli") as record:
                self.production = self._raw_production_build(root / "prod")
                record.update(returncode=self.production["returncode"])
            log(f"N={n_models}: production build done in {self.production['wall_seconds']:.1f}s")
            with steps.step("publish") as record:
                self.publication = self._publish(root / "prod" / "target")
                record["version"] = self.publication["version"]
            record_file.write_text(json.dumps({
                "main_sha": self.main_sha, "production": self.production, "publication": self.publication,
            }, indent=1) + "\n", encoding="utf-8")
        self.prod_seconds = self.production["wall_seconds"]
        progress["production"] = self.production
        progress["publication"] = self.publication
        self.published = latest_published_manifest(self.instance)
        if self.published.git_sha != self.main_sha or self.published.version != self.publication["version"]:
            raise BenchError(
                f"the recorded publication resolves to version {self.published.version} of commit "
                f"{self.published.git_sha}, expected {self.publication['version']} of {self.main_sha}"
            )

        with steps.step("definitions_load"):
            started = time.monotonic()
            self.defs = build_definitions(self.settings, self.branch_settings)
            self.defs.get_repository_def()
            self.load_seconds = time.monotonic() - started
        progress["definitions_load_seconds"] = round(self.load_seconds, 3)
        log(f"N={n_models}: definitions loaded in {self.load_seconds:.1f}s")

        # The first branch run would clone our private mirror; steady state is a fetch.
        with steps.step("git_mirror"):
            repo = self.branch_settings.repo(self.settings)
            product_git.ensure_mirror(repo, mirror_dir(self.core, repo))

        log(f"N={n_models}: branch_parse_template_job")
        with steps.step("parse_template"):
            template = self.make_parse_template()
        meta = output_metadata(template, c.BRANCH_PARSE_TEMPLATE_OP)
        self.template = {
            "seconds": round(self.template_seconds, 3),
            "dbt_parse_seconds": meta.get("dbt_parse_seconds"),
            "sha": meta.get("sha"),
            "manifest_version": meta.get("manifest_version"),
        }
        progress["parse_template"] = self.template
        log(f"N={n_models}: parse template made in {self.template_seconds:.1f}s "
            f"(dbt parse {self.template['dbt_parse_seconds']}s)")
        self.cli = RawCli(
            self.repo, "bench", settings=self.core, main_sha=self.main_sha,
            state_dir=Path(self.published.path), root=root / "cli",
        )

    def run_dagster(self, branch: str, *, select: str | None = None) -> dict[str, Any]:
        """:meth:`BranchBench.run_dagster`, plus the run's ``state`` metadata (which comparison
        state it used: the merge-base is main's commit, the published version)."""
        import dagster as dg

        out = super().run_dagster(branch, select=select)
        [run] = self.instance.get_runs(filters=dg.RunsFilter(job_name=self.c.BRANCH_CI_JOB), limit=1)
        commands: list[dict[str, Any]] = []
        for entry in self.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_OUTPUT):
            data = entry.dagster_event.event_specific_data if entry.dagster_event else None
            metadata = getattr(data, "metadata", None) or {}
            if "state" in metadata:
                out["state"] = getattr(metadata["state"], "value", metadata["state"])
                commands = list(getattr(metadata.get("dbt_commands"), "value", None) or [])
        if out.get("state") is None:
            raise BenchError(f"the branch run of {branch!r} recorded no 'state' metadata")
        # dbt rotated a session's dbt.log (large projects): the splits BranchBench read from
        # dbt.log alone would be shifted; read them again over the rotated files.
        out["dbt_log_rotated"] = any(rotated(Path(c["log_path"])) for c in commands)
        if out["dbt_log_rotated"]:
            splits = dbt_splits_with_rotation(commands)
            for command in ("parse", "ls", "build"):
                out[f"dbt_{command}_split"] = splits.get(command)
        return out

    def _raw_production_build(self, base: Path) -> dict[str, Any]:
        """``dbt build`` of main's commit into production with the product's prod profile."""
        from defer_orchestration import constants as c
        from defer_orchestration.dbt.profiles import write_profiles

        checkout = base / "checkout"
        target, logs = base / "target", base / "logs"
        base.mkdir(parents=True)
        git(self.repo, "worktree", "add", "-q", "--detach", "--force", os.fspath(checkout), self.main_sha)
        try:
            project = checkout / "bench"
            profiles = write_profiles(
                base / "profiles", project, {c.PROD_TARGET: c.PROD_SCHEMA}, c.PROD_TARGET,
                warehouse=self.core.warehouse, threads=self.core.threads,
            )
            command = [
                dbt_executable(), "build", "--target", c.PROD_TARGET,
                "--project-dir", os.fspath(project), "--profiles-dir", os.fspath(profiles),
                "--target-path", os.fspath(target), "--log-path", os.fspath(logs),
            ]
            if self.core.dbt_vars:
                command += ["--vars", json.dumps(dict(self.core.dbt_vars), sort_keys=True)]
            env = {**dbt_env(), **self.core.warehouse.dbt_env()}
            # As a production build does: hold production's write guard (DuckDB: no branch
            # build reads production's file meanwhile).
            with self.core.warehouse.production_write():
                spawned = time.time()
                started = time.perf_counter()
                done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
                wall = time.perf_counter() - started
                exited = time.time()
        finally:
            git(self.repo, "worktree", "remove", "--force", "--force", os.fspath(checkout))
        results_path = target / "run_results.json"
        if done.returncode != 0 or not results_path.is_file():
            raise BenchError(f"raw production dbt build failed:\n{(done.stdout + done.stderr)[-3000:]}")
        results = json.loads(results_path.read_text(encoding="utf-8"))
        statuses: dict[str, int] = {}
        for r in results["results"]:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        sections = log_sections(logs)
        return {
            "how": "raw dbt CLI: dbt build --target prod (the product's prod profile), main's commit",
            "command": ["dbt", *command[1:]],
            "returncode": done.returncode,
            "wall_seconds": round(wall, 3),
            "dbt_elapsed_seconds": round(float(results.get("elapsed_time") or 0.0), 3),
            "results": len(results["results"]),
            "statuses": statuses,
            "dbt_split": dbt_split(sections[-1], spawned, exited) if sections else None,
            "dbt_log_rotated": rotated(logs),
        }

    def _publish(self, target: Path) -> dict[str, Any]:
        """Publish the raw build's artifacts as ``prod_manifest`` does, and record it."""
        import dagster as dg

        from defer_orchestration import constants as c
        from defer_orchestration.branch.comparison import store_commit_manifest
        from defer_orchestration.dbt import artifacts
        from defer_orchestration.defs.assets.prod_manifest import manifest_metadata

        manifest = artifacts.load_json(target / "manifest.json", what="production manifest")
        run_results = artifacts.load_json(target / "run_results.json", what="production run_results")
        blocking, failing = artifacts.publication_blockers(run_results, manifest, models_built_suffices=False)
        if blocking:
            raise BenchError(f"the production build may not be published (policy): {blocking[:10]}")
        self.core.warehouse.after_production_build(artifacts.relation_schemas(manifest))
        stored_commit = store_commit_manifest(self.core, self.main_sha, self.core.dbt_vars, target / "manifest.json")
        stored = self.core.store().publish(target)
        metadata = manifest_metadata(
            stored, project_dir=self.core.project_dir, run_id=PRODUCER,
            build={"sha": self.main_sha, "mode": "full", "not_rebuilt": 0, "seconds_saved": 0.0},
        )
        self.instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=c.PROD_MANIFEST_ASSET, metadata=metadata)
        )
        return {
            "version": stored.version,
            "store_path": os.fspath(stored.path),
            "git_sha": self.main_sha,
            "failing_tests": list(failing),
            "commit_manifest_stored": stored_commit,
            "node_counts": getattr(metadata["node_counts"], "value", None),
        }


def _median_phases(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {p: round(statistics.median(r["phases"][p] for r in runs), 4) for p in PHASES}


def _strip(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k != "selected_nodes"}


def bench_big_branch(
    n_models: int, root: Path, *, repeats: int, data_diff: bool | None = None,
    progress: dict[str, Any] | None = None, reuse_production: bool = False,
) -> dict[str, Any]:
    """Everything of one invocation at one size (see the module docstring).

    ``progress`` receives the steps and runs as they complete (for a partial report when
    a later step fails)."""
    progress = {} if progress is None else progress
    with LoadSampler(interval=5.0) as sampler:
        steps = Steps(sampler)
        runs: list[dict[str, Any]] = []
        progress.update(n_models=n_models, steps=steps.records, runs=runs)
        bench = BigBranchBench(
            n_models, root, steps, data_diff=data_diff, progress=progress, reuse_production=reuse_production
        )
        leaf = bench.project.leaf_model
        # Branch names of their own per invocation: a reused work dir keeps earlier branches'
        # schemas and parses, and a first push must start from the template.
        tag = f"{int(time.time()) % 10**6:06d}"
        for rep in range(repeats):
            branch = f"bench/big-{tag}-r{rep}-leaf"
            with steps.step(f"r{rep}/push_first"):
                sha = bench.push_change(branch, "leaf")
            log(f"N={n_models} repeat {rep + 1}/{repeats}: leaf change, first push through branch_ci_job")
            with steps.step(f"r{rep}/first_push"):
                first = bench.run_dagster(branch)
            log(f"  first push {first['wall_seconds']:.1f}s ({first['selected']} selected; "
                f"previous parse: {first['previous_parse']})")
            runs.append({"kind": "first_push", "repeat": rep, "sha": sha, **first})
            log(f"N={n_models} repeat {rep + 1}/{repeats}: the same commit through the raw CLI")
            with steps.step(f"r{rep}/raw_cli"):
                cli = bench.cli.build(sha, f"r{rep}-leaf")
            cli["dbt_log_rotated"] = rotated(bench.cli.root / f"r{rep}-leaf" / "logs")
            if cli["dbt_log_rotated"]:
                # RawCli read dbt.log alone: the split would miss the parse; not recorded.
                cli["dbt_split"] = None
            same = cli["selected_nodes"] == first["selected_nodes"]
            if not same:
                raise BenchError(
                    f"raw CLI selected {len(cli['selected_nodes'])} nodes, branch_ci_job "
                    f"{len(first['selected_nodes'])}: {sorted(set(cli['selected_nodes']) ^ set(first['selected_nodes']))[:10]}"
                )
            log(f"  raw CLI {cli['wall_seconds']:.1f}s")
            runs.append({
                "kind": "cli", "repeat": rep, "sha": sha, "selected": len(cli["selected_nodes"]),
                "same_nodes_as_first_push": same, **cli,
            })
            with steps.step(f"r{rep}/push_second"):
                bench.push_change(branch, "leaf")
            log(f"N={n_models} repeat {rep + 1}/{repeats}: the branch pushed again, branch_ci_job")
            with steps.step(f"r{rep}/second_push"):
                again = bench.run_dagster(branch)
            if again["selected_nodes"] != first["selected_nodes"]:
                raise BenchError("the second push of the leaf branch selected different nodes than the first")
            log(f"  second push {again['wall_seconds']:.1f}s (previous parse: {again['previous_parse']})")
            runs.append({"kind": "second_push", "repeat": rep, **again})
        load = sampler.summary()

    def pick(kind: str) -> list[dict[str, Any]]:
        return [r for r in runs if r["kind"] == kind]

    firsts, clis, seconds_ = pick("first_push"), pick("cli"), pick("second_push")
    first_s = stats([r["wall_seconds"] for r in firsts])
    cli_s = stats([r["wall_seconds"] for r in clis])
    second_s = stats([r["wall_seconds"] for r in seconds_])
    summary = {
        "leaf_model": leaf,
        "selected_nodes": firsts[0]["selected"],
        "built_models": firsts[0]["built"],
        "tests_passed": firsts[0]["tests_passed"],
        "deferred_parents": firsts[0]["deferred"],
        "raw_cli_selected_same_nodes": all(r["same_nodes_as_first_push"] for r in clis),
        "first_push_seconds": first_s,
        "cli_seconds": cli_s,
        "second_push_seconds": second_s,
        "first_push_over_cli": ratio(first_s, cli_s),
        "second_push_over_cli": ratio(second_s, cli_s),
        "first_push_previous_parse": [r["previous_parse"] for r in firsts],
        "first_push_state": [r["state"] for r in firsts],
        "second_push_previous_parse": [r["previous_parse"] for r in seconds_],
        "first_push_dbt_parse_seconds": stats([r["dbt_parse_seconds"] for r in firsts]),
        "first_push_dbt_build_seconds": stats([r["dbt_build_seconds"] for r in firsts]),
        "second_push_dbt_parse_seconds": stats([r["dbt_parse_seconds"] for r in seconds_]),
        "second_push_dbt_build_seconds": stats([r["dbt_build_seconds"] for r in seconds_]),
        "first_push_phases_median": _median_phases(firsts),
        "second_push_phases_median": _median_phases(seconds_),
        "dbt_split_median": {
            "first_push_parse": median_split([r.get("dbt_parse_split") for r in firsts]),
            "first_push_build": median_split([r.get("dbt_build_split") for r in firsts]),
            "second_push_parse": median_split([r.get("dbt_parse_split") for r in seconds_]),
            "cli_build": median_split([r.get("dbt_split") for r in clis]),
        },
    }
    return {
        "n_models": n_models,
        "production": {**bench.production, "note": PRODUCTION_NOTE},
        "publication": bench.publication,
        "production_build_seconds": bench.prod_seconds,
        "definitions_load_seconds": round(bench.load_seconds, 3),
        "parse_template": bench.template,
        "parse_template_seconds": bench.template["seconds"],
        "summary": summary,
        "runs": [_strip(r) for r in runs],
        "steps": steps.records,
        "load": load,
    }


def _phase_text(phases: dict[str, float], minimum: float = 0.05) -> str:
    ordered = sorted(((s, p) for p, s in phases.items() if s >= minimum), reverse=True)
    return ", ".join(f"{p} {s:.1f}" for s, p in ordered)


def render_markdown(results: dict[str, Any]) -> str:
    """The table the issue asks for, the phase split, and how it was measured."""
    r = results["result"]
    s = r["summary"]
    meta = results["meta"]
    reps = s["first_push_seconds"]["n"]
    lines = [
        f"### One branch at {r['n_models']:,} models: leaf change vs the raw CLI",
        "",
        f"Product at `{(meta['product']['git_sha'] or '?')[:7]}`, {meta['started_at']}, "
        f"{reps} repeat{'s' if reps != 1 else ''}{' (medians, min–max)' if reps > 1 else ''}. "
        "**Production was built once with the raw dbt CLI**, not `prod_build_job` (to save time), "
        "and published as `prod_manifest` with `git_sha` = main's commit"
        + (" (by an earlier invocation, reused here: `--reuse-production`)." if r["production"].get("reused_from") else "."),
        "",
        "| N models | raw-CLI production build s | parse template s | first push s | raw CLI s "
        "| first push / CLI | second push s | second push / CLI | first push's previous_parse "
        "| first push's phases s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        f"| {r['n_models']:,} | {r['production_build_seconds']:.1f} | {r['parse_template_seconds']:.1f} "
        f"| {fmt_stats(s['first_push_seconds'])} | {fmt_stats(s['cli_seconds'])} "
        f"| {fmt_number(s['first_push_over_cli'])} | {fmt_stats(s['second_push_seconds'])} "
        f"| {fmt_number(s['second_push_over_cli'])} | {'; '.join(sorted(set(s['first_push_previous_parse'])))} "
        f"| {_phase_text(s['first_push_phases_median'])} |",
        "",
        f"Leaf model `{s['leaf_model']}`: {s['selected_nodes']} nodes selected, {s['built_models']} model built, "
        f"{s['deferred_parents']} deferred parent(s); the raw CLI selected the same nodes: "
        f"{'yes' if s['raw_cli_selected_same_nodes'] else 'NO'}. "
        f"dbt parse (waited for) / dbt build: first push {fmt_stats(s['first_push_dbt_parse_seconds'])} / "
        f"{fmt_stats(s['first_push_dbt_build_seconds'])} s, second push "
        f"{fmt_stats(s['second_push_dbt_parse_seconds'])} / {fmt_stats(s['second_push_dbt_build_seconds'])} s. "
        f"Parse template: dbt parse {fmt_number(r['parse_template'].get('dbt_parse_seconds'), 1)} s of "
        f"{r['parse_template_seconds']:.1f} s. Definitions load (in-process, main's manifest stored by the "
        f"publication: no dbt): {r['definitions_load_seconds']:.1f} s. First push's comparison state: "
        f"{s['first_push_state'][0]}.",
        "",
        f"Production build: {r['production']['results']:,} nodes, dbt's own elapsed time "
        f"{r['production']['dbt_elapsed_seconds']:.1f} s of {r['production_build_seconds']:.1f} s wall"
        + (f"; {r['production']['reconstructed']}." if r["production"].get("reconstructed") else "."),
        "",
        "| phase (medians, s) | first push | second push |",
        "|---|---:|---:|",
    ]
    for phase in PHASES:
        a, b = s["first_push_phases_median"][phase], s["second_push_phases_median"][phase]
        lines.append(f"| {phase} | {a:.2f} | {b:.2f} |")
    lines += ["", "`uptime` before / after each step:", ""]
    lines += ["| step | s | before | after |", "|---|---:|---|---|"]
    for step in r["steps"]:
        before = step["uptime_before"].split("load average:")[-1].strip()
        after = step["uptime_after"].split("load average:")[-1].strip()
        lines.append(f"| {step['step']} | {step['seconds']:.1f} | {before} | {after} |")
    return "\n".join(lines)


# Entry point -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.big_branch",
        description="One leaf-change branch at N models through branch_ci_job vs the raw dbt CLI; "
        "production built once by the raw CLI.",
    )
    parser.add_argument("--models", type=int, default=10000, help="project size (default 10000)")
    parser.add_argument("--repeats", type=int, default=1, help="branches (first push, raw CLI, second push)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--render-only", action="store_true", help="print (and --markdown) the table of an existing --out")
    parser.add_argument("--markdown", type=Path, help="also write the markdown table here")
    parser.add_argument("--work-dir", type=Path, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--no-data-diff", action="store_true", help="branch runs without the data diff")
    parser.add_argument(
        "--reuse-production", action="store_true",
        help=f"with --work-dir: reuse the project, production build and publication an earlier invocation "
        f"left there ({PRODUCTION_RECORD}; its branches are pushed anew). Implies --keep.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.render_only:
        publish_markdown(render_markdown(json.loads(args.out.read_text(encoding="utf-8"))), args.markdown)
        return 0
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="defer-orch-big-branch-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    meta: dict[str, Any] = {
        "command": "python -m benchmarks.big_branch " + " ".join(argv),
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "product": product_info(),
        "product_dir": os.fspath(REPO_ROOT),
        "args": {k: (os.fspath(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "uptime_at_start": uptime(),
        "production_note": PRODUCTION_NOTE,
    }
    progress: dict[str, Any] = {}
    try:
        echoed = io.StringIO()  # anything echoed on stdout by in-process runs; stdout is for the table
        with contextlib.redirect_stdout(echoed):
            result = bench_big_branch(
                args.models, work / f"big-n{args.models}", repeats=args.repeats,
                data_diff=False if args.no_data_diff else None, progress=progress,
                reuse_production=args.reuse_production,
            )
    except BaseException as exc:
        # What was measured before the failure, so a long run is not lost.
        meta["total_seconds"] = round(time.monotonic() - started, 1)
        meta["uptime_at_end"] = uptime()
        partial = {
            "schema_version": SCHEMA_VERSION, "meta": meta, "error": f"{type(exc).__name__}: {exc}"[-5000:],
            "partial": {**progress, "runs": [_strip(r) for r in progress.get("runs", [])]},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(partial, indent=1, default=str) + "\n", encoding="utf-8")
        log(f"failed; what was measured is in {args.out} (work dir {work} kept)")
        raise
    meta["total_seconds"] = round(time.monotonic() - started, 1)
    meta["uptime_at_end"] = uptime()
    if not (args.keep or args.reuse_production):
        shutil.rmtree(work if args.work_dir is None else work / f"big-n{args.models}", ignore_errors=True)
    results = {"schema_version": SCHEMA_VERSION, "meta": meta, "result": result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    publish_markdown(render_markdown(results), args.markdown, f"(total {meta['total_seconds']} s; JSON: {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
