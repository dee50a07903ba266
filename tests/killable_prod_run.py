"""A production run in a process of its own, for tests that SIGKILL it (tests/test_event_storage.py).

``python tests/killable_prod_run.py ARGS_JSON`` loads the Dagster instance of
``dagster_home`` (its ``dagster.yaml``: the storages under test), the product's
definitions over ``dbt_project_dir`` and runs ``prod_build_job`` in this process, the
way a run worker executes it. Every batch the event log storage stores is appended to
``progress`` (one JSON line per event: kind, asset key, check name, step, run id) once
the storage call has *returned*: that file is what the run had reported, committed,
before it died. After the ``pause_after``-th materialization of the dbt step the
process writes ``paused`` into ``progress`` and sleeps, so the test kills it between
two writes at a known point. Nothing here changes how events are stored.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def _event_line(event: Any) -> dict[str, Any]:
    dagster_event = event.dagster_event
    data = dagster_event.event_specific_data if dagster_event is not None else None
    check_name = getattr(data, "check_name", None)
    key = dagster_event.asset_key if dagster_event is not None else None
    if key is None and check_name is not None:
        key = data.asset_key
    return {
        "kind": dagster_event.event_type_value if dagster_event is not None else "LOG_MESSAGE",
        "asset_key": key.to_user_string() if key is not None else None,
        "check_name": check_name,
        "step_key": event.step_key,
        "run_id": event.run_id,
    }


def main(args: dict[str, Any]) -> None:
    """Run ``prod_build_job`` recording what was stored; pause after N dbt materializations."""
    import dagster as dg

    from defer_orchestration import constants as c
    from defer_orchestration.definitions import build_definitions
    from defer_orchestration.resources import DeferOrchSettings

    progress = Path(args["progress"])
    pause_after = int(args["pause_after"])
    settings = DeferOrchSettings(home=args["home"], dbt_project_dir=args["dbt_project_dir"])
    defs = build_definitions(settings)
    with dg.DagsterInstance.from_config(args["dagster_home"]) as instance:
        storage = instance.event_log_storage
        stored = storage.store_event_batch  # the storage's own method; store_event goes through it too
        seen = {"dbt_materializations": 0}

        def store_event_batch(events: Any) -> None:
            stored(events)  # returned: committed
            lines = [_event_line(event) for event in events]
            with progress.open("a", encoding="utf-8") as out:
                out.writelines(json.dumps(line) + "\n" for line in lines)
            seen["dbt_materializations"] += sum(
                1 for line in lines
                if line["kind"] == "ASSET_MATERIALIZATION" and line["step_key"] == c.PROD_DBT_OP
            )
            if seen["dbt_materializations"] >= pause_after:
                with progress.open("a", encoding="utf-8") as out:
                    out.write("paused\n")
                time.sleep(600)

        storage.store_event_batch = store_event_batch  # type: ignore[method-assign]
        defs.resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(instance=instance, raise_on_error=False)
    with progress.open("a", encoding="utf-8") as out:
        out.write("finished\n")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
