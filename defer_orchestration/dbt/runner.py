"""The entry point of every dbt process we start: ``python -m defer_orchestration.dbt.runner
<dbt args>`` is ``dbt <dbt args>`` plus one thing dbt has no flag for.

dbt reads a project's installed packages from ``<project>/<packages-install-path>``, a
setting of ``dbt_project.yml`` only. We never write into the user's project, and a
branch's packages live in a cache keyed by its lock (``dbt/packages.py``), so the
runner points dbt at another directory: with ``DEFER_ORCH_DBT_PACKAGES_DIR`` set, the
project named by ``--project-dir`` loads its packages from there. The dbt session child
(``dbt/session.py``) installs the same hook and sets the directory per command.

Every dbt process we start also compares *configured* (unrendered) database and schema
names in ``state:modified`` (dbt's behaviour flag
``state_modified_compare_more_unrendered_values``), whatever the project sets: a branch
builds into a database of its own (DuckDB: its own file), and with rendered names every
source would look modified against production's manifest, selecting the whole project.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from defer_orchestration.dbt import parse_cache

ENV_PACKAGES_DIR = "DEFER_ORCH_DBT_PACKAGES_DIR"

_current: dict[str, Any] = {"packages_dir": None, "project_dir": None, "parse_template": None}


def project_dir_of(args: Sequence[str]) -> str | None:
    """The ``--project-dir`` of a dbt command line."""
    for i, arg in enumerate(args):
        if arg == "--project-dir" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--project-dir="):
            return arg.split("=", 1)[1]
    return None


def set_packages_dir(packages_dir: str | None, project_dir: str | None) -> None:
    """Load ``project_dir``'s packages from ``packages_dir`` (None: dbt's own default)."""
    _current["packages_dir"] = packages_dir
    _current["project_dir"] = os.path.realpath(project_dir) if project_dir else None


def install_packages_hook() -> None:
    """Make dbt read the root project's packages from the directory last set.

    ``RuntimeConfig._get_project_directories`` lists the installed packages of a
    project; only the root project's dependencies are ever loaded, and only when its
    root is the project we set is the directory replaced. The dbt version is pinned
    (<1.12); if the method moves, the hook does nothing and dbt reports the packages
    as not installed, naming the directory it looked in.
    """
    from dbt.config import runtime

    original: Callable[[Any], Iterator[Path]] | None = getattr(runtime.RuntimeConfig, "_get_project_directories", None)
    if original is None or getattr(original, "_defer_orchestration", False):
        return
    unwrapped: Callable[[Any], Iterator[Path]] = original

    def project_directories(config: Any) -> Iterator[Path]:
        packages_dir, project_dir = _current["packages_dir"], _current["project_dir"]
        if packages_dir and project_dir and os.path.realpath(config.project_root) == project_dir:
            root = Path(packages_dir)
            if root.is_dir():
                yield from (p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith("__"))
            return
        yield from unwrapped(config)

    project_directories._defer_orchestration = True  # type: ignore[attr-defined]
    setattr(runtime.RuntimeConfig, "_get_project_directories", project_directories)  # noqa: B010


def install_state_flags_hook() -> None:
    """Turn on ``state_modified_compare_more_unrendered_values`` in the flags dbt reads
    from the project (``read_project_flags``, where ``dbt.cli.flags`` and ``dbt.flags``
    find it)."""
    from dbt.cli import flags as cli_flags
    from dbt.config import project

    original: Callable[[str, str], Any] = project.read_project_flags
    if getattr(original, "_defer_orchestration", False):
        return

    def read_project_flags(project_dir: str, profiles_dir: str) -> Any:
        found = original(project_dir, profiles_dir)
        found.state_modified_compare_more_unrendered_values = True
        return found

    read_project_flags._defer_orchestration = True  # type: ignore[attr-defined]
    project.read_project_flags = read_project_flags
    cli_flags.read_project_flags = read_project_flags  # type: ignore[attr-defined]


def set_parse_template(template: Mapping[str, str] | None) -> None:
    """Start the next parse from this template (``dbt/parse_cache.template_for``) when the
    target directory holds no parse of its own; None: dbt's own behaviour."""
    _current["parse_template"] = dict(template) if template else None


