"""Events bounded per execution (``execution.max_events``), and a job list that reads no events:
a real job storming its event tool, a real API client, a real webhook receiver, the real store."""
from __future__ import annotations

import json

import lmdb
import pytest
import requests

from overseer.store import Store
from overseer.store.keys import exec_key

from ..waiting import wait_finished, wait_for

pytestmark = pytest.mark.slow


def test_events_past_max_events_are_counted_not_kept_and_the_end_is_always_kept(system_factory, receiver,
                                                                                tmp_path):
    gate = tmp_path / "gate"
    command = ("set -e; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do event e$i \"step $i\"; done; "
               f"while [ ! -e {gate} ]; do sleep 0.05; done")
    s = system_factory({"storm.yml": {"command": command}}, execution={"max_events": 10},
                       hooks={"*": [receiver.url + "/all"]})
    s.trigger("storm", {})
    # queued, start and e1..e8 fill the ten; e9..e12 from the job are counted (the tool still says ok).
    wait_for(lambda: s.execution("storm", 1).get("events_dropped") == 4, 30, "four dropped", store=s.store)
    for i in range(13, 23):  # ten more from the API: answered as usual, counted
        assert s.create_event("storm", 1, f"e{i}", "from the api")["name"] == f"e{i}"
    running = wait_for(lambda: (r := s.execution("storm", 1)).get("events_dropped") == 8 and r, 30,
                       "the count written at 8", store=s.store)  # written at 1, 2, 4, 8, ... while it runs
    assert running["status"] == "e8" and len(running["events"]) == 10
    gate.write_text("go")
    done = wait_finished(s, "storm", 1)
    names = [e["name"] for e in done["events"]]
    assert names == ["queued", "start"] + [f"e{i}" for i in range(1, 9)] + ["complete"]  # the end is kept
    assert done["status"] == "complete" and done["events_dropped"] == 14  # exact at the end
    # Notes after the end are bounded the same way.
    s.create_event("storm", 1, "late", None)
    assert s.execution("storm", 1)["events_dropped"] == 15
    # Only kept events went to the webhook.
    got = receiver.wait(lambda r: any(b["status"] == "complete" for _, b, _ in r))
    assert [b["status"] for _, b, _ in got] == names


def test_events_within_max_events_are_all_kept_with_no_count(system_factory):
    s = system_factory({"few.yml": {"command": "event one; event two"}}, execution={"max_events": 5})
    s.trigger("few", {})
    done = wait_finished(s, "few", 1)
    assert [e["name"] for e in done["events"]] == ["queued", "start", "one", "two", "complete"]
    assert "events_dropped" not in done


def test_the_job_list_shows_the_last_run_without_its_events(serve):
    s, _ = serve({"chatty.yml": {"command": "true"}})  # the real HTTP layer on a real port
    s.trigger("chatty", {})
    wait_finished(s, "chatty", 1)
    for i in range(50):
        s.create_event("chatty", 1, f"note-{i}", "x" * 4000)
    session = requests.Session()
    session.trust_env = False
    jobs = session.get(s.config.base_url + "/jobs", timeout=30).json()["jobs"]
    (last,) = [j["last_execution"] for j in jobs if j["name"] == "chatty"]
    assert last["id"] == 1 and last["status"] == "complete" and last["state"] == "finished"
    assert "events" not in last and last["links"]["stdout"].endswith("/jobs/chatty/1/stdout")
    full = session.get(s.config.base_url + "/jobs/chatty/1", timeout=30).json()
    assert len(full["events"]) == 53
    assert {k: v for k, v in full.items() if k != "events"} == last


def _raw_put(path, job, ident, value: bytes):
    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(exec_key(job, ident), value, db=env.open_db(b"executions", txn=txn))
    env.close()


def test_the_last_run_summary_reads_no_further_than_the_head(tmp_path):
    path = tmp_path / "db"
    with Store(path) as store:
        record = store.create_execution("job", {"state": "finished", "status": "complete",
                                                "events": [{"name": "complete"}]})
    head = {k: v for k, v in record.items() if k != "events"}
    # Events that would not even decode: the summary never reads them.
    _raw_put(path, "job", 1, json.dumps(head, separators=(",", ":")).encode() + b"\n[{not json")
    with Store(path) as store:
        assert store.last_summary("job") == head
        assert store.last_summary("other") is None


def test_records_written_whole_before_events_were_kept_apart_still_read(tmp_path):
    path = tmp_path / "db"
    with Store(path) as store:
        record = store.create_execution("job", {"state": "running", "status": "start", "note": "a\nb",
                                                "events": [{"name": "queued"}, {"name": "start"}]})
    _raw_put(path, "job", 1, json.dumps(record, separators=(",", ":")).encode())  # the older layout
    with Store(path) as store:
        assert store.get_execution("job", 1) == record
        assert store.list_executions("job") == [record]
        assert store.last_summary("job") == {k: v for k, v in record.items() if k != "events"}
        assert [r["id"] for r in store.executions_in_states({"running"})] == [1]
        updated = store.update_execution("job", 1, lambda r: r["events"].append({"name": "x"}))
        assert [e["name"] for e in updated["events"]] == ["queued", "start", "x"]
        assert store.get_execution("job", 1) == updated
