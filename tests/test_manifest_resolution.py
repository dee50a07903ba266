"""Resolving the latest good production manifest from the event log (no dbt needed)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from helpers import record_publication

from defer_orchestration.lib.errors import (
    ManifestArtifactMissingError,
    ManifestChecksumError,
    NoManifestPublishedError,
)
from defer_orchestration.lib.manifest_store import ManifestStore
from defer_orchestration.defs.manifest_resolution import latest_published_manifest


def _publish(instance: dg.DagsterInstance, store: ManifestStore, source: Path, marker: str):
    source.mkdir(parents=True, exist_ok=True)
    (source / "manifest.json").write_text(
        json.dumps({"metadata": {"dbt_version": "1.11.0"}, "marker": marker})
    )
    (source / "run_results.json").write_text(json.dumps({"results": []}))
    stored = store.publish(source)
    record_publication(instance, stored, created_at=1_700_000_000.0)
    return stored


def test_no_published_manifest_says_to_run_the_production_job() -> None:
    with dg.instance_for_test() as instance:
        with pytest.raises(NoManifestPublishedError, match="run prod_build_job"):
            latest_published_manifest(instance)


def test_latest_materialization_wins_and_is_verified(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "store")
    with dg.instance_for_test() as instance:
        _publish(instance, store, tmp_path / "one", "one")
        second = _publish(instance, store, tmp_path / "two", "two")
        # A newer file lying around in the store is not "latest": only the event log counts.
        _publish(dg.DagsterInstance.ephemeral(), store, tmp_path / "three", "three")
        latest = latest_published_manifest(instance)
        assert latest.version == second.version
        assert latest.manifest_path.read_text() == (tmp_path / "two" / "manifest.json").read_text()
        assert latest.dbt_version == "1.11.0"
        assert latest.created_at == 1_700_000_000.0


def test_corrupt_artifact_is_a_typed_error_naming_the_file(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "store")
    with dg.instance_for_test() as instance:
        stored = _publish(instance, store, tmp_path / "one", "one")
        (stored.path / "manifest.json").write_text('{"marker": "tampered"}')
        with pytest.raises(ManifestChecksumError, match=r"manifest.json is corrupt"):
            latest_published_manifest(instance)


def test_deleted_artifact_is_a_typed_error_naming_the_file(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "store")
    with dg.instance_for_test() as instance:
        stored = _publish(instance, store, tmp_path / "one", "one")
        (stored.path / "run_results.json").unlink()
        with pytest.raises(ManifestArtifactMissingError, match=r"run_results.json is missing"):
            latest_published_manifest(instance)
