"""How long column-level impact analysis takes at N models for a root change (issue 23).

    .venv/bin/python benchmarks/impact.py [--models 1000] [--seed 0] [--dialect duckdb] [--repeats 3]

Generates production's and a branch's manifest dicts in memory (no dbt, no warehouse):
one source, a root staging model, then N-1 models each reading the previous one (a chain,
so every model is downstream of the root) and up to two random earlier ones (a fan),
in jaffle-shop style (import CTEs ``select *``, a join, a filter, derived columns). The
branch changes the root model two ways, each timed end to end by
:func:`defer_orchestration.impact.analyze_impact` (parse, qualify and walk of every
descendant once, classification, propagation):

- ``partial``: one column's expression changes; it reaches every model through lineage;
- ``breaking``: a WHERE clause is added; every model is impacted with all its columns.

Prints the timings; checks that every model was reached (otherwise exits 1). Benchmarks
are not tests: nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if os.fspath(REPO_ROOT) not in sys.path:
    sys.path.insert(0, os.fspath(REPO_ROOT))

from defer_orchestration.impact import analyze_impact  # noqa: E402

COLUMNS = ("id", "a", "b", "c", "d")
ROOT = "model.bench.stg_root"


def _relation(schema: str, name: str) -> str:
    return f'"warehouse"."{schema}"."{name}"'


def _model_sql(index: int, parents: list[str], schema: str) -> str:
    """A model reading its parents through import CTEs, joined on id, filtered, derived."""
    ctes = ",\n".join(f"p{k} as (select * from {_relation(schema, p)})" for k, p in enumerate(parents))
    joins = "".join(f"\nleft join p{k} on p{k}.id = p0.id" for k in range(1, len(parents)))
    other = f"p{len(parents) - 1}"
    return (
        f"with {ctes},\nfinal as (\n  select p0.id, p0.a + {index} as a, {other}.b, "
        f"coalesce(p0.c, 0) as c, p0.d\n  from p0{joins}\n  where p0.id is not null\n)\n"
        "select * from final"
    )


def build(models: int, seed: int, root_sql: str, schema: str) -> dict[str, Any]:
    """A manifest of ``models`` models (names m0001...; the root is ``stg_root``)."""
    rng = random.Random(seed)
    names = ["stg_root"] + [f"m{i:04d}" for i in range(1, models)]
    nodes: dict[str, Any] = {}
    parent_map: dict[str, list[str]] = {"source.bench.raw.events": []}
    for i, name in enumerate(names):
        uid = f"model.bench.{name}"
        if i == 0:
            parents, sql = ["source.bench.raw.events"], root_sql
        else:
            picks = {names[i - 1]} | {names[rng.randrange(i)] for _ in range(rng.randint(0, 2))}
            ordered = [names[i - 1]] + sorted(picks - {names[i - 1]})
            parents, sql = [f"model.bench.{p}" for p in ordered], _model_sql(i, ordered, schema)
        nodes[uid] = {
            "unique_id": uid, "resource_type": "model", "name": name, "alias": name,
            "relation_name": _relation(schema, name), "compiled_code": sql,
            "config": {"materialized": "table"}, "contract": {"enforced": False},
            "checksum": {"name": "sha256", "checksum": str(hash(sql))},
        }
        parent_map[uid] = parents
    child_map: dict[str, list[str]] = {k: [] for k in parent_map}
    for child, parents in parent_map.items():
        for parent in parents:
            child_map[parent].append(child)
    source = {"unique_id": "source.bench.raw.events", "resource_type": "source",
              "relation_name": _relation("raw", "events")}
    return {"nodes": nodes, "sources": {"source.bench.raw.events": source}, "exposures": {},
            "parent_map": parent_map, "child_map": child_map}


ROOT_SQL = 'select id, a, b, c, d from "warehouse"."raw"."events"'
CHANGES = {
    "partial": 'select id, a * 2 as a, b, c, d from "warehouse"."raw"."events"',
    "breaking": 'select id, a, b, c, d from "warehouse"."raw"."events" where d > 0',
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dialect", default="duckdb")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    prod = build(args.models, args.seed, ROOT_SQL, "main")
    columns = {"raw.events": [(c, "INTEGER") for c in COLUMNS]}
    print(f"impact analysis, {args.models} models, root change, dialect {args.dialect}, "
          f"{args.repeats} repeat(s)")
    failed = False
    for label, sql in CHANGES.items():
        branch = build(args.models, args.seed, sql, "br_bench")
        built = list(branch["nodes"])
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            report = analyze_impact(prod, branch, [ROOT], built, args.dialect, columns)
            seconds.append(time.perf_counter() - start)
        node = report.nodes[0]
        reached = len(node.impacted)
        ok = node.category == label and reached == args.models - 1
        failed = failed or not ok
        print(f"  {label:9s} category={node.category:9s} impacted={reached:5d} "
              f"median={statistics.median(seconds):6.2f}s min={min(seconds):6.2f}s "
              f"max={max(seconds):6.2f}s{'' if ok else '  UNEXPECTED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
