"""Starting, watching, signalling and reading job processes on this machine.

One ``ProcessMonitor`` thread serves every running execution: it reads all
stdout/stderr pipes and all pidfds through one selector, and runs the timers
(time-outs, kill grace). Execution actors own their process through a
``Process`` handle; nothing here knows about actors, the Store or HTTP, so a
runner for other machines can take its place behind the same interface.

Callbacks (``on_output``, ``on_exit``, timer functions) run on the monitor
thread and must be quick: they hand work on (a queued Store append, an actor
``tell``) and return.

Without cgroups and with ``subreaper``, the monitor is also the child subreaper
of the runs' processes (``overseer.orphans``): after a batch of reaps one sweep
kills what the ended runs left outside their process groups, and reaps it.
"""
from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import resource
import select
import subprocess
import threading
import time
from typing import Callable, Optional

from overseer.process import cgroups, orphans, spawn
from overseer.process.job_process import (
    ExitStatus,
    Process,
    check_executable,
    entering,
    gated,
    process_start_time,
    signal_name,
)

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024

Ids = tuple[int, int, tuple[int, ...]]  # uid, gid, supplementary groups: a job run as another user


class _Watch:
    __slots__ = ("proc", "pidfd", "pipes", "on_output", "on_exit")

    def __init__(self, proc, pidfd, pipes, on_output, on_exit):
        self.proc = proc
        self.pidfd = pidfd
        self.pipes = pipes  # fd -> stream name
        self.on_output = on_output
        self.on_exit = on_exit


PARK_AT = 8192  # running jobs' pipes and pidfds live from this fd number up (see park_fds_at)


