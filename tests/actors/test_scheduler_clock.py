"""The Scheduler with an injected clock (case 9): ``30 2 * * *`` in Europe/Berlin through both
daylight saving transitions of 2026, a clock stepped backwards, and restarts, driven through
``Scheduler.tick(now)`` against a real Store. The pure arithmetic is pinned in tests/model/test_schedule.py
(``test_dst_*``, ``test_backwards_clock_fires_nothing``); this is the same at the level of the
actor that fires the runs and keeps the last fire times."""
from __future__ import annotations

import dataclasses
import types
from datetime import datetime, timedelta, timezone

import pytest
from overseer.actors.context import Context
from overseer.actors.dispatch import Dispatcher
from overseer.actors.scheduler import Scheduler

from overseer.repo.catalog import Catalog, JobSet
from overseer.repo.load import load_repository
from overseer.store import Store

from ..conftest import make_config

UTC = timezone.utc
JOBS = {
    # no command: each run completes at once, so the test is about the slots fired
    "nightly.yml": {"description": "02:30 Berlin", "schedule": [{"frequency": "30 2 * * *",
                                                                 "timezone": "Europe/Berlin"}]},
    "period.yml": {"description": "every 10 minutes", "schedule": [{"frequency": 600}]},
}


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Harness:
    """Schedulers over one Store, as successive server processes would have them."""

    def __init__(self, tmp_path, job_repo, jobs=JOBS, **config):
        job_repo.commit(jobs)
        jobs, errors = load_repository(job_repo.root)
        assert errors == []
        self.jobset = JobSet(commit="c0", jobs=types.MappingProxyType(
            {name: dataclasses.replace(job, commit="c0") for name, job in jobs.items()}))
        config = make_config(tmp_path, job_repo, **config)
        self.store = Store(tmp_path / "store")
        self.ctx = Context(config=config, store=self.store, catalog=Catalog(tmp_path / "snapshots"),
                           monitor=None, library_dir=tmp_path, socket_path=tmp_path / "event.sock",
                           tmp_dir=tmp_path)
        # The runs are stored and admitted; this test is about the slots, so none is started.
        self.ctx.dispatcher = Dispatcher(config.execution.max_concurrent, self.ctx.catalog,
                                         lambda job, record: None)
        self.clock = Clock(at(2026, 1, 1))
        self.scheduler = None

    def start(self, now: datetime) -> Scheduler:
        """A new Scheduler (a server start) at ``now``: it loads the jobs and ticks once."""
        self.clock.now = now
        self.scheduler = Scheduler(self.ctx, clock=self.clock, timer=False)
        self.scheduler.load(self.jobset)
        return self.scheduler

    def run_until(self, end: datetime, step: timedelta = timedelta(minutes=5)) -> None:
        while self.clock.now < end:
            self.clock.now = min(self.clock.now + step, end)
            self.scheduler.tick(self.clock.now)

    def slots(self, job: str) -> list[datetime]:
        self.store.flush()
        runs = self.store.list_executions(job, limit=10000)
        assert all(r["trigger"] == "schedule" for r in runs)
        slots = [datetime.fromisoformat(r["scheduled_for"].replace("Z", "+00:00")) for r in runs]
        assert len(slots) == len(set(slots)), "a slot fired twice"
        return sorted(slots)


@pytest.fixture
def harness(tmp_path, job_repo):
    h = Harness(tmp_path, job_repo)
    yield h
    h.store.close()


def test_spring_forward_fires_once_at_the_end_of_the_gap(harness):
    # 29 Mar 2026: 02:00 CET -> 03:00 CEST, so 02:30 does not exist that night
    harness.start(at(2026, 3, 27, 12))
    harness.run_until(at(2026, 3, 30, 12))
    assert harness.slots("nightly") == [at(2026, 3, 28, 1, 30),    # 02:30 CET
                                        at(2026, 3, 29, 1, 0),     # 03:00 CEST, the end of the gap
                                        at(2026, 3, 30, 0, 30)]    # 02:30 CEST


