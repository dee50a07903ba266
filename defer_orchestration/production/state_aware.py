"""The inputs of the state-aware decision, read at the start of a production build, and
the record each build leaves for the next one.

- **Source data versions** (:func:`observe_sources`): ``max(loaded_at_field)`` where a
  source declares one (dbt's own freshness field: the project says new data shows
  there), otherwise the warehouse's fingerprint of the rows (``Warehouse.data_version``:
  DuckDB hashes every row, PostgreSQL sums ``xmin``), never wrong: a change of rows always
  changes it; a spurious change is allowed and counted.
- **Existing relations**: one catalog query per production schema.
- **The record** (:func:`state_record`): what the next build needs and the published
  artifacts do not hold: the vars this build read (dbt's manifest does not record
  them), the source versions it observed before building, and the run that last built
  each node. ``prod_manifest`` publishes it in its metadata (``state_aware_state``).

Every production build (``full``, ``changed`` and ``state_aware``) observes its sources
and leaves the record, so the first state-aware run after a full one keeps what it can.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from defer_orchestration.dbt import artifacts
from defer_orchestration.dbt.args import merge_vars
from defer_orchestration.production.fingerprint import NodeCode, code_fingerprints
from defer_orchestration.production.state import Decision, PreviousBuild, decide
from defer_orchestration.warehouse.base import Relation, Warehouse, WarehouseConnection

STATE_RECORD = "state_aware.json"  # next to build.json: prod_manifest publishes it
STATE_VERSION = 1
STATE_METADATA_KEY = "state_aware_state"


def project_vars(project_dir: Path, run_vars: Mapping[str, Any]) -> dict[str, Any]:
    """The vars dbt gives the project: ``vars:`` of its ``dbt_project.yml`` with the run's
    ``--vars`` over them (dbt's precedence)."""
    try:
        text = (project_dir / "dbt_project.yml").read_text(encoding="utf-8")
    except OSError:
        text = ""
    return project_vars_from_yaml(text, run_vars)


def project_vars_from_yaml(text: str, run_vars: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`project_vars` from the text of a ``dbt_project.yml``."""
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        loaded = {}
    declared = loaded.get("vars") if isinstance(loaded, dict) else None
    return merge_vars(declared if isinstance(declared, dict) else {}, run_vars)


def source_relation(source: Mapping[str, Any]) -> Relation:
    """(schema, identifier) a dbt source reads."""
    return (str(source.get("schema")), str(source.get("identifier") or source.get("name")))


def loaded_at_field(source: Mapping[str, Any]) -> str | None:
    """The source's ``loaded_at_field`` (top level or config), or None."""
    value = source.get("loaded_at_field") or (source.get("config") or {}).get("loaded_at_field")
    return str(value) if value else None


@dataclass
class Observation:
    """Data versions of the sources now, how each was read, and what it cost."""

    versions: dict[str, str | None] = field(default_factory=dict)  # None: unreadable (a change)
    methods: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    existing: set[Relation] = field(default_factory=set)


def observe_sources(conn: WarehouseConnection, manifest: Mapping[str, Any]) -> Observation:
    """The data version of every source of ``manifest``, and the production relations that
    exist (one catalog query per schema)."""
    started = time.perf_counter()
    seen = Observation()
    for uid, source in sorted((manifest.get("sources") or {}).items()):
        relation = source_relation(source)
        column = loaded_at_field(source)
        if column:
            seen.versions[uid] = conn.max_value(relation, column)
            seen.methods[uid] = "loaded_at_field"
        else:
            seen.versions[uid] = conn.data_version(relation)
            seen.methods[uid] = conn.data_version_method
    for schema in artifacts.relation_schemas(manifest):
        seen.existing |= {(schema, name) for name in conn.list_relations(schema)}
    seen.seconds = round(time.perf_counter() - started, 3)
    return seen


def observe(warehouse: Warehouse, manifest: Mapping[str, Any]) -> Observation:
    """:func:`observe_sources` on a connection of its own, closed before dbt opens the
    warehouse (DuckDB allows one writer)."""
    with warehouse.connect() as conn:
        return observe_sources(conn, manifest)


def possibly_spurious(before: Mapping[str, str], now: Mapping[str, str | None]) -> list[str]:
    """Sources whose version changed with the same row count under a fingerprint that can
    change without a change of rows (PostgreSQL's ``xmin``: a rewrite of the same rows):
    maybe a real update, maybe not; counted, never trusted as unchanged."""
    out = []
    for uid, version in now.items():
        old = before.get(uid)
        if version is None or old is None or version == old or not version.startswith("xmin:"):
            continue
        if old.split(":")[:2] == version.split(":")[:2]:
            out.append(uid)
    return sorted(out)


def previous_build(
    published_dir: Path, record: Mapping[str, Any] | None, *, producing_run_id: str
) -> PreviousBuild | None:
    """The last published build as the decision reads it, or None when it left no record
    (published before state-aware builds existed): everything is then rebuilt."""
    if not record or record.get("version") != STATE_VERSION:
        return None
    manifest = artifacts.load_json(published_dir / "manifest.json", what="published production manifest")
    run_results = artifacts.load_json(published_dir / "run_results.json", what="published production run_results")
    versions = {str(k): str(v) for k, v in (record.get("data_versions") or {}).items() if v is not None}
    attempts = record.get(ATTEMPTS_KEY) or {}
    return PreviousBuild(
        code=code_fingerprints(manifest, record.get("vars") or {}),
        run_results=run_results,
        data_versions=versions,
        built_in={str(k): str(v) for k, v in (record.get("built_in") or {}).items()},
        run_id=producing_run_id,
        failed_since={str(k): (str(v[0]), f"run {v[1]}") for k, v in (attempts.get("failed") or {}).items()},
        written_since={str(k): str(v) for k, v in (attempts.get("written") or {}).items()},
    )


# Under this key of the previous state: what builds that failed after the last publication
# did (``failed``: unique_id -> [status, run]; ``written``: unique_id -> run).
ATTEMPTS_KEY = "failed_attempts"
# The failure metadata of such a build, read back by the next one.
ATTEMPT_METADATA_KEY = "state_aware_attempt"


def attempt_record(run_results: Mapping[str, Any], ran: set[str], manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What a build that is not published did to production: the relation nodes it rewrote
    and the ones that failed or were skipped (the next build rebuilds both)."""
    nodes = manifest.get("nodes") or {}
    statuses = artifacts.result_statuses(run_results)
    relation = {uid for uid in ran if artifacts.relation_address(nodes.get(uid) or {}) is not None}
    return {
        "written": sorted(uid for uid in relation if statuses.get(uid) == artifacts.NodeStatus.SUCCESS),
        "failed": {uid: str(statuses.get(uid)) for uid in sorted(relation) if statuses.get(uid) != artifacts.NodeStatus.SUCCESS},
    }


def merge_attempts(attempts: list[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """The failed builds' records ((run id, record), oldest first) as one ``failed_attempts``
    entry: a node's latest attempt wins."""
    failed: dict[str, list[str]] = {}
    written: dict[str, str] = {}
    for run_id, attempt in attempts:
        for uid in attempt.get("written") or []:
            written[str(uid)] = run_id
            failed.pop(str(uid), None)
        for uid, status in (attempt.get("failed") or {}).items():
            failed[str(uid)] = [str(status), run_id]
            written.pop(str(uid), None)
    return {"failed": failed, "written": written}


@dataclass
class StateAwarePlan:
    """What a state-aware build decided and what it read to decide."""

    decision: Decision
    observation: Observation
    vars: dict[str, Any]
    code: dict[str, NodeCode]
    spurious: list[str]


def plan(
    manifest: Mapping[str, Any],
    observation: Observation,
    vars: Mapping[str, Any],
    previous: PreviousBuild | None,
    *,
    now: float,
) -> StateAwarePlan:
    """The decision over the head's ``manifest`` with what was observed."""
    code = code_fingerprints(manifest, vars)
    decision = decide(manifest, code, previous, observation.versions, existing=observation.existing, now=now)
    spurious = possibly_spurious(previous.data_versions if previous else {}, observation.versions)
    return StateAwarePlan(decision, observation, dict(vars), code, spurious)


def state_record(
    *,
    vars: Mapping[str, Any],
    observation: Observation | None,
    built: set[str],
    kept: Mapping[str, str],
    run_id: str,
) -> dict[str, Any]:
    """What this build leaves for the next: its vars, the source versions it observed
    before building (none observed: every source counts as changed next time), and the run
    that built each node (``built``: this run; ``kept``: the run that built it before)."""
    built_in = dict(kept)
    built_in.update({uid: run_id for uid in built})
    return {
        "version": STATE_VERSION,
        "vars": json.loads(json.dumps(dict(vars), default=str)),
        "data_versions": dict(observation.versions) if observation else {},
        "methods": dict(observation.methods) if observation else {},
        "built_in": dict(sorted(built_in.items())),
    }


def write_record(directory: Path, record: Mapping[str, Any]) -> None:
    """Write the record next to the build's artifacts (``prod_manifest`` reads it)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STATE_RECORD).write_text(json.dumps(record), encoding="utf-8")


def read_record(directory: Path) -> dict[str, Any]:
    """The record a build left in ``directory`` ({} when none)."""
    try:
        loaded = json.loads((directory / STATE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def why_table(decision: Decision, *, limit: int = 50) -> str:
    """The run's "why" as markdown: rebuilt nodes by reason, then kept nodes with the run
    that last built them."""
    lines = ["| node | decision | why |", "|---|---|---|"]
    rows = 0
    for uid, reasons in decision.rebuild.items():
        why = "; ".join(f"{r.kind}: {', '.join(r.detail)}" if r.detail else r.kind for r in reasons)
        lines.append(f"| {uid} | rebuilt | {why} |")
        rows += 1
        if rows >= limit:
            break
    for uid, kept in list(decision.kept.items())[: max(0, limit - rows)]:
        lines.append(f"| {uid} | kept | last built in run {kept.built_in or 'unknown'} |")
    shown = min(limit, len(decision.rebuild) + len(decision.kept))
    total = len(decision.rebuild) + len(decision.kept)
    if shown < total:
        lines.append(f"| … | | {total - shown} more nodes (see `rebuilt_by_reason` and `kept_nodes`) |")
    return "\n".join(lines)
