"""Wiring only: ``defs`` is the code location's ``Definitions``.

``defs`` is built lazily the first time it is accessed (PEP 562 module ``__getattr__``),
so importing this module reads no environment and runs no dbt; Dagster's loader (via
``workspace.yaml``'s ``attribute: defs``) triggers the build. Tests call
:func:`build_definitions` with explicit settings instead.
"""

from __future__ import annotations

import functools
import os

import dagster as dg

from defer_orchestration import constants as c
from defer_orchestration.defs.assets.prod_dbt import build_prod_dbt_assets
from defer_orchestration.defs.assets.prod_manifest import build_prod_manifest_asset
from defer_orchestration.demo.assets import raw_tables
from defer_orchestration.defs.jobs import branch_ci_job, branch_teardown_job, prod_build_job
from defer_orchestration.dbt.project import prepare_manifest
from defer_orchestration.resources import (
    BranchCiSettings,
    DeferOrchSettings,
    branch_settings_from_env,
    settings_from_env,
)
from defer_orchestration.defs.schedules import (
    build_branch_schema_ttl_schedule,
    build_prod_build_schedule,
)
from defer_orchestration.defs.sensors import build_branch_ci_sensor, build_branch_teardown_sensor


def build_definitions(
    settings: DeferOrchSettings | None = None,
    branch_settings: BranchCiSettings | None = None,
    *,
    prod_cron: str | None = None,
) -> dg.Definitions:
    """All assets, jobs, schedules and sensors for the configured dbt project."""
    runtime_settings = settings if settings is not None else settings_from_env()
    load_settings = settings if settings is not None else settings_from_env(resolve=True)
    prod_dbt = build_prod_dbt_assets(prepare_manifest(load_settings))
    interval = int(os.environ.get(c.ENV_SENSOR_INTERVAL_S) or c.DEFAULT_SENSOR_INTERVAL_S)
    return dg.Definitions(
        assets=[raw_tables, prod_dbt, build_prod_manifest_asset(prod_dbt)],
        jobs=[prod_build_job, branch_ci_job, branch_teardown_job],
        schedules=[build_prod_build_schedule(prod_cron), build_branch_schema_ttl_schedule()],
        sensors=[build_branch_ci_sensor(interval), build_branch_teardown_sensor(interval)],
        # One process per run: every step holds the single-slot warehouse pool anyway, so a
        # process per step would only add ~5 s of start-up to each.
        executor=dg.in_process_executor,
        resources={
            "settings": runtime_settings,
            "branch_settings": branch_settings or branch_settings_from_env(),
        },
    )


@functools.cache
def _defs() -> dg.Definitions:
    return build_definitions()


def __getattr__(name: str) -> dg.Definitions:
    if name == "defs":
        return _defs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
