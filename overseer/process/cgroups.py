"""One cgroup v2 per execution, where a writable cgroup2 hierarchy exists.

A cgroup holds every process a job starts, including those that leave its
process group with ``setsid``: ``cgroup.kill`` ends them all at once and
``cgroup.freeze`` stops and continues them all. Where no cgroup2 mount is
writable (not root, or no cgroup v2), ``CgroupRoot.find()`` returns None and
the runner falls back to the process group.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

# The files of a cgroup that its delegatee may write (with the directory itself).
DELEGATED = ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")
# How many cgroups a job may make below its delegated one (cgroup.max.descendants, which stays
# root's): their removal at the run's end is the monitor thread's work.
MAX_DESCENDANTS = 256


def _cgroup2_mounts() -> list[Path]:
    return list(_cgroup2_options())


def _cgroup2_options() -> dict[Path, set[str]]:
    """Every cgroup2 mount point with its mount options."""
    try:
        with open("/proc/self/mounts") as f:
            rows = [line.split() for line in f]
    except OSError:
        return {}
    return {Path(row[1]): set(row[3].split(",")) for row in rows if row[2:3] == ["cgroup2"]}


def _mount_roots() -> dict[Path, str]:
    """Every cgroup2 mount point with the cgroup it shows as its root (``/`` unless a cgroup
    below the namespace's root was mounted), from /proc/self/mountinfo."""
    try:
        with open("/proc/self/mountinfo") as f:
            rows = [line.split() for line in f]
    except OSError:
        return {}
    roots = {}
    for row in rows:
        if "-" in row and row[row.index("-") + 1:row.index("-") + 2] == ["cgroup2"]:
            roots[Path(row[4])] = row[3]
    return roots


def remove_tree(path: Path) -> bool:
    """Remove the cgroup ``path`` and the cgroups a job made below it (a delegated cgroup may
    hold up to ``MAX_DESCENDANTS`` of them), deepest first; False while processes are still in
    one. The common case, a cgroup with none below it, costs one rmdir."""
    try:
        path.rmdir()
        return True
    except FileNotFoundError:
        return True
    except OSError:
        pass
    found, stack = [], [os.fspath(path)]
    while stack:  # no recursion: the tree may be deep
        directory = stack.pop()
        found.append(directory)
        try:
            with os.scandir(directory) as entries:  # d_type: no stat of the ~20 files each holds
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    for directory in reversed(found):
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass
        except OSError:
            if directory == found[0]:  # the run's own: processes are left in it
                return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def remove_stale(mount: Path) -> list[Path]:
    """Remove the ``overseer-<pid>`` cgroups that servers which died without stopping (SIGKILL,
    a crash) left under ``mount``, with their empty per-execution cgroups; returns what was
    removed. A server's cgroup whose pid lives is never touched, and neither is a cgroup that
    still holds processes (a crashed server's jobs: the restart's recovery ends those it knows,
    and the next start removes what is then empty)."""
    removed = []
    try:
        candidates = [p for p in mount.iterdir() if p.name.startswith("overseer-")]
    except OSError:
        return removed
    for parent in candidates:
        pid = parent.name[len("overseer-"):]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        try:
            children = [p for p in parent.iterdir() if p.is_dir()]
        except OSError:
            continue
        busy = [child.name for child in children if not remove_tree(child)]
        if busy:
            busy.sort()
            more = f" and {len(busy) - 5} more" if len(busy) > 5 else ""  # one line, however many
            log.warning("cgroup %s of a server that is gone still holds processes in %d cgroups (%s%s); "
                        "left in place", parent, len(busy), ", ".join(busy[:5]), more)
            continue
        try:
            parent.rmdir()
            removed.append(parent)
        except OSError:
            continue
    if removed:
        log.info("removed %d cgroups left by servers that did not stop cleanly", len(removed))
    return removed


class CgroupRoot:
    """The parent cgroup under which this server makes one cgroup per execution."""

    def __init__(self, path: Path, proc_path: Optional[str] = None):
        self.path = path
        # How /proc/PID/cgroup names it, with a trailing "/": "/overseer-123/" (overseer/process/identity.py)
        self.proc_path = proc_path

    @classmethod
    def find(cls, moves_jobs: bool = True) -> Optional[CgroupRoot]:
        """The server's cgroup under the first writable cgroup2 mount. ``moves_jobs``: jobs will
        be moved into their cgroups (not born there), which is worth a hint on some mounts."""
        if os.environ.get("OVERSEER_NO_CGROUPS"):
            return None
        for mount in _cgroup2_mounts():
            remove_stale(mount)
            parent = mount / f"overseer-{os.getpid()}"
            try:
                parent.mkdir(exist_ok=True)
                probe = parent / "probe"
                probe.mkdir()
                has_kill = (probe / "cgroup.kill").exists()
                probe.rmdir()
            except OSError:
                continue
            if not has_kill:
                parent.rmdir()
                continue
            log.info("each execution gets its own cgroup under %s", parent)
            if moves_jobs and "favordynmods" not in _cgroup2_options().get(mount, {"favordynmods"}):
                # Moving a process between cgroups waits for an RCU grace period on such a mount:
                # a job's start then takes up to ~20 ms at p99 instead of ~2 (docs/operations.rst).
                log.info("cgroup2 at %s is mounted without favordynmods: starts wait for the "
                         "kernel's cgroup lock at times; `mount -o remount,favordynmods %s` "
                         "makes them steady", mount, mount)
            shown = _mount_roots().get(mount, "/").rstrip("/")
            return cls(parent, f"{shown}/{parent.relative_to(mount)}/")
        return None

    def create(self, name: str) -> Optional[Cgroup]:
        path = self.path / name
        try:
            path.mkdir()
        except OSError as e:
            return self.made(name, e.errno or errno.EIO)
        return Cgroup(path)

    def made(self, name: str, error: int) -> Optional[Cgroup]:
        """The cgroup ``name`` as its maker (``create``, or the native spawn) left it: made
        (``error`` 0), or not, said once per start, and then the job has its process group only."""
        path = self.path / name
        if error:
            log.warning("cannot make cgroup %s (%s); using the process group only", path,
                        os.strerror(error))
            return None
        return Cgroup(path)

    def remove(self) -> bool:
        """Remove the cgroup; False while processes are still in it."""
        try:
            self.path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            return False

    def release(self) -> bool:
        """End of the run: remove it, killing what is left first if it is not empty (the
        common case, an empty cgroup, costs one rmdir). False: try again shortly."""
        if self.remove():
            return True
        self.kill()
        return self.remove()


class Cgroup:
    def __init__(self, path: Path):
        self.path = path

    def add(self, pid: int) -> bool:
        """Move ``pid`` in (a job moves itself in as its first act; this is the fallback)."""
        return self._write("cgroup.procs", str(pid).encode())

    def delegate(self, uid: int, gid: int) -> bool:
        """Give the cgroup to ``uid``/``gid`` as systemd delegates one: the directory (the job
        can make cgroups below it) and the files a delegatee writes. The job can then move its
        processes between its own cgroups but never out of this one: a move needs write access
        to the cgroup.procs of the common ancestor too, and above this cgroup all is root's.
        (The native spawn does the same in C: ``_spawn_clone.c``.)"""
        try:
            (self.path / "cgroup.max.descendants").write_bytes(b"%d" % MAX_DESCENDANTS)
            os.chown(self.path, uid, gid)
            for name in DELEGATED:
                os.chown(self.path / name, uid, gid)
            return True
        except OSError as e:
            log.warning("cannot delegate cgroup %s to uid %s: %s", self.path, uid, e.strerror)
            return False

    def _write(self, name: str, value: bytes) -> bool:
        try:
            with open(self.path / name, "wb", buffering=0) as f:
                f.write(value)
            return True
        except OSError:
            return False

    def open_fd(self) -> int:
        """A directory fd to start a process inside it (``clone3(CLONE_INTO_CGROUP)``)."""
        return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def kill(self) -> bool:
        return self._write("cgroup.kill", b"1")

    def freeze(self, frozen: bool) -> bool:
        return self._write("cgroup.freeze", b"1" if frozen else b"0")

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def signal_all(self, signum: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signum)
            except OSError:
                pass
        if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.freeze(False)  # a frozen tree must run to handle the signal

    def remove(self) -> bool:
        """Remove the cgroup, and those its job made below it; False while processes are still
        in one."""
        return remove_tree(self.path)

    def release(self) -> bool:
        """End of the run: remove it, killing what is left first if it is not empty (the
        common case, an empty cgroup, costs one rmdir). False: try again shortly."""
        if self.remove():
            return True
        self.kill()
        return self.remove()


def recorded(path: str) -> Optional[Cgroup]:
    """The cgroup a run's record names, ``<cgroup2 mount>/overseer-PID/NAME``, while it is there;
    None for any other path (a record never makes the server write elsewhere)."""
    where = Path(path)
    server = where.parent
    if (os.path.normpath(path) != path or not server.name.startswith("overseer-")
            or not server.name[len("overseer-"):].isdigit() or server.parent not in _cgroup2_mounts()
            or not where.is_dir()):
        return None
    return Cgroup(where)
