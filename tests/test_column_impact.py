"""Column-level impact of real branch builds (issue 23): real git branches, real dbt, the
real warehouses, the session's production; and the report reaching a pull request on a
fake GitHub served on 127.0.0.1.

Each test pushes its own branch of the bundled project with one kind of change and
checks the category, the columns and exactly what it reaches downstream.
"""

from __future__ import annotations

import pytest

from forge_server import FakeForge, closed_port_url
from helpers import push_branch, run_branch, step_metadata

from defer_orchestration import constants as c
from defer_orchestration.definitions import build_definitions
from defer_orchestration.resources import BranchCiSettings, _forge_env_fields

pytestmark = pytest.mark.dbt  # runs dbt (see tests/conftest.py)

STG_CUSTOMERS = "dbt_project/models/staging/stg_raw__customers.sql"
STG_PRODUCTS = "dbt_project/models/staging/stg_raw__products.sql"
STG_ORDER_ITEMS = "dbt_project/models/staging/stg_raw__order_items.sql"
HISTORY = "dbt_project/models/intermediate/int_customers__order_history.sql"
CUSTOMERS_DESCENDANTS = {"model.shop.customers", "model.shop.country_revenue", "model.shop.monthly_cohorts"}


def _edit(env, path: str, old: str, new: str) -> dict[str, str]:
    text = (env.repo / path).read_text()
    assert old in text, f"{path} no longer contains {old!r}: update the test's edit"
    return {path: text.replace(old, new, 1)}


def _impact(metadata: dict) -> dict[str, dict]:
    report = metadata[c.PR_REPORT_METADATA]
    assert report["impact_error"] is None, report["impact_error"]
    return {entry["unique_id"]: entry for entry in report["impact"]}


def _impacted(entry: dict) -> dict[str, list[str]]:
    return {i["unique_id"]: i["columns"] for i in entry["impacted"]}


def _branch(env, tmp_path, branch: str, edits: dict[str, str]) -> dict:
    push_branch(env.repo, branch, edits, tmp_path)
    return step_metadata(run_branch(env, branch))


def _run_reporting_to(env, variables: dict[str, str], branch: str):
    """``branch_ci_job`` of definitions whose branch settings carry the forge ``variables``."""
    fields = {field: variables[var] for field, (var, _) in _forge_env_fields().items() if var in variables}
    defs = build_definitions(env.settings, BranchCiSettings(**fields))
    return defs.resolve_job_def(c.BRANCH_CI_JOB).execute_in_process(
        run_config={"ops": {c.BRANCH_BUILD_OP: {"config": {"branch": branch}}}},
        instance=env.instance, raise_on_error=False,
    )


def test_an_added_column_is_non_breaking_and_reaches_nothing(prod_env, tmp_path) -> None:
    """Reporting to a forge nobody answers on: the run succeeds, the warning says what to fix."""
    edits = _edit(prod_env, STG_CUSTOMERS, "        last_name,\n", "        last_name,\n        length(first_name) as first_name_length,\n")
    push_branch(prod_env.repo, "impact/add-column", edits, tmp_path)
    token = "ghp_never_shown_0123456789"
    result = _run_reporting_to(prod_env, {
        "DEFER_ORCH_GITHUB_REPOSITORY": "acme/shop", "DEFER_ORCH_GITHUB_TOKEN": token,
        "DEFER_ORCH_GITHUB_API_URL": closed_port_url(), "DEFER_ORCH_FORGE_TIMEOUT": "1",
        "DEFER_ORCH_FORGE_BUDGET": "2",
    }, "impact/add-column")
    assert result.success
    metadata = step_metadata(result)
    assert metadata["forge_warnings"], "an unreachable forge must leave a warning"
    assert all(token not in str(value) for value in metadata.values())

    entry = _impact(metadata)["model.shop.stg_raw__customers"]
    assert entry["category"] == "non_breaking", entry
    assert entry["columns"]["added"] == ["first_name_length"]
    assert entry["columns"]["removed"] == [] and entry["columns"]["changed"] == []
    assert entry["impacted"] == []
    assert metadata["column_impact_headline"] == "column-level impact: 1 non-breaking"


