"""State-aware production: which nodes must be rebuilt, and why; everything else is kept.

A pure function of what is known at the start of a run (no dbt, no Dagster, no warehouse):

- the head's manifest and its code fingerprints (``fingerprint.py``);
- the last published build: its manifest's fingerprints (with the vars it used), its
  run_results (status and end time of each node's last build), the data versions of the
  sources observed at its start, the run that last built each node;
- the data versions of the sources observed now, the production relations that exist in
  the warehouse, each node's optional ``max_age_hours`` and the time now.

A node (model, seed, snapshot) is rebuilt when, and only when:

============ =================================================================================
kind         detail
============ =================================================================================
``new``      no production build has built it yet ([])
``failed``   its last build did not succeed ([its status], and the run when it was a build
             that failed after the last publication), or a build that failed after the
             last publication rewrote it (its relation no longer matches what was
             published: [``written by run <id>, not published``])
``missing``  its relation is not in the warehouse ([schema.name])
``code``     its code fingerprint differs from its last build's ([the parts that changed])
``data``     an input's data changed: a source whose data version changed
             (``source.<...>``) or an upstream node being rebuilt ([their unique_ids])
``max_age``  ``meta: {defer_orchestration: {max_age_hours: N}}`` and N hours passed since
             its last build ([``N h``])
============ =================================================================================

Ephemeral models are compiled into their children: their code reaches the children's
fingerprints (part ``ephemeral``) and their inputs' changes reach the children as data.

Why a kept node's inputs are the ones it was built with: a node is kept only when none of
its inputs changed since the last published build, so that build's observed source
versions are the ones every successful node of it was built from (a source changing
during a build is seen as changed by the next run: a spurious rebuild, never a missed one).
"""

from __future__ import annotations

import datetime as dt
import graphlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from defer_orchestration.dbt import artifacts
from defer_orchestration.production.fingerprint import FINGERPRINTED_TYPES, NodeCode, is_ephemeral

RebuildKind = Literal["new", "failed", "missing", "code", "data", "max_age"]
#: The kinds in the order the summary lists them.
REBUILD_KINDS: tuple[RebuildKind, ...] = ("new", "failed", "missing", "code", "data", "max_age")
META_KEY = "defer_orchestration"
MAX_AGE_KEY = "max_age_hours"


@dataclass(frozen=True)
class RebuildReason:
    """One reason a node is rebuilt."""

    kind: RebuildKind
    detail: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """``{"kind": ..., "detail": [...]}``."""
        return {"kind": self.kind, "detail": list(self.detail)}


@dataclass(frozen=True)
class KeptNode:
    """A node left as it is: the run that last built it and when (epoch seconds; 0: unknown)."""

    built_in: str
    built_at: float


@dataclass(frozen=True)
class PreviousBuild:
    """What the last published production build left: its code, results and inputs."""

    code: Mapping[str, NodeCode]
    run_results: Mapping[str, Any]
    data_versions: Mapping[str, str]  # source unique_id -> data version observed at its start
    built_in: Mapping[str, str] = field(default_factory=dict)  # unique_id -> run that built it
    run_id: str = ""  # the run that published it (built_in's default)
    # Builds that failed after that publication: what they failed ((status, run)) and what
    # they rewrote successfully (run): production's relations, not the published state.
    failed_since: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    written_since: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """The rebuild set with reasons (dbt's order of the manifest) and the kept set."""

    rebuild: dict[str, list[RebuildReason]]
    kept: dict[str, KeptNode]

    def by_kind(self) -> dict[str, list[str]]:
        """kind -> rebuilt unique_ids with a reason of that kind (kinds in summary order)."""
        groups: dict[str, list[str]] = {kind: [] for kind in REBUILD_KINDS}
        for uid, reasons in self.rebuild.items():
            for kind in dict.fromkeys(r.kind for r in reasons):
                groups[kind].append(uid)
        return {kind: uids for kind, uids in groups.items() if uids}

    def reasons_json(self) -> dict[str, list[dict[str, Any]]]:
        """unique_id -> its reasons as JSON."""
        return {uid: [r.as_json() for r in reasons] for uid, reasons in self.rebuild.items()}

    def kept_json(self) -> dict[str, str]:
        """unique_id -> the run that last built it."""
        return {uid: kept.built_in for uid, kept in self.kept.items()}


