"""What a branch run tells its pull request: two calls, both harmless to the build.

- :func:`report_pending` at run start: the commit status goes ``pending`` (GitLab: ``running``).
- :func:`report_final` at the end: the final status (``success``/``failure``, through the
  optional ``DEFER_ORCH_FAIL_ON=breaking`` gate) and ONE comment on the branch's open
  pull/merge request carrying the report, found again on the next push by a hidden
  marker and edited in place.

Neither call raises nor waits past the settings' budget: every refusal, timeout or
surprise becomes a warning in the returned :class:`ForgeOutcome` (and on ``log``) saying
what happened and what to fix. Every string that leaves this module has the token
replaced by ``***``. Each call builds its own client and keeps its state on its own
stack, so :func:`report_pending` can run in a thread beside the build.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import quote

from defer_orchestration.forge.base import ForgeClient, Phase, ReviewRequest
from defer_orchestration.forge.github import GitHubClient
from defer_orchestration.forge.gitlab import GitLabClient
from defer_orchestration.forge.http import Deadline, ForgeRequestError, redact
from defer_orchestration.forge.settings import FAIL_ON, FORGE_BUDGET, FORGE_TIMEOUT, FailOn, ForgeKind, ForgeSettings

_LOG = logging.getLogger("defer_orchestration.forge")
#: Impacted nodes named in a gate's reason before "and N more".
_NAMED = 5


class ForgeLog(Protocol):
    """Where progress and warnings go: a ``logging.Logger`` or Dagster's ``context.log``."""

    def info(self, msg: str, /) -> None: ...  # noqa: D102

    def warning(self, msg: str, /) -> None: ...  # noqa: D102


@dataclass(frozen=True)
class StatusPosted:
    """The commit status as posted: the forge's state word, description and link."""

    state: str
    description: str
    target_url: str | None


@dataclass(frozen=True)
class CommentPosted:
    """The report comment as posted on the pull/merge request."""

    id: int
    url: str
    action: Literal["created", "updated"]
    request_number: int  # GitHub pull request number, GitLab merge request iid
    request_url: str
    truncated: bool  # the body was cut to the forge's limit


@dataclass(frozen=True)
class Gate:
    """The verdict on the commit status and why (``report_final`` only)."""

    verdict: Literal["success", "failure"]
    reason: str
    fail_on: str | None  # the DEFER_ORCH_FAIL_ON in force


