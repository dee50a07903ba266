"""The real stack: code server + ``dagster-webserver`` + ``dagster-daemon`` on loopback.

One stack per module (``conftest.py::stack``). The expensive part happens once, in two
module fixtures, and the tests assert on what they recorded:

``prod_build``
    ``prod_build_job`` submitted with dagster_graphql's ``DagsterGraphQLClient`` and
    polled with ``get_run_status`` until it ends; both branch sensors started with the
    ``startSensor`` mutation.
``wave``
    The daemon is stopped (the sensors have ticked: this is *between two ticks*). Four
    watched branches are pushed: one changing an intermediate model, two changing one
    leaf model each, and one adding a dbt python model that sleeps. A second production
    build is submitted: it stays QUEUED, since no daemon runs. The daemon is started:
    one sensor tick launches the four branch runs, and the queue holds a production
    build and four branch runs at once. Once the branch runs exist the daemon is
    restarted again (between the tick that launched them and the next). When the
    sleeping branch's run is inside ``dbt build``, that branch is deleted: the teardown
    sensor cancels the run and launches a teardown. Then everything runs to the end.

The warehouse file is opened by the test (read-only) only while no run is active.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from .e2e_stack import LOCATION, REPOSITORY, TERMINAL, Stack, overlaps, wait_for
from helpers import commit_all, delete_branch, git, push_branch

from defer_orchestration import constants as c
from defer_orchestration.warehouse.duckdb import DuckDBWarehouse
from defer_orchestration.lib.schema_names import branch_schema_name

pytestmark = [pytest.mark.e2e, pytest.mark.dbt]

INT_BRANCH = "feature/int-change"
INT_MODEL = "dbt_project/models/intermediate/int_customers__order_history.sql"
INT_DESCENDANTS = {
    "int_customers__order_history", "customers", "country_revenue", "monthly_cohorts",
}
LEAF_BRANCHES = {
    "feature/leaf-daily": "dbt_project/models/marts/daily_revenue.sql",
    "feature/leaf-payments": "dbt_project/models/marts/payment_method_summary.sql",
}
CONTENTION_BRANCHES = (INT_BRANCH, *LEAF_BRANCHES)
# A branch whose build stays in `dbt build` (a python model sleeping, no CPU) until cancelled.
DOOMED = "feature/doomed"
SLOW_MODEL = "dbt_project/models/marts/slow_on_purpose.py"
SLOW_MODEL_CODE = '''import time


def model(dbt, session):
    dbt.config(materialized="table")
    time.sleep(600)
    return dbt.ref("customers")
'''
WAREHOUSE_STEPS = {c.RAW_TABLES_OP, c.PROD_DBT_OP, c.BRANCH_BUILD_OP, c.BRANCH_TEARDOWN_OP}
BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
CHROMIUM = Path("/usr/bin/chromium")


# Helpers -------------------------------------------------------------------------------------
def _append(stack: Stack, path: str, text: str) -> dict[str, str]:
    return {path: (stack.repo / path).read_text() + text}


def _runs_by_head(stack: Stack) -> dict[tuple[str, str], list[dict]]:
    found: dict[tuple[str, str], list[dict]] = {}
    for run in stack.runs(c.BRANCH_CI_JOB):
        key = (run["tag"].get(c.BRANCH_TAG), run["tag"].get(c.SHA_TAG))
        found.setdefault(key, []).append(run)
    return found


def _read_warehouse(stack: Stack, query, *args):
    """Run ``query(conn, *args)`` on a read-only connection; only while no run is active."""
    active = stack.active_runs()
    assert not active, f"would open the warehouse while runs are active: {active}"
    path = stack.home / "warehouse.duckdb"
    with DuckDBWarehouse(path, lock_timeout_s=10).connect(read_only=True) as conn:
        return query(conn, *args)


def _relations(stack: Stack, schema: str) -> set[str]:
    return set(_read_warehouse(stack, lambda conn, s: conn.list_relations(s), schema))


def _registered(stack: Stack) -> set[str]:
    return set(DuckDBWarehouse(stack.home / "warehouse.duckdb", lock_timeout_s=10).registered_branch_schemas())


def _output_metadata(stack: Stack, run_id: str, step: str = c.BRANCH_BUILD_OP) -> dict[str, object]:
    for event in stack.run_events(run_id):
        if event["__typename"] == "ExecutionStepOutputEvent" and event.get("stepKey") == step:
            values: dict[str, object] = {}
            for entry in event["metadataEntries"]:
                for key in ("mdStr", "text", "intValue", "jsonString"):
                    if key in entry:
                        values[entry["label"]] = (
                            json.loads(entry[key]) if key == "jsonString" else entry[key]
                        )
            return values
    return {}


def _failure_text(stack: Stack, run_id: str) -> str:
    parts = []
    for event in stack.run_events(run_id):
        kind = event["__typename"]
        if kind == "ExecutionStepFailureEvent":
            parts.append((event.get("failureMetadata") or {}).get("description") or "")
            parts.append((event.get("error") or {}).get("message") or "")
        elif kind in {"RunFailureEvent", "RunCanceledEvent"}:
            parts.append(event.get("message") or "")
    return "\n".join(p for p in parts if p)


def _warehouse_step_intervals(stack: Stack, run_ids) -> list[tuple[str, float, float]]:
    intervals = []
    for run_id in run_ids:
        run = stack.run(run_id)
        for step in run["stepStats"]:
            if step["stepKey"] in WAREHOUSE_STEPS and step["startTime"]:
                # A step killed with its cancelled run may record no end: it ended with the run.
                end = step["endTime"] or (run["endTime"] if run["status"] == "CANCELED" else None)
                assert end, f"{run['jobName']} {run_id}: step {step} never ended"
                label = f"{run['jobName']}/{run_id[:8]}/{step['stepKey']}"
                intervals.append((label, step["startTime"], end))
    return intervals


def _ticks_since(stack: Stack, sensor: str, since: float) -> list[dict]:
    return [
        t for t in stack.ticks(sensor) if t["timestamp"] > since and t["status"] != "STARTED"
    ]


def _restart_daemon(stack: Stack) -> float:
    stack.stop_process("daemon")
    restarted_at = time.time()
    stack.start_daemon()
    stack.wait_daemon_healthy(timeout=60, after=restarted_at)
    return restarted_at


def _dbt_started_node(stack: Stack, run_id: str, node: str) -> bool:
    """Whether the run's `dbt build` has started ``node`` (so it has created the schema)."""
    log = stack.home / "scratch" / "runs" / run_id / "branch" / "logs" / "dbt.log"
    try:
        lines = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return False
    return any(" START " in line and f".{node} " in line for line in lines)


