"""Which forge a branch run reports to, read from a plain mapping (the environment).

A forge is configured by a repository (GitHub) or project (GitLab) *and* a token; one
without the other is a :class:`~defer_orchestration.lib.errors.ConfigurationError` that
names the missing variable, because a half-configured forge silently posting nothing is
the failure a user would not notice until a reviewer asks where the report went.

The token is held in a :class:`Secret`, whose ``repr`` and ``str`` never show it, so a
settings object can be logged, put in an exception or turned into a dict safely.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from defer_orchestration.lib.errors import ConfigurationError

GITHUB_REPOSITORY = "DEFER_ORCH_GITHUB_REPOSITORY"
GITHUB_TOKEN = "DEFER_ORCH_GITHUB_TOKEN"
GITHUB_API_URL = "DEFER_ORCH_GITHUB_API_URL"
GITLAB_PROJECT = "DEFER_ORCH_GITLAB_PROJECT"
GITLAB_TOKEN = "DEFER_ORCH_GITLAB_TOKEN"
GITLAB_API_URL = "DEFER_ORCH_GITLAB_API_URL"
DAGSTER_URL = "DEFER_ORCH_DAGSTER_URL"
FAIL_ON = "DEFER_ORCH_FAIL_ON"
FORGE_TIMEOUT = "DEFER_ORCH_FORGE_TIMEOUT"
FORGE_BUDGET = "DEFER_ORCH_FORGE_BUDGET"

DEFAULT_GITHUB_API_URL = "https://api.github.com"
DEFAULT_GITLAB_API_URL = "https://gitlab.com/api/v4"
#: Seconds one HTTP request to the forge may take.
DEFAULT_TIMEOUT_S = 10.0
#: Seconds one report (every request and retry of ``report_pending`` or ``report_final``) may take.
DEFAULT_BUDGET_S = 30.0

# GitHub's own rules: an owner is alphanumerics and single hyphens; a repository name
# is alphanumerics, '.', '_' and '-'.
_GITHUB_REPOSITORY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
# A GitLab project is a numeric id or a path ``group[/subgroup...]/name``.
_GITLAB_PROJECT = re.compile(r"^(?:\d+|[A-Za-z0-9_.][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_.][A-Za-z0-9_.-]*)+)$")


class ForgeKind(StrEnum):
    """The forges we can report to."""

    GITHUB = "github"
    GITLAB = "gitlab"


class FailOn(StrEnum):
    """What makes the commit status fail besides a failed build (``DEFER_ORCH_FAIL_ON``)."""

    BREAKING = "breaking"  # a breaking change reaches a downstream model or exposure


class Secret:
    """A token that never shows itself in ``repr``/``str`` (so not in logs or tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The token itself: only for the ``Authorization``/``PRIVATE-TOKEN`` header."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class ForgeSettings:
    """Where and how a branch run reports: one forge, one repository or project."""

    kind: ForgeKind
    project: str  # GitHub ``owner/name``; GitLab numeric id or ``group/name``
    token: Secret
    api_url: str  # without a trailing slash
    dagster_url: str | None = None  # the Dagster webserver, for the run link
    fail_on: FailOn | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    budget_s: float = DEFAULT_BUDGET_S

    @property
    def token_variable(self) -> str:
        """The variable holding this forge's token (named in warnings about it)."""
        return GITHUB_TOKEN if self.kind is ForgeKind.GITHUB else GITLAB_TOKEN

    @property
    def project_variable(self) -> str:
        """The variable naming this forge's repository or project."""
        return GITHUB_REPOSITORY if self.kind is ForgeKind.GITHUB else GITLAB_PROJECT

    @property
    def api_url_variable(self) -> str:
        """The variable holding this forge's API URL."""
        return GITHUB_API_URL if self.kind is ForgeKind.GITHUB else GITLAB_API_URL

    def run_url(self, run_id: str) -> str | None:
        """The Dagster run's page, when ``DEFER_ORCH_DAGSTER_URL`` is set."""
        return f"{self.dagster_url}/runs/{run_id}" if self.dagster_url else None


def _value(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def _url(environ: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = _value(environ, name)
    if not raw:
        return default
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"{name}={raw!r} is not an http(s) URL: set it to e.g. "
            f"{default or 'https://dagster.example.com'} or leave it unset."
        )
    return raw.rstrip("/")


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = _value(environ, name)
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigurationError(f"{name}={raw!r} is not a positive number of seconds: set e.g. {name}={default:g}.")
    return seconds


def _fail_on(environ: Mapping[str, str]) -> FailOn | None:
    raw = _value(environ, FAIL_ON).lower()
    if not raw:
        return None
    try:
        return FailOn(raw)
    except ValueError:
        allowed = ", ".join(repr(f.value) for f in FailOn)
        raise ConfigurationError(
            f"{FAIL_ON}={raw!r} is not understood: set it to {allowed} or leave it empty."
        ) from None


def _half(project_var: str, token_var: str, project: str, token: str) -> None:
    if project and not token:
        raise ConfigurationError(
            f"{project_var} is set but {token_var} is not: set {token_var} to a token that may "
            f"write commit statuses and comments, or unset {project_var} to report to no forge."
        )
    if token and not project:
        example = "owner/name" if project_var == GITHUB_REPOSITORY else "group/name or the numeric project id"
        raise ConfigurationError(
            f"{token_var} is set but {project_var} is not: set {project_var} ({example}), "
            f"or unset {token_var} to report to no forge."
        )


def forge_settings_from_env(environ: Mapping[str, str]) -> ForgeSettings | None:
    """The forge a branch run reports to, or None when none is configured.

    Raises :class:`ConfigurationError` naming the variable to set when a forge is
    half-configured, both forges are, or a value is malformed.
    """
    fail_on = _fail_on(environ)
    timeout_s = _seconds(environ, FORGE_TIMEOUT, DEFAULT_TIMEOUT_S)
    budget_s = _seconds(environ, FORGE_BUDGET, DEFAULT_BUDGET_S)
    dagster_url = _url(environ, DAGSTER_URL, None)
    gh_repo, gh_token = _value(environ, GITHUB_REPOSITORY), _value(environ, GITHUB_TOKEN)
    gl_project, gl_token = _value(environ, GITLAB_PROJECT), _value(environ, GITLAB_TOKEN)
    _half(GITHUB_REPOSITORY, GITHUB_TOKEN, gh_repo, gh_token)
    _half(GITLAB_PROJECT, GITLAB_TOKEN, gl_project, gl_token)
    if gh_repo and gl_project:
        raise ConfigurationError(
            f"both GitHub ({GITHUB_REPOSITORY}) and GitLab ({GITLAB_PROJECT}) are configured: a branch "
            "run reports to one forge; unset the variables of the other."
        )

    def settings(kind: ForgeKind, project: str, token: str, api_url: str) -> ForgeSettings:
        return ForgeSettings(
            kind, project, Secret(token), api_url,
            dagster_url=dagster_url, fail_on=fail_on, timeout_s=timeout_s, budget_s=budget_s,
        )

    if gh_repo:
        if not _GITHUB_REPOSITORY.match(gh_repo):
            raise ConfigurationError(
                f"{GITHUB_REPOSITORY}={gh_repo!r} is not of the form owner/name: set it to the "
                "repository's path as in its URL, e.g. acme/analytics."
            )
        api_url = _url(environ, GITHUB_API_URL, DEFAULT_GITHUB_API_URL) or DEFAULT_GITHUB_API_URL
        return settings(ForgeKind.GITHUB, gh_repo, gh_token, api_url)
    if gl_project:
        project = gl_project.strip("/")
        if not _GITLAB_PROJECT.match(project):
            raise ConfigurationError(
                f"{GITLAB_PROJECT}={gl_project!r} is neither a numeric project id nor a path like "
                "group/name: set it to the project's id (Settings > General) or its path as in its URL."
            )
        api_url = _url(environ, GITLAB_API_URL, DEFAULT_GITLAB_API_URL) or DEFAULT_GITLAB_API_URL
        return settings(ForgeKind.GITLAB, project, gl_token, api_url)
    return None
