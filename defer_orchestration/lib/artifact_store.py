"""The artifact store by URL: where production publishes its dbt artifacts and every host,
however many there are, reads them back.

``DEFER_ORCH_ARTIFACT_STORE`` is either a local directory (unset: ``DEFER_ORCH_HOME/artifacts``;
:class:`~defer_orchestration.lib.manifest_store.ManifestStore`, rename-into-place) or an
fsspec URL (``s3://bucket/prefix``; ``gs://`` and ``az://`` by the same code when gcsfs or
adlfs is installed, untested here): :class:`FsspecArtifactStore`. Both implement
:class:`ArtifactStore`, and both are content-addressed: a version's id is a sha256 over
its files' sha256s, so the same artifacts land at the same place and a reader can check
what it got.

An object store has no rename, so publication keeps its guarantees another way::

    <url>/versions/<version>/manifest.json
    <url>/versions/<version>/run_results.json
    <url>/versions/<version>/_complete.json   written last: every file's sha256 and size

A version without its completion object is an upload that never finished (the publisher
was killed, the store went away): it is never listed, never fetched. Readers download a
version into a local, content-addressed cache (``DEFER_ORCH_HOME/cache/artifacts``, the
same layout as a local store, so a cached version is a ``--state`` directory that
``reopen_version`` can re-verify by its name), check every file against the completion
object and the checksums the publication recorded, and only then hand it on. A corrupt
object is refused with its key named; an unreachable or refusing store is an
:class:`ArtifactStoreUnavailableError` naming the URL and what to check, never the
credentials.

Parses another host would otherwise pay again (the branch parse template, merge-base
parses) are kept in an object store by the same rules, under a key naming what they were
made from (commit and settings; see ``branch/parse_template.py`` and
``branch/comparison.py``)::

    <url>/parses/<kind>/<key>/files/<sha256>   each file under its own content address
    <url>/parses/<kind>/<key>/_complete.json   written last: names, sha256s, sizes, meta

Two hosts publishing the same key never overwrite each other's files (different bytes
have different addresses); the last completion object wins, and it names files that
exist. A reader takes a key whose completion object is missing as never published, and
refuses a file whose sha256 is not the one its completion object names
(:meth:`FsspecArtifactStore.publish_parse`, :meth:`FsspecArtifactStore.fetch_parse`).

S3-compatible stores (MinIO, SeaweedFS, R2, Ceph) are configured by the standard AWS
variables, which botocore reads itself (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``; botocore >= 1.31 honours ``AWS_ENDPOINT_URL``,
and s3fs leaves ``endpoint_url`` to it when none is passed). fsspec and its backends are
imported only when an object store is used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol
from urllib.parse import urlsplit, urlunsplit

from defer_orchestration.lib.errors import (
    ArtifactStoreError,
    ArtifactStoreUnavailableError,
    ConfigurationError,
    DeferOrchestrationError,
    ManifestArtifactMissingError,
    ManifestChecksumError,
    ManifestError,
)
from defer_orchestration.lib.manifest_store import (
    ManifestStore,
    StoredVersion,
    _copy_durably,
    artifact_sources,
    check_complete,
    is_version,
    sha256_file,
    version_of,
)

if TYPE_CHECKING:  # fsspec is imported when an object store is first used, not with the core
    from fsspec import AbstractFileSystem  # type: ignore[import-untyped]

COMPLETION_OBJECT = "_complete.json"
COMPLETION_FORMAT = 1
ENV_SETTING = "DEFER_ORCH_ARTIFACT_STORE"
# botocore's retries: a few, so a blip is absorbed but a store that is down fails the run
# in seconds, not minutes (botocore's defaults and s3fs's own retries take ~10 s more).
_S3_RETRIES = 3
_S3_CONNECT_TIMEOUT_S = 10
# What to check, per protocol, when a store cannot be reached or refuses.
_CHECK = {
    "s3": "the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), the endpoint "
    "(AWS_ENDPOINT_URL, for an S3-compatible store), the region (AWS_REGION) and that the bucket exists",
    "gs": "the credentials (GOOGLE_APPLICATION_CREDENTIALS) and that the bucket exists",
    "az": "the credentials (AZURE_STORAGE_ACCOUNT_NAME with a key, SAS token or connection string) "
    "and that the container exists",
}
_PARSE_KEY = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.-]{0,127}")
_BACKENDS = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}


class ArtifactStore(Protocol):
    """Where production's artifacts are published and read back, by version.

    ``publish`` and ``fetch`` raise only :class:`ManifestError` subclasses, whose messages
    say what to do (:class:`ArtifactStoreUnavailableError` when the store itself failed),
    and :class:`ConfigurationError` when a URL's fsspec backend is not installed.
    """

    @property
    def url(self) -> str:
        """The store's root (a directory, or a URL without credentials), for messages."""
        ...

    def publish(self, source_dir: Path) -> StoredVersion:
        """Publish ``manifest.json`` and ``run_results.json`` from ``source_dir`` as one version.

        Either the whole version is published or nothing is: the previous one stays the latest.
        """
        ...

    def fetch(self, location: str, files: Mapping[str, str]) -> StoredVersion:
        """The version at ``location`` (a ``StoredVersion.location``) as a local directory,
        every file checked against ``files`` (name -> sha256 recorded at publication)."""
        ...

    def location(self, version: str) -> str:
        """Where ``version`` lives in this store (what ``prod_manifest`` records)."""
        ...

    def versions(self) -> list[str]:
        """Every complete version, sorted; half-finished uploads are not versions."""
        ...