# Phase fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prod_build(stack: Stack) -> dict:
    """prod_build_job through the GraphQL client, polled to the end; sensors started."""
    started = time.monotonic()
    run_id = stack.client.submit_job_execution(c.PROD_BUILD_JOB)
    # Their first ticks see no watched branch; they give the sensors a cursor before the
    # daemon restart below.
    stack.start_sensor(c.BRANCH_CI_SENSOR)
    stack.start_sensor(c.BRANCH_TEARDOWN_SENSOR)
    status = stack.wait_run(run_id, timeout=180)
    return {"run_id": run_id, "status": status, "seconds": time.monotonic() - started}


@pytest.fixture(scope="module")
def wave(stack: Stack, prod_build: dict) -> dict:
    """See the module docstring."""
    assert prod_build["status"] == "SUCCESS", "the first production build failed"
    started = time.monotonic()
    for sensor in (c.BRANCH_CI_SENSOR, c.BRANCH_TEARDOWN_SENSOR):
        wait_for(f"a {sensor} tick", lambda s=sensor: _ticks_since(stack, s, 0), timeout=30)
    stack.stop_process("daemon")
    scratch = stack.root / "clones"
    scratch.mkdir(exist_ok=True)
    edits = {
        INT_BRANCH: _append(stack, INT_MODEL, "-- x\n"),
        **{b: _append(stack, model, f"-- {b}\n") for b, model in LEAF_BRANCHES.items()},
        DOOMED: {SLOW_MODEL: SLOW_MODEL_CODE},
    }
    heads = {b: push_branch(stack.repo, b, edit, scratch) for b, edit in edits.items()}
    prod_id = stack.client.submit_job_execution(c.PROD_BUILD_JOB)
    queued_while_down = stack.client.get_run_status(prod_id).value

    first_start = time.time()
    stack.start_daemon()
    stack.wait_daemon_healthy(timeout=60, after=first_start)

    def launched():
        # Every head has its run, and the tick that requested them has finished.
        runs = _runs_by_head(stack)
        if not all((b, s) in runs for b, s in heads.items()):
            return None
        ids = {runs[(b, s)][0]["runId"] for b, s in heads.items()}
        ticks = _ticks_since(stack, c.BRANCH_CI_SENSOR, first_start)
        ticked = {i for t in ticks for i in t["runIds"]}
        return runs if ids <= ticked else None

    by_head = wait_for("the sensor to launch a run per pushed head", launched, timeout=90)
    run_ids = {b: by_head[(b, s)][0]["runId"] for b, s in heads.items()}
    # Between the tick that launched those runs and the next ones: restart the daemon.
    second_start = _restart_daemon(stack)

    # The doomed branch disappears while its run is inside `dbt build`.
    doomed_id = run_ids[DOOMED]
    wait_for(
        "the doomed branch's run to be inside dbt build",
        lambda: _dbt_started_node(stack, doomed_id, Path(SLOW_MODEL).stem)
        and stack.client.get_run_status(doomed_id).value == "STARTED",
        timeout=240,
    )
    worktrees = stack.home / "scratch" / "worktrees"
    worktrees_during = sorted(p.name for p in worktrees.glob(f"{branch_schema_name(DOOMED)}--*"))
    deleted_at = time.time()
    delete_branch(stack.repo, DOOMED)

    statuses = {b: stack.wait_run(rid, timeout=240) for b, rid in run_ids.items()}
    prod_status = stack.wait_run(prod_id, timeout=240)

    def torn_down():
        runs = stack.runs(c.BRANCH_TEARDOWN_JOB, tags={c.BRANCH_TAG: DOOMED})
        return runs if runs and all(r["status"] in TERMINAL for r in runs) else None

    teardown_runs = wait_for("the doomed branch's teardown run", torn_down, timeout=120)
    stack.wait_idle(timeout=60)
    # Let the restarted daemon's sensor tick twice more with every head unchanged.
    wait_for(
        "two branch_ci_sensor ticks after the last restart",
        lambda: len(_ticks_since(stack, c.BRANCH_CI_SENSOR, second_start)) >= 2,
        timeout=30,
    )
    print(f"\n[e2e] wave: {time.monotonic() - started:.1f} s")
    return {
        "heads": heads,
        "run_ids": run_ids,
        "statuses": statuses,
        "prod_run": prod_id,
        "prod_status": prod_status,
        "queued_while_down": queued_while_down,
        "daemon_starts": (first_start, second_start),
        "worktrees_during": worktrees_during,
        "deleted_at": deleted_at,
        "teardown_runs": teardown_runs,
    }


