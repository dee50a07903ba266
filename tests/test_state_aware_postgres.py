"""State-aware production on PostgreSQL (issue 24): the scenarios of ``state_aware_scenarios.py``
over one production of ``tests/fixtures/state_project``, its sources fingerprinted by
``xmin``. Real git, real dbt, a real PostgreSQL server (skips, saying why, without one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import warehouse_settings
from state_aware_env import StateEnv, state_env
from state_aware_scenarios import *  # noqa: F401,F403  (the scenarios, in order)

pytestmark = [pytest.mark.dbt, pytest.mark.postgres]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[StateEnv]:
    warehouse = warehouse_settings(request, "postgres", "state_aware")
    with state_env(tmp_path_factory.mktemp("state_postgres"), warehouse) as built:
        yield built
