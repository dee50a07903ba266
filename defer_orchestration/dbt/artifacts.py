"""Reading dbt's artifacts: manifest.json and run_results.json.

The one place that knows their shapes: node statuses (:class:`NodeStatus`, dbt's own
values), which resource types become relations, and where a node's relation lives.
Only plain dicts go in, so the functions are tested on small hand-written artifacts
without running (or importing) dbt.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from enum import StrEnum
from typing import Any

from defer_orchestration.lib import json_documents
from defer_orchestration.lib.errors import ManifestError

# Resource types that materialize something in the warehouse.
RELATION_TYPES = frozenset({"model", "seed", "snapshot"})
# Resource types a build runs as tests.
TEST_TYPES = frozenset({"test", "unit_test"})
# Resource types dbt lists but never runs (dbt ls --resource-type all shows them too).
NOT_RUN_TYPES = frozenset({"source", "exposure", "metric", "semantic_model", "saved_query"})


class NodeStatus(StrEnum):
    """A node's status in run_results.json: the values of dbt's own
    ``dbt.artifacts.schemas.results.NodeStatus`` (a unit test checks they agree), kept
    here so reading an artifact never imports dbt."""

    SUCCESS = "success"
    ERROR = "error"
    FAIL = "fail"
    WARN = "warn"
    SKIPPED = "skipped"
    PARTIAL_SUCCESS = "partial success"
    PASS = "pass"
    RUNTIME_ERROR = "runtime error"
    NO_OP = "no-op"


# A node in one of these failed the build (a runtime error too: dbt exits non-zero).
FAILING_STATUSES = frozenset({NodeStatus.ERROR, NodeStatus.FAIL, NodeStatus.RUNTIME_ERROR})
# A node in one of these did what it should.
OK_STATUSES = frozenset({NodeStatus.SUCCESS, NodeStatus.PASS})


def load_json(path: Path, *, what: str) -> dict[str, Any]:
    """Read a JSON artifact with an error that names the file and what to do."""
    try:
        loaded = json_documents.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"{what} {path} does not exist.") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(
            f"{what} {path} is not valid JSON ({exc}); it is truncated or corrupt. "
            "Rebuild it (for production artifacts: run prod_build_job)."
        ) from exc
    if not isinstance(loaded, dict):
        raise ManifestError(f"{what} {path} is not a JSON object; is it a dbt artifact?")
    return loaded


def dbt_version(artifact: Mapping[str, Any]) -> str | None:
    """The dbt version that wrote a manifest or run_results."""
    return (artifact.get("metadata") or {}).get("dbt_version")


def all_resources(manifest: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every node-like entry of a manifest, keyed by unique_id."""
    resources: dict[str, Mapping[str, Any]] = {}
    for section in ("nodes", "sources", "unit_tests", "exposures", "metrics", "semantic_models"):
        resources.update(manifest.get(section) or {})
    return resources


def node_counts(manifest: Mapping[str, Any]) -> dict[str, int]:
    """Number of resources per resource type (model, test, seed, source, unit_test, ...)."""
    counts = Counter(
        str(node.get("resource_type", "unknown")) for node in all_resources(manifest).values()
    )
    return dict(sorted(counts.items()))


def _status(value: Any) -> NodeStatus | str:
    try:
        return NodeStatus(str(value))
    except ValueError:  # a status a newer dbt added: kept as text, never a crash
        return str(value)


def result_statuses(run_results: Mapping[str, Any]) -> dict[str, NodeStatus | str]:
    """unique_id -> status (a :class:`NodeStatus`; text for a status this code does not know)."""
    return {
        str(result["unique_id"]): _status(result.get("status"))
        for result in run_results.get("results") or []
        if "unique_id" in result
    }


def failed_nodes(run_results: Mapping[str, Any]) -> list[str]:
    """unique_ids whose status failed the build, sorted."""
    return sorted(uid for uid, status in result_statuses(run_results).items() if status in FAILING_STATUSES)


# How the warehouses word a write refused by the branch's isolation: DuckDB's read-only
# attachment, PostgreSQL's privileges of the CI role.
_REFUSED_WRITE = re.compile(
    r"attached in read-only mode|read-only transaction|permission denied for|must be owner of",
    re.IGNORECASE,
)


