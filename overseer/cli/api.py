"""What every client command shares: the HTTP calls, their errors as one line, following output.

Errors are one line on stderr and exit status 2: the server's own message for an error answer,
the reason for a connection failure.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import quote

from overseer.exceptions import ClientError

if TYPE_CHECKING:
    import requests

DEFAULT_URL = "http://127.0.0.1:8080"
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
EXIT_ERROR = 2
EXIT_TIMEOUT = 124


class Api:
    """The server at ``url``, with the bearer token when one is given."""

    def __init__(self, url: str, token: Optional[str]):
        import requests  # here, not at the top: `overseer serve` imports the client for its parser

        self.url = url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, stream: bool = False, read_timeout: Optional[float] = READ_TIMEOUT,
             **kwargs: Any) -> requests.Response:
        """The answer to ``method path``; ClientError for an error answer or no answer."""
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

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON; ClientError when it is not JSON."""
        resp = self.call(method, path, **kwargs)
        try:
            return resp.json()
        except ValueError:
            raise ClientError(f"{method} {self.url}{path}: the answer is not JSON") from None


def follow(api: Api, job: str, ident: int, stream: str) -> dict:
    """Copy the stream to stdout until the execution is finished; return its final record.
    A dropped connection is followed again from the last byte received."""
    import requests

    offset = 0
    while True:
        ended = False
        path = f"/jobs/{q(job)}/{ident}/{stream}?follow=true&offset={offset}"
        try:
            with api.call("GET", path, stream=True, read_timeout=None) as resp:
                for chunk in resp.iter_content(chunk_size=None):
                    write(chunk)
                    offset += len(chunk)
            ended = True
        except requests.RequestException:
            pass
        record = api.json("GET", f"/jobs/{q(job)}/{ident}")
        if ended and record["state"] == "finished":
            return record
        if ended:
            time.sleep(0.5)  # the server ended the stream early (it is stopping?): follow again


def copy(chunks: Iterator[bytes]) -> None:
    for chunk in chunks:
        write(chunk)


def write(data: bytes) -> None:
    """Bytes to stdout, as they are."""
    out = getattr(sys.stdout, "buffer", None)
    if out is None:
        sys.stdout.write(data.decode("utf-8", "replace"))
        sys.stdout.flush()
        return
    sys.stdout.flush()
    out.write(data)
    out.flush()


def say(text: str) -> None:
    """A line on stderr for the person watching (what is being followed), out of stdout's way."""
    sys.stdout.flush()
    print(text, file=sys.stderr, flush=True)


def run_command(args: argparse.Namespace, body: Callable[[Api], int]) -> int:
    """``body(api)`` against the server of ``--url``/``--token`` (or their environment), its
    failures as one line on stderr."""
    url = args.url or os.environ.get("OVERSEER_URL") or DEFAULT_URL
    token = args.token if args.token is not None else os.environ.get("OVERSEER_API_TOKEN")
    try:
        return body(Api(url, token))
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


def q(name: str) -> str:
    """A job name as one path segment."""
    return quote(str(name), safe="")