# Tests ---------------------------------------------------------------------------------------
def test_prod_build_job_launched_through_graphql_succeeds(stack: Stack, prod_build: dict) -> None:
    assert prod_build["status"] == "SUCCESS", _failure_text(stack, prod_build["run_id"])
    steps = {s["stepKey"]: s["status"] for s in stack.run(prod_build["run_id"])["stepStats"]}
    assert steps == {
        "raw_tables": "SUCCESS", "prod_dbt_models": "SUCCESS", "prod_manifest": "SUCCESS",
    }
    versions = list((stack.home / "artifacts" / "versions").iterdir())
    assert len(versions) == 1 and (versions[0] / "manifest.json").is_file()
    print(f"\n[e2e] first production build: {prod_build['seconds']:.1f} s")


def test_daemon_down_between_ticks_misses_no_head_and_duplicates_none(
    stack: Stack, wave: dict
) -> None:
    # Pushed while the daemon was down: exactly one run per head after it came back, and
    # none more after a second restart followed by further ticks.
    assert wave["queued_while_down"] == "QUEUED"
    by_head = _runs_by_head(stack)
    assert set(by_head) == set(wave["heads"].items())
    for branch, sha in wave["heads"].items():
        runs = by_head[(branch, sha)]
        assert len(runs) == 1, f"{branch}@{sha[:12]}: {len(runs)} runs"
        assert runs[0]["tag"].get("dagster/run_key") == f"{branch}@{sha}"
        assert runs[0]["tag"].get("dagster/sensor_name") == c.BRANCH_CI_SENSOR
    first, second = wave["daemon_starts"]
    launching = [t for t in _ticks_since(stack, c.BRANCH_CI_SENSOR, first) if t["runIds"]]
    assert {i for t in launching for i in t["runIds"]} == set(wave["run_ids"].values()), launching
    assert all(t["timestamp"] < second for t in launching), launching
    assert len(_ticks_since(stack, c.BRANCH_CI_SENSOR, second)) >= 2


