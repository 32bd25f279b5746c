"""Input at the edges, against a real ``overseer serve``: every bad value is a 400 that names the
var (or a problem that names the file), never a 500 and never a traceback in the server's log.
Timestamps at the ends of the calendar, values nested thousands deep, integers longer than
Python converts, a job name longer than the store's keys, chunk sizes over the body limit, JSON
sent as form data or without a Content-Type; and ``/health`` probes kept out of the log."""
from __future__ import annotations

import json
import logging
import re
import socket

import pytest

from overseer.http.server import HttpServer

from ..serving import start_server
from ..waiting import wait_for

pytestmark = pytest.mark.slow

TYPES = ("str", "null", "bool", "int", "float", "binary", "timestamp", "pairs", "omap", "set", "seq",
         "map", "enum")
LONG = "a" * 200 + "/" + "b" * 200          # the file a.../b....yml: job name "a...a.b...b", 401 bytes
MAX_NAME = "c" * 251                        # c...c.yml: a job name of 255 characters, the most there is
FILES = {
    "ts.yml": {"command": "echo {{ t }}", "vars": [{"name": "t", "type": "timestamp"}]},
    "nest.yml": {"command": "echo {{ s }} {{ m }}", "vars": [
        {"name": "s", "type": "seq", "required": False}, {"name": "m", "type": "map", "required": False}]},
    "every.yml": {"command": "true", "vars": [
        {"name": t, "type": t, "required": False, **({"values": ["a", 1]} if t == "enum" else {})}
        for t in TYPES]},
    "ok.yml": {"command": "echo ok"},
    f"{LONG}.yml": {"command": "echo long"},
    f"{MAX_NAME}.yml": {"command": "echo longest"},
    "longvar.yml": {"command": "true", "vars": [{"name": "v" * 65}]},
    "oldtime.yml": {"command": "true", "schedule": [{"time": "0001-01-01T00:00:00+05:00"}]},
    # YAML reads these as datetimes with an offset: the default does not fit the calendar in UTC
    "olddefault.yml": "command: 'true'\nvars:\n"
                      "- {name: t, type: timestamp, default: 9999-12-31T23:59:59-05:00}\n",
}
EDGES = ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("edges"), FILES)
    yield s
    assert s.stop() == 0
    assert "Traceback" not in s.log(), s.log()[-3000:]


def _error(r, status: int = 400) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    return r.json()["error"]


