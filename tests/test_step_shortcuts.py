"""The production step's shortcuts into Dagster's step context (guarded in
``defer_orchestration/dagster_storage/step_context.py``) fall back to Dagster's own path,
with the same records, when the guard is off and when an internal raises.

A plain multi-asset (no dbt) records a chain of assets and its checks the way the
production dbt step does (``step_events.emit_by_generation``, ``DbtTestResult``): each
materialization's input pointers name its parent's materialization of the run, each check
evaluation targets its asset's; only whether non-blocking checks get Dagster's empty
output differs between the shortcut and Dagster's path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
from dagster_internals import needs_internals

from defer_orchestration.dagster_storage import guard
from defer_orchestration.dagster_storage import step_context as shortcuts
from defer_orchestration.defs.assets import step_events
from defer_orchestration.lib import internals

KEYS = [dg.AssetKey(name) for name in ("one", "two", "three")]
DEPS = {KEYS[1]: {KEYS[0]}, KEYS[2]: {KEYS[1]}}


@pytest.fixture(autouse=True)
def _fresh_guard_decision(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(internals.ENV_SWITCH, raising=False)
    guard.forget_decision()
    internals.reset_reports()
    yield
    guard.forget_decision()
    internals.reset_reports()


def _chain() -> dg.AssetsDefinition:
    @dg.multi_asset(
        specs=[dg.AssetSpec("one"), dg.AssetSpec("two", deps=["one"]), dg.AssetSpec("three", deps=["two"])],
        check_specs=[dg.AssetCheckSpec("soft", asset="two"), dg.AssetCheckSpec("gate", asset="two", blocking=True)],
        can_subset=True,
    )
    def chain(context):  # unannotated: this module has `from __future__ import annotations`
        step_context = step_events.step_context_of(context)
        step_events.compute_output_asset_keys_once(step_context)
        outputs = {key: dg.MaterializeResult(asset_key=key) for key in KEYS}
        checks = {KEYS[1]: [step_events.DbtTestResult(asset_key="two", check_name=name, passed=True)
                            for name in ("soft", "gate")]}
        with step_events_group(context) as group:
            yield from step_events.emit_by_generation(step_context, outputs, checks, DEPS, group)

    return chain


def step_events_group(context: Any) -> Any:
    from defer_orchestration.dagster_storage.instance import grouped_events

    return grouped_events(context.instance, context.run.run_id)


def _record(instance: dg.DagsterInstance) -> dict[str, Any]:
    """What the run recorded, with storage ids replaced by what they point at."""
    result = dg.materialize([_chain()], instance=instance)
    assert result.success
    run_id = result.run_id
    mat_id = {key: instance.fetch_materializations(key, limit=1).records[0].storage_id for key in KEYS}
    pointers = {}
    for key in KEYS:
        [latest] = instance.fetch_materializations(key, limit=1).records
        assert latest.run_id == run_id
        tags = latest.event_log_entry.dagster_event.event_specific_data.materialization.tags or {}
        for tag, value in tags.items():
            if tag.startswith("dagster/input_event_pointer/"):
                parent = dg.AssetKey.from_user_string(tag.removeprefix("dagster/input_event_pointer/"))
                pointers[(key.to_user_string(), parent.to_user_string())] = value == str(mat_id[parent])
    evaluations = {
        e.check_name: (e.passed, e.blocking, e.target_materialization_data.run_id == run_id,
                       e.target_materialization_data.storage_id == mat_id[KEYS[1]])
        for e in result.get_asset_check_evaluations()
    }
    outputs = {
        r.dagster_event.step_output_data.output_name for r in instance.all_logs(run_id)
        if r.dagster_event is not None and r.dagster_event.event_type_value == "STEP_OUTPUT"
    }
    return {"pointers": pointers, "evaluations": evaluations, "check_outputs": {o for o in outputs if "_" in o}}


DAGSTERS_PATH = {
    "pointers": {("two", "one"): True, ("three", "two"): True},
    "evaluations": {"soft": (True, False, True, True), "gate": (True, True, True, True)},
    "check_outputs": {"two_soft", "two_gate"},
}


@needs_internals
def test_the_shortcuts_record_what_dagster_records_without_the_empty_check_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a tested Dagster every shortcut works (none fell back: this is the test that fails
    first when Dagster changes one of the internals they touch), and the records are
    Dagster's, but for the empty output of a non-blocking check."""
    calls: list[int] = []
    fell_back: list[str] = []
    real = shortcuts._fetch_versions

    def fetch(step_context: Any, keys: list[dg.AssetKey]) -> None:
        real(step_context, keys)
        calls.append(len(keys))

    monkeypatch.setattr(shortcuts, "_fetch_versions", fetch)
    monkeypatch.setattr(shortcuts, "_fell_back", lambda what, exc: fell_back.append(f"{what}: {exc!r}"))
    with dg.instance_for_test() as instance:
        recorded = _record(instance)
    assert fell_back == []
    assert calls == [1, 1, 1]  # one read-back per generation
    assert recorded == {**DAGSTERS_PATH, "check_outputs": {"two_gate"}}  # a non-blocking check's output is left out


def test_with_internals_off_the_step_takes_dagsters_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(internals.ENV_SWITCH, "off")
    monkeypatch.setattr(shortcuts, "_fetch_versions", lambda *a: pytest.fail("a shortcut ran with the guard off"))
    monkeypatch.setattr(shortcuts, "_check_spec", lambda *a: pytest.fail("a shortcut ran with the guard off"))
    with dg.instance_for_test() as instance:
        assert _record(instance) == DAGSTERS_PATH


@needs_internals
@pytest.mark.parametrize("internal", ["_fetch_versions", "_check_spec"])
def test_an_internal_that_raises_falls_back_to_dagsters_path(internal: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As if Dagster had changed the signature of what the shortcut calls: the step still
    succeeds and records what Dagster's own path records."""
    raised: list[str] = []

    def changed(*args: Any) -> None:
        raised.append(internal)
        raise TypeError("an unexpected keyword argument (a Dagster upgrade)")

    monkeypatch.setattr(shortcuts, internal, changed)
    with dg.instance_for_test() as instance:
        recorded = _record(instance)
    assert raised
    expected = DAGSTERS_PATH if internal == "_check_spec" else {**DAGSTERS_PATH, "check_outputs": {"two_gate"}}
    assert recorded == expected


def test_read_back_on_a_context_without_the_internal_does_nothing() -> None:
    shortcuts.read_back(object(), KEYS)  # AttributeError inside: caught, Dagster reads lazily
    assert shortcuts.check_evaluation(dg.AssetCheckResult(asset_key="two", check_name="soft", passed=True), object()) is None
    assert shortcuts.check_output_may_be_skipped(object(), dg.AssetCheckKey(KEYS[1], "soft")) is False
