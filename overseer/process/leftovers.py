"""Ending what the runs of a server that is gone left running (``Supervisor.recover``).

Each run the store still has ``running`` or ``stopped`` is reached so that what left its process
group (``setsid``) ends too:

- through its cgroup, where it had one (the record's private ``cgroup``): every process in it,
  whatever session it made; the emptied cgroup is removed, and the dead server's with it;
- else through its process group, by pgid and start time as recorded (a reused pid is never hit),
  and one scan of /proc for every process whose environment (as it was exec'd) names the run
  (this data dir's ``OVERSEER_SOCKET``, its ``OVERSEER_JOB`` and ``OVERSEER_EXECUTION``) or whose
  session is the run's. A process that left the session and dropped those variables is not
  found. With ``execution.run_as`` uids the scan is left out: the start's sweep by uid
  (``RunAs.sweep_leftovers``) ends all that is left.

Each gets SIGCONT and SIGTERM once (a frozen cgroup is thawed), and SIGKILL after ``kill_grace``
unless it has ended.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import time
from pathlib import Path

from overseer.process import cgroups
from overseer.process.job_process import process_start_time

log = logging.getLogger(__name__)

GONE_WAIT = 5.0  # seconds for killed processes to leave their cgroups before these are removed


def end(records: list[dict], kill_grace: float, socket_path: Path, scan: bool = True) -> None:
    """End what ``records`` (unfinished runs of a server that is gone, or of this one as it stops)
    left running."""
    trees, groups, wanted = [], [], {}
    for record in records:
        if record["state"] == "queued":
            continue  # never started (its start is recorded with its pgid and cgroup)
        cgroup = cgroups.recorded(record["cgroup"]) if record.get("cgroup") else None
        if cgroup is not None:
            trees.append(cgroup)
            continue
        pgid, started = record.get("pgid"), record.get("proc_start")
        if pgid and started and process_start_time(pgid) == started:
            groups.append(pgid)
        if scan:
            wanted[(record["job"], str(record["id"]).encode())] = record
    found = _scan(wanted, socket_path, groups) if wanted else []
    if not (trees or groups or found):
        return
    for signum in (signal.SIGCONT, signal.SIGTERM):
        for pgid in groups:
            _signal_group(pgid, signum)
        for cgroup in trees:
            cgroup.signal_all(signum)  # thaws it too
        for fd in found:
            _signal_pidfd(fd, signum)
    deadline = time.monotonic() + kill_grace
    while time.monotonic() < deadline and (any(_group_alive(p) for p in groups)
                                           or any(_pidfd_alive(fd) for fd in found)
                                           or not all(c.remove() for c in trees)):
        time.sleep(0.05)
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)
    for fd in found:
        _signal_pidfd(fd, signal.SIGKILL)
        os.close(fd)
    left = [c for c in trees if not c.remove()]
    for cgroup in left:
        cgroup.kill()
    deadline = time.monotonic() + GONE_WAIT
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [c for c in left if not c.remove()]
    for mount in {c.path.parent.parent for c in trees}:
        cgroups.remove_stale(mount)  # the dead server's own cgroup, now empty


def _scan(wanted: dict, socket_path: Path, groups: list[int]) -> list[int]:
    """Pidfds of the live processes of the ``wanted`` runs (by ``(job, id)``) outside their
    process groups ``groups``: by their environment or their session."""
    socket = os.fsencode(str(socket_path))
    sessions = {r["pgid"] for r in wanted.values() if r.get("pgid")
                and process_start_time(r["pgid"]) in (None, r.get("proc_start"))}  # not a reused pid's
    me, skip, found = os.getpid(), set(groups), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (1, me):
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
            fields = data[data.rindex(b")") + 2:].split()
            state, group, session, started = fields[0], int(fields[2]), int(fields[3]), int(fields[19])
        except (OSError, ValueError, IndexError):
            continue
        if state == b"Z" or group in skip:
            continue  # a zombie has nothing to end; a recorded group is signalled whole
        if session not in sessions and not _names_a_run(pid, socket, wanted):
            continue
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        if process_start_time(pid) != started:  # it ended, and its pid is another's now
            os.close(fd)
            continue
        found.append(fd)
    if found:
        log.warning("ending %d processes that runs of the previous server left outside their "
                    "process groups", len(found))
    return found


def _names_a_run(pid: int, socket: bytes, wanted: dict) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return False
    if b"OVERSEER_SOCKET=" + socket + b"\0" not in data + b"\0":
        return False
    env = dict(item.split(b"=", 1) for item in data.split(b"\0") if item.startswith(b"OVERSEER_"))
    if env.get(b"OVERSEER_SOCKET") != socket:
        return False
    return (os.fsdecode(env.get(b"OVERSEER_JOB", b"")), env.get(b"OVERSEER_EXECUTION")) in wanted


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _signal_pidfd(fd: int, signum: int) -> None:
    try:
        signal.pidfd_send_signal(fd, signum)
    except OSError:
        pass


def _pidfd_alive(fd: int) -> bool:
    return not select.select([fd], [], [], 0)[0]  # readable once the process has ended
