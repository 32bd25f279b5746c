"""The read-only view of the snapshots: ``data_dir/snapshots``, where every run finds its commit's
tree, is a read-only bind mount of ``data_dir/snapshot-trees``, where the server writes them.

File permissions alone (no write bits, directories 0555: overseer/repo/snapshot_files.py) stop a job of
another user, but not one running as root, and the snapshots of successive commits share their
unchanged files as hard links: a file rewritten in place through one snapshot would change it in
every other, for every later run. Through a read-only mount every write, chmod, create, rename
and unlink fails with EROFS, root or not, while the trees stay writable to the server under their
own path, so a new snapshot is still made as hard links to the previous one (a link cannot cross
from one mount to another, so the view cannot be the place they are written).

One mount for all snapshots, made when RepoSync starts, before any run: a snapshot is visible in
the view, read-only, the moment it is renamed into place, and removing one is a rename and a
delete in the trees, with nothing to unmount; no run and no snapshot pays for a mount of its own.
The mount is private (what is mounted beneath it later propagates neither way). A stop detaches
it (the runs have ended by then); a mount a killed server left is the right one still, and the
next start takes it as it is.

Where nothing can be mounted (not root, no CAP_SYS_ADMIN), the view is a symlink to the trees and
the permissions are all there is: logged once, at warning, saying what that leaves open.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import secrets
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

TREES = "snapshot-trees"

_MS_RDONLY = 0x1
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 0x2
_UMOUNT_NOFOLLOW = 0x8
# Per-mount flags a read-only remount must carry over (a mount in a user namespace refuses to drop
# them); statvfs reports them with the same values.
_KEPT = (os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC | os.ST_NOATIME | os.ST_NODIRATIME
         | os.ST_RELATIME)

_libc: Optional[ctypes.CDLL] = None
_warned = False


def trees_of(view: Path) -> Path:
    """Where the server writes the snapshots that ``view`` shows."""
    return view.with_name(TREES)


def open_view(view: Path, trees: Path) -> bool:
    """Make ``view`` show ``trees`` read-only; True when it is a read-only mount, False when it
    could only be a symlink (logged once). A view that is right already is left as it is."""
    trees.mkdir(parents=True, exist_ok=True)
    if is_read_only_view(view, trees):
        return True
    if _warned and view.is_symlink() and os.readlink(view) == trees.name:
        return False   # this process could not mount it before: the symlink stands
    detach(view)
    _clear(view, trees)
    try:
        view.mkdir(exist_ok=True)
        _mount_read_only(trees, view)
        log.info("snapshots: %s is a read-only view of %s", view, trees)
        return True
    except OSError as e:
        problem = e
    view.rmdir()
    view.symlink_to(trees.name)
    _warn(view, problem)
    return False


def close_view(view: Path) -> None:
    """Detach the mount(s) at ``view``, if any, leaving its empty directory."""
    detach(view)


def is_read_only_view(view: Path, trees: Path) -> bool:
    """Whether ``view`` is a read-only mount of ``trees`` itself."""
    try:
        seen, made = os.lstat(view), os.stat(trees)
        return ((seen.st_dev, seen.st_ino) == (made.st_dev, made.st_ino)
                and bool(os.statvfs(view).f_flag & os.ST_RDONLY))
    except OSError:
        return False


def detach(path: Path) -> int:
    """Lazily unmount every mount stacked at ``path`` (a user of one keeps what it sees); how many."""
    count = 0
    while count < 64:
        if _call("umount2", os.fsencode(path), _MNT_DETACH | _UMOUNT_NOFOLLOW) != 0:
            code = ctypes.get_errno()
            if code not in (errno.EINVAL, errno.ENOENT, errno.EPERM, errno.ENOTDIR):
                log.warning("snapshots: cannot unmount %s: %s", path, os.strerror(code))
            break
        count += 1
    return count


def _clear(view: Path, trees: Path) -> None:
    """Leave at most an empty directory at ``view``: a symlink goes, and trees written into
    ``view`` itself (as before the view existed) are moved aside into ``trees`` to be deleted
    with the other unused snapshots (overseer/repo/snapshots.py ``remove_unused``): the trees are made
    anew, since a root job could have changed those."""
    if view.is_symlink():
        view.unlink()
    elif view.is_dir() and any(view.iterdir()):
        aside = trees / f".trash-view-{secrets.token_hex(4)}"
        os.rename(view, aside)
        log.warning("snapshots: moved the trees found in %s aside to %s (removed soon); their "
                    "commits are checked out anew", view, aside)


def _mount_read_only(source: Path, target: Path) -> None:
    _mount(source, target, _MS_BIND)
    try:
        kept = os.statvfs(target).f_flag & _KEPT
        _mount(None, target, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | kept)
        _mount(None, target, _MS_PRIVATE)
    except OSError:
        detach(target)
        raise


def _mount(source: Optional[Path], target: Path, flags: int) -> None:
    if _call("mount", None if source is None else os.fsencode(source), os.fsencode(target), None,
             ctypes.c_ulong(flags), None) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(target))


def _call(name: str, *args) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    try:
        function = getattr(_libc, name)
    except AttributeError:
        ctypes.set_errno(errno.ENOSYS)
        return -1
    return function(*args)


def _warn(view: Path, problem: OSError) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    log.warning("snapshots: cannot mount %s read-only (%s); only file permissions protect the "
                "snapshots: a job running as another user than the server's cannot change them, "
                "but a job running as root (or as the server's user) can change the files of its "
                "commit's snapshot for every later run, and through the hard links between "
                "snapshots those of other commits too", view, problem.strerror or problem)
