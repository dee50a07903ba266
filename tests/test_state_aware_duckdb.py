"""State-aware production on DuckDB (issue 24): the scenarios of ``state_aware_scenarios.py``
over one production of ``tests/fixtures/state_project``. Real git, real dbt, real DuckDB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from state_aware_env import StateEnv, state_env
from state_aware_scenarios import *  # noqa: F401,F403  (the scenarios, in order)

pytestmark = pytest.mark.dbt  # runs dbt (see tests/conftest.py)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StateEnv]:
    with state_env(tmp_path_factory.mktemp("state_duckdb")) as built:
        yield built
