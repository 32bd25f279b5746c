"""Webhooks against real HTTP receivers: order, dead and slow endpoints, signatures."""
from __future__ import annotations

import hashlib
import hmac
import logging

from ..conftest import free_port
from ..waiting import wait_finished, wait_for


def test_webhooks_in_order_with_dead_and_slow_endpoints(system_factory, receiver):
    dead = f"http://127.0.0.1:{free_port()}/dead"
    receiver.delay["/slow"] = 1.0
    s = system_factory(
        {"hooked.yml": {"command": "event half-way 50%; echo done",
                        "hooks": {"half-way": [receiver.url + "/job-half-way"]}}},
        hooks={"*": [dead, receiver.url + "/slow", receiver.url + "/all"],
               "complete": [receiver.url + "/done"]},
        hooks_secret="s3cret", server={"base_url": "http://overseer.example:8080"})
    s.trigger("hooked", {})
    wait_finished(s, "hooked", 1)
    got = receiver.wait(lambda r: len([p for p, _, _ in r if p == "/all"]) == 4
                        and any(p == "/done" for p, _, _ in r) and any(p == "/job-half-way" for p, _, _ in r))
    everything = [body for path, body, _ in got if path == "/all"]
    assert [b["status"] for b in everything] == ["queued", "start", "half-way", "complete"]
    first = everything[0]
    assert first["job"] == "hooked" and first["execution"] == 1 and first["cause"] is None
    assert first["metadata"] == "http://overseer.example:8080/jobs/hooked/1"
    assert first["time"].endswith("Z")
    half = [body for path, body, _ in got if path == "/job-half-way"]
    assert half[0]["cause"] == "50%"
    # The slow endpoint gets them all, later, in order; the dead one delayed nobody.
    slow = receiver.wait(lambda r: len([p for p, _, _ in r if p == "/slow"]) == 4, timeout=30)
    assert [b["status"] for p, b, _ in slow if p == "/slow"] == ["queued", "start", "half-way", "complete"]
    headers = got[0][2]
    expected = "sha256=" + hmac.new(b"s3cret", headers["raw_body"], hashlib.sha256).hexdigest()
    assert headers["X-Overseer-Signature"] == expected


def test_retries_on_5xx_and_no_redirects(system_factory, receiver):
    receiver.status["/flaky"] = [503, 500]
    receiver.status["/moved"] = [302]
    s = system_factory({"j.yml": {"command": "true"}},
                       hooks={"complete": [receiver.url + "/flaky", receiver.url + "/moved"]})
    s.trigger("j", {})
    wait_finished(s, "j", 1)
    got = receiver.wait(lambda r: len([p for p, _, _ in r if p == "/flaky"]) == 3, timeout=30)
    assert [p for p, _, _ in got].count("/moved") == 1
    assert not any(p == "/elsewhere" for p, _, _ in got)


def test_webhook_credentials_and_query_never_reach_the_log(system_factory, receiver, caplog):
    """The log names a webhook by scheme, host, port and path only (actors/notifier.py)."""
    url = receiver.url.replace("http://", "http://hookuser:hookpass@") + "/path;p=secretparam?token=sekrit"
    with caplog.at_level(logging.INFO, logger="overseer.actors.notifier"):
        s = system_factory({"j.yml": {"command": "true"}}, hooks={"complete": [url]})
        s.trigger("j", {})
        wait_finished(s, "j", 1)
        assert receiver.wait(lambda r: any(p.startswith("/path") for p, _, _ in r))
        wait_for(lambda: any("delivered" in m for m in caplog.messages), what="the delivery's log line")
    logged = caplog.text
    assert f"{receiver.url}/path" in logged
    for secret in ("hookuser", "hookpass", "secretparam", "sekrit"):
        assert secret not in logged, secret
