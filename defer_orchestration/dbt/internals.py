"""Every private dbt internal the product touches, behind the guard of
``lib/internals.py``: one place that names what it touches and the dbt-core versions it
was tested with, and falls back to dbt's own behaviour.

Used only inside the dbt session child (``dbt/session.py``), never in the Dagster process.

- **parse template** (:data:`PARSE_TEMPLATE`): lets a branch's first parse start from the
  parse template (``dbt/parse_cache.py``). Touches ``dbt.parser.manifest.ManifestLoader``
  (``read_manifest_for_partial_parse``, ``is_partial_parsable``, ``root_project``,
  ``manifest.state_check``), ``dbt.parser.manifest.extended_msgpack_decoder`` /
  ``extended_mashumaro_encoder`` / ``extended_mashumuro_decoder`` / ``get_invocation_id``,
  ``dbt.contracts.graph.manifest.Manifest.from_msgpack``,
  ``dbt.artifacts.resources.base.FileHash`` and ``dbt.flags.get_flags().PARTIAL_PARSE_FILE_PATH``.
  No public API: dbt reads a previous parse only from the target directory, and one made
  for another schema is rejected by its profile check. Off: dbt parses a branch's first
  run in full (slower, same result).
- **shared state loads** (:data:`SHARED_STATE_LOADS`): loads each ``--state`` directory
  once per session instead of once per command. Touches ``dbt.task.runnable.PreviousState``.
  No public API: ``dbtRunner(manifest=...)`` shares the parse but not the state. Off:
  dbt loads the production manifest for the listing and again for the build.

Tested with dbt-core: :data:`TESTED_DBT_CORE` (the versions of ``constraints/``). On any
other version, or with ``DEFER_ORCH_INTERNALS=off``, neither is installed and dbt runs
exactly as the ``dbt`` command does; the session logs one line naming what was switched
off. If a tested version's internals fail at run time, the parse template is rejected
(dbt parses in full) and the state loads fall back to dbt's loader.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from defer_orchestration.dbt import parse_cache
from defer_orchestration.lib.internals import Internal, enabled, why_off

# The versions of constraints/oldest.txt and constraints/newest.txt.
TESTED_DBT_CORE = ("1.11.2", "1.11.16")

PARSE_TEMPLATE = Internal(
    "the parse template (a branch's first parse starting from production's)",
    "dbt-core",
    TESTED_DBT_CORE,
    (
        "ManifestLoader.read_manifest_for_partial_parse", "ManifestLoader.is_partial_parsable",
        "Manifest.from_msgpack", "dbt.parser.manifest.extended_msgpack_decoder", "FileHash",
    ),
)
SHARED_STATE_LOADS = Internal(
    "state loaded once per dbt session",
    "dbt-core",
    TESTED_DBT_CORE,
    ("dbt.task.runnable.PreviousState",),
)

_current: dict[str, Any] = {"parse_template": None, "template_hook": False}


def install() -> list[str]:
    """Install every guarded internal this process may use; the names of those installed."""
    installed = []
    if enabled(SHARED_STATE_LOADS):
        _share_state_loads()
        installed.append(SHARED_STATE_LOADS.name)
    if enabled(PARSE_TEMPLATE):
        install_parse_template_hook()
        _current["template_hook"] = True
        installed.append(PARSE_TEMPLATE.name)
    return installed


def unused_template_line(template: Mapping[str, str] | None) -> str | None:
    """The line a command's output carries when it was handed a template this process
    does not use (the guard switched it off), so the run's report says why it parsed in
    full; None otherwise."""
    if template is None or _current["template_hook"]:
        return None
    reason = why_off(PARSE_TEMPLATE) or "the hook is not installed"
    return f"{parse_cache.TEMPLATE_LINE}template {template.get('sha', '')[:12]}: not used ({reason})"


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


def _share_state_loads() -> None:
    """Load each ``--state`` directory once per session instead of once per command.

    The listing and the build read the same production manifest; loading it costs about
    1.8 s at 1,000 models. dbt only reads these objects (deferral copies relation names
    out of them), and the published state directories never change. Keyed by the files'
    modification times too, so a directory rewritten mid-session is loaded again. If a
    dbt version moves ``PreviousState``, this does nothing and dbt loads as usual.
    """
    import dbt.task.runnable as runnable

    original = getattr(runnable, "PreviousState", None)
    if original is None or getattr(original, "_defer_orchestration_shared", False):
        return
    loaded: dict[tuple[Any, ...], Any] = {}

    def shared(state_path: Path, target_path: Path, project_root: Path) -> Any:
        stamps = tuple(
            (Path(state_path) / name).stat().st_mtime_ns if (Path(state_path) / name).exists() else None
            for name in ("manifest.json", "run_results.json", "sources.json")
        )
        key = (str(state_path), str(target_path), str(project_root), stamps)
        if key not in loaded:
            loaded[key] = original(state_path=state_path, target_path=target_path, project_root=project_root)
        return loaded[key]

    def guarded(state_path: Path, target_path: Path, project_root: Path) -> Any:
        try:
            return shared(state_path, target_path, project_root)
        except Exception:  # noqa: BLE001 - our cache failed: dbt's own loader decides
            return original(state_path=state_path, target_path=target_path, project_root=project_root)

    guarded._defer_orchestration_shared = True  # type: ignore[attr-defined]
    setattr(runnable, "PreviousState", guarded)  # noqa: B010 - dbt's module attribute, replaced on purpose
