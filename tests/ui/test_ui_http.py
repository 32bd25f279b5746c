"""The web UI over plain HTTP (no browser): its routes and headers, its error pages, escaping, the
CSRF check of every POST, the run form's conversion, and its live-update streams (resume, end,
the follow cap). A real System and the real CherryPy server on 127.0.0.1."""
from __future__ import annotations

import json
import logging
import re
import threading

import requests

from ..waiting import wait_finished, wait_for
from .ui_browser import _ui  # noqa: F401 - the fixture

GATED = "echo first; while [ ! -e {{ gate }} ]; do sleep 0.02; done; echo second"
XSS = "<script>alert(1)</script>"
JOBS = {
    "hello.yml": {"command": "echo hello {{ who }}", "description": "says hello",
                  "vars": [{"name": "who", "default": "world"}]},
    "typed.yml": {"command": "true",
                  "vars": [{"name": "n", "type": "int", "default": 1},
                           {"name": "flag", "type": "bool", "default": True},
                           {"name": "items", "type": "seq", "default": ["a"]},
                           {"name": "when", "type": "timestamp", "default": "2026-01-01T00:00:00Z"},
                           {"name": "conf", "type": "map", "default": {}}, {"name": "need", "type": "str"}]},
    "gated.yml": {"command": GATED, "vars": [{"name": "gate"}]},
    "evil.yml": {"command": "echo {{ v }}", "description": XSS,
                 "vars": [{"name": "v", "default": '"><img src=x onerror=alert(1)>', "description": XSS}]},
}
STREAM_ITEM = re.compile(r"(?:event: (\w+)\n)?(?:id: (\d+)\n)?data: (.*)\n\n")


def events_of(text: str) -> list[tuple[str, str, dict]]:
    return [(kind, ident, json.loads(data)) for kind, ident, data in STREAM_ITEM.findall(text)]


def no_errors_logged(caplog) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def test_root_redirects_and_pages_carry_their_headers(ui):
    a = ui(JOBS)
    for path in ("/", "/ui"):
        r = a.get(path, allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"] == "/ui/", path
    page = a.get("/ui/")
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    files = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page.text)
    assert len(files) >= 4
    for url in files:
        r = a.get(url)
        assert r.status_code == 200, url
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable", url
        assert r.headers["Content-Type"].split(";")[0] in ("text/javascript", "text/css", "image/svg+xml")
    assert a.get("/ui/static/nope.js").status_code == 404
    assert a.get("/ui/static/../templates/base.html").status_code == 404
    head = a.head("/ui/")
    assert head.status_code == 200 and head.content == b""


def test_what_is_wrong_is_a_page_that_says_so(ui, caplog):
    a = ui(JOBS)
    cases = [("/ui/jobs/nope", 404, "no job named 'nope'"), ("/ui/jobs/hello/99", 404, "has no execution 99"),
             ("/ui/jobs/hello/abc", 404, "has no execution 'abc'"), ("/ui/nothing/here", 404, "no page at"),
             ("/ui/jobs/hello?before=x", 400, "before must be an integer"),
             ("/ui/runs?status=a%20b", 400, "status: 'a b' is not an event name"),
             ("/ui/?page=0", 400, "page must be an integer"), ("/ui/jobs/hello/1/nope", 404, "no page at")]
    for path, status, message in cases:
        r = a.get(path)
        assert r.status_code == status, (path, r.status_code)
        assert r.headers["Content-Type"].startswith("text/html"), path
        assert message in r.text.replace("&#39;", "'"), (path, r.text[-800:])
    r = a.delete("/ui/")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    assert a.get("/ui/jobs/hello/1/stream").status_code == 404  # the page's scripts get JSON
    assert a.get("/ui/jobs/hello/1/stream").json() == {"error": "job 'hello' has no execution 1"}
    no_errors_logged(caplog)


def test_everything_a_job_or_a_client_says_is_text(ui):
    a = ui(JOBS)
    run = a.post("/jobs/evil", json={"v": XSS}).json()
    wait_finished(a.system, "evil", run["id"])
    assert a.put("/jobs/evil/1", json={"event": "note", "cause": XSS}).status_code == 202
    for path in ("/ui/", "/ui/jobs/evil", "/ui/jobs/evil/1", "/ui/runs", "/ui/runs?job=evil"):
        html = a.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
        if "runs" not in path:
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
    form = a.get("/ui/jobs/evil").text
    assert 'value="&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"' in form


