"""Jobs as another user than the server's: ``execution.run_as`` (docs/operations.rst).

``RunAs.resolve`` turns the config into the credentials jobs get, at the server's start (names
are looked up then, and every problem is a ``ConfigError`` naming the key): one user for every
job (``user``), or a range of uids (``uids``) of which each running execution takes one of its
own, as systemd's ``DynamicUser`` does, so that jobs cannot read each other's
``/proc/PID/environ`` or signal each other. A uid goes back to the range when its execution
ends, to the end of the line: it is handed out again only after every other free one.

Only root can start processes as another user: ``check_server`` refuses the start otherwise.
The rest of the server's side: the data dir made unreadable to jobs (``seal_data_dir``), the
paths they need checked for reachability (``unreachable``), and what a job may have left
running under a uid of the range killed before the uid is given out again (``sweep``).
"""
from __future__ import annotations

import collections
import errno
import grp
import logging
import os
import pwd
import stat
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from overseer.config import RunAsConfig, uid_range
from overseer.exceptions import ConfigError, NoFreeUid

log = logging.getLogger(__name__)

KEY = "execution.run_as"


@dataclass(frozen=True)
class Credentials:
    """What one execution's processes run as."""
    uid: int
    gid: int
    groups: tuple[int, ...]  # the supplementary groups (none without a passwd entry)
    user: str  # USER and LOGNAME: the passwd name, else the uid
    home: Optional[str]  # the passwd entry's home directory; None: the run's TMPDIR is HOME


class RunAs:
    """Hands out the credentials of each execution: the one user's, or a free uid of the range."""

    def __init__(self, fixed: Optional[Credentials] = None, uids: Optional[range] = None,
                 gid: Optional[int] = None):
        self.fixed = fixed
        self.uids = uids
        self._gid = gid  # the range's primary group; None: each uid's own number
        self._free: collections.deque[int] = collections.deque(uids or ())
        self._taken: set[int] = set()
        self._lock = threading.Lock()
        self._sealed: Optional[tuple[Path, tuple[Path, ...]]] = None  # what seal() made private
        self._resealed = False

    @property
    def dynamic(self) -> bool:
        """Each execution gets a uid of its own."""
        return self.fixed is None

    @classmethod
    def resolve(cls, cfg: RunAsConfig) -> RunAs:
        """The config's users and groups looked up; ConfigError naming the key when one is not
        there, or when the range holds a user or group of the system."""
        gid = None if cfg.group is None else _group_id(cfg.group)
        if cfg.uids is not None:
            uids = uid_range(cfg.uids)  # its shape was checked with the config
            for entry in pwd.getpwall():
                if entry.pw_uid in uids:
                    raise ConfigError(f"{KEY}.uids: uid {entry.pw_uid} is the user "
                                      f"{entry.pw_name!r}; the range must hold no user of the system")
            if gid is None:  # each uid's group is its own number: no group of the system may be one
                for entry in grp.getgrall():
                    if entry.gr_gid in uids:
                        raise ConfigError(f"{KEY}.uids: gid {entry.gr_gid} is the group "
                                          f"{entry.gr_name!r}; each job's group is its uid's number, "
                                          f"so the range must hold no group of the system "
                                          f"(or set {KEY}.group)")
            return cls(uids=uids, gid=gid)
        return cls(fixed=_user_credentials(cfg.user, gid))

    def sample(self) -> Credentials:
        """Credentials as a job gets them (the range's first uid), for checks at start."""
        return self.fixed or self._of(self.uids[0])

    def take(self) -> Credentials:
        """The credentials for a starting execution; NoFreeUid (an OSError, EAGAIN) when every uid
        of the range is a running execution's."""
        if self.fixed is not None:
            return self.fixed
        with self._lock:
            if not self._free:
                raise NoFreeUid(errno.EAGAIN, f"no free uid in {KEY}.uids: all {len(self.uids)} are "
                                              "running executions'")
            uid = self._free.popleft()
            self._taken.add(uid)
        return self._of(uid)

    def give_back(self, creds: Credentials) -> None:
        """The execution ended and nothing of it runs any more: its uid may go to another."""
        if self.fixed is not None:
            return
        with self._lock:
            if creds.uid in self._taken:
                self._taken.discard(creds.uid)
                self._free.append(creds.uid)

    def seal(self, data: Path, private: Iterable[Path]) -> None:
        """Make the data dir private at start (``seal_data_dir``)."""
        self._sealed = (data, tuple(private))
        seal_data_dir(*self._sealed)

    def before_first_job(self) -> None:
        """Once, as the first job starts: seal again, for what the first sync of a fresh data
        dir made after the start sealed it (the git repository). Cheap after that: one test."""
        if self._resealed or self._sealed is None:
            return
        with self._lock:
            if not self._resealed:
                seal_data_dir(*self._sealed)
                self._resealed = True

    def sweep_leftovers(self) -> None:
        """At start, after recovery: kill what still runs under a uid of the range (left by a
        previous server's jobs: a ``setsid`` child without a cgroup, say), before any job gets
        that uid."""
        for uid, count in sorted(busy_uids(self.uids).items()):
            log.warning("uid %s of %s.uids still runs %d processes, left by a previous server's "
                        "jobs; killing them before the uid is given to a job", uid, KEY, count)
            sweep(self._of(uid))

    def _of(self, uid: int) -> Credentials:
        return Credentials(uid, uid if self._gid is None else self._gid, (), str(uid), None)


