"""Wiring only: ``defs`` is the code location's ``Definitions``.

``defs`` is built lazily the first time it is accessed (PEP 562 module ``__getattr__``),
so importing this module reads no environment and runs no dbt; Dagster's loader (via
``workspace.yaml``'s ``attribute: defs``) triggers the build. Tests call
:func:`build_definitions` with explicit settings instead.
"""

from __future__ import annotations

import functools

import dagster as dg

from defer_orchestration.defs.assets.prod_dbt import build_prod_dbt_assets
from defer_orchestration.defs.assets.prod_manifest import build_prod_manifest_asset
from defer_orchestration.defs.assets.prod_sources import build_prod_sources, external_source_keys
from defer_orchestration import constants as c
from defer_orchestration.defs.jobs import (
    build_branch_ci_job,
    build_branch_parse_template_job,
    build_branch_teardown_job,
    prod_build_job,
)
from defer_orchestration.defs.executor import build_executor
from defer_orchestration.defs.schedules import build_branch_schema_ttl_schedule, build_prod_build_schedule
from defer_orchestration.defs.sensors import (
    build_branch_ci_sensor,
    build_branch_parse_template_sensor,
    build_branch_teardown_sensor,
    build_main_branch_sensor,
)
from defer_orchestration.demo.assets import build_raw_tables
from defer_orchestration.production.head import head_project_vars, prepare_head_manifest
from defer_orchestration.resources import (
    BranchCiSettings,
    DeferOrchSettings,
    LoadSettings,
    branch_settings_from_env,
    load_settings_from_env,
    settings_from_env,
)


def build_definitions(
    settings: DeferOrchSettings | None = None,
    branch_settings: BranchCiSettings | None = None,
    *,
    load: LoadSettings | None = None,
) -> dg.Definitions:
    """All assets, jobs, schedules and sensors for the configured dbt project."""
    runtime_settings = settings if settings is not None else settings_from_env()
    load_time = settings if settings is not None else settings_from_env(resolve=True)
    runtime_branch = branch_settings or branch_settings_from_env()
    load_branch = branch_settings or branch_settings_from_env(resolve=True)
    load = load or load_settings_from_env()
    # The asset graph is main's head, as production builds it (a project outside git: in place).
    manifest = prepare_head_manifest(load_time.core(), load_branch.repo_settings_or_none(load_time))
    warehouse = load_time.core().warehouse
    # DuckDB takes one writer: every warehouse step shares its single-slot pool. A warehouse
    # with many writers (PostgreSQL) runs branch builds side by side, production apart.
    serial = warehouse.serialise_writers
    branch_pool = c.WAREHOUSE_POOL if serial else c.BRANCH_POOL
    production_pool = c.WAREHOUSE_POOL if serial else c.PRODUCTION_POOL
    # The synthetic sources are the bundled demo project's; never written into a user's warehouse.
    demo_assets = [build_raw_tables(production_pool, warehouse.kind)] if load_time.is_bundled_project() else []
    prod_dbt = build_prod_dbt_assets(
        manifest, pool=production_pool,
        project_vars=head_project_vars(load_time.core(), load_branch.repo_settings_or_none(load_time)),
        produced_sources=[key for assets in demo_assets for key in assets.keys],
    )
    # dbt sources loaded outside Dagster: observable, so their data versions reach stale status.
    sources = build_prod_sources(external_source_keys(prod_dbt, [k for a in demo_assets for k in a.keys]))
    return dg.Definitions(
        assets=[*demo_assets, *sources, prod_dbt, build_prod_manifest_asset(prod_dbt)],
        jobs=[
            prod_build_job, build_branch_ci_job(branch_pool), build_branch_teardown_job(branch_pool),
            build_branch_parse_template_job(),
        ],
        schedules=[build_prod_build_schedule(load.prod_cron), build_branch_schema_ttl_schedule()],
        sensors=[
            build_branch_ci_sensor(load.sensor_interval_s),
            build_branch_teardown_sensor(load.sensor_interval_s),
            build_main_branch_sensor(load.sensor_interval_s),
            build_branch_parse_template_sensor(load.sensor_interval_s),
        ],
        # One process per run: every step holds the single-slot warehouse pool anyway, so a
        # process per step would only add ~5 s of start-up to each. DEFER_ORCH_EXECUTOR=celery
        # sends steps to Celery workers on other hosts (deploy/celery/).
        executor=build_executor(load.executor),
        resources={
            "settings": runtime_settings,
            "branch_settings": runtime_branch,
        },
    )


@functools.cache
def _defs() -> dg.Definitions:
    return build_definitions()


def __getattr__(name: str) -> dg.Definitions:
    if name == "defs":
        return _defs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
