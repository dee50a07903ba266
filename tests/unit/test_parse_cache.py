"""A branch's cached dbt parse: seeded only into a checkout at the path it was made for."""

from __future__ import annotations

from pathlib import Path

from defer_orchestration.dbt import parse_cache


def _parsed(target: Path, content: bytes) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    (target / parse_cache.PARSE_FILE).write_bytes(content)
    return target


def test_a_kept_parse_seeds_the_next_run_at_the_same_path(tmp_path: Path) -> None:
    cache = parse_cache.cache_dir(tmp_path / "home", "br_feature")
    project = tmp_path / "worktrees" / "br_feature--checkout" / "dbt_project"
    assert parse_cache.keep(_parsed(tmp_path / "run1", b"parse-1"), cache, project)
    target = tmp_path / "run2" / "target"
    assert parse_cache.seed(cache, target, project)
    assert (target / parse_cache.PARSE_FILE).read_bytes() == b"parse-1"
    # A later run replaces it; no staging files stay behind.
    assert parse_cache.keep(_parsed(tmp_path / "run3", b"parse-3"), cache, project)
    assert sorted(p.name for p in cache.iterdir()) == [parse_cache.PARSE_FILE, parse_cache.PROJECT_FILE]
    assert (cache / parse_cache.PARSE_FILE).read_bytes() == b"parse-3"


def test_a_parse_made_elsewhere_is_not_seeded(tmp_path: Path) -> None:
    # dbt keeps unchanged nodes' absolute root_path: a parse from another checkout would
    # make a seed read its CSV from a directory that no longer exists.
    cache = parse_cache.cache_dir(tmp_path / "home", "br_feature")
    parse_cache.keep(_parsed(tmp_path / "run1", b"p"), cache, tmp_path / "old-checkout")
    target = tmp_path / "run2"
    assert not parse_cache.seed(cache, target, tmp_path / "new-checkout")
    assert not (target / parse_cache.PARSE_FILE).exists()


def test_nothing_to_keep_or_seed(tmp_path: Path) -> None:
    cache = parse_cache.cache_dir(tmp_path / "home", "br_x")
    assert not parse_cache.seed(cache, tmp_path / "t", tmp_path / "p")
    assert not parse_cache.keep(tmp_path / "empty-target", cache, tmp_path / "p")
    assert not cache.exists()


def test_an_unwritable_cache_fails_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "home"
    blocker.write_text("a file where the cache directory would go")
    cache = parse_cache.cache_dir(blocker, "br_x")
    assert not parse_cache.keep(_parsed(tmp_path / "run", b"p"), cache, tmp_path / "p")


def test_drop_removes_a_branch_cache(tmp_path: Path) -> None:
    cache = parse_cache.cache_dir(tmp_path / "home", "br_x")
    parse_cache.keep(_parsed(tmp_path / "run", b"p"), cache, tmp_path / "p")
    assert parse_cache.drop(cache)
    assert not cache.exists()
    assert not parse_cache.drop(cache)


def test_outcome_reads_dbts_verdict() -> None:
    assert parse_cache.outcome(False, "") == "none"
    assert parse_cache.outcome(True, "12:00:00  Found 20 models") == "reused"
    output = "12:00:00  Unable to do partial parsing because profile has changed\n12:00:01  Found"
    assert parse_cache.outcome(True, output) == "rejected: profile has changed"
