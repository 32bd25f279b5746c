"""``POST /repo/sync`` from a git host's push webhook, against a real ``overseer serve`` with
tokens: signed with ``repository.sync_secret`` (GitHub's ``X-Hub-Signature-256``, a real
HMAC-SHA256 of the real body; GitLab's ``X-Gitlab-Token``) it needs no bearer token, on that
route only, and the CSRF rule still holds; a bad signature is 401 naming nothing secret, and the
secret is in no answer and no log line."""
from __future__ import annotations

import hashlib
import hmac
import json

import pytest
import requests

from overseer.config import parse_config
from overseer.exceptions import ConfigError
from overseer.http.server import HttpServer

from ..serving import start_server
from ..waiting import wait_for

pytestmark = pytest.mark.slow

TOKEN = "sync-test-bearer-token"
SECRET = "push-secret-7f3a9c2e5b1d4086"
OTHER = "another-secret-of-someone-else"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def github(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def push_body(sha: str) -> bytes:
    return json.dumps({"ref": "refs/heads/main", "after": sha, "repository": {"full_name": "ops/jobs"},
                       "commits": [{"id": sha, "message": "a job more"}]}).encode()


class Answers:
    """Every answer the module's requests got, to look for the secret in."""

    def __init__(self):
        self.texts: list[str] = []

    def keep(self, r: requests.Response) -> requests.Response:
        self.texts.append(json.dumps([r.status_code, dict(r.headers), r.text]))
        return r


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("sync"), {"ok.yml": {"command": "echo ok"}},
                     {"server": {"tokens": [TOKEN]}, "repository": {"sync_secret": SECRET}})
    s.answers = Answers()
    yield s
    assert s.stop() == 0
    assert "Traceback" not in s.log()


def _sync(served, body: bytes = b"", **headers) -> requests.Response:
    return served.answers.keep(served.req("POST", "/repo/sync", data=body, headers=headers))


def _has_job(served, name: str) -> bool:
    return served.answers.keep(served.get(f"/jobs/{name}", headers=BEARER)).status_code == 200


def test_a_push_signed_like_github_syncs_without_a_bearer_token(served):
    sha = served.repo.commit({"pushed_gh.yml": {"command": "true"}}, "a job more")
    body = push_body(sha)
    r = _sync(served, body, **{"X-Hub-Signature-256": github(body), "X-GitHub-Event": "push",
                               "Content-Type": "application/json"})
    assert (r.status_code, r.json()) == (202, {"status": "sync requested"})
    wait_for(lambda: _has_job(served, "pushed_gh"), 30, "the pushed job to be loaded")
    # the form-encoded payload GitHub can send instead, the hex in capitals, an empty body
    for sent, headers in ((b"payload=" + body, {"Content-Type": "application/x-www-form-urlencoded"}),
                          (body, {"Content-Type": "application/json", "case": "upper"}),
                          (b"", {})):
        signature = github(sent)
        if headers.pop("case", None):
            signature = "sha256=" + signature[7:].upper()
        assert _sync(served, sent, **{"X-Hub-Signature-256": signature}, **headers).status_code == 202


def test_a_push_with_gitlabs_token_syncs_without_a_bearer_token(served):
    sha = served.repo.commit({"pushed_gl.yml": {"command": "true"}}, "another job")
    r = _sync(served, push_body(sha), **{"X-Gitlab-Token": SECRET, "X-Gitlab-Event": "Push Hook",
                                         "Content-Type": "application/json"})
    assert (r.status_code, r.json()) == (202, {"status": "sync requested"})
    wait_for(lambda: _has_job(served, "pushed_gl"), 30, "the pushed job to be loaded")


GH_REFUSED = ("the push's X-Hub-Signature-256 is not the HMAC-SHA256 of its body with "
              "repository.sync_secret (expected the form sha256=HEX)")
GL_REFUSED = "the push's X-Gitlab-Token is not repository.sync_secret"


def test_a_bad_signature_is_401_naming_the_header_and_nothing_secret(served):
    before = served.answers.keep(served.get("/repo", headers=BEARER)).json()["commit"]
    served.repo.commit({"never.yml": {"command": "true"}}, "not to be synced by a bad push")
    body = push_body("0" * 40)
    cases = [
        ({"X-Hub-Signature-256": github(body, OTHER)}, GH_REFUSED),          # another secret
        ({"X-Hub-Signature-256": github(body + b" ")}, GH_REFUSED),          # another body
        ({"X-Hub-Signature-256": github(body)[7:]}, GH_REFUSED),             # no sha256= prefix
        ({"X-Hub-Signature-256": "sha1=" + hmac.new(SECRET.encode(), body, "sha1").hexdigest()}, GH_REFUSED),
        ({"X-Hub-Signature-256": ""}, GH_REFUSED),
        ({"X-Hub-Signature-256": SECRET}, GH_REFUSED),                       # the secret itself is no HMAC
        ({"X-Gitlab-Token": OTHER}, GL_REFUSED),
        ({"X-Gitlab-Token": SECRET[:-1]}, GL_REFUSED),
        ({"X-Gitlab-Token": SECRET + "x"}, GL_REFUSED),
        ({"X-Gitlab-Token": github(body)}, GL_REFUSED),
        ({"X-Hub-Signature-256": github(body), "X-Gitlab-Token": OTHER}, GL_REFUSED),   # both: each counts
        ({"X-Hub-Signature-256": github(body, OTHER), **BEARER}, GH_REFUSED),  # judged by it, token or not
    ]
    for headers, message in cases:
        r = _sync(served, body, **headers)
        assert (r.status_code, r.json()) == (401, {"error": message}), headers
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="overseer"'
    r = _sync(served, body)                                  # neither: then it needs a bearer token
    assert (r.status_code, r.json()) == (401, {"error": "missing or wrong bearer token"})
    assert served.answers.keep(served.get("/repo", headers=BEARER)).json()["commit"] == before