@dataclass(frozen=True)
class ForgeOutcome:
    """What one report did: JSON-ready (:meth:`to_json`) for the run's metadata."""

    forge: str  # "github" or "gitlab"
    project: str
    call: Literal["pending", "final"]
    status: StatusPosted | None = None  # None: not posted (see warnings)
    comment: CommentPosted | None = None  # None: not posted (see warnings), or a pending report
    gate: Gate | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain dicts, lists, strings, numbers and None."""
        return asdict(self)


# -- pure parts ---------------------------------------------------------------------


def _short(unique_id: str) -> str:
    """``model.pkg.orders`` -> ``orders`` (versioned ``model.pkg.orders.v2`` keeps ``orders.v2``)."""
    parts = unique_id.split(".", 2)
    return parts[2] if len(parts) == 3 else unique_id


def _names(ids: Sequence[str], short: bool) -> str:
    shown = [(_short(i) if short else i) for i in ids[:_NAMED]]
    more = f" and {len(ids) - _NAMED} more" if len(ids) > _NAMED else ""
    return ", ".join(shown) + more


def breaking_reaches(impact: Sequence[Mapping[str, Any]] | None) -> list[tuple[str, list[str]]]:
    """``(changed model, impacted nodes)`` of every breaking change that reaches something downstream."""
    found = []
    for entry in impact or ():
        impacted = [str(i.get("unique_id", "?")) for i in entry.get("impacted") or () if isinstance(i, Mapping)]
        if entry.get("category") == "breaking" and impacted:
            found.append((str(entry.get("unique_id", "?")), impacted))
    return found


def gate_verdict(ok: bool, impact: Sequence[Mapping[str, Any]] | None, fail_on: FailOn | None) -> Gate:
    """The final status: failure when the build failed, or when the gate is on and a
    breaking change reaches a downstream node; the reason says which."""
    gate = fail_on.value if fail_on else None
    breaking = breaking_reaches(impact)
    told = "; ".join(f"the breaking change in {m} reaches {_names(d, short=False)}" for m, d in breaking)
    if not ok:
        return Gate("failure", "the branch build failed" + (f"; also {told}" if told else ""), gate)
    if breaking and fail_on is FailOn.BREAKING:
        return Gate("failure", f"{FAIL_ON}=breaking and {told}", gate)
    if breaking:
        return Gate("success", f"the branch build succeeded; {told} (not gated: {FAIL_ON} is not set)", gate)
    return Gate("success", "the branch build succeeded", gate)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def status_description(gate: Gate, impact: Sequence[Mapping[str, Any]] | None, limit: int) -> str:
    """One line for the status (GitHub shows 140 characters): what failed, or what passed."""
    breaking = breaking_reaches(impact)
    if gate.verdict == "failure" and gate.reason.startswith(FAIL_ON):
        model, reached = breaking[0]
        more = f" (+{len(breaking) - 1} more breaking)" if len(breaking) > 1 else ""
        return clip(f"Breaking change in {_short(model)} reaches {_names(reached, short=True)}{more}", limit)
    if gate.verdict == "failure":
        return clip("Branch build failed", limit)
    if breaking:
        return clip(f"Branch build succeeded; {len(breaking)} breaking change(s) reach downstream models", limit)
    return clip("Branch build succeeded", limit)


def marker(branch: str) -> str:
    """The hidden line that finds our comment again (the branch quoted: a ``>`` in a
    branch name would otherwise close the HTML comment)."""
    return f"<!-- defer-orchestration: branch={quote(branch, safe='/')} -->"


def is_ours(body: str, branch: str) -> bool:
    """Whether a comment is this branch's report (the marker opens it, so a human quoting
    the marker further down does not make their comment ours)."""
    return body.lstrip().startswith(marker(branch))


def comment_body(
    branch: str, sha: str, body_markdown: str, *, run_url: str | None, forge_name: str, limit: int
) -> tuple[str, bool]:
    """The comment: marker, report, footer; cut to ``limit`` with a line saying so."""
    head = marker(branch) + "\n"
    run = f" · [Dagster run]({run_url})" if run_url else ""
    footer = f"\n\n<sub>Posted by defer-orchestration for commit `{sha[:12]}`{run}.</sub>"
    if len(head) + len(body_markdown) + len(footer) <= limit:
        return head + body_markdown + footer, False
    where = f"the [Dagster run]({run_url})" if run_url else "the Dagster run's metadata"
    notice = (
        f"\n\n> **This report was cut**: it has {len(body_markdown):,} characters, more than "
        f"{forge_name} accepts in a comment ({limit:,}); the whole report is in {where}."
    )
    room = limit - len(head) - len(footer) - len(notice) - len("\n```")
    kept = body_markdown[: max(room, 0)]
    newline = kept.rfind("\n")
    if newline > len(kept) - 2_000:
        kept = kept[:newline]  # cut between lines, not inside one
    if sum(line.lstrip().startswith("```") for line in kept.splitlines()) % 2:
        kept += "\n```"  # close a code block left open, or the notice would render as code
    return head + kept + notice + footer, True


# -- effects ------------------------------------------------------------------------


def _client(settings: ForgeSettings, deadline: Deadline) -> ForgeClient:
    if settings.kind is ForgeKind.GITHUB:
        return GitHubClient(settings, deadline)
    return GitLabClient(settings, deadline)


def _explain(error: ForgeRequestError, client: ForgeClient, action: str, sha: str, *, on_status: bool) -> str:
    """What happened and what to fix, for a request that failed (``on_status``: the commit
    status request, the first of a report, where a 404 means the repository is wrong)."""
    s = client.settings
    forge = client.name
    thing = "repository" if s.kind is ForgeKind.GITHUB else "project"
    tries = f" after {error.attempts} attempts" if error.attempts > 1 else ""
    scope = (
        "repo:status and pull-request write scope "
        "(fine-grained: Commit statuses and Pull requests: read and write)"
        if s.kind is ForgeKind.GITHUB
        else "the api scope and at least the Developer role on the project"
    )
    if error.kind == "http":
        status, detail = error.status or 0, error.detail
        if status == 401:
            return (
                f"{forge} refused the token (401: {detail}) while {action}: check {s.token_variable} "
                f"is valid, not expired, and has {scope}"
            )
        if status == 403:
            return (
                f"{forge} denied access (403: {detail}) while {action} on {s.project}: the token in "
                f"{s.token_variable} needs {scope} (or the API's rate limit was hit)"
            )
        if status == 404 and on_status:
            return (
                f"{forge} found no {thing} {s.project} (404: {detail}) while {action}: check "
                f"{s.project_variable} and that the token in {s.token_variable} can see it"
            )
        if status == 404:
            return (
                f"{forge} answered 404 ({detail}) while {action}: check {s.project_variable} and that "
                f"the token in {s.token_variable} can read and write {s.project}"
            )
        if status in (400, 422) and on_status:
            return (
                f"{forge} rejected the commit status for {sha[:12]} ({status}: {detail}): is that commit "
                f"pushed to {s.project}?"
            )
        if status >= 500:
            return (
                f"{forge} answered {status}{tries} while {action} ({detail}): the forge is having "
                "trouble; the next push reports again"
            )
        return f"{forge} rejected the request ({status}: {detail}) while {action} on {s.project}"
    if error.kind == "timeout":
        return (
            f"{forge} did not answer within {s.timeout_s:g} s{tries} while {action}: check "
            f"{s.api_url_variable}={s.api_url} is reachable from the Dagster run's host, or raise {FORGE_TIMEOUT}"
        )
    if error.kind == "unreachable":
        return (
            f"could not reach {forge} at {s.api_url}{tries} while {action} ({error.detail}): check "
            f"{s.api_url_variable} and the network from the Dagster run's host"
        )
    if error.kind == "malformed":
        example = "https://HOST/api/v3 for GitHub Enterprise" if s.kind is ForgeKind.GITHUB else "https://HOST/api/v4"
        return (
            f"{forge} {error.detail} while {action}: check {s.api_url_variable}={s.api_url} points at "
            f"the API ({example})"
        )
    return f"skipped {action}: the report's time budget ({FORGE_BUDGET}={s.budget_s:g} s) was spent on earlier requests"


def _stops_the_report(error: ForgeRequestError) -> bool:
    """Whether the next requests would fail the same way (bad token, wrong repository,
    forge unreachable, budget spent), so trying them would only add noise and time."""
    return error.kind != "http" or error.status in (401, 403, 404)


class _Report:
    """One report's warnings and log: created per call, never shared between threads."""

    def __init__(self, settings: ForgeSettings, log: ForgeLog | None) -> None:
        self.settings = settings
        self.log: ForgeLog = log if log is not None else _LOG
        self.secrets = (settings.token.reveal(),)
        self.warnings: list[str] = []

    def info(self, message: str) -> None:
        self.log.info(redact(message, self.secrets))

    def warn(self, message: str) -> None:
        message = redact(message, self.secrets)
        self.warnings.append(message)
        self.log.warning(message)

    def unexpected(self, error: BaseException, action: str) -> None:
        self.warn(
            f"unexpected {type(error).__name__} while {action}: {error}; the build is unaffected. "
            "This is a defer-orchestration bug: please report it with this message."
        )

    def outcome(self, call: Literal["pending", "final"], **parts: Any) -> ForgeOutcome:
        comment: CommentPosted | None = parts.get("comment")
        if comment is not None:  # a forge could echo anything back: scrub what we keep of it
            comment = CommentPosted(
                comment.id,
                redact(comment.url, self.secrets),
                comment.action,
                comment.request_number,
                redact(comment.request_url, self.secrets),
                comment.truncated,
            )
        return ForgeOutcome(
            forge=self.settings.kind.value,
            project=self.settings.project,
            call=call,
            status=parts.get("status"),
            comment=comment,
            gate=parts.get("gate"),
            warnings=list(self.warnings),
        )


