"""What one job can do to another, and to the server (docs/guarantees.rst, "A job against other
jobs and the server").

Real ``overseer serve`` processes, real jobs, real uids: ``nobody`` and the numeric uids of a
range that has no passwd entry (61000-61999 here; nothing is added to the system). The event
socket names its caller from the kernel (``SO_PEERCRED``: the caller's session, else its
cgroup), so a token read from another job's ``/proc/PID/environ`` is refused; with
``execution.run_as`` jobs cannot even read it.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from overseer.actors.system import System

from overseer import cli, embedded
from overseer.config import parse_config
from overseer.exceptions import ConfigError, IdentityError
from overseer.http import server as http_server
from overseer.process import cgroups, identity, spawn

from ..conftest import make_config
from ..serving import Server, alive
from ..waiting import wait_finished, wait_for

pytestmark = pytest.mark.slow

UIDS = "61000-61999"
UID_RANGE = range(61000, 62000)
PR_GET_DUMPABLE = 3


def _cgroup_mount():
    root = cgroups.CgroupRoot.find() if not os.environ.get("OVERSEER_NO_CGROUPS") else None
    if root is None:
        return None
    root.remove()
    return root.path.parent


CGROUP_MOUNT = _cgroup_mount()
needs_cgroups = pytest.mark.skipif(CGROUP_MOUNT is None,
                                   reason="no writable cgroup v2 hierarchy with cgroup.kill here")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can run jobs as another user")

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
setsid -w event left-session "from a session of its own" 2>/dev/null; echo "setsid=$?"
echo "cgroup=$(sed -n 's/^0:://p' /proc/self/cgroup)"
echo "token=$OVERSEER_TOKEN"
"""

# What a job running as a uid of its own can and cannot do. Prints KEY=VALUE lines.
PROBE = r"""#!/bin/sh
victim=$1 token=$2
data=$(dirname "$OVERSEER_SOCKET")
try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name=done"; else echo "$name=refused"; fi; }
echo "uid=$(id -u)"; echo "gid=$(id -g)"; echo "groups=$(id -G)"
echo "home=$HOME"; echo "user=$USER"; echo "logname=$LOGNAME"; echo "tmpdir=$TMPDIR"
echo "tmpdir_owner=$(stat -c %u "$TMPDIR")"
try tmpdir_write touch "$TMPDIR/mine"
echo "tmpdir_error=$(touch "$TMPDIR/mine" 2>&1; ls -ld "$TMPDIR" "$(dirname "$TMPDIR")" 2>&1 | tr '\n' ' ')"
try environ cat /proc/$victim/environ
try signal kill -0 $victim
try terminate kill -TERM $victim
echo "terminate_error=$(kill -TERM $victim 2>&1)"
echo "environ_error=$(cat /proc/$victim/environ 2>&1 >/dev/null)"
try rewrite sh -c 'echo "echo tampered" > scripts/tool.sh'
try chmod chmod u+w scripts/tool.sh
try remove rm -f scripts/tool.sh
try create sh -c 'echo x > new-file'
try data_list ls "$data"
try store_read cat "$data/store/data.mdb"
try git_read ls "$data/repo.git"
try socket_mode test -w "$OVERSEER_SOCKET"
OVERSEER_TOKEN=$token event kill "with a stolen token" 2>"$TMPDIR/err"; echo "stolen_kill=$?"
echo "stolen_error=$(cat "$TMPDIR/err")"
event probe "with its own token"; echo "own_event=$?"
mine=$(sed -n 's/^0:://p' /proc/self/cgroup)
echo "cgroup=$mine"
if [ -n "$CGROUP_MOUNT" ]; then
  echo "max_descendants=$(cat "$CGROUP_MOUNT$mine/cgroup.max.descendants")"
  try raise_limit sh -c 'echo max > "$1/cgroup.max.descendants"' - "$CGROUP_MOUNT$mine"
  try subcgroup mkdir "$CGROUP_MOUNT$mine/sub"
  try into_sub sh -c 'echo $$ > "$1/sub/cgroup.procs"' - "$CGROUP_MOUNT$mine"
  try leave sh -c 'echo $$ > "$1/cgroup.procs"' - "$(dirname "$CGROUP_MOUNT$mine")"
  theirs=$(sed -n 's/^0:://p' /proc/$victim/cgroup)
  try enter_victim sh -c 'echo $$ > "$1/cgroup.procs"' - "$CGROUP_MOUNT$theirs"
  echo $$ > "$CGROUP_MOUNT$mine/sub/cgroup.procs"   # this shell too: still its execution's
  event from-sub; echo "sub_event=$?"
fi
"""

