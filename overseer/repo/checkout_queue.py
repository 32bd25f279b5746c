"""The checkout thread of a snapshots directory (overseer/repo/snapshots.py ``Snapshots.ensure_soon``):
the work queue that makes one snapshot at a time, in the order asked, and its cancellation when the
server stops.

It is thread and queue bookkeeping only: git and the files a snapshot holds are
overseer/repo/snapshots.py's.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Optional

from overseer.exceptions import CheckoutCancelled

log = logging.getLogger(__name__)


class CheckoutQueue:
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
                self._busy -= collections.Counter(c for c in commits if c)  # zero counts dropped
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
                    self._busy -= collections.Counter(c for c in commits if c)  # zero counts dropped


_QUEUES: dict[str, CheckoutQueue] = {}
_QUEUES_LOCK = threading.Lock()


def queue_for(root: Path) -> CheckoutQueue:
    """One queue per snapshots directory in this process (a restarted RepoSync finds the queue
    its predecessor left work in)."""
    with _QUEUES_LOCK:
        return _QUEUES.setdefault(os.path.abspath(root), CheckoutQueue())
