"""The data diff as a reviewer reads it: a one-line headline, a markdown report, and
numbers per model for the UI's plots."""

from __future__ import annotations

from collections.abc import Sequence

from defer_orchestration.diff.compare import KINDS, STATUSES, ModelDiff


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _summary(d: ModelDiff) -> str:
    """``orders +12 rows, 2 columns added, 3 rows changed``."""
    bits = [f"{d.row_delta:+,} rows"] if d.row_delta else []
    if not d.row_delta and (d.only_in_prod or d.only_in_branch):
        bits.append(f"{d.only_in_prod:,} keys removed, {d.only_in_branch:,} added")
    for n, what in ((len(d.columns_added), "added"), (len(d.columns_removed), "removed"),
                    (len(d.columns_type_changed), "changed type")):
        bits += [f"{_plural(n, 'column')} {what}"] if n else []
    bits += [f"{_plural(d.changed, 'row')} changed"] if d.changed else []
    bits += ["values not compared"] if d.key_diff_skipped_reason else []
    return " ".join([d.name, ", ".join(bits)]).strip()


def headline(diffs: Sequence[ModelDiff], *, max_named: int = 5) -> str:
    """One line: ``2 models changed: orders +12 rows, ...; 1 new model; ...; 5 unchanged``."""
    by: dict[str, list[ModelDiff]] = {status: [] for status in STATUSES}
    for d in diffs:
        by.setdefault(d.status, []).append(d)
    changed, errors = by["changed"], by["error"]
    named = ", ".join(_summary(d) for d in changed[:max_named])
    more = f", and {len(changed) - max_named} more" if len(changed) > max_named else ""
    partial = len(by["no_key"]) + len(by["key_diff_skipped"])
    failed = ", ".join(d.name for d in errors[:max_named]) + ", ..." * (len(errors) > max_named)
    parts = [
        f"{_plural(len(changed), 'model')} changed: {named}{more}" if changed else "",
        _plural(len(by["new"]), "new model") if by["new"] else "",
        f"{partial:,} same row count and schema (values not compared)" if partial else "",
        f"{_plural(len(errors), 'model')} not diffed ({failed})" if errors else "",
        f"{len(by['unchanged']):,} unchanged" if by["unchanged"] else "",
    ]
    return "; ".join(p for p in parts if p) or "data diff: no models to compare"


def _cell(value: object) -> str:
    """Markdown-table-safe text; None is an em dash."""
    if value is None:
        return "—"
    text = f"{value:,}" if isinstance(value, int) else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(value: str, limit: int = 60) -> str:
    text = value if len(value) <= limit else value[: limit - 1] + "…"
    return "`" + _cell(text).replace("`", "'") + "`"


def _details(d: ModelDiff) -> list[str]:
    """Markdown bullets for one model: messages, schema changes, column counts, samples."""
    lines = []
    if d.message:
        lines.append(f"- {'error' if d.status == 'error' else 'note'}: {_cell(d.message)}")
    if d.key_diff_skipped_reason:
        lines.append(f"- key-level diff skipped: {_cell(d.key_diff_skipped_reason)}")
    for cols, what in ((d.columns_added, "added"), (d.columns_removed, "removed")):
        if cols:
            lines.append(f"- columns {what}: " + ", ".join(map(_code, cols)))
    if d.columns_type_changed:
        types = [f"{_code(t.column)} {_cell(t.prod_type)} → {_cell(t.branch_type)}"
                 for t in d.columns_type_changed]
        lines.append("- columns with a new type: " + ", ".join(types))
    if d.changed_columns:
        counts = [f"{_code(c)} {n:,}" for c, n in d.changed_columns.items()]
        lines.append("- changed values per column: " + ", ".join(counts))
    for kind in KINDS:
        if sample := d.samples.get(kind):
            head = f"- {kind.replace('_', ' ')} ({getattr(d, kind):,}), first keys: "
            lines.append(head + ", ".join(map(_code, sample)))
    key = f" (key {_code(d.key)})" if d.key else ""
    return [f"**{_cell(d.name)}**{key}", *lines] if lines else []


def to_markdown(diffs: Sequence[ModelDiff]) -> str:
    """The headline, a table with a row per model, then details of the models with findings."""
    out = [f"**Data diff:** {_cell(headline(diffs))}"]
    if diffs:
        out += [
            "",
            "| model | status | prod rows | branch rows | delta | cols +/-/~ | only prod "
            "| only branch | changed | unchanged |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
    for d in diffs:
        delta = None if d.row_delta is None else f"{d.row_delta:+,}"
        cols = [d.columns_added, d.columns_removed, d.columns_type_changed]
        schema = None if d.prod_rows is None else "/".join(str(len(c)) for c in cols)
        cells = [d.name, d.status, d.prod_rows, d.branch_rows, delta, schema]
        cells += [d.only_in_prod, d.only_in_branch, d.changed, d.unchanged]
        out.append("| " + " | ".join(map(_cell, cells)) + " |")
    for d in diffs:
        out += ["", *details] if (details := _details(d)) else []
    return "\n".join(out)


def to_metadata_numbers(diffs: Sequence[ModelDiff]) -> dict[str, float | int]:
    """``diff/models_<status>`` counts and ``diff/<model>/<measure>`` numbers (the unique_id
    when two models share a name); measures a model did not compute are left out."""
    names = [d.name for d in diffs]
    numbers: dict[str, float | int] = {
        f"diff/models_{status}": sum(d.status == status for d in diffs) for status in STATUSES
    }
    for d in diffs:
        label = d.name if names.count(d.name) == 1 else d.unique_id
        compared = d.prod_rows is not None  # the schema was compared too
        measures: dict[str, float | int | None] = {
            "prod_rows": d.prod_rows, "branch_rows": d.branch_rows, "row_delta": d.row_delta,
            "only_in_prod": d.only_in_prod, "only_in_branch": d.only_in_branch,
            "changed_rows": d.changed, "unchanged_rows": d.unchanged, "seconds": d.seconds,
            "columns_added": len(d.columns_added) if compared else None,
            "columns_removed": len(d.columns_removed) if compared else None,
            "columns_type_changed": len(d.columns_type_changed) if compared else None,
        }
        numbers |= {f"diff/{label}/{k}": v for k, v in measures.items() if v is not None}
    return numbers
