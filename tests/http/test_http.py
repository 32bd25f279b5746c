"""The REST API end to end (SPEC §6): a real System and the real CherryPy server on 127.0.0.1,
over a real git repository, spoken to with requests and, for hostile paths, raw http.client."""
from __future__ import annotations

import json
import logging

import pytest
import requests

from overseer.config import parse_config
from overseer.exceptions import ConfigError, StoreBusy
from overseer.http import app as app_module
from overseer.http.server import HttpServer, check_bind

from ..served import Api, error_of
from ..waiting import wait_for

GATED = ("echo first; echo err-first >&2; while [ ! -e {{ gate }} ]; do sleep 0.02; done; "
         "echo second; echo err-second >&2")

JOBS = {
    "hello.yml": {"command": "echo hello {{ who }}", "description": "says hello",
                  "vars": [{"name": "who", "default": "world"}]},
    "typed.json": {"command": "echo ok",
                   "vars": [{"name": "n", "type": "int"}, {"name": "flag", "type": "bool", "default": False},
                            {"name": "items", "type": "seq", "default": []},
                            {"name": "color", "type": "enum", "values": ["red", "blue"], "default": "red"}]},
    "gated.yml": {"command": GATED, "vars": [{"name": "gate"}]},
    "fails.yml": {"command": "echo bad >&2; exit 3"},
    "sleeper.yml": {"command": "sleep 60"},
    "sched.yml": {"command": "true", "schedule": [{"frequency": "0 0 1 1 *", "priority": 2}]},
    "team/backup.yaml": {"command": "echo backup"},
}


@pytest.fixture
def api(serve):
    def start(files=JOBS, token: str | None = None, **overrides) -> Api:
        return Api(*serve(files, **overrides), token)

    return start


# -- reads -----------------------------------------------------------------------------------------

def test_health_jobs_and_job(api):
    a = api()
    assert a.get("/health").json() == {"status": "ok"}
    jobs = a.get("/jobs")
    assert jobs.status_code == 200 and jobs.headers["Content-Type"] == "application/json"
    listed = {j["name"]: j for j in jobs.json()["jobs"]}
    assert sorted(listed) == ["fails", "gated", "hello", "sched", "sleeper", "team.backup", "typed"]
    hello = listed["hello"]
    assert set(hello) == {"name", "description", "active", "schedule", "url", "last_execution"}
    assert hello["description"] == "says hello" and hello["active"] is True
    assert hello["url"] == f"{a.base}/jobs/hello" and hello["last_execution"] is None
    assert listed["sched"]["schedule"] == [{"frequency": "0 0 1 1 *", "priority": 2}]

    job = a.get("/jobs/sched").json()
    assert set(job) == {"name", "file", "commit", "active", "definition", "next_runs", "executions"}
    assert job["file"] == "sched.yml" and job["commit"] == a.system.repo_info()["commit"]
    assert job["definition"]["schedule"][0]["frequency"] == "0 0 1 1 *"
    assert job["next_runs"] and job["next_runs"][0].endswith("-01-01T00:00:00.000000Z")
    assert job["executions"] == []
    assert a.get("/jobs/team.backup").json()["file"] == "team/backup.yaml"
    assert a.get("/jobs/team%2Ebackup").json()["name"] == "team.backup"  # names are URL-decoded

    a.post("/jobs/hello")
    last = a.get("/jobs").json()["jobs"]
    hello = next(j for j in last if j["name"] == "hello")
    assert hello["last_execution"]["id"] == 1
    assert hello["last_execution"]["links"]["stdout"].startswith(a.base)


def test_unknown_paths_and_methods(api):
    a = api()
    for path in ("/nope", "/jobs/hello/1/stdout/more", "/repo/nope", "/jobs/nope", "/jobs/nope/1"):
        r = a.get(path)
        assert r.status_code == 404, path
        error_of(r)
    r = a.delete("/jobs")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    error_of(r)
    r = a.patch("/jobs/hello")
    assert r.status_code == 405 and r.headers["Allow"] == "DELETE, GET, POST, PUT, HEAD"
    assert a.get("/repo/sync").status_code == 405
    assert a.delete("/jobs/hello/1").headers["Allow"] == "GET, POST, PUT, HEAD"
    assert a.post("/jobs/hello/1/stdout").status_code == 405
    head = a.head("/jobs")
    assert head.status_code == 200 and head.content == b"" and int(head.headers["Content-Length"]) > 0


