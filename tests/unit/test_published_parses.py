"""Published parses (issue 25): the keys a parse template and a merge-base parse are
published under, the object-store layout that keeps them (content-addressed files, a
completion object written last, verified on fetch), a template made on one host adapted
to another host's paths, and a retry finding the manifest it deferred to through the
store. No dbt: fsspec's in-memory file system stands in for the object store (the same
code path as S3; tests/test_artifact_store_parses.py runs it against SeaweedFS and dbt)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from defer_orchestration.branch.comparison import MERGE_BASE_KIND, merge_base_key, parse_commit_manifest
from defer_orchestration.branch.parse_template import (
    TEMPLATE_KIND,
    fetch_parse_template,
    template_key,
    template_project_dir,
)
from defer_orchestration.branch.retry import branch_run_dir, load_retry, write_state
from defer_orchestration.dbt import parse_cache
from defer_orchestration.dbt.args import StateArgs
from defer_orchestration.lib.artifact_store import (
    COMPLETION_OBJECT,
    FsspecArtifactStore,
    cache_dir,
    parse_store,
)
from defer_orchestration.lib.errors import (
    ArtifactStoreUnavailableError,
    ConfigurationError,
    ManifestArtifactMissingError,
    ManifestChecksumError,
)
from defer_orchestration.lib.manifest_store import PublishedManifest, sha256_file
from defer_orchestration.lib.settings import RepoSettings, Settings
from defer_orchestration.resources import DeferOrchSettings

SHA = "a" * 40
REPO = RepoSettings(repo="/nowhere", subdir="dbt_project")


@pytest.fixture
def url() -> Iterator[str]:
    """A fresh prefix of fsspec's in-memory store (process-wide, so one per test)."""
    from fsspec.implementations.memory import MemoryFileSystem

    prefix = f"memory://parses-{uuid.uuid4().hex[:8]}"
    yield prefix
    fs = MemoryFileSystem()
    if fs.exists(prefix.removeprefix("memory://")):
        fs.rm(prefix.removeprefix("memory://"), recursive=True)


def _settings(home: Path, store: str = "", **fields: str) -> Settings:
    return DeferOrchSettings(
        home=str(home), dbt_project_dir=str(home / "project"), artifact_store=store,
        **{"warehouse_kind": "postgres", "pg_host": "db.internal", "pg_user": "ci", "pg_database": "wh", **fields},
    ).core()


