"""Starting a job process straight into its cgroup, with ``overseer.process._spawn`` where it is built.

``subprocess.Popen`` cannot start a process inside a cgroup, so on that path the job moves itself
in as its first act (``job_process.entering``). Moving a process between cgroups waits for an RCU
grace period on a cgroup2 mount without ``favordynmods`` (~15-20 ms at p99) and blocks forks
meanwhile. The native spawn is ``clone3(CLONE_INTO_CGROUP | CLONE_PIDFD)``: the child is born in
its cgroup and comes with its pidfd, and the start costs less CPU than Popen's Python code.

It is optional: without a C compiler at install time, on a kernel or under a seccomp filter
without clone3 and its flags (the first spawn finds out), or with ``OVERSEER_NO_NATIVE_SPAWN=1``,
``available()`` is False and the runner uses Popen.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import shutil
import signal
from typing import Optional

log = logging.getLogger(__name__)

try:
    from overseer.process import _spawn
except ImportError:  # not built: no compiler at install, or not Linux
    _spawn = None

if _spawn is not None:
    Unsupported = _spawn.Unsupported
else:
    class Unsupported(OSError):
        """clone3 with these flags is not available here: use subprocess."""

_built = _spawn is not None and _spawn.available()
_unsupported = False  # set by the first spawn that clone3 refuses


def built() -> bool:
    """True when the extension is built for this platform (whatever the kernel allows)."""
    return _built


def available() -> bool:
    """True while the native spawn may be used: built, not switched off, not refused yet."""
    return _built and not _unsupported and not os.environ.get("OVERSEER_NO_NATIVE_SPAWN")


def spawn(argv: list[str], cwd: Optional[str], env: dict[bytes, bytes], stdin: int, stdout: int,
          stderr: int, cgroup_fd: int = -1) -> tuple[int, int]:
    """Start ``argv`` in a new session with ``stdin``/``stdout``/``stderr`` as its fds 0-2, no
    other fd, exactly ``env``, in ``cwd`` and, when ``cgroup_fd >= 0``, in that cgroup. Returns
    ``(pid, pidfd)``; raises OSError as Popen would when it cannot start, and ``Unsupported``
    (once; ``available()`` is False from then on) when this kernel cannot do it."""
    return _call(_spawn.spawn if _built else None, argv, env, cwd, stdin, stdout, stderr, cgroup_fd)


def spawn_piped(argv: list[str], cwd: Optional[str], env: dict[bytes, bytes], stdin: int,
                cgroup_dir: Optional[os.PathLike], epfd: int = -1, make_cgroup: bool = False,
                park_at: int = 0, ids: Optional[tuple[int, int, tuple[int, ...]]] = None,
                ) -> tuple[int, int, int, int, Optional[int], int]:
    """``spawn`` with the job's stdout and stderr made as pipes in the same call, and the cgroup
    given by its directory: ``(pid, pidfd, stdout_r, stderr_r, start_time, cgroup_errno)``, the
    read ends non-blocking and close-on-exec, ``start_time`` as ``job_process.process_start_time``
    gives it. With ``epfd``, the two read ends and then the pidfd are in that epoll set
    (``EPOLLIN``, the fd as its data) when it returns. With ``make_cgroup`` the cgroup is made
    first; when that fails the job starts without it and ``cgroup_errno`` says why (else 0).
    With ``park_at``, the read ends and the pidfd handed back are the lowest free fds from that
    number up: the low numbers stay free for the next start's pipes, and the child, born sharing
    the server's fd table, copies only the fds below its own three (not three per running job).
    With ``ids`` (uid, gid, supplementary groups) the job runs as that user (the child sets
    them, with raw system calls, before its chdir and exec), and a cgroup made here is delegated
    to it (``cgroups.Cgroup.delegate``).
    When it raises, nothing of the start is left: no process, no fd, no cgroup it made."""
    uid, gid, groups = ids if ids is not None else (-1, -1, None)
    return _call(_spawn.spawn_piped if _built else None, argv, env, cwd, stdin,
                 None if cgroup_dir is None else os.fspath(cgroup_dir), epfd, make_cgroup, park_at,
                 uid, gid, groups)


def _call(fn, argv: list[str], env: dict[bytes, bytes], cwd: Optional[str], *fds) -> tuple:
    global _unsupported
    if fn is None:
        raise Unsupported(errno.ENOSYS, "the native spawn is not built")
    path = argv[0]
    if "/" not in path:  # as Popen: search the job's PATH, not the server's
        path = shutil.which(path, path=os.fsdecode(env.get(b"PATH", os.defpath.encode()))) or path
    envp = [k + b"=" + v for k, v in env.items()]
    try:
        return fn(path, argv, envp, cwd, *fds)
    except Unsupported as e:
        if not _unsupported:
            _unsupported = True
            log.info("clone3 into a cgroup is not available here (%s); starting jobs with subprocess",
                     e.strerror)
        raise



def unwatch(ep: select.epoll, fd: int) -> None:
    """Take ``fd`` out of ``ep`` and close it: one release of the GIL where the extension is
    built, two system calls from Python elsewhere."""
    if _built:
        _spawn.unwatch(ep.fileno(), fd)
        return
    try:
        ep.unregister(fd)
    except FileNotFoundError:  # never watched: closing is what counts
        pass
    os.close(fd)


def reap(pid: int, pidfd: int, ep: select.epoll,
         cgroup_dir: Optional[os.PathLike]) -> Optional[tuple[int, Optional[bool]]]:
    """None while ``pid`` has not ended; else ``(wait status, cgroup removed)``. Once it ended
    its pidfd is out of ``ep`` and closed, its cgroup (if any) removed when empty (``removed``:
    True; False while processes are left in it; None without a cgroup), and then, when removed,
    its process group killed (only a process that left the cgroup can be in it). One release of
    the GIL where the extension is built, up to five system calls from Python elsewhere.
    (A run's TMPDIR is removed by its Execution, on its own thread: moved here, with the other
    runs' reaps on this one thread, it cost 10% of the runs per second.)"""
    cgroup = None if cgroup_dir is None else os.fspath(cgroup_dir)
    if _built:
        return _spawn.reap(pid, pidfd, ep.fileno(), cgroup)
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reaped already: it has ended
        got, status = pid, 0
    if got == 0:
        return None
    unwatch(ep, pidfd)
    removed = None
    if cgroup is not None:
        try:
            os.rmdir(cgroup)
            removed = True
        except FileNotFoundError:
            removed = True
        except OSError:
            removed = False
        if removed:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
    return status, removed


def mkdirs(paths: list[str], mode: int) -> tuple[int, int]:
    """mkdir each of ``paths`` in order, stopping at the first that fails: ``(made, errno)``
    (errno 0 when all were made). One release of the GIL where the extension is built."""
    if _built:
        return _spawn.mkdirs(paths, mode)
    for made, path in enumerate(paths):
        try:
            os.mkdir(path, mode)
        except OSError as e:
            return made, e.errno or errno.EIO
    return len(paths), 0