def _group_id(group: str | int) -> int:
    if isinstance(group, int) or group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"{KEY}.group: no group named {group!r}") from None


def _user_credentials(user: str | int, gid: Optional[int]) -> Credentials:
    """The user's uid, primary group (``gid`` if given), supplementary groups and home; a uid
    without a passwd entry gets no supplementary group, its own number as group unless ``gid``
    is given, and no home."""
    numeric = isinstance(user, int) or user.isdigit()
    try:
        entry = pwd.getpwuid(int(user)) if numeric else pwd.getpwnam(user)
    except KeyError:
        if not numeric:
            raise ConfigError(f"{KEY}.user: no user named {user!r}") from None
        uid = int(user)
        return Credentials(uid, uid if gid is None else gid, (), str(uid), None)
    if entry.pw_uid == 0:
        raise ConfigError(f"{KEY}.user: {user!r} is root; jobs would run as root, as without run_as")
    primary = entry.pw_gid if gid is None else gid
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, primary))))
    home = entry.pw_dir if entry.pw_dir and os.path.isdir(entry.pw_dir) else None
    return Credentials(entry.pw_uid, primary, groups, entry.pw_name, home)


def check_server(euid: Optional[int] = None) -> None:
    """Only root can start jobs as another user: a ConfigError naming the key otherwise."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        raise ConfigError(f"{KEY}: the server runs as uid {euid}, not as root, and only root can "
                          "start jobs as another user; start it as root or remove the key")


def unreachable(path: Path, creds: Credentials) -> Optional[str]:
    """Why a process with ``creds`` cannot reach ``path`` (a directory on the way that it may not
    search), or None when it can. Plain permission bits; ACLs are not read. The part of the path
    that does not exist yet is not judged (the server makes it, searchable)."""
    for directory in [*reversed(Path(path).parents), Path(path)]:
        try:
            st = os.stat(directory)
        except FileNotFoundError:
            return None
        except OSError as e:
            return f"{directory}: {e.strerror}"
        if st.st_uid == creds.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == creds.gid or st.st_gid in creds.groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return (f"{directory} (mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}, "
                    f"gid {st.st_gid}) may not be searched by uid {creds.uid}")
    return None


def check_reachable(paths: dict[str, Path], creds: Credentials) -> None:
    """ConfigError naming the key when a path every job needs is out of its reach."""
    for what, path in paths.items():
        why = unreachable(path, creds)
        if why is not None:
            raise ConfigError(f"{KEY}: jobs cannot reach {what} {path}: {why}")


def seal_data_dir(data: Path, private: Iterable[Path]) -> None:
    """The data dir searchable but not listable by others (0711: jobs reach their snapshot,
    TMPDIR and the event socket by name), and what only the server reads (the store, the git
    repository) its owner's alone (0700; files 0600)."""
    os.chmod(data, 0o711)
    for path in private:
        try:
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
        except FileNotFoundError:
            pass


def busy_uids(uids: range) -> dict[int, int]:
    """uid -> how many processes run under it, for the uids of ``uids`` that have any (one scan
    of /proc: what a previous server's jobs left, at start)."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:  # the real uid from status: /proc/PID of a process made non-dumpable is root's
            with open(f"/proc/{entry}/status", "rb") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith(b"Uid:"))
        except (OSError, StopIteration, ValueError, IndexError):
            continue
        if uid in uids:
            found[uid] = found.get(uid, 0) + 1
    return found


def sweep(creds: Credentials) -> None:
    """SIGKILL every process running under ``creds.uid``: a shell as that uid does
    ``kill -KILL -1``, which reaches every process it may signal (all of that uid's, and no
    other's) but itself, at once (no fork slips between). For a uid of the range whose execution
    had no cgroup to end it whole."""
    try:
        subprocess.run(["/bin/sh", "-c", "kill -KILL -1 2>/dev/null; exit 0"], user=creds.uid,
                       group=creds.gid, extra_groups=[], env={}, cwd="/", stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("cannot kill what is left under uid %s: %s", creds.uid, e)
