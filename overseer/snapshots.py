"""Per-commit snapshots of the job repository: the read-only trees executions run in.

``data_dir/snapshots/<sha>/`` holds the files of one commit. The first one is
checked out with a throw-away index (``git read-tree`` + ``checkout-index``);
each later one starts as a hard-linked copy of the snapshot it follows and
gets only the paths ``git diff`` names, so a sync that changes one file of
10,000 costs a link per file, not a checkout. Hard links are safe because
snapshots are never written to: changed paths are unlinked, then written anew.

Symlinks that leave the repository are removed from the snapshot and reported;
the reports of a commit are kept beside it (``.errors-<sha>.json``) so a
restart reports them again.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Optional

from overseer.exceptions import RepositoryError

log = logging.getLogger(__name__)

GIT_CONFIG = ["-c", "core.hooksPath=/dev/null", "-c", "protocol.ext.allow=never",
              "-c", "submodule.recurse=false", "-c", "core.symlinks=true"]


class Snapshots:
    def __init__(self, root: Path, git_dir: Path, env: dict):
        self.root = root
        self.git_dir = git_dir
        self.env = env

    def path(self, commit: str) -> Path:
        return self.root / commit

    def _errors_file(self, commit: str) -> Path:
        return self.root / f".errors-{commit}.json"

    def errors(self, commit: str) -> list[tuple[str, str]]:
        try:
            return [tuple(e) for e in json.loads(self._errors_file(commit).read_text())]
        except (OSError, ValueError):
            return []

    def ensure(self, commit: str, base: Optional[str] = None) -> list[tuple[str, str]]:
        """Make the snapshot of ``commit`` (from ``base``'s when there is one); return the
        symlink errors of the commit."""
        dest = self.path(commit)
        if dest.is_dir():
            return self.errors(commit)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".new-{commit[:12]}-", dir=self.root))
        try:
            errors = None
            if base and self.path(base).is_dir():
                try:
                    errors = self._incremental(tmp, base, commit)
                except (OSError, RepositoryError) as e:
                    log.warning("snapshot %s from %s failed (%s); checking it out whole", commit[:12],
                                base[:12], e)
                    _remove_tree(tmp)
                    tmp.mkdir()
            if errors is None:
                errors = self._full(tmp, commit)
            self._errors_file(commit).write_text(json.dumps(sorted(errors)))
            os.rename(tmp, dest)
            return sorted(errors)
        except BaseException:
            _remove_tree(tmp)
            raise

    def _git(self, *args: str, index: Optional[Path] = None, work_tree: Optional[Path] = None,
             stdin: Optional[bytes] = None) -> bytes:
        env = dict(self.env, GIT_DIR=str(self.git_dir))
        if index is not None:
            env["GIT_INDEX_FILE"] = str(index)
        cmd = ["git", *GIT_CONFIG]
        if work_tree is not None:
            cmd += ["--work-tree", str(work_tree)]
        r = subprocess.run([*cmd, *args], input=stdin, capture_output=True, env=env,
                           cwd=str(work_tree or self.git_dir))
        if r.returncode:
            raise RepositoryError(f"git {args[0]} failed: {r.stderr.decode(errors='replace').strip()}")
        return r.stdout

    def _checkout(self, tmp: Path, commit: str, paths: Optional[list[str]]) -> None:
        index = tmp.parent / f".index-{tmp.name}"
        try:
            self._git("read-tree", commit, index=index)
            if paths is None:  # parallel workers: file creation, not git, is the cost here
                self._git("-c", "checkout.workers=4", "-c", "checkout.thresholdForParallelism=100",
                          "checkout-index", "-a", "-f", index=index, work_tree=tmp)
            elif paths:
                self._git("checkout-index", "-f", "-z", "--stdin", index=index, work_tree=tmp,
                          stdin=b"\0".join(p.encode() for p in paths))
        finally:
            try:
                index.unlink()
            except FileNotFoundError:
                pass

    def _full(self, tmp: Path, commit: str) -> list[tuple[str, str]]:
        self._checkout(tmp, commit, None)
        errors = []
        for dirpath, dirnames, filenames in os.walk(tmp):
            for name in dirnames + filenames:
                error = _drop_if_escaping(tmp, os.path.join(dirpath, name))
                if error:
                    errors.append(error)
        _read_only(tmp, None)
        return errors

    def _incremental(self, tmp: Path, base: str, commit: str) -> list[tuple[str, str]]:
        raw = self._git("diff", "--name-status", "-z", "--no-renames", base, commit)
        fields = raw.split(b"\0")
        changes = [(fields[i].decode(), fields[i + 1].decode()) for i in range(0, len(fields) - 1, 2)]
        tmp.rmdir()
        r = subprocess.run(["cp", "-al", str(self.path(base)), str(tmp)], capture_output=True)
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
        self._checkout(tmp, commit, written)
        changed = {path for _status, path in changes}
        errors = [e for e in self.errors(base) if e[0] not in changed]
        for path in written:
            error = _drop_if_escaping(tmp, str(tmp / path))
            if error:
                errors.append(error)
        _read_only(tmp, written)
        return errors

    def remove_unused(self, keep: set) -> None:
        """Move the snapshots no one uses out of the way at once; delete them in the background."""
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


def _drop_if_escaping(root: Path, path: str) -> Optional[tuple[str, str]]:
    if not os.path.islink(path):
        return None
    real_root = os.path.realpath(root)
    target = os.path.realpath(path)
    if target == real_root or target.startswith(real_root + os.sep):
        return None
    link = os.readlink(path)
    os.unlink(path)
    return (os.path.relpath(path, root), f"symlink to {link!r} leaves the repository")


def _read_only(root: Path, paths: Optional[list[str]]) -> None:
    """Files 0o444/0o555 (their exec bits kept), dirs 0o555. With ``paths``, only those files
    are new: the others are hard links already read-only."""
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


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for dirpath, _dirnames, _files in os.walk(path):
        try:
            os.chmod(dirpath, 0o755)
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)
