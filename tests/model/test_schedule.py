"""Schedule arithmetic: every time is passed in; nothing sleeps or reads the clock."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from overseer.exceptions import JobDefinitionError
from overseer.model.schedule import (
    MISFIRE,
    anchor_for,
    due,
    due_slots,
    latest_slot,
    next_slot,
    next_slots,
)
from overseer.model.schedule_parse import parse_entry

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def entry(**raw):
    return parse_entry(0, raw)


# -- parse_entry ----------------------------------------------------------------------------------

def test_parse_period_cron_and_one_shot():
    e = entry(frequency=300)
    got = (e.period, e.frequency, e.time, e.priority, e.timezone, e.catch_up)
    assert got == (300.0, None, None, 0, "UTC", False)
    assert entry(frequency="90").period == 90.0
    assert entry(frequency=0.5).period == 0.5
    c = entry(frequency="*/5  *  * * *", priority="-1", timezone="Europe/Berlin", catch_up=True)
    got = (c.frequency, c.period, c.priority, c.timezone, c.catch_up)
    assert got == ("*/5 * * * *", None, -1, "Europe/Berlin", True)
    assert entry(frequency="*/5 * * * * *").frequency == "*/5 * * * * *"
    assert entry(frequency="@daily").frequency == "@daily"
    one = entry(time="2026-01-01T01:00:00+01:00")
    assert one.one_shot and one.time == T0
    assert entry(time=datetime(2026, 1, 1), frequency=60).time == T0          # naive = UTC
    assert entry(time=date(2026, 1, 1), frequency=60).time == T0
    assert entry(time="", frequency=60).time is None


def test_entry_key_is_stable_and_content_based():
    a = parse_entry(0, {"frequency": "*/5 * * * *", "priority": 3})
    b = parse_entry(0, {"frequency": "*/5 * * * *", "priority": 9})
    assert a.key == b.key and a.key.endswith("-0") and len(a.key) == 18
    assert parse_entry(1, {"frequency": "*/5 * * * *"}).key.endswith("-1")
    assert parse_entry(0, {"frequency": "*/6 * * * *"}).key != a.key
    assert parse_entry(0, {"frequency": "*/5 * * * *", "timezone": "Asia/Tokyo"}).key != a.key


@pytest.mark.parametrize("raw, where, fragment", [
    ({"frequency": "61 * * * *"}, "schedule[0].frequency", "'61 * * * *' is not a valid crontab string"),
    ({"frequency": "* * * *"}, "schedule[0].frequency", "'* * * *' is not a valid crontab string"),
    ({"frequency": "* * * * * * *"}, "schedule[0].frequency", "is not a valid crontab string"),
    ({"frequency": "0 0 31 2 *"}, "schedule[0].frequency", "'0 0 31 2 *' never matches"),
    ({"frequency": 0}, "schedule[0].frequency", "period 0 must be a positive"),
    ({"frequency": -5}, "schedule[0].frequency", "period -5"),
    ({"frequency": True}, "schedule[0].frequency", "True is neither"),
    ({"frequency": [1]}, "schedule[0].frequency", "[1] is neither"),
    ({"frequency": 60, "time": "tomorrow"}, "schedule[0].time", "'tomorrow' is not an ISO 8601 time"),
    ({"frequency": 60, "priority": "high"}, "schedule[0].priority", "'high' is not an integer"),
    ({"frequency": 60, "priority": 1.5}, "schedule[0].priority", "1.5 is not an integer"),
    ({"frequency": 60, "timezone": "Mars/Olympus"}, "schedule[0].timezone", "unknown time zone 'Mars/"),
    ({"frequency": 60, "catch_up": "yes"}, "schedule[0].catch_up", "'yes' is not a bool"),
    ({"frequency": 60, "every": 5}, "schedule[0]", "unknown key 'every'"),
    ({}, "schedule[0]", "needs a frequency, a time, or both"),
    ({"priority": 1}, "schedule[0]", "needs a frequency"),
    ("*/5 * * * *", "schedule[0]", "must be a mapping"),
])
def test_parse_errors_name_the_key(raw, where, fragment):
    with pytest.raises(JobDefinitionError) as info:
        parse_entry(0, raw)
    message = str(info.value)
    assert message.startswith(where + ":") and fragment in message


# -- next_slot ------------------------------------------------------------------------------------

def test_period_slots_follow_the_anchor():
    e = entry(frequency=600)
    anchor = at(2026, 1, 1, 0, 0, 7)
    assert next_slot(e, anchor - timedelta(days=1), anchor) == anchor
    assert next_slot(e, anchor, anchor) == anchor + timedelta(minutes=10)
    assert next_slot(e, at(2026, 1, 1, 1, 0, 0), anchor) == at(2026, 1, 1, 1, 0, 7)
    assert next_slot(e, at(2026, 1, 1, 1, 0, 7), anchor) == at(2026, 1, 1, 1, 10, 7)
    quarter = entry(frequency=0.25)
    assert next_slots(quarter, T0, T0, 3) == [T0 + timedelta(seconds=s) for s in (0.25, 0.5, 0.75)]


def test_five_field_cron():
    e = entry(frequency="*/5 * * * *")
    assert next_slot(e, at(2026, 1, 1, 12, 3), T0) == at(2026, 1, 1, 12, 5)
    assert next_slot(e, at(2026, 1, 1, 12, 5), T0) == at(2026, 1, 1, 12, 10)      # strictly after
    weekdays = entry(frequency="0 9 * * mon-fri")
    assert next_slot(weekdays, at(2026, 1, 2, 10), T0) == at(2026, 1, 5, 9)         # Fri -> Mon


def test_six_field_cron_has_seconds_first():
    e = entry(frequency="*/20 * * * * *")
    expected = [at(2026, 1, 1, 12, m, s) for m, s in ((0, 20), (0, 40), (1, 0), (1, 20))]
    assert next_slots(e, at(2026, 1, 1, 12, 0, 1), T0, 4) == expected
    e = entry(frequency="30 15 10 * * *")       # 10:15:30 every day
    assert next_slot(e, T0, T0) == at(2026, 1, 1, 10, 15, 30)


def test_cron_respects_time_as_first_run():
    e = entry(frequency="0 * * * *", time="2026-03-01T10:30:00Z")
    assert next_slot(e, T0, e.time) == at(2026, 3, 1, 11)
    e = entry(frequency="0 * * * *", time="2026-03-01T10:00:00Z")
    assert next_slot(e, T0, e.time) == at(2026, 3, 1, 10)                          # a slot at `time` counts


def test_one_shot():
    e = entry(time="2026-05-01T00:00:00Z")
    assert next_slot(e, T0, e.time) == e.time
    assert next_slot(e, e.time, e.time) is None


def test_cron_in_a_time_zone():
    e = entry(frequency="0 9 * * *", timezone="Asia/Tokyo")                         # UTC+9, no DST
    assert next_slot(e, T0, T0) == at(2026, 1, 2, 0)
    ny = entry(frequency="0 9 * * *", timezone="America/New_York")
    assert next_slot(ny, at(2026, 1, 15), T0) == at(2026, 1, 15, 14)                # EST, UTC-5
    assert next_slot(ny, at(2026, 7, 15), T0) == at(2026, 7, 15, 13)                # EDT, UTC-4


# -- DST: `30 2 * * *` in Europe/Berlin (2026: spring 29 Mar 02:00 -> 03:00, autumn 25 Oct 03:00 -> 02:00)

BERLIN_0230 = entry(frequency="30 2 * * *", timezone="Europe/Berlin")


def test_dst_spring_nonexistent_time_fires_once_at_end_of_gap():
    slots = next_slots(BERLIN_0230, at(2026, 3, 27, 12), T0, 3)
    assert slots == [at(2026, 3, 28, 1, 30),         # 02:30 CET
                     at(2026, 3, 29, 1, 0),          # 02:30 does not exist: 03:00 CEST
                     at(2026, 3, 30, 0, 30)]         # 02:30 CEST


def test_dst_autumn_repeated_time_fires_once_at_first_occurrence():
    slots = next_slots(BERLIN_0230, at(2026, 10, 23, 12), T0, 3)
    assert slots == [at(2026, 10, 24, 0, 30),        # 02:30 CEST
                     at(2026, 10, 25, 0, 30),        # first 02:30 (CEST); the second (CET) is skipped
                     at(2026, 10, 26, 1, 30)]        # 02:30 CET
    # A restart inside the repeated hour, after the first 02:30 fired, does not fire the second one.
    assert due(BERLIN_0230, at(2026, 10, 25, 0, 30), at(2026, 10, 25, 1, 45), T0, at(2026, 10, 25, 1, 40)) \
        == (None, None)


def test_dst_every_hour_entries_keep_real_time():
    e = entry(frequency="*/30 * * * *", timezone="Europe/Berlin")
    autumn = next_slots(e, at(2026, 10, 24, 23, 59), T0, 6)
    assert autumn == [at(2026, 10, 25, 0, 0) + timedelta(minutes=30 * i) for i in range(6)]
    spring = next_slots(e, at(2026, 3, 29, 0, 29), T0, 3)
    assert spring == [at(2026, 3, 29, 0, 30), at(2026, 3, 29, 1, 0), at(2026, 3, 29, 1, 30)]


def test_dst_new_york():
    e = entry(frequency="30 2 * * *", timezone="America/New_York")
    assert next_slot(e, at(2026, 3, 8, 0), T0) == at(2026, 3, 8, 7, 0)             # 03:00 EDT
    # New York repeats 01:00-02:00 on 1 Nov 2026: 01:30 fires at its first occurrence (EDT) only.
    e = entry(frequency="30 1 * * *", timezone="America/New_York")
    assert next_slots(e, at(2026, 10, 31, 12), T0, 3) == [at(2026, 11, 1, 5, 30), at(2026, 11, 2, 6, 30),
                                                         at(2026, 11, 3, 6, 30)]


# -- due: firing, restarts, catch_up, clocks ------------------------------------------------------

def test_due_fires_the_latest_slot_once_when_several_are_overdue():
    e = entry(frequency="* * * * *")
    start = at(2026, 1, 1, 12)
    slot, last = due(e, at(2026, 1, 1, 12, 0), at(2026, 1, 1, 12, 3, 30), start, start)
    assert slot == last == at(2026, 1, 1, 12, 3)
    assert due(e, last, at(2026, 1, 1, 12, 3, 59), start, start) == (None, None)
    assert due(e, last, at(2026, 1, 1, 12, 4), start, start) == (at(2026, 1, 1, 12, 4), at(2026, 1, 1, 12, 4))


def test_a_late_tick_fires_every_slot_within_the_misfire_threshold():
    start = at(2026, 1, 1, 12)
    every_second = entry(frequency="* * * * * *")
    slots, last = due_slots(every_second, start, start + timedelta(seconds=3, milliseconds=500), start, start)
    assert slots == [at(2026, 1, 1, 12, 0, 1), at(2026, 1, 1, 12, 0, 2), at(2026, 1, 1, 12, 0, 3)]
    assert last == slots[-1]
    assert due_slots(every_second, last, last + timedelta(milliseconds=999), start, start) == ([], None)
    period = entry(frequency=2)
    slots, last = due_slots(period, start, start + timedelta(seconds=7), start, start)
    assert slots == [start + timedelta(seconds=s) for s in (2, 4, 6)] and last == slots[-1]
    # on time, one slot, as due() gives it
    assert due_slots(every_second, start, start + timedelta(seconds=1), start, start) == \
        ([at(2026, 1, 1, 12, 0, 1)], at(2026, 1, 1, 12, 0, 1))


def test_more_late_slots_than_one_call_fires_are_the_latest_ones_without_a_gap():
    from overseer.model.schedule import MAX_SLOTS

    start = at(2026, 1, 1, 12)
    fast = entry(frequency=0.1)  # 300 slots in a tick 30 s late
    slots, last = due_slots(fast, start, start + timedelta(seconds=30), start, start)
    assert len(slots) == MAX_SLOTS and slots[-1] == last == start + timedelta(seconds=30)
    steps = {b - a for a, b in zip(slots, slots[1:])}
    assert steps == {timedelta(seconds=0.1)}  # the latest ones, one period apart: no gap


def test_slots_later_than_the_misfire_threshold_are_coalesced():
    start = at(2026, 1, 1, 12)
    every_second = entry(frequency="* * * * * *")
    now = start + MISFIRE + timedelta(seconds=30)  # a suspended process wakes up 90 s late
    slots, last = due_slots(every_second, start, now, start, start)
    assert len(slots) == 60 and slots[0] == now - MISFIRE + timedelta(seconds=1) and slots[-1] == now
    every_minute = entry(frequency="* * * * *")  # due()'s own case: only the last slot is in time
    assert due_slots(every_minute, at(2026, 1, 1, 12), at(2026, 1, 1, 12, 3, 30), start, start) == \
        ([at(2026, 1, 1, 12, 3)], at(2026, 1, 1, 12, 3))


def test_slots_missed_while_down_are_not_fired_as_late_ones():
    e = entry(frequency="* * * * * *")
    last, restart = at(2026, 1, 1, 12), at(2026, 1, 1, 12, 0, 10)
    slots, new_last = due_slots(e, last, restart + timedelta(seconds=2, milliseconds=1), restart, restart)
    assert slots == [at(2026, 1, 1, 12, 0, 10), at(2026, 1, 1, 12, 0, 11), at(2026, 1, 1, 12, 0, 12)]
    catch = entry(frequency="* * * * * *", catch_up=True)
    assert due_slots(catch, last, restart, restart + timedelta(seconds=1), restart + timedelta(seconds=1)) \
        == ([restart], restart)


def test_due_first_run_at_the_anchor():
    e = entry(frequency=60)
    loaded = at(2026, 1, 1, 12, 0, 0, 500)
    assert due(e, None, loaded, loaded, loaded) == (loaded, loaded)
    assert due(e, loaded, loaded + timedelta(seconds=59), loaded, loaded) == (None, None)
    assert due(e, loaded, loaded + timedelta(seconds=61), loaded, loaded)[0] == loaded + timedelta(seconds=60)


def test_restart_skips_missed_slots_without_catch_up():
    e = entry(frequency="0 * * * *")
    last = at(2026, 1, 1, 10)
    restart = at(2026, 1, 1, 13, 20)
    assert due(e, last, restart, restart, restart) == (None, at(2026, 1, 1, 13))
    # after recording new_last, nothing until the next slot, which fires normally
    assert due(e, at(2026, 1, 1, 13), restart + timedelta(minutes=1), restart, restart) == (None, None)
    assert due(e, at(2026, 1, 1, 13), at(2026, 1, 1, 14), restart, restart)[0] == at(2026, 1, 1, 14)


def test_restart_fires_exactly_one_run_with_catch_up():
    e = entry(frequency="0 * * * *", catch_up=True)
    last = at(2026, 1, 1, 10)
    restart = at(2026, 1, 1, 13, 20)
    slot, new_last = due(e, last, restart, restart, restart)
    assert slot == new_last == at(2026, 1, 1, 13)
    assert due(e, new_last, restart + timedelta(seconds=1), restart, restart) == (None, None)


def test_restart_never_fires_the_same_slot_twice():
    for catch_up in (False, True):
        e = entry(frequency="*/15 * * * *", catch_up=catch_up)
        fired = at(2026, 1, 1, 12, 15)
        for restart in (fired + timedelta(seconds=1), fired + timedelta(minutes=14)):
            assert due(e, fired, restart, restart, restart) == (None, None)


def test_catch_up_after_a_long_downtime_is_one_run_and_cheap():
    e = entry(frequency="* * * * * *", catch_up=True)                              # every second
    last = at(2026, 1, 1)
    restart = at(2026, 3, 1, 0, 0, 0, 250)
    assert due(e, last, restart, last, restart) == (at(2026, 3, 1), at(2026, 3, 1))
    monthly = entry(frequency="0 6 1 * *", catch_up=True)
    assert latest_slot(monthly, at(2020, 1, 1), at(2026, 3, 15), at(2020, 1, 1)) == at(2026, 3, 1, 6)


def test_period_restart_keeps_its_cadence():
    e = entry(frequency=3600)
    last = at(2026, 1, 1, 10, 0, 7)           # fired before the restart; the anchor was the old load time
    restart = at(2026, 1, 1, 12, 30)
    assert due(e, last, restart, restart, restart) == (None, at(2026, 1, 1, 12, 0, 7))
    assert anchor_for(e, restart, last) == last
    assert next_slot(e, at(2026, 1, 1, 12, 0, 7), anchor_for(e, restart, last)) == at(2026, 1, 1, 13, 0, 7)


def test_backwards_clock_fires_nothing():
    e = entry(frequency="* * * * *")
    last = at(2026, 1, 1, 12, 0)
    for now in (last, last - timedelta(minutes=30), last - timedelta(days=2)):
        assert due(e, last, now, T0, T0) == (None, None)


def test_one_shot_due_and_missed():
    e = entry(time="2026-01-01T12:00:00Z")
    running_since = at(2026, 1, 1, 11)
    assert due(e, None, at(2026, 1, 1, 11, 59), e.time, running_since) == (None, None)
    assert due(e, None, at(2026, 1, 1, 12, 0, 1), e.time, running_since) == (e.time, e.time)
    assert due(e, e.time, at(2026, 1, 2), e.time, running_since) == (None, None)
    # The server was down at 12:00: skipped, unless catch_up.
    restart = at(2026, 1, 1, 13)
    assert due(e, None, restart, e.time, restart) == (None, e.time)
    caught = entry(time="2026-01-01T12:00:00Z", catch_up=True)
    assert due(caught, None, restart, caught.time, restart) == (caught.time, caught.time)


def test_future_time_fires_nothing_before_it():
    e = entry(frequency=60, time="2026-06-01T00:00:00Z")
    assert due(e, None, at(2026, 5, 31, 23, 59, 59), e.time, T0) == (None, None)
    assert due(e, None, at(2026, 6, 1, 0, 0, 30), e.time, T0) == (e.time, e.time)


def test_an_entry_loaded_later_does_not_fire_for_slots_before_its_load():
    e = entry(frequency=3600, time="2026-01-01T00:00:00Z")
    server_start = at(2026, 1, 5)
    loaded = at(2026, 1, 7, 10, 25)                     # the job arrived with a pull, long after the start
    assert due(e, None, loaded, e.time, server_start, loaded) == (None, at(2026, 1, 7, 10))
    assert due(e, at(2026, 1, 7, 10), at(2026, 1, 7, 11), e.time, server_start, loaded) \
        == (at(2026, 1, 7, 11), at(2026, 1, 7, 11))
    caught = entry(frequency=3600, time="2026-01-01T00:00:00Z", catch_up=True)
    assert due(caught, None, loaded, caught.time, server_start, loaded)[0] == at(2026, 1, 7, 10)