def _post_status(
    client: ForgeClient, report: _Report, *, sha: str, phase: Phase, description: str, run_id: str
) -> tuple[StatusPosted | None, bool]:
    """Post the status; ``(what was posted, whether the report may go on)``."""
    target_url = client.settings.run_url(run_id)
    action = f"posting the {client.status_state(phase)} commit status on {sha[:12]}"
    try:
        state = client.post_status(sha, phase, description, target_url)
    except ForgeRequestError as error:
        report.warn(_explain(error, client, action, sha, on_status=True))
        return None, not _stops_the_report(error)
    report.info(f"{client.name} {client.settings.project}: commit status {state} on {sha[:12]} ({description})")
    return StatusPosted(state, description, target_url), True


def report_pending(
    settings: ForgeSettings, *, branch: str, sha: str, run_id: str, log: ForgeLog | None = None
) -> ForgeOutcome:
    """At run start: the commit status goes pending (GitLab: running), linking to the run.

    One request (plus retries within ``settings.budget_s``); never raises."""
    report = _Report(settings, log)
    status: StatusPosted | None = None
    try:
        client = _client(settings, Deadline.after(settings.budget_s))
        description = clip(f"Branch build of {branch} running", client.description_limit)
        status, _ = _post_status(client, report, sha=sha, phase="pending", description=description, run_id=run_id)
    except Exception as error:  # the build must never fail because of its report
        report.unexpected(error, "posting the pending commit status")
    return report.outcome("pending", status=status)


