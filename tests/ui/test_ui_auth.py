"""The web UI with ``server.tokens`` set (SPEC §12): a login page asks for a token once, the
session is an HttpOnly SameSite=Strict cookie that opens the UI's routes and nothing of the API,
and a page of another site can make no state change, even with the victim signed in. A real
server, a real Chromium, and a hostile page served from another port of 127.0.0.1 (the same
site, so SameSite does not keep the cookie from it: the CSRF token must)."""
from __future__ import annotations

import http.server
import logging
import threading
import time

import pytest

from ..waiting import wait_finished
from .ui_browser import _browser, _page, _ui  # noqa: F401 - the fixtures

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

TOKEN = "s3cret-t0ken-for-the-ui"
JOBS = {"hello.yml": {"command": "echo hello {{ who }}", "vars": [{"name": "who", "default": "world"}]}}


def login(a, session, token: str = TOKEN, target: str = "/ui/"):
    """A login as a browser makes it: the login page, then its form posted with its CSRF token."""
    page = session.get(f"{a.base}/ui/login?next={target}", timeout=30)
    csrf = page.text.split('name="_csrf" value="')[1].split('"')[0]
    return session.post(f"{a.base}/ui/login", data={"_csrf": csrf, "token": token, "next": target},
                        allow_redirects=False, timeout=30)


def test_login_with_a_token_in_a_real_browser(ui, page):
    a = ui(JOBS, server={"tokens": ["another-token", TOKEN]})
    page.goto(f"{a.base}/ui/jobs/hello")
    expect(page).to_have_url(f"{a.base}/ui/login?next=/ui/jobs/hello")
    page.get_by_label("Token").fill("not-it")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That is not a token of this server.")
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{a.base}/ui/jobs/hello")  # where it was going
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["overseer_session"]
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict" and cookies[0]["path"] == "/ui"
    assert TOKEN not in cookies[0]["value"]
    expect(page.locator(".who")).to_have_text("token 2")
    page.get_by_role("button", name="Run").click()  # a POST with the session and its CSRF token
    expect(page).to_have_url(f"{a.base}/ui/jobs/hello/1")
    expect(page.get_by_role("log")).to_contain_text("hello world")
    page.goto(f"{a.base}/ui/")  # asked once: every page opens now
    expect(page.locator(".jobs-table")).to_contain_text("hello")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{a.base}/ui/login")
    page.goto(f"{a.base}/ui/")
    expect(page).to_have_url(f"{a.base}/ui/login?next=/ui/")


