"""Webhooks for every run's life, however it was made and however it ended: a scheduled run's
``queued``, and ``lost`` for the runs a crashed server left (told after the restart's recovery) and
for the runs a graceful stop never started. Real servers, real jobs, a real HTTP receiver."""
from __future__ import annotations

import datetime as dt

import pytest

from ..serving import Server
from ..waiting import wait_finished, wait_for

pytestmark = pytest.mark.slow


def _bodies(received, path):
    return [body for got, body, _ in received if got == path]


def test_a_scheduled_run_sends_queued_like_a_triggered_one(system_factory, receiver):
    s = system_factory({"nightly.yml": {"command": "echo night",
                                        "schedule": [{"time": "2099-01-01T00:00:00Z"}],
                                        "hooks": {"queued": [receiver.url + "/job-queued"]}}},
                       hooks={"*": [receiver.url + "/all"]})
    later = dt.datetime(2099, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc)
    (fired,) = s.ctx.scheduler.proxy().tick(later).get(timeout=10)
    assert fired["trigger"] == "schedule"
    wait_finished(s, "nightly", fired["id"])
    got = receiver.wait(lambda r: len(_bodies(r, "/all")) == 3 and _bodies(r, "/job-queued"))
    assert [b["status"] for b in _bodies(got, "/all")] == ["queued", "start", "complete"]
    (queued,) = _bodies(got, "/job-queued")
    assert queued["job"] == "nightly" and queued["execution"] == fired["id"] and queued["state"] == "queued"


def test_runs_a_crashed_server_left_are_told_lost_after_the_restart(tmp_path, receiver):
    server = Server(tmp_path, {"long.yml": {"command": "echo up; sleep 300",
                                            "hooks": {"lost": [receiver.url + "/job-lost"]}}},
                    {"hooks": {"lost": [receiver.url + "/server-lost"]}}).start()
    try:
        first = server.run("long")
        server.wait("long", first["id"], state="running")
        server.kill()
        server.start()
        got = receiver.wait(lambda r: _bodies(r, "/job-lost") and _bodies(r, "/server-lost"))
        for body in _bodies(got, "/job-lost") + _bodies(got, "/server-lost"):
            assert body["job"] == "long" and body["execution"] == first["id"]
            assert body["status"] == "lost" and body["state"] == "finished" and body["outcome"] == "lost"
            assert body["source"] == "system" and "the server stopped" in body["cause"]
        assert server.execution("long", first["id"])["status"] == "lost"
    finally:
        server.stop(timeout=30)


def test_a_run_a_graceful_stop_never_started_is_told_lost(system_factory, receiver):
    s = system_factory({"long.yml": {"command": "echo up; sleep 300", "max_concurrent": 1}},
                       hooks={"lost": [receiver.url + "/lost"]})
    s.trigger("long", {})
    wait_for(lambda: s.store.read_output("long", 1, "stdout") == b"up\n", store=s.store)
    waiting = s.trigger("long", {})
    assert s.execution("long", waiting["id"])["state"] == "queued"
    s.stop()
    got = receiver.wait(lambda r: _bodies(r, "/lost"))
    (lost,) = _bodies(got, "/lost")
    assert lost["execution"] == waiting["id"] and lost["status"] == "lost"
