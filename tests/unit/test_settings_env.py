"""The setting names the issues give are read from exactly those environment variables,
and bad values fail with a message naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from defer_orchestration.lib.errors import ConfigurationError
from defer_orchestration.lib.settings import PublishOn
from defer_orchestration.resources import load_settings_from_env, settings_from_env


def test_issue_settings_come_from_their_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "DEFER_ORCH_HOME": str(tmp_path),
        "DEFER_ORCH_DBT_VARS": "{include_experimental: true}",
        "DEFER_ORCH_PROD_COMMANDS": "seed,build",
        "DEFER_ORCH_PUBLISH_ON": "models_built",
        "DEFER_ORCH_WAREHOUSE": "postgres",
        "PGHOST": "db.internal", "PGPORT": "6543", "PGUSER": "prod", "PGPASSWORD": "s3cret", "PGDATABASE": "analytics",
        "DEFER_ORCH_CI_PGUSER": "ci", "DEFER_ORCH_CI_PGPASSWORD": "ci-s3cret", "DEFER_ORCH_REQUIRE_CI_ROLE": "true",
        "DEFER_ORCH_SENSOR_INTERVAL_S": "7",
        "DEFER_ORCH_PROD_CRON": "15 * * * *",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    core = settings_from_env(resolve=True).core()
    assert core.dbt_vars == {"include_experimental": True}
    assert core.prod_commands == ("seed", "build") and core.publish_on is PublishOn.MODELS_BUILT
    assert core.warehouse.kind == "postgres"
    assert core.warehouse.describe() == "PostgreSQL database 'analytics' at db.internal:6543 as 'prod'"
    assert "s3cret" not in repr(core)
    ci = core.warehouse
    assert (ci.ci_user, ci.ci_password, ci.require_ci_role) == ("ci", "ci-s3cret", True)  # type: ignore[attr-defined]
    assert ci.dbt_branch_output("br_x_0123456789", "br_x_0123456789", threads=1)["user"] == "ci"
    assert ci.branch_dbt_env() == {"DEFER_ORCH_DBT_CI_PGPASSWORD": "ci-s3cret"}
    load = load_settings_from_env()
    assert (load.sensor_interval_s, load.prod_cron) == (7, "15 * * * *")


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("DEFER_ORCH_PUBLISH_ON", "always", "DEFER_ORCH_PUBLISH_ON"),
        ("DEFER_ORCH_PROD_COMMANDS", "deps", "DEFER_ORCH_PROD_COMMANDS"),
        ("DEFER_ORCH_DBT_VARS", "[1, 2]", "DEFER_ORCH_DBT_VARS"),
        ("DEFER_ORCH_WAREHOUSE", "oracle", "DEFER_ORCH_WAREHOUSE"),
        ("DEFER_ORCH_REQUIRE_CI_ROLE", "maybe", "DEFER_ORCH_REQUIRE_CI_ROLE"),
    ],
)
def test_bad_values_name_their_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, named: str) -> None:
    monkeypatch.setenv("DEFER_ORCH_HOME", str(tmp_path))
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=named):
        settings_from_env(resolve=True).core()


def test_a_bad_sensor_interval_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFER_ORCH_SENSOR_INTERVAL_S", "soon")
    with pytest.raises(ConfigurationError, match="DEFER_ORCH_SENSOR_INTERVAL_S"):
        load_settings_from_env()
