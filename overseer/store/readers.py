"""Clearing the reader slots of dead processes when the Store cannot open for want of one.

LMDB keeps a slot in its lock file for every open read transaction. A process that dies inside
one leaves its slot taken until some process runs ``mdb_reader_check``; LMDB resets the table
by itself only when the first process opens the environment. py-lmdb's ``lmdb.open()`` begins a
read transaction of its own (to open the main database) before ``Environment.reader_check()``
can be called, so when dead processes hold every slot and another process keeps the store open
(an ``overseer`` command, a backup tool), the server cannot start: ``MDB_READERS_FULL``.

``clear_stale(path)`` opens the environment through the LMDB library py-lmdb carries, with
``ctypes``: ``mdb_env_open`` takes no reader slot, and ``mdb_reader_check`` frees the dead
processes' slots. It is called only after ``lmdb.open()`` failed, so no other environment of this
process is open on the path (LMDB forbids two in one process: their file locks are shared).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Optional


def _candidates():
    try:
        from lmdb import cpython  # type: ignore[attr-defined]
        yield cpython.__file__, "mdb09_"
    except ImportError:
        pass
    system = ctypes.util.find_library("lmdb")  # runs ldconfig: only when py-lmdb's own is not there
    if system:
        yield system, "mdb_"


@functools.cache
def _library() -> Optional[tuple[ctypes.CDLL, str]]:
    """py-lmdb's own LMDB (its C extension exports it with an ``mdb09_`` prefix), else the
    system's ``liblmdb`` (py-lmdb's CFFI build links it); None when neither is there."""
    for path, prefix in _candidates():
        try:
            lib = ctypes.CDLL(path)
            getattr(lib, prefix + "reader_check")
        except (OSError, AttributeError):
            continue
        return lib, prefix
    return None


def clear_stale(path: str) -> int:
    """Free the slots of dead processes in the lock file of the environment at ``path`` (a
    directory); how many were freed. OSError when it cannot be done here (no LMDB library
    found, or LMDB's own error)."""
    found = _library()
    if found is None:
        raise OSError("no LMDB library to check the reader table with")
    lib, prefix = found

    def call(name: str, *args) -> int:
        return getattr(lib, prefix + name)(*args)

    env = ctypes.c_void_p()
    rc = call("env_create", ctypes.byref(env))
    if rc:
        raise OSError(rc, f"mdb_env_create: error {rc}")
    try:
        rc = call("env_open", env, ctypes.c_char_p(path.encode()), ctypes.c_uint(0), ctypes.c_uint(0o644))
        if rc:
            raise OSError(rc, f"mdb_env_open {path}: error {rc}")
        dead = ctypes.c_int(0)
        rc = call("reader_check", env, ctypes.byref(dead))
        if rc:
            raise OSError(rc, f"mdb_reader_check {path}: error {rc}")
        return dead.value
    finally:
        call("env_close", env)
