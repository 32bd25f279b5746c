"""Opening the store's LMDB environment and its named databases; when every reader slot is
taken, the stale ones a killed process left are cleared first (overseer/store/readers.py)."""
from __future__ import annotations

from pathlib import Path

import lmdb

DB_NAMES = ("executions", "counters", "chunks", "interleave", "inactive", "schedule")


def open_env(path: Path, map_size: int, max_readers: int) -> tuple[lmdb.Environment, int]:
    """The environment, and how many stale reader slots were cleared to open it."""
    def attempt() -> lmdb.Environment:
        return lmdb.open(str(path), subdir=True, map_size=map_size, max_dbs=16,
                         max_readers=max_readers, sync=False, metasync=False, writemap=False)
    try:
        return attempt(), 0
    except lmdb.ReadersFullError as full:
        from . import readers  # ctypes: 25 ms of imports, only on this rare path
        try:
            cleared = readers.clear_stale(str(path))
        except OSError as e:
            raise full from e
        if not cleared:
            raise
        return attempt(), cleared


def open_dbs(env: lmdb.Environment) -> dict:
    """Each named database by name; the map doubles until they fit."""
    while True:
        try:
            return {name: env.open_db(name.encode()) for name in DB_NAMES}
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)