def max_age_hours(node: Mapping[str, Any]) -> float | None:
    """``meta: {defer_orchestration: {max_age_hours: N}}`` of a node (config or top-level
    meta), or None. A value that is not a positive number raises ValueError naming the node."""
    for meta in ((node.get("config") or {}).get("meta") or {}, node.get("meta") or {}):
        ours = meta.get(META_KEY)
        if isinstance(ours, Mapping) and ours.get(MAX_AGE_KEY) is not None:
            value = ours[MAX_AGE_KEY]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(
                    f"{node.get('unique_id')}: meta.{META_KEY}.{MAX_AGE_KEY} must be a positive number of "
                    f"hours, not {value!r}; fix it in the model's YAML or config."
                )
            return float(value)
    return None


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)).timestamp()


def built_at(run_results: Mapping[str, Any]) -> dict[str, float]:
    """unique_id -> when its result's execution ended (epoch seconds), from dbt's timings."""
    out: dict[str, float] = {}
    for result in run_results.get("results") or []:
        ends = [_epoch(t.get("completed_at")) for t in result.get("timing") or [] if isinstance(t, Mapping)]
        known = [e for e in ends if e is not None]
        if known and result.get("unique_id"):
            out[str(result["unique_id"])] = max(known)
    return out


def _parents(manifest: Mapping[str, Any], uid: str) -> list[str]:
    node = (manifest.get("nodes") or {}).get(uid) or {}
    return list(dict.fromkeys((node.get("depends_on") or {}).get("nodes") or []))


def decide(
    manifest: Mapping[str, Any],
    code: Mapping[str, NodeCode],
    previous: PreviousBuild | None,
    data_versions: Mapping[str, str | None],
    *,
    existing: Collection[tuple[str, str]] | None,
    now: float,
) -> Decision:
    """Which models, seeds and snapshots of ``manifest`` to rebuild (with reasons) and
    which to keep (with the run that last built them).

    ``data_versions``: source unique_id -> version observed now (None: could not be
    observed, so changed). ``existing``: (schema, name) of the production relations in the
    warehouse, compared case-insensitively (None: not checked)."""
    nodes = manifest.get("nodes") or {}
    sources = manifest.get("sources") or {}
    scope = [uid for uid, node in nodes.items() if (node or {}).get("resource_type") in FINGERPRINTED_TYPES]
    graph = {uid: [p for p in _parents(manifest, uid) if p in nodes] for uid in scope}
    order = list(graphlib.TopologicalSorter({uid: [p for p in ps if p in graph] for uid, ps in graph.items()}).static_order())
    statuses = artifacts.result_statuses(previous.run_results) if previous else {}
    ended = built_at(previous.run_results) if previous else {}
    relations = {(s.lower(), n.lower()) for s, n in existing} if existing is not None else None
    changed: dict[str, list[RebuildReason]] = {}  # ephemeral models included (never built)
    for uid in order:
        node = nodes[uid]
        reasons: list[RebuildReason] = []
        ephemeral = is_ephemeral(node)
        status = statuses.get(uid)
        if not ephemeral and status is None:
            reasons.append(RebuildReason("new"))
        elif not ephemeral and status != artifacts.NodeStatus.SUCCESS:
            reasons.append(RebuildReason("failed", (str(status),)))
        elif previous is not None and uid in previous.failed_since:
            reasons.append(RebuildReason("failed", previous.failed_since[uid]))
        elif previous is not None and uid in previous.written_since:
            reasons.append(RebuildReason("failed", (f"written by run {previous.written_since[uid]}, not published",)))
        address = artifacts.relation_address(node)
        if relations is not None and address is not None and (address[0].lower(), address[1].lower()) not in relations:
            reasons.append(RebuildReason("missing", (f"{address[0]}.{address[1]}",)))
        before = previous.code.get(uid) if previous else None
        if uid in code and (before is not None or ephemeral):
            parts = code[uid].changed_parts(before)
            if parts and not ephemeral:
                reasons.append(RebuildReason("code", tuple(parts)))
        inputs: list[str] = []
        for parent in _parents(manifest, uid):
            if parent in sources:
                was = previous.data_versions.get(parent) if previous else None
                now_version = data_versions.get(parent)
                if now_version is None or was is None or now_version != was:
                    inputs.append(parent)
            elif parent in changed:
                if is_ephemeral(nodes[parent]):  # its inputs are this node's inputs
                    inputs += [d for r in changed[parent] if r.kind == "data" for d in r.detail]
                else:
                    inputs.append(parent)
        if inputs:
            reasons.append(RebuildReason("data", tuple(dict.fromkeys(inputs))))
        hours = max_age_hours(node)
        last = ended.get(uid)
        if not ephemeral and hours is not None and last is not None and status == artifacts.NodeStatus.SUCCESS:
            if now - last >= hours * 3600:
                reasons.append(RebuildReason("max_age", (f"{hours:g} h",)))
        if reasons:
            reasons.sort(key=lambda r: REBUILD_KINDS.index(r.kind))
            changed[uid] = reasons
    rebuild = {uid: changed[uid] for uid in scope if uid in changed and not is_ephemeral(nodes[uid])}
    kept = {
        uid: KeptNode(
            built_in=(previous.built_in.get(uid) or previous.run_id) if previous else "",
            built_at=ended.get(uid, 0.0),
        )
        for uid in scope if uid not in changed and not is_ephemeral(nodes[uid])
    }
    return Decision(rebuild, kept)


