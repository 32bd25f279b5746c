"""Catching what a run leaves outside its process group, where executions have no cgroup.

Without a cgroup, a run's tree is reached through its process group. A process that leaves the
group (``setsid``) and whose parent then exits, as a daemon's double fork does, would be handed to
init and outlive its run. ``overseer serve`` makes itself the *child subreaper* of its jobs
(``PR_SET_CHILD_SUBREAPER``): such a process is handed to the server instead, and the kernel puts
it among the children of the server's first live thread, its main thread. That thread starts no
process but runs' (``System(subreaper=True)`` is for a process that owns its main thread, as
``overseer serve`` does), so every child of it is a run's main process, which the
``ProcessMonitor`` reaps, or a process handed over, which is this module's to reap: no zombie
builds up.

A sweep reads that one list (``/proc/self/task/PID/children``: a few microseconds) and, for each
process the monitor does not watch:

- a zombie is reaped (``waitpid`` of that pid), unless a start is under way, whose main process
  it might be: then the next sweep does it;
- a live one is told to a run by ``OVERSEER_TOKEN`` in its environment (as it was exec'd), else by
  its session or process group being one of a run's (the run's main process leads both; a process
  told to a run adds its own): the chain that a daemon's children keep after an ``env -i``.
  Where its run has ended it gets SIGKILL, and the sweep comes again shortly for what it leaves.
  One that carries neither (it dropped the variable and left every session of the run) is not
  told, and lives on as it would without the subreaper.

Sweeps run after a run's main process is reaped (``ended``), shortly after each kill, and once a
second while runs are known (for the zombies of what ends on its own meanwhile).
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
from typing import Callable, Optional

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
MARK = b"OVERSEER_TOKEN"  # the variable, in every job's environment, naming its run
TICK = 1.0  # seconds between sweeps while runs are known
AGAIN = 0.02  # seconds to the sweep after a kill (doubling, up to TICK, while the killed live)
KEEP = 10.0  # seconds an ended run is still known, for processes handed over late

_lock = threading.Lock()
_held = False  # one monitor per process is the subreaper: it reaps what the others would watch


def _prctl_subreaper(on: bool) -> Optional[str]:
    """Set or clear the attribute; the error's text when the kernel refuses."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        return os.strerror(ctypes.get_errno())
    return None


class _Run:
    __slots__ = ("ended", "ids")

    def __init__(self):
        self.ended: Optional[float] = None  # monotonic time its main process was reaped
        self.ids: set[int] = set()  # sessions and process groups that are this run's


