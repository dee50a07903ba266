"""Thin wrappers around the ``git`` CLI.

Every call is ``git`` run as a subprocess (never through a shell) with terminal
prompts disabled, so a sensor tick can never hang on a credential prompt, and with
the repository-selecting environment variables (``GIT_DIR``, ``GIT_INDEX_FILE``...)
removed, so running inside a git hook cannot redirect a command at another repository.

Branch builds never touch the user's repository: it is cloned once into a bare
mirror under our home, fetched before each build, and each build checks a commit out
into its own detached worktree of that mirror.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from defer_orchestration.lib.errors import GitError

# Variables that make git operate on a repository other than the one the command names.
_REPO_SELECTING_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_SHALLOW_FILE",
    "GIT_GRAFT_FILE",
)
_HEADS = "refs/heads/"


def git_env() -> dict[str, str]:
    """The environment every git command runs with."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_SELECTING_ENV}
    env["GIT_TERMINAL_PROMPT"] = "0"
    # English messages: a few callers recognise git's errors by their text.
    env["LC_ALL"] = "C"
    env["LANGUAGE"] = "C"
    return env


def _decode(data: bytes) -> str:
    """git output as text; undecodable bytes survive a round trip back into git arguments."""
    return data.decode("utf-8", "surrogateescape")


def _describe(args: Sequence[str]) -> str:
    """The command line, for messages."""
    return " ".join(["git", *args])