def test_pagination(api):
    a = api()
    for _ in range(5):
        assert a.post("/jobs/hello").status_code == 201
    ids = [e["id"] for e in a.get("/jobs/hello").json()["executions"]]
    assert ids == [5, 4, 3, 2, 1]
    page = a.get("/jobs/hello?limit=2").json()["executions"]
    assert [e["id"] for e in page] == [5, 4]
    page = a.get(f"/jobs/hello?limit=2&before={page[-1]['id']}").json()["executions"]
    assert [e["id"] for e in page] == [3, 2]
    assert [e["id"] for e in a.get("/jobs/hello?before=2").json()["executions"]] == [1]
    assert a.get("/jobs/hello?before=1").json()["executions"] == []
    assert len(a.get("/jobs/hello?limit=1000").json()["executions"]) == 5
    for bad in ("limit=0", "limit=1001", "limit=abc", "limit=-1", "limit=", "before=0", "before=x",
                "before=-3", "limit=1e3", "before=99999999999999999999999"):
        r = a.get(f"/jobs/hello?{bad}")
        assert r.status_code == 400, bad
        assert ("limit" if "limit" in bad else "before") in error_of(r)


def test_repo_and_sync(api, job_repo):
    a = api({**JOBS, "broken.yml": "command: [unclosed"})
    repo = a.get("/repo").json()
    assert repo["url"] == str(job_repo.root) and repo["branch"] == "main"
    assert repo["commit"] == a.system.repo_info()["commit"] and repo["synced_at"]
    assert [e["file"] for e in repo["errors"]] == ["broken.yml"]
    commit = job_repo.commit({"added.yml": {"command": "echo added"}})
    r = a.post("/repo/sync")
    assert r.status_code == 202 and r.headers["Content-Type"] == "application/json"
    wait_for(lambda: a.get("/jobs/added").status_code == 200, what="the synced job")
    assert a.get("/repo").json()["commit"] == commit


def test_openapi_describes_every_route(api):
    a = api()
    doc = a.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.0")
    described = set()
    for path, ops in doc["paths"].items():
        segments = [None if s.startswith("{") else s for s in path.strip("/").split("/")]
        pattern = tuple(segments)
        if pattern[:3] == ("jobs", None, None) and len(pattern) == 4:
            pattern = ("jobs", None, None, None)
        routes = dict(app_module.ROUTES)
        assert pattern in routes, path
        for method in ops:
            if method != "parameters":
                assert method.upper() in routes[pattern], (path, method)
                described.add((pattern, method.upper()))
    expected = {(p, m) for p, methods in app_module.ROUTES for m in methods}
    assert described == expected


# -- triggers ----------------------------------------------------------------------------------------

def test_trigger_json_and_form(api):
    a = api()
    r = a.post("/jobs/hello", json={"who": "you"})
    assert r.status_code == 201 and r.headers["Location"] == "/jobs/hello/1"
    body = r.json()
    assert body["job"] == "hello" and body["id"] == 1 and body["trigger"] == "api"
    assert body["params"] == {"who": "you"} and body["state"] in ("queued", "running", "finished")
    assert body["links"] == {s: f"{a.base}/jobs/hello/1/{s}" for s in ("stdout", "stderr", "output")}
    assert set(body) >= {"status", "command", "commit", "scheduled_for", "created_at", "started_at",
                         "ended_at", "exit_code", "signal", "pid", "events"}
    assert a.finished("hello", 1)["status"] == "complete"
    assert a.get("/jobs/hello/1/stdout").content == b"hello you\n"

    # form data: strings converted by var type; a repeated field is a list
    r = a.post("/jobs/typed", data=[("n", "42"), ("flag", "yes"), ("items", "a"), ("items", "b"),
                                    ("color", "blue")])
    assert r.status_code == 201, r.text
    assert r.json()["params"] == {"n": 42, "flag": True, "items": ["a", "b"], "color": "blue"}
    # multipart form data too
    r = a.post("/jobs/typed", files={"n": (None, "7"), "items": (None, '["x"]')})
    assert r.status_code == 201, r.text
    assert r.json()["params"]["n"] == 7 and r.json()["params"]["items"] == ["x"]
    # JSON keeps JSON types
    r = a.post("/jobs/typed", json={"n": 5, "flag": True, "items": [1, "two"]})
    assert r.status_code == 201 and r.json()["params"]["items"] == [1, "two"]
    r = a.post("/jobs/typed", json={"n": "5"})  # a JSON string is not an int
    assert r.status_code == 400 and "n" in error_of(r)
    # an empty body is no values; an empty JSON object too
    assert a.post("/jobs/hello").json()["params"] == {"who": "world"}
    assert a.post("/jobs/hello", data=b"", headers={"Content-Type": "text/plain"}).status_code == 201
    assert a.post("/jobs/hello", json={}).status_code == 201


