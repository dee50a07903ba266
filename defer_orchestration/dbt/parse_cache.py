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
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from contextlib import suppress
from pathlib import Path

PARSE_FILE = "partial_parse.msgpack"
PROJECT_FILE = "project_dir.txt"

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
    to seed) or ``rejected: <dbt's reason>`` (dbt parsed in full)."""
    if not seeded:
        return "none"
    match = _REJECTED.search(dbt_output)
    if match:
        return f"rejected: {match['reason'].strip()}"
    return "reused"
