"""Measurements 1 and 2: branch runs through Dagster, full builds, and the raw CLI.

A generated project in a scratch git repository, ``prod_build_job`` in-process on a
local instance, then per repeat one branch per change (leaf, mid, hub) run as
``branch_ci_job`` with ``execute_in_process``, the same commit built by the raw CLI
(:mod:`benchmarks.raw_cli`), the branch pushed again and run again (the product's parse
cache), and one full build. Each Dagster run's phases and dbt command splits come from
the metadata the product records (:mod:`benchmarks.phases`).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import BenchError, git, log, ratio, stats
from benchmarks.dbt_log import median_split
from benchmarks.generate_project import GeneratedProject, generate_project
from benchmarks.phases import PHASES, dbt_command_splits, output_metadata, phase_split, required
from benchmarks.raw_cli import RawCli

CHANGES = ("leaf", "mid", "hub")
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _failure_text(result: Any) -> str:
    for event in result.all_node_events:
        if event.is_step_failure:
            data = event.event_specific_data
            desc = data.user_failure_data.description if data.user_failure_data else ""
            return f"{desc}\n{data.error.to_string() if data.error else ''}"[-3000:]
    return "(no step failure event)"


class BranchBench:
    """One generated project of N models in a git repo, a production build, and its branches."""

    def __init__(self, n_models: int, root: Path, *, threads: int = 2, data_diff: bool | None = None) -> None:
        import dagster as dg

        from defer_orchestration import constants as c
        from defer_orchestration.branch.checkout import mirror_dir
        from defer_orchestration.definitions import build_definitions
        from defer_orchestration.defs.manifest_resolution import latest_published_manifest
        from defer_orchestration.lib import git as product_git
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
        product_git.ensure_mirror(repo, mirror_dir(self.settings.core(), repo))
        self.make_parse_template()
        log(f"N={n_models}: parse template made in {self.template_seconds:.1f}s")
        self.cli = RawCli(
            self.repo, "bench", settings=self.settings.core(), main_sha=self.main_sha,
            state_dir=Path(self.published.path), root=root / "cli",
        )

    def make_parse_template(self) -> Any:
        """``branch_parse_template_job`` in-process, what ``branch_parse_template_sensor``
        launches after each publication: the parse a branch's first run starts from. Sets
        ``template_seconds``; returns the run's result."""
        started = time.monotonic()
        template = self.defs.resolve_job_def(self.c.BRANCH_PARSE_TEMPLATE_JOB).execute_in_process(
            instance=self.instance, run_config=_QUIET, raise_on_error=False
        )
        self.template_seconds = time.monotonic() - started
        if not template.success:
            raise BenchError(f"branch_parse_template_job failed:\n{_failure_text(template)}")
        return template

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
        started = time.perf_counter()
        result = job.execute_in_process(
            run_config={"ops": {self.c.BRANCH_BUILD_OP: {"config": config}}, **_QUIET},
            instance=self.instance,
            raise_on_error=False,
        )
        wall = time.perf_counter() - started
        if not result.success:
            raise BenchError(f"branch_ci_job for {branch!r} failed:\n{_failure_text(result)}")
        metadata = output_metadata(result)
        dbt = dbt_command_splits(metadata)
        return {
            "branch": branch,
            "wall_seconds": wall,
            "selected": int(required(metadata, "nodes/selected")),
            "built": int(required(metadata, "nodes/built")),
            "tests_passed": int(required(metadata, "nodes/tests_passed")),
            "deferred": int(required(metadata, "nodes/deferred")),
            "selected_nodes": sorted(required(metadata, "selected_nodes")),
            "dbt_parse_seconds": float(required(metadata, "dbt_parse_seconds")),
            "dbt_ls_seconds": float(required(metadata, "dbt_ls_seconds")),
            "dbt_build_seconds": float(required(metadata, "dbt_build_seconds")),
            "branch_node_seconds": float(required(metadata, "branch_node_seconds")),
            "previous_parse": required(metadata, "previous_parse"),
            "phases": phase_split(metadata, wall),
            "dbt_parse_split": dbt.get("parse"),
            "dbt_ls_split": dbt.get("ls"),
            "dbt_build_split": dbt.get("build"),
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
            bench.cli.build(warmup_sha, "warmup")
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
                cli = bench.cli.build(sha, f"r{rep}-{change}")
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
                cli_seeded = bench.cli.build(sha, f"r{rep}-{change}-seeded", seeded=True)
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


def _median_phases(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {p: round(statistics.median(r["phases"][p] for r in runs), 4) for p in PHASES}


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
            "first_push_previous_parse": [r["previous_parse"] for r in slim_runs],
            "second_push_previous_parse": [r["previous_parse"] for r in again_runs],
            "second_push_dbt_parse_seconds": stats([r["dbt_parse_seconds"] for r in again_runs]) if again_runs else None,
            "second_push_over_cli": ratio(again, cli) if again_runs else None,
            "second_push_over_full": ratio(again, full) if again_runs else None,
            "second_push_phases_median": _median_phases(again_runs) if again_runs else None,
            "phases_median": _median_phases(slim_runs),
            "cli_seconds": cli,
            "dbt_split_median": {
                "product_parse": median_split([r.get("dbt_parse_split") for r in slim_runs]),
                "product_ls": median_split([r.get("dbt_ls_split") for r in slim_runs]),
                "product_build": median_split([r.get("dbt_build_split") for r in slim_runs]),
                "product_again_parse": median_split([r.get("dbt_parse_split") for r in again_runs]),
                "cli_build": median_split([r.get("dbt_split") for r in cli_runs]),
                "cli_seeded_build": median_split([r.get("dbt_split") for r in seeded_runs]),
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
        "parse_template_seconds": round(bench.template_seconds, 3),
        "in_process_load_seconds": round(bench.load_seconds, 3),
        "cold_parse_seconds": stats([r["seed_parse_seconds"] for r in runs if r.get("seed_parse_seconds")]),
        "full": {
            "seconds": full,
            "selected_nodes": full_runs[0]["selected"],
            "built_models": full_runs[0]["built"],
            "branch_node_seconds": stats([r["branch_node_seconds"] for r in full_runs]),
            "phases_median": _median_phases(full_runs),
            "of_branches": [r["change"] for r in full_runs],
            "dbt_split_median": {
                "product_parse": median_split([r.get("dbt_parse_split") for r in full_runs]),
                "product_ls": median_split([r.get("dbt_ls_split") for r in full_runs]),
                "product_build": median_split([r.get("dbt_build_split") for r in full_runs]),
            },
        },
        "changes": per_change,
        "runs": runs,
    }
