"""The API's output routes (SPEC §6): a stream's bytes from ``?offset=``, read from the Store a
chunk at a time, and followed as it grows (``?follow=true``) in one of the ``server.max_follows``
slots, which a follow gives back when its body is closed: the run is finished and all of its
output sent, the client went away, or the server stops.
"""
from __future__ import annotations

import logging
import select
import socket
from collections.abc import Iterator
from typing import Any, Callable

from . import errors
from .request import Request, Response

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per Store read when serving output
FOLLOW_WAIT = 1.0  # seconds a follower sleeps on the Store between checks
TEXT_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")]


class Streamed:
    """A streamed body whose ``close()`` (called by the WSGI server, also when the client goes
    away) stops the generator and runs ``release`` exactly once."""

    def __init__(self, gen: Iterator[bytes], release: Callable[[], None]):
        self._gen, self._release, self._closed = gen, release, False

    def __iter__(self) -> Iterator[bytes]:
        return self._gen

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._gen.close()
        finally:
            self._release()


class OutputRoutes:
    """The output handlers of the API application (``overseer.http.app.Api``, which sets the
    ``system``, ``closing``, ``max_follows``, ``_follows`` and ``_follow_lock`` they use)."""

    system: Any
    closing: Any
    max_follows: int
    _follows: int
    _follow_lock: Any

    @property
    def open_follows(self) -> int:
        return self._follows

    def _output(self, req: Request, record: dict, stream: str) -> Response:
        job, ident = record["job"], record["id"]
        offset = req.int_param("offset", 0, 0)
        follow = req.bool_param("follow")
        store = self.system.store
        if follow and req.method != "HEAD":
            if not self._take_follow():
                raise errors.too_many_follows(self.max_follows)
            body = self._follow(job, ident, stream, offset, disconnect_probe(req.environ))
            return Response(200, list(TEXT_HEADERS), Streamed(body, self._release_follow))
        length = max(0, store.output_size(job, ident, stream) - offset)
        headers = [*TEXT_HEADERS, ("Content-Length", str(length))]
        if req.method == "HEAD" or length == 0:
            return Response(200, headers, b"")
        if length <= CHUNK:
            data = store.read_output(job, ident, stream, offset, length)
            return Response(200, [*TEXT_HEADERS, ("Content-Length", str(len(data)))], data)
        return Response(200, headers, self._range(job, ident, stream, offset, length))

    def _range(self, job: str, ident: int, stream: str, offset: int, length: int) -> Iterator[bytes]:
        store = self.system.store
        while length > 0:
            data = store.read_output(job, ident, stream, offset, min(CHUNK, length))
            if not data:  # pruned meanwhile: end the connection rather than send a short body
                raise ConnectionAbortedError(f"output of {job}/{ident} disappeared while being sent")
            offset += len(data)
            length -= len(data)
            yield data

    def _follow(self, job: str, ident: int, stream: str, offset: int,
                client_gone: Callable[[], bool]) -> Iterator[bytes]:
        """The stream from ``offset`` as it grows, until the execution is finished and all of its
        output is sent, the client goes away, or the server stops. Memory: one chunk at a time."""
        store = self.system.store
        try:
            while not self.closing.is_set():
                data = store.read_output(job, ident, stream, offset, CHUNK)
                if not data:
                    record = store.get_execution(job, ident)
                    if record is None or record["state"] == "finished":
                        # output is committed before the record that finishes the execution
                        data = store.read_output(job, ident, stream, offset, CHUNK)
                        if not data:
                            return
                    else:
                        if client_gone():
                            log.debug("%s/%s: the client following %s went away", job, ident, stream)
                            return
                        store.wait_output(job, ident, stream, offset, timeout=FOLLOW_WAIT)
                        continue
                offset += len(data)
                yield data
        except GeneratorExit:
            raise
        except Exception:
            log.exception("%s/%s: following %s failed", job, ident, stream)

    def _take_follow(self) -> bool:
        with self._follow_lock:
            if self._follows >= self.max_follows:
                return False
            self._follows += 1
            return True

    def _release_follow(self) -> None:
        with self._follow_lock:
            self._follows -= 1


def disconnect_probe(environ: dict) -> Callable[[], bool]:
    """A check whether the client closed its connection, for a follow that has nothing to write
    (a write would tell, but a quiet job gives nothing to write). It looks at the connection's
    socket through cheroot's input file; with another server it never reports a disconnect."""
    try:
        sock = environ["wsgi.input"].rfile.raw._sock
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
    except (AttributeError, KeyError, OSError, ValueError):
        return lambda: False

    def gone() -> bool:
        try:
            events = poller.poll(0)
            if not events:
                return False
            if events[0][1] & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return True
            return sock.recv(1, socket.MSG_PEEK) == b""  # readable: at EOF, or a pipelined request
        except OSError:
            return True

    return gone
