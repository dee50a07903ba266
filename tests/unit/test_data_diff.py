"""The branch-vs-production data diff, on hand-built DuckDB schemas with exactly known changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import pytest

from defer_orchestration.diff import compare as dd
from defer_orchestration.diff import keys, report
from defer_orchestration.diff.compare import DiffSettings, ModelDiff
from defer_orchestration.diff.keys import ModelToDiff
from defer_orchestration.warehouse.base import Cursor, Relation, WarehouseConnection
from defer_orchestration.warehouse.duckdb import DuckDBConnection

BR = "br_x_0123456789"

FIXTURE_SQL = f"""
create schema prod;
create schema {BR};
-- 20 rows: id 1..20, amount = 10 * id, status
create table prod.base as
  select cast(i as integer) as id, cast(i * 10 as integer) as amount,
         case when i % 2 = 0 then 'even' else 'odd' end as status
  from range(1, 21) t(i);

create table prod.filtered as select * from prod.base;
create table {BR}.filtered as select * from prod.base where id not in (2, 3, 7, 11, 15, 19);

create table prod.widened as select * from prod.base;
create table {BR}.widened as select *, amount / 10 as discount from prod.base;

create table prod.retyped as select * from prod.base;
create table {BR}.retyped as
  select id, case when id = 5 then 'n/a' else cast(amount as varchar) end as amount, status
  from prod.base;

create table prod.transformed as select * from prod.base;
create table {BR}.transformed as
  select id, case when id % 4 = 0 then amount + 1 else amount end as amount, status
  from prod.base;

create table prod.same as select * from prod.base;
create table {BR}.same as select * from prod.base;

create table {BR}.brand_new as select * from prod.base where id <= 7;

create table prod.dupes as select * from prod.base;
create table {BR}.dupes as
  select * from prod.base union all select * from prod.base where id in (4, 9);

create table prod.nullkey as select * from prod.base union all select null, 0, 'odd';
create table {BR}.nullkey as select * from prod.base;

create table prod.keyless as select * from prod.base;
create table {BR}.keyless as select * from prod.base where id > 2;
create table prod.keyless_same as select * from prod.base;
create table {BR}.keyless_same as select * from prod.base;

create table prod.rekeyed as select * from prod.base;
create table {BR}.rekeyed as select cast(id as varchar) as id, amount, status from prod.base;

create table prod.rescaled as
  select cast(id as bigint) as id, cast(amount as decimal(18, 2)) as amount from prod.base;
create table {BR}.rescaled as
  select id, cast(case when id = 3 then amount + 0.001 else amount end as decimal(18, 3)) as amount
  from prod.base;

create table prod.floats as select id, 0.1::double + 0.2::double as ratio from prod.base;
create table {BR}.floats as select id, 0.3::double as ratio from prod.base;

create table prod."Weird ""Name"" x" as
  select id as "order id", amount as "Amount $" from prod.base;
create table {BR}."Weird ""Name"" x" as
  select id as "order id", case when id = 1 then 0 else amount end as "Amount $" from prod.base;

create table prod.only_prod_key as select * from prod.base;
create table {BR}.only_prod_key as select id as other_id, amount, status from prod.base;

