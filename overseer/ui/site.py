"""The web UI (SPEC §12): its routes under ``/ui/``, who may use them, and how its answers are made.

The API's request gate hands every path under ``/ui`` (and ``/``, which redirects here) to
``WebUi.handle`` after its own Host and origin checks. Here: the session check (only when
``server.tokens`` is set; the login page and the static files are open), the CSRF check of
every POST, then one page or action. Pages read through the API's own read paths (its handlers'
answers, or the same System and Store calls); actions make the same System calls as the API,
with the same checks. Nothing here writes to the Store.

Errors are pages (or, for a request of the page's scripts, a fragment) that say what is wrong,
with the status the API would answer; a bug is logged with its traceback and answered 500.
"""
from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any, Callable, Optional
from urllib.parse import quote

from overseer.http import errors
from overseer.http.errors import HttpError
from overseer.http.request import Request, Response, body_values, error_response

from . import actions, pages
from .auth import CSRF_FIELD, CSRF_HEADER, Auth, Session
from .static import StaticFiles
from .views import make_environment

log = logging.getLogger(__name__)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
HTML_HEADERS = [("Content-Type", "text/html; charset=utf-8"), ("Content-Security-Policy", CSP),
                ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                ("Referrer-Policy", "same-origin")]

# path after /ui/ (None: any segment) -> method -> handler(page, *the variable segments)
ROUTES: list[tuple[tuple[Optional[str], ...], dict[str, Callable]]] = [
    ((), {"GET": pages.jobs}),
    (("runs",), {"GET": pages.runs}),
    (("repo",), {"GET": pages.repo}),
    (("repo", "sync"), {"POST": actions.sync}),
    (("login",), {"GET": pages.login, "POST": actions.login}),
    (("logout",), {"POST": actions.logout}),
    (("jobs", None), {"GET": pages.job, "POST": actions.run}),
    (("jobs", None, "active"), {"POST": actions.activate}),
    (("jobs", None, None), {"GET": pages.execution}),
    (("jobs", None, None, "event"), {"POST": actions.event}),
    (("jobs", None, None, "repeat"), {"POST": actions.repeat}),
    (("jobs", None, None, "stream"), {"GET": pages.stream}),
    (("jobs", None, None, None), {"GET": pages.output}),
]
SCRIPTED = ("stream", "stdout", "stderr", "output")  # last segments of what the page's scripts read


class Page:
    """One request of the UI, as the handlers see it: the request, the session, how to answer."""

    def __init__(self, ui: WebUi, req: Request, session: Optional[Session]):
        self.ui, self.req, self.session = ui, req, session
        self._form: Optional[dict] = None

    @property
    def api(self) -> Any:
        return self.ui.api

    @property
    def system(self) -> Any:
        return self.ui.api.system

    @property
    def htmx(self) -> bool:
        return self.req.header("HX-Request") == "true"

    @property
    def csrf(self) -> str:
        return self.ui.auth.csrf(self.session)

    def form(self) -> dict:
        if self._form is None:
            self._form, _ = body_values(self.req, self.api.max_body)
        return self._form

    def api_json(self, handler: str, *args: str) -> Any:
        """What the API's own handler answers for this request (its read path, its checks)."""
        resp = getattr(self.api, handler)(self.req, *args)
        return json.loads(resp.body)

    def render(self, template: str, status: int = 200, headers: list | None = None,
               **context: Any) -> Response:
        body = self.ui.env.get_template(template).render(
            page=self, csrf=self.csrf, auth_required=self.ui.auth.required, session=self.session,
            **context).encode("utf-8")
        return Response(status, [*HTML_HEADERS, ("Content-Length", str(len(body))), *(headers or [])], body)

    def redirect(self, location: str, headers: list | None = None) -> Response:
        if self.htmx:  # htmx follows this itself, as a new page
            return Response(200, [("HX-Redirect", location), ("Content-Length", "0"), *(headers or [])], b"")
        return Response(303, [("Location", location), ("Content-Length", "0"), *(headers or [])], b"")