def park_fds_at() -> int:
    """Where the native spawn moves running jobs' fds: PARK_AT, or a quarter of the open-file
    limit when that is lower (the server raises the limit to the hard one first; below 4,096 they
    are not moved). Kept apart from the server's own fds, they leave the low numbers to the next
    start's pipes, and a new job, born sharing the fd table, copies only the fds below its pipes.
    Not higher: every other fork (git, the Popen path) copies the table up to its highest fd."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return PARK_AT
    return min(PARK_AT, soft // 4) if soft >= 4096 else 0


class ProcessMonitor:
    """The one thread that pumps every pipe, reaps every process and runs the timers."""

    def __init__(self, use_cgroups: bool = True, native_spawn: bool = True, subreaper: bool = False):
        # epoll itself, not ``selectors``: a thread that starts a process registers its fds at once
        # (epoll_ctl is safe while this thread waits in epoll_wait), instead of waking this thread
        # to do it. ``_fds`` maps each watched fd to (watch, the pipe's fd or None for the pidfd).
        self._ep = select.epoll()
        self._fds: dict[int, tuple[_Watch, Optional[int]]] = {}
        self._lock = threading.Lock()
        self._timers: list = []
        self._seq = itertools.count()
        self._cancelled: set = set()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)  # every job's stdin
        self._park_at = park_fds_at()
        self._ep.register(self._wake_r, select.EPOLLIN)
        self._stop = False
        self.native_spawn = native_spawn  # when spawn.available(); else Popen
        born_inside = native_spawn and spawn.available()
        self.cgroup_root = cgroups.CgroupRoot.find(moves_jobs=not born_inside) if use_cgroups else None
        # Without cgroups, what leaves a run's process group is caught as its subreaper (orphans).
        self.orphans = (orphans.Orphans.enable(self.call_at)
                        if subreaper and self.cgroup_root is None else None)
        self._thread = threading.Thread(target=self._loop, name="process-monitor", daemon=True)
        self._thread.start()

    # -- starting ----------------------------------------------------------------------------
    def start(self, argv: list[str], cwd: str, env: dict, name: str,
              on_output: Callable[[str, bytes], None],
              on_exit: Callable[[ExitStatus], None], ids: Optional[Ids] = None) -> Process:
        """Start ``argv`` in its own session, in a cgroup ``name`` of its own where there is a
        cgroup root; raise OSError when it cannot start, and then nothing of it is left. With
        ``ids`` (uid, gid, supplementary groups) it runs as that user, its cgroup delegated to it."""
        started = None
        if self.orphans is not None:
            self.orphans.starting()
        try:
            if self.native_spawn and spawn.available():
                try:
                    started = self._spawn_native(argv, cwd, env, name, ids)
                except spawn.Unsupported:
                    pass  # logged once by spawn(); Popen from now on
            if started is None:
                cgroup = self.cgroup_root.create(name) if self.cgroup_root else None
                try:
                    if cgroup is not None and ids is not None:
                        cgroup.delegate(ids[0], ids[1])
                    started = self._spawn_popen(argv, cwd, env, cgroup, ids)
                except BaseException:
                    if cgroup:
                        cgroup.remove()
                    raise
        except BaseException:
            if self.orphans is not None:
                self.orphans.failed()
            raise
        if self.orphans is not None:  # named before the monitor can reap it
            self.orphans.started(started[0].pid, env.get(orphans.MARK))
        self._register(_Watch(*started, on_output, on_exit))
        return started[0]

    def _spawn_native(self, argv: list[str], cwd: str, env: dict, name: str,
                      ids: Optional[Ids] = None) -> tuple[Process, int, dict]:
        """clone3: born in its cgroup, with its pidfd and its pipes, in one call that also makes
        the cgroup, adds the fds to the epoll set and reads the start time; argv runs as it is
        (no ``entering``), and exec itself reports a script that cannot run."""
        root = self.cgroup_root
        try:
            pid, pidfd, out_r, err_r, start_time, cgroup_error = spawn.spawn_piped(
                argv, cwd, env, self._devnull, root.path / name if root else None, self._ep.fileno(),
                make_cgroup=True, park_at=self._park_at, ids=ids)
        except FileNotFoundError as e:
            if e.filename == argv[0] and os.path.exists(argv[0]):
                check_executable(argv[0])  # it is there: its #! interpreter is not; say so
            raise
        cgroup = root.made(name, cgroup_error) if root else None
        proc = Process(pid, cgroup, joined=True, start_time=start_time)
        return proc, pidfd, {out_r: "stdout", err_r: "stderr"}  # in epoll already

    def _spawn_popen(self, argv: list[str], cwd: str, env: dict, cgroup: Optional[cgroups.Cgroup],
                     ids: Optional[Ids] = None) -> tuple[Process, int, dict]:
        """Popen, with ``user=``, ``group=`` and ``extra_groups=`` for ``ids``. A job running as
        another user cannot move itself into its cgroup (the move needs write access above it),
        so it waits at a gate (``gated``) until the server has moved it."""
        gate = None
        stdin = self._devnull
        if cgroup is not None and ids is not None:
            argv = gated(argv)
            stdin, gate = os.pipe2(os.O_CLOEXEC)
        elif cgroup is not None:
            argv = entering(cgroup, argv)
        as_user = {} if ids is None else {"user": ids[0], "group": ids[1], "extra_groups": list(ids[2])}
        try:
            popen = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=stdin, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, close_fds=True, **as_user)
        except BaseException:
            if gate is not None:
                os.close(gate)
            raise
        finally:
            if gate is not None:
                os.close(stdin)
        joined = False
        if gate is not None:
            joined = cgroup.add(popen.pid)
            try:
                os.write(gate, b"\n")  # on its way, in its cgroup (or, if the move failed, not)
            finally:
                os.close(gate)
        proc = Process(popen.pid, cgroup, joined=joined, start_time=process_start_time(popen.pid),
                       popen=popen)
        pipes = {}
        for stream, f in (("stdout", popen.stdout), ("stderr", popen.stderr)):
            fd = os.dup(f.fileno())
            f.close()
            os.set_blocking(fd, False)
            pipes[fd] = stream
        popen.stdout = popen.stderr = None
        pidfd = os.pidfd_open(proc.pid)
        for fd in (*pipes, pidfd):  # pipes first, as the native spawn does (see _register)
            self._ep.register(fd, select.EPOLLIN)
        return proc, pidfd, pipes

    def _register(self, watch: _Watch) -> None:
        """Name a started process's pipes and pidfd for the monitor (from any thread). The start
        added them to epoll already, pipes first: each fd is in epoll before it is named in
        ``_fds``: an event of an earlier fd of that number, still in the
        monitor's hands, then finds no owner, or this watch with its fd already watched (a
        read of it is harmless); an event of the new fd before it is named comes again (epoll is
        level-triggered). The pidfd comes last: the monitor may read a pipe to its end before
        the other is watched, but reaps only after."""
        for fd in list(watch.pipes):  # the monitor may close the first before the second is in
            self._fds[fd] = (watch, fd)
        self._fds[watch.pidfd] = (watch, None)

    def _unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` and close it (monitor thread only: no fd number is reused while
        an event of this batch may still name it). Its name goes first: until it is closed no
        other start can get its number, so the name taken is this watch's."""
        del self._fds[fd]
        spawn.unwatch(self._ep, fd)

    # -- timers ------------------------------------------------------------------------------
    def call_at(self, when: float, fn: Callable[[], None]) -> int:
        """Run ``fn`` on the monitor thread at monotonic time ``when``; returns a handle."""
        handle = next(self._seq)
        with self._lock:
            heapq.heappush(self._timers, (when, handle, fn))
        self._wake()
        return handle

    def cancel(self, handle: Optional[int]) -> None:
        if handle is not None:
            with self._lock:
                self._cancelled.add(handle)

    def stop(self) -> None:
        self._stop = True
        self._wake()
        self._thread.join(5)
        if self.orphans is not None:
            self.orphans.close()
            self.orphans = None
        if self._devnull >= 0:
            os.close(self._devnull)
            self._devnull = -1
            self._ep.close()

    # -- the loop ----------------------------------------------------------------------------
    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _loop(self) -> None:
        fds, wake, orphans = self._fds, self._wake_r, self.orphans
        while not self._stop:
            timeout = self._run_timers()
            try:
                events = self._ep.poll(-1 if timeout is None else timeout)
            except OSError as e:  # pragma: no cover - EINTR is retried by poll
                log.error("process monitor: epoll failed: %s", e)
                continue
            for fd, _mask in events:
                if fd == wake:
                    self._drain_wake()
                    continue
                entry = fds.get(fd)
                if entry is None:
                    continue  # closed by a reap earlier in this same batch of events
                watch, pipe = entry
                try:
                    if pipe is None:
                        self._reap(watch)
                    else:
                        self._read(watch, fd)
                except Exception:  # a bug here must not stop every other execution's output
                    log.exception("process monitor: error handling pid %s", watch.proc.pid)
            if orphans is not None and orphans.due:  # after the batch: one sweep for all its ends
                try:
                    orphans.sweep()
                except Exception:
                    log.exception("process monitor: error sweeping what runs left")

    def _drain_wake(self) -> None:
        """A timer was set: the loop computes its next timeout."""
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _run_timers(self) -> Optional[float]:
        while True:
            with self._lock:
                if not self._timers:
                    return None
                when, handle, fn = self._timers[0]
                if handle in self._cancelled:
                    heapq.heappop(self._timers)
                    self._cancelled.discard(handle)
                    continue
                now = time.monotonic()
                if when > now:
                    return when - now
                heapq.heappop(self._timers)
            try:
                fn()
            except Exception:
                log.exception("process monitor: timer failed")

    def _read(self, watch: _Watch, fd: int) -> bool:
        """Read what is there; return False at EOF (and unregister the pipe)."""
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return True
        except OSError as e:
            if e.errno != errno.EIO:
                log.warning("pid %s: reading %s failed: %s", watch.proc.pid, watch.pipes[fd], e)
            data = b""
        if data:
            watch.on_output(watch.pipes[fd], data)
            return True
        self._close_pipe(watch, fd)
        return False

    def _close_pipe(self, watch: _Watch, fd: int) -> None:
        self._unwatch(fd)
        del watch.pipes[fd]

    def _reap(self, watch: _Watch) -> None:
        proc = watch.proc
        entry = self._fds.pop(watch.pidfd)  # named no more before it is closed (see _unwatch)
        got = spawn.reap(proc.pid, watch.pidfd, self._ep, proc.cgroup.path if proc.cgroup else None)
        if got is None:
            self._fds[watch.pidfd] = entry  # stopped or continued, not ended: still open, watched
            return
        status, emptied = got
        proc.reaped()
        if os.WIFSIGNALED(status):
            exit_status = ExitStatus(None, signal_name(os.WTERMSIG(status)))
        else:
            exit_status = ExitStatus(os.waitstatus_to_exitcode(status), None)
        watch.proc.status = exit_status
        # What the process wrote before it ended is in the pipes: take all of it, then end
        # whatever it left running (it would hold the pipes open for ever).
        for fd in list(watch.pipes):
            for _ in range(64):  # bounded: a leftover child may write without end
                if fd not in watch.pipes or not self._read_available(watch, fd):
                    break
        if not emptied and not proc.kill_remaining():  # its cgroup was empty: nothing is left
            self._release_later(proc, 1)
        if self.orphans is not None:
            self.orphans.ended(proc.pid)  # what left its group dies too (the sweep after the batch)
        for fd in list(watch.pipes):
            while fd in watch.pipes and self._read_available(watch, fd):
                pass
            if fd in watch.pipes:
                self._close_pipe(watch, fd)
        watch.on_exit(exit_status)

    def _release_later(self, proc: Process, attempt: int) -> None:
        """A cgroup whose killed processes are still exiting: retry its removal."""
        def retry() -> None:
            if not proc.kill_remaining() and attempt < 100:
                self._release_later(proc, attempt + 1)
        self.call_at(time.monotonic() + 0.05 * min(attempt, 20), retry)

    def _read_available(self, watch: _Watch, fd: int) -> bool:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if data:
            watch.on_output(watch.pipes[fd], data)
            return True
        self._close_pipe(watch, fd)
        return False
