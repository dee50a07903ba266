"""Which production manifest a branch defers to: the latest *published* one.

"Latest good" comes from the Dagster event log (the latest materialization of
``prod_manifest``, which only successful builds produce), never from whatever file
happens to lie in a directory. The stored files are verified against the sha256s
recorded at publication before anyone defers to them.

The materialization records where the version lives (``store_path``): a directory, or
an object-store URL, in which case the version is downloaded into this host's cache
under ``DEFER_ORCH_HOME`` (``home``) and verified there. A reader therefore finds what
production published wherever production ran, whatever its own disk holds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from defer_orchestration import constants as c
from defer_orchestration.lib.errors import (
    ManifestArtifactMissingError,
    ManifestError,
    NoManifestPublishedError,
)
from defer_orchestration.lib.artifact_store import fetch_published, is_url
from defer_orchestration.lib.manifest_store import PublishedManifest


def _value(metadata: dict[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def _home_from_env() -> Path:
    from defer_orchestration.resources import settings_from_env

    return settings_from_env(resolve=True).home_path()


def latest_published_manifest(instance: dg.DagsterInstance, *, home: Path | None = None) -> PublishedManifest:
    """The latest good production manifest, verified; raises a typed error when there is none.

    ``home`` is where a version from an object store is cached (the run's
    ``DEFER_ORCH_HOME``); without it, the environment's, read only if a download is needed.
    """
    event = instance.get_latest_materialization_event(dg.AssetKey(c.PROD_MANIFEST_ASSET))
    if event is None or event.asset_materialization is None:
        raise NoManifestPublishedError(
            "no successful production build has published a manifest yet: run "
            f"{c.PROD_BUILD_JOB} (from the Dagster UI or `make demo`) and retry."
        )
    return _verified(event, lambda: home or _home_from_env())


def published_for_commit(
    instance: dg.DagsterInstance, git_sha: str, *, search_limit: int = 200, home: Path | None = None
) -> PublishedManifest | None:
    """The newest intact published manifest built from ``git_sha`` (clean tree), if any.

    Used to compare a branch against the production state of its merge-base; a damaged
    artifact here is not an error (the caller parses the commit instead).
    """
    records = instance.fetch_materializations(
        dg.AssetKey(c.PROD_MANIFEST_ASSET), limit=search_limit
    ).records
    for record in records:
        entry = record.event_log_entry
        metadata = dict(entry.asset_materialization.metadata)
        if _value(metadata, "git_sha") == git_sha and not _value(metadata, "git_dirty"):
            try:
                return _verified(entry, lambda: home or _home_from_env())
            except ManifestError:
                continue
    return None


def _verified(event: Any, home: Callable[[], Path]) -> PublishedManifest:
    metadata = dict(event.asset_materialization.metadata)
    store_path = _value(metadata, "store_path")
    manifest_sha = _value(metadata, "sha256")
    results_sha = _value(metadata, "run_results_sha256")
    if not (store_path and manifest_sha and results_sha):
        raise ManifestArtifactMissingError(
            f"the latest {c.PROD_MANIFEST_ASSET} materialization (run {event.run_id}) records no "
            f"store path or checksums; run {c.PROD_BUILD_JOB} to publish a complete version."
        )
    files = {"manifest.json": manifest_sha, "run_results.json": results_sha}
    location = str(store_path)
    # A local store is verified in place and needs no cache, so no home is looked up for it.
    stored = fetch_published(location, files, home=home() if is_url(location) else None)
    return PublishedManifest(
        version=stored.version,
        path=stored.path,
        manifest_sha256=manifest_sha,
        run_results_sha256=results_sha,
        producing_run_id=event.run_id,
        dbt_version=_value(metadata, "dbt_version"),
        git_sha=_value(metadata, "git_sha"),
        created_at=float(_value(metadata, "created_at") or event.timestamp),
        failing_tests=tuple(_value(metadata, "failing_tests") or ()),
        location=stored.location or location,
    )