def _git(
    args: Sequence[str], *, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    """Run git and return the completed process whatever its exit code."""
    command = ["git", *args]
    try:
        return subprocess.run(
            command,
            cwd=os.fspath(cwd) if cwd is not None else None,
            env=git_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        if cwd is not None and not Path(cwd).is_dir():
            raise GitError(
                f"cannot run `{_describe(args)}`: the directory {cwd} does not exist; check the "
                "configured path."
            ) from exc
        raise GitError(
            "the git executable was not found on PATH; install git (https://git-scm.com) "
            "and restart the Dagster daemon and webserver."
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise GitError(
            f"`{_describe(args)}` did not finish within {timeout:.0f} s; check that the "
            "repository is reachable and needs no interactive authentication (prompts are "
            "disabled), then retry."
        ) from exc


def _failure(args: Sequence[str], done: subprocess.CompletedProcess[bytes], hint: str) -> GitError:
    """A GitError naming the command, its exit code, git's stderr and what to do next."""
    stderr = done.stderr.decode("utf-8", "replace").strip() or "(no output on stderr)"
    if "dubious ownership" in stderr:
        hint = (
            "git refuses repositories owned by another user; run the command git suggests "
            "above (git config --global --add safe.directory <path>) as the user running Dagster."
        )
    return GitError(
        f"`{_describe(args)}` failed with exit code {done.returncode}: {stderr}\n{hint}"
    )


def run_git(args: Sequence[str], *, cwd: Path | None = None, timeout: float = 120) -> str:
    """Run ``git *args``, return its stdout; on failure raise GitError with command and stderr."""
    done = _git(args, cwd=cwd, timeout=timeout)
    if done.returncode != 0:
        raise _failure(
            args, done, "Check the repository path or URL and your git credentials, then retry."
        )
    return _decode(done.stdout)


def _check_ref(ref: str) -> None:
    """Refuse refs git would read as options (``--upload-pack=...``)."""
    if not ref or ref.startswith("-"):
        raise GitError(
            f"{ref!r} is not a valid commit or branch name; pass a branch name or commit sha."
        )


def list_branch_heads(repo: str) -> dict[str, str]:
    """``{branch: sha}`` of every branch of ``repo`` (path or URL) with one ``git ls-remote``."""
    output = run_git(["ls-remote", "--heads", "--", repo])
    heads: dict[str, str] = {}
    for line in output.splitlines():
        sha, _, ref = line.partition("\t")
        if ref.startswith(_HEADS):
            heads[ref[len(_HEADS) :]] = sha
    return heads


def branch_head(repo: str, branch: str) -> str | None:
    """The sha ``branch`` points at in ``repo`` (path or URL), or None when it has no such
    branch: one ``git ls-remote`` of that ref, no fetch and no mirror lock, so a caller that
    only needs to know the head is not held up by a clone or fetch in progress."""
    _check_ref(branch)
    ref = _HEADS + branch
    # ls-remote matches patterns against ref *tails* (refs/heads/x/main matches "main"):
    # the exact ref is picked out of the answer.
    output = run_git(["ls-remote", "--heads", "--", _local_source(repo), ref])
    for line in output.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    return None


def _local_source(repo: str) -> str:
    """An existing local path made absolute (the mirror must not depend on cwd); URLs unchanged."""
    path = Path(repo)
    return os.fspath(path.resolve()) if "://" not in repo and path.exists() else repo


def _is_git_dir(path: Path) -> bool:
    """Whether ``path`` is a (bare) git directory."""
    done = _git(["--git-dir", os.fspath(path), "rev-parse", "--git-dir"])
    return done.returncode == 0


@contextmanager
def _mirror_lock(mirror_dir: Path) -> Iterator[None]:
    """Serialise clone/fetch of one mirror across processes (concurrent fetches fight over refs)."""
    mirror_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = mirror_dir.parent / f"{mirror_dir.name}.lock"
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_mirror(repo: str, mirror_dir: Path) -> Path:
    """Clone ``repo`` into the bare mirror ``mirror_dir`` if absent, else fetch it (with --prune).

    The clone goes to a temporary sibling and is renamed into place, so a killed clone
    never leaves a half-made mirror behind. The user's repository is only read.
    """
    mirror_dir = Path(mirror_dir).absolute()
    source = _local_source(repo)
    with _mirror_lock(mirror_dir):
        if mirror_dir.exists() and not _is_git_dir(mirror_dir):
            if any(mirror_dir.iterdir()):
                raise GitError(
                    f"{mirror_dir} exists but is not a git mirror; delete that directory so it "
                    f"can be re-cloned from {repo}."
                )
            mirror_dir.rmdir()
        if not mirror_dir.exists():
            staging = mirror_dir.parent / f"{mirror_dir.name}.tmp-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                run_git(["clone", "--mirror", "--quiet", "--", source, os.fspath(staging)])
                staging.rename(mirror_dir)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return mirror_dir
        # Fetch from the configured repository itself (not the stored origin), so a
        # changed DEFER_ORCH_GIT_REPO is honoured; --prune drops deleted branches.
        _fetch_with_retries(mirror_dir, source)
    return mirror_dir


# A fetch can fail for a moment while the source repository is being repacked (git's
# background gc after a push: "did not send all necessary objects"); permanent failures
# (a wrong path, credentials) fail the same way each time and are reported after the last try.
FETCH_RETRY_DELAYS_S = (0.5, 2.0)


def _fetch_with_retries(mirror_dir: Path, source: str) -> None:
    """``git fetch --prune`` of every branch of ``source`` into the mirror, retried twice."""
    args = [
        # Any automatic gc of the mirror runs inside this fetch, under the mirror's lock,
        # not detached in the background where it would overlap the next fetch.
        "-c",
        "gc.autoDetach=false",
        "--git-dir",
        os.fspath(mirror_dir),
        "fetch",
        "--prune",
        "--quiet",
        "--no-tags",
        "--",
        source,
        "+refs/heads/*:refs/heads/*",
    ]
    for delay in (*FETCH_RETRY_DELAYS_S, None):
        done = _git(args)
        if done.returncode == 0:
            return
        if delay is None:
            raise _failure(
                args,
                done,
                f"Tried {len(FETCH_RETRY_DELAYS_S) + 1} times. Check the repository path or URL "
                "and your git credentials, then retry.",
            )
        time.sleep(delay)


def _origin(mirror_dir: Path) -> str:
    """The repository a mirror was cloned from, for messages."""
    done = _git(["--git-dir", os.fspath(mirror_dir), "config", "--get", "remote.origin.url"])
    url = _decode(done.stdout).strip()
    return url if done.returncode == 0 and url else os.fspath(mirror_dir)


def resolve_commit(mirror_dir: Path, ref: str) -> str:
    """The full sha of the commit ``ref`` (branch, ``refs/heads/...``, sha) names in the mirror."""
    _check_ref(ref)
    done = _git(
        ["--git-dir", os.fspath(mirror_dir), "rev-parse", "--verify", "--quiet"]
        + [f"{ref}^{{commit}}"]
    )
    if done.returncode != 0:
        raise GitError(
            f"commit or branch {ref!r} not found in {_origin(mirror_dir)} (mirror {mirror_dir}); "
            "was the branch deleted or force-pushed? A newer run for the branch's current head "
            "is launched by the sensor; relaunch with an existing branch or sha otherwise."
        )
    return _decode(done.stdout).strip()


def merge_base(mirror_dir: Path, a: str, b: str) -> str | None:
    """The best common ancestor of ``a`` and ``b``; None when their histories are unrelated."""
    _check_ref(a)
    _check_ref(b)
    args = ["--git-dir", os.fspath(mirror_dir), "merge-base", a, b]
    done = _git(args)
    if done.returncode == 1 and not done.stdout.strip():
        return None  # git's answer for "no common ancestor"
    if done.returncode != 0:
        raise _failure(args, done, "Check that both commits exist in the mirror (fetch it first).")
    return _decode(done.stdout).strip()


def add_worktree(mirror_dir: Path, sha: str, dest: Path) -> Path:
    """Check ``sha`` out, detached, into a new worktree of the mirror at ``dest``; return it."""
    _check_ref(sha)
    dest = Path(dest).absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise GitError(
            f"cannot check out {sha[:12]} into {dest}: that path already exists; remove it "
            "(remove_worktree does) and retry."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    run_git(
        [
            "--git-dir",
            os.fspath(mirror_dir),
            "worktree",
            "add",
            "--detach",
            "--force",
            "--quiet",
            os.fspath(dest),
            sha,
        ]
    )
    return dest


def remove_worktree(mirror_dir: Path, dest: Path) -> None:
    """Remove the worktree at ``dest`` and forget it; a no-op when it is already gone.

    Nothing here raises: it runs in cleanup paths, where an error would hide the real
    one, and whatever it leaves registered the next call's ``worktree prune`` removes.
    """
    dest = Path(dest).absolute()
    git_dir = ["--git-dir", os.fspath(mirror_dir)]
    mirror_exists = Path(mirror_dir).is_dir()
    with suppress(GitError):
        if mirror_exists and dest.exists():
            # Twice --force: also removes worktrees left locked by an interrupted add.
            _git([*git_dir, "worktree", "remove", "--force", "--force", os.fspath(dest)])
    shutil.rmtree(dest, ignore_errors=True)
    with suppress(GitError):
        if mirror_exists:
            _git([*git_dir, "worktree", "prune"])


@contextmanager
def checked_out(mirror_dir: Path, sha: str, dest: Path) -> Iterator[Path]:
    """A detached worktree of ``sha`` at ``dest`` during the block, removed even on error."""
    path = add_worktree(mirror_dir, sha, dest)
    try:
        yield path
    finally:
        remove_worktree(mirror_dir, path)


@dataclass(frozen=True)
class CommitInfo:
    """Which commit a directory is at, and whether it has uncommitted changes."""

    sha: str | None
    dirty: bool | None
    repo_root: Path | None


def _directory(path: Path) -> Path | None:
    """``path`` if it is a directory, its parent if a file, None if it does not exist."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.exists():
        return path.parent
    return None


def repo_root(path: Path) -> Path | None:
    """The top of the git work tree containing ``path``; None outside any work tree."""
    directory = _directory(path)
    if directory is None:
        return None
    args = ["rev-parse", "--show-toplevel"]
    done = _git(args, cwd=directory)
    if done.returncode != 0:
        if "dubious ownership" in done.stderr.decode("utf-8", "replace"):
            raise _failure(args, done, "")
        return None
    top = _decode(done.stdout).strip()
    return Path(top) if top else None


def commit_info(path: Path) -> CommitInfo:
    """HEAD of the repository containing ``path`` and whether files under ``path`` are dirty.

    Untracked (not ignored) files count as dirty: they change what dbt would build.
    Outside a git repository every field is None; no exception.
    """
    root = repo_root(path)
    directory = _directory(path)
    if root is None or directory is None:
        return CommitInfo(sha=None, dirty=None, repo_root=None)
    head = _git(["rev-parse", "--verify", "--quiet", "HEAD"], cwd=directory)
    sha = _decode(head.stdout).strip() if head.returncode == 0 else None  # None: no commits yet
    # Relative to ``directory`` rather than absolute: an absolute path through a symlink
    # would be "outside repository" for git, which sees the resolved work tree.
    pathspec = "." if Path(path).is_dir() else Path(path).name
    status = _git(
        ["--literal-pathspecs", "status", "--porcelain", "--untracked-files=normal", "--"]
        + [pathspec],
        cwd=directory,
    )
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return CommitInfo(sha=sha, dirty=dirty, repo_root=root)


__all__ = [
    "CommitInfo",
    "add_worktree",
    "branch_head",
    "checked_out",
    "commit_info",
    "ensure_mirror",
    "git_env",
    "list_branch_heads",
    "merge_base",
    "remove_worktree",
    "repo_root",
    "resolve_commit",
    "run_git",
]
