"""The content-addressed artifact store: atomic publish, verification, clear errors."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from defer_orchestration.lib.errors import (
    ArtifactStoreError,
    ManifestArtifactMissingError,
    ManifestChecksumError,
)
from defer_orchestration.lib.manifest_store import ManifestStore, sha256_file, version_of


def _artifacts(directory: Path, marker: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").write_text(json.dumps({"nodes": {}, "marker": marker}))
    (directory / "run_results.json").write_text(json.dumps({"results": [], "marker": marker}))
    return directory


def test_publish_is_content_addressed_and_verifiable(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "store")
    stored = store.publish(_artifacts(tmp_path / "a", "one"))
    assert stored.path == store.version_path(stored.version)
    assert stored.files["manifest.json"] == sha256_file(stored.path / "manifest.json")
    assert stored.version == version_of(stored.files)
    # Same bytes -> same version, no new directory; different bytes -> a new version.
    assert store.publish(_artifacts(tmp_path / "b", "one")).version == stored.version
    other = store.publish(_artifacts(tmp_path / "c", "two"))
    assert other.version != stored.version
    assert sorted(p.name for p in store.versions_dir.iterdir()) == sorted(
        [stored.version, other.version]
    )
    assert store.verify(stored.path, stored.files).version == stored.version
    # Nothing half-written is left in the staging area.
    assert list((store.root / ".tmp").iterdir()) == []


def test_publish_without_artifacts_names_the_missing_file(tmp_path: Path) -> None:
    source = tmp_path / "target"
    source.mkdir()
    (source / "manifest.json").write_text("{}")
    with pytest.raises(ManifestArtifactMissingError, match="run_results.json not found"):
        ManifestStore(tmp_path / "store").publish(source)


def test_verify_detects_missing_and_corrupt_files(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "store")
    stored = store.publish(_artifacts(tmp_path / "a", "one"))
    (stored.path / "manifest.json").write_text('{"tampered": true}')
    with pytest.raises(ManifestChecksumError, match="manifest.json is corrupt.*prod_build_job"):
        store.verify(stored.path, stored.files)
    (stored.path / "run_results.json").unlink()
    (stored.path / "manifest.json").unlink()
    with pytest.raises(ManifestArtifactMissingError, match="missing from the artifact store"):
        store.verify(stored.path, stored.files)


def test_republishing_over_a_damaged_copy_keeps_the_evidence(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "store")
    stored = store.publish(_artifacts(tmp_path / "a", "one"))
    (stored.path / "manifest.json").write_text("garbage")
    again = store.publish(_artifacts(tmp_path / "b", "one"))
    assert store.verify(again.path, again.files)
    assert any(p.name.startswith(f"{stored.version}.damaged-") for p in store.versions_dir.iterdir())


def test_disk_full_is_a_clear_error_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ManifestStore(tmp_path / "store")

    def no_space(src: Path, dest: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))

    monkeypatch.setattr("defer_orchestration.lib.manifest_store._copy_durably", no_space)
    with pytest.raises(ArtifactStoreError, match="disk is full.*previous manifest version"):
        store.publish(_artifacts(tmp_path / "a", "one"))
    assert not store.versions_dir.exists() or list(store.versions_dir.iterdir()) == []


def test_permission_denied_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulated: the suite runs as root in CI, where chmod would not stop the write.
    def denied(src: Path, dest: Path) -> None:
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(dest))

    monkeypatch.setattr("defer_orchestration.lib.manifest_store._copy_durably", denied)
    with pytest.raises(ArtifactStoreError, match="permission denied.*writable"):
        ManifestStore(tmp_path / "store").publish(_artifacts(tmp_path / "a", "one"))
