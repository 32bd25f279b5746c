"""Schedule entries and their arithmetic: pure functions of the times passed in.

Nothing here reads the clock: the caller passes ``now``, the entry's anchor (its ``time``, or
the moment the job was loaded) and the last fire time kept in the store.

Crontab strings are evaluated in the entry's time zone with croniter. Around daylight saving
time changes (see docs/jobs.rst): a wall-clock time that does not exist (spring) fires once, at
the end of the gap; a wall-clock time that happens twice (autumn) fires once, at its first
occurrence, unless the hour field matches every hour (``* * * * *``, ``*/15 * * * *``): such
entries keep firing in real time through the repeated hour.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import math
import re
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from overseer.exceptions import JobDefinitionError
from overseer.vars import parse_iso8601

log = logging.getLogger(__name__)

UTC = timezone.utc
EPSILON = timedelta(microseconds=1)
ENTRY_KEYS = ("frequency", "time", "priority", "timezone", "catch_up")
_PERIOD_RE = re.compile(r"\s*[0-9]+(\.[0-9]*)?\s*\Z")
_PRIORITY_RE = re.compile(r"\s*[+-]?[0-9]+\s*\Z")
_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


@dataclass(frozen=True)
class ScheduleEntry:
    """One trigger of a job's ``schedule`` list."""

    index: int
    frequency: str | None
    period: float | None
    time: datetime | None
    priority: int = 0
    timezone: str = "UTC"
    catch_up: bool = False
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            ident = repr((self.frequency, self.period, self.time.isoformat() if self.time else None,
                          self.timezone))
            digest = hashlib.sha1(ident.encode("utf-8")).hexdigest()[:16]
            object.__setattr__(self, "key", f"{digest}-{self.index}")

    @property
    def one_shot(self) -> bool:
        return self.frequency is None and self.period is None


def _error(index: int, key: str | None, message: str) -> JobDefinitionError:
    where = f"schedule[{index}]" + (f".{key}" if key else "")
    return JobDefinitionError(f"{where}: {message}")


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name (cached); ValueError when there is no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 string, datetime or date as an aware UTC datetime (naive = UTC); empty = None.
    ValueError when it is none; OverflowError when it is not within the years 1 to 9999 in UTC."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        moment = parse_iso8601(value)
    else:
        raise ValueError(f"{value!r} is not an ISO 8601 time")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@lru_cache(maxsize=4096)
def _cron_template(expr: str) -> tuple[croniter, bool]:
    """A croniter for ``expr`` (validated) and whether its hour field matches every hour."""
    fields = expr.split()
    seconds_first = len(fields) == 6
    if not (len(fields) in (5, 6) or (len(fields) == 1 and fields[0].lower() in _ALIASES)):
        raise ValueError("needs 5 fields, or 6 with seconds first")
    cron = croniter(expr, datetime(2000, 1, 1, tzinfo=UTC), second_at_beginning=seconds_first)
    hours = cron.expanded[1]
    every_hour = hours == ["*"] or len(set(hours)) >= 24
    cron.get_next(datetime)   # raises CroniterBadDateError when it never matches (31 Feb)
    return cron, every_hour


def parse_entry(index: int, raw: Any) -> ScheduleEntry:
    """Validate one raw schedule entry (a mapping from the job file)."""
    if isinstance(raw, dict):
        try:
            return _parse_cached(index, tuple((type(k), k, type(v), v) for k, v in raw.items()))
        except TypeError:   # an unhashable value: no caching
            pass
    return _parse_entry(index, raw)


@lru_cache(maxsize=16384)
def _parse_cached(index: int, items: tuple) -> ScheduleEntry:
    return _parse_entry(index, {k: v for _, k, _, v in items})