def test_sensor_run_builds_exactly_the_changed_model_and_its_descendants(
    stack: Stack, wave: dict
) -> None:
    run_id = wave["run_ids"][INT_BRANCH]
    assert wave["statuses"][INT_BRANCH] == "SUCCESS", _failure_text(stack, run_id)
    assert _relations(stack, branch_schema_name(INT_BRANCH)) == INT_DESCENDANTS
    metadata = _output_metadata(stack, run_id)
    assert metadata["nodes/built"] == 4 and metadata["nodes/failed"] == 0
    assert "| selected | built | tests passed |" in str(metadata["summary"])
    assert metadata["schema"] == branch_schema_name(INT_BRANCH)
    for branch, model in LEAF_BRANCHES.items():
        assert _relations(stack, branch_schema_name(branch)) == {Path(model).stem}


def test_prod_build_and_three_branch_runs_at_once_are_serialised_by_the_queue(
    stack: Stack, wave: dict
) -> None:
    run_ids = [wave["prod_run"], *(wave["run_ids"][b] for b in CONTENTION_BRANCHES)]
    runs = [stack.run(rid) for rid in run_ids]
    failed = {
        r["runId"]: _failure_text(stack, r["runId"]) for r in runs if r["status"] != "SUCCESS"
    }
    assert not failed, failed
    # All of them were queued or running at the same moment ...
    assert max(r["creationTime"] for r in runs) < min(r["endTime"] for r in runs), [
        (r["jobName"], r["creationTime"], r["startTime"], r["endTime"]) for r in runs
    ]
    # ... yet no two warehouse steps ever ran at the same time.
    intervals = _warehouse_step_intervals(stack, run_ids)
    assert len(intervals) == 2 + len(CONTENTION_BRANCHES)
    assert not overlaps(intervals), overlaps(intervals)


def test_branch_deleted_during_dbt_build_is_cancelled_cleaned_and_torn_down(
    stack: Stack, wave: dict
) -> None:
    schema = branch_schema_name(DOOMED)
    run_id = wave["run_ids"][DOOMED]
    assert wave["worktrees_during"], "the doomed run had no worktree while building"
    assert wave["statuses"][DOOMED] == "CANCELED", _failure_text(stack, run_id)
    run = stack.run(run_id)
    assert run["endTime"] - wave["deleted_at"] < 60
    # The reason: the teardown sensor's tick that cancelled it says why.
    cancelling = [
        e["message"]
        for t in stack.ticks(c.BRANCH_TEARDOWN_SENSOR)
        for e in (t.get("logEvents") or {}).get("events", [])
        if run_id in e["message"]
    ]
    assert any("branch deleted" in m for m in cancelling), cancelling
    assert [r["status"] for r in wave["teardown_runs"]] == ["SUCCESS"]
    teardown_meta = _output_metadata(stack, wave["teardown_runs"][0]["runId"], c.BRANCH_TEARDOWN_OP)
    assert teardown_meta["dropped_schemas"] == [schema]
    schemas = set(_read_warehouse(stack, lambda conn: conn.list_schemas()))
    assert schema not in schemas and branch_schema_name(INT_BRANCH) in schemas
    assert schema not in _registered(stack)
    assert not list((stack.home / "scratch" / "worktrees").glob(f"{schema}--*"))
    mirror = next((stack.home / "git").glob("mirror-*.git"))
    assert schema not in git(mirror, "worktree", "list")


