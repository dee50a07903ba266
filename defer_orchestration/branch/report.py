"""What a branch build did: the summary from its artifacts (selected, built, tested,
deferred, saved), the run's report, and the text a reviewer reads.

Pure functions over dbt's JSON artifacts, so the report is tested without running dbt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from defer_orchestration.branch.preflight import DeferredParent, deferred_parents
from defer_orchestration.dbt.artifacts import (
    FAILING_STATUSES,
    RELATION_TYPES,
    TEST_TYPES,
    NodeStatus,
    execution_times,
    failed_nodes,
    refused_writes,
    result_statuses,
)
from defer_orchestration.diff import report as diff_report
from defer_orchestration.diff.compare import ModelDiff
from defer_orchestration.impact import ImpactReport
from defer_orchestration.lib.manifest_store import PublishedManifest


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


def count_outcomes(statuses: Mapping[str, str], manifest: Mapping[str, Any]) -> dict[str, int]:
    """built / tests_passed / failed / skipped / warned from per-node statuses."""
    counts = {"built": 0, "tests_passed": 0, "failed": 0, "skipped": 0, "warned": 0}
    for unique_id, status in statuses.items():
        kind = _resource_type(unique_id, manifest)
        if status in FAILING_STATUSES:
            counts["failed"] += 1
        elif status == NodeStatus.SKIPPED:
            counts["skipped"] += 1
        elif status == NodeStatus.WARN:
            counts["warned"] += 1
        elif kind in RELATION_TYPES and status == NodeStatus.SUCCESS:
            counts["built"] += 1
        elif kind in TEST_TYPES and status == NodeStatus.PASS:
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


def why(reasons: Sequence[Mapping[str, Any]]) -> str:
    """One line for a person: ``config (materialized); downstream of model.shop.orders``."""
    parts = []
    for reason in reasons:
        detail = list(reason.get("detail") or [])
        kind = str(reason.get("kind"))
        label = "downstream of" if kind == "downstream" else kind
        shown = ", ".join(str(d) for d in detail[:3]) + (f" +{len(detail) - 3} more" if len(detail) > 3 else "")
        parts.append(f"{label} {shown}" if kind == "downstream" and shown else f"{label} ({shown})" if shown else label)
    return "; ".join(parts)


def to_markdown(
    summary: BranchBuildSummary, *, headline: str = "", reasons: Mapping[str, Sequence[Mapping[str, Any]]] | None = None
) -> str:
    """A markdown report: headline, outcome table, per-node statuses and why each was
    selected, deferred parents."""
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
        "| node | status | why selected |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{_md_escape(uid)}` | {status} | {_md_escape(why((reasons or {}).get(uid, [])))} |"
        for uid, status in summary.statuses.items()
    ]
    if not summary.statuses:
        lines.append("| (none: nothing selected) | | |")
    lines += ["", "**Deferred to production**", "", "| parent | production relation | read by |"]
    lines.append("|---|---|---|")
    for parent in summary.deferred:
        relation = parent.prod_relation or "**missing in production**"
        readers = ", ".join(f"`{n}`" for n in parent.needed_by)
        lines.append(f"| `{parent.unique_id}` | `{_md_escape(relation)}` | {readers} |")
    if not summary.deferred:
        lines.append("| (none) | | |")
    return "\n".join(lines)



@dataclass
class BranchBuildReport:
    """What one branch build did."""

    branch: str
    sha: str
    schema: str
    summary: BranchBuildSummary
    manifest: PublishedManifest | None
    state_note: str
    warnings: list[str] = field(default_factory=list)
    cloned: dict[str, int] = field(default_factory=dict)
    diffs: list[ModelDiff] | None = None  # None: diff off or nothing built
    diff_error: str | None = None
    partial_parse: str = "none"
    dbt_seconds: Mapping[str, float] = field(default_factory=dict)  # parse / ls / build
    wall_seconds: float = 0.0
    phases: Mapping[str, float] = field(default_factory=dict)  # exclusive seconds per phase
    dbt_commands: list[Mapping[str, object]] = field(default_factory=list)  # DbtRun.timing()
    dbt_output_tail: str = ""
    run_results: Mapping[str, Any] = field(default_factory=dict)
    # Tests the production manifest was published with failing (publish_on=models_built):
    # failing in the branch too, they are reported, not held against the branch.
    known_failures: frozenset[str] = frozenset()
    # What kept the branch's dbt code away from production (warehouse.isolation()).
    isolation: str = ""
    # Why each selected node was selected (branch/reasons.py), and why not when that failed.
    reasons: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    reasons_error: str | None = None
    # The branch's parse (lineage of the pull-request report); not shown, not stored.
    branch_manifest: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # Column-level impact of the modified models (branch/impact.py), and why not when it failed.
    impact: ImpactReport | None = None
    impact_error: str | None = None

    @property
    def ok(self) -> bool:
        """Every selected node built or passed (tests already failing in production aside)."""
        return not self.failed_nodes()

    def failed_nodes(self) -> list[str]:
        """unique_ids that failed the build, those already failing in production excepted."""
        return [uid for uid in failed_nodes(self.run_results) if uid not in self.known_failures]

    def failing_in_production_too(self) -> list[str]:
        """Tests that failed here and in the production build deferred to."""
        return [uid for uid in failed_nodes(self.run_results) if uid in self.known_failures]

    def headline(self) -> str:
        """Warnings, then one paragraph: what was built where, deferred how, and the impact."""
        counts = self.summary.counts
        also = self.failing_in_production_too()
        extra = [f"{len(also)} test(s) failed here as in production: {', '.join(also)}"] if also else []
        warnings = "".join(f"⚠️ **{w}**\n\n" for w in [*self.warnings, *extra])
        text = warnings + (
            f"**{self.branch}** @ `{self.sha[:12]}` → schema `{self.schema}`: "
            f"{counts.get('selected', 0)} selected, {counts.get('built', 0)} built, "
            f"{counts.get('tests_passed', 0)} tests passed, {counts.get('failed', 0)} failed, "
            f"{counts.get('deferred', 0)} parents deferred to prod; {self.state_note}."
        )
        if self.isolation:
            text += f"\n\n**Isolation:** {self.isolation}"
        if self.diffs is not None:
            text += f"\n\n**Impact vs prod:** {diff_report.headline(self.diffs)}"
        elif self.diff_error:
            text += f"\n\n**Impact vs prod:** {self.diff_error}"
        return text

    def failure_message(self) -> str:
        """Why the run failed, naming the failing nodes (runtime errors included)."""
        failed = self.failed_nodes()
        refused = [(uid, message) for uid, message in refused_writes(self.run_results) if uid in failed]
        text = (
            f"branch {self.branch!r} built with {len(failed)} failing nodes "
            f"({', '.join(failed[:10])}). Fix them and push again; production is untouched."
        )
        if refused:
            text += " The warehouse refused writes outside the branch's schemas: " + "; ".join(
                f"{uid}: {message}" for uid, message in refused
            )
        return text
