"""Cross-site request forgery (SPEC §12): a state-changing request that a browser sends for a page of
another origin is 403, with or without tokens, and changes nothing. First the header rules over
HTTP (``Origin``, else ``Sec-Fetch-Site``, else ``Referer``), then a real Chromium on a hostile
page served from another port of 127.0.0.1 (same-site, so ``SameSite`` cookies would not help)
that submits forms and ``fetch``es to the API the ways a page can without CORS."""
from __future__ import annotations

import http.server
import logging
import re
import threading

import pytest

from ..served import Api, error_of
from ..ui.ui_browser import CHROMIUM_ARGS, chromium
from ..waiting import wait_for

JOBS = {"hello.yml": {"command": "echo hello {{ who }}", "vars": [{"name": "who", "default": "world"}]}}
STATE_CHANGES = [("POST", "/jobs/hello"), ("POST", "/jobs/hello/1"), ("PUT", "/jobs/hello/1"),
                 ("PUT", "/jobs/hello"), ("DELETE", "/jobs/hello"), ("POST", "/repo/sync"),
                 ("PATCH", "/jobs/hello"), ("POST", "/jobs/nope")]
ACCESS_LINE = re.compile(r"\S+ (\S+) (\S+) (\d{3}) ")


@pytest.fixture
def served(serve):
    def start(**server) -> Api:
        return Api(*serve(JOBS, server=server))

    return start


def state(a: Api) -> tuple:
    """Everything a forged request could change: executions, their events, activation, the
    repository's sync."""
    records = a.system.executions("hello", limit=100)
    return ([(r["id"], [e["name"] for e in r["events"]]) for r in records], a.system.is_active("hello"),
            a.system.repo_info()["synced_at"])


def one_finished_run(a: Api) -> tuple:
    assert a.post("/jobs/hello").status_code == 201
    a.finished("hello", 1)
    return state(a)


