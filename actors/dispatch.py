"""Admission: which stored run may start now, decided on the thread that has it in hand.

The run queue (``overseer.model.run_queue``: priority, then age; ``max_concurrent``
overall and per job) sits behind one lock. The thread that stores a run (an
HTTP worker for a trigger or a repeat, the Scheduler for a schedule fire) and
the thread that ends one (its Execution actor) both admit what may start
then and start it themselves: the Execution actor's construction, and with it
the process, runs on that thread; everything after, on the actor's own.
Passing each run to the Scheduler's thread and on to an Execution thread cost
two thread hand-overs per run, the larger part of a trigger's latency.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Callable, Optional

from overseer.model.job import Job
from overseer.model.run_queue import QueuedRun, RunQueue

if TYPE_CHECKING:
    from overseer.repo.catalog import Catalog

log = logging.getLogger(__name__)


class Dispatcher:
    """The run queue under a lock, and the queued count that ``max_queued`` bounds."""

    def __init__(self, max_concurrent: int, catalog: Catalog,
                 start: Callable[[Job, dict], None],
                 defer: Optional[Callable[[Callable[[], None]], None]] = None):
        self._lock = threading.Lock()
        self._queue = RunQueue(max_concurrent)
        self._catalog = catalog
        self._start = start  # start(job, record): begins the run's Execution actor; never raises
        self._defer = defer  # runs a function on another thread (submit_many's starts)
        self.paused = False
        self.reserved = 0  # triggers between their max_queued check and their submit
        self._local = threading.local()  # runs a start on this thread admitted meanwhile

    # -- counts ------------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Runs stored or being stored as queued that have not started."""
        return len(self._queue) + self.reserved

    @property
    def running(self) -> int:
        return self._queue.running_total

    def reserve(self, max_queued: int) -> bool:
        """Take a place in the queue before storing a run; False when ``max_queued`` wait."""
        with self._lock:
            if len(self._queue) + self.reserved >= max_queued:
                return False
            self.reserved += 1
            return True

    def unreserve(self, count: int = 1) -> None:
        with self._lock:
            self.reserved -= count

    # -- admission ---------------------------------------------------------------------------
    def submit(self, job: Job, record: dict, priority: int = 0, reserved: bool = False) -> None:
        """A stored queued run: start it here if a slot is free, else it waits its turn."""
        with self._lock:
            if reserved:
                self.reserved -= 1
            self._queue.push(job.name, record["id"], priority, (job, record))
            runs = self._take()
        self._begin(runs)

    def submit_many(self, runs: list[tuple[Job, dict, int]], reserved: int = 0) -> None:
        """Many stored runs at once (a schedule tick): one pass of admission. The runs that may
        start are started on other threads (``defer``), one task each, so that a tick of
        thousands of runs neither holds the Scheduler's thread nor starts them one by one.
        ``reserved``: how many places ``reserve`` took for them."""
        with self._lock:
            self.reserved -= reserved
            for job, record, priority in runs:
                self._queue.push(job.name, record["id"], priority, (job, record))
            started = self._take()
        if self._defer is None:
            self._begin(started)
            return
        for run in started:
            self._defer(lambda run=run: self._begin([run]))

    def finished(self, name: str) -> None:
        """A run of ``name`` ended (or never started): start what its slot lets start."""
        with self._lock:
            self._queue.finished(name)
            runs = self._take()
        self._begin(runs)

    def pause(self) -> None:
        """The server is stopping: start nothing more (what waits stays queued in the Store and
        the Supervisor's last recovery finishes it)."""
        with self._lock:
            self.paused = True

    def _take(self) -> list[QueuedRun]:
        if self.paused:
            return []
        return self._queue.take_startable(self._limit)

    def _limit(self, name: str) -> Optional[int]:
        job = self._catalog.job(name)
        return job.max_concurrent if job else None

    def _begin(self, runs: list[QueuedRun]) -> None:
        """Start ``runs`` in order. A run that ends during its own start (no command, could not
        start) admits the next from inside it: that one is started by the outer loop here, so a
        long queue of such runs is a loop, not a recursion."""
        pending = getattr(self._local, "pending", None)
        if pending is not None:
            pending.extend(runs)
            return
        pending = self._local.pending = deque(runs)
        try:
            while pending:
                run = pending.popleft()
                job, record = run.payload
                try:
                    self._start(job, record)
                except Exception:  # the run's own actor reports its failures; this is a bug
                    log.exception("%s/%s: cannot start its execution actor", run.job, run.ident)
                    self.finished(run.job)  # what its slot lets start joins ``pending``
        finally:
            self._local.pending = None
