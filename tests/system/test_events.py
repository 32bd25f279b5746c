"""Events from clients and jobs cannot rewrite a run's outcome (docs/guarantees.rst, Security):
a real ``overseer serve``, real jobs using the real ``event`` tool over the event socket, and a
real HTTP receiver for the webhooks."""
from __future__ import annotations

import json

import pytest

from overseer.http.app import OPENAPI
from overseer.model import executions as ex

from ..conftest import Receiver
from ..serving import start_server

# Written out, not read from overseer/model/executions.py: a name dropped there fails here.
RESERVED = ["complete", "queued", "start", "fail", "time-out", "lost", "output-truncated",
            "output-lost", "chain-refused", "lock-wait", "lock"]  # SPEC §5, §9-§11: the system's
NEVER = ["artifacts", "changes", "output", "progress", "stderr", "stdout"]  # SPEC §11: paths
TOOL_TRIES = "; ".join(f'event {name} forged; echo "{name}=$?"' for name in RESERVED + NEVER)

JOBS = {
    "fails.yml": {"command": "echo bad >&2; exit 3"},
    "quick.yml": {"command": "echo done"},
    "gated.yml": {"command": "while [ ! -e {{ gate }} ]; do sleep 0.02; done; echo through",
                  "vars": [{"name": "gate"}]},
    "tool.yml": {"command": TOOL_TRIES + '; event half-way "from the job"; echo "half-way=$?"; exit 3'},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    receiver = Receiver()
    server = start_server(tmp_path_factory.mktemp("events"), JOBS, {
        "hooks": {"*": [receiver.url + "/all"], "complete": [receiver.url + "/complete"]}})
    server.receiver = receiver
    yield server
    try:
        assert server.stop() == 0
        assert "Traceback" not in server.log()
    finally:
        receiver.close()


def bodies(server, job: str, ident: int, until: str) -> list[dict]:
    """The webhook bodies of one execution sent to ``*``, in order, once the one for ``until``
    (a later event) is there: one URL gets its deliveries in event order, so anything sent before
    it is in the list."""
    def mine(received):
        return [b for path, b, _ in received if path == "/all" and (b["job"], b["execution"]) == (job, ident)]
    got = server.receiver.wait(lambda r: any(b["status"] == until for b in mine(r)))
    return mine(got)


def refusal(r) -> str:
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"}
    return body["error"]


def test_api_cannot_rewrite_a_finished_runs_outcome(served):
    """The attack: ``PUT /jobs/fails/1 {"event": "complete"}`` on a run that exited 3 made it
    ``complete`` and fired the ``complete`` webhooks; ``queued`` made it ``queued`` again."""
    run = served.run("fails")["id"]
    before = served.wait("fails", run)
    assert before["status"] == "fail" and before["exit_code"] == 3
    for name in RESERVED:
        for body in ({"json": {"event": name, "cause": "forged"}}, {"data": {"event": name}}):
            error = refusal(served.req("PUT", f"/jobs/fails/{run}", **body))
            assert repr(name) in error and "reserved for the system" in error, error
    for name in NEVER:
        error = refusal(served.req("PUT", f"/jobs/fails/{run}", json={"event": name}))
        assert repr(name) in error and "reserved" in error, error
    assert served.execution("fails", run) == before  # nothing changed, not even the events
    assert served.get(f"/jobs/fails/{run}/complete").status_code == 404  # never recorded
    assert served.get(f"/jobs/fails/{run}/fail").json()["occurrences"][0]["source"] == "system"
    # A note after the refusals: every webhook sent before it has arrived by then.
    assert served.req("PUT", f"/jobs/fails/{run}", json={"event": "checked"}).status_code == 202
    sent = bodies(served, "fails", run, "checked")
    assert [b["status"] for b in sent] == ["queued", "start", "fail", "checked"]
    assert not any(p == "/complete" and b["job"] == "fails" for p, b, _ in served.receiver.received)


def test_a_running_run_refuses_system_events_and_ends_with_its_own_outcome(served, tmp_path):
    gate = tmp_path / "gate"
    run = served.run("gated", {"gate": str(gate)})["id"]
    served.wait("gated", run, state="running")
    for name in ("complete", "fail", "time-out", "lost", "start"):
        error = refusal(served.req("PUT", f"/jobs/gated/{run}", json={"event": name}))
        assert repr(name) in error and "reserved for the system" in error
    running = served.execution("gated", run)
    assert running["state"] == "running" and running["status"] == "start"
    assert served.req("PUT", f"/jobs/gated/{run}", json={"event": "deploying"}).status_code == 202
    assert served.execution("gated", run)["status"] == "deploying"  # while it runs: the status
    gate.touch()
    done = served.wait("gated", run)
    assert done["status"] == "complete"
    assert [e["name"] for e in done["events"]] == ["queued", "start", "deploying", "complete"]


def test_event_tool_refuses_reserved_names_from_a_real_job(served):
    run = served.run("tool")["id"]
    done = served.wait("tool", run)
    lines = served.get(f"/jobs/tool/{run}/stdout").text.splitlines()
    assert lines == [f"{name}=1" for name in RESERVED + NEVER] + ["half-way=0"]
    errors = served.get(f"/jobs/tool/{run}/stderr").text
    for name in RESERVED:
        said = f"event: event name {name!r} is reserved for the system: only the server records it\n"
        assert said in errors
    for name in NEVER:
        assert f"event: event name {name!r} is reserved" in errors
    assert done["status"] == "fail" and done["exit_code"] == 3
    assert [(e["name"], e["source"]) for e in done["events"]] == [
        ("queued", "system"), ("start", "system"), ("half-way", "job"), ("fail", "system")]


def test_a_note_after_the_end_keeps_the_status_and_tells_the_webhooks(served):
    run = served.run("fails")["id"]
    before = served.wait("fails", run)
    r = served.req("PUT", f"/jobs/fails/{run}", json={"event": "deployed", "cause": "by ci"})
    assert r.status_code == 202
    note = r.json()
    assert (note["name"], note["cause"], note["source"]) == ("deployed", "by ci", "api")
    after = served.execution("fails", run)
    assert after["status"] == "fail" and after["state"] == "finished"
    assert after["events"] == before["events"] + [note]
    del after["events"], before["events"]
    assert after == before  # state, status, exit code, times: all as the run left them
    assert served.get(f"/jobs/fails/{run}/deployed").json()["occurrences"] == [
        {"time": note["time"], "cause": "by ci", "source": "api"}]
    for signal in ("stop", "continue", "terminate", "kill"):  # no process: 409, as before
        assert served.req("PUT", f"/jobs/fails/{run}", json={"event": signal}).status_code == 409
    sent = bodies(served, "fails", run, "deployed")
    last = sent[-1]
    assert (last["status"], last["cause"], last["source"]) == ("deployed", "by ci", "api")
    assert (last["state"], last["outcome"]) == ("finished", "fail")  # the run is over, and failed
    assert served.execution("fails", run)["status"] == "fail"


def test_webhook_bodies_carry_source_state_and_outcome(served, tmp_path):
    gate = tmp_path / "gate"
    run = served.run("gated", {"gate": str(gate)})["id"]
    served.wait("gated", run, state="running")
    assert served.req("PUT", f"/jobs/gated/{run}", json={"event": "deploying"}).status_code == 202
    gate.touch()
    served.wait("gated", run)
    tool = served.run("tool")["id"]
    served.wait("tool", tool)
    sent = bodies(served, "gated", run, "complete")
    keys = {"job", "execution", "status", "cause", "time", "metadata", "source", "state", "outcome"}
    assert all(set(b) == keys for b in sent)
    assert [(b["status"], b["source"], b["state"], b["outcome"]) for b in sent] == [
        ("queued", "system", "queued", None), ("start", "system", "running", None),
        ("deploying", "api", "running", None), ("complete", "system", "finished", "complete")]
    by_job = bodies(served, "tool", tool, "fail")
    assert [(b["status"], b["source"], b["outcome"]) for b in by_job] == [
        ("queued", "system", None), ("start", "system", None), ("half-way", "job", None),
        ("fail", "system", "fail")]


def test_the_api_description_lists_the_reserved_names():
    """overseer/http/openapi.json repeats what overseer/model/executions.py defines: kept equal here."""
    doc = json.loads(OPENAPI.read_text())
    content = doc["paths"]["/jobs/{job}/{id}"]["put"]["requestBody"]["content"]
    for schema in content.values():
        event = schema["schema"]["properties"]["event"]
        assert event["pattern"] == f"^{ex.EVENT_NAME_PATTERN}$"
        assert set(event["not"]["enum"]) == ex.SYSTEM_EVENTS | ex.PATH_NAMES == set(RESERVED + NEVER)