def selection(manifest: Mapping[str, Any], unique_ids: Collection[str]) -> list[str]:
    """dbt ``--select`` arguments selecting exactly the models, seeds and snapshots
    ``unique_ids`` (and, as any selection does, their tests), in the manifest's order.

    dbt resolves each ``fqn:`` selector by scanning every node of the project (there is no
    unique_id method): 384 of them cost about 10 s of CPU at 1,000 models. A state-aware
    decision is closed downstream (a rebuilt node's children see changed input data, so
    they are rebuilt too), so it is usually named by its roots with dbt's ``+`` graph
    operator, which dbt resolves in one traversal: ``fqn:<root>+`` for each member none
    of whose ancestors is a member. That form is used only when the roots' descendants
    (models, seeds and snapshots, ephemeral models aside) are exactly ``unique_ids``;
    otherwise each member is named (``fqn:`` of each)."""
    nodes = manifest.get("nodes") or {}
    wanted = {uid for uid in unique_ids if uid in nodes}
    roots = _roots_if_closed(nodes, wanted)
    names = roots if roots is not None and len(roots) < len(wanted) else wanted
    suffix = "+" if names is roots else ""
    return [_fqn(nodes[uid]) + suffix for uid in nodes if uid in names]


def _fqn(node: Mapping[str, Any]) -> str:
    return "fqn:" + ".".join(str(p) for p in (node.get("fqn") or [node.get("name")]))


def _roots_if_closed(nodes: Mapping[str, Any], wanted: set[str]) -> set[str] | None:
    """The members of ``wanted`` with no member upstream, when everything buildable
    downstream of them is exactly ``wanted``; None otherwise."""
    children: dict[str, list[str]] = {}
    for uid, node in nodes.items():
        for parent in _parents_of(node):
            children.setdefault(parent, []).append(uid)

    def below(starts: Collection[str]) -> set[str]:
        seen: set[str] = set()
        stack = [c for s in starts for c in children.get(s, [])]
        while stack:
            uid = stack.pop()
            if uid not in seen:
                seen.add(uid)
                stack.extend(children.get(uid, []))
        return seen

    roots = wanted - below(wanted)
    reached = roots | below(roots)
    buildable = {
        uid for uid in reached
        if (nodes.get(uid) or {}).get("resource_type") in FINGERPRINTED_TYPES and not is_ephemeral(nodes[uid])
    }
    return roots if buildable == wanted else None


def _parents_of(node: Mapping[str, Any]) -> list[str]:
    return list((node.get("depends_on") or {}).get("nodes") or [])
