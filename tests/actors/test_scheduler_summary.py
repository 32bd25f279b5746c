"""The Scheduler's log of the runs a tick creates, on a real System (store, actors, git repository):
up to ``LOG_EACH`` runs get a line each; a tick that creates more logs one summary line for them
(and each run at debug). Ticks are driven through the Scheduler actor with ``now`` passed in, at
times far ahead of the real clock, so the timer never fires one of its own."""
from __future__ import annotations

import datetime as dt
import logging

from overseer.actors.scheduler import LOG_EACH

from ..waiting import wait_for

LOGGER = "overseer.actors.scheduler"
T1 = "2099-01-01T00:00:00Z"
T2 = "2099-01-02T00:00:00Z"
T3 = "2099-01-03T00:00:00Z"


def at(text: str, seconds: int = 0) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) + dt.timedelta(seconds=seconds)


def stamp(text: str, seconds: int = 0) -> str:
    return at(text, seconds).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# No command: every run completes at once, so the test is about what a tick creates and logs.
JOBS = {
    # T1: exactly LOG_EACH one-shot entries of one job fire in one tick
    "edge.yml": {"schedule": [{"time": T1} for _ in range(LOG_EACH)]},
    # T2: one more than LOG_EACH entries of one job, all for one slot
    "wide.yml": {"schedule": [{"time": T2} for _ in range(LOG_EACH + 1)]},
    # T3: 15 one-shot entries, and two 1-second periods whose tick comes 3 s late (4 slots each)
    "burst.yml": {"schedule": [{"time": T3} for _ in range(15)]},
    "steady.yml": {"schedule": [{"time": T3, "frequency": 1}, {"time": T3, "frequency": 1, "priority": 3}]},
}
ENTRIES = LOG_EACH + 15 + 2 + LOG_EACH + 1


def scheduler_lines(caplog, since: int, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records[since:] if r.name == LOGGER and r.levelno == level]


def test_a_tick_of_many_runs_logs_one_summary_line(system_factory, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    s = system_factory(JOBS)
    scheduler = s.ctx.scheduler.proxy()
    wait_for(lambda: scheduler.status().get(timeout=10)["entries"] == ENTRIES, what="the schedules loaded")

    # LOG_EACH runs: a line each, no summary
    mark = len(caplog.records)
    fired = scheduler.tick(at(T1, 1)).get(timeout=30)
    assert len(fired) == LOG_EACH
    lines = scheduler_lines(caplog, mark)
    assert sorted(lines) == sorted(f"edge/{i}: scheduled for {stamp(T1)}" for i in range(1, LOG_EACH + 1))
    assert scheduler_lines(caplog, mark, logging.DEBUG) == []

    # LOG_EACH + 1 runs for a single slot: the summary names that slot alone
    mark = len(caplog.records)
    fired = scheduler.tick(at(T2, 1)).get(timeout=30)
    assert len(fired) == LOG_EACH + 1
    assert scheduler_lines(caplog, mark) == [f"{LOG_EACH + 1} runs of 1 job scheduled for {stamp(T2)}"]

    # 15 + 2 * 4 runs of two jobs over four slots, in one late tick: one line says so
    mark = len(caplog.records)
    fired = scheduler.tick(at(T3, 3)).get(timeout=30)
    assert len(fired) == 23
    assert scheduler_lines(caplog, mark) == [f"23 runs of 2 jobs scheduled for {stamp(T3)} to {stamp(T3, 3)}"]
    steady = sorted(r["scheduled_for"] for r in fired if r["job"] == "steady")
    assert steady == sorted([stamp(T3, n) for n in range(4)] * 2)
    debug = scheduler_lines(caplog, mark, logging.DEBUG)  # each run still named, at debug
    assert sorted(debug) == sorted(f"{r['job']}/{r['id']}: scheduled for {r['scheduled_for']}" for r in fired)
    assert len(set(debug)) == 23

    # the counts are the runs stored
    wait_for(lambda: all(r["state"] == "finished" for job in ("edge", "burst", "steady", "wide")
                         for r in s.executions(job, limit=100)), what="the runs to finish", store=s.store)
    assert [len(s.executions(job, limit=100)) for job in ("edge", "burst", "steady", "wide")] == [
        LOG_EACH, 15, 8, LOG_EACH + 1]
    assert scheduler.tick(at(T3, 3)).get(timeout=30) == []  # nothing fires twice
