"""The REST API (SPEC §6): one WSGI application, grafted onto CherryPy's tree by ``server``.

Each request passes one gate, in this order: the Host check (only when no tokens
are set: DNS rebinding protection), the origin check of every state-changing
request (CSRF, with or without tokens: ``_check_origin``), the bearer token
check (only when tokens are set; ``/health`` is always open; a ``POST /repo/sync``
that carries a git host's push signature is judged by that signature instead, when
``repository.sync_secret`` is set: ``push_signature``). Then routing on
path segments (404, 405 with ``Allow``), then one thin handler that parses the
query and body, makes one call into the System or a read of its Store, and
answers JSON. Errors are mapped in one place, ``overseer.http.errors``; nothing
ever reaches the client as an HTML page. How a request is framed, and whether
it is all in, is decided before it gets here (``overseer.http.head_wait``).

Job names and execution ids from the path are only compared and used as
Store keys; they never name a file.
"""
from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from collections.abc import Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import quote

from overseer.exceptions import NotFound, ParamError
from overseer.model import executions as ex
from overseer.model.job import JOB_NAME_RE, MAX_JOB_NAME
from overseer.repo.fields import redact_hooks
from overseer.ui import WebUi

from . import errors, push_signature, recent
from .errors import HttpError
from .output import OutputRoutes
from .request import (
    Request,
    Response,
    body_values,
    error_response,
    host_is_loopback,
    json_response,
    origin_of,
    read_body,
)

log = logging.getLogger(__name__)
access_log = logging.getLogger("overseer.http.access")

OPENAPI = Path(__file__).resolve().parent / "openapi.json"
ID_RE = re.compile(r"[0-9]{1,18}\Z")
EVENT_BODY = '{"event": NAME, "cause": TEXT}'
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))  # the methods that change nothing
SAME_SITE = frozenset(("same-origin", "none"))  # Sec-Fetch-Site of a page of ours, or the user's own

# path pattern (None = a variable segment) -> method -> handler name
ROUTES: list[tuple[tuple[Optional[str], ...], dict[str, str]]] = [
    (("health",), {"GET": "health"}),
    (("openapi.json",), {"GET": "openapi"}),
    (("jobs",), {"GET": "list_jobs"}),
    (("executions",), {"GET": "list_executions"}),
    (("jobs", None), {"GET": "get_job", "POST": "trigger", "PUT": "activate", "DELETE": "deactivate"}),
    (("jobs", None, None), {"GET": "get_execution", "POST": "repeat", "PUT": "create_event"}),
    (("jobs", None, None, None), {"GET": "get_output_or_event"}),
    (("repo",), {"GET": "repo"}),
    (("repo", "sync"), {"POST": "sync"}),
]