def test_no_two_warehouse_steps_ever_overlapped(stack: Stack, wave: dict) -> None:
    intervals = _warehouse_step_intervals(stack, [r["runId"] for r in stack.runs()])
    assert len(intervals) >= 9  # 2 production builds x 2, 4 branch builds, 1 teardown
    assert not overlaps(intervals), overlaps(intervals)


def test_browser_shows_the_asset_graph_and_a_branch_runs_summary(
    stack: Stack, wave: dict, tmp_path: Path, artifacts_dir: Path
) -> None:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Python Playwright is not installed (pip install playwright)"
    )
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run tests/e2e/ensure_chromium.sh")
    models = sorted(p.stem for p in (stack.repo / "dbt_project" / "models").rglob("*.sql"))
    run_id = wave["run_ids"][INT_BRANCH]
    shots = []
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path))
    # Dagster's first-visit "Join the community" dialog would cover the screenshots.
    assert stack.gql("mutation E2eNuxSeen { setNuxSeen }")["setNuxSeen"] is True
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            args=BROWSER_ARGS,
            headless=True,
            viewport={"width": 1600, "height": 1400},
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            # ... and should it show anyway, it is dismissed before any click.
            page.add_locator_handler(
                page.get_by_role("button", name="Skip"), lambda skip: skip.click()
            )

            # The asset graph of the production group: dbt models and prod_manifest.
            location = f"{REPOSITORY}@{LOCATION}"
            page.goto(f"{stack.url}/locations/{location}/asset-groups/{c.PROD_DBT_GROUP}/lineage")
            page.get_by_text(c.PROD_MANIFEST_ASSET, exact=True).first.wait_for()
            page.get_by_text("customers", exact=True).first.wait_for()
            page.wait_for_load_state("networkidle")
            shots.append(tmp_path / "asset_graph.png")
            page.screenshot(path=shots[-1])
            graph_text = page.inner_text("body")
            assert c.PROD_MANIFEST_ASSET in graph_text
            shown = [m for m in models if m in graph_text]
            assert len(shown) >= 8, (shown, graph_text[:2000])

            # The branch run's page, its summary table opened from the step's metadata.
            page.goto(f"{stack.url}/runs/{run_id}")
            page.get_by_text("RUN_SUCCESS").first.wait_for()
            summary_row = page.locator("tr").filter(has=page.get_by_text("summary", exact=True))
            summary_row.get_by_text("[Show Markdown]").first.click()
            summary = page.get_by_role("dialog").filter(has_text="tests passed")
            summary.wait_for()
            shots.append(tmp_path / "branch_run_summary.png")
            page.screenshot(path=shots[-1])
            text = summary.inner_text()
        finally:
            browser.close()
    for header in ("selected", "built", "tests passed", "deferred parents"):
        assert header in text, text
    assert INT_BRANCH in text and branch_schema_name(INT_BRANCH) in text
    assert "model.shop.int_customers__order_history" in text
    for shot in shots:
        assert shot.stat().st_size > 10_000
        shutil.copy(shot, artifacts_dir / shot.name)


TEMPLATE_BRANCH = "feature/after-template"


