"""dbt arguments for branch builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from defer_orchestration.lib.errors import ConfigurationError

from defer_orchestration.dbt import args as dbt_args
from defer_orchestration.dbt.args import StateArgs


def test_build_defers_to_the_defer_state_and_compares_to_the_compare_state() -> None:
    state = StateArgs(compare_state=Path("/mb"), defer_state=Path("/prod"))
    args = dbt_args.build_args("state:modified+", None, state)
    assert args == [
        "build", "--select", "state:modified+", "--state", "/mb",
        "--defer", "--defer-state", "/prod",
    ]  # fmt: skip


def test_one_state_directory_is_passed_once() -> None:
    # dbt loads every state directory it is given; --state doubles as the deferral state.
    state = StateArgs(compare_state=Path("/prod"), defer_state=Path("/prod"))
    args = dbt_args.build_args("state:modified+", None, state)
    assert args == ["build", "--select", "state:modified+", "--state", "/prod", "--defer"]


def test_deferral_without_a_comparison_names_the_defer_state() -> None:
    args = dbt_args.build_args("orders+", None, StateArgs(compare_state=None, defer_state=Path("/prod")))
    assert args == ["build", "--select", "orders+", "--defer", "--defer-state", "/prod"]


def test_favor_state_full_refresh_and_exclude() -> None:
    state = StateArgs(compare_state=Path("/p"), defer_state=Path("/p"), favor_state=True)
    args = dbt_args.build_args("state:modified+ tag:x", "orders", state, full_refresh=True)
    assert args[:5] == ["build", "--select", "state:modified+", "tag:x", "--exclude"]
    assert "--favor-state" in args and args[-1] == "--full-refresh"


def test_full_build_has_no_state_flags() -> None:
    args = dbt_args.build_args("", None, StateArgs(None, None))
    assert args == ["build"]


def test_ls_never_defers() -> None:
    args = dbt_args.ls_args("state:modified+", None, StateArgs(Path("/s"), Path("/s")))
    assert "--defer" not in args and args[args.index("--state") + 1] == "/s"
    assert args[args.index("--output") + 1] == "json"


def test_state_selector_detection() -> None:
    assert dbt_args.uses_state_selector("state:modified+")
    assert dbt_args.uses_state_selector("orders", "result:error")
    assert not dbt_args.uses_state_selector("orders+")


def test_parse_ls_output_ignores_log_lines() -> None:
    lines = [
        "12:00:00  Running with dbt=1.11",
        '{"unique_id": "model.shop.orders", "resource_type": "model", "name": "orders"}',
        "{not json",
        '{"no_id": 1}',
    ]
    assert dbt_args.parse_ls_output(lines) == [
        {"unique_id": "model.shop.orders", "resource_type": "model", "name": "orders"}
    ]


def test_vars_come_from_yaml_or_json_and_launch_values_win() -> None:
    from defer_orchestration.dbt.args import merge_vars, parse_vars

    assert parse_vars("", what="X") == {}
    assert parse_vars('{"a": 1}', what="X") == {"a": 1}
    assert parse_vars("{a: 1, b: [x]}", what="X") == {"a": 1, "b": ["x"]}
    assert merge_vars({"a": 1, "b": 2}, {"b": 3}) == {"a": 1, "b": 3}
    for bad in ("[1, 2]", "a: [", "just text"):
        with pytest.raises(ConfigurationError, match="X"):
            parse_vars(bad, what="X")


def test_prod_commands_are_checked() -> None:
    from defer_orchestration.dbt.args import parse_prod_commands

    assert parse_prod_commands("", what="P") == ("build",)
    assert parse_prod_commands(" seed , build ", what="P") == ("seed", "build")
    with pytest.raises(ConfigurationError, match="'deps'.*seed,build"):
        parse_prod_commands("deps,build", what="P")


def test_vars_reach_the_command_line() -> None:
    from defer_orchestration.dbt.cli import DbtPaths, dbt_arguments

    paths = DbtPaths(Path("/p"), Path("/pr"), Path("/t"), Path("/l"), vars={"b": 1, "a": "x"})
    args = dbt_arguments(["parse"], paths, target="branch")
    assert args[:3] == ["parse", "--vars", '{"a": "x", "b": 1}']
    assert "--vars" not in dbt_arguments(["parse"], DbtPaths(Path("/p"), Path("/pr"), Path("/t"), Path("/l")), target=None)