def install_parse_template_hook() -> None:
    """Let ``ManifestLoader.read_manifest_for_partial_parse`` fall back to the template
    set by :func:`set_parse_template` (see ``dbt/parse_cache.py``).

    With a previous parse in the target directory, or no template, dbt reads as always.
    Otherwise the template is adapted to the run's schema and goes through dbt's own
    checks (version, vars, project files, env vars), plus one of ours replacing dbt's
    profile check: the run's connection with the schema put back must be the template's.
    Anything unexpected rejects it, and dbt parses in full. One line in the command's
    output says which.
    """
    from dbt.constants import PARTIAL_PARSE_FILE_NAME
    from dbt.flags import get_flags
    from dbt.parser import manifest as manifest_module

    loader_class = manifest_module.ManifestLoader
    original: Callable[[Any], Any] = loader_class.read_manifest_for_partial_parse
    if getattr(original, "_defer_orchestration", False):
        return

    def read_manifest_for_partial_parse(loader: Any) -> Any:
        template = _current["parse_template"]
        flags: Any = get_flags()  # type: ignore[no-untyped-call]
        own = flags.PARTIAL_PARSE_FILE_PATH or os.path.join(loader.root_project.project_target_path, PARTIAL_PARSE_FILE_NAME)
        if template is None or not flags.PARTIAL_PARSE or os.path.exists(own):
            return original(loader)
        try:
            manifest, verdict = _adapted_template(loader, template, manifest_module)
        except Exception as exc:  # a template is an optimisation: never fail the parse
            manifest, verdict = None, f"rejected: could not be read ({type(exc).__name__}: {exc})"
        print(f"{parse_cache.TEMPLATE_LINE}template {template.get('sha', '')[:12]}: {verdict}", flush=True)
        return manifest

    read_manifest_for_partial_parse._defer_orchestration = True  # type: ignore[attr-defined]
    setattr(loader_class, "read_manifest_for_partial_parse", read_manifest_for_partial_parse)  # noqa: B010


def _adapted_template(loader: Any, template: Mapping[str, str], manifest_module: Any) -> tuple[Any, str]:
    """The template as the run's own previous parse would be, and ``used``; or None and
    why it was rejected."""
    import pprint
    from datetime import datetime, timezone

    from dbt.artifacts.resources.base import FileHash
    from dbt.contracts.graph.manifest import Manifest

    token, schema = template["token"], template["schema"]
    with open(template["path"], "rb") as handle:
        data = handle.read()
    if parse_cache.transformed(data, token):
        return None, "rejected: the project transforms the schema name rather than embedding it"
    raw = parse_cache.unpack_substituted(data, token, schema, manifest_module.extended_msgpack_decoder)
    manifest = Manifest.from_msgpack(
        manifest_module.extended_mashumaro_encoder(raw), decoder=manifest_module.extended_mashumuro_decoder
    )
    # dbt's profile check, for the connection the template was made with: the run's own
    # with its schema put back.
    connection = parse_cache.substitute(list(loader.root_project.credentials.connection_info()), schema, token)
    connection.sort()
    if manifest.state_check.profile_hash != FileHash.from_contents(pprint.pformat(connection)):
        return None, "rejected: it was made for another connection (profile) than this run's"
    manifest.state_check.profile_hash = loader.manifest.state_check.profile_hash
    valid, reason = loader.is_partial_parsable(manifest)
    if not valid:
        return None, f"rejected: {str(getattr(reason, 'name', reason)).replace('_', ' ')}"
    manifest.metadata.generated_at = datetime.now(timezone.utc).replace(tzinfo=None)
    manifest.metadata.invocation_id = manifest_module.get_invocation_id()
    return manifest, "used"


def main(argv: Sequence[str] | None = None) -> None:
    """``dbt`` with the packages directory of ``DEFER_ORCH_DBT_PACKAGES_DIR``."""
    args = list(sys.argv[1:] if argv is None else argv)
    install_state_flags_hook()
    packages_dir = os.environ.get(ENV_PACKAGES_DIR) or None
    if packages_dir:
        set_packages_dir(packages_dir, project_dir_of(args) or os.getcwd())
        install_packages_hook()
    from dbt.cli.main import cli

    cli.main(args=args, prog_name="dbt")


if __name__ == "__main__":
    main()
