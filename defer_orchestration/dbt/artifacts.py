"""Reading dbt's artifacts: manifest.json and run_results.json.

Only plain dicts go in and out, so the functions are tested on small hand-written
artifacts without running dbt.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from defer_orchestration.lib.errors import ManifestError

# Resource types that materialize something in the warehouse.
RELATION_TYPES = frozenset({"model", "seed", "snapshot"})


def load_json(path: Path, *, what: str) -> dict[str, Any]:
    """Read a JSON artifact with an error that names the file and what to do."""
    try:
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
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


def result_statuses(run_results: Mapping[str, Any]) -> dict[str, str]:
    """unique_id -> status ("success", "error", "pass", "fail", "skipped", ...)."""
    return {
        str(result["unique_id"]): str(result.get("status"))
        for result in run_results.get("results") or []
        if "unique_id" in result
    }


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


def relation_name(node: Mapping[str, Any]) -> str | None:
    """The warehouse relation a node materializes into, as dbt renders it."""
    name = node.get("relation_name")
    if name:
        return str(name)
    if node.get("resource_type") in RELATION_TYPES and node.get("schema"):
        database = node.get("database")
        ident = node.get("alias") or node.get("name")
        parts = [p for p in (database, node.get("schema"), ident) if p]
        return ".".join(f'"{p}"' for p in parts)
    return None
