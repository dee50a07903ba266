"""The pull-request body of a branch build: what a CI system posts and ``defer-orch report``
prints, from a plain, JSON-ready report (:class:`PrReport`).

The report is built from what a branch run already knows (:class:`~defer_orchestration.
branch.report.BranchBuildReport`, the reasons of :mod:`defer_orchestration.branch.reasons`
and the branch manifest's lineage) by :func:`build_pr_report`; everything after that is pure
rendering, so the CLI can render a report it read back from run metadata.

The markdown stays under GitHub's comment limit (65,536 characters; we keep 65,000):
long sections fold into ``<details>`` and say what they cut, the lineage graph is capped,
and when the whole still does not fit, every section is rendered again with fewer items.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypedDict

from defer_orchestration.branch.reasons import (
    REASON_KINDS,
    Reason,
    ReasonKind,
    SelectedNode,
    group_by_cause,
    selected_json,
)
from defer_orchestration.branch.report import BranchBuildReport
from defer_orchestration.dbt.artifacts import TEST_TYPES, result_statuses
from defer_orchestration.diff import report as diff_report

#: GitHub rejects a comment body over 65,536 characters; keep a margin.
COMMENT_LIMIT = 65_000
#: Version of the JSON shape of :func:`report_json` (bump on an incompatible change).
REPORT_SCHEMA_VERSION = 1


class FailedNode(TypedDict):
    """A node that failed the build, with dbt's message."""

    unique_id: str
    status: str
    message: str


class DeferredEntry(TypedDict):
    """A parent read from production instead of being rebuilt (``preflight.DeferredParent``)."""

    unique_id: str
    prod_relation: str | None  # None: production has no such relation
    needed_by: list[str]


class PrReport(TypedDict):
    """Everything the pull-request body says, as plain JSON-ready values."""

    branch: str
    sha: str
    schema: str
    ok: bool
    counts: dict[str, int]  # selected, built, tests_passed, failed, skipped, warned, deferred
    wall_seconds: float
    branch_seconds: float  # dbt's execution time of the branch's nodes
    prod_seconds_not_rebuilt: float  # production's execution time of what was not rebuilt
    dbt_seconds: dict[str, float]  # parse / ls / build
    manifest_version: str | None
    manifest_git_sha: str | None
    state_note: str
    warnings: list[str]
    failures: list[FailedNode]
    failing_in_production_too: list[str]
    selected: list[SelectedNode]
    deferred: list[DeferredEntry]
    edges: list[list[str]]  # [parent, child] among selected and deferred nodes
    diff_headline: str | None
    diff_markdown: str | None
    diff_error: str | None
    # Column-level impact (impact/): one entry per modified node, see ``NodeImpact.to_dict``;
    # None when nothing was compared with production.
    impact: list[dict[str, Any]] | None
    # impacted node -> its column -> the changed columns ("<unique_id>.<column>") it derives from
    impact_lineage: dict[str, dict[str, list[str]]]
    impact_notes: list[str]
    impact_error: str | None


# --- building ------------------------------------------------------------------------------


def _messages(run_results: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(r["unique_id"]): str(r.get("message") or "")
        for r in run_results.get("results") or []
        if "unique_id" in r
    }


def lineage_edges(
    nodes: Iterable[str], branch_manifest: Mapping[str, Any], extra: Iterable[tuple[str, str]] = ()
) -> list[list[str]]:
    """[parent, child] pairs of the branch manifest's ``parent_map`` with both ends in
    ``nodes``, plus ``extra`` pairs (a deferred parent read through an ephemeral model)."""
    members = set(nodes)
    parent_map = branch_manifest.get("parent_map") or {}
    pairs = {(p, uid) for uid in members for p in parent_map.get(uid) or [] if p in members}
    pairs |= {(p, c) for p, c in extra if p in members and c in members}
    return [[p, c] for p, c in sorted(pairs)]