class Api(OutputRoutes):
    """The WSGI application over one running System."""

    def __init__(self, system: Any, config: Any):
        self.system = system
        self.base_url = config.base_url
        self.origin = origin_of(self.base_url)
        server = config.server
        self.tokens = tuple(t.encode("utf-8") for t in server.tokens)
        self.max_body = server.max_body_bytes
        self.sync_secret = config.repository.sync_secret
        self.max_follows = min(server.max_follows, max(1, server.thread_pool - 2))
        if self.max_follows < server.max_follows:
            log.warning("server.max_follows %d lowered to %d so that %d HTTP worker threads stay free "
                        "for other requests (server.thread_pool %d)", server.max_follows, self.max_follows,
                        server.thread_pool - self.max_follows, server.thread_pool)
        self.closing = threading.Event()  # set by the server on stop: open follows end
        self._follows = 0
        self._follow_lock = threading.Lock()
        self._openapi = OPENAPI.read_bytes()
        self.ui = WebUi(self)

    # -- WSGI ------------------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.monotonic()
        req = Request(environ)
        try:
            resp = self.handle(req)
        except Exception as exc:  # every error becomes JSON, bugs included
            err = errors.from_exception(exc)
            if err is None:
                log.exception("%s %s failed", req.method, req.path)
                err = HttpError(500, "internal server error (the server log has the details)")
            resp = error_response(err)
        cached = any(name == "Cache-Control" for name, _ in resp.headers)  # the UI's static files
        no_store = () if cached else (("Cache-Control", "no-store"),)
        headers = [*resp.headers, *no_store, ("Server", "overseer")]
        start_response(f"{resp.status} {HTTPStatus(resp.status).phrase}", headers)
        query = environ.get("QUERY_STRING")
        level = logging.DEBUG if req.path == "/health" and resp.status < 400 else logging.INFO  # probes
        access_log.log(level, "%s %s %s%s %d %.1fms", environ.get("REMOTE_ADDR", "-"), req.method, req.path,
                       f"?{query}" if query else "", resp.status, (time.monotonic() - started) * 1000)
        if req.method == "HEAD":
            if hasattr(resp.body, "close"):
                resp.body.close()
            return []
        return [resp.body] if isinstance(resp.body, bytes) else resp.body

    def handle(self, req: Request) -> Response:
        if not self.tokens:
            host = req.header("Host")
            if host is not None and not host_is_loopback(host):
                raise errors.forbidden_host(host)
        if req.method not in SAFE_METHODS:
            self._check_origin(req)
        segments = req.segments()
        if self.ui.claims(req.path):
            return self.ui.handle(req)  # the web UI: its pages, its session check (overseer/ui)
        if self.sync_secret is not None and segments == ["repo", "sync"] and req.method == "POST" \
                and push_signature.present(req):
            push_signature.verify(req, read_body(req, self.max_body), self.sync_secret)
        elif self.tokens and segments != ["health"]:
            self._check_token(req)
        if segments is None:
            raise errors.not_found(f"no resource at {req.path!r}")
        pattern, methods = _route(segments)
        if pattern is None:
            raise errors.not_found(f"no resource at {req.path!r}")
        name = methods.get("GET" if req.method == "HEAD" else req.method)
        if name is None:
            allowed = sorted(methods) + (["HEAD"] if "GET" in methods else [])
            raise errors.method_not_allowed(req.method, allowed)
        args = [s for p, s in zip(pattern, segments) if p is None]
        return getattr(self, name)(req, *args)

    def _check_origin(self, req: Request) -> None:
        """Refuse a state-changing request that a browser sent for a page of another origin
        (CSRF, SPEC §12): its ``Origin`` is not ours; or, without one, its ``Sec-Fetch-Site`` is
        not ``same-origin`` or ``none``; or, without either, its ``Referer`` is not of our
        origin. Ours: ``http://`` and the request's Host, or the origin of ``base_url``. A request
        with none of the three (curl, the CLI, webhooks of git hosts) is not a browser's."""
        origin = req.header("Origin")
        if origin is not None:
            if not self._own(origin_of(origin), req):
                raise errors.cross_origin(f"Origin {_shown(origin)} is not this server's origin "
                                          f"({self._origins(req)})")
            return
        site = req.header("Sec-Fetch-Site")
        if site is not None:
            if site.strip().lower() not in SAME_SITE:
                raise errors.cross_origin(f"Sec-Fetch-Site is {_shown(site)}, not same-origin")
            return
        referer = req.header("Referer")
        if referer is not None and not self._own(origin_of(referer), req):
            raise errors.cross_origin(f"the Referer is not a page of this server's origin "
                                      f"({self._origins(req)})")

    def _own(self, origin: Optional[str], req: Request) -> bool:
        if origin is None:
            return False
        if origin == self.origin:
            return True
        host = req.header("Host")
        return host is not None and origin == origin_of("http://" + host)

    def _origins(self, req: Request) -> str:
        host = req.header("Host")
        own = {o for o in (self.origin, origin_of("http://" + host) if host else None) if o}
        return " or ".join(sorted(own))

    def _check_token(self, req: Request) -> None:
        scheme, _, value = (req.header("Authorization") or "").strip().partition(" ")
        given = value.strip().encode("latin-1", "replace")
        if scheme.lower() != "bearer" or not given:
            if push_signature.present(req):
                raise errors.unauthorized("missing or wrong bearer token (a git host's push signature "
                                          "opens POST /repo/sync only, and only with "
                                          "repository.sync_secret set)")
            raise errors.unauthorized()
        ok = False
        for token in self.tokens:  # no early exit: the time taken does not tell which token matched
            ok |= hmac.compare_digest(given, token)
        if not ok:
            raise errors.unauthorized()

    # -- handlers --------------------------------------------------------------------------------
    def health(self, req: Request) -> Response:
        return json_response(200, {"status": "ok"})

    def openapi(self, req: Request) -> Response:
        return Response(200, [("Content-Type", "application/json"),
                              ("Content-Length", str(len(self._openapi)))], self._openapi)

    def list_jobs(self, req: Request) -> Response:
        system, base = self.system, self.base_url
        jobs = []
        for job in system.jobs():
            last = system.store.last_summary(job.name)  # its metadata but its events: read no further
            jobs.append({"name": job.name, "description": job.description,
                         "active": system.is_active(job.name),
                         "schedule": list(job.definition.get("schedule") or []),
                         "url": f"{base}/jobs/{quote(job.name)}",
                         "last_execution": ex.public(last, base) if last else None})
            if (stale := system.stale(job.name)) is not None:
                jobs[-1]["stale"] = stale
        return json_response(200, {"jobs": jobs})

    def list_executions(self, req: Request) -> Response:
        records, before = self.system.store.recent_executions(recent.parse_query(req))
        return json_response(200, {"executions": [ex.public(r, self.base_url) for r in records],
                                   "next": recent.next_link(self.base_url, req, before)})

    def get_job(self, req: Request, name: str) -> Response:
        job = self.system.job(name)
        limit = req.int_param("limit", 20, 1, 1000)
        before = req.int_param("before", None, 1)
        records = self.system.executions(name, limit=limit, before=before)
        body = {
            "name": job.name, "file": job.file, "commit": job.commit, "active": self.system.is_active(name),
            "definition": _public_definition(job.definition), "next_runs": self.system.next_runs(job),
            "executions": [ex.public(r, self.base_url) for r in records]}
        if (stale := self.system.stale(name)) is not None:
            body["stale"] = stale
        return json_response(200, body)

    def trigger(self, req: Request, name: str) -> Response:
        self.system.job(name)  # 404 before reading a body
        values, from_strings = body_values(req, self.max_body)
        return self._created(self.system.trigger(name, values, from_strings=from_strings))

    def activate(self, req: Request, name: str) -> Response:
        return json_response(200, self.system.set_active(name, True))

    def deactivate(self, req: Request, name: str) -> Response:
        return json_response(200, self.system.set_active(name, False))

    def get_execution(self, req: Request, name: str, ident: str) -> Response:
        return json_response(200, ex.public(self._record(name, ident), self.base_url))

    def repeat(self, req: Request, name: str, ident: str) -> Response:
        number = self._ident(name, ident)
        self.system.job(name)  # 404 for a name that is no job, before the Store sees it
        return self._created(self.system.repeat(name, number))

    def create_event(self, req: Request, name: str, ident: str) -> Response:
        number = self._ident(name, ident)
        self.system.job(name)
        values, from_strings = body_values(req, self.max_body)
        unknown = sorted(set(values) - {"event", "cause"})
        if unknown:
            raise errors.bad_request(f"unknown key {unknown[0]!r}: the body is {EVENT_BODY}")
        if "event" not in values:
            raise errors.bad_request(f"the body must name the event: {EVENT_BODY}")
        if from_strings and any(isinstance(v, list) for v in values.values()):
            raise errors.bad_request("event and cause must be given once each")
        event = self.system.create_event(name, number, values["event"], values.get("cause"))
        return json_response(202, event)

    def get_output_or_event(self, req: Request, name: str, ident: str, what: str) -> Response:
        record = self._record(name, ident)
        if what in ex.STREAMS:
            return self._output(req, record, what)
        try:
            ex.check_event_name(what)
        except ParamError:
            raise errors.not_found(f"no event {what!r}") from None
        found = ex.occurrences(record, what)
        if not found:
            raise errors.not_found(f"execution {name}/{record['id']} has no event {what!r}")
        return json_response(200, {"name": what, "occurrences": found})

    def repo(self, req: Request) -> Response:
        return json_response(200, self.system.repo_info())

    def sync(self, req: Request) -> Response:
        self.system.request_sync()
        return json_response(202, {"status": "sync requested"})

    # -- helpers ---------------------------------------------------------------------------------
    def _created(self, record: dict) -> Response:
        location = f"/jobs/{quote(record['job'])}/{record['id']}"
        return json_response(201, ex.public(record, self.base_url), [("Location", location)])

    def _ident(self, name: str, ident: str) -> int:
        if not ID_RE.match(ident) or int(ident) == 0:
            raise NotFound(f"job {name!r} has no execution {ident!r}")
        return int(ident)

    def _record(self, name: str, ident: str) -> dict:
        """The stored execution (still served after its job left the repository)."""
        if len(name) > MAX_JOB_NAME or not JOB_NAME_RE.match(name):
            raise NotFound(f"no job named {name!r}")
        return self.system.execution(name, self._ident(name, ident))



def _public_definition(definition: Any) -> Any:
    """The job's document as the API shows it: webhook URLs without credentials or query (as
    the log shows them)."""
    if "hooks" not in definition:
        return definition
    return {**definition, "hooks": redact_hooks(definition["hooks"])}


def _shown(value: str) -> str:
    """A header value in an error message: quoted, and cut short."""
    return repr(value if len(value) <= 100 else value[:100] + "...")


def _route(segments: list[str]) -> tuple[Any, dict[str, str]]:
    for pattern, methods in ROUTES:
        if len(pattern) == len(segments) and all(p is None or p == s for p, s in zip(pattern, segments)):
            return pattern, methods
    return None, {}