def test_a_signature_opens_only_the_sync_route(served):
    body = b'{"who": "x"}'
    signed = {"X-Hub-Signature-256": github(body), "Content-Type": "application/json"}
    for method, path in (("POST", "/jobs/ok"), ("GET", "/repo"), ("GET", "/jobs"), ("PUT", "/jobs/ok"),
                         ("DELETE", "/jobs/ok"), ("GET", "/repo/sync"), ("POST", "/repo"),
                         ("POST", "/repo/sync/x")):
        for headers in (signed, {"X-Gitlab-Token": SECRET}):
            r = served.answers.keep(served.req(method, path, data=body, headers=headers))
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"].startswith("missing or wrong bearer token (a git host's push signature "
                                                "opens POST /repo/sync only")
    assert served.answers.keep(served.get("/jobs/ok", headers=BEARER)).json()["executions"] == []


def test_a_signed_push_from_a_web_page_of_another_origin_is_403(served):
    body = push_body("1" * 40)
    for page in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                 {"Referer": "https://evil.example/page"}):
        for signature in ({"X-Hub-Signature-256": github(body)}, {"X-Gitlab-Token": SECRET}):
            r = _sync(served, body, **page, **signature)
            assert r.status_code == 403, (page, r.text)
            assert r.json()["error"].startswith("cross-origin request refused: ")


def test_the_secret_is_in_no_answer_and_no_log_line(served):
    # after the module's other tests (pytest runs a file's tests in order): all their answers
    assert len(served.answers.texts) > 40
    for text in served.answers.texts:
        assert SECRET not in text
    served.answers.keep(served.get("/health"))
    assert wait_for(lambda: " POST /repo/sync 401 " in served.log(), 10, "the access lines")
    log = served.log()
    assert SECRET not in log and SECRET[:12] not in log
    assert " POST /repo/sync 202 " in log and " POST /repo/sync 401 " in log
    holding = [str(p.relative_to(served.data)) for p in served.data.rglob("*")
               if p.is_file() and not p.is_symlink() and p.stat().st_size < 64 << 20
               and SECRET.encode() in p.read_bytes()]
    assert holding == []


# -- without tokens, without the secret: in-process servers over the real System -----------------

def _in_process(system_factory, **overrides):
    system = system_factory({"ok.yml": {"command": "true"}}, **overrides)
    http = HttpServer(system, system.config)
    http.start()
    return system, http


def test_without_sync_secret_a_signed_push_needs_the_bearer_token(system_factory):
    system, http = _in_process(system_factory, server={"tokens": [TOKEN]})
    try:
        url = system.config.base_url + "/repo/sync"
        body = push_body("2" * 40)
        r = requests.post(url, data=body, headers={"X-Hub-Signature-256": github(body)}, timeout=10)
        assert r.status_code == 401
        assert r.json()["error"] == ("missing or wrong bearer token (a git host's push signature opens "
                                     "POST /repo/sync only, and only with repository.sync_secret set)")
        assert requests.post(url, data=body, headers={"X-Hub-Signature-256": github(body), **BEARER},
                             timeout=10).status_code == 202
    finally:
        http.stop()


def test_without_tokens_a_signature_is_still_judged_when_the_secret_is_set(system_factory):
    system, http = _in_process(system_factory, repository={"sync_secret": SECRET})
    try:
        url = system.config.base_url + "/repo/sync"
        assert requests.post(url, timeout=10).status_code == 202          # open, as without tokens
        r = requests.post(url, headers={"X-Gitlab-Token": OTHER}, timeout=10)
        assert (r.status_code, r.json()) == (401, {"error": GL_REFUSED})
        assert requests.post(url, headers={"X-Gitlab-Token": SECRET}, timeout=10).status_code == 202
    finally:
        http.stop()


# -- the config key ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, problem", [
    ("short-secret", "must be at least 16 characters long, got 12 (make one with: openssl rand -hex 32)"),
    (" " + SECRET, "must not begin or end with white space (a header cannot carry it)"),
    (SECRET + "\n", "must not begin or end with white space (a header cannot carry it)"),
    (SECRET[:8] + "\x00" + SECRET[8:], "must not hold control characters (a header cannot carry them)"),
    (1234567890123456789, "must be a string, got a value of type int"),
    (["a" * 20], "must be a string, got a value of type list"),
])
def test_a_bad_sync_secret_is_refused_at_start_without_showing_it(value, problem):
    with pytest.raises(ConfigError) as caught:
        parse_config({"repository": {"url": "/r", "sync_secret": value}}, "c.yaml")
    assert caught.value.problems == [f"c.yaml: repository.sync_secret: {problem}"]
    assert str(value).strip()[:8] not in str(caught.value)


def test_a_good_sync_secret_is_kept_and_not_shown_in_the_config_repr():
    config = parse_config({"repository": {"url": "/r", "sync_secret": SECRET}})
    assert config.repository.sync_secret == SECRET
    assert SECRET not in repr(config)
    assert parse_config({}).repository.sync_secret is None
    with pytest.raises(ConfigError) as caught:
        parse_config({"hooks_secret": 12345678901234})
    assert caught.value.problems == ["config: hooks_secret: must be a string, got a value of type int"]