def build_pr_report(
    report: BranchBuildReport,
    *,
    reasons: Mapping[str, Sequence[Reason]],
    branch_manifest: Mapping[str, Any],
) -> PrReport:
    """The plain report of one branch build: its summary, failures with dbt's messages,
    why each node was selected, what it deferred, the lineage and the data diff."""
    summary = report.summary
    messages = _messages(report.run_results)
    statuses = result_statuses(report.run_results)
    failures: list[FailedNode] = [
        {"unique_id": uid, "status": str(statuses.get(uid, "error")), "message": messages.get(uid, "")}
        for uid in report.failed_nodes()
    ]
    deferred: list[DeferredEntry] = [
        {"unique_id": d.unique_id, "prod_relation": d.prod_relation, "needed_by": list(d.needed_by)}
        for d in summary.deferred
    ]
    ordered = {uid: list(reasons.get(uid) or []) for uid in summary.selected}
    ordered |= {uid: list(rs) for uid, rs in reasons.items() if uid not in ordered}
    nodes = [*ordered, *(d["unique_id"] for d in deferred)]
    extra = [(d["unique_id"], child) for d in deferred for child in d["needed_by"]]
    manifest = report.manifest
    return {
        "branch": report.branch,
        "sha": report.sha,
        "schema": report.schema,
        "ok": report.ok,
        "counts": dict(summary.counts),
        "wall_seconds": round(report.wall_seconds, 3),
        "branch_seconds": summary.branch_seconds,
        "prod_seconds_not_rebuilt": summary.prod_seconds_not_rebuilt,
        "dbt_seconds": {k: round(v, 3) for k, v in report.dbt_seconds.items()},
        "manifest_version": manifest.version if manifest else None,
        "manifest_git_sha": manifest.git_sha if manifest else None,
        "state_note": report.state_note,
        "warnings": list(report.warnings),
        "failures": failures,
        "failing_in_production_too": report.failing_in_production_too(),
        "selected": selected_json(ordered),
        "deferred": deferred,
        "edges": lineage_edges(nodes, branch_manifest, extra),
        "diff_headline": diff_report.headline(report.diffs) if report.diffs is not None else None,
        "diff_markdown": diff_report.to_markdown(report.diffs) if report.diffs is not None else None,
        "diff_error": report.diff_error,
        "impact": report.impact.impact() if report.impact is not None else None,
        "impact_lineage": (
            {uid: {col: list(refs) for col, refs in cols.items()} for uid, cols in report.impact.lineage.items()}
            if report.impact is not None else {}
        ),
        "impact_notes": list(report.impact.notes) if report.impact is not None else [],
        "impact_error": report.impact_error,
    }


def report_json(report: PrReport) -> dict[str, Any]:
    """The ``report --json`` document: the report's fields with ``schema_version``;
    ``selected`` is the contract's list of ``{"unique_id", "reasons": [{"kind", "detail"}]}``."""
    return {"schema_version": REPORT_SCHEMA_VERSION, **report}


# --- markdown helpers ----------------------------------------------------------------------


def _cell(text: object) -> str:
    """Markdown-table-safe text."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return "`" + _cell(text).replace("`", "'") + "`"


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at a line end when there is one (a
    table row is never cut in half), saying how much was cut."""
    if len(text) <= limit:
        return text
    end = text.rfind("\n", 0, limit + 1)
    end = end if end > limit // 2 else limit
    return text[:end] + f"\n… ({len(text) - end:,} more characters cut)"


def _fold(summary: str, body: Sequence[str]) -> list[str]:
    """A ``<details>`` block (a blank line after ``<summary>`` so markdown renders inside)."""
    return ["<details>", f"<summary>{summary}</summary>", "", *body, "", "</details>"]


def _more(n: int, what: str) -> str:
    return f"… and {n:,} more {what}"


def _names(uids: Sequence[str], limit: int) -> str:
    shown = ", ".join(_code(u) for u in uids[:limit])
    return shown + (f", {_more(len(uids) - limit, 'nodes')}" if len(uids) > limit else "")


def _seconds(value: float) -> str:
    return f"{value:,.1f} s" if value < 120 else f"{value / 60:,.1f} min"


# --- the lineage graph ---------------------------------------------------------------------

