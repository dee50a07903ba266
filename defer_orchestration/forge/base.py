"""The small interface every forge implements (like ``warehouse/base.py``): a commit
status on a sha, the branch's open pull/merge request, and its comments.

A forge is one module (:mod:`.github`, :mod:`.gitlab`) implementing :class:`ForgeClient`;
the reporting logic in :mod:`.report` speaks only this interface. A client is built per
report and holds no mutable state, so reports may run in threads side by side.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from defer_orchestration.forge.http import Deadline, ForgeRequestError, Response, redact, send
from defer_orchestration.forge.settings import ForgeSettings

#: What a report says about a commit, whatever the forge calls it.
Phase = Literal["pending", "success", "failure"]
#: The status name (GitHub ``context``, GitLab ``name``) a branch run posts under.
STATUS_CONTEXT = "defer-orchestration"
#: Comment pages followed at most (the marker comment is usually on the first).
MAX_PAGES = 50


@dataclass(frozen=True)
class ReviewRequest:
    """An open pull request (GitHub) or merge request (GitLab)."""

    number: int  # GitHub ``number``, GitLab ``iid``
    url: str


@dataclass(frozen=True)
class Comment:
    """A pull-request comment or merge-request note."""

    id: int
    body: str
    url: str


class ForgeClient(ABC):
    """A forge's REST API, reduced to the five calls a branch report needs."""

    #: The forge's name in messages ("GitHub").
    name: str
    #: What the forge calls a request to merge ("pull request").
    request_noun: str
    #: The longest comment body the forge accepts, in characters.
    comment_limit: int
    #: The longest status description we send.
    description_limit: int = 140

    def __init__(self, settings: ForgeSettings, deadline: Deadline) -> None:
        self.settings = settings
        self.deadline = deadline

    @abstractmethod
    def auth_headers(self) -> Mapping[str, str]:
        """The headers that authenticate a request (they carry the token)."""

    @abstractmethod
    def status_state(self, phase: Phase) -> str:
        """The forge's word for ``phase``."""

    @abstractmethod
    def post_status(self, sha: str, phase: Phase, description: str, target_url: str | None) -> str:
        """Set the ``defer-orchestration`` status of ``sha``; the state posted."""

    @abstractmethod
    def find_open_request(self, branch: str) -> ReviewRequest | None:
        """The branch's open pull/merge request (the oldest when several), or None."""

    @abstractmethod
    def comments(self, request: ReviewRequest) -> Iterator[Comment]:
        """The request's comments, page after page (stop iterating to stop fetching)."""

    @abstractmethod
    def create_comment(self, request: ReviewRequest, body: str) -> Comment:
        """Post a new comment on ``request``."""

    @abstractmethod
    def update_comment(self, request: ReviewRequest, comment_id: int, body: str) -> Comment:
        """Replace the body of an existing comment."""

    # -- shared plumbing ------------------------------------------------------------

    def call(self, method: str, url: str, payload: Any = None) -> Response:
        """One authenticated request (``url`` absolute or relative to the API URL)."""
        if not url.startswith(("http://", "https://")):
            url = self.settings.api_url + url
        return send(
            method,
            url,
            headers={**self.auth_headers(), "User-Agent": "defer-orchestration"},
            payload=payload,
            timeout_s=self.settings.timeout_s,
            deadline=self.deadline,
            secrets=(self.settings.token.reveal(),),
        )

    def json(self, response: Response) -> Any:
        """``response``'s JSON body; a redacted ``malformed`` error when it is not JSON."""
        try:
            return response.json()
        except ForgeRequestError as error:
            error.detail = redact(error.detail, (self.settings.token.reveal(),))
            raise

    def field(self, document: Any, key: str, kind: type) -> Any:
        """``document[key]`` checked to be a ``kind``: a forge (or something posing as one)
        answering another shape is a ``malformed`` error, not a ``KeyError`` deep inside."""
        value = document.get(key) if isinstance(document, dict) else None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ForgeRequestError(
                "malformed", f"answered without the expected {key!r} ({kind.__name__}) in its JSON"
            )
        return value

    def same_origin(self, url: str) -> bool:
        """Whether ``url`` (a pagination link) points at our API host: the token goes nowhere else."""
        return url.split("/", 3)[:3] == self.settings.api_url.split("/", 3)[:3]
