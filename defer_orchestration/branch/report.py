"""What a branch build did, from its artifacts: selected, built, tested, deferred, saved.

Pure functions over dbt's JSON artifacts, so the report is tested without running dbt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from defer_orchestration.dbt.artifacts import execution_times, relation_name, result_statuses

BUILT_TYPES = frozenset({"model", "seed", "snapshot"})
TEST_TYPES = frozenset({"test", "unit_test"})


@dataclass(frozen=True)
class DeferredParent:
    """An unselected parent a branch node reads from production instead of rebuilding it."""

    unique_id: str
    prod_relation: str | None  # None: production has no such relation
    needed_by: tuple[str, ...]


@dataclass(frozen=True)
class BranchBuildSummary:
    """The numbers and lists a reviewer wants from one branch build."""

    selected: tuple[str, ...]
    statuses: Mapping[str, str]
    deferred: tuple[DeferredParent, ...]
    branch_seconds: float
    prod_seconds_not_rebuilt: float
    prod_seconds_total: float
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No node errored or failed."""
        return self.counts.get("failed", 0) == 0


def _resource_type(unique_id: str, manifest: Mapping[str, Any]) -> str:
    node = (manifest.get("nodes") or {}).get(unique_id) or (manifest.get("unit_tests") or {}).get(
        unique_id
    )
    if node and node.get("resource_type"):
        return str(node["resource_type"])
    return unique_id.split(".", 1)[0]


def _is_ephemeral(node: Mapping[str, Any]) -> bool:
    return (node.get("config") or {}).get("materialized") == "ephemeral"


def deferred_parents(
    selected: Iterable[str],
    branch_manifest: Mapping[str, Any],
    prod_manifest: Mapping[str, Any],
) -> list[DeferredParent]:
    """Unselected, non-ephemeral parents of selected nodes, with their production relations.

    An ephemeral parent is compiled into its children, so *its* parents are what the
    branch actually reads; sources are read where they are and are not deferred.
    """
    selected_set = set(selected)
    nodes = branch_manifest.get("nodes") or {}
    unit_tests = branch_manifest.get("unit_tests") or {}
    prod_nodes = prod_manifest.get("nodes") or {}
    needed_by: dict[str, set[str]] = {}

    def visit(child: str, parent: str, seen: set[str]) -> None:
        if parent in seen or parent in selected_set or not parent.startswith(
            ("model.", "seed.", "snapshot.")
        ):
            return
        seen.add(parent)
        node = nodes.get(parent) or {}
        if _is_ephemeral(node):
            for grandparent in (node.get("depends_on") or {}).get("nodes") or []:
                visit(child, grandparent, seen)
            return
        needed_by.setdefault(parent, set()).add(child)

    for unique_id in sorted(selected_set):
        node = nodes.get(unique_id) or unit_tests.get(unique_id) or {}
        if node.get("resource_type") == "unit_test":
            continue  # unit tests run on fixtures, not on warehouse relations
        for parent in (node.get("depends_on") or {}).get("nodes") or []:
            visit(unique_id, parent, set())
    return [
        DeferredParent(
            unique_id=uid,
            prod_relation=relation_name(prod_nodes[uid]) if uid in prod_nodes else None,
            needed_by=tuple(sorted(children)),
        )
        for uid, children in sorted(needed_by.items())
    ]


def count_outcomes(statuses: Mapping[str, str], manifest: Mapping[str, Any]) -> dict[str, int]:
    """built / tests_passed / failed / skipped / warned from per-node statuses."""
    counts = {"built": 0, "tests_passed": 0, "failed": 0, "skipped": 0, "warned": 0}
    for unique_id, status in statuses.items():
        kind = _resource_type(unique_id, manifest)
        if status in {"error", "fail", "runtime error"}:
            counts["failed"] += 1
        elif status == "skipped":
            counts["skipped"] += 1
        elif status == "warn":
            counts["warned"] += 1
        elif kind in BUILT_TYPES and status == "success":
            counts["built"] += 1
        elif kind in TEST_TYPES and status == "pass":
            counts["tests_passed"] += 1
    return counts


def summarize(
    *,
    selected: Sequence[str],
    branch_manifest: Mapping[str, Any],
    branch_run_results: Mapping[str, Any] | None,
    prod_manifest: Mapping[str, Any],
    prod_run_results: Mapping[str, Any],
) -> BranchBuildSummary:
    """Summarise one branch build against the production state it deferred to."""
    statuses = result_statuses(branch_run_results or {})
    branch_times = execution_times(branch_run_results or {})
    prod_times = execution_times(prod_run_results)
    rebuilt = set(statuses)
    counts = count_outcomes(statuses, branch_manifest)
    counts["selected"] = len(selected)
    deferred = tuple(deferred_parents(selected, branch_manifest, prod_manifest))
    counts["deferred"] = len(deferred)
    return BranchBuildSummary(
        selected=tuple(sorted(selected)),
        statuses=dict(sorted(statuses.items())),
        deferred=deferred,
        branch_seconds=round(float(sum(branch_times.values())), 3),
        prod_seconds_not_rebuilt=round(
            float(sum(t for uid, t in prod_times.items() if uid not in rebuilt)), 3
        ),
        prod_seconds_total=round(float(sum(prod_times.values())), 3),
        counts=counts,
    )


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(summary: BranchBuildSummary, *, headline: str = "") -> str:
    """A markdown report: headline, outcome table, per-node statuses, deferred parents."""
    c = summary.counts
    lines = [headline] if headline else []
    lines += [
        "| selected | built | tests passed | failed | skipped | deferred parents | "
        "branch dbt s | prod s not rebuilt |",
        "|---|---|---|---|---|---|---|---|",
        f"| {c.get('selected', 0)} | {c.get('built', 0)} | {c.get('tests_passed', 0)} | "
        f"{c.get('failed', 0)} | {c.get('skipped', 0)} | {c.get('deferred', 0)} | "
        f"{summary.branch_seconds:.2f} | {summary.prod_seconds_not_rebuilt:.2f} |",
        "",
        "**Nodes run in the branch**",
        "",
        "| node | status |",
        "|---|---|",
    ]
    lines += [f"| `{_md_escape(uid)}` | {status} |" for uid, status in summary.statuses.items()]
    if not summary.statuses:
        lines.append("| (none: nothing selected) | |")
    lines += ["", "**Deferred to production**", "", "| parent | production relation | read by |"]
    lines.append("|---|---|---|")
    for parent in summary.deferred:
        relation = parent.prod_relation or "**missing in production**"
        readers = ", ".join(f"`{n}`" for n in parent.needed_by)
        lines.append(f"| `{parent.unique_id}` | `{_md_escape(relation)}` | {readers} |")
    if not summary.deferred:
        lines.append("| (none) | | |")
    return "\n".join(lines)
