"""The files of one commit as git lists them, answering the questions overseer/repo/files.py asks
of a working tree (which files are jobs, which symlinks leave the tree, what reading a path gives)
as the commit's snapshot will, before a file of it is checked out.

It is a model of a file system over git's listing (path lookup, ``realpath``, symlink loops);
the scan of a working tree is overseer/repo/files.py.
"""
from __future__ import annotations

import errno
import os
import posixpath

from overseer.exceptions import TreeError
from overseer.repo.files import job_name_for

# -- the same questions, answered from git's listing of a commit --------------------------------

MAX_SYMLINKS = 40      # Linux follows at most 40 symlinks in one path lookup (ELOOP beyond)
_ROOT = "/\0"          # the checkout's root in the modelled file system: no git path or target holds a NUL
_FILE, _LINK, _DIR = "file", "link", "dir"
_DIR_ENTRY = (_DIR,)


class Tree:
    """The files of one commit as ``git ls-tree -r`` lists them, answering what a load asks of
    the commit's checked-out snapshot (overseer/repo/snapshots.py) without a file written.

    Checking 10,000 files out is most of a fresh start's time on a slow disk; the jobs can be read
    from git's objects meanwhile, provided every answer is the one the snapshot will give. So this
    is a model of that snapshot: regular files (executable when git's mode says so), symlinks
    (``core.symlinks=true``; a target ends at its first NUL, as ``symlink(2)`` reads it), a
    submodule as the empty directory git leaves, and every symlink whose target leaves the
    repository (``os.path.realpath`` outside the root, with all the commit's symlinks in place)
    removed. ``realpath`` below follows ``posixpath.realpath`` step by step, ``resolve`` the
    kernel's lookup (``os.stat``), over that model. Nothing outside the root can lead back into
    it (a snapshot is checked out under a fresh directory name), so outside counts as missing.

    ``entries`` maps each path ('/'-separated) to ``(mode, object id)``; ``targets`` maps each
    symlink's path to its blob (the target as bytes).
    """

    def __init__(self, entries: dict[str, tuple[str, str]], targets: dict[str, bytes]):
        kinds: dict[str, tuple] = {"": _DIR_ENTRY}
        for path, (mode, oid) in entries.items():
            if mode == "120000":
                raw = targets[path].split(b"\0", 1)[0]
                if not raw or len(raw) >= 4096:
                    raise TreeError(f"{path}: a symlink target of {len(raw)} bytes cannot be checked out")
                kinds[path] = (_LINK, os.fsdecode(raw))
            elif mode == "160000":
                kinds[path] = _DIR_ENTRY   # a submodule: git leaves an empty directory
            else:
                kinds[path] = (_FILE, oid, bool(int(mode, 8) & 0o100))
            parent = path.rpartition("/")[0]
            while parent and parent not in kinds:
                kinds[parent] = _DIR_ENTRY
                parent = parent.rpartition("/")[0]
        self._kinds = kinds
        self._dropped: frozenset[str] = frozenset()
        errors = []
        for path, kind in kinds.items():
            if kind[0] == _LINK and not _inside(self.realpath(path)):
                errors.append((path, f"symlink to {kind[1]!r} leaves the repository"))
        self.link_errors: list[tuple[str, str]] = sorted(errors)
        self._dropped = frozenset(path for path, _ in errors)

    @property
    def links(self) -> list[str]:
        """Every symlink of the commit (those that leave the repository too)."""
        return sorted(p for p, kind in self._kinds.items() if kind[0] == _LINK)

    def _kind(self, path: str) -> tuple | None:
        kind = self._kinds.get(path)
        if kind is not None and kind[0] == _LINK and path in self._dropped:
            return None
        return kind

    def realpath(self, relpath: str) -> str:
        """``os.path.realpath(root / relpath)`` in the model: a path under ``_ROOT`` when inside."""
        path, _ok = self._join_realpath(_ROOT, relpath, {})
        return posixpath.normpath(path)

    @staticmethod
    def relative(path: str) -> str:
        """The path under the root of a :meth:`realpath` result inside it."""
        if not _inside(path):
            raise ValueError(f"{path!r} is outside the tree")
        return path[len(_ROOT) + 1:]

    def _join_realpath(self, path: str, rest: str, seen: dict) -> tuple[str, bool]:
        """``posixpath._joinrealpath`` with ``lstat`` and ``readlink`` asked of the model."""
        if rest.startswith("/"):
            rest = rest[1:]
            path = "/"
        while rest:
            name, _, rest = rest.partition("/")
            if not name or name == ".":
                continue
            if name == "..":
                path = posixpath.split(path)[0] if path else ".."
                continue
            newpath = posixpath.join(path, name)
            kind = self._kind(newpath[len(_ROOT) + 1:]) if newpath.startswith(_ROOT + "/") else None
            if kind is None or kind[0] != _LINK:
                path = newpath
                continue
            if newpath in seen:
                path = seen[newpath]
                if path is not None:
                    continue
                return posixpath.join(newpath, rest), False   # a symlink loop
            seen[newpath] = None
            path, ok = self._join_realpath(path, kind[1], seen)
            if not ok:
                return posixpath.join(path, rest), False
            seen[newpath] = path
        return path, True

    def resolve(self, relpath: str) -> tuple[tuple | None, int]:
        """What ``os.stat`` finds at ``root / relpath``:
        ``(kind, 0)``, or ``(None, errno)``. A kind is ``("file", oid, executable)``,
        ``("link", target)`` or ``("dir",)``."""
        todo = _components(relpath)
        current: list[str] = []
        kind: tuple = _DIR_ENTRY
        followed = 0
        while todo:
            name = todo.pop()
            if kind[0] != _DIR:
                return None, errno.ENOTDIR
            if name == ".":
                continue
            if name == "..":
                if not current:
                    return None, errno.ENOENT   # above the root: nothing there leads back in
                current.pop()
                continue
            path = "/".join((*current, name))
            found = self._kind(path)
            if found is None:
                return None, errno.ENOENT
            if found[0] == _LINK:
                followed += 1
                if followed > MAX_SYMLINKS:
                    return None, errno.ELOOP
                if found[1].startswith("/"):
                    return None, errno.ENOENT   # kept links never point outside
                todo.extend(_components(found[1]))
                continue   # from the link's directory
            current.append(name)
            kind = found
        return kind, 0

    def exists(self, relpath: str) -> bool:
        return self.resolve(relpath)[0] is not None

    def job_files(self) -> list[str]:
        """What :func:`scan` lists as job files in the snapshot, sorted."""
        jobs = []
        for path, kind in self._kinds.items():
            if kind[0] == _DIR or job_name_for(path) is None:
                continue
            if kind[0] == _LINK:
                if path in self._dropped:
                    continue
                target = self.resolve(path)[0]
                if target is not None and target[0] == _DIR:
                    continue   # os.scandir's is_dir() follows the link: not entered, not a job
            jobs.append(path)
        return sorted(jobs)

    def content(self, relpath: str) -> tuple[str | None, int]:
        """The object id of the bytes reading ``relpath`` gives, or ``(None, errno)``."""
        kind = self._kinds.get(relpath)
        if kind is not None and kind[0] == _FILE:
            return kind[1], 0   # a file of the tree: its directories are the tree's, no link among them
        kind, error = self.resolve(relpath)
        if kind is None:
            return None, error
        if kind[0] != _FILE:
            return None, errno.EISDIR
        return kind[1], 0


def _components(path: str) -> list[str]:
    """The components of ``path`` to walk, reversed (for ``pop``); a trailing slash as ``.``,
    which makes the kernel require a directory."""
    parts = [p for p in path.split("/") if p]
    if path.endswith("/") and parts:
        parts.append(".")
    parts.reverse()
    return parts


def _inside(path: str) -> bool:
    return path == _ROOT or path.startswith(_ROOT + "/")
