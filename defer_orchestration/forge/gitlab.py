"""GitLab (gitlab.com or self-managed; the API lives at ``https://HOST/api/v4``).

Endpoints:
- ``POST /projects/:id/statuses/:sha``: commit status (``state`` pending, running, success,
  failed or canceled; ``name``; ``target_url``; ``description``).
- ``GET /projects/:id/merge_requests?source_branch=X&state=opened``: the branch's merge request.
- ``GET /projects/:id/merge_requests/:iid/notes?per_page=100``, following ``X-Next-Page``.
- ``POST /projects/:id/merge_requests/:iid/notes`` and
  ``PUT /projects/:id/merge_requests/:iid/notes/:note_id``: create and edit one note.

``:id`` is the numeric id or the URL-encoded path (``group%2Fname``).

GitLab keeps one status per name while it is pending or running and refuses a repeated
transition (``400 Cannot transition status via :run from :running``): a status already in
the state we ask for is what we wanted, so that answer counts as posted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from urllib.parse import quote, urlencode

from defer_orchestration.forge.base import MAX_PAGES, STATUS_CONTEXT, Comment, ForgeClient, Phase, ReviewRequest
from defer_orchestration.forge.http import ForgeRequestError

# The run has started when we first post, so "running" (GitLab has both words).
_STATES: dict[Phase, str] = {"pending": "running", "success": "success", "failure": "failed"}


class GitLabClient(ForgeClient):
    """GitLab's REST API (v4) for one project."""

    name = "GitLab"
    request_noun = "merge request"
    comment_limit = 1_000_000  # GitLab's limit on a note's body

    def auth_headers(self) -> Mapping[str, str]:
        """A personal, project or group access token."""
        return {"PRIVATE-TOKEN": self.settings.token.reveal(), "Accept": "application/json"}

    @property
    def _project(self) -> str:
        return f"/projects/{quote(self.settings.project, safe='')}"

    def status_state(self, phase: Phase) -> str:
        """GitLab's word for ``phase`` (``running`` while the run runs, ``failed``)."""
        return _STATES[phase]

    def post_status(self, sha: str, phase: Phase, description: str, target_url: str | None) -> str:
        """``POST /projects/:id/statuses/:sha``; a refused repeat of the same state counts as posted."""
        state = self.status_state(phase)
        payload = {"state": state, "name": STATUS_CONTEXT, "description": description}
        if target_url:
            payload["target_url"] = target_url
        try:
            answer = self.json(self.call("POST", f"{self._project}/statuses/{quote(sha, safe='')}", payload))
        except ForgeRequestError as error:
            if error.status == 400 and "cannot transition status" in error.detail.lower() and f":{state}" in error.detail:
                return state
            raise
        return str(self.field(answer, "status", str))

    def find_open_request(self, branch: str) -> ReviewRequest | None:
        """``GET /projects/:id/merge_requests?source_branch=X&state=opened``: the lowest iid."""
        query = urlencode({"source_branch": branch, "state": "opened", "per_page": 100})
        found_json = self.json(self.call("GET", f"{self._project}/merge_requests?{query}"))
        items = found_json if isinstance(found_json, list) else [found_json]
        found = [ReviewRequest(self.field(m, "iid", int), self.field(m, "web_url", str)) for m in items]
        return min(found, key=lambda r: r.number) if found else None

    def comments(self, request: ReviewRequest) -> Iterator[Comment]:
        """``GET .../merge_requests/:iid/notes?per_page=100``, following ``X-Next-Page``;
        system notes ("added 1 commit") are skipped."""
        base = f"{self._project}/merge_requests/{request.number}/notes?per_page=100"
        page: str | None = "1"
        pages = 0
        while page and pages < MAX_PAGES:
            pages += 1
            response = self.call("GET", base if page == "1" else f"{base}&page={quote(page, safe='')}")
            notes = self.json(response)
            for item in notes if isinstance(notes, list) else [notes]:
                if isinstance(item, dict) and item.get("system"):
                    continue
                yield self._note(request, item)
            page = (response.headers.get("x-next-page") or "").strip() or None

    def create_comment(self, request: ReviewRequest, body: str) -> Comment:
        """``POST .../merge_requests/:iid/notes``."""
        answer = self.json(self.call("POST", f"{self._project}/merge_requests/{request.number}/notes", {"body": body}))
        return self._note(request, answer)

    def update_comment(self, request: ReviewRequest, comment_id: int, body: str) -> Comment:
        """``PUT .../merge_requests/:iid/notes/:note_id``."""
        path = f"{self._project}/merge_requests/{request.number}/notes/{comment_id}"
        return self._note(request, self.json(self.call("PUT", path, {"body": body})))

    def _note(self, request: ReviewRequest, item: object) -> Comment:
        note_id = self.field(item, "id", int)
        body = item.get("body") if isinstance(item, dict) else None
        # A note has no URL of its own in the API: it is an anchor on the merge request's page.
        return Comment(note_id, body or "", f"{request.url}#note_{note_id}")