class Orphans:
    """The subreaper's book: which run each process handed to the server is, and the sweeps."""

    def __init__(self, call_at: Callable[[float, Callable[[], None]], int]):
        self._call_at = call_at
        self._lock = threading.Lock()
        self._runs: dict[bytes, _Run] = {}  # token -> run
        self._ended: collections.deque[tuple[float, bytes, _Run]] = collections.deque()  # oldest first
        self._mains: dict[int, Optional[bytes]] = {}  # main process the monitor reaps -> its token
        self._ids: dict[int, _Run] = {}  # session or process group id -> run
        self._starting = 0  # starts under way: their main process is not named yet
        self._seen: dict[int, Optional[_Run]] = {}  # live children told (None: no run's)
        self._killed: set[int] = set()
        self._ticking = False
        self._again = False
        self._delay = AGAIN
        self.due = False  # a sweep is wanted after the monitor's current batch of events
        self._children = f"/proc/self/task/{os.getpid()}/children"

    @classmethod
    def enable(cls, call_at: Callable[[float, Callable[[], None]], int]) -> Optional[Orphans]:
        """This process made a child subreaper, or None (logged) where the kernel refuses, or
        where another monitor of this process is one already."""
        global _held
        with _lock:
            children = f"/proc/self/task/{os.getpid()}/children"
            if _held:
                error = "another server in this process is"
            elif not os.path.exists(children):
                error = f"{children} is missing: a kernel without CONFIG_PROC_CHILDREN"
            else:
                error = _prctl_subreaper(True)
            if error is not None:
                log.warning("cannot make the server the child subreaper of its jobs (%s): without "
                            "cgroups, what leaves a job's process group outlives its run", error)
                return None
            _held = True
        return cls(call_at)

    def close(self) -> None:
        """The monitor stops: orphans go to init again."""
        global _held
        with _lock:
            _prctl_subreaper(False)
            _held = False

    # -- from the threads that start runs --------------------------------------------------
    def starting(self) -> None:
        with self._lock:
            self._starting += 1

    def failed(self) -> None:
        with self._lock:
            self._starting -= 1

    def started(self, pid: int, token: Optional[bytes]) -> None:
        """The main process of a run started, before the monitor watches it."""
        with self._lock:
            self._starting -= 1
            self._mains[pid] = token
            if token:
                self._claim(self._runs.setdefault(token, _Run()), pid)
            tick = not self._ticking
            self._ticking = True
        if tick:
            self._call_at(time.monotonic() + TICK, self._tick)

    # -- on the monitor thread -------------------------------------------------------------
    def ended(self, pid: int) -> None:
        """A run's main process was reaped: what is known of the run dies now, the rest at the
        sweep after this batch of events."""
        now = time.monotonic()
        with self._lock:
            token = self._mains.pop(pid, None)
            run = self._runs.get(token) if token else None
            if run is not None:
                run.ended = now
                self._ended.append((now, token, run))
        if run is not None:
            for child, owner in list(self._seen.items()):
                if owner is run:
                    self._kill(child)
        self.due = True

    def sweep(self) -> None:
        self.due = False
        try:
            fd = os.open(self._children, os.O_RDONLY | os.O_CLOEXEC)
            try:
                listed = os.read(fd, 1 << 20).split()
            finally:
                os.close(fd)
        except OSError as e:
            log.warning("cannot read the server's children (%s): %s", self._children, e.strerror)
            return
        seen, zombies = {}, []
        for word in listed:
            pid = int(word)
            if pid in self._mains:
                continue
            try:
                state, group, session = _stat(pid)
            except (OSError, ValueError, IndexError):
                continue
            if state == "Z":
                zombies.append(pid)
                continue
            run = self._seen[pid] if pid in self._seen else self._tell(pid, group, session)
            seen[pid] = run
            if run is not None and run.ended is not None and pid not in self._killed:
                self._kill(pid)
        self._seen = seen
        self._killed.intersection_update(seen)
        if zombies:
            self._reap(zombies)
        if not self._killed:
            self._delay = AGAIN
        elif not self._again:
            self._again = True
            self._call_at(time.monotonic() + self._delay, self._sweep_again)
            self._delay = min(self._delay * 2, TICK)

    def _tell(self, pid: int, group: int, session: int) -> Optional[_Run]:
        """The run ``pid`` is of; None: none this server knows. (A main process whose start is
        under way is none yet, as its token is not known before it is named.)"""
        token = _token(pid)
        with self._lock:
            run = self._runs.get(token) if token else None
            if run is None:
                if session != pid and session in self._ids:
                    run = self._ids[session]
                elif group != pid and group in self._ids:
                    run = self._ids[group]
            if run is not None:
                self._claim(run, session)
                self._claim(run, group)
        return run

    def _claim(self, run: _Run, ident: int) -> None:
        """``ident``, a live session or group, is ``run``'s (a number taken before by a run that
        ended is free again only once nothing of that run holds it)."""
        self._ids[ident] = run
        run.ids.add(ident)

    def _kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)  # a child of this process: its pid is not reused before it is reaped
        except OSError:
            return
        self._killed.add(pid)

    def _reap(self, zombies: list[int]) -> None:
        with self._lock:  # no main process is named meanwhile: each of these is none
            if self._starting:
                self.due = True
                return
            for pid in zombies:
                if pid in self._mains:
                    continue
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    def _sweep_again(self) -> None:
        self._again = False
        self.sweep()

    def _tick(self) -> None:
        self.sweep()
        now = time.monotonic()
        with self._lock:
            while self._ended and now - self._ended[0][0] > KEEP:
                _, token, run = self._ended.popleft()
                if self._runs.get(token) is run:
                    del self._runs[token]
                for ident in run.ids:
                    if self._ids.get(ident) is run:
                        del self._ids[ident]
            self._ticking = bool(self._runs or self._mains or self._seen)
        if self._ticking:
            self._call_at(now + TICK, self._tick)


def _stat(pid: int) -> tuple[str, int, int]:
    """State, process group and session of ``pid``, from /proc/PID/stat."""
    fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    fields = data[data.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[2]), int(fields[3])


def _token(pid: int) -> Optional[bytes]:
    """``OVERSEER_TOKEN`` of ``pid``'s environment as it was exec'd, or None."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return None
    key = MARK + b"="
    if data.startswith(key):
        start = len(key)
    else:
        at = data.find(b"\0" + key)
        if at < 0:
            return None
        start = at + 1 + len(key)
    end = data.find(b"\0", start)
    return data[start:] if end < 0 else data[start:end]
