"""The run queue: which waiting execution starts next (SPEC §4 priority, §2 limits).

Lowest priority number first, then the oldest; a job at its own
``max_concurrent`` is passed over, not blocking the others behind it.
"""
from __future__ import annotations

import heapq
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass(order=True)
class QueuedRun:
    priority: int
    order: int
    job: str = field(compare=False)
    ident: int = field(compare=False)
    payload: Any = field(compare=False, default=None)


class RunQueue:
    def __init__(self, max_concurrent: int):
        self.max_concurrent = max_concurrent
        self._heap: list[QueuedRun] = []
        self._order = itertools.count()
        self.running: Counter = Counter()  # job -> running executions

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def running_total(self) -> int:
        return sum(self.running.values())

    def push(self, job: str, ident: int, priority: int = 0, payload: Any = None) -> None:
        heapq.heappush(self._heap, QueuedRun(priority, next(self._order), job, ident, payload))

    def remove(self, job: str, ident: int) -> Optional[QueuedRun]:
        for i, run in enumerate(self._heap):
            if run.job == job and run.ident == ident:
                self._heap.pop(i)
                heapq.heapify(self._heap)
                return run
        return None

    def finished(self, job: str) -> None:
        if self.running[job] > 0:
            self.running[job] -= 1
        if not self.running[job]:
            del self.running[job]

    def take_startable(self, job_limit: Callable[[str], Optional[int]]) -> list[QueuedRun]:
        """Pop every run that may start now and count it as running."""
        started: list[QueuedRun] = []
        passed_over: list[QueuedRun] = []
        free = self.max_concurrent - self.running_total
        while free > 0 and self._heap:
            run = heapq.heappop(self._heap)
            limit = job_limit(run.job)
            if limit is not None and self.running[run.job] >= limit:
                passed_over.append(run)
                continue
            self.running[run.job] += 1
            started.append(run)
            free -= 1
        for run in passed_over:
            heapq.heappush(self._heap, run)
        return started