def _project(directory: Path, packages: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dbt_project.yml").write_text("name: shop\nprofile: shop\n")
    if packages is not None:
        (directory / "packages.yml").write_text(packages)
    return directory


# --- keys -----------------------------------------------------------------------------------


def test_a_published_key_names_the_commit_and_digests_the_rest_in_any_order() -> None:
    key = parse_cache.published_key(SHA, {"vars": {"a": 1, "b": 2}, "dbt": "1.11.2"})
    assert key.startswith(SHA + "-") and len(key) == 40 + 1 + 24
    assert key == parse_cache.published_key(SHA, {"dbt": "1.11.2", "vars": {"b": 2, "a": 1}})
    assert key != parse_cache.published_key(SHA, {"vars": {"a": 1, "b": 3}, "dbt": "1.11.2"})
    assert key != parse_cache.published_key("b" * 40, {"vars": {"a": 1, "b": 2}, "dbt": "1.11.2"})


def test_the_profile_identity_is_the_connection_without_threads_or_password() -> None:
    output = {"type": "postgres", "host": "h", "schema": "s", "threads": 8, "password": "{{ env_var('X') }}"}
    assert parse_cache.profile_identity(output) == {"type": "postgres", "host": "h", "schema": "s"}


def test_a_template_key_changes_with_whatever_makes_dbt_reject_the_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = parse_cache.template_token()
    project = _project(tmp_path / "checkout" / "dbt_project")

    def key(settings: Settings | None = None, repo: RepoSettings = REPO, vars: dict | None = None,
            where: Path = project, sha: str = SHA) -> str:
        return template_key(
            settings or _settings(tmp_path / "home"), repo, sha=sha, token=token, vars=vars or {},
            project_dir=where, production_schemas=["prod"],
        )

    base = key()
    assert base == key(_settings(tmp_path / "another-home"))  # the home is no part of it
    assert base == key(DeferOrchSettings(
        home=str(tmp_path / "home"), dbt_project_dir=str(project), warehouse_kind="postgres",
        pg_host="db.internal", pg_user="ci", pg_database="wh", threads=16,
    ).core())
    changed = {
        "commit": key(sha="c" * 40),
        "vars": key(vars={"region": "eu"}),
        "connection": key(_settings(tmp_path / "home", pg_host="other.internal")),
        "database": key(_settings(tmp_path / "home", pg_database="other")),
        "subdir": key(repo=RepoSettings(repo="/nowhere", subdir=".")),
        "packages": key(where=_project(tmp_path / "with-packages" / "dbt_project", "packages: []\n")),
    }
    monkeypatch.setattr(parse_cache, "dbt_core_version", lambda: "1.99.0")
    changed["dbt version"] = key()
    assert base not in changed.values()
    assert len(set(changed.values())) == len(changed), changed


def test_a_merge_base_key_changes_with_vars_connection_and_dbt_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path / "home")
    base = merge_base_key(settings, REPO, SHA, {})
    assert base.startswith(SHA) and base == merge_base_key(_settings(tmp_path / "elsewhere"), REPO, SHA, {})
    others = {
        merge_base_key(settings, REPO, SHA, {"x": 1}),
        merge_base_key(_settings(tmp_path / "home", pg_port="6543"), REPO, SHA, {}),
        merge_base_key(settings, RepoSettings(repo="/nowhere", subdir="."), SHA, {}),
    }
    monkeypatch.setattr(parse_cache, "dbt_core_version", lambda: "1.99.0")
    others.add(merge_base_key(settings, REPO, SHA, {}))
    assert len(others) == 4 and base not in others


# --- the store's layout and guarantees ------------------------------------------------------


def _file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_published_parse_is_fetched_verified_with_its_meta(tmp_path: Path, url: str) -> None:
    store = FsspecArtifactStore(url, cache=tmp_path / "cache")
    key = f"{SHA}-0123"
    location = store.publish_parse("template", key, {"p.msgpack": _file(tmp_path / "p", b"parse")}, {"sha": SHA})
    assert location == f"{url}/parses/template/{key}"
    digest = sha256_file(tmp_path / "p")
    assert store.fs.exists(f"{store._root}/parses/template/{key}/files/{digest}")  # under its content address
    fetched = store.fetch_parse("template", key, tmp_path / "got")
    assert fetched is not None
    assert (fetched.path / "p.msgpack").read_bytes() == b"parse"
    assert (dict(fetched.files), dict(fetched.meta)) == ({"p.msgpack": digest}, {"sha": SHA})
    # Another key, or another kind, was never published.
    assert store.fetch_parse("template", f"{SHA}-9999", tmp_path / "none") is None
    assert store.fetch_parse(MERGE_BASE_KIND, key, tmp_path / "none2") is None


def test_files_without_a_completion_object_are_not_a_published_parse(tmp_path: Path, url: str) -> None:
    store = FsspecArtifactStore(url, cache=tmp_path / "cache")
    key = f"{SHA}-half"
    store.publish_parse("template", key, {"p.msgpack": _file(tmp_path / "p", b"parse")}, {})
    store.fs.rm_file(f"{store._root}/parses/template/{key}/{COMPLETION_OBJECT}")  # as if killed before it
    assert store.fetch_parse("template", key, tmp_path / "got") is None


