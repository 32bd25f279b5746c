"""Executions of every job, newest first: the read behind ``GET /executions`` and the web UI's
recent runs.

The ``executions`` database is keyed ``job \\0 id``: each job's records are one key range, ids
ascending, so each job is read backwards from its newest record and the jobs are merged by
``created_at`` (then job name, then id), newest first. A page costs one read per job with
executions plus one per record looked at; nothing is written, no index is kept beside the
records (the trigger path stays as it is).

Paging is by time: ``before`` is a ``created_at`` value and a page holds the executions created
strictly before it. A page never splits executions created in the same microsecond, so the next
page (``before`` = the oldest ``created_at`` of this one) misses none and repeats none. With a
filter, at most ``budget`` records are looked at per call; a page cut short by the budget says
where to go on from (``next``), which may then be a page with fewer than ``limit`` executions,
or none.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from .keys import END, decode_record, from_u64

BUDGET = 50_000  # records looked at per call, at most


@dataclass(frozen=True)
class RecentQuery:
    """Which executions: each filter is a set of accepted values, or None for all."""

    jobs: Optional[frozenset] = None
    statuses: Optional[frozenset] = None
    triggers: Optional[frozenset] = None
    states: Optional[frozenset] = None
    limit: int = 20
    before: Optional[str] = None  # a created_at: only executions created strictly before it

    def accepts(self, record: dict) -> bool:
        return ((self.statuses is None or record.get("status") in self.statuses)
                and (self.triggers is None or record.get("trigger") in self.triggers)
                and (self.states is None or record.get("state") in self.states))


class _Head:
    """The newest record of one job not yet merged; the heap's top is the newest of all."""

    __slots__ = ("key", "record", "rest")

    def __init__(self, key: tuple, record: dict, rest: Iterator[tuple[tuple, dict]]):
        self.key, self.record, self.rest = key, record, rest

    def __lt__(self, other: _Head) -> bool:  # heapq keeps the smallest on top: invert
        return self.key > other.key


def job_names(txn: Any, db: Any) -> Iterator[str]:
    """Every job that has executions in the store (removed jobs too), in key order."""
    cur = txn.cursor(db=db)
    found = cur.first()
    while found:
        key = bytes(cur.key())
        job = key[: key.index(b"\0")]
        yield job.decode("utf-8")
        found = cur.set_range(job + b"\0" + END)


def _newest_first(txn: Any, db: Any, job: str, before: Optional[str]) -> Iterator[tuple[tuple, dict]]:
    """The records of ``job`` created before ``before``, newest id first, with their merge key.

    The key's time is the record's ``created_at``, or a newer id's when that is older: two
    triggers of one job at once can store their records in the other order than their clocks
    read, and a page must not end between them and lose the one out of order."""
    prefix = job.encode("utf-8") + b"\0"
    cur = txn.cursor(db=db)
    found = cur.prev() if cur.set_range(prefix + END) else cur.last()
    floor: Optional[str] = None
    while found:
        key = cur.key()
        if bytes(key[: len(prefix)]) != prefix:
            return
        record = decode_record(cur.value())
        created = record.get("created_at") or ""
        if floor is None or created < floor:
            floor = created
        if before is None or floor < before:
            yield (floor, job, from_u64(key, len(prefix))), record
        found = cur.prev()


def recent(txn: Any, db: Any, query: RecentQuery, budget: int = BUDGET) -> tuple[list[dict], Optional[str]]:
    """The page of executions ``query`` asks for, and the ``before`` of the next page (None when
    no execution is older than this page)."""
    jobs = sorted(query.jobs) if query.jobs is not None else job_names(txn, db)
    heap: list[_Head] = []
    for job in jobs:
        rest = _newest_first(txn, db, job, query.before)
        first = next(rest, None)
        if first is not None:
            heap.append(_Head(first[0], first[1], rest))
    heapq.heapify(heap)
    page: list[tuple[str, dict]] = []  # (merge time, record)
    last_time: Optional[str] = None  # created_at of the page's oldest execution, once it is full
    looked = 0
    while heap:
        head = heap[0]
        created = head.key[0]
        if last_time is not None and created != last_time:
            return [r for _, r in page], last_time  # full, with all of the same microsecond
        if looked >= budget and last_time is None:
            # Every record newer than this one was looked at; those of its own microsecond go to
            # the next page, which starts just after it.
            return [r for t, r in page if t != created], _after(created)
        looked += 1
        if query.accepts(head.record):
            page.append((created, head.record))
            if len(page) >= query.limit and last_time is None:
                last_time = created
        following = next(head.rest, None)
        if following is None:
            heapq.heappop(heap)
        else:
            head.key, head.record = following
            heapq.heapreplace(heap, head)
    return [r for _, r in page], None


def _after(created: str) -> str:
    """The ``before`` that takes in executions created at ``created`` (one microsecond later)."""
    try:
        moment = datetime.strptime(created, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return created + "\0"  # not our own format: the next string up
    return (moment + timedelta(microseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