def test_the_session_opens_the_ui_and_nothing_of_the_api(ui, caplog):
    a = ui(JOBS, server={"tokens": [TOKEN]})
    caplog.set_level(logging.INFO)
    anonymous = a.new_session()
    for path in ("/ui/", "/ui/jobs/hello", "/ui/runs", "/ui/repo"):
        r = anonymous.get(a.base + path, allow_redirects=False, timeout=30)
        assert r.status_code == 303 and r.headers["Location"].startswith("/ui/login?next="), path
    assert anonymous.get(f"{a.base}/ui/jobs/hello/1/stream", timeout=30).status_code == 401
    assert anonymous.get(f"{a.base}/ui/jobs/hello/1/stdout", timeout=30).status_code == 401
    assert anonymous.get(f"{a.base}/ui/static/overseer.css", timeout=30).status_code == 200
    wrong = login(a, anonymous, "wrong")
    assert wrong.status_code == 401 and "overseer_session" not in wrong.headers.get("Set-Cookie", "")
    browser = a.new_session()
    r = login(a, browser, target="/ui/jobs/hello")
    assert r.status_code == 303 and r.headers["Location"] == "/ui/jobs/hello"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert browser.get(f"{a.base}/ui/jobs/hello", timeout=30).status_code == 200
    session_id = browser.cookies["overseer_session"]
    for path in ("/jobs", "/jobs/hello", "/repo", "/executions"):  # the cookie is no API credential
        r = anonymous.get(a.base + path, headers={"Cookie": f"overseer_session={session_id}"},
                          timeout=30)
        assert r.status_code == 401, path
    cookie_only = {"Cookie": f"overseer_session={session_id}"}
    r = anonymous.post(f"{a.base}/jobs/hello", headers=cookie_only, timeout=30)
    assert r.status_code == 401 and a.system.executions("hello") == []
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert anonymous.get(f"{a.base}/jobs", headers=bearer, timeout=30).status_code == 200  # as before
    assert login(a, a.new_session(), target="https://evil.example/").headers["Location"] == "/ui/"
    assert login(a, a.new_session(), target="//evil.example/x").headers["Location"] == "/ui/"
    page = browser.get(f"{a.base}/ui/", timeout=30).text
    csrf = page.split('<meta name="csrf-token" content="')[1].split('"')[0]
    out = browser.post(f"{a.base}/ui/logout", data={"_csrf": csrf}, allow_redirects=False, timeout=30)
    assert out.status_code == 303 and "Max-Age=0" in out.headers["Set-Cookie"]
    stale = a.new_session()
    stale.cookies.set("overseer_session", session_id, path="/ui")
    assert stale.get(f"{a.base}/ui/", allow_redirects=False, timeout=30).status_code == 303  # ended
    logged = caplog.text
    assert TOKEN not in logged and session_id not in logged
    assert "web UI: token 1 logged in from 127.0.0.1" in logged
    assert "a login from 127.0.0.1 with a wrong token" in logged


class HostileSite:
    """A page of another origin (another port of 127.0.0.1) that tries what a page can do
    without CORS: forms posted to the UI's actions, and fetches."""

    def __init__(self, target: str):
        forms = "".join(
            f'<form id="f{i}" method="post" action="{target}{path}" target="sink{i}">'
            + "".join(f'<input name="{k}" value="{v}">' for k, v in fields.items())
            + f'</form><iframe name="sink{i}"></iframe>'
            for i, (path, fields) in enumerate([
                ("/ui/jobs/hello", {"var:who": "forged"}),
                ("/ui/jobs/hello/active", {"active": "false"}),
                ("/ui/jobs/hello/1/repeat", {}),
                ("/ui/repo/sync", {}),
            ]))
        script = ("<script>for (const f of document.forms) f.submit();"
                  f"fetch('{target}/ui/jobs/hello', {{method: 'POST', credentials: 'include',"
                  " mode: 'no-cors', headers: {'Content-Type': 'application/x-www-form-urlencoded'},"
                  " body: 'var:who=fetched'})"
                  ".finally(() => document.title = 'done');</script>")
        body = f"<!doctype html><title>hostile</title>{forms}{script}".encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_page_of_another_site_changes_nothing_while_the_user_is_signed_in(ui, page):
    a = ui(JOBS, server={"tokens": [TOKEN]})
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert a.post("/jobs/hello", headers=bearer).status_code == 201
    wait_finished(a.system, "hello", 1)
    synced = a.system.repo_info()["synced_at"]
    page.goto(f"{a.base}/ui/login")
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".jobs-table")).to_be_visible()
    hostile = HostileSite(a.base)
    answers = []
    page.on("response", lambda r: r.request.method == "POST" and r.url.startswith(a.base)
            and answers.append((r.url, r.status)))
    try:
        page.goto(hostile.url)
        expect(page).to_have_title("done")
        deadline = time.monotonic() + 20
        while len(answers) < 5 and time.monotonic() < deadline:  # the forms' answers, as they come
            page.wait_for_timeout(50)
    finally:
        hostile.close()
    assert len(answers) >= 5 and all(status == 403 for _, status in answers), answers
    assert [r["id"] for r in a.system.executions("hello")] == [1] and a.system.is_active("hello")
    assert a.system.repo_info()["synced_at"] == synced