TOOL = "#!/bin/sh\necho the original tool\n"


def _fields(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _lines(server: Server, job: str, ident: int, count: int) -> list[str]:
    return wait_for(lambda: len(lines := server.get(f"/jobs/{job}/{ident}/stdout").text.splitlines()) >= count
                    and lines, 30, f"{count} lines from {job}/{ident}")


def _uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Uid:"))


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
def open_tmp():
    """A directory any uid may pass through: pytest's own are root's alone (0700), and jobs
    running as another user must reach their snapshot, TMPDIR and the event socket."""
    path = Path(tempfile.mkdtemp(prefix="overseer-isolation-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


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
        pytest.skip("overseer.process._spawn is not built here")
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
    # a process that left the job's session is still the job's where it has a cgroup
    assert got["setsid"] == ("0" if tree == "cgroup" else "1")
    assert len(_events(meta, "left-session")) == (tree == "cgroup")
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
    # each refusal is logged, naming the process; the token itself appears in no log line
    me = f"event socket: refused pid {os.getpid()} (uid {os.getuid()}): the calling process"
    wait_for(lambda: me in server.log(), 10, "the outsider's refusal logged")
    assert server.log().count("event socket: refused pid") >= 3  # the thief's two, and this one
    assert token not in server.log() and got["token"] not in server.log()
    # the API still reaches the whole tree
    assert server.req("PUT", "/jobs/victim/1", json={"event": "kill"}).status_code == 202
    assert server.wait("victim", 1)["signal"] == "SIGKILL"
    wait_for(lambda: not alive(pid), 10, "the victim to end")
    if tree == "cgroup":
        wait_for(lambda: not alive(child), 10, "the victim's setsid child to end")
    elif alive(child):  # the process group alone does not reach it (docs/guarantees.rst)
        os.kill(child, 9)


@pytest.fixture(params=["native", "python"])
def identify(request, monkeypatch):
    """How the server names a caller: the native call, or its Python fallback (a machine
    without the extension)."""
    if request.param == "native" and identity._native_identify is None:
        pytest.skip("overseer.process._spawn is not built here")
    if request.param == "python":
        monkeypatch.setattr(identity, "_native_identify", None)
    return request.param


def test_the_kernel_names_the_caller(identify, tmp_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "s"))
    listener.listen()
    connect = (f"import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect({str(tmp_path / 's')!r}); "
               "sys.stdout.write('connected\\n'); sys.stdout.flush(); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", connect], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert child.stdout.readline() == b"connected\n"
        conn, _ = listener.accept()
        with open(f"/proc/{child.pid}/cgroup") as f:
            cgroup = next(line[3:].strip() for line in f if line.startswith("0::"))
        plain, full = identity.Peer.of(conn), identity.Peer.of(conn, with_cgroup=True)
        for peer in (plain, full):
            assert (peer.pid, peer.uid, peer.gid) == (child.pid, os.getuid(), os.getgid())
            assert peer.session == child.pid  # the leader of a session of its own
        assert plain.cgroup is None and full.cgroup == cgroup
    finally:
        child.stdin.close()
        child.wait(10)
    # it has ended: what /proc says under its pid might be another process's now
    with pytest.raises(IdentityError, match=f"pid {child.pid}\\) ended before its request was read"):
        identity.Peer.of(conn, with_cgroup=True)
    conn.close()
    listener.close()


def test_refusals_are_logged_without_flooding_the_log(caplog):
    refusals, peer = identity.RefusalLog(limit=10, window=10.0), identity.Peer(4321, 61000, 61000)
    with caplog.at_level("WARNING", logger="overseer.process.identity"):
        for _ in range(25):  # a job calling in a loop
            refusals.refused(peer, "the token is another execution's", now=100.0)
        refusals.refused(peer, "the token is another execution's", now=110.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 11
    assert lines[0] == "event socket: refused pid 4321 (uid 61000): the token is another execution's"
    assert lines[-1].endswith("(15 more refusals not logged before this one)")


@pytest.mark.parametrize("tree", ["cgroup", "process-group"])
def test_a_stolen_token_is_refused_by_the_python_fallback_too(tree, identify, monkeypatch,
                                                              system_factory):
    monkeypatch.setenv("OVERSEER_NO_CGROUPS", "1" if tree == "process-group" else "")
    if tree == "cgroup" and CGROUP_MOUNT is None:
        pytest.skip("no writable cgroup v2 hierarchy with cgroup.kill here")
    s = system_factory({"victim.yml": VICTIM, "scripts/thief.sh": THIEF,
                        "thief.yml": {"script": "thief.sh", "vars": [{"name": "victim", "type": "int"}]}})
    s.trigger("victim", {})
    pid = wait_for(lambda: s.store.read_output("victim", 1, "stdout").count(b"\n") >= 3 and
                   s.store.get_execution("victim", 1)["pid"], 20, "the victim", store=s.store)
    s.trigger("thief", {"victim": pid})
    done = wait_finished(s, "thief", 1)
    got = _fields(s.store.read_output("thief", 1, "stdout").decode())
    assert done["status"] == "complete" and got["kill"] == got["note"] == "1" and got["own"] == "0"
    victim = s.store.get_execution("victim", 1)
    assert victim["state"] == "running" and not _events(victim, "kill") and alive(pid)
    s.create_event("victim", 1, "kill", None)
    wait_finished(s, "victim", 1)


# -- with run_as: a uid of its own per execution ---------------------------------------------------

@needs_root
@needs_cgroups
@pytest.mark.parametrize("path", ["native", "popen"])
def test_run_as_uid_range_keeps_jobs_apart(path, open_tmp, servers):
    server = _start(servers, open_tmp, {
        "victim.yml": VICTIM,
        "scripts/tool.sh": TOOL,
        "scripts/probe.sh": PROBE,
        "probe.yml": {"script": "probe.sh", "env": {"CGROUP_MOUNT": str(CGROUP_MOUNT)},
                      "vars": [{"name": "victim", "type": "int"}, {"name": "token"}]},
        "tool.yml": {"script": "tool.sh"},
    }, {"execution": {"run_as": {"uids": UIDS}}}, _spawn_env(path))
    data = server.data
    assert stat.S_IMODE(data.stat().st_mode) == 0o711
    assert stat.S_IMODE((data / "store").stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "event.sock").stat().st_mode) == 0o666
    assert server.run("victim")["id"] == 1
    pid, child, token = _lines(server, "victim", 1, 3)
    pid, child = int(pid), int(child)
    victim_uid = _uid_of(pid)
    assert victim_uid in UID_RANGE and _uid_of(child) == victim_uid

    ident = server.run("probe", {"victim": pid, "token": token})["id"]
    meta = server.wait("probe", ident)
    assert meta["status"] == "complete", server.get(f"/jobs/probe/{ident}/output").text
    got = _fields(server.get(f"/jobs/probe/{ident}/stdout").text)
    uid = int(got["uid"])
    # a uid of its own, its group its own number, no supplementary group, no passwd entry
    assert uid in UID_RANGE and uid != victim_uid
    assert got["gid"] == got["groups"] == str(uid)
    assert got["user"] == got["logname"] == str(uid) and got["home"] == got["tmpdir"]
    assert got["tmpdir_owner"] == str(uid) and got["tmpdir_write"] == "done", got["tmpdir_error"]
    # nothing of the other job: its environment, its processes, its cgroup
    assert got["environ"] == got["signal"] == got["terminate"] == "refused"
    assert "Operation not permitted" in got["terminate_error"]  # EPERM
    assert "Permission denied" in got["environ_error"]  # EACCES
    assert got["enter_victim"] == "refused"
    # the snapshot is read-only to it, the data dir closed, the socket open
    assert got["rewrite"] == got["chmod"] == got["remove"] == got["create"] == "refused"
    assert got["data_list"] == got["store_read"] == got["git_read"] == "refused"
    assert got["socket_mode"] == "done"
    # a token passed to it is no use; its own is
    assert got["stolen_kill"] == "1" and "another execution's" in got["stolen_error"]
    assert got["own_event"] == "0" and [e["source"] for e in _events(meta, "probe")] == ["job"]
    # its cgroup is delegated: cgroups below it, never out of it
    assert got["subcgroup"] == got["into_sub"] == "done" and got["leave"] == "refused"
    assert got["max_descendants"] == "256" and got["raise_limit"] == "refused"
    assert got["sub_event"] == "0" and _events(meta, "from-sub")

    victim = server.execution("victim", 1)
    assert victim["state"] == "running" and alive(pid) and not _events(victim, "kill")
    tool = server.run("tool")["id"]
    server.wait("tool", tool)
    assert server.get(f"/jobs/tool/{tool}/stdout").text == "the original tool\n"
    # after it: its TMPDIR and its cgroup (with the one it made) are gone
    wait_for(lambda: not os.path.exists(got["tmpdir"]), 10, "the probe's TMPDIR to be removed")
    wait_for(lambda: not (CGROUP_MOUNT / got["cgroup"].lstrip("/")).exists(), 10,
             "the probe's cgroup to be removed")
    # a kill through the API reaches the whole tree of a job that is not root
    assert server.req("PUT", "/jobs/victim/1", json={"event": "kill"}).status_code == 202
    assert server.wait("victim", 1)["signal"] == "SIGKILL"
    wait_for(lambda: not alive(pid) and not alive(child), 10, "the victim's tree to end")
    assert server.stop() == 0


@needs_root
@pytest.mark.parametrize("path", ["native", "popen"])
def test_run_as_uid_range_without_cgroups_kills_what_left_the_group(path, open_tmp, servers):
    # Without a cgroup a `setsid` child leaves the process group; its uid is swept before the
    # uid goes back to the range, so the kill still reaches it.
    server = _start(servers, open_tmp, {"victim.yml": VICTIM},
                    {"execution": {"run_as": {"uids": UIDS}}}, _spawn_env(path, "process-group"))
    assert server.run("victim")["id"] == 1
    pid, child, _token = _lines(server, "victim", 1, 3)
    pid, child = int(pid), int(child)
    assert _uid_of(child) in UID_RANGE
    assert server.req("PUT", "/jobs/victim/1", json={"event": "kill"}).status_code == 202
    assert server.wait("victim", 1)["signal"] == "SIGKILL"
    wait_for(lambda: not alive(pid) and not alive(child), 10, "the victim's tree to end")


@needs_root
@pytest.mark.parametrize("path", ["native", "popen"])
def test_run_as_user_runs_every_job_as_that_user(path, open_tmp, servers):
    server = _start(servers, open_tmp, {
        "who.yml": {"command": "id -un; id -gn; id -G; echo \"$HOME\"; echo \"$USER\"; "
                               "echo \"$TMPDIR\"; event seen; echo \"event=$?\""},
    }, {"execution": {"run_as": {"user": "nobody"}}}, _spawn_env(path, "cgroup" if CGROUP_MOUNT else
                                                                   "process-group"))
    for ident in (1, 2):
        assert server.run("who")["id"] == ident
        meta = server.wait("who", ident)
        assert meta["status"] == "complete", server.get(f"/jobs/who/{ident}/output").text
        name, group, groups, home, user, tmpdir, event = server.get(
            f"/jobs/who/{ident}/stdout").text.splitlines()
        # nobody's home (/nonexistent) is not there: HOME is the run's TMPDIR
        assert (name, group, groups, user) == ("nobody", "nogroup", "65534", "nobody")
        assert home == tmpdir and event == "event=0" and _events(meta, "seen")


@needs_root
def test_a_job_started_as_another_user_leaves_the_server_as_it_was(open_tmp, job_repo):
    # The native spawn's child shares the server's memory: its ids must change alone (glibc's
    # setuid() would change every thread's), and the server's dumpable flag, which the child's
    # change of ids clears in the memory they share, is put back.
    if not spawn.available():
        pytest.skip("the native spawn is not available here")
    libc = ctypes.CDLL(None, use_errno=True)

    def threads_uids() -> set:
        found = set()
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/status") as f:
                found |= {line.split()[1] for line in f if line.startswith(("Uid:", "Gid:"))}
        return found

    job_repo.commit({"who.yml": {"command": "id -u"}})
    system = System(make_config(open_tmp, job_repo, execution={"run_as": {"uids": UIDS}})).start()
    try:
        assert libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1
        before = (os.getresuid(), os.getresgid(), os.getgroups(), threads_uids())
        system.trigger("who", {})
        assert wait_finished(system, "who", 1)["status"] == "complete"
        assert int(system.store.read_output("who", 1, "stdout")) in UID_RANGE
        assert libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1
        assert (os.getresuid(), os.getresgid(), os.getgroups(), threads_uids()) == before
    finally:
        system.stop()


# -- refused at start -------------------------------------------------------------------------------

def test_run_as_config_problems_are_named_by_key():
    for run_as, fragment in [
        ({}, "execution.run_as: give either user"),
        ({"user": "nobody", "uids": UIDS}, "execution.run_as: give either user"),
        ({"uids": "61000"}, "execution.run_as.uids: must be a range of uids"),
        ({"uids": "0-99"}, "holds uid 0 (root)"),
        ({"uids": "61000-61009"}, "execution.run_as.uids: 10 uids for up to 64 running executions"),
        ({"user": "root"}, "execution.run_as.user: jobs would run as root"),
        ({"user": ["nobody"]}, "execution.run_as.user: must be a string or an integer"),
        ({"user": "nobody", "shell": "/bin/sh"}, "execution.run_as.shell: unknown key"),
    ]:
        with pytest.raises(ConfigError) as e:
            parse_config({"execution": {"run_as": run_as}})
        assert len(e.value.problems) == 1 and fragment in e.value.problems[0], (run_as, e.value.problems)


@needs_root
def test_run_as_names_that_the_system_does_not_have_are_refused_at_start(tmp_path, job_repo):
    job_repo.commit({"a.yml": {"command": "true"}})
    for run_as, fragment in [
        ({"user": "no-such-user-here"}, "execution.run_as.user: no user named 'no-such-user-here'"),
        ({"user": "nobody", "group": "no-such-group"}, "execution.run_as.group: no group named"),
        ({"uids": "65000-65534"}, "execution.run_as.uids: uid 65534 is the user 'nobody'"),
    ]:
        system = System(make_config(tmp_path, job_repo, execution={"run_as": run_as}))
        with pytest.raises(ConfigError, match=fragment):
            system.start()
        system.stop()
        assert not (tmp_path / "data").exists()  # refused before anything was made


@needs_root
def test_run_as_refuses_a_data_dir_jobs_cannot_reach(tmp_path, job_repo):
    # pytest's temporary directories are root's alone (0700): no job of another user gets in.
    job_repo.commit({"a.yml": {"command": "true"}})
    system = System(make_config(tmp_path, job_repo, execution={"run_as": {"user": "nobody"}}))
    try:
        with pytest.raises(ConfigError, match=r"execution\.run_as: jobs cannot reach the data dir .* "
                                              r"may not be searched by uid 65534"):
            system.start()
    finally:
        system.stop()
    assert not (tmp_path / "data").exists()  # refused before anything was made


@needs_root
def test_run_as_on_a_server_that_is_not_root_is_a_startup_error(open_tmp):
    # The real start, in a process that is no longer root: a fork of this one (the interpreter
    # lives under root's home, which another user cannot enter; what the start imports is loaded).
    config = open_tmp / "config.yaml"
    config.write_text(json.dumps({"repository": {"url": str(open_tmp / "jobs")},
                                  "data_dir": str(open_tmp / "data"),
                                  "execution": {"run_as": {"user": "nobody"}}}))
    config.chmod(0o644)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            sys.stderr = os.fdopen(write_end, "w")  # pytest holds the real one
            # what the start imports is loaded already (embedded, http_server): the child, no
            # longer root, could not read the interpreter's modules under root's home
            assert embedded and http_server
            code = cli.main(["serve", "-c", str(config)])
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        stderr = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2, stderr
    assert "execution.run_as: the server runs as uid 65534, not as root" in stderr
    assert not (open_tmp / "data").exists()



@pytest.mark.parametrize("mode", [0o600, 0o666])
def test_the_event_socket_starts_with_its_mode_and_leaves_the_umask_alone(tmp_path, monkeypatch, mode):
    """The socket is made without changing the process-wide umask: other threads make the runs'
    TMPDIRs meanwhile, and one made under a borrowed umask of 0177 was 0600, a directory its own
    job could not write in (seen as a run_as job's ``touch $TMPDIR/x`` refused now and then)."""
    from overseer.actors.event_socket import EventSocket

    def no_umask(mask):
        raise AssertionError(f"os.umask({mask:o}) called")

    monkeypatch.setattr(os, "umask", no_umask)
    sock = EventSocket(tmp_path / "event.sock", lambda *args: None, mode=mode)
    sock.start()
    try:
        assert stat.S_IMODE((tmp_path / "event.sock").stat().st_mode) == mode
        assert sorted(p.name for p in tmp_path.iterdir()) == ["event.sock"]
    finally:
        sock.stop()
