"""One server per data dir: an exclusive ``flock`` on ``data_dir/server.lock``.

The lock is taken before anything in the data dir is touched (before the Store opens and the
recovery of a previous server's executions runs) and held for the server's life; the kernel drops
it when the process ends, however it ends, so a crash leaves no lock behind. The file says who
holds it (pid, host, and the address the server serves), so a second server is refused with a
message naming the first. The file itself is never removed: a server that unlinked it at its
stop could let two later ones lock two different files.

The descriptor is close-on-exec: no job, and no daemon a job leaves behind, ever holds the lock.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from overseer.exceptions import DataDirError

LOCK_FILE = "server.lock"
HOLDER_WAIT = 1.0  # seconds a refused start waits for the holder's line when the file is still empty


class DataDirLock:
    """The held lock of one data dir; :meth:`release` (or the end of the process) frees it."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: Optional[int] = fd

    @classmethod
    def acquire(cls, data_path: Path, serves: str) -> DataDirLock:
        """Lock ``data_path`` (made if missing) and write ``serves`` (``HOST:PORT``) into the lock
        file; DataDirError naming the holder when another process holds it."""
        data_path = Path(data_path)
        try:
            data_path.mkdir(parents=True, exist_ok=True)
            path = data_path / LOCK_FILE
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise DataDirError(f"data_dir {str(data_path)!r}: cannot open {LOCK_FILE} in it: "
                               f"{e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            busy = e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
            holder = _holder(fd) if busy else ""
            os.close(fd)
            if not busy:
                raise DataDirError(f"data_dir {str(data_path)!r}: cannot lock {LOCK_FILE}: "
                                   f"{e.strerror or e}") from None
            raise DataDirError(f"data_dir {str(data_path)!r} is in use by another Overseer server "
                               f"({holder}); stop it first, or give this one a data_dir of its own"
                               ) from None
        line = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "serves": serves})
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (line + "\n").encode(), 0)
        except OSError:
            pass  # the lock holds without the note; a refused server then names no holder
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor of the open file drops the flock
            self._fd = None


def _holder(fd: int) -> str:
    """``pid N on HOST, serving HOST:PORT`` as the holder wrote it (waiting briefly for a holder
    that has the lock and not yet its line)."""
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        try:
            raw = os.pread(fd, 4096, 0)
        except OSError:
            raw = b""
        if raw.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    try:
        note = json.loads(raw)
        pid, host, serves = int(note["pid"]), str(note["host"]), str(note["serves"])
    except (ValueError, KeyError, TypeError):
        return "a process that left no note of itself"
    return f"pid {pid} on {host}, serving {serves}"
