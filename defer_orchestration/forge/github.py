"""GitHub (and GitHub Enterprise, whose API lives at ``https://HOST/api/v3``).

Endpoints (REST API version 2022-11-28):
- ``POST /repos/{owner}/{repo}/statuses/{sha}``: commit status (``state`` pending, success,
  failure or error; ``context``; ``target_url``; ``description``).
- ``GET /repos/{owner}/{repo}/pulls?head={owner}:{branch}&state=open``: the branch's pull request.
- ``GET /repos/{owner}/{repo}/issues/{number}/comments?per_page=100``, following
  ``Link: <…>; rel="next"``: its conversation comments.
- ``POST /repos/{owner}/{repo}/issues/{number}/comments`` and
  ``PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}``: create and edit one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from urllib.parse import quote, urlencode

from defer_orchestration.forge.base import MAX_PAGES, STATUS_CONTEXT, Comment, ForgeClient, Phase, ReviewRequest

_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


def next_link(header: str | None) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header, or None on the last page."""
    match = _NEXT_LINK.search(header or "")
    return match.group(1) if match else None


class GitHubClient(ForgeClient):
    """GitHub's REST API for one repository."""

    name = "GitHub"
    request_noun = "pull request"
    comment_limit = 65_536  # GitHub refuses a longer issue comment body

    def auth_headers(self) -> Mapping[str, str]:
        """Bearer token, JSON media type and the API version we were written against."""
        return {
            "Authorization": f"Bearer {self.settings.token.reveal()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    @property
    def _repo(self) -> str:
        owner, name = self.settings.project.split("/", 1)
        return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"

    def status_state(self, phase: Phase) -> str:
        """GitHub's states are our phases."""
        return phase

    def post_status(self, sha: str, phase: Phase, description: str, target_url: str | None) -> str:
        """``POST /repos/{o}/{r}/statuses/{sha}``."""
        payload = {"state": self.status_state(phase), "context": STATUS_CONTEXT, "description": description}
        if target_url:
            payload["target_url"] = target_url
        answer = self.json(self.call("POST", f"{self._repo}/statuses/{quote(sha, safe='')}", payload))
        return str(self.field(answer, "state", str))

    def find_open_request(self, branch: str) -> ReviewRequest | None:
        """``GET /repos/{o}/{r}/pulls?head=owner:branch&state=open``: the lowest-numbered one,
        so the same pull request keeps the comment from push to push."""
        owner = self.settings.project.split("/", 1)[0]
        query = urlencode({"head": f"{owner}:{branch}", "state": "open", "per_page": 100})
        pulls = self.json(self.call("GET", f"{self._repo}/pulls?{query}"))
        if not isinstance(pulls, list):
            pulls = [pulls]  # field() below reports the shape
        found = [ReviewRequest(self.field(p, "number", int), self.field(p, "html_url", str)) for p in pulls]
        return min(found, key=lambda r: r.number) if found else None

    def comments(self, request: ReviewRequest) -> Iterator[Comment]:
        """``GET /repos/{o}/{r}/issues/{n}/comments?per_page=100``, following ``Link`` next."""
        url: str | None = f"{self._repo}/issues/{request.number}/comments?per_page=100"
        pages = 0
        while url and pages < MAX_PAGES:
            pages += 1
            response = self.call("GET", url)
            page = self.json(response)
            for item in page if isinstance(page, list) else [page]:
                yield self._comment(item)
            url = next_link(response.headers.get("link"))
            if url and not self.same_origin(url):
                url = None  # never send the token to another host

    def create_comment(self, request: ReviewRequest, body: str) -> Comment:
        """``POST /repos/{o}/{r}/issues/{n}/comments``."""
        answer = self.json(self.call("POST", f"{self._repo}/issues/{request.number}/comments", {"body": body}))
        return self._comment(answer)

    def update_comment(self, request: ReviewRequest, comment_id: int, body: str) -> Comment:
        """``PATCH /repos/{o}/{r}/issues/comments/{id}``."""
        answer = self.json(self.call("PATCH", f"{self._repo}/issues/comments/{comment_id}", {"body": body}))
        return self._comment(answer)

    def _comment(self, item: object) -> Comment:
        body = item.get("body") if isinstance(item, dict) else None
        return Comment(self.field(item, "id", int), body or "", self.field(item, "html_url", str))
