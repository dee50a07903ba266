"""The pull-request body: valid mermaid, failures first, reasons grouped, under GitHub's limit."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from defer_orchestration.branch.pr_report import (
    COMMENT_LIMIT,
    PrReport,
    build_pr_report,
    mermaid_id,
    mermaid_lineage,
    render_markdown,
    report_json,
)
from defer_orchestration.branch.reasons import selected_json, selection_reasons
from defer_orchestration.branch.report import BranchBuildReport, summarize

_ID = r"[A-Za-z_][A-Za-z0-9_]*"
_NODE = re.compile(rf'^\s*({_ID})\["([^"]*)"\]$')
_EDGE = re.compile(rf"^\s*({_ID}) --> ({_ID})$")
_CLASSDEF = re.compile(r"^\s*classDef (\w+) [\w#:,.\- ]+$")
_CLASS = re.compile(rf"^\s*class ({_ID}(?:,{_ID})*) (\w+)$")


def parse_mermaid(markdown: str) -> dict[str, Any]:
    """Check the ```mermaid block line by line: a flowchart header, then only node
    definitions, edges, classDefs and class assignments, every reference defined."""
    blocks = re.findall(r"```mermaid\n(.*?)\n```", markdown, flags=re.S)
    assert len(blocks) == 1, "exactly one mermaid block"
    header, *lines = blocks[0].split("\n")
    assert header == "flowchart LR"
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    class_defs: set[str] = set()
    classes: dict[str, str] = {}
    for line in lines:
        if m := _NODE.match(line):
            assert m[1] not in nodes, f"node defined twice: {line}"
            nodes[m[1]] = m[2]
        elif m := _EDGE.match(line):
            edges.append((m[1], m[2]))
        elif m := _CLASSDEF.match(line):
            class_defs.add(m[1])
        elif m := _CLASS.match(line):
            for node in m[1].split(","):
                classes[node] = m[2]
        else:
            raise AssertionError(f"not a mermaid node, edge, classDef or class line: {line!r}")
    assert all(a in nodes and b in nodes for a, b in edges), "edge to an undefined node"
    assert set(classes) <= set(nodes) and set(classes.values()) <= class_defs
    assert "end" not in {n.lower() for n in nodes}
    return {"nodes": nodes, "edges": edges, "classes": classes}


def _report(**overrides: Any) -> PrReport:
    base: PrReport = {
        "branch": "feature/x", "sha": "a" * 40, "schema": "branch_feature_x_1a2b", "ok": True,
        "counts": {"selected": 0, "built": 0, "tests_passed": 0, "failed": 0, "skipped": 0, "deferred": 0},
        "wall_seconds": 12.5, "branch_seconds": 4.0, "prod_seconds_not_rebuilt": 300.0,
        "dbt_seconds": {"parse": 2.0, "build": 8.0}, "manifest_version": "f" * 64,
        "manifest_git_sha": "b" * 40, "state_note": "deferred to production", "warnings": [],
        "failures": [], "failing_in_production_too": [], "selected": [], "deferred": [], "edges": [],
        "diff_headline": None, "diff_markdown": None, "diff_error": None,
    }
    return {**base, **overrides}  # type: ignore[typeddict-item]


def _model(uid: str, parents: list[str], raw: str = "select 1") -> dict[str, Any]:
    return {"unique_id": uid, "resource_type": uid.split(".")[0], "name": uid.split(".")[-1],
            "package_name": "shop", "original_file_path": f"models/{uid}.sql", "fqn": uid.split("."),
            "raw_code": raw, "config": {}, "unrendered_config": {},
            "depends_on": {"nodes": parents, "macros": []}, "checksum": {"checksum": raw}}


def _generated(n_models: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A root model feeding a tree of ``n_models`` models (each with a test), each model
    after the first three also reading one of 300 unchanged dimension models."""
    nodes: dict[str, Any] = {}
    for i in range(300):
        nodes[f"model.shop.dim_{i}"] = _model(f"model.shop.dim_{i}", [])
    for i in range(n_models):
        uid = f"model.shop.m_{i:04d}"
        parents = [f"model.shop.m_{(i - 1) // 3:04d}"] if i else []
        if i > 3:
            parents.append(f"model.shop.dim_{i % 300}")
        nodes[uid] = _model(uid, parents)
        nodes[f"test.shop.not_null_m_{i:04d}"] = _model(f"test.shop.not_null_m_{i:04d}", [uid])
    prod = {"nodes": nodes, "macros": {}, "sources": {},
            "parent_map": {uid: n["depends_on"]["nodes"] for uid, n in nodes.items()}}
    branch = copy.deepcopy(prod)
    branch["nodes"]["model.shop.m_0000"]["raw_code"] = "select 2"
    return prod, branch


def test_small_report_sections_and_graph() -> None:
    prod, branch = _generated(6)
    selected = [u for u in branch["nodes"] if ".m_" in u]
    reasons = selection_reasons(prod, branch, selected)
    deferred = [{"unique_id": "model.shop.dim_4", "prod_relation": "prod.dim_4",
                 "needed_by": ["model.shop.m_0004"]},
                {"unique_id": "model.shop.dim_5", "prod_relation": None, "needed_by": ["model.shop.m_0005"]}]
    report = _report(
        ok=False, selected=selected_json(reasons), deferred=deferred,
        edges=[["model.shop.m_0000", "model.shop.m_0001"], ["model.shop.m_0001", "model.shop.m_0004"],
               ["model.shop.dim_4", "model.shop.m_0004"], ["model.shop.dim_5", "model.shop.m_0005"],
               ["model.shop.m_0001", "model.shop.m_0005"]],
        failures=[{"unique_id": "model.shop.m_0005", "status": "error",
                   "message": "Binder Error: column ```x``` not found"}],
        diff_headline="1 model changed", diff_markdown="| model | status |\n|---|---|\n| m | changed |",
    )
    text = render_markdown(report)
    order = [text.index(h) for h in ("Branch build failed", "### ❌ Failures", "### Why selected",
                                     "### Lineage", "### Data diff", "### Deferred to production")]
    assert order == sorted(order)
    assert "**Code changed** (1 node)" in text and "downstream of `model.shop.m_0000`" in text
    assert "**missing in production**" in text and "Binder Error" in text
    graph = parse_mermaid(text)
    classes = graph["classes"]
    assert classes[mermaid_id("model.shop.m_0000", {})] == "changed"
    assert classes[mermaid_id("model.shop.m_0004", {})] == "downstream"
    assert classes[mermaid_id("model.shop.dim_4", {})] == "deferred"
    assert not any("test" in label for label in graph["nodes"].values())  # tests left out
    assert len(graph["edges"]) == 5


def test_mermaid_ids_and_labels_are_escaped() -> None:
    taken: dict[str, str] = {}
    a, b = mermaid_id("model.p.b-c", taken), mermaid_id("model.p.b_c", taken)
    assert a != b and re.fullmatch(r"\w+", a) and re.fullmatch(r"\w+", b)
    assert mermaid_id("model.p.b-c", taken) == a  # stable for the same node
    odd = ['model.p.say "hi" <b>', "model.p.end", "seed.p.x&y"]
    report = _report(selected=[{"unique_id": u, "reasons": [{"kind": "new", "detail": []}]} for u in odd],
                     edges=[[odd[0], odd[1]], [odd[2], odd[1]]])
    graph = parse_mermaid(render_markdown(report))
    assert len(graph["nodes"]) == 3 and len(graph["edges"]) == 2
    assert "#quot;hi#quot; #lt;b#gt;" in " ".join(graph["nodes"].values())


def test_thousand_models_with_a_root_change_fit_in_a_comment() -> None:
    prod, branch = _generated(1000)
    selected = [u for u in branch["nodes"] if ".m_" in u]
    reasons = selection_reasons(prod, branch, selected)
    kinds = [r["kind"] for u in selected for r in reasons[u]]
    assert kinds.count("body") == 1 and kinds.count("downstream") == len(selected) - 1
    deferred = [{"unique_id": f"model.shop.dim_{i}", "prod_relation": f"prod.dim_{i}",
                 "needed_by": [f"model.shop.m_{j:04d}" for j in range(4, 1000) if j % 300 == i]}
                for i in range(300)]
    nodes = [*selected, *(d["unique_id"] for d in deferred)]
    edges = [[p, u] for u in nodes for p in branch["parent_map"].get(u, []) if p in set(nodes)]
    failures = [{"unique_id": f"model.shop.m_{i:04d}", "status": "error", "message": "boom " * 2000}
                for i in range(40)]
    report = _report(ok=False, selected=selected_json(reasons), deferred=deferred, edges=edges,
                     failures=failures, diff_headline="999 models changed",
                     diff_markdown="\n".join(f"| m_{i} | changed | {i} |" for i in range(5000)))
    text = render_markdown(report)
    assert len(text) <= COMMENT_LIMIT
    graph = parse_mermaid(text)
    assert 0 < len(graph["nodes"]) < 1300
    assert re.search(r"Graph capped at [\d,]+ nodes: … and [\d,]+ more nodes not drawn", text)
    assert re.search(r"… and [\d,]+ more failures", text)
    assert re.search(r"\| … and [\d,]+ more nodes \| \|", text)  # the folded reasons table
    assert re.search(r"… and [\d,]+ more deferred parents", text)
    assert "more characters cut" in text
    assert text.index("### ❌ Failures") < text.index("### Why selected")
    # The changed root is always drawn, first.
    assert next(iter(graph["nodes"])) == mermaid_id("model.shop.m_0000", {})
    # Even a tiny limit gives a body that fits and says where the rest is.
    shrunk = render_markdown(report, limit=15_000)
    assert len(shrunk) <= 15_000 and parse_mermaid(shrunk)["nodes"]
    small = render_markdown(report, limit=3_000)
    assert len(small) <= 3_000 and small.rstrip().endswith("has it all.") and "### ❌ Failures" in small


def test_mermaid_lineage_reports_the_cut() -> None:
    selected = [{"unique_id": f"model.p.m{i}", "reasons": [{"kind": "new", "detail": []}]} for i in range(10)]
    edges = [[f"model.p.m{i}", f"model.p.m{j}"] for i in range(10) for j in range(i + 1, 10)]
    graph, cut, edges_cut = mermaid_lineage(_report(selected=selected, edges=edges), max_nodes=4,
                                            max_edges=5)
    assert cut == 6 and graph.count('["') == 4 and graph.count("-->") == 5 and edges_cut == 1


def test_build_pr_report_from_a_branch_build_and_json_contract() -> None:
    prod, branch = _generated(5)
    selected = ["model.shop.m_0000", "model.shop.m_0001", "model.shop.m_0004", "test.shop.not_null_m_0004"]
    run_results = {"results": [
        {"unique_id": "model.shop.m_0000", "status": "success", "execution_time": 1.0},
        {"unique_id": "model.shop.m_0001", "status": "success", "execution_time": 1.0},
        {"unique_id": "model.shop.m_0004", "status": "error", "execution_time": 0.5,
         "message": "Catalog Error: table dim_4 does not exist"},
        {"unique_id": "test.shop.not_null_m_0004", "status": "skipped", "execution_time": 0.0},
    ]}
    prod_run_results = {"results": [{"unique_id": u, "status": "success", "execution_time": 2.0}
                                    for u in prod["nodes"] if u.startswith("model.")]}
    summary = summarize(selected=selected, branch_manifest=branch, branch_run_results=run_results,
                        prod_manifest=prod, prod_run_results=prod_run_results)
    build = BranchBuildReport(branch="feature/x", sha="c" * 40, schema="branch_x", summary=summary,
                              manifest=None, state_note="compared with main", run_results=run_results)
    reasons = selection_reasons(prod, branch, selected)
    report = build_pr_report(build, reasons=reasons, branch_manifest=branch)
    assert report["ok"] is False
    assert report["failures"] == [{"unique_id": "model.shop.m_0004", "status": "error",
                                   "message": "Catalog Error: table dim_4 does not exist"}]
    assert [d["unique_id"] for d in report["deferred"]] == ["model.shop.dim_4"]
    assert ["model.shop.dim_4", "model.shop.m_0004"] in report["edges"]
    assert ["model.shop.m_0000", "model.shop.m_0001"] in report["edges"]
    document = json.loads(json.dumps(report_json(report)))
    assert document["schema_version"] == 1
    by_id = {e["unique_id"]: e["reasons"] for e in document["selected"]}
    assert by_id["model.shop.m_0000"] == [{"kind": "body", "detail": ["models/model.shop.m_0000.sql"]}]
    assert by_id["test.shop.not_null_m_0004"] == [{"kind": "downstream", "detail": ["model.shop.m_0000"]}]
    text = render_markdown(report)
    assert "Catalog Error" in text
    parse_mermaid(text)


def test_impact_section_and_graph_by_category() -> None:
    selected = [
        {"unique_id": "model.p.stg", "reasons": [{"kind": "body", "detail": []}]},
        {"unique_id": "model.p.mart", "reasons": [{"kind": "downstream", "detail": ["model.p.stg"]}]},
        {"unique_id": "model.p.other", "reasons": [{"kind": "downstream", "detail": ["model.p.stg"]}]},
        {"unique_id": "model.p.renamed", "reasons": [{"kind": "body", "detail": []}]},
    ]
    impact = [
        {"unique_id": "model.p.stg", "category": "partial", "reason": "changes email",
         "columns": {"added": [], "removed": [], "renamed": [], "retyped": [], "changed": ["email"]},
         "impacted": [{"unique_id": "model.p.mart", "columns": ["email"]},
                      {"unique_id": "exposure.p.dashboard", "columns": []}]},
        {"unique_id": "model.p.renamed", "category": "breaking", "reason": "renames a read column",
         "columns": {"added": [], "removed": [], "renamed": [{"from": "a", "to": "b"}],
                     "retyped": [{"column": "c", "prod_type": "INTEGER", "branch_type": "VARCHAR"}],
                     "changed": []},
         "impacted": [], "contract": {"changed": True, "breaking": True, "severity": "warning",
                                      "breaking_changes": ["column c: data_type INTEGER -> VARCHAR"]}},
    ]
    report = _report(selected=selected, edges=[["model.p.stg", "model.p.mart"], ["model.p.stg", "model.p.other"]],
                     impact=impact, impact_lineage={"model.p.mart": {"email": ["model.p.stg.email"]}},
                     impact_notes=[], impact_error=None)
    text = render_markdown(report)
    assert text.index("### Impact downstream") < text.index("### Why selected")
    assert "**1 🔴 breaking** · 1 🟠 partial · 0 ⚪ unknown · 0 🟢 non-breaking" in text
    assert "`model.p.mart` (`email`)" in text and "`exposure.p.dashboard`" in text
    assert "renamed: `a` → `b` · retyped: `c` (INTEGER → VARCHAR)" in text
    assert "contract: dbt reports a breaking change as a warning" in text
    assert "| `model.p.mart` | `email` | `model.p.stg.email` |" in text
    graph = parse_mermaid(text)
    classes, labels = graph["classes"], graph["nodes"]
    assert classes[mermaid_id("model.p.stg", {})] == "partial"
    assert labels[mermaid_id("model.p.stg", {})] == "stg (model) · partial"
    assert classes[mermaid_id("model.p.mart", {})] == "impacted"
    assert classes[mermaid_id("model.p.other", {})] == "downstream"  # built, not reached
    assert classes[mermaid_id("model.p.renamed", {})] == "breaking"
    assert classes[mermaid_id("exposure.p.dashboard", {})] == "impacted"
    # An old report (no impact keys) and a failed analysis still render.
    assert "Impact downstream" not in render_markdown(_report(selected=selected))
    failed = render_markdown(_report(impact=None, impact_error="column-level impact could not be computed: X"))
    assert "could not be computed" in failed
