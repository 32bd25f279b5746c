"""``GET /executions``: the query of the executions of every job, newest first, and the link to
the next page.

Each filter (``job``, ``status``, ``trigger``, ``state``) takes one value or several separated by
commas (none of these values can hold a comma); an empty one is no filter. ``before`` is an ISO
8601 time: only executions created strictly before it (a time out of the calendar's range in UTC
is its first or last moment). A value that is not of its kind is a 400 that names the parameter;
``overseer/http/openapi.json`` gives each a pattern that every value it matches passes here.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Optional
from urllib.parse import urlencode

from overseer.model import executions as ex
from overseer.model.job import JOB_NAME_RE
from overseer.model.vars import parse_iso8601
from overseer.store.recent import RecentQuery

from . import errors
from .request import Request

STATES = ("queued", "running", "stopped", "finished")
TRIGGER_RE = re.compile(r"[a-z][a-z_-]{0,31}\Z")
LEAP_SECOND = re.compile(r"([Tt ]\d\d:\d\d:)60")
MAX_NAME = 255
FILTERS = ("job", "status", "trigger", "state")


def _values(req: Request, name: str) -> Optional[frozenset]:
    raw = req.param(name)
    if raw is None or not raw.strip():
        return None
    return frozenset(v.strip() for v in raw.split(",") if v.strip())


def _check(name: str, values: Optional[frozenset], ok, what: str) -> None:
    for value in sorted(values or ()):
        if not ok(value):
            shown = value if len(value) <= 80 else value[:80] + "..."
            raise errors.bad_request(f"{name}: {shown!r} is not {what}")


def parse_query(req: Request) -> RecentQuery:
    """The query of a ``GET /executions`` request (400 naming the parameter at fault)."""
    jobs, statuses = _values(req, "job"), _values(req, "status")
    triggers, states = _values(req, "trigger"), _values(req, "state")
    _check("job", jobs, lambda v: len(v) <= MAX_NAME and JOB_NAME_RE.match(v), "a job name")
    _check("status", statuses, ex.EVENT_NAME.match, "an event name")  # stdout, say: no run has it
    _check("trigger", triggers, TRIGGER_RE.match, "a trigger (api, schedule, repeat, ...)")
    _check("state", states, lambda v: v in STATES, "a state (" + ", ".join(STATES) + ")")
    limit = req.int_param("limit", 20, 1, 1000)
    return RecentQuery(jobs=jobs, statuses=statuses, triggers=triggers, states=states, limit=limit,
                       before=_before(req.param("before")))


def _before(raw: Optional[str]) -> Optional[str]:
    if raw is None or not raw.strip():
        return None
    try:
        moment = parse_iso8601(LEAP_SECOND.sub(r"\g<1>59", raw))  # 23:59:60 is the second before
    except ValueError:
        raise errors.bad_request(f"before: {raw[:80]!r} is not an ISO 8601 time "
                                 f"(the 'next' link of a page gives it)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        moment = moment.astimezone(timezone.utc)
    except OverflowError:  # year 1 or 9999 with an offset: past the calendar's end in UTC
        moment = (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=timezone.utc)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"  # as created_at is


def next_link(base_url: str, req: Request, before: Optional[str]) -> Optional[str]:
    """The URL of the page after this one, with the same filters; None at the end."""
    if before is None:
        return None
    params = [(name, req.param(name)) for name in (*FILTERS, "limit")]
    params = [(k, v) for k, v in params if v]
    return f"{base_url}/executions?{urlencode([*params, ('before', before)])}"
