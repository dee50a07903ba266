"""Classification and downstream impact of a branch's modified models (no dbt: manifest
dicts as dbt-duckdb and dbt-postgres write them, built by ``impact_manifests``)."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

import pytest
from impact_manifests import BRANCH_SCHEMA, PROD_SCHEMA, branch, manifest, uid

from defer_orchestration.impact import ROWS_KEY, ImpactReport, NodeImpact, analyze_impact, relation_key

SOURCES = ["raw.orders", "raw.customers"]
EXPOSURES = {"revenue_dashboard": ["customer_revenue"]}
BASE = {
    "stg_orders": "select id, customer_id, amount_cents, status from {s:raw.orders}",
    "stg_customers": "select id, name, email from {s:raw.customers}",
    "orders": (
        "select o.id, o.customer_id, o.amount_cents / 100 as amount, o.status,\n"
        "       c.name as customer_name\n"
        "from {r:stg_orders} o\njoin {r:stg_customers} c on o.customer_id = c.id"
    ),
    "order_status": "select status, count(*) as n from {r:stg_orders} group by status",
    "customer_revenue": "select customer_id, sum(amount) as revenue from {r:orders} group by customer_id",
}
DOWNSTREAM_OF_STG_ORDERS = ["model.shop.customer_revenue", "model.shop.order_status", "model.shop.orders"]


def run(
    changes: Mapping[str, str],
    modified: Collection[str],
    dialect: str = "duckdb",
    *,
    base: Mapping[str, str] = BASE,
    built: Collection[str] | None = None,
    columns: Mapping[str, list[tuple[str, str]]] | None = None,
    prod_kw: Mapping[str, Any] | None = None,
    branch_kw: Mapping[str, Any] | None = None,
) -> ImpactReport:
    """Production builds ``base``; the branch changes ``changes`` and builds what is
    modified and downstream (``built`` by default: every model but the unchanged parents)."""
    models = dict(base, **changes)
    prod = manifest(base, dialect, sources=SOURCES, exposures=EXPOSURES, **(prod_kw or {}))
    if built is None:
        built = set(modified)
        for parent in modified:
            built |= {c.split(".")[-1] for c in _descendants(prod, uid(parent))}
    br = branch(models, dialect, built=built, sources=SOURCES, exposures=EXPOSURES, **(branch_kw or {}))
    report = analyze_impact(prod, br, [uid(m) for m in modified], [uid(b) for b in built], dialect, columns)
    json.dumps(report.to_dict())  # JSON-ready, always
    return report


def _descendants(manifest_: Mapping[str, Any], node: str) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        for child in manifest_["child_map"].get(stack.pop(), []):
            if child.startswith("model.") and child not in found:
                found.add(child)
                stack.append(child)
    return found


def only(report: ImpactReport) -> NodeImpact:
    assert len(report.nodes) == 1, report.nodes
    return report.nodes[0]


def impacted(node: NodeImpact) -> dict[str, list[str]]:
    return {i.unique_id: list(i.columns) for i in node.impacted}


# --- classification --------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_adding_a_column_is_non_breaking_and_impacts_nothing(dialect: str) -> None:
    new = "select id, customer_id, amount_cents, status, amount_cents > 0 as is_paid from {s:raw.orders}"
    node = only(run({"stg_orders": new}, ["stg_orders"], dialect))
    assert (node.category, node.impacted) == ("non_breaking", ())
    assert node.columns.added == ("is_paid",)
    assert not (node.columns.removed or node.columns.changed or node.columns.renamed)
    assert "adds column(s) is_paid" in node.reason


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_changing_one_column_read_by_one_model_impacts_exactly_that_model_and_column(dialect: str) -> None:
    cast = "name::varchar" if dialect == "duckdb" else "initcap(name)::text"
    new = f"select id, {cast} as name, email from {{s:raw.customers}}"
    report = run({"stg_customers": new}, ["stg_customers"], dialect)
    node = only(report)
    assert node.category == "partial"
    assert node.columns.changed == ("name",)
    # orders.customer_name only: not its siblings, not order_status, not customer_revenue
    assert impacted(node) == {"model.shop.orders": ["customer_name"]}
    assert report.lineage == {"model.shop.orders": {"customer_name": ("model.shop.stg_customers.name",)}}


def test_a_partial_change_follows_lineage_through_models_to_exposures() -> None:
    new = "select id, customer_id, amount_cents * 10 as amount_cents, status from {s:raw.orders}"
    report = run({"stg_orders": new}, ["stg_orders"])
    node = only(report)
    assert node.category == "partial"
    assert impacted(node) == {
        "exposure.shop.revenue_dashboard": [],
        "model.shop.customer_revenue": ["revenue"],
        "model.shop.orders": ["amount"],
    }
    assert report.lineage["model.shop.orders"] == {"amount": ("model.shop.stg_orders.amount_cents",)}
    assert report.lineage["model.shop.customer_revenue"] == {"revenue": ("model.shop.orders.amount",)}
    assert "order_status" not in json.dumps(report.to_dict()["impact"])


def test_a_changed_column_nobody_reads_is_non_breaking() -> None:
    new = "select id, name, lower(email) as email from {s:raw.customers}"
    node = only(run({"stg_customers": new}, ["stg_customers"]))
    assert (node.category, node.columns.changed, node.impacted) == ("non_breaking", ("email",), ())
    assert "nothing downstream reads" in node.reason


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_dropping_a_column_read_downstream_is_breaking_for_every_descendant(dialect: str) -> None:
    new = "select id, customer_id, amount_cents from {s:raw.orders}"
    node = only(run({"stg_orders": new}, ["stg_orders"], dialect))
    assert node.category == "breaking"
    assert node.columns.removed == ("status",)
    assert "status" in node.reason and "model.shop.order_status" in node.reason
    assert impacted(node) == {
        "exposure.shop.revenue_dashboard": [],
        "model.shop.customer_revenue": ["customer_id", "revenue"],
        "model.shop.order_status": ["n", "status"],
        "model.shop.orders": ["amount", "customer_id", "customer_name", "id", "status"],
    }


def test_dropping_a_column_nobody_reads_is_not_breaking() -> None:
    node = only(run({"stg_customers": "select id, name from {s:raw.customers}"}, ["stg_customers"]))
    assert (node.category, node.columns.removed, node.impacted) == ("non_breaking", ("email",), ())


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_adding_a_where_clause_is_breaking_with_all_descendants(dialect: str) -> None:
    new = "select id, customer_id, amount_cents, status from {s:raw.orders} where status <> 'test'"
    node = only(run({"stg_orders": new}, ["stg_orders"], dialect))
    assert node.category == "breaking"
    assert "where" in node.reason
    assert sorted(impacted(node)) == ["exposure.shop.revenue_dashboard", *DOWNSTREAM_OF_STG_ORDERS]
    assert node.columns.changed == ()  # no column's logic changed: rows did


@pytest.mark.parametrize(
    ("new", "clause"),
    [
        ("select distinct id, customer_id, amount_cents, status from {s:raw.orders}", "distinct"),
        ("select id, customer_id, amount_cents, status from {s:raw.orders} limit 10", "limit"),
        (
            "select o.id, o.customer_id, o.amount_cents, o.status from {s:raw.orders} o "
            "join {s:raw.customers} c on c.id = o.customer_id",
            "join",
        ),
        (
            "select id, customer_id, amount_cents, status from {s:raw.orders} union all "
            "select id, customer_id, amount_cents, status from {s:raw.orders}",
            "set_operation",
        ),
        (
            "with x as (select * from {s:raw.orders} where amount_cents > 0) "
            "select id, customer_id, amount_cents, status from x",
            "where",
        ),
    ],
)
def test_row_changing_clauses_are_breaking(new: str, clause: str) -> None:
    columns = {"raw.orders": [("id", "INTEGER"), ("customer_id", "INTEGER"),
                              ("amount_cents", "INTEGER"), ("status", "VARCHAR")]}
    node = only(run({"stg_orders": new}, ["stg_orders"], columns=columns))
    assert node.category == "breaking"
    assert clause in node.reason


def test_formatting_comments_casing_and_schemas_are_not_changes() -> None:
    new = (
        "-- reformatted\nSELECT ID, Customer_Id,\n    amount_cents, /* kept */ STATUS\n"
        "FROM {s:raw.orders}"
    )
    node = only(run({"stg_orders": new}, ["stg_orders"]))
    assert (node.category, node.impacted) == ("non_breaking", ())
    assert node.columns.to_dict() == {"added": [], "removed": [], "renamed": [], "retyped": [], "changed": []}
    assert "same columns and rows" in node.reason


def test_a_parent_in_another_schema_is_the_same_parent() -> None:
    """Production's orders reads main.stg_orders; the branch's reads br_feature_x.stg_orders
    (it rebuilt it) or main.stg_orders (deferred): both are model.shop.stg_orders."""
    new = BASE["orders"] + "\nwhere true"  # a real change is still seen
    deferred = run({"orders": BASE["orders"] + " "}, ["orders"], built={"orders", "customer_revenue"})
    assert only(deferred).category == "non_breaking"
    rebuilt = run({"orders": BASE["orders"] + " "}, ["orders"],
                  built={"orders", "stg_orders", "stg_customers", "customer_revenue"})
    assert only(rebuilt).category == "non_breaking"
    assert only(run({"orders": new}, ["orders"])).category == "breaking"


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_a_rename_read_downstream_is_breaking_and_reported_as_a_rename(dialect: str) -> None:
    new = "select id, customer_id, amount_cents as cents, status from {s:raw.orders}"
    node = only(run({"stg_orders": new}, ["stg_orders"], dialect))
    assert node.category == "breaking"
    assert node.columns.renamed == (("amount_cents", "cents"),)
    assert (node.columns.added, node.columns.removed) == ((), ())
    assert "renames column(s) amount_cents" in node.reason


def test_a_rename_nobody_reads_is_non_breaking() -> None:
    new = "select id, name, email as email_address from {s:raw.customers}"
    node = only(run({"stg_customers": new}, ["stg_customers"]))
    assert node.category == "non_breaking"
    assert node.columns.to_dict()["renamed"] == [{"from": "email", "to": "email_address"}]


def test_a_retyped_column_from_the_warehouse_is_partial() -> None:
    """Same SQL, but the source's column type changed (information_schema on both sides)."""
    prod_cols = [("id", "INTEGER"), ("customer_id", "INTEGER"), ("amount_cents", "INTEGER"), ("status", "VARCHAR")]
    branch_cols = [(n, "DECIMAL(18,2)" if n == "amount_cents" else t) for n, t in prod_cols]
    columns = {f"{PROD_SCHEMA['duckdb']}.stg_orders": prod_cols, f"{BRANCH_SCHEMA}.stg_orders": branch_cols}
    node = only(run({"stg_orders": BASE["stg_orders"] + "\n"}, ["stg_orders"], columns=columns))
    assert node.category == "partial"
    assert node.columns.to_dict()["retyped"] == [
        {"column": "amount_cents", "prod_type": "INTEGER", "branch_type": "DECIMAL(18,2)"}
    ]
    assert node.columns.changed == ()
    assert impacted(node)["model.shop.orders"] == ["amount"]


