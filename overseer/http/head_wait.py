"""A worker thread takes a connection only once its whole request is in, and only a well-framed one.

cheroot hands a new connection, and a kept-alive one that has become readable, straight to a
worker, which then blocks reading until the whole request is there: up to the socket timeout
(60 s) for every read. A client that connects and sends nothing, half a request head, or a
body that trickles in (declared, chunked, or after ``Expect: 100-continue``), holds a worker
that long, and ``server.thread_pool`` of them shut everyone else out. Such connections wait here
instead, in one thread that watches them with an epoll, and go to the workers once their request
is in. This is the one place where connections are guarded; the request gate of
``overseer.http.app`` sees requests.

"In" means the head and the whole body. While the request fits in what one look at the socket
shows (``PEEK`` bytes, without taking them: ``MSG_PEEK``; the epoll is edge-triggered, so data
that is not yet a request does not wake the thread again and again), nothing is read here and
the worker reads the request as it came. A longer request, and a client that waits for
``100 Continue`` (sent from here, and its ``Expect`` header dropped so that the worker does not
send another), is read here into a buffer of its own, up to ``server.max_body_bytes`` of body,
and the worker gets the buffer with the connection. Every head is checked by
``overseer.http.framing`` before a worker reads it: a request whose framing could be read two ways
is answered 400 and its connection closed, a declared body over the limit 413 at once (unread),
and a request not in by its deadline 408. The deadline: ``deadline`` seconds (HEAD_DEADLINE) from
the connection's arrival here, plus one second per ``BODY_RATE`` bytes of body the head declares
(of ``max_body_bytes`` for a chunked body). After an error answer the connection's write side is
closed at once and what the client still sends is read and dropped for up to ``LINGER`` seconds,
so that the client reads the answer rather than a reset.

Memory: the bytes read here for all waiting connections together are at most ``budget`` (64 MiB,
or four bodies of ``max_body_bytes`` when that is more); past it a request is answered 503 with
``Retry-After``.
"""
from __future__ import annotations

import heapq
import logging
import select
import socket
import threading
import time
from typing import Any, Callable, Optional

from .framing import MAX_HEAD, ChunkScan, Head, Refused, answer, parse_head, too_large
from .sockets import PEEK, buffered, hand_bytes, look, send_now, take

log = logging.getLogger(__name__)

HEAD_DEADLINE = 10.0  # seconds from a connection's arrival here to its request being in
BODY_RATE = 65536  # bytes of declared body that add one second to the deadline
READ = 65536  # bytes taken from a socket at a time
LINGER = 2.0  # seconds what a client sends after an error answer is read and dropped
BUDGET = 64 << 20  # bytes read in for all waiting connections together (at least 4 bodies)
DEFAULT_MAX_BODY = 1 << 20
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_ENDED = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_EDGE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
_LEVEL = select.EPOLLIN | select.EPOLLRDHUP
_CLOSED_LOG_EVERY = 60.0  # seconds between log lines about closed connections
HAND, WAIT, CLOSE = "hand", "wait", "close"


class _Pending:
    """One connection waiting here, and what is known of its request so far."""

    __slots__ = ("conn", "due", "buf", "head", "chunks", "searched", "lingering", "level")

    def __init__(self, conn: Any, due: float):
        self.conn = conn
        self.due = due
        self.buf: Optional[bytearray] = None  # None: looked at in the socket; else read in here
        self.head: Optional[Head] = None  # offsets into the stream, the same peeked or read
        self.chunks: Optional[ChunkScan] = None
        self.searched = 0  # where to look for the head's end next time
        self.lingering = False  # answered with an error: dropping what comes until it closes
        self.level = False  # registered level-triggered (lingering)