def test_cross_origin_state_changes_are_403_whatever_the_header(served):
    a = served()
    port = a.port
    own = f"http://127.0.0.1:{port}"
    before = one_finished_run(a)
    foreign = [{"Origin": "http://evil.example"}, {"Origin": "null"},
               {"Origin": f"http://127.0.0.1:{port + 1}"}, {"Origin": f"https://127.0.0.1:{port}"},
               {"Origin": f"http://localhost:{port}"},
               {"Origin": "not a url"}, {"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "cross-site"},
               {"Sec-Fetch-Site": "whatever"}, {"Referer": "http://evil.example/page.html?x=1"},
               {"Referer": f"http://127.0.0.1:{port + 1}/"}, {"Referer": "about:blank"},
               # an own Referer does not make up for a foreign Origin or Sec-Fetch-Site
               {"Origin": "http://evil.example", "Referer": own + "/"},
               {"Sec-Fetch-Site": "cross-site", "Referer": own + "/"}]
    for method, path in STATE_CHANGES:
        for headers in foreign:
            r = a.session.request(method, a.base + path, headers=headers, timeout=30)
            assert r.status_code == 403, (method, path, headers, r.text)
            assert "cross-origin request refused" in error_of(r)
    r = a.post("/jobs/hello", headers={"Origin": "http://evil.example"})
    assert "'http://evil.example' is not this server's origin (http://127.0.0.1:" in error_of(r)
    assert state(a) == before
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):  # reads pass
        for path in ("/jobs", "/jobs/hello", "/jobs/hello/1/stdout", "/health"):
            assert a.get(path, headers=headers).status_code == 200
        assert a.session.options(a.base + "/jobs/hello", headers=headers, timeout=30).status_code == 405
    # own origin, or no browser at all: served
    for headers in ({}, {"Origin": own}, {"Origin": own.upper()}, {"Sec-Fetch-Site": "same-origin"},
                    {"Sec-Fetch-Site": "none"}, {"Referer": own + "/ui/jobs/hello"},
                    {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"}):
        r = a.post("/jobs/hello", json={"who": "me"}, headers=headers)
        assert r.status_code == 201, (headers, r.text)
    assert a.delete("/jobs/hello", headers={"Origin": own}).status_code == 200
    assert a.put("/jobs/hello", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200


def test_cross_origin_is_refused_with_tokens_too_and_base_url_is_own(served):
    a = served(tokens=["s3cret"], base_url="https://jobs.example.com/overseer")
    auth = {"Authorization": "Bearer s3cret"}
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Referer": "https://evil.example/"}):
        status, _, body = a.raw("POST", "/jobs/hello", {**auth, **headers})
        assert status == 403 and b"cross-origin request refused" in body
    assert a.system.executions("hello") == []
    status, _, _ = a.raw("POST", "/jobs/hello", {**auth, "Host": "jobs.example.com",
                                                 "Origin": "https://jobs.example.com"})
    assert status == 201  # the origin of base_url (behind a TLS proxy)
    status, _, _ = a.raw("POST", "/jobs/hello", {**auth, "Origin": "https://jobs.example.com:443",
                                                 "Referer": "https://evil.example/"})
    assert status == 201


# -- a real browser ----------------------------------------------------------------------------------

HOSTILE_PAGE = """<!doctype html>
<html><head><title>cute cats</title></head><body>
<iframe name="t1"></iframe><iframe name="t2"></iframe><iframe name="t3"></iframe><iframe name="t4"></iframe>
<form method="POST" action="@API@/jobs/hello" target="t1"><input name="who" value="csrf-form"></form>
<form method="POST" action="@API@/jobs/hello" target="t2" enctype="multipart/form-data">
  <input name="who" value="csrf-multipart"></form>
<form method="POST" action="@API@/jobs/hello/1" target="t3"></form>
<form method="POST" action="@API@/repo/sync" target="t4"></form>
<script>
const API = "@API@";
function send(path, init) {
  return fetch(API + path, init).then(r => "answered " + r.type, e => "blocked " + e.name);
}
function submitted(form) {  // one at a time: the answer loads in the form's own frame
  return new Promise(resolve => {
    document.querySelector(`iframe[name="${form.target}"]`).addEventListener(
      "load", () => resolve("loaded"), {once: true});
    form.submit();
  });
}
window.addEventListener("load", async () => {
  for (const form of document.forms) await submitted(form);
  const multipart = new FormData();
  multipart.append("who", "csrf-fetch-multipart");
  window.results = await Promise.all([
    send("/jobs/hello", {mode: "no-cors", method: "POST", body: multipart}),
    send("/jobs/hello", {mode: "no-cors", method: "POST", body: new URLSearchParams({who: "csrf-fetch"})}),
    send("/jobs/hello", {mode: "no-cors", method: "POST", body: '{"who": "csrf-text"}',
                         headers: {"Content-Type": "text/plain"}}),
    send("/jobs/hello/1", {mode: "no-cors", method: "POST", body: multipart}),
    send("/repo/sync", {mode: "no-cors", method: "POST"}),
    send("/jobs/hello/1", {method: "PUT", body: '{"event": "csrf"}',
                           headers: {"Content-Type": "application/json"}}),
    send("/jobs/hello", {method: "DELETE"}),
  ]);
});
</script></body></html>"""
# what reaches the API of the page's requests: 5 triggers (2 forms, 3 fetches), 2 repeats, 2 syncs,
# and the CORS preflights of the PUT and the DELETE (which the browser does not send after them)
EXPECTED = sorted([("POST", "/jobs/hello")] * 5 + [("POST", "/jobs/hello/1")] * 2
                  + [("POST", "/repo/sync")] * 2 + [("OPTIONS", "/jobs/hello/1"), ("OPTIONS", "/jobs/hello")])


class HostilePage:
    """A real HTTP server on another port of 127.0.0.1 that serves the page."""

    def __init__(self, api_base: str):
        page = HOSTILE_PAGE.replace("@API@", api_base).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cats.html"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.browser
def test_a_hostile_page_in_a_real_chromium_changes_nothing(served, job_repo, caplog):
    executable = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is a test dependency: pip install -e '.[test]' (scripts/bootstrap does)")
    caplog.set_level(logging.INFO, logger="overseer.http.access")
    a = served()
    before = one_finished_run(a)
    job_repo.commit({"late.yml": {"command": "true"}}, "a job only a sync would load")
    since = len(caplog.records)

    def reached() -> list[tuple[str, str, int]]:
        lines = [ACCESS_LINE.match(r.getMessage()) for r in caplog.records[since:]
                 if r.name == "overseer.http.access"]
        return [(m.group(1), m.group(2), int(m.group(3))) for m in lines if m]

    page_server = HostilePage(a.base)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(page_server.url)
                page.wait_for_function("window.results !== undefined", timeout=30000)
                results = page.evaluate("window.results")
                wait_for(lambda: sorted((m, p) for m, p, _ in reached()) == EXPECTED, timeout=30,
                         what=f"the page's requests to reach the API (so far {reached()})")
            finally:
                browser.close()
    finally:
        page_server.close()
    assert results[:5] == ["answered opaque"] * 5, results  # sent, the answer unreadable to the page
    assert [r.split()[0] for r in results[5:]] == ["blocked", "blocked"], results  # no CORS for them
    for method, path, status in reached():
        assert status == (405 if method == "OPTIONS" else 403), (method, path, status)
    # the repository actor has handled all it was asked (a sync would come before this answer)
    a.system.supervisor.proxy().child("repo_sync").get(timeout=10).proxy().ping().get(timeout=30)
    assert state(a) == before
    assert [j.name for j in a.system.jobs()] == ["hello"]
