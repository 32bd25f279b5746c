"""The loaded job set: one immutable value that RepoSync replaces as a whole.

Readers (HTTP handlers, the Scheduler) take ``Catalog.current`` once and use
that snapshot; a sync never changes a JobSet somebody already holds.

A commit's jobs are loaded from git's objects, before its snapshot directory is
complete (overseer/repo/snapshots.py); :meth:`Catalog.snapshot` is where a run of
that commit waits for it.
"""
from __future__ import annotations

import threading
import types
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from overseer.exceptions import SnapshotError
from overseer.model.job import Job

# Seconds a run waits for its commit's snapshot: a huge tree on a slow disk takes minutes to check out.
SNAPSHOT_WAIT = 900.0


@dataclass(frozen=True)
class JobSet:
    commit: Optional[str]
    jobs: Mapping[str, Job] = field(default_factory=lambda: types.MappingProxyType({}))
    errors: tuple = ()  # ((file, message), ...)
    synced_at: Optional[str] = None
    url: str = ""
    branch: str = ""
    sync_error: Optional[str] = None  # the last fetch failure, if the remote is unreachable
    # The jobs kept at an older definition because their file is invalid at ``commit``:
    # name -> {"error": the file's problem at ``commit``, "commit": the definition's commit}.
    stale: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: types.MappingProxyType({}))


class Catalog:
    """Holds the current JobSet and where each commit's snapshot lives."""

    def __init__(self, snapshots: Path):
        self.snapshots = snapshots
        self.current = JobSet(commit=None)
        self.snapshot_wait = SNAPSHOT_WAIT
        # Test-only: called with the commit on the checkout thread before a snapshot is made.
        self.checkout_hook: Optional[Callable[[str], None]] = None
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()

    def expect(self, commit: str, future: Future) -> None:
        """The snapshot of ``commit`` is being made: :meth:`snapshot` waits for ``future``. A
        snapshot that could not be made stays expected (its runs fail, naming why) until the
        next attempt replaces the future."""
        with self._lock:
            self._pending[commit] = future
        future.add_done_callback(lambda f: self._made(commit, f))

    def _made(self, commit: str, future: Future) -> None:
        if future.exception() is None:
            with self._lock:
                if self._pending.get(commit) is future:
                    del self._pending[commit]

    def snapshot_ready(self, commit: str) -> bool:
        """Whether :meth:`snapshot` answers ``commit`` without waiting (a caller that must not
        block, such as a thread admitting runs, can leave the waiting to another)."""
        future = self._pending.get(commit)
        return future is None or future.done()

    def when_snapshot_ready(self, commit: str, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once :meth:`snapshot` answers ``commit`` without waiting: now when it
        does, else on the checkout thread when the snapshot is complete or could not be made (then
        :meth:`snapshot` raises). For a thread that must not block on a checkout."""
        future = self._pending.get(commit)
        if future is None:
            callback()
        else:
            future.add_done_callback(lambda _future: callback())  # at once when it is done

    def snapshot(self, commit: str, wait: Optional[float] = None) -> Path:
        """The snapshot directory of ``commit``. While it is being checked out, this waits until
        it is complete, up to ``snapshot_wait`` seconds (or ``wait``: the rest of that time, for a
        caller that waited already); SnapshotError (naming the commit) if it is not by then or
        could not be made."""
        future = self._pending.get(commit)
        if future is not None:
            try:
                future.result(timeout=self.snapshot_wait if wait is None else wait)
            except FutureTimeout:
                raise SnapshotError(f"the snapshot of commit {commit} is not ready after "
                                    f"{self.snapshot_wait:g} s") from None
            except Exception as e:  # noqa: BLE001 - whatever stopped the checkout
                raise SnapshotError(f"the snapshot of commit {commit} could not be made: {e}") from None
        return self.snapshots / commit

    def job(self, name: str) -> Optional[Job]:
        return self.current.jobs.get(name)