def _parse_entry(index: int, raw: Any) -> ScheduleEntry:
    if not isinstance(raw, dict):
        raise _error(index, None, f"must be a mapping with {', '.join(ENTRY_KEYS)}, not {raw!r}")
    for key in raw:
        if key not in ENTRY_KEYS:
            raise _error(index, None, f"unknown key {key!r} (allowed: {', '.join(ENTRY_KEYS)})")
    frequency = raw.get("frequency")
    cron: str | None = None
    period: float | None = None
    if isinstance(frequency, bool):
        raise _error(index, "frequency", f"{frequency!r} is neither a crontab string nor a period")
    if isinstance(frequency, (int, float)) or (isinstance(frequency, str) and _PERIOD_RE.match(frequency)):
        try:
            period = float(frequency)
        except OverflowError:
            period = math.inf
        if not math.isfinite(period) or period <= 0 or period > 1e11:
            message = f"period {str(frequency)[:40]} must be a positive number of seconds (at most 1e11)"
            raise _error(index, "frequency", message)
        if timedelta(seconds=period) < EPSILON:
            raise _error(index, "frequency", f"period {frequency!r} is shorter than a microsecond")
    elif isinstance(frequency, str) and frequency.strip():
        cron = " ".join(frequency.split())
        try:
            _cron_template(cron)
        except CroniterBadDateError:
            raise _error(index, "frequency", f"{frequency!r} never matches a date") from None
        except (ValueError, CroniterError) as exc:
            raise _error(index, "frequency", f"{frequency!r} is not a valid crontab string ({exc})") from None
    elif frequency is not None and frequency != "":
        raise _error(index, "frequency", f"{frequency!r} is neither a crontab string nor a period")
    try:
        moment = parse_time(raw.get("time"))
    except ValueError:
        raise _error(index, "time", f"{raw.get('time')!r} is not an ISO 8601 time") from None
    except OverflowError:   # its offset moves it out of the years 1 to 9999
        message = f"{raw.get('time')!r} is not within the years 0001 to 9999 in UTC"
        raise _error(index, "time", message) from None
    if moment is None and cron is None and period is None:
        raise _error(index, None, "needs a frequency, a time, or both")
    priority = raw.get("priority", 0)
    if priority is None:
        priority = 0
    if isinstance(priority, str) and _PRIORITY_RE.match(priority):
        priority = int(priority)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _error(index, "priority", f"{priority!r} is not an integer")
    tz_name = raw.get("timezone", "UTC")
    if tz_name is None:
        tz_name = "UTC"
    if not isinstance(tz_name, str):
        raise _error(index, "timezone", f"{tz_name!r} is not an IANA time zone name")
    try:
        zone(tz_name)
    except ValueError:
        raise _error(index, "timezone", f"unknown time zone {tz_name!r}") from None
    catch_up = raw.get("catch_up", False)
    if catch_up is None:
        catch_up = False
    if not isinstance(catch_up, bool):
        raise _error(index, "catch_up", f"{catch_up!r} is not a bool")
    return ScheduleEntry(index=index, frequency=cron, period=period, time=moment, priority=priority,
                         timezone=tz_name, catch_up=catch_up)


# -- cron iteration -------------------------------------------------------------------------------

# (frequency, zone) -> the last few ranges [after, slot) whose next slot is known to be ``slot``:
# thousands of entries share a frequency, and a tick asks for the slots after the previous slot
# and after the current one in turn, so one range per frequency would be recomputed every time.
_next_cache: dict[tuple[str, str], tuple[tuple[datetime, datetime], ...]] = {}
_cache_lock = threading.Lock()
_RANGES = 4


def _repeated_wall_time(moment: datetime, tz: ZoneInfo) -> bool:
    """True if ``moment`` (aware, in ``tz``) is the second occurrence of its wall-clock time."""
    naive = moment.replace(tzinfo=None)
    first = naive.replace(tzinfo=tz, fold=0).utcoffset()
    second = naive.replace(tzinfo=tz, fold=1).utcoffset()
    return first is not None and second is not None and first > second and moment.utcoffset() == second


def _cron_after(entry: ScheduleEntry, after: datetime) -> Iterator[datetime]:
    """Successive cron slots strictly after ``after``, as aware UTC datetimes."""
    template, every_hour = _cron_template(entry.frequency)
    tz = zone(entry.timezone)
    cron = copy.copy(template)
    cron.set_current(after.astimezone(tz), force=True)
    while True:
        try:
            slot = cron.get_next(datetime)
        except CroniterBadDateError:
            return
        if slot <= after or (not every_hour and _repeated_wall_time(slot, tz)):
            continue
        yield slot.astimezone(UTC)