def test_type_names_differing_only_in_case_and_spacing_are_not_retyped() -> None:
    columns = {
        "main.stg_customers": [("id", "integer"), ("name", "character  varying"), ("email", "text")],
        "br_feature_x.stg_customers": [("ID", "INTEGER"), ("name", "CHARACTER VARYING"), ("email", "TEXT")],
    }
    node = only(run({"stg_customers": BASE["stg_customers"] + " "}, ["stg_customers"], columns=columns))
    assert (node.category, node.columns.retyped) == ("non_breaking", ())


def test_leftover_jinja_is_unknown_with_the_reason() -> None:
    new = "select id, name, email from {{ source('raw', 'customers') }}"
    node = only(run({"stg_customers": new}, ["stg_customers"]))
    assert node.category == "unknown"
    assert "branch SQL" in node.reason and "Jinja" in node.reason
    assert (node.impacted, node.columns.removed) == ((), ())


def test_sql_sqlglot_cannot_parse_is_unknown_with_the_reason() -> None:
    node = only(run({"stg_customers": "select id, from from where"}, ["stg_customers"]))
    assert node.category == "unknown"
    assert "cannot parse it as duckdb SQL" in node.reason


def test_missing_production_sql_is_unknown_never_a_guess() -> None:
    new = "select id, name from {s:raw.customers}"
    node = only(run({"stg_customers": new}, ["stg_customers"], prod_kw={"uncompiled": ["stg_customers"]}))
    assert node.category == "unknown"
    assert "production SQL: production's manifest has no compiled SQL" in node.reason
    assert node.columns.removed == ()


