"""Daemons a job starts (``setsid`` and a double fork) die with its run, and with a crashed server's
runs at the restart: a real ``overseer serve``, real processes, on both paths (a cgroup per
execution where one is writable, and the process group alone with ``OVERSEER_NO_CGROUPS=1``).

The daemon of every job here is started as daemons are: the job's shell runs a shell in a session
of its own, which starts ``sleep`` and exits at once. The ``sleep`` is then in none of the job's
process group, session or process tree; only its cgroup (where there is one) and its environment
still say whose it is.
"""
from __future__ import annotations

import os
import sys

import pytest

from overseer.process import cgroups

from ..serving import Server, alive
from ..waiting import wait_for

pytestmark = pytest.mark.slow

DAEMON = "setsid sh -c 'sleep 300 </dev/null >/dev/null 2>&1 & echo daemon $!'; echo main $$; "
JOBS = {
    "ends.yml": {"command": DAEMON + "sleep 0.5"},
    "runs.yml": {"command": DAEMON + "sleep 300"},
    "times-out.yml": {"command": DAEMON + "sleep 300", "timeout": 1},
    # A daemon that drops its environment on the way (env -i) carries nothing of its run.
    "bare.yml": {"command": "setsid env -i sh -c 'sleep 300 </dev/null >/dev/null 2>&1 & echo daemon $!'; "
                            "echo main $$; sleep 0.5"},
    # Orphans that end on their own while the run goes on, and children it never waits for.
    "litter.yml": {"command": DAEMON + "for i in 1 2 3 4 5; do setsid sh -c 'sleep 0.1 &'; (sleep 0.1 &); "
                              "done; " + sys.executable + " -c \"import subprocess, time; "
                              "[subprocess.Popen(['true'], start_new_session=True) for _ in range(5)]; "
                              "time.sleep(0.5)\"; sleep 1"},
}
END_JOB = {"exit": "ends", "terminate": "runs", "kill": "runs", "time-out": "times-out"}
STATUS = {"exit": "complete", "terminate": "fail", "kill": "fail", "time-out": "time-out"}


def _cgroup_mount():
    root = cgroups.CgroupRoot.find() if not os.environ.get("OVERSEER_NO_CGROUPS") else None
    if root is None:
        return None
    root.remove()
    return root.path.parent


CGROUP_MOUNT = _cgroup_mount()


def _server(tmp, kind: str, files: dict = JOBS) -> Server:
    if kind == "cgroup" and CGROUP_MOUNT is None:
        pytest.skip("no writable cgroup v2 hierarchy with cgroup.kill here")
    server = Server(tmp, files, {"execution": {"kill_grace": 1}})
    server.env.pop("OVERSEER_NO_CGROUPS", None)
    if kind == "process-group":
        server.env["OVERSEER_NO_CGROUPS"] = "1"
    server.kind = kind
    return server


def _check_kind(server: Server) -> None:
    assert ("each execution gets its own cgroup" in server.log()) == (server.kind == "cgroup")


@pytest.fixture(scope="module", params=["cgroup", "process-group"])
def served(request, tmp_path_factory):
    server = _server(tmp_path_factory.mktemp(request.param), request.param).start()
    _check_kind(server)
    yield server
    server.stop()


def _stat(pid: int) -> dict:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return {"state": fields[0], "ppid": int(fields[1]), "pgrp": int(fields[2]), "session": int(fields[3])}


def _pids(server: Server, job: str, ident: int) -> dict:
    """The pids the job printed: ``{"daemon": PID, "main": PID}``."""
    out = wait_for(lambda: (o := server.get(f"/jobs/{job}/{ident}/stdout").content).count(b"\n") >= 2 and o,
               20, f"the pids of {job}/{ident}")
    return {line.split()[0].decode(): int(line.split()[1]) for line in out.splitlines()}


def _daemon(server: Server, request, job: str, ident: int) -> int:
    """The run's daemon, once it is shown to have left the job's session and process tree."""
    pids = _pids(server, job, ident)
    daemon, main = pids["daemon"], pids["main"]
    request.addfinalizer(lambda: alive(daemon) and os.kill(daemon, 9))
    stat = wait_for(lambda: (s := _stat(daemon))["ppid"] != main and s, 10, "the daemon's parent to exit")
    assert stat["session"] != main and stat["pgrp"] != main and alive(daemon)
    return daemon


def _zombies(pid: int) -> list[int]:
    """The children of ``pid`` (of any of its threads) that are zombies."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            try:
                if _stat(child)["state"] == "Z":
                    found.append(child)
            except OSError:
                pass
    return found


@pytest.mark.parametrize("end", ["exit", "terminate", "kill", "time-out"])
def test_a_setsid_double_forked_daemon_dies_with_its_run(served, request, end):
    job = END_JOB[end]
    ident = served.run(job)["id"]
    daemon = _daemon(served, request, job, ident)
    if end in ("terminate", "kill"):
        assert served.req("PUT", f"/jobs/{job}/{ident}", json={"event": end}).status_code == 202
    assert served.wait(job, ident)["status"] == STATUS[end]
    wait_for(lambda: not alive(daemon), 10, f"the daemon {daemon} of {job}/{ident} to end")
    wait_for(lambda: not _zombies(served.pid), 10, "the server to have no zombie child")


def test_orphans_that_end_on_their_own_leave_no_zombie_in_the_server(served, request):
    ident = served.run("litter")["id"]
    daemon = _daemon(served, request, "litter", ident)
    if served.kind == "process-group":
        assert _stat(daemon)["ppid"] == served.pid  # the server took it in: it is the one to reap it
    assert served.wait("litter", ident)["status"] == "complete"
    wait_for(lambda: not alive(daemon), 10, "the daemon to end")
    wait_for(lambda: not _zombies(served.pid), 10, "the server to have no zombie child")


@pytest.mark.parametrize("kind", ["cgroup", "process-group"])
def test_a_daemon_is_gone_after_a_sigkill_of_the_server_and_the_restart(tmp_path, request, kind):
    server = _server(tmp_path, kind, {"runs.yml": JOBS["runs.yml"]}).start()
    request.addfinalizer(server.stop)
    _check_kind(server)
    ident = server.run("runs")["id"]
    daemon = _daemon(server, request, "runs", ident)
    main = _pids(server, "runs", ident)["main"]
    wait_for(lambda: server.execution("runs", ident)["state"] == "running", 10, "the start to be stored")
    crashed = server.pid
    server.kill()
    assert alive(daemon) and alive(main)  # the crash alone ends nothing
    server.start()
    assert server.execution("runs", ident)["status"] == "lost"
    wait_for(lambda: not alive(main), 10, "the job's main process to end")
    wait_for(lambda: not alive(daemon), 10, f"the daemon {daemon} to end after the restart's recovery")
    if kind == "cgroup":  # emptied, the crashed server's cgroups are removed
        wait_for(lambda: not (CGROUP_MOUNT / f"overseer-{crashed}").exists(), 10,
             "the crashed server's cgroup removed")


@pytest.mark.xfail(strict=True, reason="without cgroups, a daemon that dropped its environment and "
                                       "left the session carries nothing of its run (docs/guarantees.rst)")
def test_without_cgroups_a_daemon_that_drops_its_environment_escapes(tmp_path, request):
    server = _server(tmp_path, "process-group", {"bare.yml": JOBS["bare.yml"]}).start()
    request.addfinalizer(server.stop)
    ident = server.run("bare")["id"]
    daemon = _daemon(server, request, "bare", ident)
    assert server.wait("bare", ident)["status"] == "complete"
    wait_for(lambda: not alive(daemon), 5, "the daemon to end")
