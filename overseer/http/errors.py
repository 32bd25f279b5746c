"""The one mapping of errors to HTTP answers (SPEC §6).

Handlers raise the domain exceptions of ``overseer.exceptions`` (or an
``HttpError`` for what only HTTP knows: body size, media type, auth, methods);
the app turns each into ``{"error": message}`` with the status below. Anything
else is a bug, a bare ``ValueError`` included (input errors are ParamErrors where
they are found): it is logged with its traceback and answered 500, never as an
HTML page.
"""
from __future__ import annotations

import json
from typing import Optional

from overseer.exceptions import (
    Conflict,
    JobDefinitionError,
    NotFound,
    ParamError,
    QueueFull,
    StoreBusy,
)

# Seconds a client should wait before retrying when every LMDB reader slot is taken.
STORE_BUSY_RETRY = 1


class HttpError(Exception):
    """An answer other than success, with its status, message and extra headers."""

    def __init__(self, status: int, message: str, headers: Optional[list[tuple[str, str]]] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers or [])


def bad_request(message: str) -> HttpError:
    return HttpError(400, message)


def unauthorized(message: str = "missing or wrong bearer token") -> HttpError:
    return HttpError(401, message, [("WWW-Authenticate", 'Bearer realm="overseer"')])


def forbidden_host(host: str) -> HttpError:
    return HttpError(403, f"Host {host!r} is not a loopback name; without server.tokens only loopback "
                          f"names are served (DNS rebinding protection)")


def cross_origin(reason: str) -> HttpError:
    return HttpError(403, f"cross-origin request refused: {reason}; a request that changes something "
                          f"must come from this server's own origin, or from outside a browser")


def not_found(message: str = "no such resource") -> HttpError:
    return HttpError(404, message)


def method_not_allowed(method: str, allowed: list[str]) -> HttpError:
    return HttpError(405, f"method {method} is not allowed here (allowed: {', '.join(allowed)})",
                     [("Allow", ", ".join(allowed))])


def too_large(limit: int) -> HttpError:
    return HttpError(413, f"the request body is larger than {limit} bytes (server.max_body_bytes)")


def unsupported_media(content_type: str) -> HttpError:
    return HttpError(415, f"unsupported Content-Type {content_type!r}: send application/json, "
                          f"application/x-www-form-urlencoded or multipart/form-data")


def too_many_follows(limit: int) -> HttpError:
    return HttpError(503, f"{limit} output streams are being followed already (server.max_follows); "
                          f"retry later or read without follow", [("Retry-After", "5")])


def from_exception(exc: BaseException) -> Optional[HttpError]:
    """The answer for a known exception, or None for a bug (answered 500 by the caller)."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, (ParamError, JobDefinitionError)):
        return HttpError(400, str(exc))
    if isinstance(exc, NotFound):
        return HttpError(404, str(exc))
    if isinstance(exc, Conflict):
        return HttpError(409, str(exc))
    if isinstance(exc, QueueFull):
        return HttpError(503, str(exc), [("Retry-After", str(max(1, int(exc.retry_after))))])
    if isinstance(exc, StoreBusy):
        return HttpError(503, str(exc), [("Retry-After", str(STORE_BUSY_RETRY))])
    return None


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False).encode("utf-8")