def test_a_node_the_branch_did_not_build_never_loses_columns() -> None:
    """The branch dropped a column but its build failed: nothing is reported as removed."""
    new = "select id, customer_id from {s:raw.orders}"
    report = run({"stg_orders": new}, ["stg_orders"], built=set(), branch_kw={"uncompiled": ["stg_orders"]})
    node = only(report)
    assert node.category == "unknown"
    assert "did not build it" in node.reason
    assert node.columns.removed == () and node.impacted == ()


def test_a_failed_node_with_compiled_sql_is_still_not_trusted() -> None:
    new = "select id, customer_id from {s:raw.orders}"
    node = only(run({"stg_orders": new}, ["stg_orders"], built={"orders"}))
    assert (node.category, node.columns.removed) == ("unknown", ())


def test_a_new_model_is_non_breaking() -> None:
    report = run({"big_orders": "select * from {r:orders} where amount > 100"}, ["big_orders"])
    node = only(report)
    assert node.category == "non_breaking"
    assert "absent from production" in node.reason


def test_non_sql_modified_resources_are_not_classified() -> None:
    prod = manifest(BASE, sources=SOURCES, exposures=EXPOSURES)
    report = analyze_impact(prod, prod, ["exposure.shop.revenue_dashboard", "test.shop.x"], [], "duckdb")
    assert report.nodes == ()