def test_an_unparseable_model_is_unknown_with_the_reason(prod_env, tmp_path) -> None:
    # DuckDB runs it; the compiled SQL still carries Jinja (a raw block), so no lineage.
    edits = _edit(
        prod_env, STG_PRODUCTS, "from source", "from source\n    where '{% raw %}{{ product }}{% endraw %}' is not null"
    )
    metadata = _branch(prod_env, tmp_path, "impact/unparseable", edits)

    entry = _impact(metadata)["model.shop.stg_raw__products"]
    assert entry["category"] == "unknown"
    assert "Jinja" in entry["reason"]
    assert "unknown" in metadata["column_impact_headline"]


def test_a_changed_column_through_an_ephemeral_model_reaches_only_what_reads_it(prod_env, tmp_path) -> None:
    # discount_amount flows through the ephemeral int_order_items__priced (inlined as a CTE,
    # select * and a join) into int_orders__items_summed's discount_amount and subtotal.
    edits = _edit(
        prod_env, STG_ORDER_ITEMS, "{{ cents_to_dollars('discount_cents') }} as discount_amount",
        "{{ cents_to_dollars('discount_cents') }} * 2 as discount_amount",
    )
    metadata = _branch(prod_env, tmp_path, "impact/ephemeral", edits)

    entry = _impact(metadata)["model.shop.stg_raw__order_items"]
    assert entry["category"] == "partial", entry
    assert entry["columns"]["changed"] == ["discount_amount"]
    impacted = _impacted(entry)
    summed = impacted["model.shop.int_orders__items_summed"]
    assert set(summed) == {"discount_amount", "subtotal"}  # not unit_count, gross_amount...
    lineage = metadata[c.PR_REPORT_METADATA]["impact_lineage"]
    # through the ephemeral model's own column, back to the changed one
    assert lineage["model.shop.int_orders__items_summed"]["subtotal"] == [
        "model.shop.int_order_items__priced.net_amount", "model.shop.stg_raw__order_items.discount_amount",
    ]
    # Every reader, column by column (checked against the models' SQL): nothing else, e.g.
    # not products.units_sold nor orders.shipping_amount.
    assert impacted == {
        "model.shop.int_order_items__priced": ["discount_amount", "net_amount"],
        "model.shop.int_orders__items_summed": ["discount_amount", "subtotal"],
        "model.shop.int_customers__order_history": ["lifetime_spend"],
        "model.shop.customers": ["lifetime_spend"],
        "model.shop.country_revenue": ["lifetime_spend"],
        "model.shop.monthly_cohorts": ["avg_lifetime_spend", "cohort_lifetime_spend"],
        "model.shop.order_items": ["discount_amount", "gross_margin", "net_amount"],
        "model.shop.orders": ["discount_amount", "order_total", "payment_status", "subtotal"],
        "model.shop.daily_revenue": ["discounts", "gross_revenue", "net_revenue"],
        "model.shop.products": ["gross_margin", "net_revenue"],
    }


def test_removing_a_column_read_downstream_is_breaking_and_reaches_every_descendant(prod_env, tmp_path) -> None:
    edits = _edit(prod_env, STG_CUSTOMERS, "        lower(email) as email,\n", "")
    push_branch(prod_env.repo, "impact/drop-column", edits, tmp_path)
    result = run_branch(prod_env, "impact/drop-column")
    assert not result.success  # customers reads the column: its build fails too
    metadata = step_metadata(result)

    entry = _impact(metadata)["model.shop.stg_raw__customers"]
    assert entry["category"] == "breaking", entry
    assert entry["columns"]["removed"] == ["email"]
    assert set(_impacted(entry)) >= CUSTOMERS_DESCENDANTS
    assert "breaking" in metadata["column_impact_headline"]