def test_a_corrupt_file_or_completion_object_is_refused_naming_it(tmp_path: Path, url: str) -> None:
    store = FsspecArtifactStore(url, cache=tmp_path / "cache")
    key = f"{SHA}-bad"
    blob = _file(tmp_path / "p", b"parse")
    digest = sha256_file(blob)
    store.publish_parse("template", key, {"p.msgpack": blob}, {})
    store.fs.pipe_file(f"{store._root}/parses/template/{key}/files/{digest}", b"garbage")
    with pytest.raises(ManifestChecksumError, match=f"{url}/parses/template/{key}/files/{digest} is corrupt"):
        store.fetch_parse("template", key, tmp_path / "got")
    store.fs.pipe_file(f"{store._root}/parses/template/{key}/{COMPLETION_OBJECT}", b"{not json")
    with pytest.raises(ManifestChecksumError, match=f"{key}/{COMPLETION_OBJECT} is not JSON"):
        store.fetch_parse("template", key, tmp_path / "got2")
    # A completion object copied from another key does not describe this one.
    store.publish_parse("template", f"{SHA}-other", {"p.msgpack": blob}, {})
    moved = store.fs.cat_file(f"{store._root}/parses/template/{SHA}-other/{COMPLETION_OBJECT}")
    store.fs.pipe_file(f"{store._root}/parses/template/{key}/{COMPLETION_OBJECT}", moved)
    with pytest.raises(ManifestChecksumError, match="does not describe this parse"):
        store.fetch_parse("template", key, tmp_path / "got3")


def test_only_an_object_store_keeps_published_parses(tmp_path: Path) -> None:
    assert parse_store("", home=tmp_path) is None
    assert parse_store(str(tmp_path / "dir"), home=tmp_path) is None
    store = parse_store("s3://bucket/prefix", home=tmp_path)
    assert store is not None and store.cache == cache_dir(tmp_path)


# --- a template from another host -------------------------------------------------------------


def _template_bytes(project_dir: str) -> bytes:
    """A stand-in for dbt's partial_parse.msgpack: absolute paths in values and keys, an
    extension type and a timestamp (what dbt's encoder writes) that must come through."""
    return msgpack.packb({
        "files": {f"{project_dir}/models/a.sql": {"root_path": project_dir, "path": "models/a.sql"}},
        "nodes": [{"root_path": project_dir, "raw_code": "select 1"}],
        "ext": msgpack.ExtType(5, b"\x00\x01"),
        "when": msgpack.Timestamp(1_700_000_000, 5),
        "number": 1.5,
    }, use_bin_type=True)


def test_relocate_rewrites_path_prefixes_everywhere_and_keeps_the_rest() -> None:
    data = _template_bytes("/a/home/scratch/worktrees/tok--checkout/dbt_project")
    moved = parse_cache.relocate(data, {"/a/home/scratch/worktrees/tok--checkout/dbt_project": "/b/h/p"})
    decoded = msgpack.unpackb(moved, raw=False, strict_map_key=False)
    assert decoded["files"] == {"/b/h/p/models/a.sql": {"root_path": "/b/h/p", "path": "models/a.sql"}}
    assert decoded["nodes"][0]["root_path"] == "/b/h/p"
    assert decoded["ext"] == msgpack.ExtType(5, b"\x00\x01")
    assert decoded["when"] == msgpack.Timestamp(1_700_000_000, 5) and decoded["number"] == 1.5
    assert parse_cache.relocate(data, {}) == data
    # One pass: a replacement containing another root is not rewritten again.
    twice = parse_cache.relocate(msgpack.packb(["/x/y"]), {"/x/": "/x/x/", "/x/x/": "/never/"})
    assert msgpack.unpackb(twice) == ["/x/x/y"]


def _publish_from_host_a(tmp_path: Path, url: str, *, sha: str = SHA) -> tuple[Settings, Path]:
    """What make_parse_template publishes on host A: the parse made at A's stable path."""
    home_a = tmp_path / "host-a"
    settings_a = _settings(home_a, url)
    token = parse_cache.template_token()
    made_at = template_project_dir(settings_a, REPO, token)
    _project(made_at)
    parse = _file(tmp_path / "a-target" / parse_cache.PARSE_FILE, _template_bytes(str(made_at)))
    key = template_key(settings_a, REPO, sha=sha, token=token, vars={}, project_dir=made_at, production_schemas=["prod"])
    store = parse_store(url, home=home_a)
    assert store is not None
    meta = {"sha": sha, "token": token, "project_dir": str(made_at), "home": str(home_a.resolve())}
    store.publish_parse(TEMPLATE_KIND, key, {parse_cache.PARSE_FILE: parse}, meta)
    return settings_a, made_at


