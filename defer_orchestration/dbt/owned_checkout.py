"""What the product sets in a checkout it owns, the way dbt documents it, so that no dbt
internal needs replacing.

A worktree of the watched repository (production's commit, a branch's commit, a merge
base) is ours for the length of one run and removed after it. Before dbt runs there:

- its packages: the project's own ``packages-install-path`` is a link to the packages
  prepared for the run (``dbt/packages.place_in_checkout``), with the resolved lock
  beside the package files;
- its ``state:modified`` comparison: the project flag
  ``state_modified_compare_more_unrendered_values`` is on unless the project sets it
  itself. A branch builds into a schema (and on DuckDB a database) of its own; compared
  rendered, every source and every node whose config names a schema would look modified
  against production's manifest, selecting the whole project. Every checkout the product
  parses gets the same flag, so production's manifest and a branch's parse compare alike.

A project used in place (no repository) is the user's directory and is never written:
the README documents the same two settings as lines to add to its ``dbt_project.yml``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from defer_orchestration.dbt.packages import place_in_checkout
from defer_orchestration.lib.errors import ConfigurationError

STATE_FLAG = "state_modified_compare_more_unrendered_values"


def with_state_flag(text: str) -> str | None:
    """``dbt_project.yml``'s text with the state flag on; None when the project already
    decides it (on or off: an explicit choice is the user's)."""
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"dbt_project.yml is not valid YAML ({exc}); fix it and push again.") from exc
    if not isinstance(document, dict):
        raise ConfigurationError("dbt_project.yml does not hold a YAML mapping; is it a dbt project?")
    flags = document.get("flags")
    if isinstance(flags, dict) and STATE_FLAG in flags:
        return None
    if flags is None and "flags" not in document:
        # No flags section: append one, keeping the user's file (comments included) as it is.
        return text.rstrip("\n") + f"\n\nflags:\n  {STATE_FLAG}: true\n"
    document["flags"] = {**(flags if isinstance(flags, dict) else {}), STATE_FLAG: True}
    return yaml.safe_dump(document, sort_keys=False)


def prepare_owned_checkout(project_dir: Path, packages: Path | None, cache_root: Path) -> None:
    """Ready a project in a checkout the product owns for dbt (see the module docstring)."""
    place_in_checkout(project_dir, packages, cache_root)
    project_file = project_dir / "dbt_project.yml"
    changed = with_state_flag(project_file.read_text(encoding="utf-8"))
    if changed is not None:
        project_file.write_text(changed, encoding="utf-8")
