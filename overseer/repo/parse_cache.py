"""Parsed job definitions kept across restarts.

Parsing is most of the cost of loading a large job repository (10,000 files: about 2 s here,
against 0.5 s to read this file back). The cache maps a job file's path and the digest of its
bytes to the ``Job`` it parsed to (without its commit), so a restart parses only the files that
changed meanwhile. It lives in the data dir, beside the Store, and is trusted as the Store is.

A job read from git's objects is known by its blob id before its bytes are read: the cache also
keeps the content digest of each blob id it saw, so a restart reads no unchanged file at all.

It is keyed by the code that parses, too (``_PARSERS``): entries written by another version of the
parsing modules are never used. A missing, unreadable or foreign file only means a full parse; valid jobs
alone are cached, so every problem of a file is found again and reported at each load.
"""
from __future__ import annotations

import copyreg
import hashlib
import logging
import os
import pickle
import threading
import types
from pathlib import Path
from typing import Any, Optional

from overseer.repo.files import gc_paused

log = logging.getLogger(__name__)

FORMAT = 2
# Every module whose code decides what a job file parses to (or which files are jobs): a change to
# any of them makes a new code key, so a cache written by other code is never used. A module that
# the parsing comes to depend on must be added here.
_PARSERS = ("repo/load.py", "repo/fields.py", "repo/files.py", "repo/documents.py", "repo/tree.py",
            "model/job.py", "model/vars.py", "model/schedule.py", "model/schedule_parse.py",
            "model/sandbox.py", "model/templates.py", "model/shell_context.py", "repo/parse_cache.py")


def _proxy(items: dict) -> types.MappingProxyType:
    return types.MappingProxyType(items)


copyreg.pickle(types.MappingProxyType, lambda m: (_proxy, (dict(m),)))


def _code_key() -> str:
    digest = hashlib.blake2b(str(FORMAT).encode(), digest_size=16)
    here = Path(__file__).parent.parent   # overseer/
    for name in _PARSERS:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class ParseCache:
    """``(path, digest) -> Job`` read from ``path`` at construction; ``save`` writes what the
    last load used (so it never holds files that are gone)."""

    def __init__(self, path: Optional[Path]):
        self.path = path
        self._code = _code_key()
        self.entries: dict[tuple[str, bytes], Any] = {}
        self.used: Optional[dict[tuple[str, bytes], Any]] = None  # what the last load used
        self.blobs: dict[str, bytes] = {}   # git blob id -> content digest
        self.used_blobs: dict[str, bytes] = {}  # the blobs of the last load's jobs
        self.hits = 0
        self._lock = threading.Lock()
        if path is not None:
            self._read()

    def _read(self) -> None:
        try:
            with open(self.path, "rb") as f, gc_paused():
                blob = pickle.load(f)
        except FileNotFoundError:
            return
        except Exception as e:  # noqa: BLE001 - a damaged cache only costs a full parse
            log.warning("job parse cache %s is unreadable (%s); parsing every file", self.path, e)
            return
        if (isinstance(blob, dict) and blob.get("code") == self._code
                and isinstance(blob.get("entries"), dict) and isinstance(blob.get("blobs"), dict)):
            self.entries = blob["entries"]
            self.blobs = blob["blobs"]

    def get(self, relpath: str, key: bytes) -> Any:
        """The job parsed from ``relpath`` with content digest ``key`` (read from the file, or
        used by the last load since), None if unknown."""
        job = self.entries.get((relpath, key))
        if job is None and self.used is not None:
            job = self.used.get((relpath, key))
        if job is not None:
            self.hits += 1
        return job

    def digest_of(self, oid: str) -> Optional[bytes]:
        """The content digest of git blob ``oid``, if a load saw it."""
        key = self.blobs.get(oid)
        return self.used_blobs.get(oid) if key is None else key

    def save_soon(self) -> None:
        """``save`` on a thread of its own (the jobs are in use before the file is written)."""
        threading.Thread(target=self.save, name="parse-cache", daemon=True).start()

    def save(self) -> None:
        """Write what the last load used as the cache, atomically, unless it is what the file
        already holds."""
        used, blobs = self.used, self.used_blobs
        if self.path is None or used is None:
            return
        with self._lock:
            if used.keys() == self.entries.keys() and blobs.keys() == self.blobs.keys():
                return
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                with open(tmp, "wb") as f:
                    pickle.dump({"code": self._code, "entries": used, "blobs": blobs}, f,
                                protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, self.path)
                self.entries, self.blobs = used, blobs
            except Exception as e:  # noqa: BLE001 - the cache is an optimisation only
                log.warning("cannot write the job parse cache %s: %s", self.path, e)
                try:
                    tmp.unlink()
                except OSError:
                    pass