def _cron_next(entry: ScheduleEntry, after: datetime) -> datetime | None:
    ident = (entry.frequency or "", entry.timezone)
    ranges = _next_cache.get(ident, ())
    for low, slot in ranges:
        if low <= after < slot:
            return slot
    slot = next(_cron_after(entry, after), None)
    if slot is not None:
        with _cache_lock:
            if len(_next_cache) > 10_000:
                _next_cache.clear()
            _next_cache[ident] = ((after, slot), *ranges[:_RANGES - 1])
    return slot


def _period_us(entry: ScheduleEntry) -> int:
    return max(1, round(entry.period * 1_000_000))


def _us(delta: timedelta) -> int:
    return delta // EPSILON


# -- public arithmetic ----------------------------------------------------------------------------

def anchor_for(entry: ScheduleEntry, loaded_at: datetime, last: datetime | None = None) -> datetime:
    """The anchor of an entry: its ``time``; without one, the last fire time, else the load time.

    Anchoring a time-less entry on its last fire keeps a period's cadence across restarts and
    lets ``catch_up`` see the cron slots missed while the server was down.
    """
    if entry.time is not None:
        return entry.time
    return last if last is not None else loaded_at


def next_slot(entry: ScheduleEntry, after: datetime, anchor: datetime) -> datetime | None:
    """The first slot of ``entry`` strictly after ``after`` (and not before ``anchor``), or None."""
    if entry.one_shot:
        return anchor if anchor > after else None
    if entry.period is not None:
        if after < anchor:
            return anchor
        step = _period_us(entry)
        k = _us(after - anchor) // step + 1
        return anchor + timedelta(microseconds=k * step)
    start = after if after >= anchor else anchor - EPSILON
    return _cron_next(entry, start)


def next_slots(entry: ScheduleEntry, after: datetime, anchor: datetime, count: int) -> list[datetime]:
    """Up to ``count`` upcoming slots after ``after`` (for ``next_runs`` in the API)."""
    out: list[datetime] = []
    slot = next_slot(entry, after, anchor)
    while slot is not None and len(out) < count:
        out.append(slot)
        slot = next_slot(entry, slot, anchor)
    return out


