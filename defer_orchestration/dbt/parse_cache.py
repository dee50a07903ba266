"""Each branch schema keeps dbt's ``partial_parse.msgpack`` from its last run.

Every branch run checks the commit out into a fresh worktree with a fresh target
directory, so without help dbt parses the whole project every time (about 15 s at 1,000
models here). dbt can reuse a previous parse and re-read only the files that changed, if
the parse was made with the same dbt version, project, vars and profile. The profile
includes the schema, so production's parse (schema ``prod``) is always rejected, but the
same branch's previous run qualifies. Pushing again to a branch re-parses only the
changed files.

dbt validates the file itself and falls back to a full parse when anything differs, with
one exception: it does not notice that the project moved. Unchanged nodes keep the
absolute ``root_path`` of the checkout that parsed them, and a seed is read from there at
build time. So a parse is only reused by a checkout at the same path (``branch_build``
checks each branch out at a stable path), and the path is recorded next to the file.
Files are replaced atomically; a branch's cache is removed with its schema.

A branch's *first* run has no previous parse of its own. For it, a parse template is
kept: a parse of production's latest commit made for a branch target whose schema is a
placeholder (:func:`template_token`), checked out at that placeholder's stable path
(``branch/parse_template.py`` makes it). Everything such a parse holds that differs
between two branches derives from the schema name: node schemas and databases (DuckDB's
branch catalog is ``db_<schema>``), relation names, the checkout's path. The dbt session
child (``dbt/internals.py``, a guarded dbt internal) replaces the placeholder with the run's schema in every string
of the template, checks that the template was made for the same connection as the run
(dbt's profile hash with the schema put back), and hands it to dbt, which then re-reads
only the files the branch changed, as for any partial parse. A project whose parse
transforms the schema name instead of embedding it (``target.schema | upper``) leaves a
piece of the placeholder behind; the template is then rejected and dbt parses in full.

With an object store as the artifact store, the template is also published there
(``branch/parse_template.py``), so a host with an empty home starts its branches' first
runs from it instead of parsing in full. Its key (:func:`published_key`) names the commit
and everything dbt checks before reusing a parse: dbt's version, the profile's connection
(:func:`profile_identity`), vars, the packages' lock and the project's place in the
repository. Absolute paths are the one thing that differs between two hosts: the template
names the checkout it was parsed in (``<home>/scratch/worktrees/<token>--checkout``), so
the fetching host rewrites the publisher's paths to its own (:func:`relocate`) before
keeping it, and the template is then exactly what a local one would be.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from defer_orchestration.lib.schema_names import branch_hash, branch_schema_name

PARSE_FILE = "partial_parse.msgpack"
PROJECT_FILE = "project_dir.txt"
TEMPLATE_DIR = "_template"  # not a branch schema's shape: no branch's cache can be named so
TEMPLATE_FILE = "template.json"
# The line the session child writes into a parse's output about the template it was given.
TEMPLATE_LINE = "defer-orchestration parse template: "
_TEMPLATE_BRANCH = "defer-orchestration/parse-template"

_REJECTED = re.compile(r"Unable to do partial parsing because (?P<reason>[^\n]+)")


def cache_dir(home: Path, schema: str) -> Path:
    """Where ``schema``'s last parse is kept."""
    return home / "parse_cache" / schema


def _made_for(cache: Path) -> str | None:
    try:
        return (cache / PROJECT_FILE).read_text(encoding="utf-8")
    except OSError:
        return None


def seed(cache: Path, target_path: Path, project_dir: Path) -> bool:
    """Copy the cached parse into a run's target directory if it was made for a project
    at ``project_dir``; whether it was."""
    source = cache / PARSE_FILE
    if not source.is_file() or _made_for(cache) != str(project_dir):
        return False
    target_path.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(source, target_path / PARSE_FILE)
    except OSError:
        return False  # unreadable or removed meanwhile: dbt parses in full
    return True


