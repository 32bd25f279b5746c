"""Hostile input against a real ``overseer serve`` (cases 10-14): the OpenAPI description fuzzed
with Schemathesis, shell and template injection through every var type and every way in, the
event socket abused, webhooks that redirect or never answer, and a token in the repository URL."""
from __future__ import annotations

import collections
import json
import re
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from overseer.http.app import OPENAPI

from ..conftest import JobRepo, Receiver
from ..serving import start_server
from ..waiting import wait_for

pytestmark = pytest.mark.slow

TOKEN = "hostile-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOB_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


# -- 10. Schemathesis over the OpenAPI description --------------------------------------------------

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    negative_data_rejection,
    positive_data_acceptance,
)

FUZZ_JOBS = {
    "a.yml": {"command": "echo a; echo err >&2", "timeout": 5},
    "typed.yml": {"command": "echo typed", "timeout": 5, "vars": [
        {"name": "s", "required": False}, {"name": "n", "type": "int", "required": False},
        {"name": "items", "type": "seq", "required": False}, {"name": "m", "type": "map", "required": False},
        {"name": "on", "type": "bool", "option": True, "required": False}]},
}
REAL = ("a", "typed")
OPERATIONS = [r.ok().label for r in schemathesis.openapi.from_path(str(OPENAPI)).get_all_operations()]
EXAMPLES = 20  # per operation and generation mode (valid and invalid input): 40 requests each
# A run's body is any JSON object to the description, but each job takes only its own vars: a
# well-formed body naming no var of the job is rightly 400 (the message names the var).
# Invalid input is sent for robustness (no 5xx, no hang, documented codes only), not to demand a
# 4xx for everything Schemathesis calls invalid: unknown query parameters are ignored, as most
# HTTP APIs do, and the token it strips is sent all the same (every request here is authorised;
# the invalid-auth check sends its own).
EXCLUDED = {"POST /jobs/{job}": [positive_data_acceptance, negative_data_rejection]}
DEFAULT_EXCLUDED = [negative_data_rejection]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("fuzz"), FUZZ_JOBS, {"server": {"tokens": [TOKEN]}})
    server.session.headers.update(AUTH)
    for job in REAL:
        for _ in range(3):
            server.run(job)
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", headers=AUTH)
    yield server, schema
    assert server.stop() == 0
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("label", OPERATIONS)
def test_schemathesis(fuzzed, label):
    """Valid and invalid requests for every operation: never a 5xx, never a hang (15 s per request),
    every answer as the description says (Schemathesis' checks: status codes, content types,
    schemas, headers, invalid input refused, invalid auth refused)."""
    server, schema = fuzzed
    operation = schema.find_operation_by_label(label)
    modes = schemathesis.GenerationMode
    failures, hits = [], collections.Counter()

    @settings(max_examples=2 * EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=st.one_of(operation.as_strategy(generation_mode=modes.POSITIVE),
                          operation.as_strategy(generation_mode=modes.NEGATIVE)))
    def run(case):
        job = (case.path_parameters or {}).get("job")
        if isinstance(job, str) and JOB_RE.match(job) and ord(job[0]) % 2 == 0:
            case.path_parameters["job"] = REAL[ord(job[-1]) % 2]   # half of them reach real jobs
        hits[case.path_parameters.get("job") in REAL if case.path_parameters else None] += 1
        response = case.call(base_url=server.url, timeout=15, headers=AUTH)
        if response.status_code >= 500:
            failures.append(f"{response.status_code} for {case.method} {case.formatted_path}")
        try:
            excluded = EXCLUDED.get(label, DEFAULT_EXCLUDED)
            case.validate_response(response, headers=AUTH, excluded_checks=excluded)
        except BaseException as exc:  # noqa: BLE001 - a FailureGroup: collect them all
            failures.append(str(exc)[:2000])

    run()
    assert server.get("/health").status_code == 200 and server.proc.poll() is None
    assert not failures, "\n\n".join(sorted(set(failures))[:3])


# -- a server for cases 11, 12 and 14: its job repository over HTTP, with a token in the URL ------

SECRET = "s3cr3t-repo-token-4711"
HOSTILE = "$(touch {p}); `touch {p}` ' \" \\ {{{{ 7*7 }}}} {{% raw %}} ${{HOME}} *;|&>x\n-rf"
ARGV = "#!/usr/bin/env python3\nimport json, os, sys\n" \
       "print(json.dumps({'argv': sys.argv[1:], 'env': {k: v for k, v in os.environ.items() " \
       "if k.startswith('OVERSEER_VAR_')}}))\n"
