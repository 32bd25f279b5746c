"""Per-commit snapshots of the job repository: the read-only trees executions run in.

``data_dir/snapshots/<sha>/`` holds the files of one commit. The first one is
checked out with a throw-away index (``git read-tree`` + ``checkout-index``);
each later one starts as a hard-linked copy of the snapshot it follows and
gets only the paths ``git diff`` names, so a sync that changes one file of
10,000 costs a link per file, not a checkout. Hard links are safe because
snapshots are never written to: changed paths are unlinked, then written anew.

Writing 10,000 files is slow on some disks, and a load does not need them: the
jobs are read from git's objects (:meth:`Snapshots.tree`, :meth:`Snapshots.read_blobs`)
while :meth:`Snapshots.ensure_soon` checks the snapshot out on a thread of its own
(one per snapshots directory, so each snapshot is complete before the next one is
made from it). The tree is read into the index before that thread is handed the
work, so a tree git refuses fails the sync as it always did.

Symlinks that leave the repository (``os.path.realpath`` outside the snapshot,
judged with every symlink of the commit in place, so the verdict does not depend
on the order a directory lists its entries in) are removed from the snapshot and
reported; the reports of a commit are kept beside it (``.errors-<sha>.json``) so
a restart reports them again.
"""
from __future__ import annotations

import collections
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
from typing import IO, Callable, Optional

from overseer.exceptions import RepositoryError
from overseer.job_files import Tree, TreeError

log = logging.getLogger(__name__)

GIT_CONFIG = ["-c", "core.hooksPath=/dev/null", "-c", "protocol.ext.allow=never",
              "-c", "submodule.recurse=false", "-c", "core.symlinks=true"]

# The commands that write a snapshot run at a lower CPU priority: on a fresh start they run beside
# the parse of the same commit, which the server waits for; a snapshot is only waited for by a run.
_NICE = ["nice", "-n", "10"] if shutil.which("nice") else []


class CheckoutCancelled(RepositoryError):
    """The server stopped before this snapshot's checkout began."""


