"""Which running execution a process on the event socket belongs to, from the kernel.

A token in the environment is readable by whoever may read ``/proc/PID/environ`` (root, and
the same uid), so it cannot say alone who calls. The kernel can: ``Peer.of`` takes the caller's
pid, uid and gid from the accepted unix connection (``SO_PEERCRED``, fixed at ``connect``),
and a pidfd of it (``SO_PEERPIDFD``, Linux 6.5). ``Callers.of`` maps the process to the running
execution it belongs to: its cgroup (``/proc/PID/cgroup``) where executions run in cgroups of
their own (a job cannot leave its cgroup, or enter another's, short of root's powers); else its
session (``/proc/PID/stat``; each execution is a session of its own, and no process can join
another session). The pidfd then proves that the pid still named the caller while it was read:
without it (an older kernel) a caller that exits at once could leave its pid to another process
before the read.
"""
from __future__ import annotations

import os
import signal
import socket
import struct
from typing import Any, Optional

from overseer.exceptions import IdentityError

SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux's number; Python 3.11 lacks the name
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_pidfd_supported = True  # False once the kernel refused SO_PEERPIDFD


class Peer:
    """The process at the other end of an accepted unix connection."""

    __slots__ = ("pid", "uid", "gid", "_pidfd")

    def __init__(self, pid: int, uid: int, gid: int, pidfd: int = -1):
        self.pid, self.uid, self.gid, self._pidfd = pid, uid, gid, pidfd

    @classmethod
    def of(cls, sock: socket.socket) -> Peer:
        global _pidfd_supported
        pid, uid, gid = _CREDS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                      _CREDS.size))
        pidfd = -1
        if _pidfd_supported:
            try:
                pidfd = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
            except OSError:  # ENOPROTOOPT: a kernel before 6.5
                _pidfd_supported = False
        return cls(pid, uid, gid, pidfd)

    def cgroup(self) -> Optional[str]:
        """Its cgroup v2 path as /proc shows it (``/overseer-123/job-7-ab/sub``), or None."""
        data = _read(f"/proc/{self.pid}/cgroup")
        if data.startswith(b"0::"):  # the unified hierarchy alone
            start = 3
        else:  # the hybrid layout: one line per v1 hierarchy, then the v2 one
            start = data.find(b"\n0::") + 4
            if start < 4:
                return None
        end = data.find(b"\n", start)
        return os.fsdecode(data[start:end] if end >= 0 else data[start:])

    def session(self) -> Optional[int]:
        """Its session id, or None when it is gone."""
        data = _read(f"/proc/{self.pid}/stat")
        try:
            return int(data[data.rindex(b")") + 2:].split(None, 4)[3])  # state ppid pgrp session
        except (ValueError, IndexError):
            return None

    def confirm(self) -> None:
        """Raise IdentityError if the caller has ended (then what was read under its pid may be
        another process's); a caller that waits for its answer never has."""
        if self._pidfd < 0:
            return
        try:
            signal.pidfd_send_signal(self._pidfd, 0)
        except ProcessLookupError:
            raise IdentityError(f"the calling process (pid {self.pid}) ended before its request "
                                "was read") from None
        except PermissionError:
            pass  # it lives (signal 0 checks permission: a root server always has it)

    def close(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


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
        """The execution ``peer`` belongs to, or None. A process inside this server's cgroup root
        is its cgroup's execution's (its session does not count: only root can move a process
        across cgroups); any other by its session. IdentityError when the caller has ended."""
        found = None
        cgroup = peer.cgroup() if self.prefix is not None else None
        if cgroup is not None and cgroup.startswith(self.prefix):
            found = self._by_cgroup.get(cgroup[len(self.prefix):].split("/", 1)[0])
        else:
            sid = peer.session()
            if sid is not None:
                found = self._by_session.get(sid)
        peer.confirm()
        return found
