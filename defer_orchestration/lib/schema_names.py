"""Branch name -> warehouse schema name, SQL quoting, and the guard every drop goes through.

A branch schema is ``br_<slug>_<hash>``: ``<slug>`` is a readable, truncated, ASCII
version of the branch name (possibly empty, then the name is ``br_<hash>``) and
``<hash>`` is the first 10 hex chars of the sha256 of the *exact* branch name, so
``feature/A``, ``feature-a`` and ``Feature/a`` get different schemas although their
slugs agree. The result only ever contains ``[a-z0-9_]`` and is at most 63 chars
(the PostgreSQL identifier limit, so the same names would work on other warehouses).

A developer's own schema (``defer-orch dev build``) is the same function with the
prefix ``dev_``: ``dev_<user slug>_<hash>``. :data:`SCHEMA_PREFIXES` ("br_", "dev_") is
the single notion of "a schema this system creates": every check below accepts either
prefix unless told one.

Teardown drops schemas; :func:`guard_branch_schema` is the single check between a
computed name and a ``drop schema``. It refuses protected schemas and anything that
does not have exactly the shape :func:`branch_schema_name` produces.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

from defer_orchestration.lib.errors import BranchNameError, ProtectedSchemaError

BRANCH_SCHEMA_PREFIX = "br_"
DEV_SCHEMA_PREFIX = "dev_"
# The prefixes of the schemas this system creates (branch CI, developers' builds).
SCHEMA_PREFIXES: tuple[str, ...] = (BRANCH_SCHEMA_PREFIX, DEV_SCHEMA_PREFIX)
PROTECTED_SCHEMAS: frozenset[str] = frozenset(
    {
        "prod",
        "raw",
        "main",
        "information_schema",
        "pg_catalog",
        "temp",
        "system",
        "memory",
        "defer_orchestration",
    }
)
MAX_SCHEMA_LENGTH = 63
MAX_BRANCH_NAME_LENGTH = 1024
HASH_LENGTH = 10

_PREFIX_SHAPE = re.compile(r"[a-z][a-z0-9_]*")
_NOT_SLUG_CHAR = re.compile(r"[^a-z0-9]+")
_SLUG = r"[a-z0-9]+(?:_[a-z0-9]+)*"


def _check_prefix(prefix: str) -> None:
    """Reject prefixes that would let generated names leave ``[a-z0-9_]`` or 63 chars."""
    if not _PREFIX_SHAPE.fullmatch(prefix) or len(prefix) + HASH_LENGTH > MAX_SCHEMA_LENGTH:
        raise ValueError(
            f"invalid branch schema prefix {prefix!r}: it must start with a lower-case letter, "
            f"contain only [a-z0-9_] and be at most {MAX_SCHEMA_LENGTH - HASH_LENGTH} chars; "
            f"use the default {BRANCH_SCHEMA_PREFIX!r}."
        )


def _validate_branch_name(branch: str) -> None:
    """Raise BranchNameError for names no git branch can have (and that we cannot hash)."""
    if not branch.strip():
        raise BranchNameError(
            f"branch name {branch!r} is empty or only whitespace; pass the name of an "
            "existing git branch."
        )
    if len(branch) > MAX_BRANCH_NAME_LENGTH:
        raise BranchNameError(
            f"branch name is {len(branch)} chars long (starts {branch[:40]!r}); at most "
            f"{MAX_BRANCH_NAME_LENGTH} are supported. Rename the branch to something shorter."
        )
    for char in branch:
        category = unicodedata.category(char)
        if category == "Cc":
            raise BranchNameError(
                f"branch name {branch!r} contains the control character {char!r}; git branch "
                "names cannot contain control characters (NUL, newline, tab...). Check where "
                "the name came from and pass the branch name exactly as git lists it."
            )
        if category == "Cs":
            raise BranchNameError(
                f"branch name {branch!r} is not valid UTF-8 (it contains the lone surrogate "
                f"{char!r}); rename the branch to a UTF-8 name."
            )


def branch_slug(branch: str) -> str:
    """The readable part of a schema name: ASCII-folded, lower-case, ``_``-separated."""
    folded = unicodedata.normalize("NFKD", branch).encode("ascii", "ignore").decode("ascii")
    return _NOT_SLUG_CHAR.sub("_", folded.lower()).strip("_")


def branch_hash(branch: str) -> str:
    """First 10 hex chars of the sha256 of the exact UTF-8 branch name (makes names injective)."""
    return hashlib.sha256(branch.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def branch_schema_name(branch: str, *, prefix: str = BRANCH_SCHEMA_PREFIX) -> str:
    """The schema a branch builds into: ``<prefix><slug>_<hash>`` (empty slug: no ``_``)."""
    _check_prefix(prefix)
    _validate_branch_name(branch)
    digest = branch_hash(branch)
    room = MAX_SCHEMA_LENGTH - len(prefix) - HASH_LENGTH - 1  # the "_" before the hash
    slug = branch_slug(branch)[: max(room, 0)].rstrip("_")
    schema = f"{prefix}{slug}_{digest}" if slug else f"{prefix}{digest}"
    return guard_branch_schema(schema, prefix=prefix)


def dev_schema_name(user: str) -> str:
    """A developer's own schema (``defer-orch dev build``): ``dev_<user slug>_<hash>``,
    the branch naming function with the ``dev_`` prefix; BranchNameError when no schema
    maps to ``user``."""
    return branch_schema_name(user, prefix=DEV_SCHEMA_PREFIX)


def is_branch_schema(schema: str, *, prefix: str | None = None) -> bool:
    """Whether ``schema`` has exactly a shape :func:`branch_schema_name` can produce, with
    ``prefix`` (default: any of :data:`SCHEMA_PREFIXES`).

    Teardown uses this so it only ever drops schemas this system created.
    """
    if prefix is None:
        return any(is_branch_schema(schema, prefix=known) for known in SCHEMA_PREFIXES)
    if not _PREFIX_SHAPE.fullmatch(prefix) or len(schema) > MAX_SCHEMA_LENGTH:
        return False
    shape = rf"{re.escape(prefix)}(?:{_SLUG}_)?[0-9a-f]{{{HASH_LENGTH}}}"
    return re.fullmatch(shape, schema) is not None


def _shapes(prefix: str | None) -> str:
    """The shapes a check accepts, for its error message."""
    return " or ".join(f"{p}<slug>_<hash>" for p in ((prefix,) if prefix is not None else SCHEMA_PREFIXES))


_SUFFIX = re.compile(r"[a-z0-9_]+")


def is_owned_schema(schema: str, owner: str) -> bool:
    """Whether ``schema`` belongs to the branch schema ``owner``: ``owner`` itself or
    ``<owner>_<suffix>`` (how dbt's ``generate_schema_name`` names a custom schema in a
    branch), lower-case ``[a-z0-9_]``, at most 63 characters."""
    if not is_branch_schema(owner) or len(schema) > MAX_SCHEMA_LENGTH:
        return False
    if schema == owner:
        return True
    prefix = f"{owner}_"
    return schema.startswith(prefix) and _SUFFIX.fullmatch(schema[len(prefix):]) is not None


def quote_identifier(name: str) -> str:
    """A double-quoted SQL identifier with embedded ``"`` doubled."""
    if "\x00" in name:
        raise ValueError(
            f"SQL identifier {name!r} contains a NUL character, which no warehouse accepts; "
            "remove it from the name."
        )
    return '"' + name.replace('"', '""') + '"'