def test_trigger_bad_input(api):
    a = api()
    cases = [
        (dict(json={"n": "abc"}), 400, "n"),
        (dict(data={"n": "abc"}), 400, "n"),
        (dict(json={}), 400, "n"),  # missing required
        (dict(json={"n": 1, "nope": 2}), 400, "nope"),
        (dict(json={"n": 1, "color": "green"}), 400, "color"),
        (dict(json=[1, 2]), 400, "object"),
        (dict(json="n"), 400, "object"),
        (dict(data=b"{nope", headers={"Content-Type": "application/json"}), 400, "JSON"),
        (dict(data=b'{"n": NaN}', headers={"Content-Type": "application/json"}), 400, "NaN"),
        (dict(data=b"[" * 100000, headers={"Content-Type": "application/json"}), 400, "JSON"),
        (dict(data=b"\xff\xfe", headers={"Content-Type": "application/x-www-form-urlencoded"}), 400, "form"),
        (dict(data=b"n=1", headers={"Content-Type": "text/plain"}), 415, "Content-Type"),
        (dict(data=b"n=1", headers={"Content-Type": ""}), 415, "Content-Type"),
        (dict(data=b"<n>1</n>", headers={"Content-Type": "application/xml"}), 415, "Content-Type"),
    ]
    for kwargs, status, word in cases:
        r = a.post("/jobs/typed", **kwargs)
        assert r.status_code == status, (kwargs, r.text)
        assert word in error_of(r), (kwargs, r.text)
    assert a.get("/jobs/typed").json()["executions"] == []  # nothing was created
    r = a.post("/jobs/nope", json={})
    assert r.status_code == 404 and "nope" in error_of(r)


def test_activation(api):
    a = api()
    r = a.delete("/jobs/hello")
    assert r.status_code == 200 and r.json() == {"name": "hello", "active": False}
    assert a.get("/jobs/hello").json()["active"] is False
    r = a.post("/jobs/hello")
    assert r.status_code == 409 and "inactive" in error_of(r)
    assert a.get("/jobs/sched").json()["next_runs"]
    a.delete("/jobs/sched")
    assert a.get("/jobs/sched").json()["next_runs"] == []
    r = a.put("/jobs/hello")
    assert r.status_code == 200 and r.json() == {"name": "hello", "active": True}
    assert a.post("/jobs/hello").status_code == 201
    assert a.delete("/jobs/nope").status_code == 404 and a.put("/jobs/nope").status_code == 404


def test_queue_full_is_503_with_retry_after(api, tmp_path):
    a = api(execution={"max_concurrent": 1, "max_queued": 1})
    gate = tmp_path / "gate"
    assert a.post("/jobs/gated", json={"gate": str(gate)}).status_code == 201
    wait_for(lambda: a.get("/jobs/gated/1").json()["state"] == "running", what="gated/1 running")
    assert a.post("/jobs/hello").status_code == 201  # waits for the slot
    r = a.post("/jobs/hello")
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert "max_queued" in error_of(r)
    gate.touch()
    a.finished("gated", 1)
    a.finished("hello", 1)
    assert a.post("/jobs/hello").status_code == 201


# -- executions ----------------------------------------------------------------------------------------

def test_execution_metadata_repeat_and_ids(api):
    a = api()
    a.post("/jobs/typed", json={"n": 3, "items": ["a"]})
    done = a.finished("typed", 1)
    r = a.get("/jobs/typed/1")
    assert r.status_code == 200 and r.json()["status"] == "complete" and r.json()["exit_code"] == 0
    assert "pgid" not in r.json() and r.json()["events"] == done["events"]
    r = a.post("/jobs/typed/1")
    assert r.status_code == 201 and r.headers["Location"] == "/jobs/typed/2"
    assert r.json()["trigger"] == "repeat" and r.json()["params"] == done["params"]
    for ident in ("3", "0", "abc", "-1", "1.0", "01x", "9" * 19, "1" * 40, "%C2%B3", "%D9%A3"):
        r = a.get(f"/jobs/typed/{ident}")
        assert r.status_code == 404, ident
        error_of(r)
        assert a.post(f"/jobs/typed/{ident}").status_code == 404
        assert a.get(f"/jobs/typed/{ident}/stdout").status_code == 404
    assert a.get("/jobs/nope/1").status_code == 404 and a.post("/jobs/nope/1").status_code == 404