# --- downstream lineage ----------------------------------------------------------------


def test_a_changed_column_in_a_downstream_filter_impacts_all_its_columns_and_descendants() -> None:
    new = "select id, customer_id, amount_cents, upper(status) as status from {s:raw.orders}"
    report = run({"stg_orders": new}, ["stg_orders"])
    node = only(report)
    assert node.category == "partial"
    found = impacted(node)
    # order_status groups by status: every column of it is impacted
    assert found["model.shop.order_status"] == ["n", "status"]
    assert report.lineage["model.shop.order_status"] == {ROWS_KEY: ("model.shop.stg_orders.status",)}
    # orders only passes status through; customer_revenue does not read it
    assert found["model.shop.orders"] == ["status"]
    assert "model.shop.customer_revenue" not in found


def test_a_downstream_filter_makes_every_descendant_fully_impacted() -> None:
    base = dict(BASE, orders=BASE["orders"] + "\nwhere o.status <> 'cancelled'")
    new = "select id, customer_id, amount_cents, upper(status) as status from {s:raw.orders}"
    node = only(run({"stg_orders": new}, ["stg_orders"], base=base))
    found = impacted(node)
    assert found["model.shop.orders"] == ["amount", "customer_id", "customer_name", "id", "status"]
    assert found["model.shop.customer_revenue"] == ["customer_id", "revenue"]
    assert found["exposure.shop.revenue_dashboard"] == []