_MERMAID_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_CLASSES = {
    "changed": "fill:#ffd8a8,stroke:#e8590c,stroke-width:2px,color:#000",
    "breaking": "fill:#ffc9c9,stroke:#c92a2a,stroke-width:3px,color:#000",
    "partial": "fill:#ffd8a8,stroke:#e8590c,stroke-width:2px,color:#000",
    "non_breaking": "fill:#d3f9d8,stroke:#2b8a3e,stroke-width:2px,color:#000",
    "unknown": "fill:#e7f5ff,stroke:#1c7ed6,stroke-width:2px,color:#000",
    "impacted": "fill:#fff3bf,stroke:#c92a2a,stroke-width:2px,color:#000",
    "downstream": "fill:#fff3bf,stroke:#f08c00,color:#000",
    "deferred": "fill:#e9ecef,stroke:#868e96,stroke-dasharray:4 3,color:#000",
}
#: Roles of the changed nodes (orange without impact data, by category with it).
_CHANGED_ROLES = frozenset({"changed", "breaking", "partial", "non_breaking", "unknown"})


def mermaid_id(unique_id: str, taken: dict[str, str]) -> str:
    """A mermaid-safe identifier for ``unique_id``, unique among ``taken`` (id -> unique_id):
    letters, digits and ``_`` only, prefixed so no id is a mermaid keyword (``end``)."""
    base = "n_" + _MERMAID_UNSAFE.sub("_", unique_id)
    candidate, n = base, 1
    while taken.get(candidate, unique_id) != unique_id:
        n += 1
        candidate = f"{base}_{n}"
    taken[candidate] = unique_id
    return candidate


def _label(unique_id: str, note: str = "") -> str:
    """``name (type)`` (`` · note``) in mermaid's quoted label syntax, quotes and brackets
    as entities."""
    parts = unique_id.split(".")
    text = f"{parts[-1]} ({parts[0]})" if len(parts) > 1 else unique_id
    text += f" · {note}" if note else ""
    for char, entity in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, entity)
    return f'"{text}"'


def _graph_roles(report: PrReport) -> dict[str, str]:
    """unique_id -> changed / downstream / deferred for every graph-worthy node (no tests);
    with column-level impact, a changed node's role is its category and a downstream node
    some change reaches is ``impacted``."""
    impact = report.get("impact") or []
    categories = {e["unique_id"]: str(e["category"]) for e in impact}
    impacted = {i["unique_id"] for e in impact for i in e.get("impacted") or []}
    roles: dict[str, str] = {}
    for entry in report["selected"]:
        uid = entry["unique_id"]
        if uid.split(".", 1)[0] in TEST_TYPES:
            continue
        kinds = {r["kind"] for r in entry["reasons"]}
        if kinds != {"downstream"}:
            roles[uid] = categories.get(uid, "changed")
        else:
            roles[uid] = "impacted" if uid in impacted else "downstream"
    for uid in impacted:  # an exposure (never selected) that a change reaches
        roles.setdefault(uid, "impacted")
    for d in report["deferred"]:
        roles.setdefault(d["unique_id"], "deferred")
    return roles


def _graph_order(roles: Mapping[str, str], edges: Sequence[Sequence[str]]) -> list[str]:
    """Changed nodes first, then the rest breadth-first from them (nearest descendants
    and parents first), so a capped graph keeps what is closest to the change."""
    neighbours: dict[str, list[str]] = {}
    for parent, child in edges:
        neighbours.setdefault(parent, []).append(child)
        neighbours.setdefault(child, []).append(parent)
    order = [uid for uid, role in roles.items() if role in _CHANGED_ROLES]
    seen = set(order)
    i = 0
    while i < len(order):
        for other in neighbours.get(order[i], []):
            if other in roles and other not in seen:
                seen.add(other)
                order.append(other)
        i += 1
    order += [uid for uid in roles if uid not in seen]
    return order


class Lineage(NamedTuple):
    """A mermaid graph (without the fence) and what it left out."""

    text: str
    nodes_cut: int
    edges_cut: int


