"""A fake GitHub and GitLab on 127.0.0.1, for tests of the forge reports.

One threaded HTTP server serves both forges' endpoints used by
:mod:`defer_orchestration.forge`, shaped as their documented responses, keeps state
(pull/merge requests, comments/notes, commit statuses) and records every request.
GitHub lives under ``/api/v3`` (as GitHub Enterprise does), GitLab under ``/api/v4``::

    with FakeForge() as forge:
        number = forge.open_pull_request("feature")        # GitHub PR #1 for branch "feature"
        env = forge.env("github", DEFER_ORCH_FAIL_ON="breaking")   # the DEFER_ORCH_* to use
        ... run the code under test with env ...
        forge.statuses("github", sha)                      # [{"state": "pending", ...}, ...]
        forge.comments("github", number)                   # [{"id": ..., "body": ...}]
        forge.requests_to("github", "status")              # recorded requests

Or as the pytest fixture :func:`fake_forge` (import it into the test module).

Endpoints, by the name used in :meth:`FakeForge.fail`, :meth:`FakeForge.delay` and
:meth:`FakeForge.requests_to`:

============== ================================================ ==================================================
name           GitHub (``/api/v3``)                             GitLab (``/api/v4``)
============== ================================================ ==================================================
status         POST /repos/{o}/{r}/statuses/{sha}               POST /projects/:id/statuses/:sha
find           GET /repos/{o}/{r}/pulls?head=o:branch&state=    GET /projects/:id/merge_requests?source_branch=
list_comments  GET /repos/{o}/{r}/issues/{n}/comments           GET /projects/:id/merge_requests/:iid/notes
create_comment POST /repos/{o}/{r}/issues/{n}/comments          POST /projects/:id/merge_requests/:iid/notes
edit_comment   PATCH /repos/{o}/{r}/issues/comments/{id}        PUT /projects/:id/merge_requests/:iid/notes/:nid
============== ================================================ ==================================================

Behaviour worth knowing:
- Auth as the forges do it (GitHub ``Authorization: Bearer``, GitLab ``PRIVATE-TOKEN``);
  a wrong token gets 401, and the 401 body *echoes the presented credential*, on purpose,
  so tests can prove the client redacts what a server sends back.
- An unknown repository/project is 404; a GitHub status description over 140 characters,
  a bad state or a comment over 65,536 characters is 422; GitLab refuses a repeated
  pending/running transition with its 400 ``Cannot transition status via …``.
- Lists are paginated at :attr:`FakeForge.page_size` (default 100, set it low to test
  pagination): GitHub answers ``Link: <…>; rel="next"``, GitLab ``X-Next-Page``.
- :meth:`FakeForge.fail` queues answers per endpoint: each request takes the next one;
  an int status (``500``, ``401``…) is answered as an error, ``200`` (or ``None``) serves
  normally, ``"garbage"`` answers 200 with a body that is not JSON. :meth:`FakeForge.delay`
  holds the next answers of an endpoint for some seconds (to force a client timeout).
"""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