class HeadWait:
    """The connections whose request is not in yet, and the thread that watches them."""

    def __init__(self, hand_over: Callable[[Any], None], deadline: float = HEAD_DEADLINE,
                 max_body: int = DEFAULT_MAX_BODY):
        self._hand_over = hand_over  # cheroot's own process_conn: to the worker queue
        self.deadline = deadline
        self.max_body = max_body
        self.budget = max(BUDGET, 4 * (max_body + MAX_HEAD))
        self._held = 0  # bytes read in for the connections waiting here
        self._ep = select.epoll()
        self._lock = threading.Lock()
        self._waiting: dict[int, _Pending] = {}
        self._due: list[tuple[float, int]] = []
        self._stopping = False
        self._closed = 0
        self._logged_at = 0.0
        self._thread = threading.Thread(target=self._loop, name="http-head-wait", daemon=True)
        self._thread.start()

    def offer(self, conn: Any) -> None:
        """To the workers if its request is in, else wait here for it."""
        self._settle(_Pending(conn, time.monotonic() + self.deadline), None, False)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def held(self) -> int:
        """Bytes read in here for the connections that wait."""
        return self._held

    def stop(self) -> None:
        """Close every connection still waiting and end the thread."""
        with self._lock:
            self._stopping = True
            left = list(self._waiting.values())
            self._waiting.clear()
        for entry in left:
            self._drop(entry)
        self._ep.close()  # ends the thread's poll
        self._thread.join(5)

    def ready(self, conn: Any) -> bool:
        """Whether ``conn``'s next request is in, well framed and within the limits (what its
        reader buffered and what its socket holds): a worker may read it without waiting. Any
        other request goes through ``offer``."""
        data, ended = look(conn)
        if not data:
            return ended  # the client closed it: the worker sees that and lets it go at once
        try:
            return self._judge(_Pending(conn, 0.0), data)
        except Refused:
            return False

    # -- one connection's request -------------------------------------------------------------
    def _judge(self, entry: _Pending, data: Any) -> bool:
        """Whether the request at the start of ``data`` is all in; ``Refused`` when it must not
        be served. What it learns (the head, the chunks read through) stays in ``entry``."""
        head = entry.head
        if head is None:
            head = parse_head(data, entry.searched)
            if head is None:
                entry.searched = max(0, len(data) - 3)
                return False
            entry.head = head
            if head.chunked:
                entry.chunks = ChunkScan(head.end)
                declared = self.max_body
            elif head.length > self.max_body:
                raise too_large(self.max_body)
            else:
                declared = head.length
            entry.due += declared / BODY_RATE
        if entry.chunks is None:
            return head.body_in(data)
        if entry.chunks.advance(data, self.max_body):
            return True
        if len(data) - head.end > 2 * self.max_body + MAX_HEAD:  # framing of tiny chunks
            raise too_large(self.max_body)
        return False

    def _step(self, entry: _Pending, ended: bool) -> str:
        if entry.lingering:
            return CLOSE if take(entry.conn.socket, READ) == b"" else WAIT
        if entry.buf is None:
            data, at_end = look(entry.conn)
            ended = ended or at_end
            if not data:
                return HAND if ended else WAIT  # at its end the worker sees that and lets it go
            if self._judge(entry, data):
                return HAND
            head = entry.head
            if len(data) < PEEK and (head is None or not head.expect):
                if ended:
                    return HAND  # all the client will send: the worker reads it and meets the end
                if head is None or head.chunked or head.end + head.length <= PEEK:
                    return WAIT  # it fits in a look at the socket: nothing is read here
            self._read_in(entry)
        return self._read(entry, ended)

    def _read_in(self, entry: _Pending) -> None:
        """From looking at the socket to reading it: what the reader buffered comes first."""
        rfile = entry.conn.rfile
        entry.buf = bytearray(buffered(rfile))
        hand_bytes(rfile, b"")
        self._hold(len(entry.buf), force=True)

    def _read(self, entry: _Pending, ended: bool) -> str:
        buf, sock = entry.buf, entry.conn.socket
        while True:
            if self._judge(entry, buf):
                return HAND
            head = entry.head
            if head is not None and head.expect and len(buf) >= head.end and not self._continue(entry):
                return CLOSE
            if ended:
                return HAND if head is not None else CLOSE
            if head is None:
                want = MAX_HEAD + 5 - len(buf)
            elif entry.chunks is None:
                want = head.end + head.length - len(buf)
            else:
                want = READ
            want = max(1, min(want, READ))
            self._hold(want)
            got = None
            try:
                got = take(sock, want)
            finally:
                self._release(want - len(got or b""))
            if got is None:
                return WAIT
            if not got:
                ended = True
            buf += got

    def _continue(self, entry: _Pending) -> bool:
        """Send ``100 Continue`` and drop the ``Expect`` lines from the head that the worker
        reads (it would send another). False when the client does not take it at once."""
        head, buf = entry.head, entry.buf
        cut = 0
        for start, end in reversed(head.expect):
            del buf[start:end]
            cut += end - start
        head.end -= cut
        if entry.chunks is not None:
            entry.chunks.pos -= cut
        head.expect = []
        self._release(cut)
        return send_now(entry.conn.socket, CONTINUE)

    def _refuse(self, entry: _Pending, refused: Refused, quiet: bool = False) -> str:
        """Answer, close the write side, and drop what still comes for up to LINGER seconds.
        ``quiet``: not logged one by one (late requests are counted in one line a minute)."""
        conn = entry.conn
        if not quiet:
            log.info("HTTP: refused a request from %s: %d %s", getattr(conn, "remote_addr", None) or "-",
                     refused.status, refused.message)
        self._forget(entry)
        if not send_now(conn.socket, answer(refused)):
            return CLOSE
        try:
            conn.socket.shutdown(socket.SHUT_WR)
        except OSError:
            return CLOSE
        entry.lingering = True
        entry.due = time.monotonic() + LINGER
        return WAIT

    def _hold(self, n: int, force: bool = False) -> None:
        with self._lock:
            if not force and self._held + n > self.budget:
                raise Refused(503, f"the server holds {self._held >> 20} MiB of requests that are still "
                                   f"coming in; retry in a moment", [("Retry-After", "1")])
            self._held += n

    def _release(self, n: int) -> None:
        with self._lock:
            self._held -= n

    def _forget(self, entry: _Pending) -> None:
        """Let go of what was read in for ``entry``."""
        if entry.buf is not None:
            self._release(len(entry.buf))
            entry.buf = None

    # -- the waiting set ------------------------------------------------------------------------
    def _settle(self, entry: _Pending, fd: Optional[int], ended: bool) -> None:
        """Take ``entry`` a step on: to the workers, closed, or (on) waiting here. ``fd``: its
        file descriptor when it waits here already."""
        due = entry.due
        try:
            try:
                outcome = self._step(entry, ended)
            except Refused as refused:
                outcome = self._refuse(entry, refused)
        except OSError:
            # the worker meets the error and closes the connection; read-in bytes are lost anyway
            outcome = HAND if entry.buf is None and not entry.lingering else CLOSE
        self._apply(entry, fd, outcome, due)

    def _apply(self, entry: _Pending, fd: Optional[int], outcome: str, due: float) -> None:
        if outcome == WAIT:
            if fd is None:
                self._enter(entry)
                return
            if entry.due != due:
                with self._lock:
                    heapq.heappush(self._due, (entry.due, fd))
            if entry.lingering and not entry.level:
                entry.level = True
                try:
                    self._ep.modify(fd, _LEVEL)  # each wake drops one read; none is missed
                except OSError:
                    if self._take(fd, entry):
                        self._drop(entry)
            return
        if fd is not None and not self._take(fd, entry):
            return
        if outcome == HAND:
            self._give(entry)
        else:
            self._drop(entry)

    def _enter(self, entry: _Pending) -> None:
        conn = entry.conn
        try:
            fd = conn.socket.fileno()
        except OSError:
            self._give(entry)
            return
        with self._lock:
            if self._stopping:
                stopping = True
            else:
                stopping = False
                self._waiting[fd] = entry
                heapq.heappush(self._due, (entry.due, fd))
        if stopping:
            self._drop(entry)
            return
        entry.level = entry.lingering
        try:
            # Edge-triggered; adding an fd with data already there reports it at once.
            self._ep.register(fd, _LEVEL if entry.level else _EDGE)
        except OSError:
            with self._lock:
                self._waiting.pop(fd, None)
            self._give(entry)

    def _give(self, entry: _Pending) -> None:
        """To the workers, with what was read in here."""
        if entry.lingering:
            self._drop(entry)
            return
        if entry.buf is not None:
            hand_bytes(entry.conn.rfile, bytes(entry.buf))
            self._forget(entry)
        self._hand_over(entry.conn)

    def _drop(self, entry: _Pending) -> None:
        self._forget(entry)
        try:
            entry.conn.close()
        except OSError:
            pass

    def _loop(self) -> None:
        while True:
            with self._lock:
                timeout = max(0.0, self._due[0][0] - time.monotonic()) if self._due else 1.0
            try:
                events = self._ep.poll(min(timeout, 1.0))
            except (OSError, ValueError):  # closed by stop()
                return
            for fd, mask in events:
                entry = self._waiting.get(fd)
                if entry is not None:
                    self._settle(entry, fd, bool(mask & _ENDED))
            self._expire()

    def _take(self, fd: int, entry: _Pending) -> bool:
        """Out of the waiting set (False: it was not there any more)."""
        with self._lock:
            if self._waiting.get(fd) is not entry:
                return False
            del self._waiting[fd]
        try:
            self._ep.unregister(fd)
        except (OSError, ValueError):
            pass
        return True

    def _expire(self) -> None:
        now = time.monotonic()
        late = []
        with self._lock:
            while self._due and self._due[0][0] <= now:
                due, fd = heapq.heappop(self._due)
                entry = self._waiting.get(fd)
                if entry is not None and entry.due == due:
                    late.append((fd, entry))
        for fd, entry in late:
            if entry.lingering:
                if self._take(fd, entry):
                    self._drop(entry)
                continue
            self._closed += 1
            try:
                data = entry.buf if entry.buf is not None else look(entry.conn)[0]
            except OSError:
                data = b""
            if not data.lstrip(b"\r\n"):  # nothing of a request: nobody to tell
                if self._take(fd, entry):
                    self._drop(entry)
                continue
            refused = Refused(408, f"the request was not all in within {self.deadline:g} s of the "
                                   f"connection's arrival (plus 1 s per {BODY_RATE >> 10} KiB of body "
                                   f"declared); the connection is closed")
            due = entry.due
            self._apply(entry, fd, self._refuse(entry, refused, quiet=True), due)
        if self._closed and now - self._logged_at >= _CLOSED_LOG_EVERY:
            log.warning("HTTP: closed %d connection(s) whose request was not in %g s after they "
                        "spoke or connected (plus 1 s per %d KiB of declared body)", self._closed,
                        self.deadline, BODY_RATE >> 10)
            self._closed, self._logged_at = 0, now