def mermaid_lineage(report: PrReport, *, max_nodes: int = 120, max_edges: int = 400) -> Lineage:
    """The ``flowchart LR`` of the changed nodes, their descendants and the deferred
    parents, styled apart (tests left out), at most ``max_nodes`` nodes and ``max_edges``
    edges (mermaid refuses more than 500 edges by default), nearest to the change first."""
    roles = _graph_roles(report)
    order = _graph_order(roles, report["edges"])
    shown = order[: max(max_nodes, 0)]
    members = set(shown)
    taken: dict[str, str] = {}
    ids = {uid: mermaid_id(uid, taken) for uid in shown}
    lines = ["flowchart LR"]
    notes = {"breaking": "breaking", "partial": "partial", "non_breaking": "non-breaking", "unknown": "unknown"}
    lines += [f"  {ids[uid]}[{_label(uid, notes.get(roles[uid], ''))}]" for uid in shown]
    edges = [(p, c) for p, c in report["edges"] if p in members and c in members]
    lines += [f"  {ids[p]} --> {ids[c]}" for p, c in edges[: max(max_edges, 0)]]
    used = {roles[uid] for uid in shown}
    for role, style in _CLASSES.items():
        if role in used or role in ("changed", "downstream", "deferred"):
            lines.append(f"  classDef {role} {style}")
    for role in _CLASSES:
        members_of = [ids[uid] for uid in shown if roles[uid] == role]
        for start in range(0, len(members_of), 40):  # short lines for the diff view
            lines.append(f"  class {','.join(members_of[start:start + 40])} {role}")
    return Lineage("\n".join(lines), len(order) - len(shown), max(len(edges) - max_edges, 0))


# --- sections ------------------------------------------------------------------------------


def _headline(report: PrReport) -> list[str]:
    c = report["counts"]
    state = "✅ **Branch build passed**" if report["ok"] else "❌ **Branch build failed**"
    version = report["manifest_version"]
    against = (
        f" against production manifest `{version[:12]}`"
        + (f" (main @ `{report['manifest_git_sha'][:12]}`)" if report["manifest_git_sha"] else "")
        if version else ""
    )
    lines = [
        f"{state}: `{_cell(report['branch'])}` @ `{report['sha'][:12]}` → schema "
        f"`{_cell(report['schema'])}`{against}",
        "",
        f"{c.get('selected', 0):,} selected · {c.get('built', 0):,} built · "
        f"{c.get('tests_passed', 0):,} tests passed · **{c.get('failed', 0):,} failed** · "
        f"{c.get('skipped', 0):,} skipped · {c.get('deferred', 0):,} parents deferred to production",
        "",
        f"⏱ {_seconds(report['wall_seconds'])} wall, {_seconds(report['branch_seconds'])} in dbt nodes; "
        f"**{_seconds(report['prod_seconds_not_rebuilt'])} of production build time not rebuilt**"
        + (f" ({report['state_note']})" if report["state_note"] else ""),
    ]
    if report["dbt_seconds"]:
        lines[-1] += " · dbt " + ", ".join(f"{k} {_seconds(v)}" for k, v in report["dbt_seconds"].items())
    for warning in report["warnings"]:
        lines += ["", f"⚠️ **{_cell(warning)}**"]
    if report["failing_in_production_too"]:
        also = report["failing_in_production_too"]
        lines += ["", f"ℹ️ {len(also)} test(s) fail here as in production: {_names(also, 10)}"]
    return lines


def _failure(f: FailedNode, message_chars: int) -> list[str]:
    message = f["message"].replace("```", "'''") or "(no message)"
    return [f"**{_code(f['unique_id'])}** ({_cell(f['status'])})", "", "```",
            _clip(message, message_chars), "```", ""]


