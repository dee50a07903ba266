"""One query's lineage, fingerprints and row rule (``defer_orchestration.impact.sql``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from defer_orchestration.impact.relations import RelationIndex
from defer_orchestration.impact.sql import SqlLineage, SqlNotAnalyzable, analyze_sql

MANIFESTS = [
    {"nodes": {
        "model.shop.orders": {"relation_name": '"warehouse"."br_x"."orders"'},
        "model.shop.customers": {"relation_name": '"warehouse"."br_x"."customers"'},
    }},
    {"nodes": {
        "model.shop.orders": {"relation_name": '"warehouse"."main"."orders"'},
        "model.shop.customers": {"relation_name": '"warehouse"."main"."customers"'},
    }},
]
KNOWN: Mapping[str, Sequence[str]] = {
    "model.shop.orders": ["id", "customer_id", "amount", "status"],
    "model.shop.customers": ["id", "name"],
}
O, C = "model.shop.orders", "model.shop.customers"


def lineage(sql: str, dialect: str = "duckdb", known: Mapping[str, Sequence[str]] = KNOWN) -> SqlLineage:
    index = RelationIndex(MANIFESTS, dialect)
    return analyze_sql(sql, dialect, index.resolve, lambda rel: known.get(rel))


def same_rows(a: str, b: str) -> bool:
    return lineage(a).row_fingerprint == lineage(b).row_fingerprint


def test_formatting_case_comments_aliases_and_schema_do_not_change_fingerprints() -> None:
    a = lineage('select o.id, o.amount * 2 as doubled from "warehouse"."main"."orders" o where o.status = \'x\'')
    b = lineage(
        "-- a comment\nSELECT t.ID,\n  /* why */ T.Amount*2 AS Doubled\n"
        "FROM warehouse.br_x.orders AS t WHERE t.STATUS = 'x'"
    )
    assert a.fingerprints == b.fingerprints
    assert a.row_fingerprint == b.row_fingerprint
    assert a.sources == {"id": frozenset({(O, "id")}), "doubled": frozenset({(O, "amount")})}


def test_a_cte_chain_resolves_to_base_columns_and_its_name_does_not_matter() -> None:
    a = lineage(
        'with src as (select * from "warehouse"."main"."orders"),\n'
        "renamed as (select id as order_id, amount / 100 as amount_usd from src)\n"
        "select * from renamed"
    )
    b = lineage(
        'with base as (select id, amount from "warehouse"."br_x"."orders")\n'
        "select id as order_id, amount / 100 as amount_usd from base"
    )
    assert a.outputs == ("order_id", "amount_usd")
    assert a.fingerprints == b.fingerprints
    assert a.sources["amount_usd"] == frozenset({(O, "amount")})


def test_a_join_and_a_correlated_subquery_give_every_source() -> None:
    found = lineage(
        'select o.id, c.name, (select max(o2.amount) from "warehouse"."main"."orders" o2 '
        "where o2.customer_id = o.customer_id) as biggest\n"
        'from "warehouse"."main"."orders" o left join "warehouse"."main"."customers" c on c.id = o.customer_id'
    )
    assert found.sources["name"] == frozenset({(C, "name")})
    assert found.sources["biggest"] == frozenset({(O, "amount"), (O, "customer_id")})
    assert found.row_reads == frozenset({(C, "id"), (O, "customer_id")})


def test_an_unknown_star_stays_a_star_over_its_relation() -> None:
    found = lineage('select * from "warehouse"."raw"."events"', known={})
    assert found.outputs == ("*",)
    assert found.sources["*"] == frozenset({("relation:raw.events", "*")})
    assert found.sources_of("anything") == found.sources["*"]


@pytest.mark.parametrize(
    ("before", "after", "rows_differ"),
    [
        ("select id from {o}", "select id from {o} where amount > 0", True),
        ("select id from {o} where amount > 0", "select id from {o} where amount > 1", True),
        ("select id from {o}", "select id, amount from {o}", False),
        ("select id from {o}", "select distinct id from {o}", True),
        ("select distinct id from {o}", "select distinct id, amount from {o}", True),
        ("select id from {o}", "select id from {o} order by id", False),
        ("select id from {o} limit 5", "select id from {o} order by id limit 5", True),
        ("select status from {o}", "select status, count(*) as n from {o} group by status", True),
        ("select amount from {o}", "select sum(amount) as amount from {o}", True),
        ("select amount from {o}", "select sum(amount) over () as amount from {o}", False),
        ("select o.id from {o} o join {c} c on c.id = o.customer_id",
         "select o.id from {o} o left join {c} c on c.id = o.customer_id", True),
        ("select id from {o}", "select id from {c}", True),
        ("select id from {o}", "select id from {o} union all select id from {c}", True),
        ("select id from {o} union all select id from {c}",
         "select id from {o} union select id from {c}", True),
        ("with x as (select id from {o}) select id from x",
         "with x as (select id from {o}), unused as (select id from {c} where id = 1) select id from x", False),
        ("select id, case when amount > 0 then 1 else 0 end as paid from {o}",
         "select id, case when amount > 10 then 1 else 0 end as paid from {o}", False),
        ("select id from {o} where id in (select id from {c})",
         "select id from {o} where id in (select id from {c} where name is not null)", True),
    ],
)
def test_the_row_rule(before: str, after: str, rows_differ: bool) -> None:
    o, c = '"warehouse"."main"."orders"', '"warehouse"."br_x"."customers"'
    assert same_rows(before.format(o=o, c=c), after.format(o=o, c=c)) is not rows_differ


def test_a_changed_cte_column_read_by_an_outer_filter_changes_rows() -> None:
    base = 'with x as (select id, amount {expr} as amount from "warehouse"."main"."orders") '
    base += "select id from x where amount > 10"
    assert not same_rows(base.format(expr="* 1"), base.format(expr="* 100"))


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_dialect_specific_sql(dialect: str) -> None:
    cast = "o.amount::decimal(10, 2)" if dialect == "duckdb" else "o.amount::numeric(10, 2)"
    found = lineage(
        f'select {cast} as amount, o."Status" as status from "warehouse"."main"."orders" as o', dialect
    )
    assert found.outputs == ("amount", "status")
    assert found.sources["amount"] == frozenset({(O, "amount")})


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("select * from {{ ref('orders') }}", "still contains Jinja ({{ ref('orders') }})"),
        ("select from where", "cannot parse it as duckdb SQL"),
        ("create table x as select 1", "expected one SELECT query"),
        ("select 1; select 2", "expected one SELECT query"),
    ],
)
def test_what_cannot_be_analysed_says_why(sql: str, reason: str) -> None:
    with pytest.raises(SqlNotAnalyzable) as caught:
        lineage(sql)
    assert reason in str(caught.value)


def test_a_column_missing_from_the_known_columns_is_resolved_without_them() -> None:
    found = lineage('select o.id, o.dropped from "warehouse"."main"."orders" o')
    assert found.schema_used is False
    assert found.sources["dropped"] == frozenset({(O, "dropped")})


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_an_unaliased_relation_is_still_referenced_by_its_name(dialect: str) -> None:
    found = lineage('select orders.id, "orders".amount from "warehouse"."main"."orders"', dialect)
    assert found.sources == {"id": frozenset({(O, "id")}), "amount": frozenset({(O, "amount")})}
