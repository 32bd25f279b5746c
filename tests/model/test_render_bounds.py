"""Rendering bounded in time and size (overseer/model/render_pool.py, overseer/model/render.py), against real
servers and real schedules: a template that never ends is stopped at ``execution.max_render_seconds``
without holding up the Scheduler, the API or a graceful stop, and a command over the size limit is
refused naming the job and the limit, before anything is stored."""
from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

import pytest

from overseer.exceptions import ParamError
from overseer.model import render

from ..serving import alive, start_server
from ..waiting import wait_finished, wait_for

pytestmark = pytest.mark.slow

# 10^15 empty loop turns: a render that never ends.
FOREVER = ("{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
           "{% endfor %}{% endfor %}{% endfor %}echo never")
EVERY_SECOND = [{"frequency": 1}]


def _finished(system, job):
    """The finished executions of ``job``, oldest first."""
    return sorted((r for r in system.executions(job, limit=100) if r["state"] == "finished"),
                  key=lambda r: r["id"])


def test_a_template_that_never_ends_holds_up_no_other_scheduled_job(system_factory):
    s = system_factory({"slow.yml": {"command": FOREVER, "schedule": EVERY_SECOND},
                        "quick.yml": {"command": "echo quick", "schedule": EVERY_SECOND}},
                       execution={"max_render_seconds": 1})
    # The quick job fires every second while the slow one's render runs out its second.
    wait_for(lambda: len(_finished(s, "quick")) >= 3, 30, "three runs of the quick job", store=s.store)
    failed = wait_for(lambda: _finished(s, "slow"), 30, "a run of the slow job", store=s.store)
    # Each slot of the slow job is a run that failed at once, saying why; it never started.
    for run in failed:
        assert run["status"] == "fail" and run["trigger"] == "schedule" and run["scheduled_for"]
        assert run["started_at"] is None and run["pid"] is None and run["command"] is None
        assert [e["name"] for e in run["events"]] == ["queued", "fail"]
        cause = run["events"][-1]["cause"]
        assert "the command could not be rendered" in cause and "execution.max_render_seconds" in cause
        assert "longer than 1 s" in cause
    assert all(r["status"] == "complete" for r in _finished(s, "quick"))
    # Later slots of the same definition fail at once too (the outcome is kept per definition).
    count = len(failed)
    wait_for(lambda: len(_finished(s, "slow")) > count + 1, 30, "more failed slots", store=s.store)


def test_triggers_of_a_template_that_never_ends_are_refused_and_the_api_answers_meanwhile(tmp_path):
    server = start_server(tmp_path, {"slow.yml": {"command": FOREVER},
                                     "quick.yml": {"command": "echo quick"}},
                          {"execution": {"max_render_seconds": 1}})
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            slow = [pool.submit(server.req, "POST", "/jobs/slow", json={}, timeout=60) for _ in range(8)]
            # While the eight render (or wait for a render process), the API serves others.
            quick = server.run("quick")
            assert server.wait("quick", quick["id"])["status"] == "complete"
            assert server.get("/jobs").status_code == 200
            answers = [f.result() for f in slow]
        for r in answers:
            assert r.status_code in (400, 503), (r.status_code, r.text)
            error = r.json()["error"]
            assert "'slow'" in error and "execution.max_render_seconds" in error, error
        assert any(r.status_code == 400 and "longer than 1 s" in r.json()["error"] for r in answers)
        assert server.get("/jobs/slow").json()["executions"] == []  # nothing was stored
        log = server.log()
        assert "Traceback" not in log
    finally:
        server.stop(timeout=30)