def _failures(report: PrReport, cap: int, message_chars: int) -> list[str]:
    """The first failures open with dbt's message, the next ones folded, the rest counted."""
    failures = report["failures"]
    if not failures:
        return []
    lines = [f"### ❌ Failures ({len(failures):,})", ""]
    shown = failures[:cap]
    for f in shown[:3]:
        lines += _failure(f, message_chars)
    if folded := shown[3:]:
        body = [line for f in folded for line in _failure(f, message_chars // 3)]
        lines += [*_fold(f"{len(folded):,} more failure(s)", body), ""]
    if len(failures) > cap:
        lines.append(_more(len(failures) - cap, "failures: see the run in Dagster"))
    return lines


_KIND_TITLES: dict[ReasonKind, str] = {
    "new": "New", "body": "Code changed", "seed": "Seed contents changed",
    "config": "Config changed", "macro": "Macro changed", "contract": "Contract changed",
    "var": "Var changed", "other": "Other", "downstream": "Downstream of a change",
}
_CAUSE_WORDS: dict[ReasonKind, str] = {
    "config": "key", "macro": "macro", "contract": "", "var": "var", "downstream": "downstream of",
}


def _why(report: PrReport, cap: int) -> list[str]:
    reasons = {e["unique_id"]: e["reasons"] for e in report["selected"]}
    if not reasons:
        return ["### Why selected", "", "Nothing was selected: no node differs from production."]
    lines = ["### Why selected", ""]
    for kind, causes in group_by_cause(reasons).items():
        total = len({uid for uids in causes.values() for uid in uids})
        lines.append(f"- **{_KIND_TITLES[kind]}** ({total:,} node{'s' * (total != 1)})")
        if kind in ("new", "body", "seed"):
            uids = list(dict.fromkeys(uid for uids in causes.values() for uid in uids))
            lines.append(f"  - {_names(uids, cap)}")
            continue
        items = list(causes.items())
        for cause, uids in items[:cap]:
            word = _CAUSE_WORDS.get(kind, "")
            head = f"{word} {_code(cause)}".strip() if kind != "other" else _cell(cause)
            lines.append(f"  - {head}: {_names(uids, max(cap // 4, 1))}")
        if len(items) > cap:
            lines.append(f"  - {_more(len(items) - cap, 'causes')}")
    table = ["| node | reasons |", "|---|---|"]
    entries = list(reasons.items())
    for uid, rs in entries[:cap * 4]:
        text = "; ".join(
            r["kind"] + (": " + ", ".join(r["detail"][:5]) + (" …" if len(r["detail"]) > 5 else "")
                         if r["detail"] else "")
            for r in rs
        )
        table.append(f"| {_code(uid)} | {_cell(text)} |")
    cut = len(entries) - len(entries[:cap * 4])
    if cut:
        table.append(f"| {_more(cut, 'nodes')} | |")
    return lines + [""] + _fold(f"Every selected node and its reasons ({len(entries):,})", table)


def _graph(report: PrReport, cap: int) -> list[str]:
    if not report["selected"] and not report["deferred"]:
        return []
    graph, cut, edges_cut = mermaid_lineage(report, max_nodes=cap)
    legend = (
        "Changed nodes by category (breaking red, partial orange, non-breaking green, unknown "
        "blue), descendants a change reaches (yellow, red border) or not (yellow), and the "
        "parents read from production (grey, dashed); tests left out."
        if report.get("impact") else
        "Changed nodes (orange), their descendants built here (yellow) and the parents "
        "read from production (grey, dashed); tests left out."
    )
    lines = ["### Lineage", "", legend, "", "```mermaid", graph, "```"]
    if cut:
        lines += ["", f"Graph capped at {cap:,} nodes: {_more(cut, 'nodes')} not drawn."]
    if edges_cut:
        lines += ["", f"{_more(edges_cut, 'edges')} between the drawn nodes not drawn."]
    return lines


_CATEGORY_TITLES = {
    "breaking": "🔴 breaking", "partial": "🟠 partial", "non_breaking": "🟢 non-breaking",
    "unknown": "⚪ unknown",
}
_CATEGORY_ORDER = ("breaking", "partial", "unknown", "non_breaking")


def _column_changes(columns: Mapping[str, Any]) -> str:
    """``changed: a, b · removed: c · renamed: d → e · retyped: f (INT → TEXT)``."""
    parts: list[str] = []
    for key in ("removed", "renamed", "retyped", "changed", "added"):
        values = columns.get(key) or []
        if not values:
            continue
        if key == "renamed":  # [{"from", "to"}]
            shown = [f"{_code(str(v['from']))} → {_code(str(v['to']))}" for v in values[:8]]
        elif key == "retyped":  # [{"column", "prod_type", "branch_type"}]
            shown = [f"{_code(str(v['column']))} ({_cell(v['prod_type'])} → {_cell(v['branch_type'])})"
                     for v in values[:8]]
        else:
            shown = [_code(str(v)) for v in values[:8]]
        more = f" {_more(len(values) - 8, '')}".rstrip() if len(values) > 8 else ""
        parts.append(f"{key}: {', '.join(shown)}{more}")
    return " · ".join(parts) or "—"


def _contract_text(contract: Mapping[str, Any]) -> str:
    """dbt's verdict on a contract change, in words."""
    if not contract.get("breaking"):
        return "contract changed (dbt: not a breaking change)"
    severity = "an error (versioned model)" if contract.get("severity") == "error" else "a warning"
    changes = "; ".join(str(c) for c in contract.get("breaking_changes") or [])
    return f"contract: dbt reports a breaking change as {severity}: {changes}"


def _impacted_cell(entry: Mapping[str, Any], cap: int) -> str:
    impacted = entry.get("impacted") or []
    if not impacted:
        return "nothing downstream"
    shown = []
    for item in impacted[:cap]:
        cols = item.get("columns") or []
        what = ", ".join(_code(str(col)) for col in cols[:6]) + (" …" if len(cols) > 6 else "")
        shown.append(_code(item["unique_id"]) + (f" ({what})" if what else ""))
    more = f", {_more(len(impacted) - cap, 'nodes')}" if len(impacted) > cap else ""
    return "<br>".join(shown) + more


def _impact(report: PrReport, cap: int) -> list[str]:
    """Each modified node's category, what changed in its columns and what that reaches
    downstream, then the column lineage behind it (folded)."""
    impact = report.get("impact")
    error = report.get("impact_error")
    if impact is None:
        return ["### Impact downstream (column level)", "", _cell(error)] if error else []
    lines = ["### Impact downstream (column level)", ""]
    if not impact:
        return lines + ["No modified model to compare with production."]
    counts = {cat: sum(1 for e in impact if e["category"] == cat) for cat in _CATEGORY_ORDER}
    lines.append(" · ".join(
        (f"**{counts[cat]:,} {_CATEGORY_TITLES[cat]}**" if cat == "breaking" and counts[cat] else
         f"{counts[cat]:,} {_CATEGORY_TITLES[cat]}")
        for cat in _CATEGORY_ORDER
    ))
    lines += ["", "| modified | category | columns | impacted downstream | why |", "|---|---|---|---|---|"]
    ordered = sorted(impact, key=lambda e: (_CATEGORY_ORDER.index(e["category"]) if e["category"] in
                                            _CATEGORY_ORDER else 9, e["unique_id"]))
    for entry in ordered[:cap]:
        reason = str(entry.get("reason") or "")
        contract = entry.get("contract")
        if contract:
            reason += " · " + _contract_text(contract)
        lines.append(
            f"| {_code(entry['unique_id'])} | {_CATEGORY_TITLES.get(entry['category'], _cell(entry['category']))} "
            f"| {_column_changes(entry.get('columns') or {})} | {_impacted_cell(entry, max(cap // 2, 3))} "
            f"| {_cell(reason)} |"
        )
    if len(ordered) > cap:
        lines.append(f"| {_more(len(ordered) - cap, 'modified nodes')} | | | | |")
    lineage = report.get("impact_lineage") or {}
    if lineage:
        rows = ["| impacted node | column | derives from changed |", "|---|---|---|"]
        pairs = [(uid, col, refs) for uid, cols in lineage.items() for col, refs in cols.items()]
        for uid, col, refs in pairs[: cap * 8]:
            shown = ", ".join(_code(r) for r in refs[:6]) + (" …" if len(refs) > 6 else "")
            rows.append(f"| {_code(uid)} | {_code(col)} | {shown} |")
        if len(pairs) > cap * 8:
            rows.append(f"| {_more(len(pairs) - cap * 8, 'columns')} | | |")
        lines += ["", *_fold(f"Column lineage of the impacted nodes ({len(pairs):,} columns)", rows)]
    notes = report.get("impact_notes") or []
    if notes:
        lines += ["", *_fold(f"{len(notes):,} node(s) whose lineage is unknown",
                             [f"- {_cell(n)}" for n in notes[:cap]])]
    return lines


def _diff(report: PrReport, chars: int) -> list[str]:
    if report["diff_markdown"] is None:
        return ["### Data diff", "", _cell(report["diff_error"])] if report["diff_error"] else []
    headline = report["diff_headline"] or ""
    body = report["diff_markdown"]
    lines = ["### Data diff vs production", "", f"**{_cell(headline)}**", ""]
    return lines + _fold("Per-model diff", [_clip(body, chars)])


def _deferred(report: PrReport, cap: int) -> list[str]:
    deferred = report["deferred"]
    if not deferred:
        return []
    table = ["| parent | production relation | read by |", "|---|---|---|"]
    for d in deferred[:cap]:
        relation = _code(d["prod_relation"]) if d["prod_relation"] else "**missing in production**"
        table.append(f"| {_code(d['unique_id'])} | {relation} | {_names(d['needed_by'], 5)} |")
    if len(deferred) > cap:
        table.append(f"| {_more(len(deferred) - cap, 'deferred parents')} | | |")
    missing = sum(d["prod_relation"] is None for d in deferred)
    note = f", {missing:,} missing in production" if missing else ""
    return ["### Deferred to production", ""] + _fold(
        f"{len(deferred):,} parent(s) read from production{note}", table
    )


# How much of each section (failures, why, graph, diff, deferred) each attempt keeps: the
# data diff and the deferred parents give way first, the lineage graph and the reasons last.
_SHRINK_STEPS: tuple[tuple[float, float, float, float, float], ...] = (
    (1, 1, 1, 1, 1),
    (1, 1, 1, 0.25, 0.5),
    (0.5, 1, 1, 0.1, 0.25),
    (0.5, 0.5, 1, 0.05, 0.1),
    (0.25, 0.5, 0.5, 0, 0.05),
    (0.1, 0.25, 0.25, 0, 0),
    (0, 0, 0, 0, 0),
)


def _sections(report: PrReport, scales: Sequence[float]) -> list[str]:
    """The report's sections, each with its item caps scaled (never below a useful floor)."""
    failures, why, graph, diff, deferred = scales

    def n(base: int, scale: float, floor: int) -> int:
        return max(int(base * scale), floor)

    sections = [
        _headline(report),
        _failures(report, n(20, failures, 1), n(2_000, failures, 200)),
        _impact(report, n(25, why, 4)),
        _why(report, n(25, why, 4)),
        _graph(report, n(120, graph, 20)),
        _diff(report, n(20_000, diff, 500)),
        _deferred(report, n(100, deferred, 5)),
    ]
    return ["\n".join(s).strip("\n") for s in sections if s]


def impact_headline(impact: Sequence[Mapping[str, Any]]) -> str:
    """One line: how many modified nodes fall in each category, and what breaking reaches."""
    if not impact:
        return "column-level impact: no modified model compared with production"
    counts = {cat: sum(1 for e in impact if e["category"] == cat) for cat in _CATEGORY_ORDER}
    reached = sorted({i["unique_id"] for e in impact if e["category"] == "breaking" for i in e.get("impacted") or []})
    text = "column-level impact: " + ", ".join(f"{n} {cat.replace('_', '-')}" for cat, n in counts.items() if n)
    return text + (f"; breaking changes reach {len(reached)} downstream node(s)" if reached else "")


def failure_markdown(branch: str, message: str) -> str:
    """The pull-request body of a run that failed before it had a report."""
    text = message.replace("```", "'''")
    return (
        f"❌ **Branch build failed**: `{_cell(branch)}`\n\n```\n{_clip(text, 20_000)}\n```\n\n"
        "The run stopped before building; fix what the message says and push again."
    )


def render_markdown(report: PrReport, *, limit: int = COMMENT_LIMIT) -> str:
    """The pull-request body: headline, failures first, why selected (grouped by reason),
    the lineage graph, the data diff, the deferred parents; at most ``limit`` characters.

    Sections shrink (the data diff and the deferred parents first) until the body fits; if
    even the smallest rendering does not, whole sections are left out from the end and the
    body says so."""
    for scales in _SHRINK_STEPS:
        sections = _sections(report, scales)
        text = "\n\n".join(sections) + "\n"
        if len(text) <= limit:
            return text
    note = ("\n\n… {n} section(s) left out at the comment limit; "
            "`defer-orch report RUN_ID --format json` has it all.\n")
    kept: list[str] = []
    for section in sections:
        candidate = "\n\n".join([*kept, section])
        if len(candidate) + len(note) + 4 <= limit:
            kept.append(section)
    if not kept:  # not even the headline fits: a hard cut is all that is left
        return sections[0][: max(limit - len(note), 0)] + note.format(n=len(sections) - 1)
    return "\n\n".join(kept) + note.format(n=len(sections) - len(kept))
