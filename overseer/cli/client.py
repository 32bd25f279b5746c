"""The client commands (SPEC §1) against a running server: ``jobs``, ``run``, ``logs``, ``event``,
``repeat``, ``activate``, ``deactivate``, ``sync``, and the views ``show``, ``history`` and ``repo``
(overseer/cli/views.py).

Each command is one or a few HTTP calls (overseer/cli/api.py). Errors are one line on stderr
and exit status 2: the server's own message for an error answer, the reason for a connection
failure. ``run --follow``, ``repeat --follow`` and ``logs --follow`` say ``JOB/ID`` on stderr and
exit with the job's status: its exit code, 124 after a time-out (as ``timeout(1)`` does), 1 when
it ended without an exit code (killed by a signal, could not start, lost).
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from overseer.cli import views
from overseer.cli.api import (
    DEFAULT_URL,
    EXIT_TIMEOUT,
    Api,
    copy,
    follow,
    q,
    run_command,
    say,
)
from overseer.exceptions import ClientError

__all__ = ["add_commands", "exit_status"]


def add_commands(subparsers: Any) -> None:
    """Add the client commands to the ``overseer`` command's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None,
                        help=f"the server (default: $OVERSEER_URL, else {DEFAULT_URL})")
    common.add_argument("--token", default=None, help="API bearer token (default: $OVERSEER_API_TOKEN)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the server's JSON answer")
    following = argparse.ArgumentParser(add_help=False)
    following.add_argument("-f", "--follow", action="store_true",
                           help="print the output as it comes and exit with the job's exit status")

    def command(name: str, func: Any, help: str, *parents: argparse.ArgumentParser,
                **kwargs: Any) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, parents=[common, *parents], help=help, **kwargs)
        p.set_defaults(func=func)
        return p

    command("jobs", jobs, "list the jobs", as_json)

    p = command("run", run, "run a job", following,
                description="Run JOB with the given var values (strings, converted by each var's type; "
                            "repeat NAME for a list).")
    p.add_argument("job")
    p.add_argument("values", nargs="*", metavar="NAME=VALUE")

    p = command("repeat", repeat, "run an execution again with the same values", following)
    p.add_argument("job")
    p.add_argument("id", type=int)

    p = command("logs", logs, "print an execution's output")
    p.add_argument("job")
    p.add_argument("id", type=int)
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing until the execution ends, then exit with the job's exit status")
    p.add_argument("--stream", choices=("stdout", "stderr", "output"), default="output",
                   help="stdout, stderr, or both interleaved (default: output)")

    p = command("event", event, "create an event on an execution",
                description="stop, continue, terminate and kill signal the execution's processes; any "
                            "other name becomes its status (after its end, a note); the system's names "
                            "(complete, fail, ...) are refused.")
    p.add_argument("job")
    p.add_argument("id", type=int)
    p.add_argument("event")
    p.add_argument("cause", nargs="?")

    p = command("show", views.show, "show an execution: its status, values, command and events",
                as_json)
    p.add_argument("job")
    p.add_argument("id", type=int)

    p = command("history", views.history, "list recent executions, of one job or of all", as_json)
    p.add_argument("job", nargs="?")
    p.add_argument("-n", "--limit", type=_limit, default=views.HISTORY_LIMIT,
                   help=f"how many (1 to 1000, default {views.HISTORY_LIMIT})")

    for name, func, what in (("activate", activate, "let a job run again (schedules and triggers)"),
                             ("deactivate", deactivate, "stop a job's schedules and refuse its triggers")):
        command(name, func, what).add_argument("job")

    command("repo", views.repo, "show the job repository: commit, last sync, problems", as_json)
    command("sync", sync, "make the server fetch the job repository now")


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 1000")
    return value


# -- commands -----------------------------------------------------------------------------------

def jobs(args: argparse.Namespace) -> int:
    def body(api: Api) -> int:
        data = api.json("GET", "/jobs")
        if args.json:
            print(json.dumps(data, indent=2))
            return 0
        rows = [("NAME", "ACTIVE", "LAST", "SCHEDULE", "DESCRIPTION")]
        for job in data["jobs"]:
            last = job.get("last_execution")
            schedule = ", ".join(str(e.get("frequency") or e.get("time") or "")
                                 for e in job.get("schedule") or [])
            lines = (job.get("description") or "").strip().splitlines()
            rows.append((job["name"], "yes" if job["active"] else "no",
                         f"#{last['id']} {last['status']}" if last else "-", schedule or "-",
                         lines[0] if lines else ""))
        print(views.table(rows))
        return 0
    return run_command(args, body)


def run(args: argparse.Namespace) -> int:
    def body(api: Api) -> int:
        fields = []
        for item in args.values:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise ClientError(f"expected NAME=VALUE, got {item!r}")
            fields.append((name, value))
        return _started(api, args, api.json("POST", f"/jobs/{q(args.job)}", data=fields or None))
    return run_command(args, body)


def repeat(args: argparse.Namespace) -> int:
    def body(api: Api) -> int:
        return _started(api, args, api.json("POST", f"/jobs/{q(args.job)}/{args.id}"))
    return run_command(args, body)


def _started(api: Api, args: argparse.Namespace, record: dict) -> int:
    """What ``run`` and ``repeat`` say of the execution they made: ``JOB/ID STATE URL``, or with
    ``--follow`` ``JOB/ID`` on stderr, the output, and the job's exit status."""
    job, ident = record["job"], record["id"]
    if not args.follow:
        print(f"{job}/{ident} {record['state']}  {api.url}/jobs/{q(job)}/{ident}")
        return 0
    say(f"{job}/{ident}")
    return exit_status(follow(api, job, ident, "output"))


def logs(args: argparse.Namespace) -> int:
    def body(api: Api) -> int:
        if args.follow:
            return exit_status(follow(api, args.job, args.id, args.stream))
        with api.call("GET", f"/jobs/{q(args.job)}/{args.id}/{args.stream}", stream=True) as resp:
            copy(resp.iter_content(chunk_size=None))
        return 0
    return run_command(args, body)


def event(args: argparse.Namespace) -> int:
    def body(api: Api) -> int:
        made = api.json("PUT", f"/jobs/{q(args.job)}/{args.id}",
                        json={"event": args.event, "cause": args.cause})
        print(f"{args.job}/{args.id}: {made['name']} at {made['time']}")
        return 0
    return run_command(args, body)


def activate(args: argparse.Namespace) -> int:
    return _activation(args, "PUT")


def deactivate(args: argparse.Namespace) -> int:
    return _activation(args, "DELETE")


def _activation(args: argparse.Namespace, method: str) -> int:
    def body(api: Api) -> int:
        answer = api.json(method, f"/jobs/{q(args.job)}")
        print(f"{answer['name']}: {'active' if answer['active'] else 'inactive'}")
        return 0
    return run_command(args, body)


def sync(args: argparse.Namespace) -> int:
    def body(api: Api) -> int:
        api.json("POST", "/repo/sync")
        print("sync requested: `overseer repo` shows its result")
        return 0
    return run_command(args, body)


def exit_status(record: dict) -> int:
    """The exit status ``run --follow`` ends with, from the finished execution."""
    names = [e["name"] for e in record.get("events", [])]
    if "time-out" in names:
        return EXIT_TIMEOUT
    if record.get("exit_code") is not None:
        return int(record["exit_code"])
    return 0 if record.get("status") == "complete" or "complete" in names else 1