def is_url(setting: str) -> bool:
    """Whether a store setting or a recorded location is an object-store URL (``file://`` is a path)."""
    scheme = urlsplit(setting).scheme
    return "://" in setting and len(scheme) > 1 and scheme != "file"


def local_path(setting: str) -> Path:
    """The directory a non-URL setting names (``file://`` stripped, ``~`` expanded)."""
    if setting.startswith("file://"):
        setting = urlsplit(setting).path
    return Path(setting).expanduser()


def cache_dir(home: Path) -> Path:
    """The local, content-addressed cache of versions downloaded from an object store."""
    return home / "cache" / "artifacts"


def open_artifact_store(setting: str, *, home: Path) -> ArtifactStore:
    """The store ``DEFER_ORCH_ARTIFACT_STORE`` names: empty for ``<home>/artifacts``, a
    directory, or an fsspec URL (downloads cached under ``home``)."""
    setting = setting.strip()
    if not setting:
        return ManifestStore(home / "artifacts")
    if is_url(setting):
        return FsspecArtifactStore(setting, cache=cache_dir(home))
    return ManifestStore(local_path(setting).resolve())


def store_for_location(location: str, *, home: Path | None) -> ArtifactStore:
    """The store holding a recorded version ``location``: what a reader needs when all it
    has is a materialization's ``store_path``, whatever this host's own setting says.
    ``home`` (where downloads are cached) is needed only for an object store."""
    if is_url(location):
        if home is None:
            raise ConfigurationError(
                f"production's manifest lives in the object store {redact(location)}; reading it needs "
                "a DEFER_ORCH_HOME to cache it in. Set DEFER_ORCH_HOME and rerun."
            )
        root, sep, _ = location.rstrip("/").rpartition("/versions/")
        if not sep:
            raise ManifestArtifactMissingError(
                f"the recorded artifact location {redact(location)} is not a version of an artifact "
                "store (<url>/versions/<version>); run prod_build_job to publish a fresh manifest."
            )
        return FsspecArtifactStore(root, cache=cache_dir(home))
    return ManifestStore(Path(location).parent.parent)


def fetch_published(location: str, files: Mapping[str, str], *, home: Path | None) -> StoredVersion:
    """The recorded version at ``location``, verified, as a local directory."""
    return store_for_location(location, home=home).fetch(location, files)


