"""One HTTP exchange with a forge: stdlib ``urllib``, a deadline, retries, no token leaks.

Every failure becomes a :class:`ForgeRequestError` whose ``kind`` tells the caller what
went wrong (``http`` with a status, ``timeout``, ``unreachable``, ``malformed``, ``budget``)
so it can say what to fix. Server errors (5xx), timeouts and refused connections are
retried on the project's backoff (:func:`~defer_orchestration.lib.backoff.backoff_delays`)
while the report's :class:`Deadline` allows; a 4xx is an answer, not a hiccup, and is not.

Redirects are followed only to the same scheme, host and port: urllib would otherwise
carry the ``Authorization`` header to whatever host a redirect names.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Literal
from urllib.parse import urlsplit

from defer_orchestration.lib.backoff import backoff_delays

ErrorKind = Literal["http", "timeout", "unreachable", "malformed", "budget"]
#: Characters of a server's error message kept in a warning.
_DETAIL_LIMIT = 300
REDACTED = "***"


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every occurrence of every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True)
class Deadline:
    """When a whole report must be done: shared by its requests, so retries of one
    request cannot push the report past its budget. Immutable, hence thread-safe."""

    end: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        """A deadline ``seconds`` from now."""
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.end - self.clock())


class ForgeRequestError(Exception):
    """A request to the forge did not get the answer we need. Internal to the forge
    package: the reporting code turns it into a warning."""

    def __init__(self, kind: ErrorKind, detail: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(kind)
        self.kind: ErrorKind = kind
        self.detail = detail
        self.status = status
        self.attempts = attempts

    def __str__(self) -> str:
        # Built from the fields, which the sender redacts, rather than from ``args``.
        return f"{self.kind}{f' {self.status}' if self.status else ''}: {self.detail}"

    @property
    def retryable(self) -> bool:
        """Worth another try: the forge or the network may recover within seconds."""
        return self.kind in ("timeout", "unreachable") or (self.kind == "http" and (self.status or 0) >= 500)


@dataclass(frozen=True)
class Response:
    """A forge's answer: status, headers (lower-case names) and raw body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        """The body as JSON; a :class:`ForgeRequestError` (``malformed``) when it is not."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            snippet = self.body[:80].decode("utf-8", "replace")
            raise ForgeRequestError(
                "malformed", f"answered {self.status} with a body that is not JSON ({snippet!r})", status=self.status
            ) from None


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only when it stays on the same origin (the token travels along)."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        old, new = urlsplit(req.full_url), urlsplit(newurl)
        if (old.scheme, old.netloc) != (new.scheme, new.netloc):
            return None  # urllib then raises the 3xx as an HTTPError
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameOriginRedirects())


def server_message(body: bytes) -> str:
    """The human part of a forge's error body (``message``/``error``), or its first characters."""
    text = body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("message", "error", "error_description"):
            if parsed.get(key):
                value = parsed[key]
                text = value if isinstance(value, str) else json.dumps(value)
                break
    text = " ".join(text.split())
    return text[:_DETAIL_LIMIT] + ("…" if len(text) > _DETAIL_LIMIT else "")


def _once(method: str, url: str, headers: Mapping[str, str], data: bytes | None, timeout_s: float) -> Response:
    request = urllib.request.Request(url, data=data, headers=dict(headers), method=method)
    try:
        with _OPENER.open(request, timeout=timeout_s) as answer:
            return Response(answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read())
    except urllib.error.HTTPError as error:
        try:
            body = error.read()
        except (OSError, http.client.HTTPException):
            body = b""
        return Response(error.code, {k.lower(): v for k, v in (error.headers or {}).items()}, body)
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise ForgeRequestError("timeout", f"no answer within {timeout_s:g} s") from None
        raise ForgeRequestError("unreachable", str(reason)) from None
    except (TimeoutError, socket.timeout):
        raise ForgeRequestError("timeout", f"no answer within {timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as error:
        raise ForgeRequestError("unreachable", str(error) or type(error).__name__) from None


def send(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    payload: Any = None,
    timeout_s: float,
    deadline: Deadline,
    secrets: tuple[str, ...],
    sleep: Callable[[float], None] = time.sleep,
) -> Response:
    """Send one request, retrying 5xx, timeouts and refused connections while ``deadline``
    allows; return a 2xx response or raise :class:`ForgeRequestError` (token redacted)."""
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    if data is not None:
        headers = {**headers, "Content-Type": "application/json"}
    delays: Iterator[float] | None = None
    attempts = 0
    last: ForgeRequestError | None = None
    while True:
        remaining = deadline.remaining()
        if remaining <= 0:
            if last is not None:
                raise last
            raise ForgeRequestError("budget", "no time left in the report's budget", attempts=0)
        attempts += 1
        try:
            response = _once(method, url, headers, data, min(timeout_s, remaining))
            if 200 <= response.status < 300:
                return response
            raise ForgeRequestError(
                "http", redact(server_message(response.body), secrets) or "(empty body)", status=response.status
            )
        except ForgeRequestError as error:
            error.detail = redact(error.detail, secrets)
            error.attempts = attempts
            if not error.retryable:
                raise
            last = error
            if delays is None:
                delays = backoff_delays(deadline.remaining())
            delay = next(delays, None)
            if delay is None:
                raise
            sleep(delay)
