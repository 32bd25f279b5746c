"""Restarts: a SIGKILLed server's executions are `lost` with their output kept, their
processes gone and ids continuing; schedules never fire one slot twice."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

from overseer.actors.system import System

from overseer.store import Store

from ..conftest import make_config
from ..waiting import wait_for

SERVER = textwrap.dedent("""
    import json, sys, threading
    from overseer.config import parse_config
    from overseer.actors.system import System
    system = System(parse_config(json.loads(sys.argv[1]))).start()
    rec = system.trigger("talker", {})
    print(rec["id"], flush=True)
    threading.Event().wait()
""")


def _config_data(config) -> dict:
    return {"repository": {"url": config.repository.url, "branch": "main", "poll_interval": 0},
            "data_dir": config.data_dir, "execution": {"kill_grace": 1}}


def test_sigkilled_server_leaves_lost_execution_with_output(tmp_path, job_repo):
    command = "echo first; echo err >&2; sleep 0.2; echo pgid $$; sleep 300"
    job_repo.commit({"talker.yml": {"command": command}})
    config = make_config(tmp_path, job_repo, execution={"kill_grace": 1})
    proc = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(_config_data(config))],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "1"
        # Wait until the job's output is committed, reading the store the way a second process would.
        from overseer.store import Store
        marker = tmp_path / "data" / "store"
        wait_for(lambda: marker.exists(), what="store")

        def has_pgid():
            store = Store(marker)
            try:
                return b"pgid" in store.read_output("talker", 1, "stdout")
            finally:
                store.close()
        wait_for(has_pgid, 30, "output committed")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    system = System(config).start()
    try:
        record = system.execution("talker", 1)
        assert record["state"] == "finished" and record["status"] == "lost"
        stdout = system.store.read_output("talker", 1, "stdout")
        assert stdout.startswith(b"first\npgid ")
        assert system.store.read_output("talker", 1, "stderr") == b"err\n"
        pgid = int(stdout.split()[2])
        wait_for(lambda: not _group_alive(pgid), 10, "orphaned process group gone")
        assert system.trigger("talker", {})["id"] == 2  # ids continue
    finally:
        system.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_graceful_stop_terminates_and_finishes(system_factory):
    s = system_factory({"long.yml": {"command": "echo up; sleep 300"}})
    for _ in range(3):
        s.trigger("long", {})
    wait_for(lambda: all(s.store.read_output("long", i, "stdout") == b"up\n" for i in (1, 2, 3)),
             store=s.store)
    s.trigger("long", {})  # may still be starting or queued: either way it ends finished
    store_path = s.config.data_path
    s.stop()
    system = System(s.config).start()
    try:
        for i in (1, 2, 3):
            record = system.execution("long", i)
            assert record["state"] == "finished" and record["status"] == "fail"
            assert record["signal"] == "SIGTERM"
        assert system.execution("long", 4)["state"] == "finished"
    finally:
        system.stop()
    assert store_path.exists()


def test_schedule_never_fires_a_slot_twice_across_restarts(system_factory):
    s = system_factory({"tick.yml": {"command": "true", "schedule": [{"frequency": "* * * * * *"}]}})
    wait_for(lambda: s.store.get_execution("tick", 2), 20, "two scheduled runs", store=s.store)
    config = s.config
    s.stop()
    s2 = System(config).start()
    s2.stop()
    s3 = System(config).start()
    try:
        first = s3.store.list_executions("tick", limit=1000)
        wait_for(lambda: s3.store.get_execution("tick", len(first) + 2), 20, "more runs", store=s3.store)
    finally:
        s3.stop()
    from overseer.store import Store
    store = Store(config.data_path / "store")
    try:
        runs = store.list_executions("tick", limit=1000)
    finally:
        store.close()
    slots = [r["scheduled_for"] for r in runs]
    assert len(slots) == len(set(slots)) >= 4
    assert all(r["trigger"] == "schedule" for r in runs)
    ids = sorted(r["id"] for r in runs)
    assert ids == list(range(1, len(ids) + 1))


def test_a_run_launching_while_the_server_stops_starts_no_process(system_factory, tmp_path):
    marker = tmp_path / "started"
    s = system_factory({"j.yml": {"command": f"touch {marker}; sleep 30"}})
    entered, release = threading.Event(), threading.Event()
    plain = s.ctx.inject

    def inject(point):
        if point == "execution.start":
            entered.set()
            release.wait(10)
        plain(point)

    s.ctx.inject = inject
    # The run starts on the trigger's own thread (its HTTP worker in the server): trigger from one.
    trigger = threading.Thread(target=s.trigger, args=("j", {}))
    trigger.start()
    assert entered.wait(10)
    stopper = threading.Thread(target=s.stop)
    stopper.start()
    wait_for(lambda: s.ctx.stopping, 10, "the supervisor to begin stopping")
    release.set()
    stopper.join(30)
    trigger.join(10)
    assert not stopper.is_alive() and not trigger.is_alive()
    assert not marker.exists()
    with Store(s.config.data_path / "store") as store:
        record = store.get_execution("j", 1)
    assert record["state"] == "finished" and record["status"] == "lost"


def test_every_left_over_execution_is_finished_lost_however_many(system_factory, job_repo, tmp_path, caplog):
    """More left-overs than the log names one by one: all of them end lost (in group commits),
    and the log says how many it did not name."""
    from overseer.actors.supervisor import LOG_EACH

    job_repo.commit({"j.yml": {"command": "true"}}, "a job")
    n = LOG_EACH + 70
    with Store(tmp_path / "data" / "store") as store:
        for i in range(n):
            store.create_execution("j", {"state": ("queued", "running", "stopped")[i % 3], "events": []})
    caplog.set_level("WARNING", logger="overseer.actors.supervisor")
    s = system_factory()
    records = s.store.list_executions("j", limit=n + 10)
    assert len(records) == n
    assert all(r["state"] == "finished" and r["events"][-1]["name"] == "lost" for r in records)
    assert f"... and {n - LOG_EACH} more executions lost" in caplog.text