def test_lineage_through_ctes_a_star_from_a_source_a_join_and_an_ephemeral_model() -> None:
    base = {
        # select * from a source: its columns come from the warehouse (`columns`)
        "stg_payments": "select * from {s:raw.payments}",
        # an ephemeral model, inlined as __dbt__cte__payment_totals
        "payment_totals": (
            "select order_id, sum(amount) as total_amount, count(*) as n_payments\n"
            "from {r:stg_payments} group by order_id"
        ),
        # jaffle-shop style CTEs, a select * from a CTE, and a join
        "order_facts": (
            "with orders as (select * from {r:stg_orders}),\n"
            "totals as (select * from {r:payment_totals}),\n"
            "joined as (\n  select orders.id as order_id, orders.status, totals.total_amount,\n"
            "         totals.n_payments\n  from orders left join totals on totals.order_id = orders.id\n)\n"
            "select * from joined"
        ),
        "stg_orders": BASE["stg_orders"],
    }
    columns = {"raw.payments": [("id", "INTEGER"), ("order_id", "INTEGER"), ("amount", "DOUBLE")]}
    sources = ["raw.orders", "raw.payments"]
    prod = manifest(base, sources=sources, ephemeral=["payment_totals"])
    assert '__dbt__cte__payment_totals as (' in prod["nodes"][uid("order_facts")]["compiled_code"]
    new = dict(base, stg_payments="select id, order_id, amount / 100.0 as amount from {s:raw.payments}")
    br = branch(new, built=["stg_payments", "order_facts"], sources=sources, ephemeral=["payment_totals"])
    report = analyze_impact(
        prod, br, [uid("stg_payments")], [uid("stg_payments"), uid("order_facts")], "duckdb", columns
    )
    node = only(report)
    assert node.category == "partial"
    assert node.columns.changed == ("amount",)
    # the ephemeral model is a child in child_map: its own lineage is followed too
    assert impacted(node) == {
        "model.shop.order_facts": ["total_amount"],
        "model.shop.payment_totals": ["total_amount"],
    }
    # through the inlined __dbt__cte__payment_totals: the ephemeral model's column, and what it
    # inlines (order_facts' SQL reads stg_payments.amount itself)
    assert report.lineage["model.shop.order_facts"] == {
        "total_amount": ("model.shop.payment_totals.total_amount", "model.shop.stg_payments.amount")
    }
    assert report.lineage["model.shop.payment_totals"] == {"total_amount": ("model.shop.stg_payments.amount",)}


def test_a_star_over_an_unknown_relation_is_followed_conservatively() -> None:
    base = dict(BASE, wide_orders="select * from {r:stg_orders} join {s:raw.customers} using (id)")
    new = "select id, customer_id, amount_cents * 10 as amount_cents, status from {s:raw.orders}"
    node = only(run({"stg_orders": new}, ["stg_orders"], base=base))
    # raw.customers' columns are unknown: the star passes every changed column through
    assert impacted(node)["model.shop.wide_orders"] == ["amount_cents"]


def test_an_exposure_on_a_model_losing_a_column_makes_it_breaking() -> None:
    """Exposures have no column lineage: they may read any column."""
    new = "select customer_id, sum(amount) as revenue from {r:orders} group by customer_id"
    new = new.replace("sum(amount) as revenue", "sum(amount) as revenue_total")
    node = only(run({"customer_revenue": new}, ["customer_revenue"]))
    assert node.category == "breaking"
    assert impacted(node) == {"exposure.shop.revenue_dashboard": []}


def test_a_child_with_unparseable_sql_is_treated_as_reading_everything() -> None:
    base = dict(BASE, odd="select * from {r:stg_customers} {{ this_is_not_sql }}")
    new = "select id, name, lower(email) as email from {s:raw.customers}"
    report = run({"stg_customers": new}, ["stg_customers"], base=base)
    node = only(report)
    assert node.category == "partial"
    assert impacted(node)["model.shop.odd"] == ["*"]
    assert any(note.startswith("model.shop.odd: lineage unknown") for note in report.notes)


def test_impact_is_deterministic_and_sorted() -> None:
    new = "select id, customer_id, amount_cents, status from {s:raw.orders} where id > 0"
    first = run({"stg_orders": new}, ["stg_orders"]).to_dict()
    second = run({"stg_orders": new}, ["stg_orders"]).to_dict()
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    ids = [i["unique_id"] for i in first["impact"][0]["impacted"]]
    assert ids == sorted(ids)


