
"""Another dbt project, configured only through settings; a failing build publishes nothing."""

from __future__ import annotations

import pytest
import os
import time
from pathlib import Path

import dagster as dg

from defer_orchestration import constants as c
from defer_orchestration.definitions import build_definitions
from defer_orchestration.defs.manifest_resolution import latest_published_manifest
from defer_orchestration.resources import DeferOrchSettings

pytestmark = pytest.mark.dbt  # runs dbt (see tests/conftest.py)


def _write_project(root: Path) -> Path:
    """A minimal dbt project with its own profile name and no profiles.yml at all."""
    (root / "models").mkdir(parents=True)
    (root / "dbt_project.yml").write_text(
        "name: tiny\nprofile: tiny_warehouse\nconfig-version: 2\nversion: '1.0'\n"
        "models:\n  tiny:\n    +materialized: table\n"
    )
    (root / "models" / "numbers.sql").write_text("select range as n from range(10)\n")
    (root / "models" / "evens.sql").write_text(
        "select n from {{ ref('numbers') }} where n % 2 = 0\n"
    )
    return root


def test_a_second_project_builds_by_configuration_alone(tmp_path: Path) -> None:
    project = _write_project(tmp_path / "tiny")
    settings = DeferOrchSettings(home=str(tmp_path / "home"), dbt_project_dir=str(project))
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        defs = build_definitions(settings)
        keys = {k.to_user_string() for k in defs.get_repository_def().asset_graph.get_all_asset_keys()}
        assert {"numbers", "evens", c.PROD_MANIFEST_ASSET} <= keys

        first = defs.resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(instance=instance)
        assert first.success
        published = latest_published_manifest(instance)
        with settings.warehouse().connect(read_only=True) as conn:
            assert conn.row_count("prod", "evens") == 5

        # A failing model: the build fails, prod_manifest is skipped, the old version stays.
        time.sleep(0.01)
        bad = project / "models" / "broken.sql"
        bad.write_text("select * from {{ ref('numbers') }} where no_such_column > 0\n")
        os.utime(bad)  # newer than the parsed manifest, so the definitions reparse
        defs = build_definitions(settings)
        second = defs.resolve_job_def(c.PROD_BUILD_JOB).execute_in_process(
            instance=instance, raise_on_error=False
        )
        assert not second.success
        started = {e.step_key for e in second.all_events if e.event_type_value == "STEP_START"}
        assert c.PROD_MANIFEST_ASSET not in started
        failure = next(e for e in second.all_events if e.is_step_failure)
        data = failure.event_specific_data
        assert data.user_failure_data is not None, data.error.to_string()
        assert "No manifest is published" in data.user_failure_data.description
        assert latest_published_manifest(instance).version == published.version

    # The project directory was not written to: no target/, logs/ or profiles.yml appeared.
    assert sorted(p.name for p in project.iterdir()) == ["dbt_project.yml", "models"]