@pytest.mark.parametrize("warehouse", ["duckdb", "postgres"])
def test_a_new_filter_is_breaking_and_reaches_every_descendant(warehouse, request, tmp_path) -> None:
    """On DuckDB the run reports to a fake GitLab with DEFER_ORCH_FAIL_ON=breaking: the run
    succeeds, the commit status fails and the run says why."""
    env = request.getfixturevalue("prod_env" if warehouse == "duckdb" else "postgres_prod_env")
    branch = f"impact/filter-{warehouse}"
    edits = _edit(env, HISTORY, "    group by customer_id\n", "    where order_total > 0\n\n    group by customer_id\n")
    if warehouse == "postgres":
        metadata = _branch(env, tmp_path, branch, edits)
    else:
        with FakeForge() as forge:
            iid = forge.open_merge_request(branch)
            sha = push_branch(env.repo, branch, edits, tmp_path)
            result = _run_reporting_to(env, forge.env("gitlab", DEFER_ORCH_FAIL_ON="breaking"), branch)
            assert result.success  # the gate fails the status, not the run
            metadata = step_metadata(result)
            assert [s["status"] for s in forge.statuses("gitlab", sha)][-1] == "failed"
            assert "int_customers__order_history" in metadata["forge_gate"]
            notes = forge.comments("gitlab", iid)
            assert len(notes) == 1 and "🔴 breaking" in notes[0]["body"]

    entry = _impact(metadata)["model.shop.int_customers__order_history"]
    assert entry["category"] == "breaking", entry
    assert "row" in entry["reason"].lower()
    impacted = _impacted(entry)
    assert set(impacted) == CUSTOMERS_DESCENDANTS
    # every column of every descendant
    assert "customer_name" in impacted["model.shop.customers"]
    markdown = metadata["summary"]
    assert markdown  # the run still reports


@pytest.mark.parametrize("warehouse", ["duckdb", "postgres"])
def test_a_changed_expression_is_partial_and_reaches_exactly_its_readers(warehouse, request, tmp_path) -> None:
    """On DuckDB the run also reports to a pull request on a fake GitHub: pending, then the
    final status, one comment, edited in place by the next push."""
    env = request.getfixturevalue("prod_env" if warehouse == "duckdb" else "postgres_prod_env")
    branch = f"impact/partial-{warehouse}"
    edits = _edit(env, STG_CUSTOMERS, "lower(email) as email", "lower(trim(email)) as email")
    if warehouse == "postgres":
        metadata = _branch(env, tmp_path, branch, edits)
        _assert_partial(metadata)
        return
    with FakeForge() as forge:
        number = forge.open_pull_request(branch)
        variables = forge.env("github", DEFER_ORCH_DAGSTER_URL="http://dagster.example")
        sha = push_branch(env.repo, branch, edits, tmp_path)
        result = _run_reporting_to(env, variables, branch)
        assert result.success
        metadata = step_metadata(result)
        _assert_partial(metadata)

        statuses = forge.statuses("github", sha)
        assert [s["state"] for s in statuses] == ["pending", "success"]
        assert statuses[-1]["context"] == "defer-orchestration"
        assert statuses[-1]["target_url"] == f"http://dagster.example/runs/{result.run_id}"
        comments = forge.comments("github", number)
        assert len(comments) == 1
        assert "Impact downstream (column level)" in comments[0]["body"]
        assert "🟠 partial" in comments[0]["body"] and "`model.shop.customers` (`email`)" in comments[0]["body"]
        assert metadata["forge"]["comment"]["action"] == "created"
        assert metadata["forge_warnings"] == []

        # The next push edits the same comment.
        edits = _edit(env, STG_CUSTOMERS, "lower(email) as email", "lower(trim(both from email)) as email")
        sha2 = push_branch(env.repo, branch, edits, tmp_path)
        second = _run_reporting_to(env, variables, branch)
        assert second.success
        comments_after = forge.comments("github", number)
        assert len(comments_after) == 1 and comments_after[0]["id"] == comments[0]["id"]
        assert sha2[:12] in comments_after[0]["body"]
        assert step_metadata(second)["forge"]["comment"]["action"] == "updated"
        token = variables["DEFER_ORCH_GITHUB_TOKEN"]
        assert all(token not in str(value) for value in step_metadata(second).values())


def _assert_partial(metadata: dict) -> None:
    entry = _impact(metadata)["model.shop.stg_raw__customers"]
    assert entry["category"] == "partial", entry
    assert entry["columns"]["changed"] == ["email"]
    # exactly the one model and the one column that read it; not its siblings
    assert _impacted(entry) == {"model.shop.customers": ["email"]}
    lineage = metadata[c.PR_REPORT_METADATA]["impact_lineage"]
    assert lineage == {"model.shop.customers": {"email": ["model.shop.stg_raw__customers.email"]}}
    assert metadata["column_impact"]["impact"][0]["unique_id"] == "model.shop.stg_raw__customers"