def test_a_publication_makes_the_parse_template_a_new_branch_starts_from(stack: Stack, wave: dict) -> None:
    """branch_parse_template_sensor through the daemon: it launches branch_parse_template_job
    for the latest published manifest; a branch pushed afterwards (its first run) starts
    from that parse instead of parsing the whole project."""
    stack.wait_idle(timeout=120)
    stack.start_sensor(c.BRANCH_PARSE_TEMPLATE_SENSOR)
    made = wait_for(
        "a branch_parse_template_job run", lambda: stack.runs(c.BRANCH_PARSE_TEMPLATE_JOB) or None, timeout=60
    )
    run_id = made[0]["runId"]
    assert stack.wait_run(run_id, timeout=120) == "SUCCESS", _failure_text(stack, run_id)
    sha = _output_metadata(stack, run_id, c.BRANCH_PARSE_TEMPLATE_OP)["sha"]
    scratch = Path(tempfile.mkdtemp(dir=stack.root))
    push_branch(stack.repo, TEMPLATE_BRANCH, _append(stack, LEAF_BRANCHES["feature/leaf-daily"], "-- t\n"), scratch)

    def branch_run() -> list[dict] | None:
        return stack.runs(c.BRANCH_CI_JOB, tags={c.BRANCH_TAG: TEMPLATE_BRANCH}) or None

    branch_id = wait_for("the new branch's run", branch_run, timeout=60)[0]["runId"]
    assert stack.wait_run(branch_id, timeout=180) == "SUCCESS", _failure_text(stack, branch_id)
    assert _output_metadata(stack, branch_id)["previous_parse"] == f"template {str(sha)[:12]}: reused"
    assert len(stack.runs(c.BRANCH_PARSE_TEMPLATE_JOB)) == 1  # later ticks: nothing new published


def test_a_merge_to_main_is_built_by_the_daemon_without_a_reload(stack: Stack, wave: dict) -> None:
    """main_branch_sensor through the daemon: its first tick builds main's head; a merge
    adding a model then produces one production run for the new head, which builds the
    new model although this code location loaded before it existed."""
    stack.wait_idle(timeout=120)
    started = time.time()
    stack.start_sensor(c.MAIN_BRANCH_SENSOR)

    def prod_runs_since() -> list[dict]:
        return [r for r in stack.runs(c.PROD_BUILD_JOB, tags={c.BRANCH_TAG: "main"}) if (r.get("startTime") or started) >= started - 1]

    first = wait_for("the first main_branch_sensor run", lambda: prod_runs_since() or None, timeout=60)
    assert stack.wait_run(first[0]["runId"], timeout=240) == "SUCCESS"
    new_model = "dbt_project/models/marts/merged_after_load.sql"
    (stack.repo / new_model).write_text("select count(*) as n from {{ ref('orders') }}\n")
    head = commit_all(stack.repo, "merge: a model the loaded definitions do not know")

    def run_for_head() -> dict | None:
        runs = [r for r in stack.runs(c.PROD_BUILD_JOB, tags={c.SHA_TAG: head})]
        return runs[0] if runs else None

    run = wait_for("a production run for the merged head", run_for_head, timeout=60)
    assert run["tag"][c.BRANCH_TAG] == "main"
    assert stack.wait_run(run["runId"], timeout=240) == "SUCCESS", _failure_text(stack, run["runId"])
    published = _output_metadata(stack, run["runId"], c.PROD_MANIFEST_ASSET)
    assert published["git_sha"] == head
    assert "merged_after_load" in _relations(stack, "prod")
    assert len(stack.runs(c.PROD_BUILD_JOB, tags={c.SHA_TAG: head})) == 1  # later ticks add none

    # Between the merge and the next load, the new model is a materialized key with no
    # definition in the asset graph; a reload of the code location (which parses main's
    # head) makes it a dbt asset.
    asset = stack.gql(ASSET_QUERY, {"path": ["merged_after_load"]})["assetOrError"]
    assert asset["__typename"] == "Asset" and asset["assetMaterializations"][0]["runId"] == run["runId"]
    assert asset["definition"] is None
    reloaded = stack.gql(RELOAD_MUTATION, {"name": LOCATION})["reloadRepositoryLocation"]
    assert reloaded["__typename"] == "WorkspaceLocationEntry", reloaded
    asset = stack.gql(ASSET_QUERY, {"path": ["merged_after_load"]})["assetOrError"]
    assert asset["definition"] is not None and asset["definition"]["groupName"] == c.PROD_DBT_GROUP


ASSET_QUERY = """
query E2eAsset($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset { assetMaterializations(limit: 1) { runId } definition { groupName } }
  }
}
"""

RELOAD_MUTATION = """
mutation E2eReload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) { __typename }
}
"""
