"""Waiting on the Store's commits: followers of one execution's output and record.

The writer thread calls ``Watches.committed`` after every commit with the keys
of the output and records it touched; a follower of an execution
(``GET .../output?follow=true``) waits in ``wait`` until its stream grew, its
record changed, or its timeout passed.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable


class _Watch:
    """Followers of one execution: bumped after commits that touch it."""

    __slots__ = ("cond", "waiters", "record", "output")

    def __init__(self, lock: threading.Lock):
        self.cond = threading.Condition(lock)
        self.waiters = self.record = self.output = 0


class Watches:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[bytes, _Watch] = {}
        self._committed = threading.Condition(self._lock)
        self._commits = 0

    def __len__(self) -> int:
        return len(self._watches)

    def wait(self, ekey: bytes, grown: Callable[[], bool], timeout: float) -> bool:
        """Return when ``grown()`` (True), the record of ``ekey`` changed (True), or `timeout`
        seconds passed (False). ``grown`` is checked after every output commit of ``ekey``. A
        record change committed before the call is not seen."""
        deadline = time.monotonic() + timeout
        with self._lock:
            watch = self._watches.get(ekey)
            if watch is None:
                watch = self._watches[ekey] = _Watch(self._lock)
            watch.waiters += 1
            record_seen = watch.record
        try:
            while True:
                with self._lock:
                    output_seen = watch.output
                if grown():
                    return True
                with self._lock:
                    while watch.output == output_seen and watch.record == record_seen:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return False
                        watch.cond.wait(remaining)
                    if watch.record != record_seen:
                        return True
        finally:
            with self._lock:
                watch.waiters -= 1
                if not watch.waiters:
                    del self._watches[ekey]

    def wait_commit(self, timeout: float) -> bool:
        """Wait for the next commit (True) or `timeout` seconds (False)."""
        with self._lock:
            seen = self._commits
            return self._committed.wait_for(lambda: self._commits != seen, timeout)

    def committed(self, output_keys: Any, record_keys: set) -> None:
        """After a commit (on the writer thread): wake whoever waits on what it touched."""
        with self._lock:
            self._commits += 1
            self._committed.notify_all()
            if not self._watches:
                return
            for keys, attr in ((record_keys, "record"), (output_keys, "output")):
                for key in keys:
                    watch = self._watches.get(key)
                    if watch is not None:
                        setattr(watch, attr, getattr(watch, attr) + 1)
                        watch.cond.notify_all()

    def close(self) -> None:
        """The store closes: every waiter returns (as if its record changed)."""
        with self._lock:
            self._commits += 1
            self._committed.notify_all()
            for watch in self._watches.values():
                watch.record += 1
                watch.cond.notify_all()