def test_events(api):
    a = api()
    a.post("/jobs/hello")
    a.finished("hello", 1)
    r = a.put("/jobs/hello/1", json={"event": "deployed", "cause": "by ci"})
    assert r.status_code == 202
    made = r.json()
    assert made["name"] == "deployed" and made["cause"] == "by ci" and made["source"] == "api"
    assert a.get("/jobs/hello/1").json()["status"] == "complete"  # a note: the run had finished
    a.put("/jobs/hello/1", data={"event": "deployed"})  # form data works too
    occ = a.get("/jobs/hello/1/deployed").json()
    assert occ["name"] == "deployed" and [o["cause"] for o in occ["occurrences"]] == ["by ci", None]
    assert set(occ["occurrences"][0]) == {"time", "cause", "source"}
    complete = a.get("/jobs/hello/1/complete").json()
    assert complete["occurrences"][0]["source"] == "system"
    assert a.get("/jobs/hello/1/never-happened").status_code == 404
    assert a.get("/jobs/hello/1/" + "x" * 65).status_code == 404
    assert a.get("/jobs/hello/1/bad%20name").status_code == 404
    for body, status in [({"event": "stdout"}, 400), ({"event": "has space"}, 400), ({"event": ""}, 400),
                         ({"cause": "no event"}, 400), ({}, 400), ({"event": "x", "extra": 1}, 400),
                         ({"event": 5}, 400), ({"event": "x", "cause": 5}, 400),
                         ({"event": "x", "cause": "c" * 5000}, 400),
                         ({"event": "kill"}, 409), ({"event": "stop"}, 409), ({"event": "continue"}, 409)]:
        r = a.put("/jobs/hello/1", json=body)
        assert r.status_code == status, (body, r.text)
        error_of(r)
    assert a.put("/jobs/hello/1").status_code == 400  # no body
    assert a.put("/jobs/hello/1", data=b"event=x", headers={"Content-Type": "text/csv"}).status_code == 415
    assert a.put("/jobs/hello/9", json={"event": "x"}).status_code == 404
    assert a.put("/jobs/nope/1", json={"event": "x"}).status_code == 404


def test_signal_events_on_a_running_execution(api):
    a = api()
    a.post("/jobs/sleeper")
    wait_for(lambda: a.get("/jobs/sleeper/1").json()["state"] == "running", what="sleeper running")
    assert a.put("/jobs/sleeper/1", json={"event": "continue"}).status_code == 409  # not stopped
    assert a.put("/jobs/sleeper/1", json={"event": "stop"}).status_code == 202
    wait_for(lambda: a.get("/jobs/sleeper/1").json()["state"] == "stopped", what="sleeper stopped")
    assert a.put("/jobs/sleeper/1", json={"event": "continue"}).status_code == 202
    r = a.put("/jobs/sleeper/1", json={"event": "kill", "cause": "test"})
    assert r.status_code == 202 and r.json()["name"] == "kill"
    done = a.finished("sleeper", 1)
    assert done["status"] == "fail" and done["exit_code"] is None
    assert a.get("/jobs/sleeper/1/kill").json()["occurrences"][0]["cause"] == "test"


# -- output ------------------------------------------------------------------------------------------

def test_output_streams_and_offsets(api):
    a = api()
    a.post("/jobs/fails")
    a.post("/jobs/hello", json={"who": "x\u00e9"})
    a.finished("fails", 1)
    a.finished("hello", 1)
    r = a.get("/jobs/hello/1/stdout")
    assert r.status_code == 200 and r.content == "hello x\u00e9\n".encode()
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert a.get("/jobs/hello/1/stderr").content == b""
    assert a.get("/jobs/fails/1/stderr").content == b"bad\n"
    assert a.get("/jobs/fails/1/output").content == b"bad\n"
    assert a.get("/jobs/hello/1/stdout?offset=6").content == "x\u00e9\n".encode()
    assert a.get("/jobs/hello/1/stdout?offset=1000").content == b""
    assert a.get("/jobs/hello/1/stdout?follow=true").content == "hello x\u00e9\n".encode()  # ended: no wait
    assert a.get("/jobs/hello/1/stdout?follow=false&offset=9").content == b"\n"
    for bad in ("offset=-1", "offset=x", "offset=1.5", "follow=maybe", "offset=99999999999999999999"):
        r = a.get(f"/jobs/hello/1/stdout?{bad}")
        assert r.status_code == 400, bad
        error_of(r)
    head = a.head("/jobs/hello/1/stdout")
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len("hello x\u00e9\n".encode()))