def test_seed_file_change_is_breaking_and_a_config_change_is_judged_by_columns() -> None:
    base = dict(BASE, orders_enriched="select o.*, c.label from {r:orders} o join countries c on true")
    prod = manifest(base, sources=SOURCES, seeds=["countries"])
    changed = manifest(base, schema=BRANCH_SCHEMA, sources=SOURCES, seeds=["countries"],
                       checksums={"countries": "new"})
    report = analyze_impact(prod, changed, ["seed.shop.countries"], ["seed.shop.countries"], "duckdb")
    assert only(report).category == "breaking"
    same = manifest(base, schema=BRANCH_SCHEMA, sources=SOURCES, seeds=["countries"])
    report = analyze_impact(prod, same, ["seed.shop.countries"], ["seed.shop.countries"], "duckdb")
    assert only(report).category == "non_breaking"


# --- contracts ------------------------------------------------------------------------


def test_a_contracted_model_whose_contract_changed_carries_dbts_verdict() -> None:
    columns = {"id": {"name": "id", "data_type": "integer", "constraints": [{"type": "not_null"}]},
               "name": {"name": "name", "data_type": "varchar", "constraints": []},
               "email": {"name": "email", "data_type": "varchar", "constraints": []}}
    old = {"enforced": True, "checksum": "a", "columns": columns}
    new = {"enforced": True, "checksum": "b",
           "columns": {**columns, "name": {"name": "name", "data_type": "text", "constraints": []}}}
    node = only(run(
        {"stg_customers": BASE["stg_customers"] + " "}, ["stg_customers"],
        prod_kw={"contracts": {"stg_customers": old}}, branch_kw={"contracts": {"stg_customers": new}},
    ))
    assert node.category == "non_breaking"  # the SQL did not change...
    assert node.contract == {  # ...but dbt calls the contract change breaking, and says why
        "changed": True, "breaking": True, "severity": "warning",
        "breaking_changes": ["columns with data_type changes: name (varchar -> text)"],
    }
    assert node.to_dict()["contract"]["breaking"] is True


def test_an_unchanged_contract_adds_no_contract_entry() -> None:
    contract = {"enforced": True, "checksum": "same", "columns": {}}
    node = only(run(
        {"stg_customers": BASE["stg_customers"] + " "}, ["stg_customers"],
        prod_kw={"contracts": {"stg_customers": contract}}, branch_kw={"contracts": {"stg_customers": contract}},
    ))
    assert node.contract is None and "contract" not in node.to_dict()


# --- keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relation_name", "dialect", "key"),
    [
        ('"warehouse"."br_feature_x"."orders"', "duckdb", "br_feature_x.orders"),
        ('"postgres"."Public"."Orders"', "postgres", "public.orders"),
        ("analytics.orders", "postgres", "analytics.orders"),
    ],
)
def test_relation_key(relation_name: str, dialect: str, key: str) -> None:
    assert relation_key(relation_name, dialect) == key


def test_a_modified_ephemeral_model_is_classified_and_followed_into_its_children() -> None:
    base = {
        "stg_orders": BASE["stg_orders"],
        "paid": "select id, amount_cents from {r:stg_orders} where status = 'paid'",
        "paid_summary": "select count(*) as n, sum(amount_cents) as total from {r:paid}",
    }
    new = dict(base, paid="select id, amount_cents * 2 as amount_cents from {r:stg_orders} where status = 'paid'")
    prod = manifest(base, sources=SOURCES, ephemeral=["paid"])
    br = branch(new, built=["paid_summary"], sources=SOURCES, ephemeral=["paid"])
    report = analyze_impact(prod, br, [uid("paid")], [uid("paid_summary")], "duckdb")
    node = only(report)
    assert (node.category, node.columns.changed) == ("partial", ("amount_cents",))
    assert impacted(node) == {"model.shop.paid_summary": ["total"]}


def test_a_column_dropped_through_a_downstream_select_star_is_breaking_for_its_reader() -> None:
    """stg_customers drops email; customer_wide passes it through with select * (so the branch's
    customer_wide SQL never names it); mailing reads customer_wide.email."""
    base = dict(
        BASE,
        customer_wide="select * from {r:stg_customers}",
        mailing="select id, email from {r:customer_wide}",
    )
    node = only(run({"stg_customers": "select id, name from {s:raw.customers}"}, ["stg_customers"], base=base))
    assert node.category == "breaking"
    assert "model.shop.mailing" in node.reason
    assert node.columns.removed == ("email",)
