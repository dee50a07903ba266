"""The git wrappers, against real repositories made under tmp_path (no network, no dbt)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from defer_orchestration.lib import git
from defer_orchestration.lib.errors import GitError

# --- a small helper for making repositories --------------------------------------------------

_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


class Repo:
    """A throw-away git repository on branch ``main`` with helpers to commit and branch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        """Run git in the repository with a fixed identity; return stripped stdout."""
        done = subprocess.run(
            ["git", *args],
            cwd=self.path,
            env={**os.environ, **_IDENTITY},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"git {' '.join(args)} failed: {done.stderr}"
        return done.stdout.strip()

    def write(self, relative: str, text: str) -> Path:
        """Write a file in the work tree (creating directories)."""
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return target

    def commit(self, message: str, files: dict[str, str] | None = None) -> str:
        """Write ``files``, commit everything, return the new HEAD sha."""
        for relative, text in (files or {}).items():
            self.write(relative, text)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def head(self, ref: str = "HEAD") -> str:
        """Full sha of ``ref``."""
        return self.git("rev-parse", f"{ref}^{{commit}}")

    def branch(self, name: str, start: str = "main") -> None:
        """Create ``name`` at ``start`` without switching to it."""
        self.git("branch", name, start)

    def checkout(self, name: str) -> None:
        """Switch the work tree to branch ``name``."""
        self.git("checkout", "-q", name)

    def delete_branch(self, name: str) -> None:
        """Delete branch ``name`` (even if unmerged)."""
        self.git("branch", "-q", "-D", name)


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user/system git config, and no discovery of repositories above tmp_path."""
    home = tmp_path / "_home"
    home.mkdir()
    monkeypatch.setenv("HOME", os.fspath(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", os.fspath(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", os.fspath(tmp_path.parent))


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """A repository with one commit on ``main`` holding ``project/model.sql`` and ``README``."""
    made = Repo(tmp_path / "repo")
    made.commit("initial", {"project/model.sql": "select 1\n", "README": "hello\n"})
    return made


def _worktrees(git_dir: Path) -> list[str]:
    """``git worktree list --porcelain`` paths of a repository (first is the main one)."""
    out = git.run_git(["--git-dir", os.fspath(git_dir), "worktree", "list", "--porcelain"])
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]


# --- run_git ----------------------------------------------------------------------------------


def test_run_git_returns_stdout(repo: Repo) -> None:
    assert git.run_git(["rev-parse", "HEAD"], cwd=repo.path).strip() == repo.head()


def test_run_git_failure_names_command_and_stderr(repo: Repo) -> None:
    with pytest.raises(GitError) as info:
        git.run_git(["rev-parse", "--verify", "no-such-ref"], cwd=repo.path)
    message = str(info.value)
    assert "git rev-parse --verify no-such-ref" in message
    assert "exit code 128" in message
    assert "no-such-ref" in message and "fatal" in message


def test_run_git_timeout_is_a_git_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(*args: object, **kwargs: object) -> None:
        raise subprocess.TimeoutExpired(cmd="git", timeout=0.1)

    monkeypatch.setattr(git.subprocess, "run", slow)
    with pytest.raises(GitError, match="did not finish within"):
        git.run_git(["ls-remote", "--heads", "https://example.invalid/x.git"], timeout=0.1)


def test_run_git_missing_executable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(GitError, match="install git"):
        git.run_git(["--version"])


def test_git_env_disables_prompts_and_ignores_git_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_DIR", "/somewhere/else")
    monkeypatch.setenv("GIT_INDEX_FILE", "/somewhere/else/index")
    env = git.git_env()
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert "GIT_DIR" not in env and "GIT_INDEX_FILE" not in env


def test_a_stray_git_dir_does_not_redirect_commands(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As when running inside a git hook of some other repository.
    other = Repo(tmp_path / "other")
    other.commit("other")
    expected = {"main": repo.head()}
    monkeypatch.setenv("GIT_DIR", os.fspath(other.path / ".git"))
    assert git.repo_root(repo.path / "project") == repo.path.resolve()
    assert git.list_branch_heads(os.fspath(repo.path)) == expected
    assert git.commit_info(repo.path).sha == expected["main"]


# --- list_branch_heads -------------------------------------------------------------------------


def test_list_branch_heads(repo: Repo) -> None:
    main = repo.head()
    repo.branch("feature/a")
    repo.branch("deep/nested/name")
    repo.branch("fétûre/ü")
    repo.checkout("feature/a")
    feature = repo.commit("feature work", {"project/new.sql": "select 2\n"})
    repo.git("tag", "v1", main)  # tags are not branches
    heads = git.list_branch_heads(os.fspath(repo.path))
    assert heads == {
        "main": main,
        "feature/a": feature,
        "deep/nested/name": main,
        "fétûre/ü": main,
    }


def test_list_branch_heads_by_file_url(repo: Repo) -> None:
    assert git.list_branch_heads(repo.path.as_uri()) == {"main": repo.head()}


def test_list_branch_heads_of_an_empty_repository(tmp_path: Path) -> None:
    empty = Repo(tmp_path / "empty")
    assert git.list_branch_heads(os.fspath(empty.path)) == {}


def test_list_branch_heads_of_a_missing_repository(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(GitError) as info:
        git.list_branch_heads(os.fspath(missing))
    assert "git ls-remote --heads" in str(info.value)
    assert os.fspath(missing) in str(info.value)


def test_list_branch_heads_refuses_option_like_repositories(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(GitError):
        git.list_branch_heads(f"--upload-pack=touch {marker}")
    assert not marker.exists()


# --- ensure_mirror, resolve_commit -----------------------------------------------------------


def test_mirror_picks_up_new_commits_and_deleted_branches(repo: Repo, tmp_path: Path) -> None:
    repo.branch("feature/a")
    repo.branch("doomed")
    mirror = tmp_path / "mirrors" / "repo.git"
    assert git.ensure_mirror(os.fspath(repo.path), mirror) == mirror
    assert git.resolve_commit(mirror, "refs/heads/feature/a") == repo.head("feature/a")

    repo.checkout("feature/a")
    new = repo.commit("more", {"project/model.sql": "select 42\n"})
    repo.checkout("main")
    repo.delete_branch("doomed")
    repo.branch("brand-new")

    git.ensure_mirror(os.fspath(repo.path), mirror)
    assert git.resolve_commit(mirror, "refs/heads/feature/a") == new
    assert git.resolve_commit(mirror, "brand-new") == repo.head("main")
    with pytest.raises(GitError, match="deleted or force-pushed"):
        git.resolve_commit(mirror, "refs/heads/doomed")


def test_force_push_is_followed(repo: Repo, tmp_path: Path) -> None:
    repo.branch("feature")
    repo.checkout("feature")
    first = repo.commit("first try", {"project/a.sql": "select 1\n"})
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    assert git.resolve_commit(mirror, "refs/heads/feature") == first

    repo.git("reset", "-q", "--hard", "main")
    second = repo.commit("second try", {"project/b.sql": "select 2\n"})
    git.ensure_mirror(os.fspath(repo.path), mirror)
    assert git.resolve_commit(mirror, "refs/heads/feature") == second
    # The superseded commit is still readable by sha (e.g. by a run that started earlier).
    assert git.resolve_commit(mirror, first) == first


def test_mirror_never_modifies_the_user_repository(repo: Repo, tmp_path: Path) -> None:
    refs_before = repo.git("for-each-ref")
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    with git.checked_out(mirror, repo.head(), tmp_path / "wt"):
        assert _worktrees(repo.path / ".git") == [os.fspath(repo.path.resolve())]
    git.ensure_mirror(os.fspath(repo.path), mirror)
    assert repo.git("for-each-ref") == refs_before
    assert repo.git("status", "--porcelain") == ""


def test_mirror_of_a_relative_path_survives_a_cwd_change(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    mirror = git.ensure_mirror("repo", tmp_path / "mirror.git")
    monkeypatch.chdir(tmp_path / "_home")
    repo.branch("later")
    git.ensure_mirror(os.fspath(repo.path), mirror)
    assert git.resolve_commit(mirror, "later") == repo.head()


def test_ensure_mirror_refuses_a_foreign_directory(repo: Repo, tmp_path: Path) -> None:
    foreign = tmp_path / "not-a-mirror"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(GitError, match="not a git mirror"):
        git.ensure_mirror(os.fspath(repo.path), foreign)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_ensure_mirror_uses_an_empty_directory(repo: Repo, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git.ensure_mirror(os.fspath(repo.path), empty)
    assert git.resolve_commit(empty, "main") == repo.head()


def test_ensure_mirror_of_a_missing_repository(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror.git"
    with pytest.raises(GitError, match="git clone --mirror"):
        git.ensure_mirror(os.fspath(tmp_path / "nope"), mirror)
    assert not mirror.exists()
    assert [p.name for p in tmp_path.iterdir() if "mirror.git.tmp" in p.name] == []


def test_resolve_commit_of_a_missing_ref(repo: Repo, tmp_path: Path) -> None:
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    with pytest.raises(GitError) as info:
        git.resolve_commit(mirror, "refs/heads/gone")
    message = str(info.value)
    assert "commit or branch 'refs/heads/gone' not found in" in message
    assert "was the branch deleted or force-pushed?" in message
    assert os.fspath(repo.path.resolve()) in message  # names the user's repository
    with pytest.raises(GitError, match="not found"):
        git.resolve_commit(mirror, "0" * 40)


def test_resolve_commit_accepts_short_shas_and_refuses_options(repo: Repo, tmp_path: Path) -> None:
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    assert git.resolve_commit(mirror, repo.head()[:12]) == repo.head()
    with pytest.raises(GitError, match="not a valid commit"):
        git.resolve_commit(mirror, "--all")


# --- worktrees --------------------------------------------------------------------------------


def test_checked_out_yields_the_commit_and_removes_it(repo: Repo, tmp_path: Path) -> None:
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    dest = tmp_path / "worktrees" / "run-1"
    with git.checked_out(mirror, repo.head(), dest) as checkout:
        assert checkout == dest
        assert (checkout / "project" / "model.sql").read_text() == "select 1\n"
        assert len(_worktrees(mirror)) == 2
        assert git.commit_info(checkout).sha == repo.head()
    assert not dest.exists()
    assert _worktrees(mirror) == [os.fspath(mirror.resolve())]


def test_checked_out_removes_the_worktree_when_the_body_raises(repo: Repo, tmp_path: Path) -> None:
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    dest = tmp_path / "wt"
    with pytest.raises(RuntimeError, match="dbt exploded"):
        with git.checked_out(mirror, repo.head(), dest) as checkout:
            (checkout / "target").mkdir()
            (checkout / "target" / "junk").write_text("x")
            raise RuntimeError("dbt exploded")
    assert not dest.exists()
    assert _worktrees(mirror) == [os.fspath(mirror.resolve())]


def test_two_worktrees_of_the_same_commit(repo: Repo, tmp_path: Path) -> None:
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    with git.checked_out(mirror, repo.head(), tmp_path / "a"), git.checked_out(
        mirror, repo.head(), tmp_path / "b"
    ):
        assert len(_worktrees(mirror)) == 3
    assert len(_worktrees(mirror)) == 1


def test_add_worktree_refuses_an_occupied_destination(repo: Repo, tmp_path: Path) -> None:
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    dest = tmp_path / "occupied"
    dest.mkdir()
    (dest / "file").write_text("x")
    with pytest.raises(GitError, match="already exists"):
        git.add_worktree(mirror, repo.head(), dest)
    assert (dest / "file").exists()


def test_add_worktree_of_an_unknown_commit(repo: Repo, tmp_path: Path) -> None:
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    with pytest.raises(GitError, match="worktree add"):
        git.add_worktree(mirror, "1" * 40, tmp_path / "wt")


def test_remove_worktree_is_idempotent(repo: Repo, tmp_path: Path) -> None:
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    dest = git.add_worktree(mirror, repo.head(), tmp_path / "wt")
    git.remove_worktree(mirror, dest)
    git.remove_worktree(mirror, dest)
    git.remove_worktree(mirror, tmp_path / "never-existed")
    git.remove_worktree(tmp_path / "no-mirror", tmp_path / "never-existed")
    assert not dest.exists()
    assert len(_worktrees(mirror)) == 1


def test_remove_worktree_cleans_up_after_a_deleted_directory(repo: Repo, tmp_path: Path) -> None:
    # A killed run's directory was wiped by hand: git still lists the worktree until pruned.
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    dest = git.add_worktree(mirror, repo.head(), tmp_path / "wt")
    shutil.rmtree(dest)
    git.remove_worktree(mirror, dest)
    assert len(_worktrees(mirror)) == 1
    # ...and the same destination can be used again.
    with git.checked_out(mirror, repo.head(), dest):
        pass


# --- merge_base --------------------------------------------------------------


def test_merge_base(repo: Repo, tmp_path: Path) -> None:
    fork = repo.head()
    repo.branch("feature")
    repo.checkout("feature")
    feature = repo.commit("feature", {"project/f.sql": "select 1\n"})
    repo.checkout("main")
    main = repo.commit("main moves on", {"README": "changed\n"})
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    assert git.merge_base(mirror, main, feature) == fork
    assert git.merge_base(mirror, "main", "feature") == fork
    assert git.merge_base(mirror, fork, feature) == fork


def test_merge_base_of_unrelated_histories_is_none(repo: Repo, tmp_path: Path) -> None:
    repo.git("checkout", "-q", "--orphan", "island")
    repo.git("rm", "-rqf", ".")
    island = repo.commit("unrelated", {"other.txt": "x\n"})
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    assert git.merge_base(mirror, "main", island) is None


def test_merge_base_of_a_missing_commit_raises(repo: Repo, tmp_path: Path) -> None:
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    with pytest.raises(GitError, match="git --git-dir .* merge-base"):
        git.merge_base(mirror, "main", "nope")


# --- repo_root, commit_info --------------------------------------------------------------------


def test_repo_root(repo: Repo, tmp_path: Path) -> None:
    root = repo.path.resolve()
    assert git.repo_root(repo.path) == root
    assert git.repo_root(repo.path / "project") == root
    assert git.repo_root(repo.path / "project" / "model.sql") == root
    outside = tmp_path / "outside"
    outside.mkdir()
    assert git.repo_root(outside) is None
    assert git.repo_root(tmp_path / "does-not-exist") is None


def test_commit_info_clean(repo: Repo) -> None:
    info = git.commit_info(repo.path / "project")
    assert info == git.CommitInfo(sha=repo.head(), dirty=False, repo_root=repo.path.resolve())


def test_commit_info_dirty_only_counts_files_under_path(repo: Repo) -> None:
    repo.write("README", "edited outside the project\n")
    assert git.commit_info(repo.path / "project").dirty is False
    assert git.commit_info(repo.path).dirty is True

    repo.write("project/model.sql", "select 99\n")
    assert git.commit_info(repo.path / "project").dirty is True


def test_commit_info_untracked_file_is_dirty_but_ignored_is_not(repo: Repo) -> None:
    repo.commit("ignore target", {".gitignore": "target/\n"})
    repo.write("project/target/manifest.json", "{}")
    assert git.commit_info(repo.path / "project").dirty is False
    repo.write("project/models/new.sql", "select 1\n")
    assert git.commit_info(repo.path / "project").dirty is True


def test_commit_info_of_a_repository_without_commits(tmp_path: Path) -> None:
    empty = Repo(tmp_path / "empty")
    empty.write("a.txt", "x")
    info = git.commit_info(empty.path)
    assert info.sha is None
    assert info.dirty is True
    assert info.repo_root == empty.path.resolve()


def test_commit_info_outside_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    none = git.CommitInfo(sha=None, dirty=None, repo_root=None)
    assert git.commit_info(plain) == none
    assert git.commit_info(tmp_path / "missing") == none


def test_a_fetch_that_fails_for_a_moment_is_retried(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source being repacked by git's background gc makes one fetch fail; the next works."""
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    repo.branch("feature/new")
    real = git._git
    fetches: list[int] = []

    def flaky(args, **kwargs):
        if "fetch" in args and not fetches:
            fetches.append(1)
            return subprocess.CompletedProcess(
                ["git", *args], 128, b"", b"fatal: did not send all necessary objects\n"
            )
        return real(args, **kwargs)

    monkeypatch.setattr(git, "_git", flaky)
    monkeypatch.setattr(git, "FETCH_RETRY_DELAYS_S", (0.0, 0.0))
    git.ensure_mirror(os.fspath(repo.path), mirror)
    assert fetches == [1]
    assert git.resolve_commit(mirror, "feature/new") == repo.head("main")


def test_a_fetch_that_keeps_failing_names_the_command_and_the_tries(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = git.ensure_mirror(os.fspath(repo.path), tmp_path / "mirror.git")
    monkeypatch.setattr(git, "FETCH_RETRY_DELAYS_S", (0.0, 0.0))
    shutil.rmtree(repo.path)
    with pytest.raises(GitError, match=r"(?s)fetch --prune.*Tried 3 times"):
        git.ensure_mirror(os.fspath(repo.path), mirror)