def test_every_post_needs_the_pages_csrf_token(ui):
    a = ui(JOBS)
    token = a.csrf()
    posts = [("/ui/jobs/hello", {"var:who": "x"}), ("/ui/jobs/hello/active", {"active": "false"}),
             ("/ui/jobs/hello/1/repeat", {}), ("/ui/jobs/hello/1/event", {"event": "kill"}),
             ("/ui/repo/sync", {})]
    assert a.post("/jobs/hello").status_code == 201
    wait_finished(a.system, "hello", 1)
    synced = a.system.repo_info()["synced_at"]
    for path, form in posts:
        for given in ({}, {"_csrf": "0" * 64}, {"_csrf": token[:-1]}):
            r = a.post(path, data={**form, **given}, allow_redirects=False)
            assert r.status_code == 403 and "CSRF" in r.text, (path, given)
        r = a.post(path, data=form, headers={"X-CSRF-Token": "nope"}, allow_redirects=False)
        assert r.status_code == 403, path
    assert [r["id"] for r in a.system.executions("hello")] == [1] and a.system.is_active("hello")
    assert a.system.repo_info()["synced_at"] == synced
    r = a.post("/ui/jobs/hello", data={"var:who": "you", "_csrf": token}, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/ui/jobs/hello/2"
    r = a.post("/ui/jobs/hello/active", data={"active": "false"}, headers={"X-CSRF-Token": token},
               allow_redirects=False)
    assert r.status_code == 303 and not a.system.is_active("hello")


def test_the_run_form_converts_values_as_the_api_converts_form_data(ui):
    a = ui(JOBS)
    token = a.csrf("/ui/jobs/typed")

    def run(**fields):
        data = {"_csrf": token, **{f"var:{k}": v for k, v in fields.items()}}
        return a.post("/ui/jobs/typed", data=data, allow_redirects=False)

    typed = {"n": "7", "flag": ["false"], "items": "x\r\n\r\ny z\n", "when": "2026-02-03T04:05",
             "conf": '{"a": [1]}'}
    r = run(**typed, need="")
    assert r.status_code == 400 and "missing required var &#39;need&#39;" in r.text  # empty: not sent
    r = run(**typed, need="ok")
    assert r.status_code == 303, r.text
    params = a.get("/jobs/typed/1").json()["params"]
    assert params == {"n": 7, "flag": False, "items": ["x", "y z"], "when": "2026-02-03T04:05:00Z",
                      "conf": {"a": [1]}, "need": "ok"}
    assert run(n="", flag=["false", "true"], items='["j", "k"]', need="x").status_code == 303
    params = a.get("/jobs/typed/2").json()["params"]
    assert params["n"] == 1 and params["flag"] is True and params["items"] == ["j", "k"]
    api_says = a.post("/jobs/typed", data={"n": "seven", "need": "x"}).json()["error"]
    r = run(n="seven", need="x")
    assert r.status_code == 400 and api_says in r.text.replace("&#39;", "'")
    r = run(nope="1", need="x")
    assert r.status_code == 400 and "unknown var &#39;nope&#39;" in r.text
    assert len(a.system.executions("typed")) == 2


def test_the_event_stream_resumes_from_an_event_and_ends(ui):
    a = ui(JOBS)
    run = a.post("/jobs/hello").json()
    wait_finished(a.system, "hello", run["id"])
    whole = a.get("/ui/jobs/hello/1/stream")
    assert whole.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert whole.text.startswith("retry: 3000\n\n")
    items = events_of(whole.text)
    assert [(k, i) for k, i, _ in items] == [("event", "1"), ("event", "2"), ("event", "3"), ("state", "3"),
                                               ("end", "")]
    assert [d["name"] for k, _, d in items if k == "event"] == ["queued", "start", "complete"]
    state = items[3][2]
    assert state["state"] == "finished" and state["exit_code"] == 0 and "events" not in state
    assert state["sizes"] == {"stdout": 12, "stderr": 0, "output": 12}
    resumed = events_of(a.get("/ui/jobs/hello/1/stream", headers={"Last-Event-ID": "2"}).text)
    assert [(k, i) for k, i, _ in resumed] == [("event", "3"), ("state", "3"), ("end", "")]
    resumed = events_of(a.get("/ui/jobs/hello/1/stream?last_event_id=3").text)
    assert [k for k, _, _ in resumed] == ["state", "end"]


def test_a_running_execution_streams_its_events_and_output_sizes_live(ui, tmp_path):
    a = ui(JOBS)
    gate = tmp_path / "gate"
    a.post("/jobs/gated", json={"gate": str(gate)})
    wait_for(lambda: a.get("/jobs/gated/1/stdout").content == b"first\n", what="the first line")
    got: list = []
    with a.session.get(f"{a.base}/ui/jobs/gated/1/stream", stream=True, timeout=30) as r:
        lines = r.iter_lines(decode_unicode=True)

        def until(kind: str, pred=lambda d: True) -> dict:
            buffer = []
            for line in lines:
                if line:
                    buffer.append(line)
                    continue
                block = "\n".join(buffer) + "\n\n"
                buffer = []
                for k, _, data in events_of(block):
                    got.append((k, data))
                    if k == kind and pred(data):
                        return data
            raise AssertionError(f"the stream ended before {kind}: {got}")

        first = until("state")
        assert first["state"] == "running" and first["sizes"]["stdout"] == 6
        assert a.put("/jobs/gated/1", json={"event": "almost", "cause": "soon"}).status_code == 202
        note = until("event", lambda d: d["name"] == "almost")
        assert note["cause"] == "soon" and note["source"] == "api"
        gate.touch()
        final = until("state", lambda d: d["state"] == "finished")
        assert final["sizes"]["stdout"] == len(b"first\nsecond\n") and final["status"] == "complete"
        until("end")


def test_event_streams_take_follow_slots_and_give_them_back(ui, tmp_path):
    a = ui(JOBS, server={"thread_pool": 8, "max_follows": 2})
    gate = tmp_path / "gate"
    a.post("/jobs/gated", json={"gate": str(gate)})
    opened = [requests.get(f"{a.base}/ui/jobs/gated/1/stream", stream=True, timeout=30) for _ in range(2)]
    try:
        for r in opened:
            assert r.status_code == 200
        wait_for(lambda: a.server.app.open_follows == 2, what="two open streams")
        full = a.get("/ui/jobs/gated/1/stream")
        assert full.status_code == 503 and "server.max_follows" in full.json()["error"]
        assert full.headers["Retry-After"] == "5"
        assert a.get("/jobs/gated/1/output?follow=true").status_code == 503  # the same slots
        assert a.get("/ui/jobs/gated").status_code == 200  # every other request is served
        assert a.get("/jobs").status_code == 200
    finally:
        for r in opened:
            r.close()
    wait_for(lambda: a.server.app.open_follows == 0, timeout=10, what="the slots to be given back")
    again = requests.get(f"{a.base}/ui/jobs/gated/1/stream", stream=True, timeout=30)
    assert again.status_code == 200
    done = threading.Event()

    def read_to_end():
        again.content  # noqa: B018 - reads the stream to its end
        done.set()

    threading.Thread(target=read_to_end, daemon=True).start()
    gate.touch()
    assert done.wait(30), "the stream did not end with the run"
    again.close()
    wait_for(lambda: a.server.app.open_follows == 0, timeout=10, what="the slot of the finished stream")


def test_the_output_under_the_ui_is_the_apis_output(ui):
    a = ui(JOBS)
    run = a.post("/jobs/hello", json={"who": "there"}).json()
    wait_finished(a.system, "hello", run["id"])
    for stream in ("stdout", "stderr", "output"):
        for query in ("", "?offset=3", "?offset=99"):
            ui_bytes = a.get(f"/ui/jobs/hello/1/{stream}{query}")
            assert ui_bytes.content == a.get(f"/jobs/hello/1/{stream}{query}").content, (stream, query)
            assert ui_bytes.headers["Content-Type"] == "text/plain; charset=utf-8"
    saved = a.get("/ui/jobs/hello/1/stdout?download=1")
    assert saved.headers["Content-Disposition"] == 'attachment; filename="hello-1-stdout.log"'
    assert a.get("/ui/jobs/hello/1/stdout?offset=-1").status_code == 400


def test_hostile_requests_to_the_ui_are_never_a_500(ui, caplog):
    a = ui(JOBS)
    a.post("/jobs/hello")
    wait_finished(a.system, "hello", 1)
    token = a.csrf()
    junk = ["%00", "%ff%fe", "a" * 300, "..", "%2e%2e", "hello%2F1", "<script>", "hello/1%00", "💥"]
    paths = ["/ui/", "/ui/runs", "/ui/repo", "/ui/login", "/ui/jobs/hello", "/ui/jobs/hello/1"]
    queries = ["?q=%ff", "?q=" + "x" * 5000, "?page=-1", "?page=99999999999999999999", "?before=%00",
               "?job=%ff&status=%00", "?before=2026-02-30T00:00:00Z", "?limit=1e9", "?next=//evil",
               "?q=a&q=b", "?last_event_id=-1", "?download=maybe", "?offset=x"]
    answers = []
    for path in paths + [f"/ui/jobs/{j}" for j in junk] + [f"/ui/jobs/hello/{j}" for j in junk] \
            + [f"/ui/jobs/hello/1/{j}" for j in junk] + [f"/ui/static/{j}" for j in junk]:
        for query in ("", *queries):
            answers.append((path + query, a.get(path + query).status_code))
    bodies = [b"", b"[1, 2]", b'{"_csrf": 1}', b"\xff\xfe", b"var:who=%ff&_csrf=" + token.encode(),
              b"_csrf=" + token.encode() + b"&_csrf=" + token.encode(), b"x" * 2_000_000]
    for path in ("/ui/jobs/hello", "/ui/jobs/hello/active", "/ui/jobs/hello/1/event",
                 "/ui/jobs/hello/1/repeat", "/ui/repo/sync", "/ui/login", "/ui/logout", "/ui/jobs/nope",
                 "/ui/jobs/hello/abc/event"):
        for body in bodies:
            for kind in ("application/x-www-form-urlencoded", "application/json", "text/plain"):
                r = a.post(path, data=body, headers={"Content-Type": kind, "X-CSRF-Token": token},
                           allow_redirects=False)
                answers.append((f"POST {path} {kind} {body[:20]!r}", r.status_code))
    bad = [(what, code) for what, code in answers if code >= 500]
    assert not bad, bad[:10]
    assert {code for _, code in answers} <= {200, 303, 400, 403, 404, 405, 409, 413, 415}
    no_errors_logged(caplog)
