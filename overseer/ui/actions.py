"""The UI's actions (POST, each behind the CSRF check): run, activate and deactivate, signal,
repeat, sync, login and logout.

Each makes the System call the API makes, with its checks: a refusal is the API's own message,
shown next to the form or the buttons, with the API's status. Nothing here writes to the Store.
"""
from __future__ import annotations

import logging
from typing import Any

from overseer.exceptions import Conflict, JobDefinitionError, ParamError, QueueFull
from overseer.http import errors
from overseer.http.request import Response
from overseer.model import executions as ex

from . import forms, pages

log = logging.getLogger(__name__)

SIGNALS = tuple(ex.SIGNAL_EVENTS)  # stop, continue, terminate, kill: the page's buttons
REFUSALS = (ParamError, JobDefinitionError, Conflict, QueueFull)


def _one(form: dict, key: str) -> str:
    value = form.get(key)
    if isinstance(value, list):
        raise errors.bad_request(f"{key} must be given once")
    return value if isinstance(value, str) else ""


def run(page: Any, name: str) -> Response:
    job = page.system.job(name)  # 404 before the form is read
    form = page.form()
    try:
        record = page.system.trigger(name, forms.values(job.vars, form), from_strings=True)
    except REFUSALS as exc:
        refusal = errors.from_exception(exc)
        if page.htmx:
            return page.render("_run_form.html", refusal.status, refusal.headers, spec=job,
                               fields=forms.fields(job.vars, form), error=refusal.message,
                               job={"name": name, "active": page.system.is_active(name)})
        return pages.job(page, name, error=refusal.message, posted=form, status=refusal.status)
    log.info("job %s: execution %s started from the web UI", name, record["id"])
    return page.redirect(f"/ui/jobs/{name}/{record['id']}")


def activate(page: Any, name: str) -> Response:
    wanted = _one(page.form(), "active")
    if wanted not in ("true", "false"):
        raise errors.bad_request("active must be true or false")
    page.system.set_active(name, wanted == "true")
    return page.redirect(f"/ui/jobs/{name}")


def event(page: Any, name: str, ident: str) -> Response:
    number = page.api._ident(name, ident)
    wanted = _one(page.form(), "event")
    if wanted not in SIGNALS:
        raise errors.bad_request(f"event must be one of {', '.join(SIGNALS)}, not {wanted[:64]!r}")
    page.system.create_event(name, number, wanted, None)
    if page.htmx:  # the page's live updates show the effect; an earlier refusal goes away
        return page.render("_alert.html", 200, message="")
    return page.redirect(f"/ui/jobs/{name}/{number}")


def repeat(page: Any, name: str, ident: str) -> Response:
    number = page.api._ident(name, ident)
    page.system.job(name)
    record = page.system.repeat(name, number)
    return page.redirect(f"/ui/jobs/{name}/{record['id']}")


def sync(page: Any) -> Response:
    page.system.request_sync()
    return page.redirect("/ui/repo")


def login(page: Any) -> Response:
    auth = page.ui.auth
    if not auth.required:
        return page.redirect("/ui/")
    form = page.form()
    target = pages.safe_next(_one(form, "next"))
    who = auth.token_name(_one(form, "token"))
    remote = page.req.environ.get("REMOTE_ADDR", "-")
    if who is None:
        log.warning("web UI: a login from %s with a wrong token", remote)
        return pages.login(page, error="That is not a token of this server.", status=401, target=target)
    session = auth.login(who)
    log.info("web UI: %s logged in from %s", who, remote)
    return page.redirect(target, [("Set-Cookie", auth.cookie(session))])


def logout(page: Any) -> Response:
    if page.session is not None:
        page.ui.auth.logout(page.session)
        log.info("web UI: %s logged out", page.session.who)
    return page.redirect("/ui/login" if page.ui.auth.required else "/ui/",
                         [("Set-Cookie", page.ui.auth.cookie(None))])
