"""The forge reports (issue 23): commit status and one pull-request comment on GitHub and
GitLab, against the fake forge of ``tests/forge_server.py`` on 127.0.0.1. No dbt, no Dagster."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest

from forge_server import FakeForge, Kind, closed_port_url, fake_forge  # noqa: F401  (fixture)

from defer_orchestration.forge import (
    FailOn,
    ForgeKind,
    ForgeOutcome,
    ForgeSettings,
    forge_settings_from_env,
    gate_verdict,
    report_final,
    report_pending,
)
from defer_orchestration.forge.github import GitHubClient, next_link
from defer_orchestration.forge.http import Deadline
from defer_orchestration.forge.report import comment_body, is_ours, marker
from defer_orchestration.lib.errors import ConfigurationError

BRANCH = "feature/orders"
SHA = "3f2a9c0d1e4b5a6978877665544332211ffeedcc"
RUN_ID = "9b1e2d3c-0000-4000-8000-000000000001"
KINDS: tuple[Kind, ...] = ("github", "gitlab")
STATE_NAMES = {"github": {"pending": "pending", "failure": "failure"}, "gitlab": {"pending": "running", "failure": "failed"}}
LOG = logging.getLogger("tests.forge")

BREAKING: list[dict[str, Any]] = [
    {
        "unique_id": "model.shop.stg_orders",
        "category": "breaking",
        "reason": "column amount removed",
        "columns": {"added": [], "removed": ["amount"], "renamed": [], "retyped": [], "changed": []},
        "impacted": [{"unique_id": "model.shop.orders", "columns": ["amount"]}],
    },
    {"unique_id": "model.shop.customers", "category": "non_breaking", "reason": "adds a column", "impacted": []},
]


def settings(forge: FakeForge, kind: Kind, **extra: str) -> ForgeSettings:
    found = forge_settings_from_env(forge.env(kind, DEFER_ORCH_DAGSTER_URL="http://dagster.test:3000/", **extra))
    assert found is not None
    return found


def open_request(forge: FakeForge, kind: Kind, branch: str = BRANCH) -> int:
    return forge.open_pull_request(branch) if kind == "github" else forge.open_merge_request(branch)


def final(s: ForgeSettings, body: str = "## Branch report\n\nall good", **kwargs: Any) -> ForgeOutcome:
    args: dict[str, Any] = {"branch": BRANCH, "sha": SHA, "run_id": RUN_ID, "ok": True, "impact": None, "log": LOG}
    args.update(kwargs)
    return report_final(s, body_markdown=body, **args)


def ours(forge: FakeForge, kind: Kind, number: int) -> list[dict[str, Any]]:
    return [c for c in forge.comments(kind, number) if is_ours(c["body"], BRANCH)]


def status_payloads(forge: FakeForge, kind: Kind) -> list[dict[str, Any]]:
    return [r.json for r in forge.requests_to(kind, "status")]


# -- the happy path ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_status_goes_pending_then_final_with_a_link_to_the_run(fake_forge: FakeForge, kind: Kind) -> None:
    s = settings(fake_forge, kind)
    open_request(fake_forge, kind)

    pending = report_pending(s, branch=BRANCH, sha=SHA, run_id=RUN_ID, log=LOG)
    done = final(s)

    assert pending.warnings == [] and done.warnings == []
    assert pending.status is not None and pending.status.state == STATE_NAMES[kind]["pending"]
    assert done.status is not None and done.status.state == "success"
    assert done.gate is not None and done.gate.verdict == "success"
    payloads = status_payloads(fake_forge, kind)
    assert [p["state"] for p in payloads] == [STATE_NAMES[kind]["pending"], "success"]
    label = "context" if kind == "github" else "name"
    assert {p[label] for p in payloads} == {"defer-orchestration"}
    assert {p["target_url"] for p in payloads} == {f"http://dagster.test:3000/runs/{RUN_ID}"}
    assert all(len(p["description"]) <= 140 for p in payloads)
    assert fake_forge.statuses(kind, SHA)[-1]["state" if kind == "github" else "status"] == "success"
    headers = fake_forge.requests_to(kind, "status")[0].headers
    if kind == "github":
        assert headers["authorization"] == f"Bearer {fake_forge.token}"
        assert headers["accept"] == "application/vnd.github+json"
        assert headers["x-github-api-version"] == "2022-11-28"
    else:
        assert headers["private-token"] == fake_forge.token
        assert "/projects/acme%2Fshop/statuses/" in fake_forge.requests_to("gitlab", "status")[0].path
    json.dumps(done.to_json())  # JSON-ready


@pytest.mark.parametrize("kind", KINDS)
def test_one_comment_created_then_edited_in_place(fake_forge: FakeForge, kind: Kind) -> None:
    s = settings(fake_forge, kind)
    number = open_request(fake_forge, kind)
    human = fake_forge.add_comment(kind, number, "LGTM once CI is green")

    first = final(s, "## Report of push 1")
    second = final(s, "## Report of push 2", sha="b" * 40)

    assert first.comment is not None and first.comment.action == "created"
    assert second.comment is not None and second.comment.action == "updated"
    assert second.comment.id == first.comment.id
    assert second.comment.request_number == number
    mine = ours(fake_forge, kind, number)
    assert len(mine) == 1 and mine[0]["id"] == first.comment.id
    assert "push 2" in mine[0]["body"] and "push 1" not in mine[0]["body"]
    assert "b" * 12 in mine[0]["body"]  # the footer names the commit
    others = [c for c in fake_forge.comments(kind, number) if c["id"] != first.comment.id]
    assert [(c["id"], c["body"]) for c in others] == [(human, "LGTM once CI is green")]
    assert len(fake_forge.requests_to(kind, "create_comment")) == 1
    assert len(fake_forge.requests_to(kind, "edit_comment")) == 1
    url_part = "#issuecomment-" if kind == "github" else "#note_"
    assert url_part in second.comment.url


@pytest.mark.parametrize("kind", KINDS)
def test_the_marker_comment_is_found_on_a_later_page(fake_forge: FakeForge, kind: Kind) -> None:
    fake_forge.page_size = 2
    s = settings(fake_forge, kind)
    number = open_request(fake_forge, kind)
    for i in range(3):
        fake_forge.add_comment(kind, number, f"human comment {i}")
    first = final(s, "v1")  # the 4th comment: on page 2
    fake_forge.add_comment(kind, number, "human comment after")

    second = final(s, "v2")

    assert first.comment is not None and second.comment is not None
    assert second.comment.action == "updated" and second.comment.id == first.comment.id
    assert len(ours(fake_forge, kind, number)) == 1
    pages = [r.path for r in fake_forge.requests_to(kind, "list_comments")]
    assert any("page=2" in p for p in pages), pages


@pytest.mark.parametrize("kind", KINDS)
def test_a_human_quoting_the_marker_is_not_taken_for_the_report(fake_forge: FakeForge, kind: Kind) -> None:
    s = settings(fake_forge, kind)
    number = open_request(fake_forge, kind)
    quoted = f"> {marker(BRANCH)}\n> old report\n\nwhy did this fail?"
    human = fake_forge.add_comment(kind, number, quoted)

    outcome = final(s)

    assert outcome.comment is not None and outcome.comment.action == "created"
    assert next(c for c in fake_forge.comments(kind, number) if c["id"] == human)["body"] == quoted


# -- refusals and failures -------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_token_is_a_warning_naming_the_variable_and_is_not_retried(
    fake_forge: FakeForge, kind: Kind, caplog: pytest.LogCaptureFixture
) -> None:
    variable = "DEFER_ORCH_GITHUB_TOKEN" if kind == "github" else "DEFER_ORCH_GITLAB_TOKEN"
    wrong = "wrong-token-5ecret-value"
    s = settings(fake_forge, kind, **{variable: wrong})
    open_request(fake_forge, kind)
    caplog.set_level(logging.INFO)

    pending = report_pending(s, branch=BRANCH, sha=SHA, run_id=RUN_ID, log=LOG)
    done = final(s)

    for outcome in (pending, done):
        assert outcome.status is None
        assert any("(401: " in w and variable in w for w in outcome.warnings), outcome.warnings
    assert done.comment is None and any("not posted" in w for w in done.warnings)
    assert len(fake_forge.requests_to(kind, "status")) == 2  # one per report: no retry
    assert fake_forge.requests_to(kind, "find") == []
    # The fake echoed the wrong token in its 401 body: none of it comes out.
    everything = caplog.text + json.dumps(pending.to_json()) + json.dumps(done.to_json())
    assert wrong not in everything and "***" in everything


@pytest.mark.parametrize("kind", KINDS)
def test_no_open_request_posts_the_status_and_skips_the_comment_with_a_warning(fake_forge: FakeForge, kind: Kind) -> None:
    s = settings(fake_forge, kind)
    if kind == "github":
        fake_forge.open_pull_request(BRANCH, state="closed")
    else:
        fake_forge.open_merge_request(BRANCH, state="merged")
    open_request(fake_forge, kind, branch="someone-else")

    outcome = final(s)

    assert outcome.status is not None and outcome.status.state == "success"
    assert outcome.comment is None
    noun = "pull request" if kind == "github" else "merge request"
    assert outcome.warnings == [
        f"no open {noun} for branch {BRANCH} in acme/shop: the report was not posted; open one and push again"
    ]
    assert fake_forge.requests_to(kind, "create_comment") == []


@pytest.mark.parametrize("kind", KINDS)
def test_an_unknown_repository_is_a_warning_naming_the_variable(fake_forge: FakeForge, kind: Kind) -> None:
    variable = "DEFER_ORCH_GITHUB_REPOSITORY" if kind == "github" else "DEFER_ORCH_GITLAB_PROJECT"
    s = settings(fake_forge, kind, **{variable: "acme/elsewhere"})

    outcome = final(s)

    assert outcome.status is None and outcome.comment is None
    assert "(404" in outcome.warnings[0] and variable in outcome.warnings[0]
    assert fake_forge.requests_to(kind, "find") == []


@pytest.mark.parametrize("kind", KINDS)
def test_server_errors_are_retried_until_an_answer(fake_forge: FakeForge, kind: Kind) -> None:
    s = settings(fake_forge, kind)
    open_request(fake_forge, kind)
    fake_forge.fail(kind, "status", 500, 200)
    fake_forge.fail(kind, "create_comment", 502)

    outcome = final(s)

    assert outcome.warnings == []
    assert outcome.status is not None and outcome.status.state == "success"
    assert outcome.comment is not None and outcome.comment.action == "created"
    assert len(fake_forge.requests_to(kind, "status")) == 2
    assert len(fake_forge.requests_to(kind, "create_comment")) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_a_forge_that_keeps_failing_is_a_warning_within_the_budget(fake_forge: FakeForge, kind: Kind) -> None:
    s = settings(fake_forge, kind, DEFER_ORCH_FORGE_BUDGET="1")
    open_request(fake_forge, kind)
    fake_forge.fail(kind, "status", *[503] * 50)

    outcome = final(s)

    assert outcome.status is None
    assert "answered 503 after" in outcome.warnings[0] and "attempts" in outcome.warnings[0]
    assert 1 < len(fake_forge.requests_to(kind, "status")) < 10


@pytest.mark.parametrize("kind", KINDS)
def test_a_closed_port_is_a_warning_and_the_call_returns(kind: Kind) -> None:
    variable = "DEFER_ORCH_GITHUB_API_URL" if kind == "github" else "DEFER_ORCH_GITLAB_API_URL"
    with FakeForge() as forge:  # only for its env()
        env = forge.env(kind, **{variable: closed_port_url(), "DEFER_ORCH_FORGE_BUDGET": "0.6"})
    s = forge_settings_from_env(env)
    assert s is not None

    pending = report_pending(s, branch=BRANCH, sha=SHA, run_id=RUN_ID, log=LOG)
    done = final(s)

    for outcome in (pending, done):
        assert outcome.status is None and outcome.comment is None
        assert outcome.warnings[0].startswith("could not reach "), outcome.warnings
        assert variable in outcome.warnings[0]


@pytest.mark.parametrize("kind", KINDS)
def test_a_forge_that_does_not_answer_in_time_is_a_warning(fake_forge: FakeForge, kind: Kind) -> None:
    s = settings(fake_forge, kind, DEFER_ORCH_FORGE_TIMEOUT="0.3", DEFER_ORCH_FORGE_BUDGET="0.8")
    fake_forge.delay(kind, "status", 5, times=5)

    outcome = report_pending(s, branch=BRANCH, sha=SHA, run_id=RUN_ID, log=LOG)

    assert outcome.status is None
    assert "did not answer within 0.3 s" in outcome.warnings[0]
    assert "DEFER_ORCH_FORGE_TIMEOUT" in outcome.warnings[0]


@pytest.mark.parametrize("kind", KINDS)
def test_an_answer_that_is_not_json_is_a_warning_naming_the_api_url(fake_forge: FakeForge, kind: Kind) -> None:
    s = settings(fake_forge, kind)
    open_request(fake_forge, kind)
    fake_forge.fail(kind, "find", "garbage")

    outcome = final(s)

    assert outcome.status is not None and outcome.comment is None
    variable = "DEFER_ORCH_GITHUB_API_URL" if kind == "github" else "DEFER_ORCH_GITLAB_API_URL"
    assert "not JSON" in outcome.warnings[0] and variable in outcome.warnings[0]


@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_status_does_not_stop_the_comment(fake_forge: FakeForge, kind: Kind) -> None:
    s = settings(fake_forge, kind)
    open_request(fake_forge, kind)
    fake_forge.fail(kind, "status", 422)

    outcome = final(s)

    assert outcome.status is None and outcome.comment is not None
    assert "is that commit pushed to acme/shop?" in outcome.warnings[0]


@pytest.mark.parametrize("kind", KINDS)
def test_a_report_comment_gone_between_listing_and_editing_is_a_warning(fake_forge: FakeForge, kind: Kind) -> None:
    s = settings(fake_forge, kind)
    open_request(fake_forge, kind)
    assert final(s).comment is not None
    fake_forge.fail(kind, "edit_comment", 404)

    outcome = final(s, "v2")

    assert outcome.status is not None and outcome.comment is None
    assert outcome.warnings[0].startswith(f"{'GitHub' if kind == 'github' else 'GitLab'} answered 404")
    assert "editing the report comment" in outcome.warnings[0]


def test_pagination_links_to_another_host_are_not_followed() -> None:
    s = forge_settings_from_env({"DEFER_ORCH_GITHUB_REPOSITORY": "a/b", "DEFER_ORCH_GITHUB_TOKEN": "t0k"})
    assert s is not None
    client = GitHubClient(s, Deadline.after(1))
    assert client.same_origin("https://api.github.com/repositories/1/issues/2/comments?page=2")
    assert not client.same_origin("https://evil.example/api.github.com/x")
    assert not client.same_origin("http://api.github.com/x")


def test_gitlab_repeating_a_running_status_counts_as_posted(fake_forge: FakeForge) -> None:
    s = settings(fake_forge, "gitlab")

    first = report_pending(s, branch=BRANCH, sha=SHA, run_id=RUN_ID, log=LOG)
    again = report_pending(s, branch=BRANCH, sha=SHA, run_id=RUN_ID, log=LOG)

    assert first.status is not None and again.status is not None and again.warnings == []
    assert [st["status"] for st in fake_forge.statuses("gitlab", SHA)] == ["running"]


# -- the gate --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_fail_on_breaking_fails_the_status_and_says_which_change_reaches_what(fake_forge: FakeForge, kind: Kind) -> None:
    open_request(fake_forge, kind)
    gated = settings(fake_forge, kind, DEFER_ORCH_FAIL_ON="breaking")

    outcome = final(gated, impact=BREAKING)

    assert outcome.status is not None and outcome.status.state == STATE_NAMES[kind]["failure"]
    assert outcome.status.description == "Breaking change in stg_orders reaches orders"
    assert outcome.gate is not None and outcome.gate.verdict == "failure" and outcome.gate.fail_on == "breaking"
    assert "model.shop.stg_orders reaches model.shop.orders" in outcome.gate.reason
    assert outcome.comment is not None  # the report is posted all the same


@pytest.mark.parametrize("kind", KINDS)
def test_without_the_gate_a_breaking_change_passes_and_says_so(fake_forge: FakeForge, kind: Kind) -> None:
    open_request(fake_forge, kind)

    outcome = final(settings(fake_forge, kind), impact=BREAKING)

    assert outcome.status is not None and outcome.status.state == "success"
    assert outcome.gate is not None and outcome.gate.verdict == "success"
    assert "not gated" in outcome.gate.reason and "model.shop.orders" in outcome.gate.reason


@pytest.mark.parametrize("kind", KINDS)
def test_a_failed_build_fails_the_status(fake_forge: FakeForge, kind: Kind) -> None:
    open_request(fake_forge, kind)

    outcome = final(settings(fake_forge, kind), ok=False)

    assert outcome.status is not None and outcome.status.state == STATE_NAMES[kind]["failure"]
    assert outcome.status.description == "Branch build failed"


def test_gate_verdicts() -> None:
    not_reaching = [{"unique_id": "model.p.a", "category": "breaking", "impacted": []}]
    assert gate_verdict(True, not_reaching, FailOn.BREAKING).verdict == "success"
    assert gate_verdict(True, None, FailOn.BREAKING).verdict == "success"
    assert gate_verdict(True, BREAKING, FailOn.BREAKING).verdict == "failure"
    assert gate_verdict(True, BREAKING, None).verdict == "success"
    failed = gate_verdict(False, BREAKING, None)
    assert failed.verdict == "failure" and failed.reason.startswith("the branch build failed")
    many = [{"unique_id": "model.p.root", "category": "breaking", "impacted": [{"unique_id": f"model.p.m{i}"} for i in range(40)]}]
    many_reason = gate_verdict(True, many, FailOn.BREAKING).reason
    assert "and 35 more" in many_reason and len(many_reason) < 300


# -- the comment body ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_report_over_the_limit_is_cut_with_a_line_saying_so(fake_forge: FakeForge, kind: Kind) -> None:
    number = open_request(fake_forge, kind)
    limit = 65_536 if kind == "github" else 1_000_000
    huge = "\n".join(f"| model_{i} | rebuilt | {'x' * 60} |" for i in range(limit // 60))

    outcome = final(settings(fake_forge, kind), huge)

    assert outcome.comment is not None and outcome.comment.truncated
    (posted,) = ours(fake_forge, kind, number)
    assert len(posted["body"]) <= limit
    assert "This report was cut" in posted["body"] and f"{len(huge):,} characters" in posted["body"]
    assert any("was cut" in w for w in outcome.warnings)


def test_a_cut_inside_a_code_block_closes_it_before_the_notice() -> None:
    report = "intro\n```mermaid\n" + "\n".join(f"a{i} --> b{i}" for i in range(10_000)) + "\n```\n"
    body, cut = comment_body(BRANCH, SHA, report, run_url=None, forge_name="GitHub", limit=5_000)
    assert cut and len(body) <= 5_000
    before_notice = body.split("> **This report was cut**")[0]
    assert before_notice.count("```") % 2 == 0


def test_the_marker_survives_any_branch_name() -> None:
    tricky = "fix/a-->b <x>"
    assert marker(tricky).count("-->") == 1 and marker(tricky).endswith("-->")
    assert is_ours(marker(tricky) + "\nreport", tricky)
    assert not is_ours(marker("fix/a") + "\nreport", tricky)


def test_next_link_reads_githubs_link_header() -> None:
    header = '<https://api.github.com/repositories/1/issues/2/comments?page=2>; rel="next", <https://api.github.com/x?page=5>; rel="last"'
    assert next_link(header) == "https://api.github.com/repositories/1/issues/2/comments?page=2"
    assert next_link('<https://api.github.com/x?page=1>; rel="prev"') is None
    assert next_link(None) is None


# -- thread safety -----------------------------------------------------------------------


def test_pending_reports_run_side_by_side_in_threads(fake_forge: FakeForge) -> None:
    s = settings(fake_forge, "github")
    shas = [f"{i:040x}" for i in range(6)]
    outcomes: dict[str, ForgeOutcome] = {}

    def post(sha: str) -> None:
        outcomes[sha] = report_pending(s, branch=BRANCH, sha=sha, run_id=RUN_ID, log=LOG)

    threads = [threading.Thread(target=post, args=(sha,)) for sha in shas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert all(outcomes[sha].warnings == [] for sha in shas)
    assert all([st["state"] for st in fake_forge.statuses("github", sha)] == ["pending"] for sha in shas)


# -- tokens never leak ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_token_never_appears_in_logs_warnings_outcomes_or_errors(
    fake_forge: FakeForge, kind: Kind, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = fake_forge.token
    s = settings(fake_forge, kind)
    open_request(fake_forge, kind)
    outcomes = [report_pending(s, branch=BRANCH, sha=SHA, run_id=RUN_ID, log=LOG), final(s)]
    fake_forge.fail(kind, "status", 401)  # the fake echoes the (right) token in its 401 body
    outcomes.append(final(s))
    fake_forge.fail(kind, "find", 500, 500)
    outcomes.append(final(s, impact=BREAKING))
    fake_forge.fail(kind, "list_comments", "garbage")
    outcomes.append(final(s))
    # Also the default logger, when no log is given.
    outcomes.append(report_pending(s, branch=BRANCH, sha="c" * 40, run_id=RUN_ID))

    texts = [caplog.text, repr(s), str(s), str(s.token)]
    texts += [json.dumps(o.to_json()) for o in outcomes] + [repr(o) for o in outcomes]
    half = {("DEFER_ORCH_GITHUB_TOKEN" if kind == "github" else "DEFER_ORCH_GITLAB_TOKEN"): token}
    with pytest.raises(ConfigurationError) as error:
        forge_settings_from_env(half)
    texts.append(str(error.value))
    assert any(o.warnings for o in outcomes)  # the failures above did happen
    assert "***" in caplog.text  # ... including the echoed token, redacted
    for text in texts:
        assert token not in text


# -- settings ------------------------------------------------------------------------------


def test_no_forge_configured_is_none() -> None:
    assert forge_settings_from_env({}) is None
    assert forge_settings_from_env({"DEFER_ORCH_DAGSTER_URL": "http://dagster:3000", "PATH": "/bin"}) is None


def test_github_settings_and_defaults() -> None:
    s = forge_settings_from_env({"DEFER_ORCH_GITHUB_REPOSITORY": "acme/shop", "DEFER_ORCH_GITHUB_TOKEN": "t0k"})
    assert s is not None
    assert (s.kind, s.project, s.api_url, s.fail_on, s.dagster_url) == (
        ForgeKind.GITHUB, "acme/shop", "https://api.github.com", None, None
    )
    assert (s.timeout_s, s.budget_s) == (10.0, 30.0)
    assert s.token.reveal() == "t0k" and "t0k" not in repr(s)
    ghe = forge_settings_from_env(
        {
            "DEFER_ORCH_GITHUB_REPOSITORY": "acme/shop",
            "DEFER_ORCH_GITHUB_TOKEN": "t0k",
            "DEFER_ORCH_GITHUB_API_URL": "https://github.acme.com/api/v3/",
            "DEFER_ORCH_DAGSTER_URL": "https://dagster.acme.com/",
            "DEFER_ORCH_FAIL_ON": "breaking",
            "DEFER_ORCH_FORGE_TIMEOUT": "3",
            "DEFER_ORCH_FORGE_BUDGET": "12.5",
        }
    )
    assert ghe is not None
    assert ghe.api_url == "https://github.acme.com/api/v3"
    assert ghe.run_url("r1") == "https://dagster.acme.com/runs/r1"
    assert (ghe.fail_on, ghe.timeout_s, ghe.budget_s) == (FailOn.BREAKING, 3.0, 12.5)


def test_gitlab_settings_and_defaults() -> None:
    s = forge_settings_from_env({"DEFER_ORCH_GITLAB_PROJECT": "group/sub/name", "DEFER_ORCH_GITLAB_TOKEN": "glpat"})
    assert s is not None and (s.kind, s.project, s.api_url) == (ForgeKind.GITLAB, "group/sub/name", "https://gitlab.com/api/v4")
    numeric = forge_settings_from_env({"DEFER_ORCH_GITLAB_PROJECT": "4242", "DEFER_ORCH_GITLAB_TOKEN": "glpat"})
    assert numeric is not None and numeric.project == "4242"


def test_gitlab_by_numeric_project_id(fake_forge: FakeForge) -> None:
    s = settings(fake_forge, "gitlab", DEFER_ORCH_GITLAB_PROJECT=str(fake_forge.gitlab_project_id))
    number = fake_forge.open_merge_request(BRANCH)
    outcome = final(s)
    assert outcome.warnings == [] and len(ours(fake_forge, "gitlab", number)) == 1
    assert "/projects/4242/statuses/" in fake_forge.requests_to("gitlab", "status")[0].path


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"DEFER_ORCH_GITHUB_REPOSITORY": "acme/shop"}, ["DEFER_ORCH_GITHUB_TOKEN"]),
        ({"DEFER_ORCH_GITHUB_TOKEN": "t"}, ["DEFER_ORCH_GITHUB_REPOSITORY", "owner/name"]),
        ({"DEFER_ORCH_GITLAB_PROJECT": "g/n"}, ["DEFER_ORCH_GITLAB_TOKEN"]),
        ({"DEFER_ORCH_GITLAB_TOKEN": "t"}, ["DEFER_ORCH_GITLAB_PROJECT"]),
        (
            {"DEFER_ORCH_GITHUB_REPOSITORY": "a/b", "DEFER_ORCH_GITHUB_TOKEN": "t",
             "DEFER_ORCH_GITLAB_PROJECT": "g/n", "DEFER_ORCH_GITLAB_TOKEN": "t"},
            ["both", "unset"],
        ),
        ({"DEFER_ORCH_GITHUB_REPOSITORY": "just-a-name", "DEFER_ORCH_GITHUB_TOKEN": "t"}, ["owner/name"]),
        ({"DEFER_ORCH_GITHUB_REPOSITORY": "a/b/c", "DEFER_ORCH_GITHUB_TOKEN": "t"}, ["owner/name"]),
        ({"DEFER_ORCH_GITLAB_PROJECT": "has space/x", "DEFER_ORCH_GITLAB_TOKEN": "t"}, ["DEFER_ORCH_GITLAB_PROJECT"]),
        ({"DEFER_ORCH_FAIL_ON": "partial"}, ["DEFER_ORCH_FAIL_ON", "'breaking'"]),
        ({"DEFER_ORCH_GITHUB_REPOSITORY": "a/b", "DEFER_ORCH_GITHUB_TOKEN": "t", "DEFER_ORCH_GITHUB_API_URL": "api.github.com"},
         ["DEFER_ORCH_GITHUB_API_URL"]),
        ({"DEFER_ORCH_FORGE_TIMEOUT": "0"}, ["DEFER_ORCH_FORGE_TIMEOUT"]),
        ({"DEFER_ORCH_FORGE_BUDGET": "soon"}, ["DEFER_ORCH_FORGE_BUDGET"]),
    ],
)
def test_half_configured_or_malformed_settings_say_what_to_set(env: dict[str, str], names: list[str]) -> None:
    with pytest.raises(ConfigurationError) as error:
        forge_settings_from_env(env)
    for name in names:
        assert name in str(error.value)