def quote_string_literal(value: str) -> str:
    """A single-quoted SQL string literal with embedded ``'`` doubled.

    NUL is refused as well: C-based drivers would silently truncate the literal there.
    """
    if "\x00" in value:
        raise ValueError(
            f"SQL string {value!r} contains a NUL character, which would truncate the "
            "literal; remove it from the value."
        )
    return "'" + value.replace("'", "''") + "'"


def _normalised(schema: str) -> str:
    """Lower-case, whitespace- and quote-stripped form, for comparing with protected names."""
    return schema.strip().strip("\"'`[]").strip().lower()


def guard_branch_schema(
    schema: str,
    *,
    protected: Iterable[str] = PROTECTED_SCHEMAS,
    prefix: str | None = None,
    owner: str | None = None,
) -> str:
    """Return ``schema`` unchanged if it is a branch schema (or, given ``owner``, a schema
    that branch schema owns: :func:`is_owned_schema`), else raise ProtectedSchemaError.
    ``prefix`` None: any prefix of :data:`SCHEMA_PREFIXES`."""
    protected_names = {_normalised(p) for p in protected}
    if _normalised(schema) in protected_names:
        raise ProtectedSchemaError(
            f"refusing to build or drop schema {schema!r}: it is the production schema (or "
            "another protected schema); branch builds and teardown only ever touch schemas "
            f"named {_shapes(prefix)}. Compute the schema with branch_schema_name(branch)."
        )
    if owner is not None and is_owned_schema(schema, owner):
        return schema
    if not is_branch_schema(schema, prefix=prefix):
        raise ProtectedSchemaError(
            f"refusing to build or drop schema {schema!r}: it is not a branch schema this "
            f"system creates; branch builds and teardown only ever touch schemas named "
            f"{_shapes(prefix)}. Compute the schema with branch_schema_name(branch), and "
            "drop any other schema by hand if you really mean to."
        )
    return schema