OPTS = "#!/usr/bin/env python3\nimport argparse, json\np = argparse.ArgumentParser()\n" \
       "p.add_argument('pos')\np.add_argument('--opt')\nprint(json.dumps(vars(p.parse_args())))\n"
TYPED_VARS = [
    {"name": "s"}, {"name": "seq", "type": "seq"}, {"name": "m", "type": "map"},
    {"name": "pairs", "type": "pairs"}, {"name": "om", "type": "omap"}, {"name": "st", "type": "set"},
    {"name": "b", "type": "bool"}, {"name": "i", "type": "int"}, {"name": "f", "type": "float"},
    {"name": "nu", "type": "null"}, {"name": "ts", "type": "timestamp"}, {"name": "bin", "type": "binary"},
    {"name": "en", "type": "enum", "values": ["-x; y", "$(z)"]},
]


class _DumbGitHttp:
    """The job repository served as static files (git's dumb HTTP protocol) on 127.0.0.1."""

    def __init__(self, root: Path, repo: JobRepo):
        import functools
        import http.server

        self.repo, self.bare = repo, root / "served" / "jobs.git"
        self.bare.parent.mkdir(parents=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(repo.root), str(self.bare)], check=True)
        self.refresh()
        handler = functools.partial(_QuietHandler, directory=str(self.bare.parent))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def refresh(self):
        subprocess.run(["git", "-C", str(self.repo.root), "push", "-q", "--force", str(self.bare), "main"],
                       check=True, capture_output=True)
        subprocess.run(["git", "--git-dir", str(self.bare), "update-server-info"], check=True)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _quiet_handler():
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    return Handler


_QuietHandler = _quiet_handler()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    pwned = tmp / "pwned"
    repo = JobRepo(tmp / "jobs")
    files = {
        "bin/argv": ARGV,
        "scripts/opts.py": OPTS,
        "typed.yml": {"command": "argv " + " ".join(f"{{{{ {v['name']} }}}}" for v in TYPED_VARS),
                      "vars": TYPED_VARS},
        "appended.yml": {"command": "argv", "vars": [{"name": "pos", "type": "seq"}, {"name": "one"},
                                                     {"name": "opt", "option": True},
                                                     {"name": "flags", "type": "seq", "option": True}]},
        "opts.yml": {"command": "python3 scripts/opts.py --opt={{ opt }} -- {{ pos }}",
                     "vars": [{"name": "pos"}, {"name": "opt", "option": True}]},
        "token.yml": {"command": "echo $OVERSEER_TOKEN; event mine 'own token'"},
        "steal.yml": {"command": "OVERSEER_TOKEN={{ token }} event stolen 'a finished run token'",
                      "vars": [{"name": "token"}]},
        "waits.yml": {"command": "echo $OVERSEER_TOKEN; sleep 60", "timeout": 30},
        "hooked.yml": {"command": "echo hooked", "hooks": {"*": []}},
    }
    repo.commit(files, "initial")
    served = _DumbGitHttp(tmp, repo)
    url = f"http://x-access-token:{SECRET}@127.0.0.1:{served.port}/jobs.git"
    receiver = Receiver()
    server = start_server(tmp / "s", {}, {
        "repository": {"url": url, "branch": "main", "poll_interval": 0},
        "hooks": {"*": [receiver.url + "/all"]}}, repo=repo)
    server.pwned, server.served, server.receiver = pwned, served, receiver
    yield server
    try:
        assert server.stop() == 0
    finally:
        served.close()
        receiver.close()


def _result(server, job, ident):
    meta = server.wait(job, ident)
    assert meta["status"] == "complete", (meta, server.get(f"/jobs/{job}/{ident}/output").content)
    return json.loads(server.get(f"/jobs/{job}/{ident}/stdout").content)


# -- 11. Injection through every var type, the environment and form data -------------------------

def _typed_values(pwned):
    h = HOSTILE.format(p=pwned)
    values = {"s": h, "seq": [h, "-n"], "m": {"k": h}, "pairs": [["a", h]], "om": {"z": "$(x)", "a": "1"},
              "st": ["$(y)", "-e"], "b": True, "i": -5, "f": -1.5, "nu": None, "ts": "2026-01-01T00:00:00Z",
              "bin": "JCh0b3VjaCBQKQ==", "en": "$(z)"}
    argv = [h, h, "-n", json.dumps({"k": h}, separators=(",", ":"), ensure_ascii=False),
            json.dumps(["a", h], separators=(",", ":"), ensure_ascii=False), '{"z":"$(x)","a":"1"}',
            "$(y)", "-e", "true", "-5", "-1.5", "", "2026-01-01T00:00:00Z", "JCh0b3VjaCBQKQ==", "$(z)"]
    return values, argv