def _json(server, job: str, text: str):
    return server.req("POST", f"/jobs/{job}", data=text.encode(),
                      headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("value", EDGES)
@pytest.mark.parametrize("how", ["json", "form"])
def test_a_timestamp_that_leaves_the_calendar_in_utc_is_400_naming_the_var(server, value, how):
    sent = {"json": {"t": value}} if how == "json" else {"data": {"t": value}}
    r = server.req("POST", "/jobs/ts", **sent)
    assert _error(r) == f"var 't': {value!r} is not a time within the years 0001 to 9999 in UTC"


def test_timestamps_just_inside_the_calendar_and_offsets_past_59_minutes(server):
    for value, stored in (("0001-01-01T00:00:00-05:00", "0001-01-01T05:00:00Z"),
                          ("9999-12-31T23:59:59+05:00", "9999-12-31T18:59:59Z")):
        assert server.run("ts", {"t": value})["params"] == {"t": stored}
    for value in ("2020-01-01T00:00:00+05:60", "2020-01-01T00:00:00+24:00", "2020-13-01T00:00:00Z"):
        assert _error(server.req("POST", "/jobs/ts", data={"t": value})) == \
            f"var 't': {value!r} is not an ISO 8601 timestamp"


@pytest.mark.parametrize("var", ["s", "m"])
def test_a_form_value_of_5000_nested_brackets_is_400_naming_the_var(server, var):
    for value in ("[" * 5000 + "]" * 5000, "[" * 5000, '{"a": ' + "[" * 5000 + "]" * 5000 + "}"):
        if var == "s" and value.startswith("{"):
            continue
        if var == "m" and value.startswith("["):
            value = '{"a": ' + value + "}"
        message = _error(server.req("POST", "/jobs/nest", data={var: value}))
        assert message.startswith(f"var {var!r}: "), message
        assert "nested deeper than 32 levels" in message or "is not a" in message, message


def test_a_json_value_nested_deeper_than_32_levels_is_400_naming_the_var(server):
    for depth in (33, 400, 900, 5000):
        nested = "[" * depth + "]" * depth
        for var, text in (("s", f'{{"s": {nested}}}'), ("m", f'{{"m": {{"k": {nested}}}}}')):
            message = _error(_json(server, "nest", text))
            if depth == 5000:       # deeper than the JSON parser goes: the body itself is refused
                assert message == "the JSON body is nested too deeply"
            else:
                assert message == f"var {var!r}: the value is nested deeper than 32 levels of lists and maps"
    # 32 levels is the most: a seq of 31 more, a map with 31 more under one key
    ident = server.run("nest", {"s": json.loads("[" * 31 + "]" * 31),
                                "m": {"k": json.loads("[" * 30 + "]" * 30)}})
    assert server.wait("nest", ident["id"])["status"] == "complete"


def test_every_var_type_refuses_hostile_values_with_a_400_naming_it(server):
    """Each type, with values at the edges of JSON and of Python's conversions: an answer of 201 or
    a 400 naming the var, nothing else (the module's check: no traceback in the log)."""
    deep = "[" * 900 + "]" * 900
    texts = ["9" * 5000, "-" + "9" * 4301, "1e999", "nan", "[" * 5000, "{" * 5000, '{"a":' * 3000,
             "x\x00y", *EDGES, "", " ", "\t[1]"]
    raw_json = ["9" * 4000, "9" * 400 + ".5", "1e400", f"[{'9' * 4000}]", '{"a": 1e400}',
                '{"\\ud800": 1}', '["\\udfff"]', '"\\u0000"', deep, f'{{"k": {deep}}}', "[[1, 2], [3]]",
                '{"a": [1, {"b": null}]}', "true", "null", "-0.0", "[]", "{}"]
    seen = set()
    for t in TYPES:
        attempts = [server.req("POST", "/jobs/every", data={t: v}) for v in texts]
        attempts += [server.req("POST", "/jobs/every", json={t: v}) for v in texts]
        attempts += [_json(server, "every", f'{{"{t}": {v}}}') for v in raw_json]
        attempts.append(server.req("POST", "/jobs/every", data={t: ["[" * 5000, "b"]}))
        for r in attempts:
            seen.add(r.status_code)
            assert r.status_code in (201, 400), (t, r.status_code, r.text)
            if r.status_code == 400:
                message = r.json()["error"]
                assert message.startswith(f"var {t!r}: ") or message.startswith("the JSON body"), (t, message)
    assert seen == {201, 400}


def test_an_int_longer_than_python_converts_is_400_naming_the_var(server):
    message = _error(server.req("POST", "/jobs/every", data={"int": "9" * 5000}))
    assert re.fullmatch(r"var 'int': '9+\.\.\. is not an int of at most [0-9]+ digits", message), message


def test_an_unknown_var_with_a_huge_name_is_named_short(server):
    message = _error(server.req("POST", "/jobs/ok", json={"x" * 100000: 1}))
    assert message.startswith("unknown var 'xxx") and len(message) < 100, message


def test_a_job_name_longer_than_255_characters_is_a_problem_of_its_file_and_the_list_still_answers(server):
    r = server.get("/jobs")
    assert r.status_code == 200, r.text
    names = {job["name"] for job in r.json()["jobs"]}
    assert {"ts", "ok", MAX_NAME} <= names and LONG.replace("/", ".") not in names
    errors = {e["file"]: e["error"] for e in server.get("/repo").json()["errors"]}
    assert errors[f"{LONG}.yml"] == (f"job name {('a' * 40)!r}... is 401 characters long; job names (the "
                                     f"file's path, its directories joined by '.') are limited to 255")
    assert server.get(f"/jobs/{LONG.replace('/', '.')}").status_code == 404
    ident = server.run(MAX_NAME)["id"]
    assert server.wait(MAX_NAME, ident)["status"] == "complete"
    assert server.get(f"/jobs/{MAX_NAME}/{ident}/stdout").text == "longest\n"
    listed = {job["name"]: job for job in server.get("/jobs").json()["jobs"]}
    assert listed[MAX_NAME]["last_execution"]["id"] == ident


def test_var_names_over_64_characters_and_timestamps_off_the_calendar_in_job_files_are_named(server):
    errors = {e["file"]: e["error"] for e in server.get("/repo").json()["errors"]}
    assert errors["longvar.yml"] == (f"vars[0]: name {('v' * 40)!r}... is 65 characters long; var names "
                                     f"are limited to 64")
    assert errors["oldtime.yml"] == ("schedule[0].time: '0001-01-01T00:00:00+05:00' is not within the "
                                     "years 0001 to 9999 in UTC")
    assert errors["olddefault.yml"].startswith("vars[0] (t): default ") and \
        "is not a time within the years 0001 to 9999 in UTC" in errors["olddefault.yml"], errors
    assert set(errors) == {f"{LONG}.yml", "longvar.yml", "oldtime.yml", "olddefault.yml"}


def _raw(server, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("size", [b"4000001", b"100001", b"ffffffffffffffff"])
def test_a_chunk_size_over_the_body_limit_is_413_not_500(server, size):
    head = (b"POST /jobs/ok HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    for before in (b"", b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"):   # alone, and pipelined
        answer = _raw(server, before + head + size + b"\r\n{}\r\n0\r\n\r\n")
        last = answer[answer.rfind(b"HTTP/1.1 "):]
        assert last.startswith(b"HTTP/1.1 413 "), answer
        assert json.loads(last.partition(b"\r\n\r\n")[2]) == {
            "error": "the request body is larger than 1048576 bytes (server.max_body_bytes)"}


HINT = "send it with Content-Type: application/json"


def test_json_sent_as_form_data_or_without_a_content_type_gets_a_hint(server):
    body = b'{"t": "2026-01-01T00:00:00Z"}'
    # curl -d sends application/x-www-form-urlencoded
    message = _error(server.req("POST", "/jobs/ts", data=body,
                                headers={"Content-Type": "application/x-www-form-urlencoded"}))
    assert message == ("the body looks like JSON but came with Content-Type "
                       f"'application/x-www-form-urlencoded': {HINT}")
    message = _error(server.req("POST", "/jobs/ts", data=b"  [1, 2]"))   # no Content-Type at all
    assert message == f"the body looks like JSON but came with no Content-Type: {HINT}"
    ident = server.run("ok")["id"]
    assert HINT in _error(server.req("PUT", f"/jobs/ok/{ident}", data=b'{"event": "note"}',
                                     headers={"Content-Type": "application/x-www-form-urlencoded"}))
    # real form data and a body of another type are what they were
    assert server.req("POST", "/jobs/ts", data={"t": "2026-01-01T00:00:00Z"}).status_code == 201
    assert _error(server.req("POST", "/jobs/ok", data=b"hello"), 415).startswith(
        "unsupported Content-Type ''")
    assert _error(server.req("POST", "/jobs/ok", data=b'{"a": 1}', headers={"Content-Type": "text/plain"}),
                  415).startswith("unsupported Content-Type 'text/plain'")


def test_health_probes_are_not_logged_at_info(server):
    for _ in range(3):
        assert server.get("/health").status_code == 200
    assert server.get("/jobs/ok").status_code == 200

    def logged():   # log lines reach the file shortly after they are logged
        text = server.log()
        return text if " GET /jobs/ok 200 " in text else None
    text = wait_for(logged, 10, "the access line of GET /jobs/ok")
    assert " GET /health " not in text


def test_health_probes_are_logged_at_debug_and_refusals_at_info(system_factory, caplog):
    caplog.set_level(logging.DEBUG, logger="overseer.http.access")
    system = system_factory({"ok.yml": {"command": "true"}})
    http = HttpServer(system, system.config)
    http.start()
    try:
        import requests

        base = system.config.base_url
        assert requests.get(base + "/health", timeout=10).status_code == 200
        assert requests.get(base + "/health", headers={"Host": "evil.example"}, timeout=10).status_code == 403
        assert requests.get(base + "/jobs", timeout=10).status_code == 200
        lines = wait_for(lambda: (x := [(r.levelno, r.getMessage()) for r in caplog.records
                                    if r.name == "overseer.http.access"]) and len(x) >= 3 and x,
                     10, "three access lines")
    finally:
        http.stop()
    levels = {re.search(r" (GET \S+ [0-9]+) ", m).group(1): level for level, m in lines}
    assert levels == {"GET /health 200": logging.DEBUG, "GET /health 403": logging.INFO,
                      "GET /jobs 200": logging.INFO}
