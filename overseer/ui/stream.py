"""The live updates of an execution page: one Server-Sent Events stream per tab.

Messages (``data:`` is JSON):

- ``event``: one event of the run (``{name, cause, time, source}``), its ``id:`` the number
  of events sent so far; a reconnect with ``Last-Event-ID: N`` (or ``?last_event_id=N``)
  gets only those after the N-th.
- ``state``: the metadata without its events (state, status, exit code, times, progress,
  outputs, ...) and the sizes of ``stdout``, ``stderr`` and ``output``, sent at the start
  and whenever one of them changes; the log viewer reads new bytes with ``?offset=``.
- ``end``: the run is finished and everything is sent; the stream ends.

Updates are sent at most every ``MIN_GAP`` seconds (a burst of output is one message), and less
often when many streams are open, so that all of them together send at most about
``UPDATES_PER_SECOND`` (with 100 open tabs on running jobs, each gets one a second); a comment
every ``HEARTBEAT`` seconds keeps proxies from closing a quiet stream. A stream holds
one HTTP worker thread and one of the ``server.max_follows`` slots, like ``?follow=true``;
it ends when the client goes away (within about a second), when the run is finished, or
when the server stops.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any, Callable

from overseer.model import executions as ex

log = logging.getLogger(__name__)

RETRY_MS = 3000  # how long a browser waits before it reconnects a broken stream
MIN_GAP = 0.2  # seconds between two updates of one stream, at least
UPDATES_PER_SECOND = 100  # of all streams together, about
RECHECK = 1.0  # seconds between two reads of the record while nothing is written
HEARTBEAT = 15.0  # seconds of silence before a keep-alive comment


def message(kind: str, data: Any, ident: int | None = None) -> bytes:
    head = f"event: {kind}\n" + (f"id: {ident}\n" if ident is not None else "")
    return (head + "data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":"),
                                         default=str) + "\n\n").encode("utf-8")


def state_of(public: dict, sizes: dict) -> dict:
    state = {k: v for k, v in public.items() if k not in ("events", "links")}
    state["sizes"] = sizes
    state["events_count"] = len(public.get("events") or ())
    return state


def execution_updates(api: Any, job: str, ident: int, seen_events: int,
                      client_gone: Callable[[], bool]) -> Iterator[bytes]:
    """The stream of one execution, from its ``seen_events``-th event on."""
    store = api.system.store
    sent_state: dict | None = None
    silent_since = time.monotonic()
    yield f"retry: {RETRY_MS}\n\n".encode()
    try:
        while not api.closing.is_set():
            record = store.get_execution(job, ident)
            if record is None:  # pruned meanwhile
                yield message("end", {"gone": True})
                return
            public = ex.public(record, api.base_url)
            events = public.get("events") or []
            wrote = False
            for index in range(min(seen_events, len(events)), len(events)):
                yield message("event", events[index], index + 1)
                wrote = True
            seen_events = len(events)
            out, err = store.output_size(job, ident, "stdout"), store.output_size(job, ident, "stderr")
            state = state_of(public, {"stdout": out, "stderr": err, "output": out + err})
            if state != sent_state:
                yield message("state", state, seen_events)
                sent_state, wrote = state, True
            if record["state"] == "finished":
                yield message("end", {})
                return
            now = time.monotonic()
            if wrote:
                silent_since = now
                # what comes meanwhile goes out in the next message
                api.closing.wait(max(MIN_GAP, api.open_follows / UPDATES_PER_SECOND))
            elif now - silent_since >= HEARTBEAT:
                yield b": keep-alive\n\n"
                silent_since = now
            if not store.wait_output(job, ident, "output", out + err, timeout=RECHECK) and client_gone():
                log.debug("%s/%s: the UI stream's client went away", job, ident)
                return
    except GeneratorExit:
        raise
    except Exception:
        log.exception("%s/%s: the UI stream failed", job, ident)
