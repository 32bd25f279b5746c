"""Per-commit snapshots of the job repository: the read-only trees executions run in.

``data_dir/snapshot-trees/<sha>/`` holds the files of one commit; runs see it, read-only, as
``data_dir/snapshots/<sha>/`` (overseer/repo/snapshot_view.py). The first one is
checked out with a throw-away index (``git read-tree`` + ``checkout-index``);
each later one starts as a hard-linked copy of the snapshot it follows and
gets only the paths ``git diff`` names, so a sync that changes one file of
10,000 costs a link per file, not a checkout. Hard links are safe because
snapshots are never written to: changed paths are unlinked, then written anew,
and the runs see every snapshot through a read-only mount.

Writing 10,000 files is slow on some disks, and a load does not need them: the
jobs are read from git's objects (:meth:`Snapshots.tree`, :meth:`Snapshots.read_blobs`)
while :meth:`Snapshots.ensure_soon` checks the snapshot out on a thread of its own
(one per snapshots directory, so each snapshot is complete before the next one is
made from it: overseer/repo/checkout_queue.py). The tree is read into the index before
that thread is handed the work, so a tree git refuses fails the sync as it always did.

Symlinks that leave the repository (``os.path.realpath`` outside the snapshot,
judged with every symlink of the commit in place, so the verdict does not depend
on the order a directory lists its entries in) are removed from the snapshot and
reported; the reports of a commit are kept beside it (``.errors-<sha>.json``) so
a restart reports them again. The file-system work on a snapshot directory (finding
and dropping those symlinks, making it read-only, removing it) is in
overseer/repo/snapshot_files.py; the git commands are in overseer/repo/git.py.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Optional

from overseer.exceptions import RepositoryError, TreeError
from overseer.repo import git
from overseer.repo.checkout_queue import queue_for
from overseer.repo.snapshot_files import (
    NICE,
    drop_escaping,
    make_read_only,
    remove_empty_parents,
    remove_tree,
    symlinks_in,
)
from overseer.repo.tree import Tree

log = logging.getLogger(__name__)


class Snapshots:
    def __init__(self, root: Path, git_dir: Path, env: dict):
        self.root = root
        self.git_dir = git_dir
        self.env = env
        self._queue = queue_for(root)

    def path(self, commit: str) -> Path:
        return self.root / commit

    def _errors_file(self, commit: str) -> Path:
        return self.root / f".errors-{commit}.json"

    def errors(self, commit: str) -> list[tuple[str, str]]:
        try:
            return [tuple(e) for e in json.loads(self._errors_file(commit).read_text())]
        except (OSError, ValueError):
            return []

    # -- a commit read from git's objects ------------------------------------------------------
    def tree(self, commit: str) -> Tree:
        """The files of ``commit`` (``git ls-tree``) with their symlinks' targets (TreeError for a
        symlink git cannot write)."""
        entries: dict[str, tuple[str, str]] = {}
        links = []
        for mode, oid, path in git.ls_tree(self.git_dir, self.env, commit):
            entries[path] = (mode, oid)
            if mode == "120000":
                links.append((path, oid))
        blobs = self.read_blobs(sorted({oid for _, oid in links}), 1 << 20)
        targets = {}
        for path, oid in links:
            size, data = blobs[oid]
            if data is None:
                raise TreeError(f"{path}: a symlink of {size} bytes")
            targets[path] = data
        return Tree(entries, targets)

    def read_blobs(self, oids: list[str], limit: int) -> dict[str, tuple[int, Optional[bytes]]]:
        """``oid -> (size, bytes)`` of each blob, the bytes None when larger than ``limit``
        (``git.read_blobs``)."""
        return git.read_blobs(self.git_dir, self.env, oids, limit)

    # -- snapshots -------------------------------------------------------------------------------
    def ensure(self, commit: str, base: Optional[str] = None, links: Optional[list[str]] = None,
               index: Optional[Path] = None) -> list[tuple[str, str]]:
        """Make the snapshot of ``commit`` (from ``base``'s when there is one); return the
        symlink errors of the commit. ``links`` are the commit's symlinks when the caller knows
        them (else the tree is walked for them); ``index`` holds the commit's tree already."""
        dest = self.path(commit)
        try:
            if dest.is_dir():
                return self.errors(commit)
            self.root.mkdir(parents=True, exist_ok=True)
            if index is None:
                index = self._read_tree(commit)
            return self._make(commit, base, links, index)
        finally:
            if index is not None:
                index.unlink(missing_ok=True)

    def _make(self, commit: str, base: Optional[str], links: Optional[list[str]],
              index: Path) -> list[tuple[str, str]]:
        dest = self.path(commit)
        tmp = Path(tempfile.mkdtemp(prefix=f".new-{commit[:12]}-", dir=self.root))
        try:
            errors = None
            if base and self.path(base).is_dir():
                try:
                    errors = self._incremental(tmp, base, commit, index, links)
                except (OSError, RepositoryError) as e:
                    log.warning("snapshot %s from %s failed (%s); checking it out whole", commit[:12],
                                base[:12], e)
                    remove_tree(tmp)
                    tmp.mkdir()
            if errors is None:
                errors = self._full(tmp, commit, index, links)
            errors = sorted(errors)
            self._errors_file(commit).write_text(json.dumps(errors))
            try:
                os.rename(tmp, dest)
            except OSError:
                if not dest.is_dir():
                    raise
                remove_tree(tmp)  # made meanwhile by another thread: that one stands
                return self.errors(commit)
            return errors
        except BaseException:
            remove_tree(tmp)
            raise

    def ensure_soon(self, commit: str, base: Optional[str] = None, links: Optional[list[str]] = None,
                    before: Optional[Callable[[str], None]] = None) -> Future:
        """:meth:`ensure` on the checkout thread; the future gives the symlink errors (done at once
        when the snapshot exists). The tree is read into the index first, here: a tree git refuses
        raises RepositoryError now. ``before(commit)`` runs on the checkout thread first (tests
        hold a checkout with it)."""
        if self.path(commit).is_dir():
            done: Future = Future()
            done.set_result(self.errors(commit))
            return done
        self.root.mkdir(parents=True, exist_ok=True)
        index = self._read_tree(commit)

        def make() -> list[tuple[str, str]]:
            if before is not None:
                before(commit)
            return self.ensure(commit, base, links, index)
        return self._queue.submit((commit, base), make)

    def busy(self) -> set:
        """The commits whose snapshot is being made, or made from, now or next."""
        return self._queue.busy()

    def stop(self, timeout: float = 120.0) -> None:
        """Give up the snapshots not started yet and wait (up to ``timeout``) for the one being
        made, so that no checkout writes on after the server stops."""
        self._queue.stop(timeout)

    def _read_tree(self, commit: str) -> Path:
        index = self.root / f".index-{commit[:12]}-{secrets.token_hex(4)}"
        try:
            git.read_tree(self.git_dir, self.env, commit, index)
        except BaseException:
            index.unlink(missing_ok=True)
            raise
        return index

    def _checkout(self, tmp: Path, index: Path, paths: Optional[list[str]]) -> None:
        git.checkout_index(self.git_dir, self.env, index, tmp, paths, nice=tuple(NICE))

    def _full(self, tmp: Path, commit: str, index: Path, links: Optional[list[str]]) -> list[tuple[str, str]]:
        self._checkout(tmp, index, None)
        errors = drop_escaping(tmp, symlinks_in(tmp) if links is None else links)
        make_read_only(tmp, None)
        return errors

    def _incremental(self, tmp: Path, base: str, commit: str, index: Path,
                     links: Optional[list[str]]) -> list[tuple[str, str]]:
        changes = git.changed_paths(self.git_dir, self.env, base, commit)
        tmp.rmdir()
        r = subprocess.run([*NICE, "cp", "-al", str(self.path(base)), str(tmp)], capture_output=True)
        if r.returncode:
            raise OSError(f"cp -al failed: {r.stderr.decode(errors='replace').strip()}")
        for dirpath, _dirnames, _files in os.walk(tmp):
            os.chmod(dirpath, 0o755)
        written = []
        for status, path in changes:
            target = tmp / path
            if target.is_symlink() or target.exists():
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            if status != "D":
                written.append(path)
            else:
                remove_empty_parents(tmp, path)  # git has no empty directories; a checkout leaves none
        changed = {path for _status, path in changes}
        # The symlinks the base dropped come back to be judged again: what they lead to may differ now.
        written += [path for path, _message in self.errors(base) if path not in changed]
        self._checkout(tmp, index, written)
        errors = drop_escaping(tmp, symlinks_in(tmp) if links is None else links)
        make_read_only(tmp, written)
        return errors

    def remove_unused(self, keep: set) -> None:
        """Move the snapshots no one uses out of the way at once; delete them in the background.
        Snapshots being made, or made from, are kept too."""
        keep = set(keep) | self.busy()
        doomed = []
        for path in self.root.iterdir():
            name = path.name
            if name.startswith(".errors-") and name[8:-5] not in keep:
                path.unlink(missing_ok=True)
            elif not name.startswith(".") and name not in keep:
                trash = self.root / f".trash-{name}"
                try:
                    os.rename(path, trash)
                except OSError:
                    continue
                doomed.append(trash)
        for stale in self.root.glob(".trash-*"):
            if stale not in doomed:
                doomed.append(stale)
        if doomed:
            threading.Thread(target=lambda: [remove_tree(p) for p in doomed], name="snapshot-removal",
                             daemon=True).start()

    def remove_stale(self) -> None:
        """Remove what a checkout that never finished left (the process ended during it), unless a
        checkout of this directory is under way in this process."""
        if self.busy() or not self.root.is_dir():
            return
        for path in self.root.iterdir():
            if path.name.startswith(".new-"):
                remove_tree(path)
            elif path.name.startswith(".index-"):
                path.unlink(missing_ok=True)