def test_a_host_with_another_home_fetches_the_template_at_its_own_paths(tmp_path: Path, url: str) -> None:
    _, made_at = _publish_from_host_a(tmp_path, url)
    settings_b = _settings(tmp_path / "b-is-elsewhere", url)
    schema = "br_feature_x_0123456789"
    branch_checkout = _project(
        settings_b.scratch_path() / "worktrees" / f"{schema}--checkout" / "dbt_project"
    ).resolve()
    warning = fetch_parse_template(
        settings_b, REPO, sha=SHA, project_dir=branch_checkout, vars={}, production_schemas=["prod"]
    )
    assert warning is None
    template = parse_cache.template_for(settings_b.home, schema, branch_checkout)
    assert template is not None and template["sha"] == SHA
    decoded = msgpack.unpackb(Path(template["path"]).read_bytes(), raw=False, strict_map_key=False)
    here = str(template_project_dir(settings_b, REPO, parse_cache.template_token()))
    assert decoded["nodes"][0]["root_path"] == here and str(made_at) not in json.dumps(decoded["files"])
    # Held now: the next first run fetches nothing (the store may even be gone).
    assert fetch_parse_template(
        settings_b, REPO, sha=SHA, project_dir=branch_checkout, vars={}, production_schemas=["prod"]
    ) is None