Kind = Literal["github", "gitlab"]
ENDPOINTS = ("status", "find", "list_comments", "create_comment", "edit_comment")
DEFAULT_TOKEN = "fake-forge-token-0123456789abcdef"
GITHUB_BODY_LIMIT = 65_536
GITLAB_BODY_LIMIT = 1_000_000


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received."""

    forge: Kind | None  # None: matched neither forge's prefix
    endpoint: str | None  # one of ENDPOINTS, None when no route matched
    method: str
    path: str  # raw path and query, as sent
    headers: dict[str, str]  # names lower-cased (HTTP header names are case-insensitive)
    json: Any  # the decoded JSON body, or None


@dataclass
class _Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeForge:
    """The fake GitHub + GitLab (a context manager: ``with FakeForge() as forge``)."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        github_repository: str = "acme/shop",
        gitlab_project: str = "acme/shop",
        gitlab_project_id: int = 4242,
        page_size: int = 100,
    ) -> None:
        self.token = token
        self.github_repository = github_repository
        self.gitlab_project = gitlab_project
        self.gitlab_project_id = gitlab_project_id
        self.page_size = page_size
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._requests: list[RecordedRequest] = []
        self._failures: dict[tuple[str, str], deque[int | str | None]] = defaultdict(deque)
        self._delays: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._next_id = 1000
        # number -> {"branch", "state", "comments": [...]} per forge
        self._requests_for_merge: dict[Kind, dict[int, dict[str, Any]]] = {"github": {}, "gitlab": {}}
        self._statuses: dict[Kind, dict[str, list[dict[str, Any]]]] = {"github": {}, "gitlab": {}}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> FakeForge:
        """Listen on a free port of 127.0.0.1, serving from a daemon thread."""
        forge = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                forge._handle(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-forge", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (delayed answers are released at once)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeForge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses and settings ---------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the web pages' base (``html_url``/``web_url``)."""
        assert self._server is not None, "start the FakeForge first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def github_api_url(self) -> str:
        """For ``DEFER_ORCH_GITHUB_API_URL``."""
        return f"{self.url}/api/v3"

    @property
    def gitlab_api_url(self) -> str:
        """For ``DEFER_ORCH_GITLAB_API_URL``."""
        return f"{self.url}/api/v4"

    def env(self, kind: Kind, **extra: str) -> dict[str, str]:
        """The ``DEFER_ORCH_*`` variables that point a branch run at this fake, plus ``extra``.

        Timeout and budget default low (2 s and 5 s) so a test of a failure is quick."""
        if kind == "github":
            base = {
                "DEFER_ORCH_GITHUB_REPOSITORY": self.github_repository,
                "DEFER_ORCH_GITHUB_TOKEN": self.token,
                "DEFER_ORCH_GITHUB_API_URL": self.github_api_url,
            }
        else:
            base = {
                "DEFER_ORCH_GITLAB_PROJECT": self.gitlab_project,
                "DEFER_ORCH_GITLAB_TOKEN": self.token,
                "DEFER_ORCH_GITLAB_API_URL": self.gitlab_api_url,
            }
        return {"DEFER_ORCH_FORGE_TIMEOUT": "2", "DEFER_ORCH_FORGE_BUDGET": "5", **base, **extra}

    # -- state, set up and read by tests ------------------------------------------------

    def open_pull_request(self, branch: str, *, state: str = "open") -> int:
        """A GitHub pull request from ``branch``; its number."""
        return self._add_request("github", branch, state)

    def open_merge_request(self, branch: str, *, state: str = "opened") -> int:
        """A GitLab merge request from ``branch``; its iid."""
        return self._add_request("gitlab", branch, state)

    def add_comment(self, kind: Kind, number: int, body: str, *, author: str = "reviewer") -> int:
        """A comment (GitHub) or note (GitLab) by someone else; its id."""
        with self._lock:
            return self._new_comment(kind, number, body, author)["id"]  # type: ignore[no-any-return]

    def comments(self, kind: Kind, number: int) -> list[dict[str, Any]]:
        """The comments/notes of pull request ``number`` / merge request iid ``number``, oldest first."""
        with self._lock:
            return [dict(c) for c in self._requests_for_merge[kind][number]["comments"]]

    def statuses(self, kind: Kind, sha: str) -> list[dict[str, Any]]:
        """The commit statuses of ``sha`` as stored, oldest first (GitLab updates one in place
        while it is pending or running, as GitLab does)."""
        with self._lock:
            return [dict(s) for s in self._statuses[kind].get(sha, [])]

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, kind: Kind, endpoint: str) -> list[RecordedRequest]:
        """The requests one endpoint (see the module docstring) received."""
        assert endpoint in ENDPOINTS, f"unknown endpoint {endpoint!r}: one of {ENDPOINTS}"
        return [r for r in self.requests if r.forge == kind and r.endpoint == endpoint]

    def fail(self, kind: Kind, endpoint: str, *answers: int | str | None) -> None:
        """Queue answers for the next requests to ``endpoint``: a status code answered as an
        error, ``200``/``None`` served normally, ``"garbage"`` a 200 that is not JSON."""
        assert endpoint in ENDPOINTS, f"unknown endpoint {endpoint!r}: one of {ENDPOINTS}"
        with self._lock:
            self._failures[(kind, endpoint)].extend(answers)

    def delay(self, kind: Kind, endpoint: str, seconds: float, *, times: int = 1) -> None:
        """Hold the next ``times`` answers of ``endpoint`` for ``seconds``."""
        assert endpoint in ENDPOINTS, f"unknown endpoint {endpoint!r}: one of {ENDPOINTS}"
        with self._lock:
            self._delays[(kind, endpoint)].extend([seconds] * times)

    # -- internals ----------------------------------------------------------------------

    def _add_request(self, kind: Kind, branch: str, state: str) -> int:
        with self._lock:
            number = len(self._requests_for_merge[kind]) + 1
            self._requests_for_merge[kind][number] = {"branch": branch, "state": state, "comments": []}
            return number

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _request_url(self, kind: Kind, number: int) -> str:
        if kind == "github":
            return f"{self.url}/{self.github_repository}/pull/{number}"
        return f"{self.url}/{self.gitlab_project}/-/merge_requests/{number}"

    def _new_comment(self, kind: Kind, number: int, body: str, author: str) -> dict[str, Any]:
        mr = self._requests_for_merge[kind].get(number)
        if mr is None:
            raise KeyError(number)
        comment_id = self._id()
        if kind == "github":
            comment: dict[str, Any] = {
                "id": comment_id,
                "node_id": f"IC_{comment_id}",
                "url": f"{self.github_api_url}/repos/{self.github_repository}/issues/comments/{comment_id}",
                "html_url": f"{self._request_url(kind, number)}#issuecomment-{comment_id}",
                "issue_url": f"{self.github_api_url}/repos/{self.github_repository}/issues/{number}",
                "body": body,
                "user": {"login": author, "id": 7, "type": "User"},
                "created_at": _now(),
                "updated_at": _now(),
                "author_association": "MEMBER",
            }
        else:
            comment = {
                "id": comment_id,
                "type": None,
                "body": body,
                "author": {"id": 7, "username": author, "name": author, "state": "active"},
                "created_at": _now(),
                "updated_at": _now(),
                "system": False,
                "noteable_id": 90000 + number,
                "noteable_type": "MergeRequest",
                "noteable_iid": number,
                "resolvable": False,
                "confidential": False,
                "internal": False,
            }
        mr["comments"].append(comment)
        return comment

    def _find_comment(self, kind: Kind, comment_id: int, number: int | None = None) -> dict[str, Any] | None:
        for n, mr in self._requests_for_merge[kind].items():
            if number is not None and n != number:
                continue
            for comment in mr["comments"]:
                if comment["id"] == comment_id:
                    return comment  # type: ignore[no-any-return]
        return None

    def _route(self, method: str, raw_path: str) -> tuple[Kind | None, str | None, dict[str, str]]:
        """(forge, endpoint, path parameters) of a request; segments unquoted after splitting,
        so GitLab's ``group%2Fname`` stays one segment."""
        path = urlsplit(raw_path).path
        routes: list[tuple[Kind, str, str, str]] = [
            ("github", "POST", r"/api/v3/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/statuses/(?P<sha>[^/]+)", "status"),
            ("github", "GET", r"/api/v3/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/pulls", "find"),
            ("github", "GET", r"/api/v3/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues/(?P<n>\d+)/comments", "list_comments"),
            ("github", "POST", r"/api/v3/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues/(?P<n>\d+)/comments", "create_comment"),
            ("github", "PATCH", r"/api/v3/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues/comments/(?P<id>\d+)", "edit_comment"),
            ("gitlab", "POST", r"/api/v4/projects/(?P<project>[^/]+)/statuses/(?P<sha>[^/]+)", "status"),
            ("gitlab", "GET", r"/api/v4/projects/(?P<project>[^/]+)/merge_requests", "find"),
            ("gitlab", "GET", r"/api/v4/projects/(?P<project>[^/]+)/merge_requests/(?P<n>\d+)/notes", "list_comments"),
            ("gitlab", "POST", r"/api/v4/projects/(?P<project>[^/]+)/merge_requests/(?P<n>\d+)/notes", "create_comment"),
            ("gitlab", "PUT", r"/api/v4/projects/(?P<project>[^/]+)/merge_requests/(?P<n>\d+)/notes/(?P<id>\d+)", "edit_comment"),
        ]
        for kind, verb, pattern, endpoint in routes:
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                return kind, endpoint, {k: unquote(v) for k, v in match.groupdict().items()}
        kind_guess: Kind | None = "github" if path.startswith("/api/v3/") else "gitlab" if path.startswith("/api/v4/") else None
        return kind_guess, None, {}

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        kind, endpoint, params = self._route(handler.command, handler.path)
        with self._lock:
            self._requests.append(
                RecordedRequest(kind, endpoint, handler.command, handler.path, {k.lower(): v for k, v in handler.headers.items()}, payload)
            )
            delay = self._delays[(kind or "", endpoint or "")].popleft() if self._delays[(kind or "", endpoint or "")] else 0.0
            queued = self._failures[(kind or "", endpoint or "")]
            forced = queued.popleft() if queued else None
        if delay:
            self._stop.wait(delay)
        answer = self._answer(handler, kind, endpoint, params, payload, forced)
        body = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
        try:
            handler.send_response(answer.status)
            handler.send_header("Content-Type", "application/json; charset=utf-8")
            handler.send_header("Content-Length", str(len(body)))
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to tell it

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        kind: Kind | None,
        endpoint: str | None,
        params: dict[str, str],
        payload: Any,
        forced: int | str | None,
    ) -> _Answer:
        if kind is None or endpoint is None:
            return _Answer(404, {"message": "Not Found"})
        presented = (
            handler.headers.get("Authorization", "") if kind == "github" else handler.headers.get("PRIVATE-TOKEN", "")
        )
        expected = f"Bearer {self.token}" if kind == "github" else self.token
        if forced == "garbage":
            return _Answer(200, raw=b"<html><body>502 Bad Gateway (not JSON)</body></html>")
        if forced == 401 or presented != expected:
            # Echoes the credential on purpose: the client must redact server text.
            message = f"Bad credentials ({presented})" if kind == "github" else f"401 Unauthorized ({presented})"
            return _Answer(401, {"message": message, "documentation_url": "https://docs.example/rest"})
        if isinstance(forced, int) and forced != 200:
            return _Answer(forced, {"message": f"fake forge answered {forced} as programmed"})
        if not self._known_project(kind, params):
            return _Answer(404, {"message": "Not Found" if kind == "github" else "404 Project Not Found"})
        query = parse_qs(urlsplit(handler.path).query)
        with self._lock:
            if kind == "github":
                return self._github(endpoint, params, query, payload, handler)
            return self._gitlab(endpoint, params, query, payload, handler)

    def _known_project(self, kind: Kind, params: dict[str, str]) -> bool:
        if kind == "github":
            return f"{params.get('owner')}/{params.get('repo')}" == self.github_repository
        return params.get("project") in (self.gitlab_project, str(self.gitlab_project_id))

    def _page(self, items: list[dict[str, Any]], query: dict[str, list[str]]) -> tuple[list[dict[str, Any]], int, int]:
        per_page = min(int(query.get("per_page", ["20"])[0]), self.page_size)
        page = max(int(query.get("page", ["1"])[0]), 1)
        pages = max(1, -(-len(items) // per_page))
        return items[(page - 1) * per_page : page * per_page], page, pages

    def _github(
        self, endpoint: str, params: dict[str, str], query: dict[str, list[str]], payload: Any, handler: BaseHTTPRequestHandler
    ) -> _Answer:
        prs = self._requests_for_merge["github"]
        if endpoint == "status":
            state = (payload or {}).get("state")
            description = (payload or {}).get("description") or ""
            if state not in ("pending", "success", "failure", "error"):
                return _Answer(422, {"message": "Validation Failed", "errors": [{"field": "state", "code": "invalid"}]})
            if len(description) > 140:
                return _Answer(422, {"message": "Validation Failed: description is too long (maximum is 140 characters)"})
            status = {
                "id": self._id(),
                "url": f"{self.github_api_url}/repos/{self.github_repository}/statuses/{params['sha']}",
                "state": state,
                "description": description,
                "target_url": (payload or {}).get("target_url"),
                "context": (payload or {}).get("context") or "default",
                "created_at": _now(),
                "updated_at": _now(),
                "creator": {"login": "defer-bot", "id": 9},
            }
            self._statuses["github"].setdefault(params["sha"], []).append(status)
            return _Answer(201, status)
        if endpoint == "find":
            head = query.get("head", [""])[0]
            wanted_state = query.get("state", ["open"])[0]
            owner = self.github_repository.split("/")[0]
            found = [
                self._github_pr(n, pr)
                for n, pr in sorted(prs.items(), reverse=True)  # GitHub: newest first
                if f"{owner}:{pr['branch']}" == head and (wanted_state == "all" or pr["state"] == wanted_state)
            ]
            return _Answer(200, found)
        if endpoint == "list_comments":
            pr = prs.get(int(params["n"]))
            if pr is None:
                return _Answer(404, {"message": "Not Found"})
            items, page, pages = self._page(pr["comments"], query)
            headers = {}
            if page < pages:
                base = f"{self.github_api_url}/repos/{self.github_repository}/issues/{params['n']}/comments"
                per_page = min(int(query.get("per_page", ["30"])[0]), self.page_size)
                # Absolute, like GitHub's.
                headers["Link"] = (
                    f'<{base}?per_page={per_page}&page={page + 1}>; rel="next", '
                    f'<{base}?per_page={per_page}&page={pages}>; rel="last"'
                )
            return _Answer(200, items, headers)
        if endpoint == "create_comment":
            if int(params["n"]) not in prs:
                return _Answer(404, {"message": "Not Found"})
            body = (payload or {}).get("body") or ""
            if len(body) > GITHUB_BODY_LIMIT:
                return _Answer(422, {"message": "Validation Failed: body is too long (maximum is 65536 characters)"})
            return _Answer(201, dict(self._new_comment("github", int(params["n"]), body, "defer-bot")))
        # edit_comment
        comment = self._find_comment("github", int(params["id"]))
        if comment is None:
            return _Answer(404, {"message": "Not Found"})
        body = (payload or {}).get("body") or ""
        if len(body) > GITHUB_BODY_LIMIT:
            return _Answer(422, {"message": "Validation Failed: body is too long (maximum is 65536 characters)"})
        comment.update(body=body, updated_at=_now())
        return _Answer(200, dict(comment))

    def _github_pr(self, number: int, pr: dict[str, Any]) -> dict[str, Any]:
        owner = self.github_repository.split("/")[0]
        return {
            "id": 500000 + number,
            "number": number,
            "state": pr["state"],
            "title": f"Changes from {pr['branch']}",
            "html_url": self._request_url("github", number),
            "url": f"{self.github_api_url}/repos/{self.github_repository}/pulls/{number}",
            "head": {"ref": pr["branch"], "label": f"{owner}:{pr['branch']}", "sha": "0" * 40},
            "base": {"ref": "main", "label": f"{owner}:main"},
        }

    def _gitlab(
        self, endpoint: str, params: dict[str, str], query: dict[str, list[str]], payload: Any, handler: BaseHTTPRequestHandler
    ) -> _Answer:
        mrs = self._requests_for_merge["gitlab"]
        if endpoint == "status":
            state = (payload or {}).get("state")
            name = (payload or {}).get("name") or (payload or {}).get("context") or "default"
            if state not in ("pending", "running", "success", "failed", "canceled"):
                return _Answer(400, {"error": "state does not have a valid value"})
            statuses = self._statuses["gitlab"].setdefault(params["sha"], [])
            live = [s for s in statuses if s["name"] == name and s["status"] in ("pending", "running")]
            current = live[-1] if live else None
            if current is not None and current["status"] == state:
                event = "enqueue" if state == "pending" else "run"
                return _Answer(
                    400,
                    {
                        "message": f"Cannot transition status via :{event} from :{state} "
                        f'(Reason(s): Status cannot transition via "{event}")'
                    },
                )
            if current is None:
                current = {"id": self._id(), "sha": params["sha"], "ref": None, "name": name, "created_at": _now()}
                statuses.append(current)
            current.update(
                status=state,
                description=(payload or {}).get("description"),
                target_url=(payload or {}).get("target_url"),
                allow_failure=False,
                author={"id": 9, "username": "defer-bot"},
            )
            return _Answer(201, dict(current))
        if endpoint == "find":
            branch = query.get("source_branch", [None])[0]
            wanted_state = query.get("state", ["all"])[0]
            found = [
                {
                    "id": 90000 + iid,
                    "iid": iid,
                    "project_id": self.gitlab_project_id,
                    "title": f"Changes from {mr['branch']}",
                    "state": mr["state"],
                    "source_branch": mr["branch"],
                    "target_branch": "main",
                    "web_url": self._request_url("gitlab", iid),
                    "sha": "0" * 40,
                }
                for iid, mr in sorted(mrs.items(), reverse=True)
                if (branch is None or mr["branch"] == branch) and (wanted_state == "all" or mr["state"] == wanted_state)
            ]
            return _Answer(200, found)
        if endpoint == "list_comments":
            mr = mrs.get(int(params["n"]))
            if mr is None:
                return _Answer(404, {"message": "404 Not found"})
            items, page, pages = self._page(mr["comments"], query)
            per_page = min(int(query.get("per_page", ["20"])[0]), self.page_size)
            headers = {
                "X-Page": str(page),
                "X-Per-Page": str(per_page),
                "X-Next-Page": str(page + 1) if page < pages else "",
                "X-Prev-Page": str(page - 1) if page > 1 else "",
                "X-Total": str(len(mr["comments"])),
                "X-Total-Pages": str(pages),
            }
            return _Answer(200, items, headers)
        if endpoint == "create_comment":
            if int(params["n"]) not in mrs:
                return _Answer(404, {"message": "404 Not found"})
            body = (payload or {}).get("body") or ""
            if not body or len(body) > GITLAB_BODY_LIMIT:
                return _Answer(400, {"message": {"note": ["is too long (maximum is 1000000 characters)"]}})
            return _Answer(201, dict(self._new_comment("gitlab", int(params["n"]), body, "defer-bot")))
        note = self._find_comment("gitlab", int(params["id"]), int(params["n"]))
        if note is None:
            return _Answer(404, {"message": "404 Note Not Found"})
        body = (payload or {}).get("body") or ""
        if not body or len(body) > GITLAB_BODY_LIMIT:
            return _Answer(400, {"message": {"note": ["is too long (maximum is 1000000 characters)"]}})
        note.update(body=body, updated_at=_now())
        return _Answer(200, dict(note))


@pytest.fixture
def fake_forge() -> Iterator[FakeForge]:
    """A started :class:`FakeForge`, stopped after the test."""
    with FakeForge() as forge:
        yield forge


def closed_port_url() -> str:
    """An ``http://127.0.0.1:PORT`` nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


__all__ = ["ENDPOINTS", "FakeForge", "RecordedRequest", "closed_port_url", "fake_forge"]