create table prod.dropped_base as select * from prod.base;
create view prod.broken as select * from prod.dropped_base;
create table {BR}.broken as select * from prod.base;
drop table prod.dropped_base;
"""


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarehouseConnection]:
    """A warehouse file with ``prod`` and one branch schema of fixture tables (the diff only
    reads, so the tests share it)."""
    path = tmp_path_factory.mktemp("data_diff") / "warehouse.duckdb"
    connection = duckdb.connect(str(path))
    connection.execute(FIXTURE_SQL)
    yield DuckDBConnection(connection)
    connection.close()


def model(name: str, key: str | None = "id", *, prod: str | None = "same-as-name") -> ModelToDiff:
    prod_name = name if prod == "same-as-name" else prod
    return ModelToDiff(
        unique_id=f"model.shop.{name}",
        name=name,
        prod_relation=None if prod_name is None else ("prod", prod_name),
        branch_relation=(BR, name),
        key=key,
    )


def diff_one(conn: Any, target: ModelToDiff, settings: DiffSettings = DiffSettings()) -> ModelDiff:
    [result] = dd.diff_models(conn, [target], settings)
    return result


def test_a_filter_shows_up_as_rows_only_in_prod_with_sorted_samples(conn: Any) -> None:
    d = diff_one(conn, model("filtered"))
    assert d.status == "changed"
    assert (d.prod_rows, d.branch_rows, d.row_delta) == (20, 14, -6)
    assert (d.only_in_prod, d.only_in_branch, d.changed, d.unchanged) == (6, 0, 0, 14)
    # numeric order of the key, not string order ("11" < "2")
    assert d.samples == {
        "only_in_prod": ("2", "3", "7", "11", "15"), "only_in_branch": (), "changed": ()
    }
    assert d.changed_columns == {}
    assert d.columns_added == d.columns_removed == d.columns_type_changed == ()


def test_sample_size_bounds_the_samples(conn: Any) -> None:
    d = diff_one(conn, model("filtered"), DiffSettings(sample_size=2))
    assert d.samples["only_in_prod"] == ("2", "3")
    assert diff_one(conn, model("filtered"), DiffSettings(sample_size=0)).samples == {
        "only_in_prod": (), "only_in_branch": (), "changed": ()
    }


def test_a_new_column_is_a_schema_diff_and_not_a_value_change(conn: Any) -> None:
    d = diff_one(conn, model("widened"))
    assert d.status == "changed"
    assert d.columns_added == ("discount",)
    assert d.columns_removed == () and d.columns_type_changed == ()
    assert (d.only_in_prod, d.only_in_branch, d.changed, d.unchanged) == (0, 0, 0, 20)


def test_a_type_change_is_reported_and_values_compared_as_text(conn: Any) -> None:
    d = diff_one(conn, model("retyped"))
    assert d.status == "changed"
    assert d.columns_type_changed == (dd.TypeChange("amount", "INTEGER", "VARCHAR"),)
    # '50' vs 'n/a' is the only value difference once both sides are text
    assert (d.changed, d.unchanged) == (1, 19)
    assert d.changed_columns == {"amount": 1}
    assert d.samples["changed"] == ("5",)


def test_a_value_transformation_on_a_known_subset(conn: Any) -> None:
    d = diff_one(conn, model("transformed"))
    assert d.status == "changed"
    assert (d.prod_rows, d.branch_rows, d.row_delta) == (20, 20, 0)
    assert (d.only_in_prod, d.only_in_branch, d.changed, d.unchanged) == (0, 0, 5, 15)
    assert d.changed_columns == {"amount": 5}
    assert d.samples["changed"] == ("4", "8", "12", "16", "20")


def test_an_unchanged_model_reports_zero_differences(conn: Any) -> None:
    d = diff_one(conn, model("same"))
    assert d.status == "unchanged" and d.message is None
    assert (d.prod_rows, d.branch_rows, d.row_delta) == (20, 20, 0)
    assert (d.only_in_prod, d.only_in_branch, d.changed, d.unchanged) == (0, 0, 0, 20)
    assert d.changed_columns == {}
    assert d.samples == {"only_in_prod": (), "only_in_branch": (), "changed": ()}


def test_a_new_model_is_listed_with_its_row_count(conn: Any) -> None:
    d = diff_one(conn, model("brand_new", prod=None))
    assert (d.status, d.branch_rows, d.prod_rows, d.message) == ("new", 7, None, None)
    missing_in_prod = diff_one(conn, model("brand_new"))
    assert missing_in_prod.status == "new" and missing_in_prod.branch_rows == 7
    assert '"prod"."brand_new" does not exist in production' in (missing_in_prod.message or "")


def test_duplicate_keys_are_an_error_not_wrong_counts(conn: Any) -> None:
    d = diff_one(conn, model("dupes"))
    assert d.status == "error"
    assert d.message == (
        "key column 'id' is not unique in branch: 2 duplicate keys (e.g. 4, 9); "
        "key-level diff skipped"
    )
    assert (d.prod_rows, d.branch_rows) == (20, 22)  # what was measured is kept
    assert d.only_in_prod is None and d.changed is None


def test_a_null_key_is_an_error(conn: Any) -> None:
    d = diff_one(conn, model("nullkey"))
    assert d.status == "error"
    assert d.message == "key column 'id' has 1 NULL value(s) in prod; key-level diff skipped"


def test_without_a_key_only_row_counts_and_schema_are_compared(conn: Any) -> None:
    d = diff_one(conn, model("keyless", key=None))
    assert (d.status, d.prod_rows, d.branch_rows, d.row_delta) == ("changed", 20, 18, -2)
    assert d.only_in_prod is None and d.changed is None and d.samples == {}
    assert "no key known" in (d.key_diff_skipped_reason or "")
    same = diff_one(conn, model("keyless_same", key=None))
    assert (same.status, same.row_delta) == ("no_key", 0)


def test_a_key_on_one_side_only_skips_the_key_diff_and_a_wrong_key_is_an_error(conn: Any) -> None:
    d = diff_one(conn, model("only_prod_key"))
    assert (d.status, d.message) == ("changed", None)  # the key column itself was removed
    assert d.key_diff_skipped_reason == "key column 'id' exists only in prod"
    assert d.columns_added == ("other_id",) and d.columns_removed == ("id",)
    assert d.only_in_prod is None
    wrong = diff_one(conn, model("same", key="nope"))
    assert wrong.status == "error"
    assert wrong.message == "key column 'nope' does not exist; key-level diff skipped"
    assert (wrong.prod_rows, wrong.branch_rows) == (20, 20)


def test_a_missing_branch_table_fails_alone(conn: Any) -> None:
    models = [model("same"), model("missing"), model("broken"), model("filtered")]
    diffs = dd.diff_models(conn, models)
    assert [d.status for d in diffs] == ["unchanged", "error", "error", "changed"]
    assert diffs[1].message == (
        'branch relation "br_x_0123456789"."missing" does not exist; was it built?'
    )
    assert (diffs[2].message or "").startswith("diff failed: CatalogException: ")
    assert diffs[3].only_in_prod == 6


def test_above_the_threshold_the_key_diff_is_skipped(conn: Any) -> None:
    settings = DiffSettings(key_diff_max_rows=19)
    same = diff_one(conn, model("same"), settings)
    assert (same.status, same.prod_rows, same.branch_rows) == ("key_diff_skipped", 20, 20)
    assert same.key_diff_skipped_reason == "20 rows exceed key_diff_max_rows=19"
    assert same.only_in_prod is None and same.changed is None
    filtered = diff_one(conn, model("filtered"), settings)  # row counts still tell it changed
    assert (filtered.status, filtered.row_delta) == ("changed", -6)
    assert filtered.key_diff_skipped_reason is not None
    assert diff_one(conn, model("same"), DiffSettings(key_diff_max_rows=20)).status == "unchanged"


def test_a_key_whose_type_changed_still_joins(conn: Any) -> None:
    d = diff_one(conn, model("rekeyed"))
    assert d.columns_type_changed == (dd.TypeChange("id", "INTEGER", "VARCHAR"),)
    assert (d.only_in_prod, d.only_in_branch, d.changed, d.unchanged) == (0, 0, 0, 20)


def test_numeric_type_changes_compare_numbers_not_text(conn: Any) -> None:
    d = diff_one(conn, model("rescaled"))
    assert d.columns_type_changed == (
        dd.TypeChange("id", "BIGINT", "INTEGER"),
        dd.TypeChange("amount", "DECIMAL(18,2)", "DECIMAL(18,3)"),
    )
    # 30.00 and 30.000 are equal numbers although '30.00' <> '30.000' as text
    assert (d.only_in_prod, d.only_in_branch, d.changed, d.unchanged) == (0, 0, 1, 19)
    assert d.changed_columns == {"amount": 1} and d.samples["changed"] == ("3",)


def test_float_noise_is_tolerated_unless_asked_for_exact(conn: Any) -> None:
    assert diff_one(conn, model("floats")).status == "unchanged"
    exact = diff_one(conn, model("floats"), DiffSettings(float_rel_tolerance=0))
    assert exact.changed_columns == {"ratio": 20}


def test_identifiers_are_quoted(conn: Any) -> None:
    d = diff_one(conn, model('Weird "Name" x', key="order id"))
    assert (d.status, d.changed, d.changed_columns) == ("changed", 1, {"Amount $": 1})
    assert d.samples["changed"] == ("1",)


def test_disabled_does_nothing(conn: Any) -> None:
    assert dd.diff_models(conn, [model("missing")], DiffSettings(enabled=False)) == []


class _Spy(WarehouseConnection):
    """A connection that records the size of every data result it hands back (catalog
    queries, i.e. column names and types, are counted apart) and every query."""

    def __init__(self, inner: WarehouseConnection) -> None:
        self.inner, self.sizes, self.queries, self.catalog_queries = inner, [], [], 0

    def execute(self, sql: str, params: Any = ()) -> Cursor:
        self.queries.append(sql)
        self.cursor = self.inner.execute(sql, params)
        return self

    def copy_table(self, source: Relation, target: Relation) -> int:
        raise AssertionError("the diff never writes")

    def _record(self, rows: list[Any]) -> list[Any]:
        if "information_schema" in self.queries[-1]:
            self.catalog_queries += 1
        else:
            self.sizes.append(len(rows))
        return rows

    def fetchall(self) -> list[Any]:
        return self._record(self.cursor.fetchall())

    def fetchmany(self, n: int) -> list[Any]:
        return self._record(self.cursor.fetchmany(n))


def test_only_aggregates_and_samples_leave_the_warehouse(conn: Any) -> None:
    conn.execute("create table prod.big as select i as id, i % 7 as v from range(50000) t(i)")
    conn.execute(
        f"create table {BR}.big as "
        "select id, v + (id % 3 = 0)::int as v from prod.big where id > 100"
    )
    spy = _Spy(conn)
    d = diff_one(spy, model("big"))
    assert (d.only_in_prod, d.changed, d.unchanged) == (101, 16633, 33266)
    assert max(spy.sizes) <= 3 * 5


def test_column_lists_come_from_one_catalog_query_for_all_models(conn: Any) -> None:
    # Per relation, DuckDB's information_schema lists every column of every table: asked
    # once per model, a 1,000-model diff spent most of its time there.
    spy = _Spy(conn)
    diffs = dd.diff_models(spy, [model("filtered"), model("widened"), model("same")])
    assert [d.status for d in diffs] == ["changed", "changed", "unchanged"]
    assert spy.catalog_queries == 1


def test_the_report(conn: Any) -> None:
    diffs = dd.diff_models(
        conn,
        [model("filtered"), model("widened"), model("same"), model("brand_new", prod=None),
         model("dupes"), model("keyless_same", key=None)],
    )
    assert report.headline(diffs) == (
        "2 models changed: filtered -6 rows, widened 1 column added; 1 new model; "
        "1 same row count and schema (values not compared); 1 model not diffed (dupes); "
        "1 unchanged"
    )
    markdown = report.to_markdown(diffs)
    assert "| filtered | changed | 20 | 14 | -6 | 0/0/0 | 6 | 0 | 0 | 14 |" in markdown
    assert "| brand_new | new | — | 7 | — | — | — | — | — | — |" in markdown
    assert "| same | unchanged | 20 | 20 | +0 | 0/0/0 | 0 | 0 | 0 | 20 |" in markdown
    assert "- only in prod (6), first keys: `2`, `3`, `7`, `11`, `15`" in markdown
    assert "- columns added: `discount`" in markdown
    assert "- error: key column 'id' is not unique in branch" in markdown
    numbers = report.to_metadata_numbers(diffs)
    assert numbers["diff/filtered/row_delta"] == -6
    assert numbers["diff/filtered/only_in_prod"] == 6
    assert numbers["diff/widened/columns_added"] == 1
    assert numbers["diff/brand_new/branch_rows"] == 7
    assert "diff/brand_new/row_delta" not in numbers
    assert numbers["diff/models_changed"] == 2 and numbers["diff/models_error"] == 1
    assert report.headline([]) == "data diff: no models to compare"


def test_report_details_for_changed_values(conn: Any) -> None:
    diffs = dd.diff_models(conn, [model("transformed"), model("retyped")])
    assert report.headline(diffs) == (
        "2 models changed: transformed 5 rows changed, retyped 1 column changed type, 1 row changed"
    )
    markdown = report.to_markdown(diffs)
    assert "- changed values per column: `amount` 5" in markdown
    assert "- changed (5), first keys: `4`, `8`, `12`, `16`, `20`" in markdown
    assert "`amount` INTEGER → VARCHAR" in markdown
    assert report.to_metadata_numbers(diffs)["diff/transformed/changed_rows"] == 5


def test_markdown_cells_are_escaped_and_metadata_labels_unique() -> None:
    diffs = [
        ModelDiff("model.a.x", "x|y", "error", message="bad | thing\nsecond line"),
        ModelDiff("model.b.x", "x|y", "new", branch_rows=3),
    ]
    markdown = report.to_markdown(diffs)
    assert "| x\\|y | error | — |" in markdown
    assert "- error: bad \\| thing second line" in markdown
    numbers = report.to_metadata_numbers(diffs)
    assert numbers["diff/model.b.x/branch_rows"] == 3
    assert numbers["diff/models_new"] == 1 and numbers["diff/models_error"] == 1


# --- keys from the manifest -----------------------------------------------------------


def _model_node(name: str, **extra: Any) -> dict[str, Any]:
    return {"resource_type": "model", "name": name, "schema": "prod", "alias": name,
            "config": {"materialized": "table", "meta": {}}, "meta": {}, **extra}


def _unique_test(model_name: str, column: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    unique_id = f"test.shop.unique_{model_name}_{column}"
    return unique_id, {
        "resource_type": "test",
        "test_metadata": {"name": "unique", "namespace": None,
                          "kwargs": {"column_name": column, "model": "{{ ... }}"}},
        "attached_node": f"model.shop.{model_name}",
        "depends_on": {"nodes": [f"model.shop.{model_name}"]},
        "config": {"where": None},
        **extra,
    }


MANIFEST = {
    "nodes": {
        "model.shop.orders": _model_node("orders", meta={"primary_key": "order_key"}),
        "model.shop.customers": _model_node(
            "customers", config={"meta": {"primary_key": "customer_id"}}
        ),
        "model.shop.products": _model_node("products"),
        "model.shop.payments": _model_node("payments"),
        "model.shop.daily": _model_node("daily"),
        "model.shop.codes": _model_node("codes"),
        "model.shop.events": _model_node("events"),
        "model.shop.lonely": _model_node("lonely"),
        "seed.shop.countries": {"resource_type": "seed", "name": "countries"},
        **dict(
            [
                _unique_test("orders", "order_id"),  # meta wins
                _unique_test("products", "sku"),
                _unique_test("products", "product_id"),
                _unique_test("payments", "payment_id"),
                _unique_test("daily", "order_date"),
                _unique_test("daily", "batch_id"),
                _unique_test("codes", "zeta"),
                _unique_test("codes", "alpha"),
                _unique_test("events", "upper(event_id)"),  # an expression, not a column
                _unique_test("lonely", "day", config={"where": "day > '2020-01-01'"}),
            ]
        ),
    }
}


def test_primary_keys_from_manifest() -> None:
    assert keys.primary_keys_from_manifest(MANIFEST) == {
        "model.shop.orders": "order_key",
        "model.shop.customers": "customer_id",
        "model.shop.products": "product_id",
        "model.shop.payments": "payment_id",
        "model.shop.daily": "batch_id",
        "model.shop.codes": "alpha",
    }


def test_find_primary_key() -> None:
    assert keys.find_primary_key({"meta": {"primary_key": "id"}}) == "id"
    assert keys.find_primary_key({"config": {"meta": {"primary_key": ["id"]}}}) == "id"
    assert keys.find_primary_key({"meta": {"primary_key": ["a", "b"]}}) is None
    assert keys.find_primary_key({"meta": {}, "config": {"meta": {}}}) is None


def test_models_to_diff_maps_relations_and_keys() -> None:
    branch = {"nodes": {**MANIFEST["nodes"]}}
    branch["nodes"]["model.shop.orders"] = {**branch["nodes"]["model.shop.orders"], "schema": BR}
    branch["nodes"]["model.shop.fresh"] = {**_model_node("fresh"), "schema": BR}
    branch["nodes"]["model.shop.eph"] = _model_node("eph", config={"materialized": "ephemeral"})
    built = ["model.shop.orders", "model.shop.fresh", "model.shop.eph", "test.shop.x",
             "seed.shop.countries"]
    assert keys.models_to_diff(built, branch, MANIFEST) == [
        ModelToDiff("model.shop.fresh", "fresh", None, (BR, "fresh"), None),
        ModelToDiff("model.shop.orders", "orders", ("prod", "orders"), (BR, "orders"), "order_key"),
    ]