def test_injection_through_every_var_type_as_json(hostile):
    values, argv = _typed_values(hostile.pwned)
    ident = hostile.run("typed", values)["id"]
    got = _result(hostile, "typed", ident)
    assert got["argv"] == argv                       # one word per value (per item), nothing run
    assert got["env"]["OVERSEER_VAR_S"] == values["s"]
    assert json.loads(got["env"]["OVERSEER_VAR_SEQ"]) == values["seq"]
    assert json.loads(got["env"]["OVERSEER_VAR_M"]) == values["m"]
    assert got["env"]["OVERSEER_VAR_NU"] == "" and got["env"]["OVERSEER_VAR_EN"] == "$(z)"
    assert not hostile.pwned.exists()


@pytest.mark.parametrize("how", ["urlencoded", "multipart", "cli"])
def test_injection_through_form_data_and_the_cli(hostile, how):
    values, argv = _typed_values(hostile.pwned)
    text = {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
            for k, v in values.items()}
    text.update(b="true", i="-5", f="-1.5", nu="")
    if how == "urlencoded":
        r = hostile.req("POST", "/jobs/typed", data=text)
    elif how == "multipart":
        r = hostile.req("POST", "/jobs/typed", files={k: (None, v) for k, v in text.items()})
    else:
        from ..serving import OVERSEER
        run = subprocess.run([str(OVERSEER), "run", "--url", hostile.url, "typed",
                              *[f"{k}={v}" for k, v in text.items()]],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        r = hostile.get("/jobs/typed?limit=1")
        r.status_code = 201
    assert r.status_code == 201, r.text
    ident = (r.json()["executions"][0] if how == "cli" else r.json())["id"]
    got = _result(hostile, "typed", ident)
    assert got["argv"] == argv
    assert not hostile.pwned.exists()


def test_appended_values_starting_with_a_dash_stay_single_words(hostile):
    ident = hostile.run("appended", {"pos": ["--help", "-rf", "{{ 7*7 }}"], "one": "-",
                                     "opt": "--version", "flags": ["-x", "$(id)"]})["id"]
    got = _result(hostile, "appended", ident)
    assert got["argv"] == ["--help", "-rf", "{{ 7*7 }}", "-", "--opt", "--version",
                           "--flags", "-x", "--flags", "$(id)"]


def test_values_placed_by_the_template_are_never_options(hostile):
    # Appended values keep the contract's `--name value` layout (docs/jobs.rst); a job whose vars may
    # start with '-' places them itself, and then an option parser never reads them as options.
    ident = hostile.run("opts", {"pos": "-x", "opt": "-y"})["id"]
    assert _result(hostile, "opts", ident) == {"pos": "-x", "opt": "-y"}


# -- 12. The event socket --------------------------------------------------------------------------

def _ask(path: Path, payload: bytes, timeout: float = 10) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        try:
            sock.sendall(payload)
        except BrokenPipeError:
            pass  # refused before all of it was sent: the answer is waiting
        reply = b""
        while not reply.endswith(b"\n"):
            data = sock.recv(4096)
            if not data:
                break
            reply += data
    return json.loads(reply)


def _events(meta, name):
    return [e["source"] for e in meta["events"] if e["name"] == name]


def test_event_socket_refuses_malformed_huge_and_foreign_requests(hostile):
    path = hostile.data / "event.sock"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    for payload in (b"not json\n", b"[1, 2]\n", b'{"token": 7}\n', b"\xff\xfe\n", b"\n",
                    b'{"token": "' + b"A" * 32 + b'", "event": "x"}\n',
                    b'{"token": "' + b"A" * 32 + b'", "event": "stop"}\n'):
        answer = _ask(path, payload)
        assert answer["ok"] is False and answer["error"], (payload, answer)
    answer = _ask(path, b"{" + b"x" * (1 << 20))         # a huge line, no newline
    assert answer == {"ok": False, "error": "request longer than 16384 bytes"}
    # a job can use its own token; the token of a finished run (another job's shape, even a
    # real one) is refused
    first = hostile.run("token")["id"]
    assert _events(hostile.wait("token", first), "mine") == ["job"]
    stolen = hostile.get(f"/jobs/token/{first}/stdout").text.strip()
    assert len(stolen) >= 32
    ident = hostile.run("steal", {"token": stolen})["id"]
    meta = hostile.wait("steal", ident)
    assert meta["status"] == "fail" and "unknown or expired token" in hostile.get(
        f"/jobs/steal/{ident}/stderr").text
    assert not [e for e in hostile.execution("token", first)["events"] if e["name"] == "stolen"]
    assert hostile.get("/health").status_code == 200


def test_event_socket_survives_slowloris(hostile):
    path = hostile.data / "event.sock"
    idle = []
    try:
        for _ in range(300):                            # more than the server serves at once
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(path))
            sock.sendall(b'{"token": "')                # and never finish the line
            idle.append(sock)
        # a job's own event still gets through while they hang
        ident = hostile.run("token")["id"]
        meta = hostile.wait("token", ident)
        assert _events(meta, "mine") == ["job"], hostile.get(f"/jobs/token/{ident}/output").text
        assert hostile.get("/health").status_code == 200
    finally:
        for sock in idle:
            sock.close()
    assert _ask(path, b"bad\n")["ok"] is False


