"""A started job process and what is known of it: its exit status, its start time, its cgroup.

``Process`` is the handle an Execution actor holds: it signals the whole tree
(through the cgroup where there is one, else the process group) and, after the
main process ended, kills what it left behind. ``entering`` is the Popen path's
way into the cgroup (the native spawn starts the job inside it).
"""
from __future__ import annotations

import errno
import os
import shlex
import signal
import subprocess
from dataclasses import dataclass
from typing import Optional

from overseer.process import cgroups


@dataclass(frozen=True)
class ExitStatus:
    exit_code: Optional[int]  # None when killed by a signal
    signal: Optional[str]  # e.g. "SIGKILL"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def process_start_time(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (None if it is gone): with the
    pid it names one process, so a reused pid is never mistaken for it."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)  # three system calls, where open() makes six
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[19])


class Process:
    """A started job process: its process group, optional cgroup and pipes."""

    def __init__(self, pid: int, cgroup: Optional[cgroups.Cgroup], joined: bool,
                 start_time: Optional[int], popen: Optional[subprocess.Popen] = None):
        self.pid = pid
        self.pgid = pid  # a new session: the leader of its own group and session
        self.start_time = start_time  # process_start_time(pid), read as the process started
        self.cgroup = cgroup
        # Popen path only: kept until the monitor reaps the process, because a Popen that is
        # collected unfinished goes to subprocess' list of children to reap on its next start.
        self._popen = popen
        self.status: Optional[ExitStatus] = None
        self._joined = joined  # in its cgroup already (born there, on the native path)

    def reaped(self) -> None:
        """The monitor has reaped it."""
        if self._popen is not None:
            self._popen.returncode = 0  # reaped by the monitor; keep Popen from waiting again

    def _in_cgroup(self) -> bool:
        """Make sure the process is in its cgroup before the cgroup is used to reach it. The native
        spawn starts it there; on the Popen path it moves itself there as its first act (see
        ``entering``), and a signal in its first instant may come before that, so the first
        signal moves it from here (moving twice is harmless). Moving costs the kernel a
        cgroup-wide lock, which is why a start does not pay for it twice."""
        if self.cgroup is None:
            return False
        if not self._joined:
            self._joined = self.cgroup.add(self.pid)
        return self._joined

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole tree: the cgroup where there is one, else the group."""
        if signum == signal.SIGKILL and self._in_cgroup() and self.cgroup.kill():
            return
        if signum in (signal.SIGSTOP, signal.SIGCONT) and self._in_cgroup():
            if self.cgroup.freeze(signum == signal.SIGSTOP):
                return
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            pass
        if self.cgroup and signum != signal.SIGSTOP:
            # Processes that left the group with setsid are still in the cgroup: they get it
            # too, but not those the group reached already (a second SIGTERM would run a job's
            # TERM trap twice).
            for pid in self.cgroup.pids():
                try:
                    if os.getpgid(pid) != self.pgid:
                        os.kill(pid, signum)
                except OSError:
                    pass
            if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                self.cgroup.freeze(False)  # a frozen tree must run to handle the signal

    def kill_remaining(self) -> bool:
        """After the main process ended: kill whatever it left behind. False when the
        cgroup still holds dying processes (call again shortly to remove it)."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.cgroup.release() if self.cgroup else True


def entering(cgroup: cgroups.Cgroup, argv: list[str]) -> list[str]:
    """``argv`` made to move itself into ``cgroup`` before it runs anything. Moving it from the
    parent after Popen returns would come too late for a shell that forks at once (``setsid cmd &``
    as its first line: that child would stay outside, out of reach of ``cgroup.kill``), and a
    ``preexec_fn`` would force a full fork of the server instead of vfork. A command job already
    runs under ``/bin/sh -c``: it gets one builtin ``echo`` in front, no extra process."""
    procs = str(cgroup.path / "cgroup.procs")
    if len(argv) == 3 and argv[0] == "/bin/sh" and argv[1] == "-c":
        return ["/bin/sh", "-c", f"echo 0 >{shlex.quote(procs)} 2>/dev/null; {argv[2]}"]
    check_executable(argv[0])  # under the wrapper, a failed exec would be a mere exit code 127
    return ["/bin/sh", "-c", 'echo 0 >"$0" 2>/dev/null; exec "$@"', procs, *argv]


def gated(argv: list[str]) -> list[str]:
    """``argv`` made to wait for a line on its stdin (a pipe) before it runs anything, and then
    to take ``/dev/null`` as stdin: the Popen path's way into the cgroup for a job that runs as
    another user, which cannot move itself (``entering``) because a move needs write access to
    the cgroups above its own. The server moves it meanwhile and then writes the line."""
    if len(argv) == 3 and argv[0] == "/bin/sh" and argv[1] == "-c":
        return ["/bin/sh", "-c", f"read -r _ || :; exec </dev/null; {argv[2]}"]
    check_executable(argv[0])  # under the wrapper, a failed exec would be a mere exit code 127
    return ["/bin/sh", "-c", 'read -r _ || :; exec "$@" </dev/null', "overseer-job", *argv]


def check_executable(path: str) -> None:
    """Raise the OSError that exec(2) would for ``path``: missing, not executable, or naming a
    ``#!`` interpreter that is missing or not executable."""
    with open(path, "rb") as f:
        head = f.read(256)
    if not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    if head.startswith(b"#!"):
        words = head[2:].split(b"\n", 1)[0].split()
        interpreter = os.fsdecode(words[0]) if words else ""
        if not interpreter or not os.access(interpreter, os.X_OK):
            raise FileNotFoundError(errno.ENOENT, f"its interpreter {interpreter!r} is missing "
                                    "or not executable", path)
