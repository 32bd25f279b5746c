"""Execution records: their shape, their events and their public form (SPEC §5).

Plain functions over plain dicts; the Store keeps the dicts as JSON and the
actors change them only through ``Store.update_execution``.
"""
from __future__ import annotations

import datetime as _dt
import re
import time
from typing import Any, Optional

from overseer.exceptions import ParamError

# Event names: the one definition (the API, the event socket and job definitions' ``hooks`` use it).
EVENT_NAME_PATTERN = "[A-Za-z0-9_.-]{1,64}"
EVENT_NAME = re.compile(EVENT_NAME_PATTERN + r"\Z")
# The paths under an execution (GET /jobs/JOB/ID/NAME): no event, of any source, takes them (SPEC §11).
PATH_NAMES = frozenset({"stdout", "stderr", "output", "artifacts", "progress", "changes"})
# The events only the server records (SPEC §5, §9-§11): a run's outcome and what the server saw of
# it. A client or a job that asks for one is refused, so none of them can be forged.
SYSTEM_EVENTS = frozenset({
    "queued", "start", "complete", "fail", "time-out", "lost",  # a run's life
    "output-truncated", "output-lost",                          # its output
    "chain-refused", "lock-wait", "lock",                       # chains and the lock tool
})
SIGNAL_EVENTS = {"stop": "SIGSTOP", "continue": "SIGCONT", "terminate": "SIGTERM", "kill": "SIGKILL"}
STREAMS = ("stdout", "stderr", "output")
MAX_CAUSE = 4096

# Fields the store keeps for the engine that are not part of the public metadata.
_PRIVATE = ("pgid", "proc_start", "cgroup", "argv_script")


_second = (-1, "")  # the last whole second formatted, and its text (replaced whole: thread-safe)


def now_iso(moment: Optional[_dt.datetime] = None) -> str:
    """ISO 8601 UTC with microseconds (``2026-11-27T12:00:00.123456Z``). The current time is
    formatted from the clock directly, the date part once a second: a run takes several of
    these, and ``datetime.now().astimezone().strftime()`` was a tenth of a run's Python time."""
    global _second
    if moment is not None:
        return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _second
    if cached[0] != seconds:
        cached = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{cached[1]}.{micros:06d}Z"


def check_event_name(name: Any) -> str:
    """Return ``name`` if an event (of any source) can have it, else raise ParamError."""
    if not isinstance(name, str) or not EVENT_NAME.match(name):
        raise ParamError(f"event name {name!r} must match {EVENT_NAME_PATTERN}")
    if name in PATH_NAMES:
        raise ParamError(f"event name {name!r} is reserved: /jobs/JOB/ID/{name} is not an event")
    return name


def check_new_event(name: Any) -> str:
    """Return ``name`` if a client or a job may create an event of that name, else raise ParamError."""
    name = check_event_name(name)
    if name in SYSTEM_EVENTS:
        raise ParamError(f"event name {name!r} is reserved for the system: only the server records it")
    return name


def check_cause(cause: Any) -> Optional[str]:
    if cause is None:
        return None
    if not isinstance(cause, str):
        raise ParamError("cause must be a string or null")
    if len(cause) > MAX_CAUSE:
        raise ParamError(f"cause is longer than {MAX_CAUSE} characters")
    return cause


def new_record(*, params: dict, command: Optional[str], commit: Optional[str], trigger: str,
               scheduled_for: Optional[str] = None, priority: int = 0) -> dict:
    created = now_iso()
    return {
        "state": "queued", "status": "queued", "params": params, "command": command,
        "commit": commit, "trigger": trigger, "scheduled_for": scheduled_for, "priority": priority,
        "created_at": created, "started_at": None, "ended_at": None, "exit_code": None,
        "signal": None, "pid": None,
        "events": [{"name": "queued", "cause": None, "time": created, "source": "system"}],
    }


def make_event(name: str, cause: Optional[str], source: str) -> dict:
    return {"name": name, "cause": cause, "time": now_iso(), "source": source}


def add_event(record: dict, event: dict, **changes: Any) -> dict:
    """Append ``event`` to ``record`` (in place), make it the status, apply ``changes``. On a
    finished run the event is a note: kept in ``events``, the status (its outcome) unchanged."""
    record["events"].append(event)
    if record["state"] != "finished":
        record["status"] = event["name"]
    record.update(changes)
    return record


def add_kept_event(record: dict, event: dict, max_events: int, **changes: Any) -> dict:
    """``add_event`` for an event from a client or a job: once the record holds ``max_events``
    events it is not kept, only counted (``events_dropped``), and changes nothing else."""
    if len(record["events"]) >= max_events:
        record["events_dropped"] = record.get("events_dropped", 0) + 1
        return record
    return add_event(record, event, **changes)


def outcome(record: dict) -> Optional[str]:
    """The run's final status once it is finished (notes after the end do not change it), else None."""
    return record["status"] if record["state"] == "finished" else None


def public(record: dict, base_url: str = "") -> dict:
    """The execution metadata as the API shows it."""
    out = {k: v for k, v in record.items() if k not in _PRIVATE}
    prefix = f"{base_url}/jobs/{record['job']}/{record['id']}"
    out["links"] = {stream: f"{prefix}/{stream}" for stream in STREAMS}
    return out


def occurrences(record: dict, name: str) -> list[dict]:
    return [{"time": e["time"], "cause": e["cause"], "source": e["source"]}
            for e in record["events"] if e["name"] == name]