def test_large_output_is_streamed(api):
    a = api({"big.yml": {"command": "head -c 3000000 /dev/zero | tr '\\0' 'x'; echo"}})
    a.post("/jobs/big")
    a.finished("big", 1)
    r = a.get("/jobs/big/1/stdout", stream=True)
    assert r.headers["Content-Length"] == "3000001"
    data = b"".join(r.iter_content(1 << 16))
    assert len(data) == 3000001 and data.endswith(b"x\n") and set(data[:-1]) == {ord("x")}
    assert len(a.get("/jobs/big/1/output?offset=2000000").content) == 1000001


def test_follow_a_running_execution(api, tmp_path):
    a = api()
    gate = tmp_path / "gate"
    a.post("/jobs/gated", json={"gate": str(gate)})
    r = a.get("/jobs/gated/1/stdout?follow=true", stream=True)
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/plain; charset=utf-8"
    chunks = r.iter_content(chunk_size=None)
    got = next(chunks)
    assert got == b"first\n"  # served while the job still runs
    assert a.get("/jobs/gated/1").json()["state"] == "running"
    gate.touch()
    got += b"".join(chunks)  # ends once the execution is finished
    assert got == b"first\nsecond\n"
    assert a.get("/jobs/gated/1").json()["state"] == "finished"
    out = a.get("/jobs/gated/1/output?follow=true").content
    assert sorted(out.splitlines()) == [b"err-first", b"err-second", b"first", b"second"]
    assert a.get("/jobs/gated/1/stderr?follow=true&offset=4").content == b"first\nerr-second\n"
    wait_for(lambda: a.server.app.open_follows == 0, what="follows to close")


def test_follow_limit_is_503_and_other_requests_go_on(api, tmp_path):
    a = api(server={"max_follows": 2, "thread_pool": 8})
    gate = tmp_path / "gate"
    a.post("/jobs/gated", json={"gate": str(gate)})
    follows = [requests.get(f"{a.base}/jobs/gated/1/output?follow=true", stream=True, timeout=30)
               for _ in range(2)]
    assert [f.status_code for f in follows] == [200, 200]
    r = a.get("/jobs/gated/1/stdout?follow=true")
    assert r.status_code == 503 and "max_follows" in error_of(r) and r.headers["Retry-After"]
    assert a.get("/jobs/gated/1/stdout").status_code == 200  # without follow: served
    for _ in range(20):  # ordinary requests are answered while the follows are held
        assert a.get("/health").status_code == 200
    follows[0].close()
    wait_for(lambda: a.server.app.open_follows == 1, what="a closed follow to free its slot")
    again = requests.get(f"{a.base}/jobs/gated/1/stdout?follow=true", stream=True, timeout=30)
    assert again.status_code == 200
    gate.touch()
    assert again.content == b"first\nsecond\n"
    follows[1].content  # noqa: B018 - read to the end
    wait_for(lambda: a.server.app.open_follows == 0, what="follows to close")


def test_server_stop_ends_open_follows(api, tmp_path):
    a = api()
    a.post("/jobs/gated", json={"gate": str(tmp_path / "never")})
    r = requests.get(f"{a.base}/jobs/gated/1/stdout?follow=true", stream=True, timeout=30)
    assert next(r.iter_content(chunk_size=None)) == b"first\n"
    a.server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{a.base}/health", timeout=5)
    a.system.create_event("gated", 1, "kill", None)


# -- security ----------------------------------------------------------------------------------------