def _render_workers(server_pid):
    """The pids of the render processes the server started."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == server_pid and b"overseer.model.render_worker" in cmdline:
            found.append(int(proc.name))
    return found


def _cpu_seconds(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_graceful_stop_is_not_held_up_by_a_template_that_never_ends(tmp_path):
    server = start_server(tmp_path, {"slow.yml": {"command": FOREVER, "schedule": EVERY_SECOND}},
                          {"execution": {"max_render_seconds": 30}})
    try:
        first = wait_for(lambda: server.get("/jobs/slow").json()["next_runs"], 30, "the job's next runs")[0]
        wait_for(lambda: server.get("/jobs/slow", timeout=60).json()["next_runs"][0] != first, 30,
                 "a slot to fire (its render begins)")
        workers = _render_workers(server.pid)
    finally:
        status = server.stop(timeout=30)
    assert status == 0, f"the server did not stop by itself: {status}\n{server.log()[-2000:]}"
    wait_for(lambda: not any(alive(pid) for pid in workers), 10, "the render processes to end")


def test_a_render_process_ends_with_a_server_that_is_killed_mid_render(tmp_path):
    server = start_server(tmp_path, {"slow.yml": {"command": FOREVER, "schedule": EVERY_SECOND}},
                          {"execution": {"max_render_seconds": 60}})
    try:
        workers = wait_for(lambda: _render_workers(server.pid), 30, "a render process")
        # Mid-render: the worker has spun a second of CPU (its start takes a fraction of that).
        wait_for(lambda: any(_cpu_seconds(pid) > 1 for pid in workers), 30, "a render in progress")
    finally:
        server.kill()
    wait_for(lambda: not any(alive(pid) for pid in workers), 10, "the render processes to end")


def test_a_command_over_the_size_limit_is_refused_naming_the_job_and_the_limit(tmp_path):
    limit = render.MAX_COMMAND_BYTES
    server = start_server(tmp_path, {
        "huge.yml": {"command": "echo {{ 'x' * 50000000 }}"},   # 50 MB from a short template
        "big.yml": {"command": "true {{ v }}", "vars": [{"name": "v"}]},
        "later.yml": {"command": "echo {{ 'x' * 200000 }}", "schedule": EVERY_SECOND},
    })
    try:
        r = server.req("POST", "/jobs/huge", json={})
        assert r.status_code == 400 and len(r.content) < 1000, (r.status_code, r.text[:300])
        assert "'huge'" in r.json()["error"] and f"limit of {limit} bytes" in r.json()["error"]
        r = server.req("POST", "/jobs/big", json={"v": "a" * (limit - 4)})  # "true " + v: one byte over
        assert r.status_code == 400
        assert f"is {limit + 1} bytes, over the limit of {limit}" in r.json()["error"]
        assert server.get("/jobs/huge").json()["executions"] == []
        assert server.get("/jobs/big").json()["executions"] == []
        # A command of exactly the limit runs: the limit leaves room for what exec takes.
        ok = server.run("big", {"v": "a" * (limit - 5)})
        assert len(ok["command"].encode()) == limit
        assert server.wait("big", ok["id"])["status"] == "complete"
        # On a schedule, each slot is a run that fails at once with the cause.
        failed = wait_for(lambda: [e for e in server.get("/jobs/later").json()["executions"]
                               if e["state"] == "finished"], 30, "a failed scheduled run")
        assert failed[0]["status"] == "fail" and f"limit of {limit} bytes" in failed[0]["events"][-1]["cause"]
        assert "Traceback" not in server.log()
    finally:
        server.stop(timeout=30)


def test_a_template_that_runs_out_of_memory_is_refused_and_the_server_carries_on(system_factory):
    s = system_factory({"hog.yml": {"command": "echo {{ 'x' * 5000000000 }}"},
                        "ok.yml": {"command": "{% if true %}echo fine{% endif %}"}})
    with pytest.raises(ParamError, match="'hog': rendering the command ran out of memory"):
        s.trigger("hog", {})
    done = wait_finished(s, "ok", s.trigger("ok", {})["id"])
    assert done["status"] == "complete" and s.store.read_output("ok", 1, "stdout") == b"fine\n"


def test_the_render_process_is_bounded_in_memory_and_runs_below_the_server():
    from overseer.model import render_pool

    worker = render_pool._Worker()
    try:
        worker.wait_ready()
        limits = Path(f"/proc/{worker.proc.pid}/limits").read_text()
        line = next(row for row in limits.splitlines() if row.startswith("Max address space"))
        assert str(512 << 20) in line
        assert os.getpriority(os.PRIO_PROCESS, worker.proc.pid) >= os.getpriority(os.PRIO_PROCESS, 0) + 10
    finally:
        worker.close()
    assert not alive(worker.proc.pid)

