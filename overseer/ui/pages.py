"""The UI's pages (GET): jobs, a job, an execution, the repository, recent runs, the login; and
what the execution page's scripts read (its live updates, its output).

Each reads through the API's read path: the API handler's own answer (``Page.api_json``:
the same checks, the same public form of a record), or, for the jobs list, the same System
calls as ``GET /jobs`` for the rows shown.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import parse_qs, urlencode, urlsplit

from overseer.exceptions import NotFound
from overseer.http import errors
from overseer.http.output import Streamed, disconnect_probe
from overseer.http.request import Response
from overseer.model import executions as ex

from . import forms
from .stream import execution_updates
from .views import run_seconds

JOBS_PER_PAGE = 100
RECENT_DOTS = 12  # the last runs drawn beside each job on the jobs page
TRIGGERS = ("api", "schedule", "repeat", "retry", "chain")
STATUS_CHOICES = (("", "any status"), ("complete", "complete"), ("fail,time-out,lost", "failed (any)"),
                  ("fail", "fail"), ("time-out", "time-out"), ("lost", "lost"))
STATE_CHOICES = (("", "any state"), ("running,stopped", "running"), ("queued", "queued"),
                 ("finished", "finished"))


@dataclass(frozen=True)
class JobRow:
    name: str
    description: str
    active: bool
    scheduled: bool
    last: Optional[dict]
    recent: list  # oldest first
    next_run: Optional[str]


def jobs(page: Any) -> Response:
    req, system = page.req, page.system
    query = (req.param("q") or "").strip()
    number = req.int_param("page", 1, 1, 1_000_000)
    everything = system.jobs()
    if query:
        needle = query.lower()
        matching = [j for j in everything
                    if needle in j.name.lower() or needle in (j.description or "").lower()]
    else:
        matching = everything
    pages_count = max(1, -(-len(matching) // JOBS_PER_PAGE))
    shown = matching[(number - 1) * JOBS_PER_PAGE: number * JOBS_PER_PAGE]
    rows = []
    for job in shown:
        recent = [ex.public(r) for r in system.executions(job.name, limit=RECENT_DOTS)]
        active = system.is_active(job.name)
        next_runs = system.next_runs(job, 1) if job.schedule and active else []
        rows.append(JobRow(job.name, job.description or "", active, bool(job.schedule),
                           recent[0] if recent else None, recent[::-1], next_runs[0] if next_runs else None))
    repo = system.repo_info()
    return page.render("jobs.html", rows=rows, query=query, total=len(everything), matching=len(matching),
                       number=number, pages_count=pages_count, repo=repo,
                       inactive=sum(1 for j in everything if not system.is_active(j.name)))


def job(page: Any, name: str, error: Optional[str] = None, posted: Optional[dict] = None,
        status: int = 200) -> Response:
    definition = page.system.job(name)  # 404 for no such job
    data = page.api_json("get_job", name)
    history = data["executions"]
    longest = max([d for d in (run_seconds(r) for r in history) if d is not None] or [0])
    limit = page.req.int_param("limit", 20, 1, 1000)
    older = history[-1]["id"] if len(history) == limit and history[-1]["id"] > 1 else None
    return page.render("job.html", status, job=data, spec=definition, history=history, longest=longest,
                       older=older, newer=page.req.param("before") is not None,
                       fields=forms.fields(definition.vars, posted), error=error,
                       schedule=list(data["definition"].get("schedule") or []))


def execution(page: Any, name: str, ident: str) -> Response:
    run = page.api_json("get_execution", name, ident)
    try:
        page.system.job(name)
        job_exists = True
    except NotFound:
        job_exists = False
    store = page.system.store
    sizes = {s: store.output_size(name, run["id"], s) for s in ("stdout", "stderr")}
    return page.render("execution.html", run=run, job_exists=job_exists, sizes=sizes,
                       total=sizes["stdout"] + sizes["stderr"])


def stream(page: Any, name: str, ident: str) -> Response:
    """The page's live updates (Server-Sent Events), in one of the follow slots."""
    api = page.api
    record = api._record(name, ident)  # 404 before a slot is taken
    seen = _last_event(page.req)
    if not api._take_follow():
        raise errors.too_many_follows(api.max_follows)
    body = execution_updates(api, name, record["id"], seen, disconnect_probe(page.req.environ))
    return Response(200, [("Content-Type", "text/event-stream; charset=utf-8"), ("X-Accel-Buffering", "no")],
                    Streamed(body, api._release_follow))


def output(page: Any, name: str, ident: str, stream_name: str) -> Response:
    """The raw bytes of ``stdout``, ``stderr`` or ``output``: the API's own output route
    (``?offset=``, ``?follow=``), under the UI's session; ``?download=1`` saves it as a file."""
    if stream_name not in ex.STREAMS:
        raise errors.not_found(f"no page at {page.req.path!r}")
    record = page.api._record(name, ident)
    resp = page.api._output(page.req, record, stream_name)
    if page.req.bool_param("download"):
        filename = f"{record['job']}-{record['id']}-{stream_name}.log"
        resp.headers.append(("Content-Disposition", f'attachment; filename="{filename}"'))
    return resp


def repo(page: Any) -> Response:
    return page.render("repo.html", repo=page.api_json("repo"))


def runs(page: Any) -> Response:
    req = page.req
    data = page.api_json("list_executions")
    older = None
    if data["next"]:
        older = parse_qs(urlsplit(data["next"]).query).get("before", [None])[0]
    filters = {k: req.param(k) or "" for k in ("job", "status", "trigger", "state")}
    chosen = {k: v for k, v in filters.items() if v}
    older_link = "?" + urlencode({**chosen, "before": older}) if older else None
    names = [j.name for j in page.system.jobs()]
    return page.render("runs.html", runs=data["executions"], filters=filters, older_link=older_link,
                       newest_link="/ui/runs" + ("?" + urlencode(chosen) if chosen else ""),
                       newer=req.param("before") is not None, job_names=names if len(names) <= 2000 else [],
                       status_choices=STATUS_CHOICES, state_choices=STATE_CHOICES, triggers=TRIGGERS)


def login(page: Any, error: Optional[str] = None, status: int = 200,
          target: Optional[str] = None) -> Response:
    target = target or safe_next(page.req.param("next"))
    if not page.ui.auth.required or (page.session is not None and error is None):
        return page.redirect(target)
    return page.render("login.html", status, error=error, next=target)


def safe_next(target: Optional[str]) -> str:
    """Where to go after the login: a page of the UI, never another site."""
    if not target or not target.startswith("/ui/") or "//" in target or "\\" in target \
            or any(ord(c) < 32 for c in target):
        return "/ui/"
    return target


def _last_event(req: Any) -> int:
    raw = req.header("Last-Event-ID") or req.param("last_event_id") or "0"
    raw = raw.strip()
    return int(raw) if raw.isdigit() and len(raw) <= 9 else 0