def test_a_missing_corrupt_or_unreachable_template_is_a_warning_not_a_failure(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish_from_host_a(tmp_path, url)
    settings_b = _settings(tmp_path / "host-b", url)
    checkout = _project(tmp_path / "host-b-checkout" / "dbt_project")

    def fetch(settings: Settings = settings_b, sha: str = SHA, vars: dict | None = None) -> str | None:
        return fetch_parse_template(
            settings, REPO, sha=sha, project_dir=checkout, vars=vars or {}, production_schemas=["prod"]
        )

    missing = fetch(vars={"launch": 1})  # a template made with other vars is not this run's
    assert missing is not None and "no parse template of production's commit aaaaaaaaaaaa is published at" in missing
    assert f"{url}/parses/template/{SHA}-" in missing and "parsed this branch's first run in full" in missing
    store = parse_store(url, home=settings_b.home)
    assert store is not None
    for blob in store.fs.find(f"{store._root}/parses/template"):
        if "/files/" in blob:
            store.fs.pipe_file(blob, b"not what was published")
    corrupt = fetch()
    assert corrupt is not None and "is corrupt" in corrupt and "parsed this branch's first run in full" in corrupt
    assert parse_cache.template_meta(settings_b.home) == {}  # nothing corrupt was kept
    for name, value in {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k",
                        "AWS_SECRET_ACCESS_KEY": "secret-key-value", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    down = fetch(_settings(tmp_path / "host-c", "s3://bucket/prefix"))
    assert down is not None and "could not read the template parse" in down and "s3://bucket/prefix" in down
    assert "AWS_ENDPOINT_URL" in down and "secret-key-value" not in down


def test_a_store_where_no_host_publishes_templates_is_no_warning(tmp_path: Path, url: str) -> None:
    # branch_parse_template_sensor is off (its default): every first run parses in full, as
    # on one host, and no run is told so again and again.
    settings = _settings(tmp_path / "host-b", url)
    checkout = _project(tmp_path / "checkout" / "dbt_project")
    assert fetch_parse_template(
        settings, REPO, sha=SHA, project_dir=checkout, vars={}, production_schemas=["prod"]
    ) is None
    assert parse_cache.template_meta(settings.home) == {}


def test_a_merge_base_parse_published_by_another_host_is_fetched_instead_of_parsed(
    tmp_path: Path, url: str
) -> None:
    settings_a = _settings(tmp_path / "host-a", url)
    store = parse_store(url, home=settings_a.home)
    assert store is not None
    manifest = _file(tmp_path / "m" / "manifest.json", b'{"metadata": {}, "nodes": {}}')
    store.publish_parse(MERGE_BASE_KIND, merge_base_key(settings_a, REPO, SHA, {}), {"manifest.json": manifest}, {})
    settings_b = _settings(tmp_path / "host-b", url)
    warnings: list[str] = []
    # No mirror, no dbt: a parse would fail; the published one is used.
    path, run = parse_commit_manifest(settings_b, REPO, tmp_path / "no-mirror", SHA, vars={}, warnings=warnings)
    assert run is None and warnings == []
    assert (path / "manifest.json").read_bytes() == manifest.read_bytes()
    assert path.is_relative_to(settings_b.home)


def test_a_merge_base_parsed_here_is_published_and_a_store_failure_is_only_a_warning(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from defer_orchestration.branch import comparison

    parsed: list[str] = []

    def parse(settings: Settings, repo: RepoSettings, mirror: Path, sha: str, *, vars: object, cache: Path) -> object:
        parsed.append(str(settings.home))
        _file(cache / "manifest.json", b'{"parsed": "' + settings.home.name.encode() + b'"}')
        return type("Run", (), {"ok": True})()

    monkeypatch.setattr(comparison, "_parse_commit", parse)
    settings_a = _settings(tmp_path / "host-a", url)
    warnings: list[str] = []
    _, run = parse_commit_manifest(settings_a, REPO, tmp_path / "mirror", SHA, vars={}, warnings=warnings)
    assert run is not None and warnings == [] and parsed == [str(settings_a.home)]
    settings_b = _settings(tmp_path / "host-b", url)
    path, run = parse_commit_manifest(settings_b, REPO, tmp_path / "mirror", SHA, vars={}, warnings=warnings)
    assert run is None and parsed == [str(settings_a.home)]  # B paid no parse
    assert json.loads((path / "manifest.json").read_text()) == {"parsed": "host-a"}
    # Corrupt in the store: host C parses itself and says why.
    store = parse_store(url, home=settings_b.home)
    assert store is not None
    for blob in store.fs.find(f"{store._root}/parses/{MERGE_BASE_KIND}"):
        if "/files/" in blob:
            store.fs.pipe_file(blob, b"{}")
    settings_c = _settings(tmp_path / "host-c", url)
    path, run = parse_commit_manifest(settings_c, REPO, tmp_path / "mirror", SHA, vars={}, warnings=warnings)
    assert run is not None and json.loads((path / "manifest.json").read_text()) == {"parsed": "host-c"}
    assert len(warnings) == 1 and "could not be used, so it was parsed here" in warnings[0] and "corrupt" in warnings[0]
    # An unreachable store: parsed here, not published, the run goes on.
    for name, value in {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k",
                        "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    down: list[str] = []
    settings_d = _settings(tmp_path / "host-d", "s3://bucket/prefix")
    path, run = parse_commit_manifest(settings_d, REPO, tmp_path / "mirror", SHA, vars={}, warnings=down)
    assert run is not None and (path / "manifest.json").is_file()
    assert len(down) == 2 and "parsed here" in down[0] and "was not published" in down[1]


# --- a retry on a host without the manifest it deferred to -----------------------------------


def _published(tmp_path: Path, url: str, home: Path) -> PublishedManifest:
    source = tmp_path / "build"
    _file(source / "manifest.json", json.dumps({"metadata": {"dbt_version": "1.11.2"}, "nodes": {}}).encode())
    _file(source / "run_results.json", b'{"results": []}')
    stored = FsspecArtifactStore(url, cache=cache_dir(home)).publish(source)
    return PublishedManifest(
        version=stored.version, path=stored.path, manifest_sha256=stored.files["manifest.json"],
        run_results_sha256=stored.files["run_results.json"], producing_run_id="prod-run", dbt_version="1.11.2",
        git_sha=SHA, created_at=0.0, location=stored.location,
    )


def _original_run(settings: Settings, run_id: str, published: PublishedManifest | None, **state: object) -> Path:
    run_dir = branch_run_dir(settings, run_id)
    _file(run_dir / "target" / "run_results.json", b'{"results": []}')
    defer = StateArgs(run_dir / "target", published.path if published else None, favor_state=True)
    write_state(run_dir, sha=SHA, state=defer, exclude="tag:slow", vars={"v": 1}, published=published)
    if state:
        recorded = json.loads((run_dir / "state.json").read_text())
        (run_dir / "state.json").write_text(json.dumps({**recorded, **state}))
    return run_dir


def test_a_retry_fetches_the_manifest_it_deferred_to_when_this_host_lacks_it(tmp_path: Path, url: str) -> None:
    published = _published(tmp_path, url, tmp_path / "host-a")
    home = tmp_path / "host-b"
    settings = _settings(home, url)
    run_dir = _original_run(settings, "run-1", published)
    recorded = json.loads((run_dir / "state.json").read_text())
    assert recorded["defer_location"] == f"{url}/versions/{published.version}"
    assert recorded["defer_files"] == {
        "manifest.json": published.manifest_sha256, "run_results.json": published.run_results_sha256
    }
    plan = load_retry(settings, "run-1")
    assert plan.published is not None and plan.published.version == published.version
    assert plan.published.path == cache_dir(home) / "versions" / published.version  # fetched here
    assert plan.published.location == published.location  # a retry of the retry finds it too
    assert (plan.sha, plan.exclude, plan.vars, plan.state.favor_state) == (SHA, "tag:slow", {"v": 1}, True)
    assert plan.state.defer_state == plan.published.path and plan.state.compare_state == run_dir / "target"


def test_a_retry_refuses_a_corrupt_stored_manifest(tmp_path: Path, url: str) -> None:
    published = _published(tmp_path, url, tmp_path / "host-a")
    settings = _settings(tmp_path / "host-b", url)
    _original_run(settings, "run-2", published)
    store = FsspecArtifactStore(url, cache=tmp_path / "x")
    store.fs.pipe_file(f"{store._root}/versions/{published.version}/manifest.json", b"{}")
    with pytest.raises(ManifestChecksumError, match="is corrupt.*Launch a fresh branch_ci_job run instead of a retry"):
        load_retry(settings, "run-2")


def test_a_retry_reads_records_without_a_location_as_before(tmp_path: Path, url: str) -> None:
    published = _published(tmp_path, url, tmp_path / "host-a")
    settings = _settings(tmp_path / "host-a", url)  # the same host: its cache holds the version
    _original_run(settings, "old", published, defer_location=None, defer_files=None)
    plan = load_retry(settings, "old")
    assert plan.published is not None and plan.published.path == published.path
    shutil.rmtree(published.path)  # the cache was cleaned: an old record names nothing else
    _original_run(settings, "old-cleaned", published, defer_location=None, defer_files=None)
    with pytest.raises(ManifestArtifactMissingError, match="is gone from the artifact store.*Launch a fresh"):
        load_retry(settings, "old-cleaned")


def test_a_retry_without_the_runs_results_on_this_host_says_so(tmp_path: Path, url: str) -> None:
    settings = _settings(tmp_path / "host-b", url)
    with pytest.raises(ConfigurationError, match="no state.json of its branch build.*ran on another host"):
        load_retry(settings, "never-here")
    run_dir = _original_run(settings, "results-lost", None)
    (run_dir / "target" / "run_results.json").unlink()
    with pytest.raises(ConfigurationError, match="no target/run_results.json.*a retry must run there"):
        load_retry(settings, "results-lost")


def test_an_unreachable_store_fails_a_retry_naming_it(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    published = _published(tmp_path, url, tmp_path / "host-a")
    settings = _settings(tmp_path / "host-b", "s3://bucket/prefix")
    moved = dataclasses.replace(published, location=f"s3://bucket/prefix/versions/{published.version}")
    _original_run(settings, "run-3", moved)
    for name, value in {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k",
                        "AWS_SECRET_ACCESS_KEY": "secret-key-value", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ArtifactStoreUnavailableError, match="s3://bucket/prefix.*Launch a fresh branch_ci_job run"):
        load_retry(settings, "run-3")
