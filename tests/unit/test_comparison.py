"""Choosing the comparison state: every outcome of the pure decision, and the same
outcomes reached through real git repositories (no dbt: the merge-base parse is a stub
that records its calls)."""

from __future__ import annotations

from pathlib import Path

from helpers import commit_all, git, init_repo

from defer_orchestration.branch.comparison import (
    Comparison,
    ComparisonInputs,
    choose_comparison,
    decide,
)
from defer_orchestration.lib import git as gitlib
from defer_orchestration.lib.manifest_store import PublishedManifest

BASE = "b" * 40


def published(version: str, git_sha: str | None, path: Path = Path("/store")) -> PublishedManifest:
    return PublishedManifest(
        version=version, path=path / version, manifest_sha256="m", run_results_sha256="r",
        producing_run_id="run", dbt_version="1.11.2", git_sha=git_sha, created_at=0.0,
    )


LATEST = published("latest" + "0" * 58, "a" * 40)


def test_comparison_off_compares_with_the_latest_manifest() -> None:
    decision = decide(ComparisonInputs(enabled=False, latest=LATEST, merge_base=BASE))
    assert (decision.outcome, decision.state) == (Comparison.OFF, LATEST)
    assert "merge-base comparison off" in decision.note


def test_a_git_error_falls_back_to_the_latest_manifest_and_says_why() -> None:
    decision = decide(ComparisonInputs(True, LATEST, git_error="fatal: bad object"))
    assert (decision.outcome, decision.state) == (Comparison.NO_MERGE_BASE, LATEST)
    assert "no merge-base (fatal: bad object)" in decision.note


def test_no_shared_history_compares_with_the_latest_manifest() -> None:
    decision = decide(ComparisonInputs(True, LATEST, merge_base=None))
    assert (decision.outcome, decision.state) == (Comparison.UNRELATED, LATEST)
    assert "shares no history with main" in decision.note


def test_a_merge_base_production_last_built_uses_the_latest_manifest() -> None:
    decision = decide(ComparisonInputs(True, LATEST, merge_base=LATEST.git_sha))
    assert (decision.outcome, decision.state, decision.merge_base) == (
        Comparison.BASE_IS_LATEST, LATEST, LATEST.git_sha,
    )


def test_a_published_build_of_the_merge_base_is_compared_against() -> None:
    older = published("older" + "0" * 59, BASE)
    decision = decide(ComparisonInputs(True, LATEST, merge_base=BASE, built_from_base=older))
    assert (decision.outcome, decision.state) == (Comparison.BASE_PUBLISHED, older)
    assert "built from merge-base bbbbbbbbbbbb" in decision.note and "deferred to" in decision.note


def test_an_unbuilt_merge_base_is_parsed() -> None:
    decision = decide(ComparisonInputs(True, LATEST, merge_base=BASE))
    assert (decision.outcome, decision.state, decision.merge_base) == (Comparison.BASE_PARSED, None, BASE)


# --- through git -----------------------------------------------------------------------


def _choose(mirror: Path, sha: str, latest: PublishedManifest, **kwargs):
    parsed: list[str] = []
    lookups: list[str] = []

    def lookup(commit: str) -> PublishedManifest | None:
        lookups.append(commit)
        return kwargs.get("built")

    def parse(commit: str):
        parsed.append(commit)
        return Path("/parsed") / commit, None

    state = choose_comparison(
        enabled=kwargs.get("enabled", True), latest=latest, mirror=mirror, sha=sha, main_branch="main",
        published_for_commit=lookup, parse_commit=parse,
    )
    return state, parsed, lookups


def _repo(tmp_path: Path) -> tuple[Path, str, str, str]:
    """main: m1 -> m2; feature forks at m1 with f1. Returns (mirror, m1, m2, f1)."""
    repo = init_repo(tmp_path / "repo")
    (repo / "a.txt").write_text("1")
    m1 = commit_all(repo, "m1")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "b.txt").write_text("f")
    f1 = commit_all(repo, "f1")
    git(repo, "checkout", "-q", "main")
    (repo / "a.txt").write_text("2")
    m2 = commit_all(repo, "m2")
    mirror = gitlib.ensure_mirror(str(repo), tmp_path / "mirror.git")
    return mirror, m1, m2, f1


def test_through_git_each_outcome(tmp_path: Path) -> None:
    mirror, m1, m2, f1 = _repo(tmp_path)

    # Production last built m1, the fork point: the latest manifest, no lookup, no parse.
    state, parsed, lookups = _choose(mirror, f1, published("v1" + "0" * 62, m1))
    assert (state.outcome, state.merge_base, parsed, lookups) == (Comparison.BASE_IS_LATEST, m1, [], [])

    # Production moved on to m2: the merge-base m1 is looked up, then parsed.
    latest = published("v2" + "0" * 62, m2)
    state, parsed, lookups = _choose(mirror, f1, latest)
    assert (state.outcome, state.path, parsed, lookups) == (Comparison.BASE_PARSED, Path("/parsed") / m1, [m1], [m1])

    # ... unless a build of m1 was published.
    built = published("v1" + "0" * 62, m1)
    state, parsed, _ = _choose(mirror, f1, latest, built=built)
    assert (state.outcome, state.path, parsed) == (Comparison.BASE_PUBLISHED, built.path, [])

    # Off: git is not even asked.
    state, parsed, lookups = _choose(mirror, "not-a-sha", latest, enabled=False)
    assert (state.outcome, state.path, parsed, lookups) == (Comparison.OFF, latest.path, [], [])

    # A commit git does not know: the latest manifest, and the note says why.
    state, _, _ = _choose(mirror, "0" * 40, latest)
    assert state.outcome is Comparison.NO_MERGE_BASE and state.path == latest.path


def test_through_git_a_branch_without_shared_history(tmp_path: Path) -> None:
    mirror, _, m2, _ = _repo(tmp_path)
    repo = tmp_path / "repo"
    git(repo, "checkout", "-q", "--orphan", "unrelated")
    (repo / "c.txt").write_text("u")
    orphan = commit_all(repo, "orphan")
    git(repo, "checkout", "-q", "main")
    mirror = gitlib.ensure_mirror(str(repo), tmp_path / "mirror.git")
    state, parsed, lookups = _choose(mirror, orphan, published("v2" + "0" * 62, m2))
    assert (state.outcome, state.merge_base, parsed, lookups) == (Comparison.UNRELATED, None, [], [])