def _find_ours(client: ForgeClient, request: ReviewRequest, branch: str) -> int | None:
    for comment in client.comments(request):
        if is_ours(comment.body, branch):
            return comment.id
    return None


def _post_comment(
    client: ForgeClient, report: _Report, *, branch: str, sha: str, run_id: str, body_markdown: str
) -> CommentPosted | None:
    """Create the branch's report comment, or edit the one a previous push created."""
    s = client.settings
    noun = client.request_noun
    action = f"looking for the open {noun} of branch {branch}"
    try:
        request = client.find_open_request(branch)
        if request is None:
            report.warn(
                f"no open {noun} for branch {branch} in {s.project}: the report was not posted; "
                f"open one and push again"
            )
            return None
        action = f"reading the comments of {noun} {request.url}"
        existing = _find_ours(client, request, branch)
        body, truncated = comment_body(
            branch, sha, body_markdown, run_url=s.run_url(run_id), forge_name=client.name, limit=client.comment_limit
        )
        if existing is None:
            action = f"commenting on {noun} {request.url}"
            posted = client.create_comment(request, body)
        else:
            action = f"editing the report comment {existing} on {noun} {request.url}"
            posted = client.update_comment(request, existing, body)
    except ForgeRequestError as error:
        report.warn(_explain(error, client, action, sha, on_status=False))
        return None
    verb: Literal["created", "updated"] = "created" if existing is None else "updated"
    report.info(f"{client.name} {s.project}: report comment {verb} on {noun} {request.url} ({posted.url})")
    if truncated:
        report.warn(
            f"the report was cut to {client.comment_limit:,} characters ({client.name}'s comment limit); "
            "the whole report is in the run's metadata"
        )
    return CommentPosted(posted.id, posted.url, verb, request.number, request.url, truncated)


def report_final(
    settings: ForgeSettings,
    *,
    branch: str,
    sha: str,
    run_id: str,
    ok: bool,
    body_markdown: str,
    impact: list[dict[str, Any]] | None,
    log: ForgeLog | None = None,
) -> ForgeOutcome:
    """At run end: the final commit status (through the ``DEFER_ORCH_FAIL_ON`` gate) and
    the one report comment on the branch's open pull/merge request, edited in place on
    later pushes. ``impact`` is the report's ``impact`` list (``category``, ``impacted``).

    Takes at most ``settings.budget_s`` seconds; never raises."""
    report = _Report(settings, log)
    gate = gate_verdict(ok, impact, settings.fail_on)
    status: StatusPosted | None = None
    comment: CommentPosted | None = None
    try:
        client = _client(settings, Deadline.after(settings.budget_s))
        description = status_description(gate, impact, client.description_limit)
        status, go_on = _post_status(client, report, sha=sha, phase=gate.verdict, description=description, run_id=run_id)
        if go_on:
            comment = _post_comment(client, report, branch=branch, sha=sha, run_id=run_id, body_markdown=body_markdown)
        else:
            report.warn("the report comment was not posted either: fix the above and push again")
    except Exception as error:  # the build must never fail because of its report
        report.unexpected(error, "reporting to the forge")
    if gate.verdict == "failure" and ok:
        report.info(f"commit status failure although the build succeeded: {gate.reason}")
    return report.outcome("final", status=status, comment=comment, gate=gate)
