"""A content-addressed store of production dbt artifacts.

A version is a directory ``<root>/versions/<version>/`` holding ``manifest.json`` and
``run_results.json``; ``<version>`` is a sha256 over the files' own sha256s, so the
same artifacts always land in the same place and a directory's name tells whether
its contents are intact. Publishing writes into a temporary directory and renames it
into place: a crash leaves a stray ``.tmp`` directory, never a half-written version
that looks complete. The directory is usable directly as dbt's ``--state``.

This is the local-directory implementation of the artifact store; ``artifact_store.py``
holds the interface both implementations share and the object-store one (fsspec URLs).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from defer_orchestration.lib import json_documents
from defer_orchestration.lib.errors import (
    ArtifactStoreError,
    ManifestArtifactMissingError,
    ManifestChecksumError,
    ManifestError,
)

ARTIFACT_FILES: tuple[str, ...] = ("manifest.json", "run_results.json")
_CHUNK = 1 << 20
_VERSION = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def version_of(file_digests: Mapping[str, str]) -> str:
    """The version id of a set of artifacts: sha256 over their sorted ``name:sha256`` lines."""
    lines = "".join(f"{name}:{file_digests[name]}\n" for name in sorted(file_digests))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredVersion:
    """One published set of artifacts."""

    version: str
    path: Path  # a local directory holding the files, usable as dbt's --state
    files: Mapping[str, str] = field(default_factory=dict)  # name -> sha256
    # Where the version lives in its store, as recorded in prod_manifest's ``store_path``:
    # the directory itself for a local store, ``<url>/versions/<version>`` for an object store.
    location: str = ""

    @property
    def manifest_path(self) -> Path:
        """Path of the stored manifest.json."""
        return self.path / "manifest.json"


@dataclass(frozen=True)
class PublishedManifest:
    """One verified published version of the production artifacts, as a branch build uses it."""

    version: str
    path: Path  # directory usable as dbt's --state / --defer-state
    manifest_sha256: str
    run_results_sha256: str
    producing_run_id: str
    dbt_version: str | None
    git_sha: str | None
    created_at: float  # unix seconds
    failing_tests: tuple[str, ...] = ()  # published under DEFER_ORCH_PUBLISH_ON=models_built
    # Where the version lives in its store (prod_manifest's ``store_path``): a retry on a
    # host without ``path`` fetches it from there. "" when not known.
    location: str = ""

    @property
    def manifest_path(self) -> Path:
        """The verified manifest.json."""
        return self.path / "manifest.json"


def reopen_version(version_dir: Path, *, what: str) -> PublishedManifest:
    """A version directory verified by its own name (the store is content-addressed), e.g.
    the manifest an earlier run deferred to. ``what`` names it in errors."""
    files = {n: version_dir / n for n in ARTIFACT_FILES}
    if not all(f.is_file() for f in files.values()):
        raise ManifestArtifactMissingError(f"{what} {version_dir} is gone from the artifact store.")
    digests = {name: sha256_file(f) for name, f in files.items()}
    if version_of(digests) != version_dir.name:
        raise ManifestChecksumError(f"{what} {version_dir} no longer matches its content address (corrupt).")
    try:
        metadata = json.loads(files["manifest.json"].read_text(encoding="utf-8")).get("metadata") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise ManifestChecksumError(f"{what} {version_dir} has an unreadable manifest.json ({exc}).") from exc
    return PublishedManifest(
        version=version_dir.name, path=version_dir, manifest_sha256=digests["manifest.json"],
        run_results_sha256=digests["run_results.json"], producing_run_id="",
        dbt_version=metadata.get("dbt_version"), git_sha=None,
        created_at=files["manifest.json"].stat().st_mtime,
    )


def _store_error(action: str, path: Path, exc: OSError) -> ArtifactStoreError:
    hint = {
        errno.ENOSPC: "the disk is full; free space under the artifact store and rerun prod_build_job",
        errno.EACCES: "permission denied; make the artifact store writable by the Dagster process",
        errno.EROFS: "the file system is read-only; point DEFER_ORCH_HOME at a writable directory",
    }.get(exc.errno or 0, "check the artifact store directory and rerun prod_build_job")
    return ArtifactStoreError(
        f"could not {action} {path}: {exc.strerror or exc}; {hint}. "
        "Nothing was published: the previous manifest version stays the latest."
    )


def artifact_sources(source_dir: Path) -> dict[str, Path]:
    """The artifact files a publication copies from ``source_dir``; a typed error names any
    that dbt did not write."""
    sources = {name: Path(source_dir) / name for name in ARTIFACT_FILES}
    missing = [name for name, path in sources.items() if not path.is_file()]
    if missing:
        raise ManifestArtifactMissingError(
            f"cannot publish from {source_dir}: {', '.join(missing)} not found there. "
            "The dbt build did not write its artifacts; check the dbt step's logs."
        )
    return sources


def is_version(name: str) -> bool:
    """Whether ``name`` is a version id (a sha256), not a staging or damaged directory."""
    return bool(_VERSION.fullmatch(name))


class ManifestStore:
    """The artifact store rooted at one directory (``DEFER_ORCH_ARTIFACT_STORE`` a path, or
    unset: ``DEFER_ORCH_HOME/artifacts``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def url(self) -> str:
        """The store's root, as messages and ``store_path`` metadata name it."""
        return str(self.root)

    def location(self, version: str) -> str:
        """Where ``version`` lives: its directory."""
        return str(self.version_path(version))

    def versions(self) -> list[str]:
        """Every complete version in the store, sorted (staging and damaged copies excluded)."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if is_version(p.name) and p.is_dir())

    def fetch(self, location: str, files: Mapping[str, str]) -> StoredVersion:
        """The version at ``location`` verified in place (a local store needs no copy)."""
        return self.verify(Path(location), files)

    @property
    def versions_dir(self) -> Path:
        """Where complete versions live."""
        return self.root / "versions"

    def version_path(self, version: str) -> Path:
        """Directory of one version (which may not exist)."""
        return self.versions_dir / version

    def publish(self, source_dir: Path) -> StoredVersion:
        """Copy the artifacts in ``source_dir`` into the store atomically and return the version."""
        sources = artifact_sources(source_dir)
        staging = self.root / ".tmp" / uuid.uuid4().hex
        try:
            staging.mkdir(parents=True)
            digests: dict[str, str] = {}
            for name, src in sources.items():
                dest = staging / name
                _copy_durably(src, dest)
                check_complete(dest, src)
                digests[name] = sha256_file(dest)
            version = version_of(digests)
            final = self.version_path(version)
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            if final.exists():
                if self._intact(final, digests):
                    shutil.rmtree(staging, ignore_errors=True)
                    return StoredVersion(version, final, digests, str(final))
                # Same content was published before but the copy has been damaged since:
                # move the damaged copy aside (never delete evidence) and put the good one in.
                os.rename(final, final.with_name(f"{version}.damaged-{uuid.uuid4().hex[:8]}"))
            os.rename(staging, final)
            _fsync_dir(self.versions_dir)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise _store_error("write the artifact store at", self.root, exc) from exc
        except ManifestError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return StoredVersion(version, final, digests, str(final))

    def verify(self, path: Path, files: Mapping[str, str]) -> StoredVersion:
        """Check every recorded file exists at ``path`` with its recorded sha256."""
        for name, expected in sorted(files.items()):
            file_path = Path(path) / name
            if not file_path.is_file():
                raise ManifestArtifactMissingError(
                    f"the published production artifact {file_path} is missing from the "
                    "artifact store (deleted, or DEFER_ORCH_HOME changed since it was "
                    "published). Run prod_build_job to publish a fresh manifest."
                )
            actual = sha256_file(file_path)
            if actual != expected:
                raise ManifestChecksumError(
                    f"the published production artifact {file_path} is corrupt: its sha256 is "
                    f"{actual} but {expected} was recorded when it was published. Do not defer "
                    "to it; run prod_build_job to publish a fresh manifest."
                )
        return StoredVersion(version_of(files), Path(path), dict(files), str(path))

    @staticmethod
    def _intact(path: Path, digests: Mapping[str, str]) -> bool:
        return all(
            (path / name).is_file() and sha256_file(path / name) == sha
            for name, sha in digests.items()
        )


def check_complete(copy: Path, source: Path) -> None:
    """Refuse an artifact that is not one whole JSON object.

    An empty or cut-off ``manifest.json`` (dbt killed mid-write, a full disk) must never
    become a version in the store, even one nobody records as published.
    """
    try:
        with open(copy, "rb") as handle:
            document = json_documents.load(handle)
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        reason = "is empty" if copy.stat().st_size == 0 else f"is not valid JSON ({exc})"
        raise ManifestError(
            f"cannot publish {source}: it {reason}, so dbt did not finish writing it (killed, "
            "or the disk filled up). Nothing was published: the previous manifest version "
            "stays the latest. Check the dbt step's logs and rerun prod_build_job."
        ) from exc
    if not isinstance(document, dict):
        raise ManifestError(
            f"cannot publish {source}: it is not a JSON object, so it is not a dbt artifact. "
            "Nothing was published: the previous manifest version stays the latest."
        )


def _copy_durably(src: Path, dest: Path) -> None:
    """Copy and fsync, so a crash after the rename never finds a version with empty files."""
    with open(src, "rb") as reader, open(dest, "wb") as writer:
        shutil.copyfileobj(reader, writer, _CHUNK)
        writer.flush()
        os.fsync(writer.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
