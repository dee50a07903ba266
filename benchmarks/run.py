"""Benchmark runner for defer-orchestration's slim CI (issue 6).

The command line: it runs the measurements below (each in its own module) and writes
their results.

    python -m benchmarks.run --sizes 100 1000 --repeats 3 --out benchmarks/results/latest.json

Measures, on projects made by :mod:`benchmarks.generate_project`:

1. **slim vs full** (:mod:`benchmarks.branch_runs`): ``branch_ci_job`` run end to end
   through Dagster (in-process, ``execute_in_process`` on a local instance) for a leaf,
   a mid-DAG and a hub change, against a full build (``select: "fqn:*"``) of the same
   branch commit.
2. **orchestration overhead** (:mod:`benchmarks.raw_cli`): the same slim branch run vs
   the raw CLI ``dbt build --select state:modified+ --defer --state <published manifest
   dir>`` on a checkout of the branch commit, with a fresh target dir, into the same
   warehouse; optionally ("seeded") with a ``partial_parse.msgpack`` from a parse of
   ``main``. Each branch is then pushed again and run again: the product starts that
   run from the branch's previous parse. Every Dagster run is split into the phases the
   product reports (``phase_seconds``, read by :mod:`benchmarks.phases`) and each dbt
   command into start-up / parse / select / execute / artifacts / exit
   (:mod:`benchmarks.dbt_log`).
3. **code-location load** (:mod:`benchmarks.load`): ``build_definitions`` in a fresh
   subprocess, first load (dbt parse) and warm load (parsed manifest cached), with
   seconds and peak RSS.
4. **sensor tick** (:mod:`benchmarks.sensor`): ``branch_ci_sensor.evaluate_tick`` with
   1 / 100 / 1,000 branches (first tick: every branch new; steady state: nothing new;
   one branch moved).
5. **warehouse contention** (:mod:`benchmarks.contention`): a production build and
   several branch runs launched at once on the real stack.
6. **storage** (:mod:`benchmarks.storage`): ``prod_build_job`` vs plain ``dbt build`` of
   the same project, with Dagster's storage on SQLite and on PostgreSQL (a throwaway
   server), the warehouse DuckDB for all three.
7. **parallel** (:mod:`benchmarks.parallel`): eight branch pushes at once on the real
   stack, DuckDB warehouse (one build at a time) vs PostgreSQL warehouse (four at once),
   each run's queue wait; and one leaf change alone on both, against the raw CLI. Runs
   only for the sizes ``--parallel-sizes`` names.

Results are printed as markdown tables (:mod:`benchmarks.report`) and written as JSON
(``--out``). Timings are medians over ``--repeats`` runs with min-max; ratios are taken
within one invocation. Benchmarks are not tests: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# `python benchmarks/run.py` puts benchmarks/, not the repository, on sys.path.
REPO_ROOT = Path(__file__).resolve().parents[1]
if os.fspath(REPO_ROOT) not in sys.path:
    sys.path.insert(0, os.fspath(REPO_ROOT))

from benchmarks.branch_runs import CHANGES, bench_branch_runs  # noqa: E402
from benchmarks.common import log, machine_info, product_info, publish_markdown  # noqa: E402
from benchmarks.contention import bench_contention  # noqa: E402
from benchmarks.load import bench_load  # noqa: E402
from benchmarks.parallel import bench_parallel  # noqa: E402
from benchmarks.report import render_markdown, targets  # noqa: E402
from benchmarks.sensor import bench_sensor  # noqa: E402
from benchmarks.storage import bench_storage  # noqa: E402

SCHEMA_VERSION = 1
MEASUREMENTS = ("slim", "overhead", "load", "sensor", "contention", "storage", "parallel")


# Entry point -------------------------------------------------------------------------------


def current_invocations(invocations: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The invocations (oldest first) whose results a merged file still holds: each
    section comes from the last invocation that measured it."""
    owner = {section: i for i, inv in enumerate(invocations) for section in inv.get("sections", [])}
    return [inv for i, inv in enumerate(invocations) if i in owner.values()]


def _parse_repeats_at(values: Sequence[str]) -> dict[int, int]:
    """``["1000=2"]`` -> ``{1000: 2}``."""
    out = {}
    for value in values:
        size, _, count = value.partition("=")
        try:
            out[int(size)] = int(count)
        except ValueError:
            raise SystemExit(f"--repeats-at expects SIZE=COUNT, got {value!r}") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line (``python -m benchmarks.run --help``)."""
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
    parser.add_argument("--storage-sizes", type=int, nargs="*", default=[100, 1000],
                        help="project sizes for prod_build_job vs plain dbt build on SQLite and PostgreSQL "
                             "storage (repeats: --repeats / --repeats-at)")
    parser.add_argument("--parallel-sizes", type=int, nargs="*", default=[],
                        help="project sizes for branch pushes at once and a leaf run on the DuckDB vs the "
                             "PostgreSQL warehouse (real stack, run queue); default none: each size starts "
                             "two stacks, a PostgreSQL server and two production builds")
    parser.add_argument("--parallel-branches", type=int, default=8,
                        help="branch runs launched at once in the parallel measurement")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the untimed warm-up branch run per size and the storage measurement's "
                             "warm-up production build (smoke tests)")
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
    """Run the measurements the arguments ask for; write JSON (and markdown), print the tables."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.render_only:
        results = json.loads(args.out.read_text(encoding="utf-8"))
        results["targets"] = targets(results)
        publish_markdown(render_markdown(results), args.markdown)
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
        "storage": [],
        "parallel": [],
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
            for n in args.contention_sizes:
                log(f"N={n}: contention, prod_build_job + {args.contention_branches} branch runs at once")
                results["contention"].append(
                    bench_contention(
                        n, work / f"contention-n{n}", branch_runs=args.contention_branches,
                        repeats=repeats_at.get(n, args.repeats),
                        data_diff=False if args.no_data_diff else None,
                    )
                )
        if "storage" not in skip:
            for i, n in enumerate(args.storage_sizes):
                reps = repeats_at.get(n, args.repeats)
                log(f"N={n}: storage, prod_build_job on SQLite and PostgreSQL vs plain dbt build ({reps} repeats)")
                results["storage"].append(
                    bench_storage(n, work / f"storage-n{n}", repeats=reps, warmup=i == 0 and not args.no_warmup)
                )
                shutil.rmtree(work / f"storage-n{n}", ignore_errors=True) if not args.keep else None
        if "parallel" not in skip:
            for n in args.parallel_sizes:
                reps = repeats_at.get(n, args.repeats)
                log(f"N={n}: parallel, {args.parallel_branches} pushes at once and a leaf run, "
                    "DuckDB vs PostgreSQL")
                results["parallel"].append(
                    bench_parallel(
                        n, work / f"parallel-n{n}", branch_runs=args.parallel_branches, repeats=reps,
                        data_diff=False if args.no_data_diff else None,
                    )
                )
                shutil.rmtree(work / f"parallel-n{n}", ignore_errors=True) if not args.keep else None
    finally:
        results["meta"]["total_seconds"] = round(time.monotonic() - started, 1)
        measured = {
            "branch_runs": "slim" not in skip,
            "load": "load" not in skip,
            "sensor": "sensor" not in skip and bool(args.branches),
            "contention": "contention" not in skip,
            "storage": "storage" not in skip and bool(args.storage_sizes),
            "parallel": "parallel" not in skip and bool(args.parallel_sizes),
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
    publish_markdown(render_markdown(results), args.markdown, f"(total {results['meta']['total_seconds']} s; JSON: {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
