"""Generated profiles: the orchestration supplies connection and targets itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from defer_orchestration.lib.errors import ConfigurationError
from defer_orchestration.dbt.profiles import duckdb_output, profile_name, write_profiles_dir


def test_profile_name_comes_from_dbt_project_yml(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: jaffle\nprofile: analytics\n")
    assert profile_name(tmp_path) == "analytics"
    (tmp_path / "dbt_project.yml").write_text("name: jaffle\n")
    assert profile_name(tmp_path) == "jaffle"


def test_not_a_dbt_project_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="DEFER_ORCH_DBT_PROJECT_DIR"):
        profile_name(tmp_path)


def test_written_profile_has_every_target(tmp_path: Path) -> None:
    outputs = {
        "prod": duckdb_output(tmp_path / "w.duckdb", "prod"),
        "branch": duckdb_output(tmp_path / "w.duckdb", "br_x_0123456789"),
    }
    dest = write_profiles_dir(tmp_path / "profiles", "shop", outputs, default_target="prod")
    loaded = yaml.safe_load((dest / "profiles.yml").read_text())
    assert loaded["shop"]["target"] == "prod"
    assert loaded["shop"]["outputs"]["branch"]["schema"] == "br_x_0123456789"
    assert loaded["shop"]["outputs"]["prod"]["path"] == str(tmp_path / "w.duckdb")
