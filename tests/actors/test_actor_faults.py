"""An exception inside each actor's message handler (planted through the test-only
``Context.faults`` hook): the system keeps working, the affected execution ends
finished, and no process is left behind."""
from __future__ import annotations

import os

from ..waiting import wait_finished, wait_for


class Injected(RuntimeError):
    pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:  # gone (ENOENT), or reaped between open and read (ESRCH)
        return False
    return stat.split(") ")[1][0] != "Z"


def test_execution_actor_failure_on_exit_still_finishes(system_factory):
    s = system_factory({"j.yml": {"command": "echo out"}})
    s.ctx.faults["execution.ProcessExited"] = Injected("boom on exit")
    s.trigger("j", {})
    done = wait_finished(s, "j", 1)
    assert done["status"] == "fail" and "internal error: boom on exit" in done["events"][-1]["cause"]
    assert s.store.read_output("j", 1, "stdout") == b"out\n"
    assert (("j", 1)) not in s.ctx.running
    s.trigger("j", {})  # the system goes on
    assert wait_finished(s, "j", 2)["status"] == "complete"


def test_execution_actor_failure_while_running_kills_the_process(system_factory):
    s = system_factory({"long.yml": {"command": "echo $$; sleep 300", "timeout": 1}})
    s.ctx.faults["execution.TimedOut"] = Injected("boom on time-out")
    s.trigger("long", {})
    done = wait_finished(s, "long", 1)
    assert done["state"] == "finished" and done["status"] == "fail"
    pid = int(s.store.read_output("long", 1, "stdout"))
    wait_for(lambda: not _alive(pid), 10, "process gone")


def test_execution_actor_failure_at_start(system_factory):
    s = system_factory({"j.yml": {"command": "true"}})
    s.ctx.faults["execution.start"] = Injected("boom at start")
    s.trigger("j", {})
    done = wait_finished(s, "j", 1)
    assert done["status"] == "fail" and "boom at start" in done["events"][-1]["cause"]
    s.trigger("j", {})
    assert wait_finished(s, "j", 2)["status"] == "complete"


def test_scheduler_failure_is_restarted_and_keeps_firing(system_factory):
    s = system_factory({"tick.yml": {"command": "true", "schedule": [{"frequency": 1}]}})
    first = s.supervisor.proxy().child("scheduler").get(timeout=10)
    wait_finished(s, "tick", 1)
    s.ctx.faults["scheduler.Tick"] = Injected("boom in the scheduler")  # the next tick kills it
    wait_for(lambda: s.supervisor.proxy().child("scheduler").get(timeout=10) is not first, 10,
             "scheduler restarted")
    newest = s.store.last_execution("tick")["id"]
    done = wait_finished(s, "tick", newest + 1)  # the restarted scheduler fires again
    assert done["status"] == "complete" and done["trigger"] == "schedule"
    slots = [r["scheduled_for"] for r in s.store.list_executions("tick", limit=100)]
    assert len(slots) == len(set(slots))  # no slot fired twice across the restart
    s.trigger("tick", {})  # API triggers never depended on it
    assert wait_finished(s, "tick", s.store.last_execution("tick")["id"])["status"] == "complete"


def test_api_runs_start_while_the_scheduler_is_down(system_factory):
    s = system_factory({"j.yml": {"command": "true"}})
    s.supervisor.proxy().child("scheduler").get(timeout=10).stop()
    s.trigger("j", {})
    assert wait_finished(s, "j", 1)["status"] == "complete"


def test_notifier_failure_is_restarted(system_factory, receiver):
    s = system_factory({"j.yml": {"command": "true"}}, hooks={"complete": [receiver.url + "/h"]})
    first = s.supervisor.proxy().child("notifier").get(timeout=10)
    s.ctx.faults["notifier.EventRecorded"] = Injected("boom in the notifier")
    s.trigger("j", {})
    wait_finished(s, "j", 1)
    wait_for(lambda: s.supervisor.proxy().child("notifier").get(timeout=10) is not first, 10,
             "notifier restarted")
    s.trigger("j", {})
    wait_finished(s, "j", 2)
    got = receiver.wait(lambda r: any(b["execution"] == 2 for _, b, _ in r))
    assert [b["status"] for _, b, _ in got if b["execution"] == 2] == ["complete"]


def test_repo_sync_failure_is_reported_not_fatal(system_factory, job_repo):
    s = system_factory({"j.yml": {"command": "true"}})
    s.ctx.faults["repo_sync.sync"] = Injected("boom in sync")
    job_repo.commit({"k.yml": {"command": "true"}})
    s.sync()
    assert "boom in sync" in s.repo_info()["sync_error"]
    s.sync()
    assert {j.name for j in s.jobs()} == {"j", "k"} and "sync_error" not in s.repo_info()
    assert os.path.isdir(s.catalog.snapshot(s.repo_info()["commit"]))