def refused_writes(run_results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(unique_id, the database's message) of every node whose failure was a write the
    warehouse refused (to production, from a branch build)."""
    found = []
    for result in run_results.get("results") or []:
        message = " ".join(str(result.get("message") or "").split())
        if result.get("status") in FAILING_STATUSES and _REFUSED_WRITE.search(message):
            found.append((str(result.get("unique_id")), message))
    return sorted(found)


def relation_schemas(manifest: Mapping[str, Any]) -> list[str]:
    """Every schema production's manifest builds into or reads from (its models, seeds,
    snapshots and sources), sorted."""
    schemas = set()
    for section in ("nodes", "sources"):
        for node in (manifest.get(section) or {}).values():
            if node.get("resource_type") in ("model", "seed", "snapshot", "source") and node.get("schema"):
                schemas.add(str(node["schema"]))
    return sorted(schemas)


def source_relations(manifest: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(database, schema, identifier) of every source of ``manifest``."""
    return sorted(
        (str(source.get("database") or ""), str(source.get("schema") or ""), str(source.get("identifier") or source.get("name")))
        for source in (manifest.get("sources") or {}).values()
    )


def status_summary(run_results: Mapping[str, Any]) -> dict[str, int]:
    """How many nodes ended in each status."""
    return dict(sorted(Counter(result_statuses(run_results).values()).items()))


def execution_times(run_results: Mapping[str, Any]) -> dict[str, float]:
    """unique_id -> seconds dbt spent executing the node."""
    return {
        str(result["unique_id"]): float(result.get("execution_time") or 0.0)
        for result in run_results.get("results") or []
        if "unique_id" in result
    }


def is_ephemeral(node: Mapping[str, Any]) -> bool:
    """Compiled into its children: no relation of its own."""
    return (node.get("config") or {}).get("materialized") == "ephemeral"


def relation_address(node: Mapping[str, Any]) -> tuple[str, str] | None:
    """(schema, identifier) of the relation a model, seed or snapshot materializes into;
    None for ephemeral models, other resource types and nodes without a schema."""
    if node.get("resource_type") not in RELATION_TYPES or is_ephemeral(node) or not node.get("schema"):
        return None
    identifier = node.get("alias") or node.get("identifier") or node.get("name")
    return (str(node["schema"]), str(identifier)) if identifier else None


def relation_name(node: Mapping[str, Any]) -> str | None:
    """The warehouse relation a node materializes into, as dbt renders it."""
    name = node.get("relation_name")
    if name:
        return str(name)
    address = relation_address(node)
    if address is None:
        return None
    parts = [p for p in (node.get("database"), *address) if p]
    return ".".join(f'"{p}"' for p in parts)


def merge_run_results(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One run_results document for several dbt commands run in order (``seed`` then
    ``build``): each node's latest result, the last command's metadata, the summed time."""
    if not results:
        return {"results": []}
    latest: dict[str, Mapping[str, Any]] = {}
    for document in results:
        for result in document.get("results") or []:
            if "unique_id" in result:
                latest.pop(str(result["unique_id"]), None)  # keep the order of the latest run
                latest[str(result["unique_id"])] = result
    merged = dict(results[-1])
    merged["results"] = list(latest.values())
    merged["elapsed_time"] = sum(float(d.get("elapsed_time") or 0.0) for d in results)
    return merged


def publication_blockers(
    run_results: Mapping[str, Any], manifest: Mapping[str, Any], *, models_built_suffices: bool
) -> tuple[list[str], list[str]]:
    """(nodes that keep a production build from publishing, failing tests).

    Under ``success`` every failing node blocks. Under ``models_built`` only models,
    seeds and snapshots that failed or were skipped block (dbt build skips the children
    of a failing test, so such a test blocks through them); failing tests are returned
    for the record.
    """
    statuses = result_statuses(run_results)
    resources = all_resources(manifest)

    def kind(unique_id: str) -> str:
        return str((resources.get(unique_id) or {}).get("resource_type") or unique_id.split(".", 1)[0])

    failing = sorted(uid for uid, status in statuses.items() if status in FAILING_STATUSES)
    tests = [uid for uid in failing if kind(uid) in TEST_TYPES]
    if not models_built_suffices:
        return failing, tests
    not_built = sorted(
        uid for uid, status in statuses.items()
        if kind(uid) in RELATION_TYPES and (status in FAILING_STATUSES or status == NodeStatus.SKIPPED)
    )
    return not_built, tests
