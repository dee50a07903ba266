"""Branch name -> schema name, quoting, and the guard in front of every drop."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from defer_orchestration.lib.errors import BranchNameError, ProtectedSchemaError
from defer_orchestration.lib.schema_names import (
    BRANCH_SCHEMA_PREFIX,
    DEV_SCHEMA_PREFIX,
    MAX_SCHEMA_LENGTH,
    PROTECTED_SCHEMAS,
    SCHEMA_PREFIXES,
    branch_schema_name,
    guard_branch_schema,
    is_branch_schema,
    is_owned_schema,
    quote_identifier,
    quote_string_literal,
)

SAFE = re.compile(r"[a-z0-9_]+")


def _valid_branch_name(name: str) -> bool:
    """What branch_schema_name accepts, restated independently."""
    return (
        bool(name.strip())
        and len(name) <= 1024
        and not any(unicodedata.category(ch) in {"Cc", "Cs"} for ch in name)
    )


def _assert_safe(schema: str) -> None:
    assert SAFE.fullmatch(schema), schema
    assert len(schema) <= MAX_SCHEMA_LENGTH
    assert schema.startswith(BRANCH_SCHEMA_PREFIX)
    assert is_branch_schema(schema)
    assert schema not in PROTECTED_SCHEMAS


# --- examples ---------------------------------------------------------------------------


def test_case_and_punctuation_variants_never_collide() -> None:
    names = ["feature/A", "feature-a", "Feature/a", "feature_a", "feature.a", "feature/a"]
    schemas = [branch_schema_name(n) for n in names]
    assert len(set(schemas)) == len(names)
    for schema in schemas:
        _assert_safe(schema)
        assert schema.startswith("br_feature_a_")


def test_shape_is_prefix_slug_hash() -> None:
    schema = branch_schema_name("feature/A")
    assert re.fullmatch(r"br_feature_a_[0-9a-f]{10}", schema)
    assert branch_schema_name("feature/A") == schema  # deterministic


def test_sql_injection_attempt_gives_a_safe_name() -> None:
    schema = branch_schema_name("x'; drop schema prod; --")
    _assert_safe(schema)
    assert re.fullmatch(r"br_x_drop_schema_prod_[0-9a-f]{10}", schema)


def test_unicode_is_ascii_folded() -> None:
    schema = branch_schema_name("fétûre/ü")
    _assert_safe(schema)
    assert re.fullmatch(r"br_feture_u_[0-9a-f]{10}", schema)


def test_spaces_become_single_underscores() -> None:
    schema = branch_schema_name("  my   new\u00a0branch ")
    _assert_safe(schema)
    assert re.fullmatch(r"br_my_new_branch_[0-9a-f]{10}", schema)


@pytest.mark.parametrize("name", ["日本語", "///", "----", "😀", "_"])
def test_empty_slug_is_just_prefix_and_hash(name: str) -> None:
    schema = branch_schema_name(name)
    _assert_safe(schema)
    assert re.fullmatch(r"br_[0-9a-f]{10}", schema)


def test_long_names_are_truncated_but_still_distinct() -> None:
    long_a = "feature/" + "a" * 292
    long_b = "feature/" + "a" * 291 + "b"
    assert len(long_a) == 300
    a, b = branch_schema_name(long_a), branch_schema_name(long_b)
    _assert_safe(a)
    _assert_safe(b)
    assert len(a) == MAX_SCHEMA_LENGTH
    assert a != b


def test_truncation_never_leaves_a_double_underscore() -> None:
    # The 49-char slug budget would end right after a separator.
    schema = branch_schema_name("a" * 48 + "/" + "b" * 20)
    _assert_safe(schema)
    assert "__" not in schema


def test_1024_chars_is_accepted() -> None:
    _assert_safe(branch_schema_name("x" * 1024))


@pytest.mark.parametrize(
    "name",
    [
        "", "   ", "\t", "x" * 1025,
        "feat\x00ure", "feat\nure", "feat\x7fure", "a\u0085b", "a\ud800b",
    ],
)
def test_rejected_names(name: str) -> None:
    with pytest.raises(BranchNameError) as info:
        branch_schema_name(name)
    assert "branch" in str(info.value)


def test_custom_prefix() -> None:
    schema = branch_schema_name("feature/A", prefix="ci_")
    assert re.fullmatch(r"ci_feature_a_[0-9a-f]{10}", schema)
    assert is_branch_schema(schema, prefix="ci_")
    assert not is_branch_schema(schema)


@pytest.mark.parametrize("prefix", ["", "BR_", "br-", "1br_", "x" * 60])
def test_invalid_prefix(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        branch_schema_name("feature", prefix=prefix)


# --- is_branch_schema --------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        "prod",
        "main",
        "br_",
        "br_feature",
        "BR_feature_0123456789",
        "br_feature_012345678",  # 9 hex
        "br_feature_0123456789a",  # ends in 10 hex, but not right after "_"
        "br__feature_0123456789",  # a slug never starts with "_"
        "br_feature__0123456789",  # nor contains "__"
        "br_feature0123456789x",
        "br_feature_012345678g",
        "br_feature-x_0123456789",
        "br_" + "a" * 50 + "_0123456789",  # 64 chars
        " br_feature_0123456789",
        '"br_feature_0123456789"',
    ],
)
def test_is_branch_schema_rejects_other_shapes(schema: str) -> None:
    assert not is_branch_schema(schema)


def test_is_branch_schema_accepts_both_shapes() -> None:
    assert is_branch_schema("br_feature_0123456789")
    assert is_branch_schema("br_0123456789")
    assert is_branch_schema("br_" + "a" * 49 + "_0123456789")  # exactly 63


# --- quoting ------------------------------------------------------------------------------


def test_quote_identifier() -> None:
    assert quote_identifier("br_x_0123456789") == '"br_x_0123456789"'
    assert quote_identifier('we"ird') == '"we""ird"'
    assert quote_identifier("") == '""'
    with pytest.raises(ValueError, match="NUL"):
        quote_identifier("a\x00b")


def test_quote_string_literal() -> None:
    assert quote_string_literal("it's") == "'it''s'"
    assert quote_string_literal("x'; drop schema prod; --") == "'x''; drop schema prod; --'"
    with pytest.raises(ValueError, match="NUL"):
        quote_string_literal("a\x00b")


def test_quoting_round_trips_through_duckdb() -> None:
    duckdb = pytest.importorskip("duckdb")
    conn = duckdb.connect()
    nasty = 'x"; drop schema main; --\'"'
    conn.execute(f"create schema {quote_identifier(nasty)}")
    rows = conn.execute("select schema_name from information_schema.schemata").fetchall()
    names = {row[0] for row in rows}
    assert nasty in names
    assert conn.execute(f"select {quote_string_literal(nasty)}").fetchone()[0] == nasty


# --- guard ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    ["prod", "PROD", '"prod"', " prod ", "'Prod'", "raw", "main", "information_schema",
     "pg_catalog", "temp", "system", "memory", "defer_orchestration", '"Main"'],
)
def test_guard_refuses_protected_schemas(schema: str) -> None:
    with pytest.raises(ProtectedSchemaError) as info:
        guard_branch_schema(schema)
    message = str(info.value)
    assert "refusing to build or drop schema" in message
    assert "protected" in message
    assert "br_<slug>_<hash>" in message


@pytest.mark.parametrize(
    "schema",
    ["analytics", "br_feature", "staging", "", "br_feature_0123456789; drop schema prod",
     '"br_feature_0123456789"', "BR_FEATURE_0123456789"],
)
def test_guard_refuses_non_branch_schemas(schema: str) -> None:
    with pytest.raises(ProtectedSchemaError, match="not a branch schema"):
        guard_branch_schema(schema)


def test_guard_refuses_custom_protected_names() -> None:
    schema = branch_schema_name("feature/x")
    with pytest.raises(ProtectedSchemaError, match="protected"):
        guard_branch_schema(schema, protected={schema.upper()})


@pytest.mark.parametrize("branch", ["feature/A", "fix-1", "日本語", "x" * 300])
def test_guard_accepts_generated_names(branch: str) -> None:
    schema = branch_schema_name(branch)
    assert guard_branch_schema(schema) == schema


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=500)
@given(st.text())
def test_any_text_gives_a_safe_schema_or_a_branch_name_error(name: str) -> None:
    if not _valid_branch_name(name):
        with pytest.raises(BranchNameError):
            branch_schema_name(name)
        return
    schema = branch_schema_name(name)
    _assert_safe(schema)
    assert branch_schema_name(name) == schema
    assert guard_branch_schema(schema) == schema


@settings(max_examples=200)
@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=1024
    )
)
def test_valid_names_always_map(name: str) -> None:
    if not name.strip():
        return
    _assert_safe(branch_schema_name(name))


@settings(max_examples=200)
@given(st.sets(st.text(min_size=1).filter(_valid_branch_name), min_size=2, max_size=50))
def test_injective_on_samples(names: set[str]) -> None:
    schemas = {branch_schema_name(n) for n in names}
    assert len(schemas) == len(names)


@given(st.from_regex(r"[A-Za-z0-9/._-]{1,20}", fullmatch=True).filter(lambda s: s.strip()))
def test_case_variants_are_distinct(name: str) -> None:
    variants = {name, name.lower(), name.upper(), name.swapcase()}
    assert len({branch_schema_name(v) for v in variants}) == len(variants)


def test_a_branch_schema_owns_its_custom_schemas_only() -> None:
    from defer_orchestration.lib.schema_names import is_owned_schema

    base = "br_feature_0123456789"
    assert is_owned_schema(base, base) and is_owned_schema(f"{base}_marts", base)
    for other in ("prod", "marts", f"{base}x", f"{base}_", f"{base}_Marts", f"{base}_m-x", "br_other_0123456789_marts"):
        assert not is_owned_schema(other, base)
    assert not is_owned_schema(f"{base}_" + "a" * 60, base)  # over 63 characters
    assert not is_owned_schema("prod_x", "prod")  # the owner must be a branch schema
    assert guard_branch_schema(f"{base}_marts", owner=base) == f"{base}_marts"
    with pytest.raises(ProtectedSchemaError):
        guard_branch_schema(f"{base}_marts")
    with pytest.raises(ProtectedSchemaError):
        guard_branch_schema("prod", owner=base)


# --- developers' schemas (dev_) ------------------------------------------------------------


def test_dev_schemas_are_schemas_this_system_creates() -> None:
    schema = branch_schema_name("ada", prefix=DEV_SCHEMA_PREFIX)
    assert re.fullmatch(r"dev_ada_[0-9a-f]{10}", schema)
    assert is_branch_schema(schema)
    assert is_branch_schema(schema, prefix="dev_")
    assert not is_branch_schema(schema, prefix="br_")
    assert guard_branch_schema(schema) == schema
    assert is_owned_schema(schema, schema)
    assert is_owned_schema(f"{schema}_staging", schema)
    assert not is_owned_schema(schema, branch_schema_name("ada"))
    assert not is_owned_schema(branch_schema_name("ada"), schema)
    assert set(SCHEMA_PREFIXES) == {"br_", "dev_"}


@pytest.mark.parametrize(
    "schema",
    ["dev", "dev_", "dev_ada", "DEV_ada_0123456789", "dev__ada_0123456789", "dev_ada_012345678g",
     "dev_ada_0123456789; drop schema prod", "development_0123456789x"],
)
def test_dev_shapes_outside_the_generated_one_are_refused(schema: str) -> None:
    assert not is_branch_schema(schema)
    with pytest.raises(ProtectedSchemaError, match="dev_<slug>_<hash>"):
        guard_branch_schema(schema)
