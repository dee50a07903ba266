"""Why ``state:modified+`` selected each node: dbt's own comparison, redone on the two
manifests as plain dict comparisons so that every selected node carries its reasons.

dbt answers *whether* a node is modified (``dbt/graph/selector_methods.py``,
``StateSelectorMethod`` and the ``same_*`` methods of ``dbt/contracts/graph/nodes.py``,
dbt-core 1.11); this module answers *why*, with the same rules:

==============  ===========================================================================
kind            when (detail)
==============  ===========================================================================
``new``         absent from the comparison manifest ([])
``body``        ``raw_code`` differs; a unit test's checksum differs ([original_file_path])
``seed``        a seed's file checksum differs: its rows changed ([original_file_path])
``config``      ``unrendered_config`` keys differ, as ``NodeConfig.same_contents`` compares
                them (``tags`` and ``group`` never count; ``database``/``schema``/``alias``
                count through ``same_database_representation``; a test only by its
                modifiers such as ``severity``); a source's quoting, freshness, external
                ([the keys])
``macro``       a macro the node uses, directly or through other macros, is new or its
                ``macro_sql`` differs ([macro unique_ids])
``contract``    ``ModelNode.same_contract``: enforcement switched, or the enforced contract's
                checksum differs ([``enforced``, ``column:<name>`` that changed,
                ``constraints``])
``var``         a var the node's code (or a macro it uses, or its unrendered config) reads
                by name has another value ([var names]); only when the caller passes both
                sides' vars, see *Limits*
``downstream``  not modified itself but descends from modified nodes ([their unique_ids])
``other``       anything else dbt compares (fqn, persisted descriptions, access, versions),
                or the explanation of why no reason was found ([what differs, in words])
==============  ===========================================================================

Limits (what dbt does not record, so no reason can say it):

- dbt's ``manifest.json`` records neither the vars a parse used nor which node reads
  which var. Var reasons come from the vars the caller passes (e.g. ``vars:`` of each
  side's ``dbt_project.yml`` merged with ``--vars``), matched against the literal
  ``var('name')`` calls in ``raw_code``, in the macros the node uses and in its unrendered
  config. A var read through a computed name or through a package's macro that the
  manifest does not list is missed. dbt itself does not select a node whose var changed
  (only the rendered text changes), so a ``var`` reason explains, it does not predict.
- ``env_var()`` values are not recorded at all (only ``DBT_ENV_CUSTOM_ENV_*`` in the
  metadata), so an environment change cannot be a reason.
- Rendered ``config`` differs between targets (schema, database), so it is only compared
  to explain a node with no other reason; dbt compares the unrendered config.
- dbt's ``state_modified_compare_more_unrendered_values`` flag changes how the parse fills
  ``unrendered_config``; both manifests should be parsed with the same flag (the project's).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict, cast

ReasonKind = Literal[
    "new", "body", "config", "macro", "contract", "seed", "var", "downstream", "other"
]

#: The kinds in the order a reader meets them (the order of :func:`group_by_kind`).
REASON_KINDS: tuple[ReasonKind, ...] = (
    "new", "body", "seed", "config", "macro", "contract", "var", "other", "downstream",
)

# Kinds that make a node modified in dbt's sense, so its descendants are "downstream":
# a var change is not one (dbt does not select on it), nor the no-reason explanation.
_MODIFYING: frozenset[str] = frozenset(
    {"new", "body", "seed", "config", "macro", "contract", "other"}
)

# NodeAndTestConfig fields declared ``CompareBehavior.Exclude``: never a config change.
_NOT_COMPARED_CONFIG = frozenset({"tags", "group", "alias", "schema", "database"})
# ``same_database_representation`` compares these unrendered keys instead.
_RELATION_KEYS = ("database", "schema", "alias")
# ``TestConfig.same_contents`` compares only these.
_TEST_MODIFIERS = frozenset({
    "severity", "where", "limit", "fail_calc", "warn_if", "error_if", "store_failures",
    "store_failures_as",
})
# Manifest sections that hold selectable resources, keyed by unique_id.
_SECTIONS = (
    "nodes", "sources", "unit_tests", "exposures", "metrics", "semantic_models",
    "saved_queries", "functions",
)
# Keys that differ between any two parses (or targets) and say nothing about the code.
_VOLATILE = frozenset({
    "created_at", "build_path", "compiled_path", "root_path", "relation_name", "database",
    "schema", "compiled", "compiled_code", "extra_ctes", "extra_ctes_injected", "deferred",
})
# ParsedNode subclasses: same_body / same_config / same_database_representation apply.
_PARSED_KINDS = frozenset({
    "model", "snapshot", "test", "analysis", "seed", "operation", "sql_operation", "function",
})
_VAR_CALL = re.compile(r"""\bvar\(\s*['"]([^'"]+)['"]""")


class Reason(TypedDict):
    """One reason a node was selected: ``{"kind": ..., "detail": [...]}`` (issue 22's JSON)."""

    kind: ReasonKind
    detail: list[str]


class SelectedNode(TypedDict):
    """One entry of the ``selected`` list of ``preview --json`` and ``report --json``."""

    unique_id: str
    reasons: list[Reason]


def _resource(manifest: Mapping[str, Any], unique_id: str) -> Mapping[str, Any] | None:
    for section in _SECTIONS:
        found = (manifest.get(section) or {}).get(unique_id)
        if found is not None:
            return cast(Mapping[str, Any], found)
    return None


def _differing_keys(
    new: Mapping[str, Any], old: Mapping[str, Any], keys: Iterable[str]
) -> list[str]:
    """Keys present on one side only or with unequal values (dbt's ``compare_key``)."""
    return sorted({k for k in keys if (k in new) != (k in old) or new.get(k) != old.get(k)})


def _is_generic_test(node: Mapping[str, Any]) -> bool:
    return node.get("resource_type") == "test" and bool(node.get("test_metadata"))


def _config_keys(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[str]:
    """unrendered_config keys dbt's ``same_config`` and ``same_database_representation`` flag."""
    mine = new.get("unrendered_config") or {}
    theirs = old.get("unrendered_config") or {}
    keys = set(mine) | set(theirs)
    if new.get("resource_type") == "test":
        compared = keys & _TEST_MODIFIERS
    else:
        compared = keys - _NOT_COMPARED_CONFIG
    changed = set(_differing_keys(mine, theirs, compared))
    if not _is_generic_test(new):  # GenericTestNode.same_contents skips the relation
        changed |= set(_differing_keys(mine, theirs, _RELATION_KEYS))
    return sorted(changed)


def _source_config_keys(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[str]:
    """``SourceDefinition.same_contents`` without the fqn: relation, config, quoting, freshness."""
    mine, theirs = new.get("unrendered_config") or {}, old.get("unrendered_config") or {}
    keys = set(_differing_keys(mine, theirs, set(mine) | set(theirs)))
    # Which of rendered or unrendered database/schema dbt compares depends on a flag the
    # manifest does not record; the unrendered values are the ones that mean a code change.
    for key in ("database", "schema"):
        if f"unrendered_{key}" in new or f"unrendered_{key}" in old:
            if new.get(f"unrendered_{key}") != old.get(f"unrendered_{key}"):
                keys.add(key)
        elif new.get(key) != old.get(key):
            keys.add(key)
    keys |= set(_differing_keys(new, old, ("identifier", "quoting", "freshness", "loaded_at_field",
                                           "external")))
    return sorted(keys)


def _contract_detail(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[str]:
    """What ``ModelNode.same_contract`` saw change, or [] when the contract is the same."""
    mine, theirs = new.get("contract") or {}, old.get("contract") or {}
    enforced, was_enforced = bool(mine.get("enforced")), bool(theirs.get("enforced"))
    if not enforced and not was_enforced:
        return []
    if enforced and was_enforced and mine.get("checksum") == theirs.get("checksum"):
        return []
    detail = ["enforced"] if enforced != was_enforced else []
    if enforced and was_enforced:
        columns, old_columns = new.get("columns") or {}, old.get("columns") or {}
        contract_fields = ("data_type", "constraints")
        detail += [
            f"column:{name}"
            for name in sorted(set(columns) | set(old_columns))
            if name not in columns or name not in old_columns
            or any((columns[name] or {}).get(f) != (old_columns[name] or {}).get(f) for f in contract_fields)
        ]
        if new.get("constraints") != old.get("constraints"):
            detail.append("constraints")
        if (new.get("config") or {}).get("materialized") != (old.get("config") or {}).get("materialized"):
            detail.append("materialized")
    return detail or ["checksum"]


def _persisted_descriptions(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[str]:
    """``same_persisted_description``: only descriptions that persist_docs writes count."""
    persist = (new.get("config") or {}).get("persist_docs") or {}
    out = []
    if persist.get("relation") and new.get("description") != old.get("description"):
        out.append("description (persisted to the warehouse)")
    if persist.get("columns"):
        mine = {k: (v or {}).get("description") for k, v in (new.get("columns") or {}).items()}
        theirs = {k: (v or {}).get("description") for k, v in (old.get("columns") or {}).items()}
        changed = _differing_keys(mine, theirs, set(mine) | set(theirs))
        if changed:
            out.append("column descriptions (persisted to the warehouse): " + ", ".join(changed))
    return out


def modified_macros(old_manifest: Mapping[str, Any], new_manifest: Mapping[str, Any]) -> set[str]:
    """Macros new in, or with other ``macro_sql`` than in, the comparison manifest
    (``StateSelectorMethod._macros_modified``; removed macros no node can still use)."""
    old = old_manifest.get("macros") or {}
    return {
        uid for uid, macro in (new_manifest.get("macros") or {}).items()
        if uid not in old or (macro or {}).get("macro_sql") != (old[uid] or {}).get("macro_sql")
    }


def _macro_closure(node: Mapping[str, Any], macros: Mapping[str, Any]) -> list[str]:
    """Every macro the node uses, directly or through ``depends_on.macros`` of macros."""
    seen: list[str] = []
    stack = list(reversed((node.get("depends_on") or {}).get("macros") or []))
    while stack:
        uid = stack.pop()
        if uid is None or uid in seen:
            continue
        seen.append(uid)
        stack.extend(reversed(((macros.get(uid) or {}).get("depends_on") or {}).get("macros") or []))
    return seen


def effective_vars(project_vars: Mapping[str, Any], package: str | None) -> dict[str, Any]:
    """The vars a node of ``package`` sees: global vars overlaid by ``vars[package]`` (as
    dbt's ``VarProvider.vars_for`` merges a project's ``vars:`` block)."""
    merged = dict(project_vars)
    scoped = project_vars.get(package or "")
    if isinstance(scoped, Mapping):
        merged.update(scoped)
    return merged


_MISSING = object()


def _strings(value: Any) -> list[str]:
    """Every string inside a JSON value (config values may be nested lists and dicts)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _var_names(node: Mapping[str, Any], macro_ids: Sequence[str], macros: Mapping[str, Any]) -> set[str]:
    texts = [str(node.get("raw_code") or ""), *_strings(node.get("unrendered_config") or {})]
    texts += [str((macros.get(uid) or {}).get("macro_sql") or "") for uid in macro_ids]
    return {name for text in texts for name in _VAR_CALL.findall(text)}


def _direct_reasons(
    unique_id: str,
    old_manifest: Mapping[str, Any],
    new_manifest: Mapping[str, Any],
    changed_macros: set[str],
    vars_pair: tuple[Mapping[str, Any], Mapping[str, Any]] | None,
) -> list[Reason]:
    """Reasons a node is modified by itself (its own code, config, macros, contract, vars)."""
    new = _resource(new_manifest, unique_id)
    if new is None:
        return []
    old = _resource(old_manifest, unique_id)
    if old is None:
        return [{"kind": "new", "detail": []}]
    kind = new.get("resource_type")
    path = str(new.get("original_file_path") or new.get("path") or unique_id)
    reasons: list[Reason] = []
    other: list[str] = []
    if kind == "seed":
        if new.get("checksum") != old.get("checksum"):
            reasons.append({"kind": "seed", "detail": [path]})
    elif kind == "unit_test":
        if new.get("checksum") != old.get("checksum"):
            reasons.append({"kind": "body", "detail": [path]})
    elif kind == "source":
        if keys := _source_config_keys(new, old):
            reasons.append({"kind": "config", "detail": keys})
    elif kind in _PARSED_KINDS:
        if not _is_generic_test(new) and new.get("raw_code") != old.get("raw_code"):
            reasons.append({"kind": "body", "detail": [path]})
        if kind == "function":
            other += [f"{key} changed" for key in _differing_keys(new, old, ("arguments", "returns"))]
    else:  # exposures, metrics, semantic models, saved queries: any non-volatile difference
        keys = _differing_keys(new, old, (set(new) | set(old)) - _VOLATILE)
        other += [f"{key} changed" for key in keys]
    if kind in _PARSED_KINDS:
        if keys := _config_keys(new, old):
            reasons.append({"kind": "config", "detail": keys})
    macros = new_manifest.get("macros") or {}
    used_macros = _macro_closure(new, macros)
    if hit := [uid for uid in used_macros if uid in changed_macros]:
        reasons.append({"kind": "macro", "detail": hit})
    if kind == "model" and old.get("resource_type") == "model":
        if detail := _contract_detail(new, old):
            reasons.append({"kind": "contract", "detail": detail})
    if kind != "unit_test" and not _is_generic_test(new):
        other += _persisted_descriptions(new, old)
    if new.get("fqn") is not None and new.get("fqn") != old.get("fqn") and (
        kind in _PARSED_KINDS or kind == "source"
    ):
        was, now = ".".join(map(str, old.get("fqn") or [])), ".".join(map(str, new["fqn"]))
        other.append(f"fqn {was} → {now}")
    if kind == "model":  # ModelNode.same_ref_representation
        for key in ("latest_version", "access", "deprecation_date"):
            if new.get(key) != old.get(key):
                other.append(f"{key} {old.get(key)} → {new.get(key)}")
    if other:
        reasons.append({"kind": "other", "detail": other})
    if vars_pair is not None:
        package = new.get("package_name")
        before = effective_vars(vars_pair[0], package)
        after = effective_vars(vars_pair[1], package)
        names = sorted(
            name for name in _var_names(new, used_macros, macros)
            if before.get(name, _MISSING) != after.get(name, _MISSING)
        )
        if names:
            reasons.append({"kind": "var", "detail": names})
    return reasons


def _parents(manifest: Mapping[str, Any], unique_id: str) -> list[str]:
    parent_map = manifest.get("parent_map")
    if parent_map is not None and unique_id in parent_map:
        return list(parent_map[unique_id] or [])
    node = _resource(manifest, unique_id) or {}
    return list((node.get("depends_on") or {}).get("nodes") or [])


def _ancestors(manifest: Mapping[str, Any], roots: Iterable[str]) -> list[str]:
    """Every node reachable upwards from ``roots`` (roots included), iteratively: a chain
    of a thousand models must not hit Python's recursion limit."""
    seen: dict[str, None] = {}
    stack = list(roots)
    while stack:
        uid = stack.pop()
        if uid in seen:
            continue
        seen[uid] = None
        stack.extend(p for p in _parents(manifest, uid) if p not in seen)
    return list(seen)


def _modified_ancestors(
    manifest: Mapping[str, Any], nodes: Sequence[str], modified: set[str]
) -> dict[str, frozenset[str]]:
    """node -> modified nodes among its strict ancestors, memoised over the DAG."""
    memo: dict[str, frozenset[str]] = {}
    for start in nodes:
        stack: list[tuple[str, bool]] = [(start, False)]
        while stack:
            uid, expanded = stack.pop()
            if uid in memo:
                continue
            parents = _parents(manifest, uid)
            if not expanded:
                stack.append((uid, True))
                stack.extend((p, False) for p in parents if p not in memo)
                continue
            found: set[str] = set()
            for p in parents:
                found |= memo.get(p, frozenset())
                if p in modified:
                    found.add(p)
            memo[uid] = frozenset(found)
    return memo


def _unexplained(unique_id: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> Reason:
    """The ``other`` reason of a node no comparison explains, saying what was looked at."""
    if new is None:
        return {"kind": "other", "detail": [f"{unique_id} is not in the branch manifest"]}
    text = ("no difference dbt compares (code, unrendered config, macros, contract, persisted docs) "
            "and no modified ancestor: selected by the selector itself or by a change dbt does not "
            "record (an env var, a var)")
    detail = [text]
    if old is not None:
        mine, theirs = new.get("config") or {}, old.get("config") or {}
        rendered = [k for k in _differing_keys(mine, theirs, set(mine) | set(theirs))
                    if k not in _RELATION_KEYS]
        if rendered:
            detail.append("rendered config differs (dbt compares the unrendered config): "
                          + ", ".join(rendered))
    return {"kind": "other", "detail": detail}


def selection_reasons(
    old_manifest: Mapping[str, Any],
    new_manifest: Mapping[str, Any],
    selected: Iterable[str],
    *,
    old_vars: Mapping[str, Any] | None = None,
    new_vars: Mapping[str, Any] | None = None,
) -> dict[str, list[Reason]]:
    """Why each selected node was selected, comparing the branch manifest (``new_manifest``)
    with the comparison state (``old_manifest``: production's or the merge-base's).

    ``old_vars``/``new_vars``: each side's project vars (``vars:`` of ``dbt_project.yml``
    and ``--vars``), which the manifests do not record; var reasons need both. Every
    selected node gets at least one reason: a node with nothing detectable gets ``other``
    saying so. Keys follow ``selected``'s order.
    """
    order = list(dict.fromkeys(selected))
    changed_macros = modified_macros(old_manifest, new_manifest)
    vars_pair = (old_vars, new_vars) if old_vars is not None and new_vars is not None else None
    scope = _ancestors(new_manifest, order)
    direct = {uid: _direct_reasons(uid, old_manifest, new_manifest, changed_macros, vars_pair)
              for uid in scope}
    modified = {uid for uid, rs in direct.items() if any(r["kind"] in _MODIFYING for r in rs)}
    upstream = _modified_ancestors(new_manifest, order, modified)
    out: dict[str, list[Reason]] = {}
    for uid in order:
        reasons = list(direct.get(uid, []))
        if uid not in modified and upstream.get(uid):
            reasons.append({"kind": "downstream", "detail": sorted(upstream[uid])})
        reasons.sort(key=lambda r: REASON_KINDS.index(r["kind"]))
        if not reasons:
            reasons.append(_unexplained(uid, _resource(old_manifest, uid), _resource(new_manifest, uid)))
        out[uid] = reasons
    return out


def selected_json(reasons: Mapping[str, Sequence[Reason]]) -> list[SelectedNode]:
    """The ``selected`` list of the JSON contract: ``[{"unique_id", "reasons"}]``."""
    return [
        {"unique_id": uid, "reasons": [{"kind": r["kind"], "detail": list(r["detail"])} for r in rs]}
        for uid, rs in reasons.items()
    ]


def group_by_kind(reasons: Mapping[str, Sequence[Reason]]) -> dict[ReasonKind, list[str]]:
    """kind -> the unique_ids with a reason of that kind, kinds in :data:`REASON_KINDS`
    order, absent kinds left out (a node with two reasons is under both)."""
    groups: dict[ReasonKind, list[str]] = {kind: [] for kind in REASON_KINDS}
    for uid, rs in reasons.items():
        for kind in dict.fromkeys(r["kind"] for r in rs):
            groups[kind].append(uid)
    return {kind: uids for kind, uids in groups.items() if uids}


def group_by_cause(reasons: Mapping[str, Sequence[Reason]]) -> dict[ReasonKind, dict[str, list[str]]]:
    """kind -> detail item (a config key, a macro id, a changed ancestor ...) -> the
    unique_ids it explains: "macro.shop.cents_to_dollars: 2 models". A reason without
    detail is filed under ``""``."""
    groups: dict[ReasonKind, dict[str, list[str]]] = {}
    for uid, rs in reasons.items():
        for r in rs:
            causes = groups.setdefault(r["kind"], {})
            for item in r["detail"] or [""]:
                bucket = causes.setdefault(item, [])
                if not bucket or bucket[-1] != uid:
                    bucket.append(uid)
    return {kind: groups[kind] for kind in REASON_KINDS if kind in groups}


# Public views of the comparisons above, for production's code fingerprints
# (``production/fingerprint.py``): the same rules, read one manifest at a time.

def macro_closure(node: Mapping[str, Any], macros: Mapping[str, Any]) -> list[str]:
    """Every macro ``node`` uses, directly or through other macros (dbt's ``depends_on``)."""
    return _macro_closure(node, macros)


def var_names(node: Mapping[str, Any], macro_ids: Sequence[str], macros: Mapping[str, Any]) -> set[str]:
    """The vars ``node`` reads by name: literal ``var('name')`` calls in its code, its
    unrendered config and the macros ``macro_ids`` (see *Limits*)."""
    return _var_names(node, macro_ids, macros)


def compared_config(node: Mapping[str, Any]) -> dict[str, Any]:
    """The unrendered config keys and values ``state:modified`` compares for ``node``
    (``_config_keys``' rule: tags and group never count, a test only by its modifiers,
    the relation keys unless it is a generic test)."""
    config = node.get("unrendered_config") or {}
    if node.get("resource_type") == "test":
        keys = set(config) & _TEST_MODIFIERS
    else:
        keys = set(config) - _NOT_COMPARED_CONFIG
    if not _is_generic_test(node):
        keys |= set(config) & set(_RELATION_KEYS)
    return {key: config[key] for key in sorted(keys)}


def contract_state(node: Mapping[str, Any]) -> dict[str, Any]:
    """What ``ModelNode.same_contract`` compares: whether the contract is enforced and,
    when it is, its checksum (empty when no contract is enforced)."""
    contract = node.get("contract") or {}
    if not contract.get("enforced"):
        return {}
    return {"enforced": True, "checksum": contract.get("checksum")}
