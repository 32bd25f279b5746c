"""What one job can do to another, and to the server (docs/guarantees.rst).

Real ``overseer serve`` processes, real jobs. The event socket names its caller from the kernel
(``SO_PEERCRED``: the caller's cgroup, else its session), so a token read from another job's
``/proc/PID/environ`` is refused.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from overseer import cgroups, spawn

from .serving import Server, alive, poll

pytestmark = pytest.mark.slow


def _cgroup_mount():
    root = cgroups.CgroupRoot.find() if not os.environ.get("OVERSEER_NO_CGROUPS") else None
    if root is None:
        return None
    root.remove()
    return root.path.parent


CGROUP_MOUNT = _cgroup_mount()

# A job that waits, after printing its pid, a child's that left its process group, and its token.
VICTIM = {"command": "echo $$; setsid sleep 300 & echo $!; echo \"$OVERSEER_TOKEN\"; sleep 300",
          "timeout": 120}

# Reads another job's token from /proc and tries it; then its own. Prints KEY=VALUE lines.
THIEF = r"""#!/bin/sh
victim=$1
stolen=$(tr '\0' '\n' < /proc/$victim/environ | sed -n 's/^OVERSEER_TOKEN=//p')
echo "stolen_length=${#stolen}"
OVERSEER_TOKEN=$stolen event kill "with a stolen token" 2>"$TMPDIR/err"; echo "kill=$?"
echo "kill_error=$(cat "$TMPDIR/err")"
OVERSEER_TOKEN=$stolen event note "with a stolen token" 2>/dev/null; echo "note=$?"
event mine "with its own token"; echo "own=$?"
echo "cgroup=$(sed -n 's/^0:://p' /proc/self/cgroup)"
echo "token=$OVERSEER_TOKEN"
"""

def _fields(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _lines(server: Server, job: str, ident: int, count: int) -> list[str]:
    return poll(lambda: len(lines := server.get(f"/jobs/{job}/{ident}/stdout").text.splitlines()) >= count
                and lines, 30, f"{count} lines from {job}/{ident}")


def _events(meta: dict, name: str) -> list[dict]:
    return [e for e in meta["events"] if e["name"] == name]


def _ask(path: Path, request: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            data = sock.recv(4096)
            if not data:
                break
            reply += data
    return json.loads(reply)


@pytest.fixture
def servers():
    made = []
    yield made
    for server in made:
        server.stop()


def _start(servers, tmp: Path, files: dict, config: dict, env: dict) -> Server:
    server = Server(tmp, files, config, env=env)
    servers.append(server)
    return server.start()


def _spawn_env(path: str, tree: str = "cgroup") -> dict:
    """The server's environment for a spawn path (native, or the Python fallback) and tree."""
    if path == "native" and not spawn.built():
        pytest.skip("overseer._spawn is not built here")
    env = {"OVERSEER_NO_NATIVE_SPAWN": "1" if path == "popen" else "",
           "OVERSEER_NO_CGROUPS": "1" if tree == "process-group" else ""}
    if tree == "cgroup" and CGROUP_MOUNT is None:
        pytest.skip("no writable cgroup v2 hierarchy with cgroup.kill here")
    return env


# -- without run_as: jobs are root, and the socket still knows who calls ----------------------------

@pytest.mark.parametrize("tree", ["cgroup", "process-group"])
def test_a_token_read_from_another_jobs_environ_is_refused(tree, tmp_path, servers):
    server = _start(servers, tmp_path, {
        "victim.yml": VICTIM,
        "scripts/thief.sh": THIEF,
        "thief.yml": {"script": "thief.sh", "vars": [{"name": "victim", "type": "int"}]},
    }, {}, _spawn_env("native" if spawn.built() else "popen", tree))
    assert server.run("victim")["id"] == 1
    pid, child, token = _lines(server, "victim", 1, 3)
    pid, child = int(pid), int(child)
    assert server.execution("victim", 1)["pid"] == pid
    ident = server.run("thief", {"victim": pid})["id"]
    meta = server.wait("thief", ident)
    got = _fields(server.get(f"/jobs/thief/{ident}/stdout").text)
    assert meta["status"] == "complete", server.get(f"/jobs/thief/{ident}/output").text
    assert got["stolen_length"] == str(len(token))          # root read it from /proc: it had it
    assert got["kill"] == "1" and got["note"] == "1"          # and it did not work
    assert "another execution's than the calling process's" in got["kill_error"]
    assert got["own"] == "0" and [e["source"] for e in _events(meta, "mine")] == ["job"]
    # the victim runs on, untouched; its cgroup's name gives nothing of its token away
    victim = server.execution("victim", 1)
    assert victim["state"] == "running" and alive(pid) and alive(child)
    assert not _events(victim, "kill") and not _events(victim, "note")
    if tree == "cgroup":
        assert got["cgroup"].startswith("/overseer-") and got["token"][:6] not in got["cgroup"]
    # a process outside every execution (this test) with the token: refused too
    answer = _ask(server.data / "event.sock", {"token": token, "event": "kill", "cause": "outsider"})
    assert answer["ok"] is False and "belongs to no running execution" in answer["error"]
    assert server.execution("victim", 1)["state"] == "running" and alive(pid)
    # the API still reaches the whole tree
    assert server.req("PUT", "/jobs/victim/1", json={"event": "kill"}).status_code == 202
    assert server.wait("victim", 1)["signal"] == "SIGKILL"
    poll(lambda: not alive(pid), 10, "the victim to end")
    if tree == "cgroup":
        poll(lambda: not alive(child), 10, "the victim's setsid child to end")
    elif alive(child):  # the process group alone does not reach it (docs/guarantees.rst)
        os.kill(child, 9)