class Snapshots:
    def __init__(self, root: Path, git_dir: Path, env: dict):
        self.root = root
        self.git_dir = git_dir
        self.env = env
        self._queue = _queue_for(root)

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
        for record in self._git("ls-tree", "-r", "-z", "--full-tree", commit).split(b"\0"):
            if not record:
                continue
            meta, _, raw_path = record.partition(b"\t")
            mode, _kind, oid = meta.decode().split(" ")
            path = os.fsdecode(raw_path)
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
        """``oid -> (size, bytes)`` of each blob, the bytes None when larger than ``limit``: one
        ``git cat-file --batch`` for all of them, read as it streams (a large blob is skipped,
        not held)."""
        if not oids:
            return {}
        proc = subprocess.Popen(["git", *GIT_CONFIG, "cat-file", "--batch", "--buffer"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(self.env, GIT_DIR=str(self.git_dir)), cwd=str(self.git_dir),
                                bufsize=1 << 16)
        request = "".join(f"{oid}\n" for oid in oids).encode()
        feeder = threading.Thread(target=_feed, args=(proc.stdin, request), name="cat-file", daemon=True)
        feeder.start()
        blobs: dict[str, tuple[int, Optional[bytes]]] = {}
        out = proc.stdout
        try:
            for oid in oids:
                header = out.readline().split()
                if len(header) != 3 or header[1] != b"blob" or header[0].decode() != oid:
                    raise RepositoryError(f"git cat-file: no blob {oid} "
                                          f"({b' '.join(header).decode(errors='replace')})")
                size = int(header[2])
                if size > limit:
                    _skip(out, size)
                    data = None
                else:
                    data = out.read(size)
                    if len(data) != size:
                        raise RepositoryError(f"git cat-file: blob {oid} cut short")
                if out.read(1) != b"\n":
                    raise RepositoryError(f"git cat-file: unexpected output after blob {oid}")
                blobs[oid] = (size, data)
        finally:
            out.close()
            feeder.join()
            stderr = proc.stderr.read()
            proc.stderr.close()
            code = proc.wait()
        if code and len(blobs) < len(oids):
            raise RepositoryError(f"git cat-file failed: {stderr.decode(errors='replace').strip()}")
        return blobs

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
                _unlink(index)

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
                    _remove_tree(tmp)
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
                _remove_tree(tmp)  # made meanwhile by another thread: that one stands
                return self.errors(commit)
            return errors
        except BaseException:
            _remove_tree(tmp)
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
            self._git("read-tree", commit, index=index)
        except BaseException:
            _unlink(index)
            raise
        return index

    def _git(self, *args: str, index: Optional[Path] = None, work_tree: Optional[Path] = None,
             stdin: Optional[bytes] = None, nice: bool = False) -> bytes:
        env = dict(self.env, GIT_DIR=str(self.git_dir))
        if index is not None:
            env["GIT_INDEX_FILE"] = str(index)
        cmd = [*(_NICE if nice else ()), "git", *GIT_CONFIG]
        if work_tree is not None:
            cmd += ["--work-tree", str(work_tree)]
        r = subprocess.run([*cmd, *args], input=stdin, capture_output=True, env=env,
                           cwd=str(work_tree or self.git_dir))
        if r.returncode:
            name = next(a for a in args if not a.startswith("-") and "=" not in a)
            raise RepositoryError(f"git {name} failed: {r.stderr.decode(errors='replace').strip()}")
        return r.stdout

    def _checkout(self, tmp: Path, index: Path, paths: Optional[list[str]]) -> None:
        if paths is None:  # parallel workers: file creation, not git, is the cost here
            self._git("-c", "checkout.workers=4", "-c", "checkout.thresholdForParallelism=100",
                      "checkout-index", "-a", "-f", index=index, work_tree=tmp, nice=True)
        elif paths:
            self._git("checkout-index", "-f", "-z", "--stdin", index=index, work_tree=tmp,
                      stdin=b"\0".join(os.fsencode(p) for p in paths), nice=True)

    def _full(self, tmp: Path, commit: str, index: Path, links: Optional[list[str]]) -> list[tuple[str, str]]:
        self._checkout(tmp, index, None)
        errors = _drop_escaping(tmp, _symlinks(tmp) if links is None else links)
        _read_only(tmp, None)
        return errors

    def _incremental(self, tmp: Path, base: str, commit: str, index: Path,
                     links: Optional[list[str]]) -> list[tuple[str, str]]:
        raw = self._git("diff", "--name-status", "-z", "--no-renames", base, commit)
        fields = raw.split(b"\0")
        changes = [(fields[i].decode(), os.fsdecode(fields[i + 1])) for i in range(0, len(fields) - 1, 2)]
        tmp.rmdir()
        r = subprocess.run([*_NICE, "cp", "-al", str(self.path(base)), str(tmp)], capture_output=True)
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
                _remove_empty_parents(tmp, path)  # git has no empty directories; a checkout leaves none
        changed = {path for _status, path in changes}
        # The symlinks the base dropped come back to be judged again: what they lead to may differ now.
        written += [path for path, _message in self.errors(base) if path not in changed]
        self._checkout(tmp, index, written)
        errors = _drop_escaping(tmp, _symlinks(tmp) if links is None else links)
        _read_only(tmp, written)
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
            threading.Thread(target=lambda: [_remove_tree(p) for p in doomed], name="snapshot-removal",
                             daemon=True).start()

    def remove_stale(self) -> None:
        """Remove what a checkout that never finished left (the process ended during it), unless a
        checkout of this directory is under way in this process."""
        if self.busy() or not self.root.is_dir():
            return
        for path in self.root.iterdir():
            if path.name.startswith(".new-"):
                _remove_tree(path)
            elif path.name.startswith(".index-"):
                _unlink(path)


class _CheckoutQueue:
    """The checkout thread of one snapshots directory: snapshots are made one at a time, in the
    order asked (a snapshot made from the one before needs that one complete). The thread ends
    when there is nothing to do."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._work: collections.deque = collections.deque()
        self._busy: collections.Counter = collections.Counter()
        self._running = False
        self._current: Optional[Future] = None

    def submit(self, commits: tuple, fn: Callable[[], list]) -> Future:
        future: Future = Future()
        with self._lock:
            self._work.append((commits, fn, future))
            self._busy.update(c for c in commits if c)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="snapshot-checkout", daemon=True).start()
        return future

    def busy(self) -> set:
        with self._lock:
            return set(self._busy)

    def stop(self, timeout: float) -> None:
        with self._lock:
            dropped = list(self._work)
            self._work.clear()
            current = self._current
            for commits, _fn, _future in dropped:
                self._busy.subtract(c for c in commits if c)
            self._busy += collections.Counter()
        for _commits, _fn, future in dropped:
            future.set_exception(CheckoutCancelled("the server stopped before the snapshot was made"))
        if current is not None:
            try:
                current.exception(timeout)
            except Exception:  # noqa: BLE001 - the time is up: leave it
                log.warning("a snapshot checkout is still running after %g s", timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._work:
                    self._running = False
                    self._current = None
                    return
                commits, fn, future = self._work.popleft()
                self._current = future
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as e:  # noqa: BLE001 - handed to whoever waits for it
                        log.error("snapshot %s: %s", (commits[0] or "")[:12], e)
                        future.set_exception(e)
            finally:
                with self._lock:
                    self._busy.subtract(c for c in commits if c)
                    self._busy += collections.Counter()  # drop the zero counts


_QUEUES: dict[str, _CheckoutQueue] = {}
_QUEUES_LOCK = threading.Lock()


def _queue_for(root: Path) -> _CheckoutQueue:
    """One queue per snapshots directory in this process (a restarted RepoSync finds the queue
    its predecessor left work in)."""
    with _QUEUES_LOCK:
        return _QUEUES.setdefault(os.path.abspath(root), _CheckoutQueue())


def _feed(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except (BrokenPipeError, ValueError, OSError):
        pass   # the reader stopped early; it reports why


def _skip(stream: IO[bytes], size: int) -> None:
    while size > 0:
        chunk = stream.read(min(size, 1 << 20))
        if not chunk:
            raise RepositoryError("git cat-file: output cut short")
        size -= len(chunk)


def _symlinks(root: Path) -> list[str]:
    """The relative paths of every symlink under ``root`` (symlinked directories not entered)."""
    links = []
    stack = [(str(root), "")]
    while stack:
        dirpath, rel = stack.pop()
        with os.scandir(dirpath) as entries:
            for entry in entries:
                if entry.is_symlink():
                    links.append(rel + entry.name)
                elif entry.is_dir():
                    stack.append((entry.path, rel + entry.name + "/"))
    return links


def _drop_escaping(root: Path, links: list[str]) -> list[tuple[str, str]]:
    """Remove the symlinks of ``links`` whose target leaves ``root``; return them as errors.

    Every link is judged before any is removed: a link that leads out through another one
    leaves the repository too, whichever of the two a directory lists first.
    """
    real_root = os.path.realpath(root)
    leaving = []
    for rel in links:
        path = os.path.join(root, rel)
        if not os.path.islink(path):
            continue
        target = os.path.realpath(path)
        if target != real_root and not target.startswith(real_root + os.sep):
            leaving.append((rel, path, os.readlink(path)))
    for _rel, path, _link in leaving:
        os.unlink(path)
    return [(rel, f"symlink to {link!r} leaves the repository") for rel, _path, link in leaving]


def _remove_empty_parents(root: Path, relpath: str) -> None:
    parent = os.path.dirname(relpath)
    while parent:
        try:
            os.rmdir(root / parent)
        except OSError:
            return
        parent = os.path.dirname(parent)


def _read_only(root: Path, paths: Optional[list[str]]) -> None:
    """Files 0o444/0o555 (their exec bits kept), dirs 0o555. With ``paths``, only those files
    are new: the others are hard links already read-only. The whole tree is done by ``find``
    (10,000 ``chmod`` calls are not worth holding the interpreter for while a load parses)."""
    if paths is None:
        r = subprocess.run([*_NICE, "find", str(root), "(", "-type", "f", "-exec", "chmod", "a-w", "{}", "+",
                            ")", "-o", "(", "-type", "d", "-exec", "chmod", "0555", "{}", "+", ")"],
                           capture_output=True)
        if r.returncode == 0:
            return
        log.warning("find could not make %s read-only (%s); doing it file by file", root,
                    r.stderr.decode(errors="replace").strip())
    files = (os.path.join(d, f) for d, _dirs, fs in os.walk(root) for f in fs) if paths is None \
        else (str(root / p) for p in paths)
    for path in files:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not os.path.islink(path):
            os.chmod(path, st.st_mode & 0o555)
    for dirpath, _dirnames, _files in os.walk(root):
        os.chmod(dirpath, 0o555)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for dirpath, _dirnames, _files in os.walk(path):
        try:
            os.chmod(dirpath, 0o755)
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)