def test_tokens(api):
    a = api(server={"tokens": ["s3cret", "other-token"]}, token=None)
    for method, path in [("GET", "/jobs"), ("GET", "/jobs/hello"), ("POST", "/jobs/hello"), ("GET", "/repo"),
                         ("POST", "/repo/sync"), ("GET", "/jobs/hello/1/stdout"), ("GET", "/nope"),
                         ("DELETE", "/jobs"), ("GET", "/openapi.json"), ("PUT", "/jobs/hello")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                        {"Authorization": "Basic czNjcmV0"}, {"Authorization": "Bearer "},
                        {"Authorization": "Bearer s3cret2"}):
            r = a.session.request(method, a.base + path, headers=headers, timeout=30)
            assert r.status_code == 401, (method, path, headers)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            error_of(r)
    assert a.get("/health").status_code == 200  # open for load balancers
    for token in ("s3cret", "other-token"):
        r = a.get("/jobs", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
    assert a.get("/jobs", headers={"Authorization": "bearer s3cret"}).status_code == 200
    r = a.post("/jobs/hello", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 201
    # with tokens any Host is served (a public bind behind a name)
    status, _, _ = a.raw("GET", "/jobs", {"Host": "jobs.example.com", "Authorization": "Bearer s3cret"})
    assert status == 200


def test_foreign_host_refused_without_tokens(api):
    a = api()
    for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example", "localhost.evil.example",
                 "10.0.0.1", "[::2]:80", "127.0.0.1:abc", "[::1", "0.0.0.0"):
        status, headers, body = a.raw("GET", "/jobs", {"Host": host})
        assert status == 403, host
        assert "loopback" in json.loads(body)["error"]
    status, _, _ = a.raw("POST", "/jobs/hello", {"Host": "evil.example"})
    assert status == 403
    assert a.get("/jobs/hello/1").status_code == 404
    for host in ("localhost", f"localhost:{a.port}", f"127.0.0.1:{a.port}", "127.9.8.7", f"[::1]:{a.port}",
                 "[::1]", "LOCALHOST"):
        status, _, _ = a.raw("GET", "/health", {"Host": host})
        assert status == 200, host


def test_webhook_credentials_are_shown_in_no_answer_and_no_log(api, receiver, caplog):
    """A job's ``hooks:`` URLs keep their ``user:pass@``, ``;params``, query and fragment for the
    delivery, and show none of them in the API or the log (as the server's own hooks)."""
    caplog.set_level(logging.DEBUG)
    host = receiver.url.removeprefix("http://")
    secrets = ["hookuser", "hookpass", "KEY123", "tok3n", "TOK456", "ftpuser", "ftppass", "KEY789", "frag"]
    jobs = {**JOBS, "hooked.yml": {"command": "echo hooked", "hooks": {
        "complete": f"http://hookuser:hookpass@{host}/done;p=KEY123?api_key=KEY123#frag",
        "*": [f"http://tok3n@{host}/all?token=TOK456"]}},
        "broken.yml": {"command": "true", "hooks": {"start": "ftp://ftpuser:ftppass@h/x?api_key=KEY789"}}}
    a = api(jobs)
    job = a.get("/jobs/hooked").json()
    assert job["definition"]["hooks"] == {"complete": f"{receiver.url}/done", "*": [f"{receiver.url}/all"]}
    assert job["definition"]["command"] == "echo hooked"
    assert a.post("/jobs/hooked").status_code == 201
    a.finished("hooked", 1)
    paths = [p for p, _, _ in receiver.wait(lambda got: any(p.startswith("/done") for p, _, _ in got)
                                            and sum(p.startswith("/all") for p, _, _ in got) >= 3)]
    assert "/done;p=KEY123?api_key=KEY123" in paths and "/all?token=TOK456" in paths  # delivered as written
    wait_for(lambda: "delivered" in caplog.text, what="the delivery's log line")
    repo = a.get("/repo").json()
    assert any(e["file"] == "broken.yml" and "'ftp://h/x' is not an http(s) URL" in e["error"]
               for e in repo["errors"]), repo
    answers = [a.get(path).text for path in ("/jobs", "/jobs/hooked", "/jobs/hooked/1", "/repo",
                                             "/jobs/broken", "/openapi.json")]
    for secret in secrets:
        assert not any(secret in text for text in answers), secret
        assert secret not in caplog.text, secret


def test_check_bind():
    def config(**server):
        return parse_config({"server": server})

    check_bind(config(host="127.0.0.1"))
    check_bind(config(host="localhost"))
    check_bind(config(host="::1"))
    check_bind(config(host="0.0.0.0", tokens=["t"]))
    for host in ("0.0.0.0", "::", "", "192.168.1.5", "example.com"):
        with pytest.raises(ConfigError, match="server.tokens"):
            check_bind(config(host=host))


def test_oversized_bodies_are_413(api):
    a = api(server={"max_body_bytes": 1024})
    r = a.post("/jobs/hello", json={"who": "x" * 2000})
    assert r.status_code == 413 and "1024" in error_of(r)
    r = a.post("/jobs/hello", data=b"who=" + b"x" * 300000,
               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413

    def chunked():
        for _ in range(10):
            yield b"x" * 200

    r = a.post("/jobs/hello", data=chunked(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    assert a.get("/jobs/hello").json()["executions"] == []
    r = a.post("/jobs/hello", json={"who": "x" * 900})  # within the limit
    assert r.status_code == 201
    r = a.post("/jobs/hello", data=iter([b'{"who": ', b'"chunked"}']),
               headers={"Content-Type": "application/json"})
    assert r.status_code == 201 and r.json()["params"] == {"who": "chunked"}
    assert a.get("/health").status_code == 200


def test_hostile_paths(api):
    a = api()
    a.post("/jobs/hello")
    a.finished("hello", 1)
    paths = [
        "/jobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/jobs/..%2f..%2fetc%2fpasswd", "/jobs/../../etc/passwd",
        "/jobs/..", "/jobs/.", "/jobs/%2e%2e", "/jobs/hello%00", "/jobs/%00", "/jobs/hello%00/1",
        "/jobs/hello/1%00", "/jobs/hello/1/stdout%00", "/jobs/hello/1/%2e%2e%2f%2e%2e",
        "/jobs/hello/" + "9" * 19, "/jobs/hello/" + "1" * 5000, "/jobs/" + "a" * 5000 + "/1",
        "/jobs/%ff%fe", "/jobs/%c0%ae%c0%ae/1", "/jobs/-x", "/jobs/.git",
        "/jobs/hello/1/..%2fstdout", "/jobs/hello/1/stdout/..", "/jobs/hello/1/%2Fetc%2Fpasswd",
        "/jobs/hello%2f1", "/jobs/hello/-1", "/jobs/hello/0x1", "/jobs/hello/1e3", "/jobs/hello/+1",
        "/jobs/hello/%201", "/jobs/hello%20/1", "/jobs/hello\\..\\1", "/%2e%2e/jobs",
    ]
    for path in paths:
        for method in ("GET", "POST", "PUT", "DELETE"):
            status, headers, body = a.raw(method, path)
            assert 400 <= status < 500, (method, path, status)
            if status not in (400, 414) or body.startswith(b"{"):
                assert "error" in json.loads(body), (path, body)
        assert a.get("/health").status_code == 200
    status, _, body = a.raw("GET", "/jobs/hello/1/stdout")
    assert status == 200 and body == b"hello world\n"


def test_bugs_are_json_500_and_store_busy_503(api, monkeypatch):
    a = api()

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    def busy(*args, **kwargs):
        raise StoreBusy("every LMDB reader slot is in use")

    monkeypatch.setattr(a.system, "jobs", broken)
    r = a.get("/jobs")
    assert r.status_code == 500 and "boom" not in error_of(r)
    monkeypatch.setattr(a.system, "execution", busy)
    r = a.get("/jobs/hello/1")
    assert r.status_code == 503 and r.headers["Retry-After"] == "1" and "reader" in error_of(r)
    assert a.get("/health").status_code == 200


def test_a_bare_value_error_is_a_logged_500_not_a_400(api, monkeypatch, caplog):
    """Input errors are ParamErrors where they are found: a ValueError that gets to the HTTP layer
    is a bug, answered 500 without its message and logged with its traceback."""
    a = api()

    def slipped(*args, **kwargs):
        raise ValueError("invalid literal for int() with base 10: 'x'")

    monkeypatch.setattr(a.system, "repo_info", slipped)
    with caplog.at_level(logging.ERROR, logger="overseer.http.app"):
        r = a.get("/repo")
    assert r.status_code == 500 and "invalid literal" not in error_of(r)
    assert [rec.exc_info[0] for rec in caplog.records if rec.exc_info] == [ValueError]


def test_a_taken_port_is_an_error_not_an_exit(system_factory):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        system = system_factory(JOBS, server={"port": port})
        server = HttpServer(system, system.config)
        with pytest.raises(OSError):
            server.start()
        server.stop()