# -- 14. A token in the repository URL -------------------------------------------------------------

def test_repository_token_is_never_shown(hostile):
    receiver = hostile.receiver
    ident = hostile.run("hooked")["id"]
    hostile.wait("hooked", ident)
    receiver.wait(lambda r: any(b["job"] == "hooked" and b["status"] == "complete" for _, b, _ in r))
    # a sync that fails (the remote goes away) and one that works again
    hostile.served.httpd.socket.close()
    hostile.served.close()
    r = hostile.req("POST", "/repo/sync")
    assert r.status_code == 202
    repo = wait_for(lambda: (x := hostile.get("/repo").json()).get("sync_error") and x, 30, "the sync error")
    answers = [json.dumps(repo), hostile.get("/jobs").text, hostile.get("/jobs/hooked").text,
               hostile.get(f"/jobs/hooked/{ident}").text, hostile.get(f"/jobs/hooked/{ident}/output").text,
               hostile.get("/openapi.json").text]
    assert repo["url"] == f"http://x-access-token:***@127.0.0.1:{hostile.served.port}/jobs.git" or \
        SECRET not in repo["url"]
    for text in answers:
        assert SECRET not in text
    for _, body, headers in receiver.received:
        assert SECRET not in json.dumps(body) and SECRET not in json.dumps(
            {k: v for k, v in headers.items() if k != "raw_body"})
    # log lines reach the file up to LOG_GATHER (50 ms) after they are logged
    def logged() -> str | None:
        text = hostile.log()
        return text if "sync failed" in text else None
    log = wait_for(logged, 10, "the sync's log line")
    assert "loaded" in log and "sync failed" in log
    assert SECRET not in log
    leaking = [str(p.relative_to(hostile.data)) for p in hostile.data.rglob("*")
               if p.is_file() and not p.is_symlink() and p.stat().st_size < 64 << 20
               and SECRET.encode() in p.read_bytes()]
    assert leaking == []


# -- 13. Webhooks ----------------------------------------------------------------------------------

class _Silent:
    """A webhook receiver that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/silent"
        self.accepted = 0
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.conns:
            conn.close()


class _Redirector:
    """A webhook receiver that answers every POST with a redirect to ``target``."""

    def __init__(self, target: str, code: int):
        import http.server

        redirector = self
        self.posts = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                redirector.posts += 1
                self.send_response(code)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_webhook_redirects_are_not_followed_and_silence_times_out(monkeypatch, system_factory, receiver,
                                                                  caplog):
    import logging

    from overseer.actors import notifier

    from ..waiting import wait_finished

    monkeypatch.setattr(notifier, "TIMEOUT", (1, 0.5))       # (3.05, 10) s in production
    monkeypatch.setattr(notifier, "BACKOFF_FIRST", 0.05)      # 0.5 s in production
    caplog.set_level(logging.INFO, logger="overseer.actors.notifier")
    silent = _Silent()
    redirects = [_Redirector(receiver.url + "/elsewhere", code) for code in (301, 302, 307, 308)]
    try:
        s = system_factory({"j.yml": {"command": "true"}}, hooks={"complete": [
            silent.url, *[r.url for r in redirects], receiver.url + "/ok"]})
        s.trigger("j", {})
        assert wait_finished(s, "j", 1)["status"] == "complete"
        # the silent receiver delays nobody: the others get theirs at once
        receiver.wait(lambda r: any(p == "/ok" for p, _, _ in r))
        wait_for(lambda: all(r.posts == 1 for r in redirects), 10, "each redirect delivered once")
        wait_for(lambda: "given up after attempt 6 (ReadTimeout)" in caplog.text, 30,
                 "the silent hook given up")
        assert silent.accepted == 6       # each attempt timed out, then it was given up
        assert not any(p == "/elsewhere" for p, _, _ in receiver.received)
        assert all(r.posts == 1 for r in redirects)  # a redirect is final: not retried, not followed
        for code in (301, 302, 307, 308):
            assert f"(HTTP {code})" in caplog.text
    finally:
        silent.close()
        for r in redirects:
            r.close()
