"""Which running execution a process on the event socket belongs to, from the kernel.

A token in the environment is readable by whoever may read ``/proc/PID/environ`` (root, and
the same uid), so it cannot say alone who calls. The kernel can: ``Peer.of`` takes the caller's
pid, uid and gid from the accepted unix connection (``SO_PEERCRED``, fixed at ``connect``), and
what the execution it belongs to is known by. First its session (``getsid``): each execution is
a session of its own, and no process can join another's session, so a process in an
execution's session is that execution's. A process that left its session (``setsid``) is known
by its cgroup (``/proc/PID/cgroup``) where executions run in cgroups of their own: a job cannot
leave its cgroup, or enter another's, short of root's powers. That read is dearer (8 us timed
alone, where getsid takes under 1), so it is made for such callers only. A pidfd of the caller
(``SO_PEERPIDFD``, Linux 6.5) then proves that the pid still named the caller while those were
read: without it (an older kernel) a caller that exits at once could leave its pid to another
process before the read. ``Callers`` maps what was read to the running execution.

Where ``overseer.process._spawn`` is built, ``Peer.of`` is one call of it (``identify``: the calls that
never block are made holding the interpreter's lock, which each call from Python would hand
over); elsewhere the same steps run in Python.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import threading
import time
from typing import Any, Optional

from overseer.exceptions import IdentityError

try:
    from overseer.process._spawn import identify as _native_identify
except ImportError:  # not built, or not Linux x86_64/aarch64
    _native_identify = None

log = logging.getLogger(__name__)

SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux's number; Python 3.11 lacks the name
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_pidfd_supported = True  # False once the kernel refused SO_PEERPIDFD


class Peer:
    """The process at the other end of an accepted unix connection, as the kernel names it."""

    __slots__ = ("pid", "uid", "gid", "cgroup", "session")

    def __init__(self, pid: int, uid: int, gid: int, cgroup: Optional[str] = None,
                 session: Optional[int] = None):
        self.pid, self.uid, self.gid = pid, uid, gid
        self.cgroup = cgroup  # its cgroup v2 path as /proc shows it ("/overseer-123/job-7-ab/sub")
        self.session = session  # its session id; None when not read (or unreadable)

    @classmethod
    def of(cls, sock: socket.socket, with_cgroup: bool = False) -> Peer:
        """Who is at the other end of ``sock``: its session, and with ``with_cgroup`` its
        cgroup. IdentityError when it had ended before they were read."""
        if _native_identify is not None:
            pid, uid, gid, cgroup, session, gone = _native_identify(sock.fileno(), with_cgroup)
            peer = cls(pid, uid, gid, None if cgroup is None else os.fsdecode(cgroup),
                       None if session < 0 else session)
        else:
            peer, gone = _identify(sock, with_cgroup)
        if gone:
            raise IdentityError(f"the calling process (pid {peer.pid}) ended before its request "
                                "was read")
        return peer


def _identify(sock: socket.socket, with_cgroup: bool) -> tuple[Peer, bool]:
    """``Peer.of`` in Python: ``(peer, gone)``."""
    global _pidfd_supported
    pid, uid, gid = _CREDS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  _CREDS.size))
    pidfd = -1
    if _pidfd_supported:
        try:
            pidfd = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
        except OSError:  # ENOPROTOOPT: a kernel before 6.5
            _pidfd_supported = False
    try:
        session = _session_of(pid)
        cgroup = _cgroup_of(pid) if with_cgroup else None
        gone = False
        if pidfd >= 0:
            try:
                signal.pidfd_send_signal(pidfd, 0)
            except ProcessLookupError:
                gone = True
            except PermissionError:
                pass  # it lives (signal 0 checks permission; a root server always has it)
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    return Peer(pid, uid, gid, cgroup, session), gone


def _cgroup_of(pid: int) -> Optional[str]:
    data = _read(f"/proc/{pid}/cgroup")
    if data.startswith(b"0::"):  # the unified hierarchy alone
        start = 3
    else:  # the hybrid layout: one line per v1 hierarchy, and the v2 one
        start = data.find(b"\n0::") + 4
        if start < 4:
            return None
    end = data.find(b"\n", start)
    return os.fsdecode(data[start:end] if end >= 0 else data[start:])


def _session_of(pid: int) -> Optional[int]:
    try:
        return os.getsid(pid)  # any process's, on Linux
    except OSError:  # gone
        return None


def _read(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""
    finally:
        os.close(fd)


class Callers:
    """Running executions by the cgroup and the session their processes are in. Keys are made
    by the Execution (its cgroup's name before its process starts, its session, the process's
    pid, right after); values are whatever stands for the execution (its actor ref)."""

    def __init__(self, cgroup_prefix: Optional[str]):
        # "/overseer-123/": the server's cgroup root as /proc/PID/cgroup shows it (None: no cgroups)
        self.prefix = cgroup_prefix
        self._by_cgroup: dict[str, Any] = {}
        self._by_session: dict[int, Any] = {}

    def identify(self, sock: socket.socket) -> Peer:
        """``Peer.of`` with what this server needs to know of it: the caller's cgroup too when
        its session is no running execution's and executions have cgroups."""
        peer = Peer.of(sock)
        if self.prefix is not None and peer.session not in self._by_session:
            peer = Peer.of(sock, with_cgroup=True)  # a fresh pidfd proves the caller lives still
        return peer

    def add_cgroup(self, name: str, execution: Any) -> None:
        self._by_cgroup[name] = execution

    def add_session(self, sid: int, execution: Any) -> None:
        self._by_session[sid] = execution

    def remove(self, cgroup: Optional[str], sid: Optional[int]) -> None:
        if cgroup is not None:
            self._by_cgroup.pop(cgroup, None)
        if sid is not None:
            self._by_session.pop(sid, None)

    def of(self, peer: Peer) -> Optional[Any]:
        """The execution ``peer`` belongs to, or None: its session's, else (a process that left
        its session) its cgroup's, the first cgroup below this server's cgroup root. For a
        process that is not root, the two agree: what a job starts is born in its session and
        its cgroup, and can leave the first but not the second."""
        found = None if peer.session is None else self._by_session.get(peer.session)
        cgroup = peer.cgroup
        if found is None and self.prefix and cgroup and cgroup.startswith(self.prefix):
            found = self._by_cgroup.get(cgroup[len(self.prefix):].split("/", 1)[0])
        return found


class RefusalLog:
    """Logs refused callers at warning, naming the pid and uid (never the token), at most
    ``limit`` lines in ``window`` seconds: a job calling in a loop must not flood the server's
    log. The lines left out are counted in the next one."""

    def __init__(self, limit: int = 10, window: float = 10.0):
        self.limit, self.window = limit, window
        self._lock = threading.Lock()
        self._start, self._lines, self._left_out = 0.0, 0, 0

    def refused(self, peer: Peer, error: str, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if now - self._start >= self.window:
                self._start, self._lines = now, 0
            if self._lines >= self.limit:
                self._left_out += 1
                return
            self._lines += 1
            left_out, self._left_out = self._left_out, 0
        more = f" ({left_out} more refusals not logged before this one)" if left_out else ""
        log.warning("event socket: refused pid %s (uid %s): %s%s", peer.pid, peer.uid, error, more)
