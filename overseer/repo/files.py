"""The files of a job repository: which files are jobs, symlinks that leave the tree, reading a job
file's bytes, and pausing the collector while thousands of them are parsed.

The questions are asked of a working tree (:func:`scan`, :func:`escaping`) or, for a commit whose
snapshot is not checked out yet, of git's listing of its tree (overseer/repo/tree.py ``Tree``),
which answers them as the snapshot will. Reading a job file's document is
overseer/repo/documents.py.
"""
from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

JOB_SUFFIXES = (".yml", ".yaml", ".json")
SKIPPED_DIRS = ("bin", "scripts")
_SKIPPED_PREFIXES = tuple(f"{d}/" for d in SKIPPED_DIRS)
_SUFFIXES = frozenset(suffix[1:] for suffix in JOB_SUFFIXES)


def job_name_for(relpath: str) -> str | None:
    """The job name of a repository file (``team/backup.yaml`` -> ``team.backup``), None if no job.

    Files under the top-level ``bin/`` and ``scripts/``, in dot-directories, dot-files and
    files without a ``.yml``, ``.yaml`` or ``.json`` suffix are not jobs.
    """
    if os.sep != "/":
        relpath = relpath.replace(os.sep, "/")
    if relpath.startswith(_SKIPPED_PREFIXES) or relpath.startswith(".") or "/." in relpath:
        return None
    stem, dot, suffix = relpath.rpartition(".")
    if suffix not in _SUFFIXES or not stem or stem.endswith("/"):
        return None
    return stem.replace("/", ".")


def scan(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """One pass over the tree (``.git`` skipped, symlinked dirs not entered).

    Returns the job files (relative, '/'-separated, sorted) and every symlink as
    ``(relpath, absolute path)``.
    """
    jobs: list[str] = []
    links: list[tuple[str, str]] = []
    stack = [(str(root), "")]
    while stack:
        dirpath, rel = stack.pop()
        try:
            entries = list(os.scandir(dirpath))
        except OSError as exc:
            log.warning("cannot list %s: %s", dirpath, exc)
            continue
        for entry in entries:
            relpath = rel + entry.name
            if entry.is_symlink():
                links.append((relpath, entry.path))
                if _is_dir(entry):
                    continue
            if entry.is_dir(follow_symlinks=False):
                if entry.name != ".git":
                    stack.append((entry.path, relpath + "/"))
            elif job_name_for(relpath) is not None:
                jobs.append(relpath)
    return sorted(jobs), sorted(links)


def _is_dir(entry: os.DirEntry) -> bool:
    """``entry.is_dir()``, False for a symlink loop or a link through a file too (is_dir raises
    for those): such a link is no directory, and a job file named so is reported unreadable."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def escaping(root: Path, links: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The symlinks of ``links`` that point outside ``root`` (absolute targets always do)."""
    real_root = os.path.realpath(root)
    errors = []
    for relpath, path in links:
        target = os.readlink(path)
        resolved = os.path.realpath(path)
        if os.path.isabs(target) or os.path.commonpath([real_root, resolved]) != real_root:
            errors.append((relpath, f"symlink to {target!r} leaves the repository"))
    return errors


def read_bytes(root: Path, relpath: str) -> bytes:
    fd = os.open(os.path.join(root, relpath), os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = True


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector during a bulk load (re-entrant, across threads).

    Parsing thousands of files allocates millions of short-lived containers; with the collector
    running, its generational passes cost about a quarter of the load. Reference counting still
    frees everything that is not in a cycle; the collector resumes afterwards. What the load
    made and kept (10,000 jobs: some 100,000 containers) would then be traversed by the next
    young collection and again by the next middle one (0.1 s here) only to end in the oldest
    generation: ``gc.freeze()`` + ``gc.unfreeze()`` puts every tracked object there at once
    (cyclic garbage among them waits for the next full collection).
    """
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_was_enabled:
                gc.freeze()
                gc.unfreeze()
                gc.enable()
