"""Generated profiles: the orchestration supplies connection and targets itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from defer_orchestration.lib.errors import ConfigurationError
from defer_orchestration.dbt.profiles import profile_name, write_profiles, write_profiles_dir
from defer_orchestration.warehouse.duckdb import DuckDBWarehouse


def test_profile_name_comes_from_dbt_project_yml(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: jaffle\nprofile: analytics\n")
    assert profile_name(tmp_path) == "analytics"
    (tmp_path / "dbt_project.yml").write_text("name: jaffle\n")
    assert profile_name(tmp_path) == "jaffle"


def test_not_a_dbt_project_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="DEFER_ORCH_DBT_PROJECT_DIR"):
        profile_name(tmp_path)


def test_written_profile_has_every_target(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    outputs = {
        "prod": warehouse.dbt_output("prod", threads=2),
        "branch": warehouse.dbt_output("br_x_0123456789", threads=2),
    }
    dest = write_profiles_dir(tmp_path / "profiles", "shop", outputs, default_target="prod")
    loaded = yaml.safe_load((dest / "profiles.yml").read_text())
    assert loaded["shop"]["target"] == "prod"
    assert loaded["shop"]["outputs"]["branch"]["schema"] == "br_x_0123456789"
    assert loaded["shop"]["outputs"]["prod"]["path"] == str(tmp_path / "w.duckdb")


def test_profiles_for_a_project_take_the_targets_from_the_warehouse(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: jaffle\nprofile: analytics\n")
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    dest = write_profiles(
        tmp_path / "profiles", tmp_path, {"branch": "br_x_0123456789"}, "branch", warehouse=warehouse, threads=3
    )
    loaded = yaml.safe_load((dest / "profiles.yml").read_text())
    assert loaded["analytics"]["outputs"]["branch"] == {
        "type": "duckdb", "path": str(tmp_path / "w.duckdb"), "schema": "br_x_0123456789", "threads": 3,
    }
