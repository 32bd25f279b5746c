"""The client commands (SPEC §1): ``jobs``, ``run``, ``logs`` and ``event`` against a running server.

Each command is one or two HTTP calls. Errors are one line on stderr and exit
status 2: the server's own message for an error answer, the reason for a
connection failure. ``run --follow`` exits with the job's status: its exit
code, 124 after a time-out (as ``timeout(1)`` does), 1 when it ended without
an exit code (killed by a signal, could not start, lost).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import quote

if TYPE_CHECKING:
    import requests

DEFAULT_URL = "http://127.0.0.1:8080"
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
EXIT_ERROR = 2
EXIT_TIMEOUT = 124


class ClientError(Exception):
    """A failure to report on one line, exit status 2."""


def add_commands(subparsers: Any) -> None:
    """Add ``jobs``, ``run``, ``logs`` and ``event`` to the ``overseer`` command's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None,
                        help=f"the server (default: $OVERSEER_URL, else {DEFAULT_URL})")
    common.add_argument("--token", default=None, help="API bearer token (default: $OVERSEER_API_TOKEN)")

    p = subparsers.add_parser("jobs", parents=[common], help="list the jobs")
    p.add_argument("--json", action="store_true", help="print the server's JSON answer")
    p.set_defaults(func=jobs)

    p = subparsers.add_parser("run", parents=[common], help="run a job",
                              description="Run JOB with the given var values (strings, converted by each "
                                          "var's type; repeat NAME for a list).")
    p.add_argument("job")
    p.add_argument("values", nargs="*", metavar="NAME=VALUE")
    p.add_argument("-f", "--follow", action="store_true",
                   help="print the output as it comes and exit with the job's exit status")
    p.set_defaults(func=run)

    p = subparsers.add_parser("logs", parents=[common], help="print an execution's output")
    p.add_argument("job")
    p.add_argument("id", type=int)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the execution ends")
    p.add_argument("--stream", choices=("stdout", "stderr", "output"), default="output",
                   help="stdout, stderr, or both interleaved (default: output)")
    p.set_defaults(func=logs)

    p = subparsers.add_parser("event", parents=[common], help="create an event on an execution",
                              description="stop, continue, terminate and kill signal the execution's "
                                          "processes; any other name becomes its status (after its end, "
                                          "a note); the system's names (complete, fail, ...) are refused.")
    p.add_argument("job")
    p.add_argument("id", type=int)
    p.add_argument("event")
    p.add_argument("cause", nargs="?")
    p.set_defaults(func=event)


# -- commands -----------------------------------------------------------------------------------

def jobs(args: argparse.Namespace) -> int:
    def body(api: _Api) -> int:
        data = api.call("GET", "/jobs").json()
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
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
        return 0
    return _main(args, body)


def run(args: argparse.Namespace) -> int:
    def body(api: _Api) -> int:
        fields = []
        for item in args.values:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise ClientError(f"expected NAME=VALUE, got {item!r}")
            fields.append((name, value))
        record = api.call("POST", f"/jobs/{_q(args.job)}", data=fields or None).json()
        if not args.follow:
            where = f"{api.url}/jobs/{_q(record['job'])}/{record['id']}"
            print(f"{record['job']}/{record['id']} {record['state']}  {where}")
            return 0
        final = _follow(api, record["job"], record["id"], "output")
        return exit_status(final)
    return _main(args, body)


def logs(args: argparse.Namespace) -> int:
    def body(api: _Api) -> int:
        path = f"/jobs/{_q(args.job)}/{args.id}/{args.stream}"
        if args.follow:
            _follow(api, args.job, args.id, args.stream)
            return 0
        with api.call("GET", path, stream=True) as resp:
            _copy(resp.iter_content(chunk_size=None))
        return 0
    return _main(args, body)


def event(args: argparse.Namespace) -> int:
    def body(api: _Api) -> int:
        made = api.call("PUT", f"/jobs/{_q(args.job)}/{args.id}",
                        json={"event": args.event, "cause": args.cause}).json()
        print(f"{args.job}/{args.id}: {made['name']} at {made['time']}")
        return 0
    return _main(args, body)


def exit_status(record: dict) -> int:
    """The exit status ``run --follow`` ends with, from the finished execution."""
    names = [e["name"] for e in record.get("events", [])]
    if "time-out" in names:
        return EXIT_TIMEOUT
    if record.get("exit_code") is not None:
        return int(record["exit_code"])
    return 0 if record.get("status") == "complete" or "complete" in names else 1


# -- plumbing -----------------------------------------------------------------------------------

class _Api:
    def __init__(self, url: str, token: Optional[str]):
        import requests  # here, not at the top: `overseer serve` imports this module for its parser

        self.url = url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, stream: bool = False, read_timeout: Optional[float] = READ_TIMEOUT,
             **kwargs: Any) -> requests.Response:
        import requests

        try:
            resp = self.session.request(method, self.url + path, stream=stream,
                                        timeout=(CONNECT_TIMEOUT, read_timeout), **kwargs)
        except requests.ConnectionError as e:
            raise ClientError(f"cannot connect to {self.url}: {_reason(e)}") from None
        except requests.Timeout:
            raise ClientError(f"{self.url} did not answer in time") from None
        except requests.RequestException as e:
            raise ClientError(f"{method} {self.url}{path} failed: {e}") from None
        if resp.status_code >= 400:
            try:
                message = resp.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = resp.text.strip().splitlines()[0] if resp.text.strip() else resp.reason
            resp.close()
            hint = " (give --token or set OVERSEER_API_TOKEN)" if resp.status_code == 401 else ""
            raise ClientError(f"{resp.status_code} {resp.reason}: {message}{hint}")
        return resp


def _follow(api: _Api, job: str, ident: int, stream: str) -> dict:
    """Copy the stream to stdout until the execution is finished; return its final record.
    A dropped connection is followed again from the last byte received."""
    import requests

    offset = 0
    while True:
        ended = False
        path = f"/jobs/{_q(job)}/{ident}/{stream}?follow=true&offset={offset}"
        try:
            with api.call("GET", path, stream=True, read_timeout=None) as resp:
                for chunk in resp.iter_content(chunk_size=None):
                    _write(chunk)
                    offset += len(chunk)
            ended = True
        except requests.RequestException:
            pass
        record = api.call("GET", f"/jobs/{_q(job)}/{ident}").json()
        if ended and record["state"] == "finished":
            return record
        if ended:
            time.sleep(0.5)  # the server ended the stream early (it is stopping?): follow again


def _copy(chunks: Iterator[bytes]) -> None:
    for chunk in chunks:
        _write(chunk)


def _write(data: bytes) -> None:
    out = getattr(sys.stdout, "buffer", None)
    if out is None:
        sys.stdout.write(data.decode("utf-8", "replace"))
        sys.stdout.flush()
        return
    sys.stdout.flush()
    out.write(data)
    out.flush()


def _main(args: argparse.Namespace, body: Any) -> int:
    url = args.url or os.environ.get("OVERSEER_URL") or DEFAULT_URL
    token = args.token if args.token is not None else os.environ.get("OVERSEER_API_TOKEN")
    try:
        return body(_Api(url, token))
    except ClientError as e:
        print(f"overseer: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\noverseer: interrupted (the execution goes on on the server)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no more writes to the closed pipe
        except OSError:
            pass
        return 0


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host",
                   "Temporary failure in name resolution", "Connection reset"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _q(name: str) -> str:
    return quote(str(name), safe="")