class WebUi:
    """The web UI of one API (``overseer.http.app.Api``): its sessions, templates and files."""

    def __init__(self, api: Any):
        self.api = api
        self.auth = Auth(api.tokens, api.base_url.startswith("https:"))
        self.static = StaticFiles()
        self.env = make_environment(self.static.url)

    @staticmethod
    def claims(path: str) -> bool:
        return path == "/" or path == "/ui" or path.startswith("/ui/")

    def handle(self, req: Request) -> Response:
        if req.path in ("/", "/ui"):
            return Response(303, [("Location", "/ui/"), ("Content-Length", "0")], b"")
        segments = req.segments()
        if segments is None or segments[0] != "ui":
            return self._error(req, None, errors.not_found(f"no page at {req.path!r}"))
        rest = segments[1:]
        session = self.auth.session(req.header("Cookie")) if self.auth.required else None
        page = Page(self, req, session)
        try:
            return self._route(page, rest)
        except Exception as exc:
            err = errors.from_exception(exc)
            if err is None:
                log.exception("%s %s failed", req.method, req.path)
                err = HttpError(500, "internal server error (the server log has the details)")
            return self._error(req, page, err)

    def _route(self, page: Page, rest: list[str]) -> Response:
        req = page.req
        if rest[:1] == ["static"]:
            return self._static("/".join(rest[1:]))
        pattern, methods = _match(rest)
        if pattern is None:
            raise errors.not_found(f"no page at {req.path!r}")
        method = "GET" if req.method == "HEAD" else req.method
        handler = methods.get(method)
        if handler is None:
            allowed = sorted(methods) + (["HEAD"] if "GET" in methods else [])
            raise errors.method_not_allowed(req.method, allowed)
        if self.auth.required and page.session is None and rest[:1] != ["login"]:
            if method == "GET" and not _scripted(req):
                return page.redirect("/ui/login?next=" + quote(_here(req), safe="/"))
            raise errors.unauthorized("log in first: the session has ended or is missing")
        if method == "POST":
            self._check_csrf(page)
        return handler(page, *[s for p, s in zip(pattern, rest) if p is None])

    def _check_csrf(self, page: Page) -> None:
        given = page.req.header(CSRF_HEADER)
        if given is None:
            value = page.form().get(CSRF_FIELD)
            given = value if isinstance(value, str) else None
        if not self.auth.csrf_ok(page.session, given):
            raise HttpError(403, "the form's CSRF token is missing or stale: reload the page and try again")

    def _static(self, name: str) -> Response:
        found = self.static.get(name)
        if found is None:
            raise errors.not_found(f"no file {name!r}")
        data, kind, _ = found
        return Response(200, [("Content-Type", kind), ("Content-Length", str(len(data))),
                              ("Cache-Control", "public, max-age=31536000, immutable"),
                              ("X-Content-Type-Options", "nosniff")], data)

    def _error(self, req: Request, page: Optional[Page], err: HttpError) -> Response:
        if page is None or _scripted(req):
            return error_response(err)  # JSON, as the API answers: scripts read it
        if page.htmx:
            return page.render("_alert.html", err.status, err.headers, message=err.message)
        return page.render("error.html", err.status, err.headers, code=err.status,
                           phrase=HTTPStatus(err.status).phrase, message=err.message)


def _match(rest: list[str]) -> tuple[Any, dict[str, Callable]]:
    for pattern, methods in ROUTES:
        if len(pattern) == len(rest) and all(p is None or p == s for p, s in zip(pattern, rest)):
            return pattern, methods
    return None, {}


def _scripted(req: Request) -> bool:
    """A request of the page's scripts (live updates, log bytes) rather than of the browser."""
    segments = req.segments() or []
    return len(segments) == 5 and segments[1] == "jobs" and segments[-1] in SCRIPTED


def _here(req: Request) -> str:
    query = req.environ.get("QUERY_STRING")
    return req.path + (f"?{query}" if query else "")
