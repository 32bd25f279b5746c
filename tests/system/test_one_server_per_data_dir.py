"""One server per data dir: a second ``overseer serve`` on a data dir in use is refused before it
touches anything, naming the server that holds it; a start whose port is taken is refused before
its recovery. Real ``overseer serve`` processes, real jobs, real sockets."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from ..conftest import free_port
from ..serving import OVERSEER, Server, alive
from ..waiting import wait_for

pytestmark = pytest.mark.slow


def _files(gate: Path) -> dict:
    return {
        "long.yml": {"command": f"echo up; while [ ! -e {gate} ]; do sleep 0.05; done; echo done"},
        "tick.yml": {"command": "true", "schedule": [{"frequency": "* * * * * *"}]},
    }


def _serve(config: dict, path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """``overseer serve`` with ``config``, expected to give up on its own."""
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([str(OVERSEER), "serve", "-c", str(path)], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _running(server: Server) -> dict:
    record = server.run("long")
    wait_for(lambda: server.get(f"/jobs/long/{record['id']}/stdout").content == b"up\n", 30, "long to start")
    return server.execution("long", record["id"])


def _tmpdir(pid: int) -> str:
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    return env[b"TMPDIR"].decode()


def _lock_fds(pid: int, lock: Path) -> list[str]:
    """The descriptors of ``pid`` open on the lock file."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(lock):
                found.append(fd)
        except OSError:
            pass
    return found


def test_a_second_server_on_a_data_dir_in_use_is_refused_and_changes_nothing(tmp_path):
    gate = tmp_path / "gate"
    first = Server(tmp_path / "a", _files(gate)).start()
    try:
        run = _running(first)
        events = [e["name"] for e in run["events"]]
        holder = f"pid {first.pid} on {socket.gethostname()}, serving 127.0.0.1:{first.port}"
        # the same config (its port taken too), then the same data dir on a free port
        for n, port in enumerate((first.port, free_port())):
            config = dict(first.config, server={**first.config["server"], "port": port,
                                                "base_url": f"http://127.0.0.1:{port}"})
            second = _serve(config, tmp_path / f"second-{n}.yaml")
            assert second.returncode == 2, second.stderr
            assert f"data_dir {str(first.data)!r} is in use by another Overseer server ({holder})" \
                in second.stderr, second.stderr
            assert "Traceback" not in second.stderr and "lost" not in second.stderr
        # nothing of the first server's changed: its run goes on and ends as its job ends
        again = first.execution("long", run["id"])
        assert again["state"] == "running" and [e["name"] for e in again["events"]] == events
        assert alive(run["pid"]) and Path(_tmpdir(run["pid"])).is_dir()  # its TMPDIR was not cleared
        lock = first.data / "server.lock"
        assert _lock_fds(first.pid, lock) and not _lock_fds(run["pid"], lock)  # no job holds it
        gate.write_text("go")
        done = first.wait("long", run["id"])
        assert done["status"] == "complete" and "lost" not in [e["name"] for e in done["events"]]
        assert first.get(f"/jobs/long/{run['id']}/stdout").content == b"up\ndone\n"
        # and every schedule slot fired once: no second scheduler ran on the store
        slots = [r["scheduled_for"] for r in first.get("/jobs/tick?limit=1000").json()["executions"]]
        assert slots and len(slots) == len(set(slots))
        assert first.stop() == 0
    finally:
        first.kill()
        gate.write_text("go")
    # the lock goes with its holder: the data dir serves again
    first.start()
    try:
        assert first.get("/jobs/long").status_code == 200
    finally:
        assert first.stop() == 0


def test_a_taken_port_is_refused_before_the_recovery(tmp_path):
    gate = tmp_path / "gate"
    server = Server(tmp_path / "a", _files(gate)).start()
    try:
        run = _running(server)
        server.kill()                       # the crash: its job lives on until a recovery ends it
        assert alive(run["pid"])
        with socket.socket() as taken:      # somebody else has the port meanwhile
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            taken.bind(("127.0.0.1", server.port))
            taken.listen(1)
            refused = _serve(server.config, tmp_path / "again.yaml")
        assert refused.returncode == 2, refused.stderr
        assert f"cannot listen on 127.0.0.1:{server.port}" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and "lost" not in refused.stderr
        assert alive(run["pid"])            # the recovery did not run
        server.start()                      # the port is free: now it does
        lost = server.execution("long", run["id"])
        assert lost["state"] == "finished" and [e["name"] for e in lost["events"]].count("lost") == 1
        wait_for(lambda: not alive(run["pid"]), 30, "the left-over job to be ended")
        assert server.stop() == 0
    finally:
        server.kill()
        gate.write_text("go")
