"""The file-system work on a snapshot directory (overseer/repo/snapshots.py): finding its symlinks and
removing those that leave it, removing the directories a deletion empties, making it read-only,
and removing it again.

These run on a tree already written; the git commands that write it are in overseer/repo/git.py.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

# The commands that write a snapshot run at a lower CPU priority: on a fresh start they run beside
# the parse of the same commit, which the server waits for; a snapshot is only waited for by a run.
NICE = ["nice", "-n", "10"] if shutil.which("nice") else []


def symlinks_in(root: Path) -> list[str]:
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


def drop_escaping(root: Path, links: list[str]) -> list[tuple[str, str]]:
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


def remove_empty_parents(root: Path, relpath: str) -> None:
    parent = os.path.dirname(relpath)
    while parent:
        try:
            os.rmdir(root / parent)
        except OSError:
            return
        parent = os.path.dirname(parent)


def make_read_only(root: Path, paths: Optional[list[str]]) -> None:
    """Files 0o444/0o555 (their exec bits kept), dirs 0o555. With ``paths``, only those files
    are new: the others are hard links already read-only. The whole tree is done by ``find``
    (10,000 ``chmod`` calls are not worth holding the interpreter for while a load parses)."""
    if paths is None:
        r = subprocess.run([*NICE, "find", str(root), "(", "-type", "f", "-exec", "chmod", "a-w", "{}", "+",
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


def remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for dirpath, _dirnames, _files in os.walk(path):
        try:
            os.chmod(dirpath, 0o755)
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)
