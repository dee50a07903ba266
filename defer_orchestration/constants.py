"""Names shared by the code and the tests, so both always agree."""

from __future__ import annotations

# Assets, groups and jobs.
PROD_MANIFEST_ASSET = "prod_manifest"
RAW_GROUP = "raw_data"
PROD_DBT_GROUP = "prod_dbt"
PROD_BUILD_JOB = "prod_build_job"
PROD_BUILD_SCHEDULE = "prod_build_schedule"
BRANCH_CI_JOB = "branch_ci_job"
BRANCH_CI_SENSOR = "branch_ci_sensor"
BRANCH_TEARDOWN_JOB = "branch_teardown_job"
BRANCH_TEARDOWN_SENSOR = "branch_teardown_sensor"
MAIN_BRANCH_SENSOR = "main_branch_sensor"
BRANCH_PARSE_TEMPLATE_JOB = "branch_parse_template_job"
BRANCH_PARSE_TEMPLATE_SENSOR = "branch_parse_template_sensor"
BRANCH_SCHEMA_TTL_SCHEDULE = "branch_schema_ttl_schedule"

# Ops and steps (run configs and the tests address them by these names).
BRANCH_BUILD_OP = "branch_build"
BRANCH_TEARDOWN_OP = "branch_teardown"
BRANCH_PARSE_TEMPLATE_OP = "branch_parse_template"
RAW_TABLES_OP = "raw_tables"
PROD_DBT_OP = "prod_dbt_models"

# The Dagster concurrency pool every warehouse-opening step holds when the warehouse
# serialises writers (DuckDB: limit 1 in dagster.yaml), and the pools of a warehouse that
# takes many writers (PostgreSQL): branch builds and teardowns share `branch_builds` (4
# slots: `dagster instance concurrency set branch_builds 4`, as `make dev-pg` does; a
# dagster.yaml sets only the default limit), production builds hold `production` (1).
WAREHOUSE_POOL = "duckdb_warehouse"
BRANCH_POOL = "branch_builds"
PRODUCTION_POOL = "production"

# dbt targets the orchestration writes into its generated profiles.yml.
PROD_TARGET = "prod"
BRANCH_TARGET = "branch"
PROD_SCHEMA = "prod"

# The branch step's metadata entry holding the pull-request report (branch/pr_report.py).
PR_REPORT_METADATA = "pr_report"

# Run tags.
BRANCH_TAG = "defer_orchestration/branch"
SHA_TAG = "defer_orchestration/sha"
SCHEMA_TAG = "defer_orchestration/schema"
MODE_TAG = "defer_orchestration/mode"

# Environment variables (read only by resources.py, when Dagster loads definitions).
ENV_HOME = "DEFER_ORCH_HOME"
ENV_ARTIFACT_STORE = "DEFER_ORCH_ARTIFACT_STORE"
ENV_DBT_PROJECT_DIR = "DEFER_ORCH_DBT_PROJECT_DIR"
ENV_RAW_SCALE = "DEFER_ORCH_RAW_SCALE"
ENV_PROD_CRON = "DEFER_ORCH_PROD_CRON"
ENV_GIT_REPO = "DEFER_ORCH_GIT_REPO"
ENV_MAIN_BRANCH = "DEFER_ORCH_MAIN_BRANCH"
ENV_PROJECT_SUBDIR = "DEFER_ORCH_PROJECT_SUBDIR"
ENV_BRANCH_INCLUDE = "DEFER_ORCH_BRANCH_INCLUDE"
ENV_BRANCH_EXCLUDE = "DEFER_ORCH_BRANCH_EXCLUDE"
ENV_SCHEMA_TTL_DAYS = "DEFER_ORCH_SCHEMA_TTL_DAYS"
ENV_WAREHOUSE = "DEFER_ORCH_WAREHOUSE"
ENV_DBT_VARS = "DEFER_ORCH_DBT_VARS"
ENV_PG_DSN = "DEFER_ORCH_PG_DSN"
ENV_CI_PGUSER = "DEFER_ORCH_CI_PGUSER"
ENV_CI_PGPASSWORD = "DEFER_ORCH_CI_PGPASSWORD"
ENV_REQUIRE_CI_ROLE = "DEFER_ORCH_REQUIRE_CI_ROLE"
ENV_PROD_COMMANDS = "DEFER_ORCH_PROD_COMMANDS"
ENV_PUBLISH_ON = "DEFER_ORCH_PUBLISH_ON"
ENV_SENSOR_INTERVAL_S = "DEFER_ORCH_SENSOR_INTERVAL_S"
# The jobs' executor: in_process (default) or celery (deploy/celery/), and the Celery broker
# and result backend (one Redis URL) the celery executor and its workers share.
ENV_EXECUTOR = "DEFER_ORCH_EXECUTOR"
ENV_CELERY_BROKER = "DEFER_ORCH_CELERY_BROKER"
DEFAULT_SENSOR_INTERVAL_S = 30

DEFAULT_HOME_DIRNAME = ".defer_orchestration"
DEFAULT_PROD_CRON = "0 3 * * *"
