"""Code fingerprints of production's dbt nodes: what ``state:modified`` sees, per node, as
a stable hash of named parts.

dagster-dbt's code version is a hash of the raw SQL alone (Dagster #22566): a changed
macro, config, var or ephemeral parent leaves it unchanged, so Dagster calls a node fresh
that dbt would call modified. Here a node's code is every part dbt compares
(``branch/reasons.py`` holds dbt's rules as dict comparisons), each hashed on its own so
a change names the part that changed:

============== ==========================================================================
part           what
============== ==========================================================================
``body``       ``raw_code`` (models, snapshots, analyses)
``seed``       a seed's file checksum: its rows
``config``     the unrendered config keys dbt compares (``reasons.compared_config``)
``macros``     every macro the node uses, directly or through macros, with its SQL
``contract``   the enforced contract's checksum
``vars``       the values of the vars the node (or a macro it uses) reads by name
``sources``    the relations of the sources it reads (an identifier edited in YAML)
``ephemeral``  the fingerprints of its ephemeral parents (their code is compiled into it)
============== ==========================================================================

The same function fingerprints the published manifest (with the vars its build used) and
the head's, and gives every Dagster asset its code version, so "code changed" means one
thing for the decision (``state.py``) and for Dagster's stale status.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from defer_orchestration.branch import reasons

CODE_PARTS: tuple[str, ...] = ("body", "seed", "config", "macros", "contract", "vars", "sources", "ephemeral")
# The resource types production builds and fingerprints (tests follow their node).
FINGERPRINTED_TYPES = frozenset({"model", "seed", "snapshot"})
_MISSING = "<unset>"


@dataclass(frozen=True)
class NodeCode:
    """One node's code: a hash per part and one digest over them all."""

    parts: Mapping[str, str]
    digest: str

    def changed_parts(self, before: NodeCode | None) -> list[str]:
        """The parts that differ from ``before`` (every non-empty part for a new node)."""
        if before is None:
            return [part for part in CODE_PARTS if self.parts.get(part)]
        return [part for part in CODE_PARTS if self.parts.get(part, "") != before.parts.get(part, "")]


def _hash(value: Any) -> str:
    """A short stable hash of a JSON value (empty values hash to "": an absent part)."""
    if value in (None, "", [], {}):
        return ""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _digest(parts: Mapping[str, str]) -> str:
    text = json.dumps({k: parts[k] for k in CODE_PARTS if parts.get(k)}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def is_ephemeral(node: Mapping[str, Any]) -> bool:
    """An ephemeral model: compiled into its children, never built."""
    return node.get("resource_type") == "model" and (node.get("config") or {}).get("materialized") == "ephemeral"


def _own_parts(node: Mapping[str, Any], manifest: Mapping[str, Any], project_vars: Mapping[str, Any]) -> dict[str, str]:
    macros = manifest.get("macros") or {}
    sources = manifest.get("sources") or {}
    kind = node.get("resource_type")
    used = reasons.macro_closure(node, macros)
    names = sorted(reasons.var_names(node, used, macros))
    seen = reasons.effective_vars(project_vars, node.get("package_name"))
    parents = (node.get("depends_on") or {}).get("nodes") or []
    return {
        "body": _hash(node.get("raw_code")) if kind != "seed" else "",
        "seed": _hash((node.get("checksum") or {}).get("checksum")) if kind == "seed" else "",
        "config": _hash(reasons.compared_config(node)),
        "macros": _hash([[uid, (macros.get(uid) or {}).get("macro_sql")] for uid in sorted(used)]),
        "contract": _hash(reasons.contract_state(node)),
        "vars": _hash({name: seen.get(name, _MISSING) for name in names}),
        "sources": _hash(sorted(
            [str(sources[p].get("schema")), str(sources[p].get("identifier") or sources[p].get("name"))]
            for p in parents if p in sources
        )),
    }


def code_fingerprints(manifest: Mapping[str, Any], project_vars: Mapping[str, Any]) -> dict[str, NodeCode]:
    """unique_id -> code of every model, seed and snapshot of ``manifest``, read with
    ``project_vars`` (the project's ``vars:`` merged with ``--vars``: the manifest does
    not record them). Ephemeral models are included: their children fold them in."""
    nodes = manifest.get("nodes") or {}
    out: dict[str, NodeCode] = {}
    wanted = [uid for uid, node in nodes.items() if (node or {}).get("resource_type") in FINGERPRINTED_TYPES]
    for start in wanted:
        stack: list[tuple[str, bool]] = [(start, False)]
        while stack:  # iterative post-order: chains of ephemeral models need no recursion
            uid, expanded = stack.pop()
            if uid in out:
                continue
            node = nodes.get(uid) or {}
            ephemeral = [p for p in (node.get("depends_on") or {}).get("nodes") or []
                         if p in nodes and is_ephemeral(nodes[p])]
            if not expanded:
                stack.append((uid, True))
                stack.extend((p, False) for p in ephemeral if p not in out)
                continue
            parts = _own_parts(node, manifest, project_vars)
            parts["ephemeral"] = _hash(sorted([p, out[p].digest] for p in ephemeral if p in out))
            out[uid] = NodeCode(parts, _digest(parts))
    return out


def code_versions(manifest: Mapping[str, Any], project_vars: Mapping[str, Any]) -> dict[str, str]:
    """unique_id -> the code version Dagster shows for the node (its digest)."""
    return {uid: code.digest for uid, code in code_fingerprints(manifest, project_vars).items()}
