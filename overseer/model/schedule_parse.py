"""A job file's ``schedule`` entries, checked and made ``ScheduleEntry`` values (SPEC §4): each
message names the entry and the key at fault.
"""
from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from croniter import CroniterBadDateError, CroniterError

from overseer.exceptions import JobDefinitionError
from overseer.model.schedule import EPSILON, UTC, ScheduleEntry, cron_template, zone
from overseer.model.vars import parse_iso8601

ENTRY_KEYS = ("frequency", "time", "priority", "timezone", "catch_up")
_PERIOD_RE = re.compile(r"\s*[0-9]+(\.[0-9]*)?\s*\Z")
_PRIORITY_RE = re.compile(r"\s*[+-]?[0-9]+\s*\Z")


def _error(index: int, key: str | None, message: str) -> JobDefinitionError:
    where = f"schedule[{index}]" + (f".{key}" if key else "")
    return JobDefinitionError(f"{where}: {message}")


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
            cron_template(cron)
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
