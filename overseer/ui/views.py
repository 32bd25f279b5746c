"""The UI's Jinja2 environment and the small formatting its templates share: times, durations,
status colours, versioned static URLs.

Autoescape is on for every template (they are all HTML): a job name, a var value, a cause or
a line of output is always text in the page, never markup.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"

# A run's colour: its outcome once finished, else its state. Every page uses these names.
OUTCOMES = ("complete", "fail", "time-out", "lost")
STATUS_HELP = {
    "complete": "ended with exit code 0",
    "fail": "ended with a non-zero exit, a signal, or could not start",
    "time-out": "stopped by its timeout",
    "lost": "its process was lost with the server",
    "running": "running now",
    "queued": "waiting for a free slot",
    "stopped": "stopped (SIGSTOP): Continue resumes it",
}


def parse_time(value: Any) -> Optional[datetime]:
    """An ISO 8601 UTC time of the store (``...Z``) as an aware datetime; None if it is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def tone(record: Optional[dict]) -> str:
    """The colour class of a run: ``complete``, ``fail``, ``time-out``, ``lost``, ``running``,
    ``queued``, ``stopped``, or ``other`` (a finished run whose status is none of those)."""
    if not record:
        return "none"
    state = record.get("state")
    if state == "finished":
        status = record.get("status")
        return status if status in OUTCOMES else "other"
    return state if state in ("running", "queued", "stopped") else "other"


def status_label(record: dict) -> str:
    """What a run's badge says: its status, but ``running`` while the latest event is its start."""
    status = record.get("status") or ""
    return "running" if record.get("state") == "running" and status == "start" else status


def seconds_between(start: Any, end: Any, now: Optional[datetime] = None) -> Optional[float]:
    begun = parse_time(start)
    if begun is None:
        return None
    ended = parse_time(end) or now or datetime.now(timezone.utc)
    return max(0.0, (ended - begun).total_seconds())


def run_seconds(record: Optional[dict]) -> Optional[float]:
    """How long a run ran (so far, while it runs); None before it started."""
    if not record:
        return None
    return seconds_between(record.get("started_at"), record.get("ended_at"))


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"


def ago(value: Any, now: Optional[datetime] = None) -> str:
    """``3 min ago`` / ``in 5 min`` (the page's script keeps these fresh)."""
    moment = parse_time(value)
    if moment is None:
        return "—"
    delta = ((now or datetime.now(timezone.utc)) - moment).total_seconds()
    future, delta = delta < 0, abs(delta)
    if delta < 45:
        text = f"{int(delta)} s" if future else "just now"
        return f"in {text}" if future else text
    if delta < 3600:
        text = f"{round(delta / 60)} min"
    elif delta < 86400 * 2:
        text = f"{round(delta / 3600)} h"
    else:
        text = f"{round(delta / 86400)} d"
    return f"in {text}" if future else f"{text} ago"


def exact(value: Any) -> str:
    moment = parse_time(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def short_commit(value: Any) -> str:
    return value[:10] if isinstance(value, str) else "—"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def value_text(value: Any) -> str:
    """A param value as one line of text (JSON for lists and maps)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def make_environment(static_url: Callable[[str], str]) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True,
                             auto_reload=False)
    env.filters.update(duration=duration, ago=ago, exact=exact, short_commit=short_commit,
                       pretty_json=pretty_json, value_text=value_text, tone=tone)
    env.globals.update(static_url=static_url, tone=tone, status_label=status_label, run_seconds=run_seconds,
                       duration=duration, status_help=STATUS_HELP, seconds_between=seconds_between)
    return env
