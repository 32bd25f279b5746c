"""The readable views of the client: ``show`` (an execution), ``history`` (recent executions) and
``repo`` (the job repository's state), each also as the server's JSON with ``--json``.

Times are shown as the server gives them, in UTC, to the second (``2026-12-02 10:00:05Z``).
Fields the view does not know are shown too, after the ones it does, so that nothing the server
says is hidden.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Optional

from overseer.cli.api import Api, q, run_command

HISTORY_LIMIT = 20


def show(args: argparse.Namespace) -> int:
    def body(api: Api) -> int:
        record = api.json("GET", f"/jobs/{q(args.job)}/{args.id}")
        print(json.dumps(record, indent=2) if args.json else execution_text(record))
        return 0
    return run_command(args, body)


def history(args: argparse.Namespace) -> int:
    def body(api: Api) -> int:
        if args.job is not None:
            records = api.json("GET", f"/jobs/{q(args.job)}?limit={args.limit}")["executions"]
        else:
            records = recent_executions(api, args.limit)
        if args.json:
            print(json.dumps({"executions": records}, indent=2))
        elif not records:
            print("no executions yet" if args.job is None else f"{args.job}: no executions yet")
        else:
            print(history_table(records))
        return 0
    return run_command(args, body)


def repo(args: argparse.Namespace) -> int:
    def body(api: Api) -> int:
        info = api.json("GET", "/repo")
        print(json.dumps(info, indent=2) if args.json else repo_text(info))
        return 0
    return run_command(args, body)


def recent_executions(api: Api, limit: int) -> list[dict]:
    """The ``limit`` newest executions of all jobs, newest first. ``GET /jobs`` gives each job's
    last one; only jobs whose last one is newer than the ``limit``-th newest found so far are
    asked for more (so at most ``limit`` jobs, however many there are)."""
    jobs = api.json("GET", "/jobs")["jobs"]
    ran = sorted((job for job in jobs if job.get("last_execution")),
                 key=lambda job: _age(job["last_execution"]), reverse=True)
    found: list[dict] = []
    for job in ran:
        if len(found) >= limit and _age(job["last_execution"]) < _age(found[limit - 1]):
            break   # this job's newest is older than all we keep: so are the rest
        found += api.json("GET", f"/jobs/{q(job['name'])}?limit={limit}")["executions"]
        found.sort(key=_age, reverse=True)
    return found[:limit]


def _age(record: dict) -> tuple[str, int]:
    """What orders executions by creation (ISO 8601 UTC times sort as text)."""
    return str(record.get("created_at") or ""), int(record.get("id") or 0)


# -- formatting ----------------------------------------------------------------------------------

def when(stamp: Optional[str]) -> str:
    """An ISO 8601 UTC time of the server, to the second: ``2026-12-02 10:00:05Z``; ``-`` for none."""
    if not stamp:
        return "-"
    text = str(stamp)
    date, sep, time = text.partition("T")
    if not sep:
        return text
    return f"{date} {time[:8]}Z" if time.endswith("Z") else f"{date} {time}"


def took(record: dict) -> str:
    """How long the run took (or has run so far): ``0.3s``, ``5.2s``, ``1m05s``, ``2h03m``."""
    start, end = _time(record.get("started_at")), _time(record.get("ended_at"))
    if start is None or end is None:
        return "-"
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _time(stamp: Any) -> Optional[datetime]:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def outcome(record: dict) -> str:
    """``complete``, ``fail (exit code 3)``, ``fail (SIGKILL)``, ``stop`` ...: the status, and why."""
    status = str(record.get("status") or record.get("state") or "-")
    if record.get("exit_code") is not None and record.get("state") == "finished":
        return f"{status} (exit code {record['exit_code']})"
    if record.get("signal"):
        return f"{status} ({record['signal']})"
    return status


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned columns; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip()
                     for row in rows)


def history_table(records: Sequence[dict]) -> str:
    rows = [("EXECUTION", "STATE", "STATUS", "TRIGGER", "CREATED", "TOOK")]
    for r in records:
        rows.append((f"{r.get('job')}/{r.get('id')}", str(r.get("state") or "-"), outcome(r),
                     str(r.get("trigger") or "-"), when(r.get("created_at")), took(r)))
    return table(rows)


_SHOWN = {"job", "id", "state", "status", "exit_code", "signal", "params", "command", "commit", "trigger",
          "scheduled_for", "priority", "created_at", "started_at", "ended_at", "pid", "events", "links"}


def execution_text(record: dict) -> str:
    """The execution metadata for people: a head line, the fields, the events, the output's URL."""
    lines = [f"{record.get('job')}/{record.get('id')}  {record.get('state')}  {outcome(record)}"]

    def field(name: str, value: Any) -> None:
        text = value if isinstance(value, str) else json.dumps(value)
        first, *rest = text.splitlines() or [""]
        lines.append(f"  {name:<10} {first}")
        lines.extend(f"  {'':<10} {more}" for more in rest)

    trigger = str(record.get("trigger") or "-")
    if record.get("scheduled_for"):
        trigger += f" (for {when(record['scheduled_for'])})"
    field("trigger", trigger)
    field("created", when(record.get("created_at")))
    field("started", when(record.get("started_at")))
    ended = record.get("ended_at")
    field("ended", when(ended) + (f"  (took {took(record)})" if ended else ""))
    field("commit", str(record.get("commit") or "-")[:12])
    if record.get("pid") is not None and record.get("state") != "finished":
        field("pid", str(record["pid"]))
    if record.get("priority"):
        field("priority", str(record["priority"]))
    params = record.get("params") or {}
    field("params", " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in params.items())
          or "-")
    field("command", str(record.get("command") or "-"))
    for name, value in record.items():
        if name not in _SHOWN:
            field(name.replace("_", " "), value)
    events = record.get("events") or []
    if events:
        rows = [(when(e.get("time")), str(e.get("name")), str(e.get("source") or ""),
                 str(e.get("cause") or "")) for e in events]
        lines.append("  events")
        lines.extend(f"    {line}" for line in table(rows).splitlines())
    output = (record.get("links") or {}).get("output")
    if output:
        field("output", output)
    return "\n".join(lines)


def repo_text(info: dict) -> str:
    """``GET /repo`` for people: where the jobs come from, the commit, the problems."""
    lines = []
    for label, key in (("url", "url"), ("branch", "branch"), ("commit", "commit")):
        lines.append(f"{label:<10} {info.get(key) or '-'}")
    lines.append(f"{'synced':<10} {when(info.get('synced_at'))}")
    for name, value in info.items():
        if name not in ("url", "branch", "commit", "synced_at", "errors", "sync_error"):
            shown = value if isinstance(value, str) else json.dumps(value)
            lines.append(f"{name.replace('_', ' '):<10} {shown}")
    if info.get("sync_error"):
        lines.append(f"sync error: {info['sync_error']}")
    errors = info.get("errors") or []
    if errors:
        lines.append(f"{len(errors)} file(s) with problems:")
        lines.extend(f"  {e.get('file')}: {e.get('error')}" for e in errors)
    else:
        lines.append("no problems in the job files")
    return "\n".join(lines)