def latest_slot(entry: ScheduleEntry, lower: datetime, upper: datetime, anchor: datetime) -> datetime | None:
    """The latest slot in ``(lower, upper]`` that is not before ``anchor``, or None."""
    lower = max(lower, anchor - EPSILON)
    if upper <= lower:
        return None
    if entry.one_shot:
        return anchor if lower < anchor <= upper else None
    if entry.period is not None:
        step = _period_us(entry)
        slot = anchor + timedelta(microseconds=_us(upper - anchor) // step * step)
        return slot if slot > lower else None
    first = _cron_next(entry, lower)
    if first is None or first > upper:
        return None
    second = _cron_next(entry, first)
    if second is None or second > upper:
        return first
    # Many slots in the range: look back from ``upper`` in growing windows so that a long
    # downtime costs a few croniter steps, not one per missed slot.
    window = max(second - first, timedelta(seconds=1)) * 2
    while True:
        start = max(lower, upper - window)
        found = None
        for slot in _cron_after(entry, start):
            if slot > upper:
                break
            found = slot
        if found is not None or start == lower:
            return found
        window *= 16


def due(entry: ScheduleEntry, last: datetime | None, now: datetime, anchor: datetime,
        started_at: datetime, loaded_at: datetime | None = None) -> tuple[datetime | None, datetime | None]:
    """Decide whether ``entry`` fires at ``now``: ``(slot_to_fire or None, new_last or None)``.

    ``last`` is the stored last fire time (None: never fired), ``anchor`` the entry's time or its
    load time, ``started_at`` when the scheduler started (the server start), ``loaded_at`` when this
    process first loaded the entry (for entries that appear later). Of the slots in ``(last, now]``
    only the latest counts: it fires if it is at or after both ``started_at`` and ``loaded_at``; if
    it is earlier (missed while the server was down, or before the job existed) it fires only with
    ``catch_up``. ``new_last`` is
    that latest slot, also when it is skipped, so no slot is ever considered twice. A clock that
    went backwards (``now <= last``) fires nothing. A time-less entry that has fired before is
    anchored on ``last`` (see :func:`anchor_for`).
    """
    if last is not None:
        if now <= last:
            return None, None
        anchor = anchor_for(entry, anchor, last)
    lower = last if last is not None else anchor - EPSILON
    slot = latest_slot(entry, lower, now, anchor)
    if slot is None:
        return None, None
    if loaded_at is not None and loaded_at > started_at:
        started_at = loaded_at
    if slot >= started_at or entry.catch_up:
        return slot, slot
    log.debug("schedule entry %s: slot %s missed while down, skipped", entry.key, slot.isoformat())
    return None, slot


MISFIRE = timedelta(seconds=60)  # a slot later than this when its tick comes is coalesced
MAX_SLOTS = 120  # slots of one entry fired by one call, at most (the latest ones)


def due_slots(entry: ScheduleEntry, last: datetime | None, now: datetime, anchor: datetime,
              started_at: datetime, loaded_at: datetime | None = None,
              misfire: timedelta = MISFIRE) -> tuple[list[datetime], datetime | None]:
    """The slots of ``entry`` to fire at ``now``, oldest first, and the new last fire time.

    Where :func:`due` fires only the latest slot of ``(last, now]``, this fires every slot that
    came while this server ran and is at most ``misfire`` old at ``now``: a scheduler that is late
    (a tick of thousands of entries, a busy machine) still fires each slot once, late. Slots older
    than that (the process was suspended, the clock jumped) are coalesced into the latest one, as
    :func:`due` does (Quartz's misfire threshold and its "fire once now" policy), and slots missed
    while the server was down follow :func:`due` (skipped, or one run with ``catch_up``)."""
    slot, new_last = due(entry, last, now, anchor, started_at, loaded_at)
    if slot is None or entry.one_shot:
        return ([] if slot is None else [slot]), new_last
    live_from = max(started_at, loaded_at) if loaded_at is not None else started_at
    lower = max(last if last is not None else anchor - EPSILON, live_from - EPSILON, now - misfire)
    if last is not None:
        anchor = anchor_for(entry, anchor, last)
    if entry.period is None:
        return [*_cron_between(entry, max(lower, anchor - EPSILON), slot), slot][-MAX_SLOTS:], new_last
    slots: list[datetime] = []
    # The latest MAX_SLOTS - 1 before ``slot``: start that many periods back (no gap in them).
    after = max(lower, slot - timedelta(microseconds=_period_us(entry) * MAX_SLOTS))
    while len(slots) < MAX_SLOTS:
        nxt = next_slot(entry, after, anchor)
        if nxt is None or nxt >= slot:
            break
        slots.append(nxt)
        after = nxt
    slots.append(slot)
    return slots[-MAX_SLOTS:], new_last


# (frequency, zone, lower, upper) -> the cron slots strictly between: thousands of entries with one
# frequency fire the same late slots in one tick, and each croniter step costs tens of microseconds.
_between_cache: dict[tuple, tuple[datetime, ...]] = {}


def _cron_between(entry: ScheduleEntry, lower: datetime, upper: datetime) -> tuple[datetime, ...]:
    key = (entry.frequency, entry.timezone, lower, upper)
    found = _between_cache.get(key)
    if found is None:
        slots: deque = deque(maxlen=MAX_SLOTS)  # the latest ones (misfire bounds the walk)
        for moment in _cron_after(entry, lower):
            if moment >= upper:
                break
            slots.append(moment)
        found = tuple(slots)
        with _cache_lock:
            if len(_between_cache) > 1000:
                _between_cache.clear()
            _between_cache[key] = found
    return found