def keep(target_path: Path, cache: Path, project_dir: Path) -> bool:
    """Keep the parse a run just made (of the project at ``project_dir``) for the next
    run of the same schema."""
    source = target_path / PARSE_FILE
    if not source.is_file():
        return False
    token = uuid.uuid4().hex[:8]
    staged = {
        PARSE_FILE: cache / f".{PARSE_FILE}.{token}.tmp",
        PROJECT_FILE: cache / f".{PROJECT_FILE}.{token}.tmp",
    }
    try:
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, staged[PARSE_FILE])
        staged[PROJECT_FILE].write_text(str(project_dir), encoding="utf-8")
        # The path first: a parse is never paired with another checkout's path.
        (cache / PARSE_FILE).unlink(missing_ok=True)
        os.replace(staged[PROJECT_FILE], cache / PROJECT_FILE)
        os.replace(staged[PARSE_FILE], cache / PARSE_FILE)
    except OSError:
        for path in staged.values():
            with suppress(OSError):
                path.unlink(missing_ok=True)
        return False  # a cache is an optimisation: failing to write one fails nothing
    return True


def drop(cache: Path) -> bool:
    """Remove a schema's cached parse (its branch is gone); whether there was one."""
    existed = cache.exists()
    shutil.rmtree(cache, ignore_errors=True)
    return existed


def outcome(seeded: bool, dbt_output: str) -> str:
    """What became of the seeded parse, from dbt's output: ``reused``, ``none`` (nothing
    to seed) or ``rejected: <dbt's reason>`` (dbt parsed in full). A template handed to
    the session instead: ``template <sha>: reused`` or ``template <sha>: rejected: ...``."""
    template = re.search(re.escape(TEMPLATE_LINE) + r"(?P<what>[^\n]+)", dbt_output)
    if template:
        what = template["what"].strip()
        match = _REJECTED.search(dbt_output)
        if what.endswith(": used") and match:  # dbt accepted it, then chose a full parse
            return f"{what[: -len(': used')]}: rejected: {match['reason'].strip()}"
        return what.replace(": used", ": reused")
    if not seeded:
        return "none"
    match = _REJECTED.search(dbt_output)
    if match:
        return f"rejected: {match['reason'].strip()}"
    return "reused"


# --- the parse template: a first run's head start -------------------------------------


def template_token() -> str:
    """The placeholder schema a parse template is made for: shaped like a branch schema
    (prefix, slug, hash), so a project's naming macros treat it as any branch's."""
    return branch_schema_name(_TEMPLATE_BRANCH)


def template_marker() -> str:
    """The part of :func:`template_token` no project contains by chance (its hash); seen
    in any case after substitution, the project transformed the schema name."""
    return branch_hash(_TEMPLATE_BRANCH)


def template_dir(home: Path) -> Path:
    """Where the parse template is kept (one: production's latest commit)."""
    return home / "parse_cache" / TEMPLATE_DIR


def keep_template(target_path: Path, home: Path, *, project_dir: Path, token: str, sha: str) -> bool:
    """Keep the parse just made (placeholder schema ``token``, commit ``sha``) as the
    template; whether it was kept."""
    cache = template_dir(home)
    if not keep(target_path, cache, project_dir):
        return False
    meta = {"token": token, "sha": sha}
    staged = cache / f".{TEMPLATE_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        staged.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(staged, cache / TEMPLATE_FILE)
    except OSError:
        with suppress(OSError):
            staged.unlink(missing_ok=True)
        return False
    return True


def install_template(parse_file: Path, home: Path, *, project_dir: Path, meta: Mapping[str, Any]) -> bool:
    """Keep a template another host made and published (its ``partial_parse.msgpack`` at
    ``parse_file``, what it recorded in ``meta``) as this host's template for a checkout at
    ``project_dir``: the publisher's checkout and home are rewritten to this host's in every
    string (:func:`relocate`). Whether it was kept; a template that cannot be adapted is not."""
    try:
        token, sha, made_at, made_home = (str(meta[k]) for k in ("token", "sha", "project_dir", "home"))
        if not token or token not in made_at or token not in str(project_dir):
            return False
        roots = {made_at: str(project_dir)}
        if made_home and made_home != "/":
            roots[made_home.rstrip("/") + "/"] = str(home.resolve()).rstrip("/") + "/"
        data = relocate(parse_file.read_bytes(), roots)
    except Exception:  # noqa: BLE001  (not a template we can read: dbt parses in full)
        return False
    staging = home / "parse_cache" / f".fetched-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True, exist_ok=True)
        (staging / PARSE_FILE).write_bytes(data)
        return keep_template(staging, home, project_dir=project_dir, token=token, sha=sha)
    except OSError:
        return False
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def relocate(data: bytes, roots: Mapping[str, str]) -> bytes:
    """msgpack ``data`` with every occurrence of each key of ``roots`` (an absolute path
    prefix) replaced by its value, in every string and key; one pass, longest prefix first,
    so a replacement is never replaced again. Extension types are carried over untouched."""
    import msgpack  # type: ignore[import-untyped]

    if not roots:
        return data
    pattern = re.compile("|".join(re.escape(old) for old in sorted(roots, key=len, reverse=True)))

    def text(value: Any) -> Any:
        if value.__class__ is str and pattern.search(value):
            return pattern.sub(lambda match: roots[match.group(0)], value)
        return value

    decoded = msgpack.unpackb(
        data, raw=False, strict_map_key=False,
        object_pairs_hook=lambda pairs: {text(k): text(v) for k, v in pairs},
        list_hook=lambda items: [text(v) for v in items],
    )
    return bytes(msgpack.packb(text(decoded), use_bin_type=True))


