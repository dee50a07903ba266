"""The artifact store, by the same tests against a local directory and against a real
S3 API (SeaweedFS, started by the tests on 127.0.0.1): publish, resolve and verify; a
killed upload leaves no resolvable version; a corrupted object is refused with its key
named; the store down at publish and at resolve. No dbt."""

from __future__ import annotations

import importlib.util

import errno
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from seaweedfs_fixtures import s3_env, s3_server  # noqa: F401  (fixtures)
from seaweedfs_server import S3Server

from defer_orchestration.lib import artifact_store, manifest_store
from defer_orchestration.lib.artifact_store import (
    COMPLETION_OBJECT,
    ArtifactStore,
    FsspecArtifactStore,
    fetch_published,
    open_artifact_store,
    redact,
)
from defer_orchestration.lib.errors import (
    ArtifactStoreError,
    ArtifactStoreUnavailableError,
    ConfigurationError,
    ManifestArtifactMissingError,
    ManifestChecksumError,
)
from defer_orchestration.lib.manifest_store import ManifestStore, sha256_file, version_of

KINDS = ("local", "s3")


def _artifacts(directory: Path, marker: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").write_text(json.dumps({"nodes": {}, "marker": marker}))
    (directory / "run_results.json").write_text(json.dumps({"results": [], "marker": marker}))
    return directory


@dataclass
class StoreUnderTest:
    """One store (by its setting, as DEFER_ORCH_ARTIFACT_STORE holds it) and how to
    reach behind its back: overwrite an object, take it away."""

    kind: str
    setting: str
    server: S3Server | None
    tmp: Path

    def open(self, home: str = "home") -> ArtifactStore:
        """The store as a host with its own ``DEFER_ORCH_HOME`` (``tmp/<home>``) sees it."""
        return open_artifact_store(self.setting, home=self.tmp / home)

    def overwrite(self, location: str, name: str, data: bytes) -> None:
        """Replace one stored object's bytes behind the store's back."""
        if self.kind == "local":
            (Path(location) / name).write_bytes(data)
        else:
            store = self.open()
            assert isinstance(store, FsspecArtifactStore)
            store.fs.pipe_file(f"{location.removeprefix('s3://')}/{name}", data)

    def key(self, location: str, name: str) -> str:
        """How errors name one object of a version."""
        return f"{location}/{name}"


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    if request.param == "local":
        yield StoreUnderTest("local", str(tmp_path / "shared-dir"), None, tmp_path)
        return
    server: S3Server = request.getfixturevalue("s3_env")
    # A prefix of this test's own: tests share the session's bucket, never each other's versions.
    yield StoreUnderTest("s3", server.url(f"t/{tmp_path.name}"), server, tmp_path)


def test_publish_resolve_verify(store: StoreUnderTest) -> None:
    publisher = store.open("producer")
    stored = publisher.publish(_artifacts(store.tmp / "a", "one"))
    assert stored.version == version_of(stored.files)
    assert stored.files["manifest.json"] == sha256_file(store.tmp / "a" / "manifest.json")
    assert stored.location == publisher.location(stored.version)
    # Same bytes -> same version; other bytes -> a new one.
    assert publisher.publish(_artifacts(store.tmp / "b", "one")).version == stored.version
    other = publisher.publish(_artifacts(store.tmp / "c", "two"))
    assert other.version != stored.version
    assert publisher.versions() == sorted([stored.version, other.version])

    # Another host, nothing on its disk: it finds the version by the recorded location alone.
    fetched = fetch_published(stored.location, stored.files, home=store.tmp / "reader")
    assert fetched.version == stored.version
    assert (fetched.path / "manifest.json").read_bytes() == (store.tmp / "a" / "manifest.json").read_bytes()
    assert (fetched.path / "run_results.json").read_bytes() == (store.tmp / "a" / "run_results.json").read_bytes()
    # The local directory is content-addressed like a store, so a retry can re-verify it by name.
    assert manifest_store.reopen_version(fetched.path, what="the manifest").version == stored.version
    if store.kind == "s3":
        assert fetched.path == store.tmp / "reader" / "cache" / "artifacts" / "versions" / stored.version
    else:
        assert fetched.path == Path(stored.location)


def _publish_and_die(setting: str, home: Path, source: Path) -> None:
    """Run a publication in a child process that SIGKILLs itself right after the first
    artifact file has been written (uploaded, or copied into staging)."""
    script = textwrap.dedent(
        """
        import os, signal, sys
        from pathlib import Path
        from defer_orchestration.lib import manifest_store
        from defer_orchestration.lib.artifact_store import FsspecArtifactStore, open_artifact_store

        store = open_artifact_store(sys.argv[1], home=Path(sys.argv[2]))
        if isinstance(store, FsspecArtifactStore):
            fs = store.fs
            put = fs.put_file
            def put_then_die(*args, **kwargs):
                put(*args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)
            fs.put_file = put_then_die
        else:
            copy = manifest_store._copy_durably
            def copy_then_die(src, dest):
                copy(src, dest)
                os.kill(os.getpid(), signal.SIGKILL)
            manifest_store._copy_durably = copy_then_die
        store.publish(Path(sys.argv[3]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, setting, str(home), str(source)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -9, done.stderr  # killed mid-publication, as intended


def test_a_killed_upload_leaves_no_resolvable_version(store: StoreUnderTest) -> None:
    previous = store.open().publish(_artifacts(store.tmp / "prev", "previous"))
    source = _artifacts(store.tmp / "a", "killed")
    files = {n: sha256_file(source / n) for n in manifest_store.ARTIFACT_FILES}
    version = version_of(files)
    _publish_and_die(store.setting, store.tmp / "killed-home", source)

    reader = store.open("reader")
    assert reader.versions() == [previous.version]
    with pytest.raises(ManifestArtifactMissingError) as refused:
        fetch_published(reader.location(version), files, home=store.tmp / "reader")
    if store.kind == "s3":  # the first file is there, the completion object is not
        assert "has no completion object" in str(refused.value)
        assert store.key(reader.location(version), COMPLETION_OBJECT) in str(refused.value)
    # The previous version is untouched, and the same artifacts publish fine afterwards.
    assert fetch_published(previous.location, previous.files, home=store.tmp / "reader").version == previous.version
    again = store.open().publish(source)
    assert again.version == version
    assert fetch_published(again.location, files, home=store.tmp / "reader2").version == version


def test_a_corrupted_object_is_refused_with_its_key_named(store: StoreUnderTest) -> None:
    stored = store.open().publish(_artifacts(store.tmp / "a", "one"))
    store.overwrite(stored.location, "manifest.json", b'{"marker": "tampered"}')
    with pytest.raises(ManifestChecksumError) as refused:
        fetch_published(stored.location, stored.files, home=store.tmp / "reader")
    message = str(refused.value)
    assert f"{store.key(stored.location, 'manifest.json')} is corrupt" in message
    assert stored.files["manifest.json"] in message and "prod_build_job" in message
    # Nothing corrupt was left where dbt would read it.
    if store.kind == "s3":
        cache = store.tmp / "reader" / "cache" / "artifacts" / "versions" / stored.version
        assert not cache.exists()


def test_a_damaged_cached_copy_is_fetched_again(s3_env: S3Server, tmp_path: Path) -> None:
    # (A local store has no cache: its files are verified in place.)
    stored = open_artifact_store(s3_env.url("t/cache"), home=tmp_path).publish(_artifacts(tmp_path / "a", "one"))
    home = tmp_path / "reader"
    first = fetch_published(stored.location, stored.files, home=home)
    (first.path / "manifest.json").write_text("garbage")
    again = fetch_published(stored.location, stored.files, home=home)
    assert sha256_file(again.path / "manifest.json") == stored.files["manifest.json"]


def test_recorded_checksums_that_do_not_match_the_version_are_refused(store: StoreUnderTest) -> None:
    stored = store.open().publish(_artifacts(store.tmp / "a", "one"))
    other = store.open().publish(_artifacts(store.tmp / "b", "two"))
    with pytest.raises((ManifestChecksumError, ManifestArtifactMissingError)):
        fetch_published(stored.location, other.files, home=store.tmp / "reader")


def test_the_store_down_at_publish_keeps_the_previous_version(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = store.open().publish(_artifacts(store.tmp / "prev", "previous"))
    source = _artifacts(store.tmp / "a", "new")
    with _store_down(store, monkeypatch, at="publish"):
        with pytest.raises(ArtifactStoreError) as failed:
            store.open().publish(source)
    message = str(failed.value)
    assert "Nothing was published: the previous manifest version stays the latest" in message
    if store.server is not None:
        assert isinstance(failed.value, ArtifactStoreUnavailableError)
        assert store.setting in message and "AWS_ENDPOINT_URL" in message and "bucket" in message
        assert store.server.secret_key not in message
    assert store.open("reader").versions() == [previous.version]
    assert fetch_published(previous.location, previous.files, home=store.tmp / "reader").version == previous.version


def test_the_store_down_at_resolve_names_the_url_and_what_to_check(
    store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = store.open().publish(_artifacts(store.tmp / "a", "one"))
    with _store_down(store, monkeypatch, at="resolve"):
        with pytest.raises((ArtifactStoreUnavailableError, ManifestArtifactMissingError)) as failed:
            fetch_published(stored.location, stored.files, home=store.tmp / "fresh-host")
    message = str(failed.value)
    if store.server is not None:
        assert isinstance(failed.value, ArtifactStoreUnavailableError)
        assert store.setting in message and stored.version[:12] in message
        assert "AWS_ACCESS_KEY_ID" in message and "AWS_ENDPOINT_URL" in message and "bucket" in message
        assert store.server.secret_key not in message
    else:  # a directory that is not there (an unmounted share)
        assert store.key(stored.location, "manifest.json") in message
    # Back up: the same version resolves.
    assert fetch_published(stored.location, stored.files, home=store.tmp / "fresh-host").version == stored.version


class _store_down:
    """The store unavailable for the ``with`` body: the S3 server stopped (and started
    again after); a local directory whose writes fail with EIO (``at="publish"``) or that
    is not there, like an unmounted share (``at="resolve"``)."""

    def __init__(self, store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch, *, at: str) -> None:
        self.store, self.monkeypatch, self.at = store, monkeypatch, at
        self.root = Path(store.setting)

    def __enter__(self) -> None:
        if self.store.server is not None:
            self.store.server.stop()
        elif self.at == "resolve":
            self.root.rename(self.root.with_name("unmounted"))
        else:

            def io_error(*args: object, **kwargs: object) -> None:
                raise OSError(errno.EIO, os.strerror(errno.EIO))

            self.monkeypatch.setattr(manifest_store, "_copy_durably", io_error)

    def __exit__(self, *exc: object) -> None:
        if self.store.server is not None:
            self.store.server.start()
        elif self.at == "resolve":
            self.root.with_name("unmounted").rename(self.root)
        else:
            self.monkeypatch.undo()


# --- object-store specifics -------------------------------------------------------------------


def test_wrong_credentials_are_refused_without_showing_them(
    s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    with pytest.raises(ArtifactStoreUnavailableError) as failed:
        open_artifact_store(s3_env.url("t/creds"), home=tmp_path).publish(_artifacts(tmp_path / "a", "one"))
    message = str(failed.value)
    assert s3_env.url("t/creds") in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "not-the-secret-at-all" not in message and s3_env.secret_key not in message


def test_a_missing_bucket_is_named(s3_env: S3Server, tmp_path: Path) -> None:
    good = open_artifact_store(s3_env.url("t/bucket"), home=tmp_path).publish(_artifacts(tmp_path / "a", "one"))
    location = good.location.replace(f"s3://{s3_env.bucket}/", "s3://no-such-bucket-here/")
    with pytest.raises(ArtifactStoreUnavailableError, match="s3://no-such-bucket-here.*bucket exists"):
        fetch_published(location, good.files, home=tmp_path / "reader")


def test_a_completion_object_naming_other_files_is_refused(s3_env: S3Server, tmp_path: Path) -> None:
    store = open_artifact_store(s3_env.url("t/completion"), home=tmp_path)
    assert isinstance(store, FsspecArtifactStore)
    stored = store.publish(_artifacts(tmp_path / "a", "one"))
    key = f"{stored.location.removeprefix('s3://')}/{COMPLETION_OBJECT}"
    document = json.loads(store.fs.cat_file(key))
    document["files"]["manifest.json"] = "0" * 64
    store.fs.pipe_file(key, json.dumps(document).encode())
    with pytest.raises(ManifestChecksumError, match=f"{COMPLETION_OBJECT} names other files"):
        fetch_published(stored.location, stored.files, home=tmp_path / "reader")


# --- settings -----------------------------------------------------------------------------------


def test_the_setting_chooses_the_implementation(tmp_path: Path) -> None:
    default = open_artifact_store("", home=tmp_path)
    assert isinstance(default, ManifestStore) and default.root == tmp_path / "artifacts"
    directory = open_artifact_store(str(tmp_path / "elsewhere"), home=tmp_path)
    assert isinstance(directory, ManifestStore) and directory.root == tmp_path / "elsewhere"
    file_url = open_artifact_store(f"file://{tmp_path}/viafile", home=tmp_path)
    assert isinstance(file_url, ManifestStore) and file_url.root == tmp_path / "viafile"
    s3 = open_artifact_store("s3://bucket/some/prefix/", home=tmp_path)
    assert isinstance(s3, FsspecArtifactStore) and s3.url == "s3://bucket/some/prefix"
    assert s3.location("v1") == "s3://bucket/some/prefix/versions/v1"


def test_a_url_whose_fsspec_backend_is_missing_names_the_package(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here, so gs:// opens")
    store = open_artifact_store("gs://bucket/prefix", home=tmp_path)
    with pytest.raises(ConfigurationError, match="install gcsfs"):
        store.publish(_artifacts(tmp_path / "a", "one"))


def test_credentials_in_a_url_never_reach_a_message() -> None:
    assert redact("s3://AKIDEXAMPLE:s3cr3t@bucket/prefix?sig=abc") == "s3://AKIDEXAMPLE@bucket/prefix"
    assert redact("/some/dir") == "/some/dir"


def test_the_core_imports_no_object_store_client() -> None:
    script = (
        "import sys, defer_orchestration.lib.settings, defer_orchestration.lib.artifact_store, "
        "defer_orchestration.defs.manifest_resolution\n"
        "print(sorted(m for m in ('s3fs', 'botocore', 'aiobotocore', 'fsspec') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_settings_carry_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from defer_orchestration.resources import settings_from_env

    monkeypatch.setenv("DEFER_ORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DEFER_ORCH_ARTIFACT_STORE", "s3://bucket/prefix")
    store = settings_from_env(resolve=True).core().store()
    assert isinstance(store, FsspecArtifactStore) and store.url == "s3://bucket/prefix"
    assert store.cache == artifact_store.cache_dir(tmp_path / "home")
    monkeypatch.delenv("DEFER_ORCH_ARTIFACT_STORE")
    local = settings_from_env(resolve=True).core().store()
    assert isinstance(local, ManifestStore) and local.root == tmp_path / "home" / "artifacts"



def test_a_cached_copy_in_use_is_never_replaced_by_a_concurrent_fetch(tmp_path: Path) -> None:
    # Two runs on one host fetching the same version at once: the second's rename must not
    # pull the first's --state directory from under its dbt.
    store = FsspecArtifactStore("s3://bucket/prefix", cache=tmp_path / "cache")
    source = _artifacts(tmp_path / "a", "one")
    files = {n: sha256_file(source / n) for n in manifest_store.ARTIFACT_FILES}
    version = version_of(files)
    first = store._keep(_copy(source, tmp_path / "cache" / ".tmp" / "first"), version, files)
    inode = (first / "manifest.json").stat().st_ino
    second = store._keep(_copy(source, tmp_path / "cache" / ".tmp" / "second"), version, files)
    assert second == first and (first / "manifest.json").stat().st_ino == inode
    assert not (tmp_path / "cache" / ".tmp" / "second").exists()
    # A damaged copy is replaced.
    (first / "manifest.json").write_text("garbage")
    third = store._keep(_copy(source, tmp_path / "cache" / ".tmp" / "third"), version, files)
    assert sha256_file(third / "manifest.json") == files["manifest.json"]
    assert sorted(p.name for p in (tmp_path / "cache" / "versions").iterdir()) == [version]


def _copy(source: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(source, dest)
    return dest