def parse_store(setting: str, *, home: Path) -> FsspecArtifactStore | None:
    """The object store that keeps published parses, when ``DEFER_ORCH_ARTIFACT_STORE`` is
    a URL; None for a directory (one host: its local parse caches are enough)."""
    setting = setting.strip()
    return FsspecArtifactStore(setting, cache=cache_dir(home)) if setting and is_url(setting) else None


@dataclass(frozen=True)
class FetchedParse:
    """A published parse downloaded and verified into a local directory."""

    path: Path  # holds each file under its name
    files: Mapping[str, str]  # name -> sha256
    meta: Mapping[str, Any]  # what the publisher recorded beside it
    location: str  # the key's URL, for messages


def redact(url: str) -> str:
    """``url`` without a password or query string (``s3://key:secret@bucket`` and SAS tokens
    must never reach a message or the event log)."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username:
        host = f"{parts.username}@{host}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class FsspecArtifactStore:
    """The artifact store in an object store (or any fsspec file system) at ``url``."""

    def __init__(self, url: str, *, cache: Path, storage_options: Mapping[str, Any] | None = None) -> None:
        self._url = url.rstrip("/")
        self.protocol = urlsplit(self._url).scheme
        self.cache = Path(cache)
        self._options = dict(storage_options or {})
        self._fs: AbstractFileSystem | None = None
        self._fs_root = ""

    # --- addresses ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The store's URL, credentials removed."""
        return redact(self._url)

    def location(self, version: str) -> str:
        """``<url>/versions/<version>``."""
        return f"{self.url}/versions/{version}"

    def key_url(self, version: str, name: str) -> str:
        """The URL of one object of a version, as errors name it."""
        return f"{self.location(version)}/{name}"

    @property
    def _root(self) -> str:
        """The store's root as the file system names it (``bucket/prefix``): known once it is open."""
        self.fs  # noqa: B018  (opens it)
        return self._fs_root

    def _key(self, version: str, name: str) -> str:
        return f"{self._root}/versions/{version}/{name}"

    def cached_path(self, version: str) -> Path:
        """Where a verified copy of ``version`` is kept on this host."""
        return self.cache / "versions" / version

    # --- the file system, opened on first use ------------------------------------------------
    @property
    def fs(self) -> AbstractFileSystem:
        """The fsspec file system (imported and created on first use; never the shared
        instance cache, so the environment of *this* call configures it)."""
        if self._fs is None:
            try:
                import fsspec.core  # type: ignore[import-untyped]
            except ImportError as exc:  # pragma: no cover - fsspec comes with dagster
                raise ConfigurationError(f"{ENV_SETTING}={self.url} needs fsspec: pip install fsspec.") from exc
            options = dict(self._options)
            if self.protocol in ("s3", "s3a"):
                options.setdefault("config_kwargs", {
                    "connect_timeout": _S3_CONNECT_TIMEOUT_S,
                    "retries": {"max_attempts": _S3_RETRIES, "mode": "standard"},
                })
            try:
                fs, root = fsspec.core.url_to_fs(self._url, skip_instance_cache=True, **options)
            except (ImportError, ValueError) as exc:
                backend = _BACKENDS.get(self.protocol, f"the fsspec package for {self.protocol}://")
                raise ConfigurationError(
                    f"{ENV_SETTING}={self.url} cannot be opened ({exc}): install {backend} in the "
                    "environment of every Dagster process, or point the setting at a directory."
                ) from exc
            self._fs, self._fs_root = fs, str(root).rstrip("/")
        return self._fs

    # --- publish --------------------------------------------------------------------------------
    def publish(self, source_dir: Path) -> StoredVersion:
        """Stage and checksum the artifacts locally, upload them under their version, then
        write the completion object; the staged copy becomes the local cache of the version."""
        sources = artifact_sources(source_dir)
        staging = self.cache / ".tmp" / uuid.uuid4().hex
        try:
            digests = _stage(sources, staging)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ArtifactStoreError(
                f"could not stage the artifacts under {self.cache} before uploading them to {self.url}: "
                f"{exc.strerror or exc}; make DEFER_ORCH_HOME writable with room to spare. Nothing was "
                "published: the previous manifest version stays the latest."
            ) from exc
        except ManifestError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        version = version_of(digests)
        sizes = {name: (staging / name).stat().st_size for name in digests}
        try:
            self._upload(version, staging, digests, sizes)
        except DeferOrchestrationError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        except Exception as exc:  # noqa: BLE001  (any backend failure fails the publication)
            shutil.rmtree(staging, ignore_errors=True)
            self._unavailable(
                "publish to", exc, after="Nothing was published: the previous manifest version stays the latest."
            )
        try:
            path = self._keep(staging, version, digests)
        except OSError as exc:  # uploaded, but with no local copy to describe it is not recorded
            shutil.rmtree(staging, ignore_errors=True)
            raise ArtifactStoreError(
                f"uploaded version {version[:12]} to {self.url} but could not keep its local copy under "
                f"{self.cache}: {exc.strerror or exc}; make DEFER_ORCH_HOME writable with room to spare and "
                "rerun prod_build_job. It is not recorded as published: the previous manifest version stays the latest."
            ) from exc
        return StoredVersion(version, path, digests, self.location(version))

    def _upload(self, version: str, staging: Path, digests: Mapping[str, str], sizes: Mapping[str, int]) -> None:
        fs = self.fs
        for name in sorted(digests):
            fs.put_file(str(staging / name), self._key(version, name))
        for name, size in sorted(sizes.items()):
            stored = int(fs.info(self._key(version, name))["size"])
            if stored != size:
                raise ArtifactStoreUnavailableError(
                    f"the store {self.url} kept {stored} of the {size} bytes of {self.key_url(version, name)}; "
                    "check its free space and quotas, then rerun prod_build_job. Nothing was published: "
                    "the previous manifest version stays the latest."
                )
        completion = {"format": COMPLETION_FORMAT, "version": version, "files": dict(digests), "sizes": dict(sizes)}
        fs.pipe_file(self._key(version, COMPLETION_OBJECT), json.dumps(completion, sort_keys=True).encode())

    # --- read ----------------------------------------------------------------------------------
    def fetch(self, location: str, files: Mapping[str, str]) -> StoredVersion:
        """The version at ``location``, downloaded into the local cache unless a verified copy
        is there already, every file checked against the completion object and ``files``."""
        version = location.rstrip("/").rpartition("/")[2]
        if not is_version(version) or version_of(files) != version:
            raise ManifestChecksumError(
                f"the recorded production artifacts at {redact(location)} do not match their version "
                "(the recorded checksums belong to other files); run prod_build_job to publish a fresh manifest."
            )
        cached = self.cached_path(version)
        if _intact(cached, files):
            return StoredVersion(version, cached, dict(files), self.location(version))
        try:
            completion = self._completion(version)
            _check_completion(completion, files, self.key_url(version, COMPLETION_OBJECT))
            staging = self.cache / ".tmp" / uuid.uuid4().hex
            try:
                self._download(version, files, staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        except DeferOrchestrationError:
            raise
        except OSError as exc:
            if not self._local_failure(exc):
                self._unavailable("read production manifest version " + version[:12] + " from", exc)
            raise ArtifactStoreError(
                f"could not cache production manifest version {version[:12]} under {self.cache}: "
                f"{exc.strerror or exc}; make DEFER_ORCH_HOME writable with room to spare, then rerun."
            ) from exc
        except Exception as exc:  # noqa: BLE001  (connection and client errors of any backend)
            self._unavailable("read production manifest version " + version[:12] + " from", exc)
        try:
            path = self._keep(staging, version, files)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ArtifactStoreError(
                f"could not cache production manifest version {version[:12]} under {self.cache}: "
                f"{exc.strerror or exc}; make DEFER_ORCH_HOME writable with room to spare, then rerun."
            ) from exc
        return StoredVersion(version, path, dict(files), self.location(version))

    def _completion(self, version: str) -> Mapping[str, Any]:
        key = self._key(version, COMPLETION_OBJECT)
        try:
            raw = self.fs.cat_file(key)
        except FileNotFoundError as exc:
            self._check_bucket(exc)
            raise ManifestArtifactMissingError(
                f"production manifest version {version[:12]} has no completion object "
                f"{self.key_url(version, COMPLETION_OBJECT)}: its upload never finished (or it was deleted "
                "since), so it is not a published version. Run prod_build_job to publish a fresh manifest."
            ) from exc
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise ManifestChecksumError(
                f"the completion object {self.key_url(version, COMPLETION_OBJECT)} is not JSON (corrupt); "
                "do not defer to it: run prod_build_job to publish a fresh manifest."
            ) from exc
        if not isinstance(document, dict):
            raise ManifestChecksumError(
                f"the completion object {self.key_url(version, COMPLETION_OBJECT)} is not a JSON object "
                "(corrupt); run prod_build_job to publish a fresh manifest."
            )
        return document

    def _download(self, version: str, files: Mapping[str, str], staging: Path) -> None:
        staging.mkdir(parents=True)
        for name, expected in sorted(files.items()):
            target = staging / name
            try:
                self.fs.get_file(self._key(version, name), str(target))
            except FileNotFoundError as exc:
                raise ManifestArtifactMissingError(
                    f"the published production artifact {self.key_url(version, name)} is missing from the "
                    "artifact store (deleted since it was published). Run prod_build_job to publish a "
                    "fresh manifest."
                ) from exc
            actual = sha256_file(target)
            if actual != expected:
                raise ManifestChecksumError(
                    f"the published production artifact {self.key_url(version, name)} is corrupt: its sha256 "
                    f"is {actual} but {expected} was recorded when it was published. Do not defer to it; "
                    "run prod_build_job to publish a fresh manifest."
                )

    def versions(self) -> list[str]:
        """Versions whose completion object exists: a half-finished upload is not listed."""
        try:
            fs = self.fs
            prefix = f"{self._root}/versions/"
            found = [str(key) for key in fs.find(prefix.rstrip("/"))]
        except FileNotFoundError:
            return []
        except DeferOrchestrationError:
            raise
        except Exception as exc:  # noqa: BLE001
            self._unavailable("list the versions of", exc)
        complete = []
        for key in found:
            version, _, name = key.removeprefix(prefix).partition("/")
            if key.startswith(prefix) and name == COMPLETION_OBJECT and is_version(version):
                complete.append(version)
        return sorted(complete)

    # --- published parses ------------------------------------------------------------------------
    def parse_location(self, kind: str, key: str) -> str:
        """The URL of a published parse, as messages name it."""
        return f"{self.url}/parses/{_checked_key(kind)}/{_checked_key(key)}"

    def _parse_key(self, kind: str, key: str, name: str) -> str:
        return f"{self._root}/parses/{_checked_key(kind)}/{_checked_key(key)}/{name}"

    def has_parses(self, kind: str) -> bool:
        """Whether any parse of ``kind`` was ever published here (whether the hosts publish
        them at all); False too when the store cannot say."""
        try:
            return bool(self.fs.exists(f"{self._root}/parses/{_checked_key(kind)}"))
        except Exception:  # noqa: BLE001  (advisory: the fetch that follows reports the store's trouble)
            return False

    def publish_parse(self, kind: str, key: str, files: Mapping[str, Path], meta: Mapping[str, Any]) -> str:
        """Upload ``files`` (name -> local path) as the parse ``kind``/``key``, each under its
        sha256, then the completion object naming them with ``meta``; its location.

        Raises :class:`ArtifactStoreUnavailableError` when the store fails: without the
        completion object nothing was published (a reader finds no parse under the key)."""
        location = self.parse_location(kind, key)
        digests = {name: sha256_file(path) for name, path in files.items()}
        sizes = {name: Path(path).stat().st_size for name, path in files.items()}
        try:
            fs = self.fs
            for name in sorted(files):
                blob = self._parse_key(kind, key, f"files/{digests[name]}")
                fs.put_file(str(files[name]), blob)
                stored = int(fs.info(blob)["size"])
                if stored != sizes[name]:
                    raise ArtifactStoreUnavailableError(
                        f"the store {self.url} kept {stored} of the {sizes[name]} bytes of {location}/files/"
                        f"{digests[name]}; check its free space and quotas. The parse was not published."
                    )
            completion = {
                "format": COMPLETION_FORMAT, "kind": kind, "key": key, "files": digests, "sizes": sizes,
                "meta": dict(meta),
            }
            fs.pipe_file(self._parse_key(kind, key, COMPLETION_OBJECT), json.dumps(completion, sort_keys=True).encode())
        except DeferOrchestrationError:
            raise
        except Exception as exc:  # noqa: BLE001  (any backend failure: nothing was published)
            self._unavailable(f"publish the {kind} parse {key[:24]} to", exc, after="The parse was not published.")
        return location

    def fetch_parse(self, kind: str, key: str, dest: Path) -> FetchedParse | None:
        """The parse ``kind``/``key`` downloaded into ``dest`` (created; the caller owns it),
        every file checked against the completion object; None when none was published.

        Raises :class:`ManifestChecksumError` naming the object when the completion object
        or a file is corrupt, :class:`ArtifactStoreUnavailableError` when the store fails."""
        location = self.parse_location(kind, key)
        try:
            try:
                raw = self.fs.cat_file(self._parse_key(kind, key, COMPLETION_OBJECT))
            except FileNotFoundError as exc:
                self._check_bucket(exc)
                return None
            completion = _parse_completion(raw, kind, key, f"{location}/{COMPLETION_OBJECT}")
            files: dict[str, str] = dict(completion["files"])
            dest.mkdir(parents=True, exist_ok=True)
            for name, expected in sorted(files.items()):
                blob = f"{location}/files/{expected}"
                try:
                    self.fs.get_file(self._parse_key(kind, key, f"files/{expected}"), str(dest / name))
                except FileNotFoundError as exc:
                    raise ManifestArtifactMissingError(
                        f"the published parse file {blob} is missing although {location}/{COMPLETION_OBJECT} "
                        "names it (deleted since); the parse was not used."
                    ) from exc
                actual = sha256_file(dest / name)
                if actual != expected:
                    raise ManifestChecksumError(
                        f"the published parse file {blob} is corrupt: its sha256 is {actual}, not the "
                        f"{expected} its completion object names. It was not used."
                    )
        except DeferOrchestrationError:
            raise
        except OSError as exc:
            if self._local_failure(exc) or str(getattr(exc, "filename", "") or "").startswith(str(dest)):
                raise ArtifactStoreError(
                    f"could not download the parse {location} into {dest}: {exc.strerror or exc}; make "
                    "DEFER_ORCH_HOME writable with room to spare."
                ) from exc
            self._unavailable(f"read the {kind} parse {key[:24]} from", exc)
        except Exception as exc:  # noqa: BLE001  (connection and client errors of any backend)
            self._unavailable(f"read the {kind} parse {key[:24]} from", exc)
        return FetchedParse(dest, files, dict(completion.get("meta") or {}), location)

    # --- local cache ---------------------------------------------------------------------------
    def _keep(self, staging: Path, version: str, files: Mapping[str, str]) -> Path:
        """Move a verified staging directory into the cache.

        An intact copy already there (another run on this host fetched it meanwhile, and
        may be reading it as its ``--state``) is kept and the staging copy dropped; a
        damaged one is moved aside first, so the rename never lands on a half-removed tree.
        """
        final = self.cached_path(version)
        final.parent.mkdir(parents=True, exist_ok=True)
        if _intact(final, files):
            shutil.rmtree(staging, ignore_errors=True)
            return final
        if final.exists():
            stale = final.with_name(f"{version}.stale-{uuid.uuid4().hex[:8]}")
            os.rename(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(staging, final)
        except OSError:
            if not _intact(final, files):  # lost a race to another process's intact copy: fine
                raise
            shutil.rmtree(staging, ignore_errors=True)
        return final

    # --- errors --------------------------------------------------------------------------------
    def _check_bucket(self, exc: Exception) -> None:
        """A missing bucket looks like a missing object; tell them apart for the message."""
        bucket = self._root.split("/", 1)[0]
        try:
            exists = self.fs.exists(bucket)
        except Exception:  # noqa: BLE001  (the store is not answering: report the first error)
            exists = True
        if not exists:
            self._unavailable("read", exc)

    def _local_failure(self, exc: OSError) -> bool:
        """Whether an OSError came from the local disk (the cache), not from the store."""
        filename = getattr(exc, "filename", None)
        return bool(filename) and str(filename).startswith(str(self.cache))

    def _unavailable(self, action: str, exc: BaseException, *, after: str = "") -> NoReturn:
        protocol = "s3" if self.protocol == "s3a" else self.protocol
        check = _CHECK.get(protocol, "its credentials, endpoint and that the container exists")
        raise ArtifactStoreUnavailableError(
            f"could not {action} the artifact store {self.url} ({type(exc).__name__}: {_scrub(str(exc))}). "
            f"Check that this host can reach it, {check}; then rerun. {after}".rstrip()
        ) from exc


def _stage(sources: Mapping[str, Path], staging: Path) -> dict[str, str]:
    """Copy the sources into ``staging``, check each is whole JSON, return their sha256s:
    what is uploaded is exactly what was checksummed, even if the source changes meanwhile."""
    staging.mkdir(parents=True)
    digests = {}
    for name, src in sources.items():
        _copy_durably(src, staging / name)
        check_complete(staging / name, src)
        digests[name] = sha256_file(staging / name)
    return digests


def _intact(path: Path, files: Mapping[str, str]) -> bool:
    return path.is_dir() and all(
        (path / name).is_file() and sha256_file(path / name) == sha for name, sha in files.items()
    )


def _check_completion(completion: Mapping[str, Any], files: Mapping[str, str], key: str) -> None:
    """The completion object must name exactly the checksums the publication recorded."""
    named = completion.get("files")
    if not isinstance(named, dict) or dict(named) != dict(files):
        raise ManifestChecksumError(
            f"the completion object {key} names other files or checksums than the publication recorded "
            "(the version was tampered with); do not defer to it: run prod_build_job to publish a fresh manifest."
        )


def _checked_key(part: str) -> str:
    """A parse's kind or key as one safe path segment (no ``/``, no ``..``)."""
    if not _PARSE_KEY.fullmatch(part) or ".." in part:
        raise ValueError(f"not a parse key: {part!r}")
    return part


def _parse_completion(raw: bytes, kind: str, key: str, url: str) -> Mapping[str, Any]:
    """A parse's completion object, checked for shape: it must name this key and give a
    sha256 for each file."""
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise ManifestChecksumError(f"the completion object {url} is not JSON (corrupt); the parse was not used.") from exc
    files = document.get("files") if isinstance(document, dict) else None
    if (
        not isinstance(files, dict) or not files
        or document.get("kind") != kind or document.get("key") != key
        or not all(isinstance(n, str) and "/" not in n and n not in ("", ".", "..") for n in files)
        or not all(isinstance(d, str) and is_version(d) for d in files.values())
        or not isinstance(document.get("meta", {}), dict)
    ):
        raise ManifestChecksumError(
            f"the completion object {url} does not describe this parse (corrupt or tampered with); "
            "the parse was not used."
        )
    checked: dict[str, Any] = document
    return checked


def _scrub(text: str) -> str:
    """``text`` with the store credentials of this process removed (backends' messages do not
    normally carry them; this makes sure), and truncated to one readable line."""
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        secret = os.environ.get(name)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    line = " ".join(text.split())
    return line if len(line) <= 300 else line[:297] + "..."
