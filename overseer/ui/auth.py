"""Who may use the web UI (SPEC §12): a session after a login with an API token, and a CSRF
token on every state-changing request.

With ``server.tokens`` set, ``/ui/login`` asks for one of the tokens once; a right one makes a
session, kept in this process's memory and named by a random cookie (``HttpOnly``,
``SameSite=Strict``, ``Path=/ui``, ``Secure`` when ``server.base_url`` is https). The cookie
authorises the UI's own routes only: the API still takes ``Authorization: Bearer`` alone. A
session ends at logout, after ``IDLE`` without a request, after ``LIFETIME`` in all, or when
the server restarts.

Every POST of the UI carries a CSRF token (a hidden form field, or the ``X-CSRF-Token``
header of the page's scripts): an HMAC, under a key made at start, of the session (or, without
tokens, of the anonymous user). A page of another site can neither read it nor guess it.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger(__name__)

COOKIE = "overseer_session"
IDLE = 12 * 3600  # seconds without a request before a session ends
LIFETIME = 7 * 86400  # seconds a session lasts at most
MAX_SESSIONS = 10_000  # the oldest is dropped beyond this
ANONYMOUS = "anonymous"  # whom the CSRF token is made for when no tokens are set
CSRF_FIELD = "_csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass
class Session:
    ident: str  # the cookie's value
    who: str  # which token logged in ("token 2"): never the token itself
    started: float
    seen: float


class Auth:
    """The sessions of one server, and the CSRF tokens of its pages."""

    def __init__(self, tokens: tuple[bytes, ...], secure: bool):
        self.tokens = tokens
        self.secure = secure
        self._key = secrets.token_bytes(32)
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        return bool(self.tokens)

    # -- tokens and sessions ---------------------------------------------------------------------
    def token_name(self, given: str) -> Optional[str]:
        """Which configured token ``given`` is ("token N"), or None. Constant time over all."""
        raw = given.strip().encode("utf-8", "replace")
        found = None
        for index, token in enumerate(self.tokens, 1):  # no early exit: the time tells nothing
            if hmac.compare_digest(raw, token) and raw:
                found = f"token {index}"
        return found

    def login(self, who: str) -> Session:
        now = time.monotonic()
        session = Session(secrets.token_urlsafe(32), who, now, now)
        with self._lock:
            self._sessions[session.ident] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session

    def logout(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.ident, None)

    def session(self, cookie_header: Optional[str]) -> Optional[Session]:
        """The live session the request's cookie names, or None."""
        ident = cookie_value(cookie_header, COOKIE)
        if not ident:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(ident)
            if session is None:
                return None
            if now - session.seen > IDLE or now - session.started > LIFETIME:
                del self._sessions[ident]
                return None
            session.seen = now
            self._sessions.move_to_end(ident)
        return session

    def cookie(self, session: Optional[Session]) -> str:
        """The Set-Cookie value that keeps ``session`` (or, for None, removes the cookie)."""
        value, age = (session.ident, LIFETIME) if session else ("", 0)
        secure = "; Secure" if self.secure else ""
        return f"{COOKIE}={value}; Path=/ui; Max-Age={age}; HttpOnly; SameSite=Strict{secure}"

    # -- CSRF --------------------------------------------------------------------------------------
    def csrf(self, session: Optional[Session]) -> str:
        subject = session.ident if session else ANONYMOUS
        return hmac.new(self._key, b"csrf\0" + subject.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Optional[Session], given: Optional[str]) -> bool:
        return bool(given) and hmac.compare_digest(given.encode("ascii", "replace"),
                                                   self.csrf(session).encode("ascii"))


def cookie_value(header: Optional[str], name: str) -> Optional[str]:
    """The value of cookie ``name`` in a Cookie header (the first one), or None."""
    if not header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"') or None
    return None