def profile_identity(output: Mapping[str, Any]) -> dict[str, Any]:
    """What of a dbt profile output a parse depends on: its connection (dbt hashes the
    connection into the parse), not its thread count, and never a password (ours are
    ``env_var`` references, but a key must not depend on one either way)."""
    return {k: v for k, v in output.items() if k not in ("threads", "password", "pass")}


def published_key(sha: str, inputs: Mapping[str, Any]) -> str:
    """The key a parse of commit ``sha`` is published under: the commit, then a digest of
    everything else it depends on (``inputs``, any JSON-able mapping; order does not matter)."""
    digest = hashlib.sha256(json.dumps(dict(inputs), sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return f"{sha}-{digest[:24]}"


def dbt_core_version() -> str:
    """The installed dbt-core's version (a parse made by another is rejected by dbt)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dbt-core")
    except PackageNotFoundError:
        return "unknown"


def template_meta(home: Path) -> dict[str, str]:
    """The kept template's placeholder and commit (``{}`` when there is none)."""
    try:
        meta = json.loads((template_dir(home) / TEMPLATE_FILE).read_text(encoding="utf-8"))
        return {"token": str(meta["token"]), "sha": str(meta["sha"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def template_for(home: Path, schema: str, project_dir: Path) -> dict[str, str] | None:
    """The template a first run of ``schema`` checked out at ``project_dir`` can start
    from (what the session child needs: file, placeholder, schema, commit), or None."""
    cache = template_dir(home)
    meta = template_meta(home)
    if not meta:
        return None
    token, sha = meta["token"], meta["sha"]
    made_for = _made_for(cache)
    if not token or made_for is None or made_for.replace(token, schema) != str(project_dir):
        return None  # made at another path pattern (or by another layout): useless here
    if not (cache / PARSE_FILE).is_file():
        return None
    return {"path": str(cache / PARSE_FILE), "token": token, "schema": schema, "sha": sha}


def transformed(data: bytes, token: str) -> bool:
    """Whether msgpack ``data`` holds the placeholder's marker (its hash) anywhere but
    inside an exact ``token``: in another letter case or cut from the rest of the name,
    i.e. the project transformed the schema name rather than embedding it."""
    marker = template_marker().encode("ascii")
    return data.lower().count(marker) != data.count(token.encode("utf-8"))


def unpack_substituted(data: bytes, old: str, new: str, ext_hook: Any) -> Any:
    """msgpack ``data`` decoded with ``old`` replaced by ``new`` in every string and key:
    :func:`substitute` done while decoding (the hooks see each container once)."""
    import msgpack

    def text(value: Any) -> Any:
        return value.replace(old, new) if value.__class__ is str and old in value else value

    return msgpack.unpackb(
        data, raw=False, ext_hook=ext_hook,
        object_pairs_hook=lambda pairs: {text(k): text(v) for k, v in pairs},
        list_hook=lambda items: [text(v) for v in items],
    )


def substitute(value: Any, old: str, new: str) -> Any:
    """``value`` (decoded msgpack / JSON: dicts, lists, tuples, strings, scalars) with
    ``old`` replaced by ``new`` in every string, dictionary keys included."""
    if isinstance(value, str):
        return value.replace(old, new) if old in value else value
    if isinstance(value, dict):
        return {substitute(k, old, new): substitute(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, old, new) for v in value]
    if isinstance(value, tuple):
        return tuple(substitute(v, old, new) for v in value)
    return value
