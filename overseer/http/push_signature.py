"""Push webhooks of git hosts on ``POST /repo/sync``: signed with ``repository.sync_secret``.

A git host's push webhook cannot carry a bearer token. When ``repository.sync_secret`` is set,
a ``POST /repo/sync`` that carries one of the hosts' signature headers is judged by it instead:

- ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body, keyed with the secret>`` (GitHub,
  Gitea, Forgejo);
- ``X-Gitlab-Token: <the secret>`` (GitLab).

Each header the request carries must be right (compared in constant time); then it passes
without a bearer token. A wrong one is 401 whatever else the request carries, and the message
names the header, never what was expected. Only that route: a signature opens nothing else.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Optional

from . import errors
from .request import Request

GITHUB = "X-Hub-Signature-256"
GITLAB = "X-Gitlab-Token"
HEADERS = (GITHUB, GITLAB)
PREFIX = "sha256="


def present(req: Request) -> list[str]:
    """The signature headers ``req`` carries."""
    return [name for name in HEADERS if req.header(name) is not None]


def verify(req: Request, body: bytes, secret: str) -> None:
    """Return when every signature header of ``req`` is right for ``body`` and ``secret``;
    raise a 401 naming the first one that is not."""
    key = secret.encode("utf-8")
    for name in present(req):
        given = _raw(req.header(name))
        if name == GITHUB:
            expected = (PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()).encode("ascii")
            ok = hmac.compare_digest(given.lower(), expected)
        else:
            ok = hmac.compare_digest(given, key)
        if not ok:
            raise errors.unauthorized(_refusal(name))


def _raw(value: Optional[str]) -> bytes:
    """A header's bytes as they came (WSGI gives them decoded as latin-1), spaces around cut."""
    return (value or "").strip().encode("latin-1", "replace")


def _refusal(name: str) -> str:
    if name == GITHUB:
        return (f"the push's {GITHUB} is not the HMAC-SHA256 of its body with repository.sync_secret "
                f"(expected the form {PREFIX}HEX)")
    return f"the push's {GITLAB} is not repository.sync_secret"