def test_fall_back_fires_once_at_the_first_occurrence(harness):
    # 25 Oct 2026: 03:00 CEST -> 02:00 CET, so 02:30 happens twice that night
    harness.start(at(2026, 10, 23, 12))
    harness.run_until(at(2026, 10, 26, 12))
    assert harness.slots("nightly") == [at(2026, 10, 24, 0, 30),   # 02:30 CEST
                                        at(2026, 10, 25, 0, 30),   # the first 02:30 (CEST) only
                                        at(2026, 10, 26, 1, 30)]   # 02:30 CET


def test_restart_inside_the_repeated_hour_does_not_fire_the_second_occurrence(harness):
    harness.start(at(2026, 10, 24, 23))
    harness.run_until(at(2026, 10, 25, 0, 40))
    assert harness.slots("nightly") == [at(2026, 10, 25, 0, 30)]
    harness.start(at(2026, 10, 25, 1, 35))          # 02:35 CET: the wall clock shows 02:30 again soon
    harness.run_until(at(2026, 10, 25, 12))
    assert harness.slots("nightly") == [at(2026, 10, 25, 0, 30)]


def test_a_backwards_clock_step_never_fires_a_slot_twice(harness):
    harness.start(at(2026, 10, 24, 23))
    harness.run_until(at(2026, 10, 25, 0, 40))
    fired = harness.slots("nightly")
    periods = harness.slots("period")
    assert fired == [at(2026, 10, 25, 0, 30)] and periods
    # the clock is stepped back 3 hours (NTP correction, a VM restored from a snapshot) ...
    harness.clock.now = at(2026, 10, 24, 21, 40)
    harness.scheduler.tick(harness.clock.now)
    # ... and runs forward again through the slots that already fired
    harness.run_until(at(2026, 10, 25, 0, 45))
    assert harness.slots("nightly") == fired
    assert harness.slots("period") == periods
    # a restart while the clock is still behind fires nothing either
    harness.start(at(2026, 10, 24, 22))
    harness.run_until(at(2026, 10, 25, 0, 45))
    assert harness.slots("nightly") == fired
    assert harness.slots("period") == periods
    # once time passes the last fire, the schedules carry on
    harness.run_until(at(2026, 10, 26, 2))
    assert harness.slots("nightly") == fired + [at(2026, 10, 26, 1, 30)]
    later = harness.slots("period")
    assert len(later) > len(periods) and later[:len(periods)] == periods
    assert all(b - a == timedelta(minutes=10) for a, b in zip(later[len(periods) - 1:], later[len(periods):]))


def test_a_late_tick_fires_each_slot_it_missed_once(tmp_path, job_repo):
    h = Harness(tmp_path, job_repo, {"fast.yml": {"schedule": [{"frequency": "* * * * * *"}]}})
    try:
        h.start(at(2026, 1, 1, 12))
        h.clock.now = at(2026, 1, 1, 12, 0, 1)
        h.scheduler.tick(h.clock.now)
        h.clock.now = at(2026, 1, 1, 12, 0, 4, 500_000)  # a tick 3.5 s late (a busy machine)
        created = h.scheduler.tick(h.clock.now)
        assert [r["scheduled_for"] for r in created] == [
            "2026-01-01T12:00:02.000000Z", "2026-01-01T12:00:03.000000Z", "2026-01-01T12:00:04.000000Z"]
        h.scheduler.tick(h.clock.now)  # nothing twice
        assert h.slots("fast") == [at(2026, 1, 1, 12, 0, s) for s in range(0, 5)]
    finally:
        h.store.close()


def test_a_full_queue_creates_no_scheduled_run(tmp_path, job_repo, caplog):
    # one run may run (it never ends here), two may wait: the slots after those create nothing
    h = Harness(tmp_path, job_repo, {"fast.yml": {"schedule": [{"frequency": "* * * * * *"}]}},
                execution={"max_concurrent": 1, "max_queued": 2})
    try:
        h.start(at(2026, 1, 1, 12))
        for s in range(1, 5):
            h.clock.now = at(2026, 1, 1, 12, 0, s)
            h.scheduler.tick(h.clock.now)
        assert h.slots("fast") == [at(2026, 1, 1, 12, 0, s) for s in range(0, 3)]
        assert h.ctx.dispatcher.queued == 2 and h.ctx.dispatcher.running == 1
        assert "scheduled runs not created: 2 executions are waiting (execution.max_queued)" in caplog.text
    finally:
        h.store.close()
