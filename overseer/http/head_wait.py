"""A worker thread takes a connection only once its request is in.

cheroot hands a new connection, and a kept-alive one that has become readable, straight to a
worker, which then blocks reading until the whole request is there: up to the socket timeout
(60 s) for every read. A client that connects and sends nothing, half a request head, or a
head whose declared body never comes, holds a worker that long, and ``server.thread_pool`` of
them shut everyone else out. Such connections wait here instead: one thread watches them with an
edge-triggered epoll (data that is not yet a request does not wake it again and again), looks
at what each has received without taking it (``MSG_PEEK``), hands a connection to the workers
once its request is in, and closes one whose request is not in HEAD_DEADLINE seconds after it
got here.

"In" means the whole head, and the whole body when the head declares one of up to what one
peek sees. A longer body, a chunked one and a client waiting for ``100 Continue`` are handed
over with their head: the worker reads those as they come, as before.
"""
from __future__ import annotations

import heapq
import logging
import re
import select
import socket
import threading
import time
from typing import Any, Callable, Optional

try:
    from overseer._spawn import peek as _native_peek
except ImportError:  # the C extension is optional
    _native_peek = None

log = logging.getLogger(__name__)

HEAD_DEADLINE = 10.0  # seconds from a connection's arrival here to its request being in
PEEK = 16384  # bytes looked at; a head this long without its end is handed over (cheroot refuses it)
_LENGTH = re.compile(rb"\ncontent-length:[ \t]*(\d+)")
_ENDED = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_CLOSED_LOG_EVERY = 60.0  # seconds between log lines about closed connections


def peek(sock: Any, n: int = PEEK) -> Optional[bytes]:
    """What ``sock`` has received (up to ``n`` bytes), left in it; b"" at its end, None when
    nothing is there. Never blocks."""
    if _native_peek is not None:
        return _native_peek(sock.fileno(), n)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    if not poller.poll(0):
        return None
    try:
        return sock.recv(n, socket.MSG_PEEK)  # readable: its own wait returns at once
    except BlockingIOError:
        return None


def request_in(data: bytes) -> bool:
    """Whether ``data``, the start of what a connection has sent, holds a request a worker can
    read without waiting: its whole head and its body (see the module's doc)."""
    end = data.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = data.find(b"\n\n"), 2
        if end < 0:
            return len(data) >= PEEK
    head = b"\n" + data[:end].lower()
    if b"\nexpect:" in head or b"\ntransfer-encoding:" in head:
        return True
    m = _LENGTH.search(head)
    if m is None:
        return True
    length = int(m.group(1))
    body_at = end + sep
    return body_at + length > PEEK or len(data) - body_at >= length


class HeadWait:
    """The connections whose request is not in yet, and the thread that watches them."""

    def __init__(self, hand_over: Callable[[Any], None], deadline: float = HEAD_DEADLINE):
        self._hand_over = hand_over  # cheroot's own process_conn: to the worker queue
        self.deadline = deadline
        self._ep = select.epoll()
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[Any, float]] = {}  # fd -> (connection, its deadline)
        self._due: list[tuple[float, int]] = []
        self._stopping = False
        self._closed = 0
        self._logged_at = 0.0
        self._thread = threading.Thread(target=self._loop, name="http-head-wait", daemon=True)
        self._thread.start()

    def offer(self, conn: Any) -> None:
        """To the workers if its request is in, else wait here for it."""
        try:
            if self.ready(conn):
                self._hand_over(conn)
                return
            fd = conn.socket.fileno()
        except OSError:
            self._hand_over(conn)  # the worker meets the error and closes the connection
            return
        due = time.monotonic() + self.deadline
        with self._lock:
            if self._stopping:
                conn.close()
                return
            self._waiting[fd] = (conn, due)
            heapq.heappush(self._due, (due, fd))
        try:
            # Edge-triggered; adding an fd with data already there reports it at once.
            self._ep.register(fd, select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET)
        except OSError:
            with self._lock:
                self._waiting.pop(fd, None)
            self._hand_over(conn)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def stop(self) -> None:
        """Close every connection still waiting and end the thread."""
        with self._lock:
            self._stopping = True
            left = [conn for conn, _ in self._waiting.values()]
            self._waiting.clear()
        for conn in left:
            self._close(conn)
        self._ep.close()  # ends the thread's poll
        self._thread.join(5)

    @staticmethod
    def ready(conn: Any) -> bool:
        """Whether ``conn``'s next request is in (what it buffered and what its socket holds)."""
        data = peek(conn.socket)
        if data == b"":
            return True  # the client closed it: the worker sees that and lets it go at once
        rfile = conn.rfile
        if rfile.has_data():  # pipelined: the start of this request is buffered already
            data = rfile.peek(0) + (data or b"")  # peek of a reader with data: no read
        return data is not None and request_in(data)

    def _loop(self) -> None:
        while True:
            with self._lock:
                timeout = max(0.0, self._due[0][0] - time.monotonic()) if self._due else 1.0
            try:
                events = self._ep.poll(min(timeout, 1.0))
            except (OSError, ValueError):  # closed by stop()
                return
            for fd, mask in events:
                self._check(fd, mask)
            self._expire()

    def _check(self, fd: int, mask: int) -> None:
        with self._lock:
            entry = self._waiting.get(fd)
        if entry is None:
            return
        conn = entry[0]
        if mask & _ENDED:
            ready = True  # the client sent all it will send: the worker reads it and meets the end
        else:
            try:
                ready = self.ready(conn)
            except OSError:
                ready = True
        if ready and self._take(fd, conn):
            self._hand_over(conn)

    def _take(self, fd: int, conn: Any) -> bool:
        """Out of the waiting set (False: it was not there any more)."""
        with self._lock:
            entry = self._waiting.get(fd)
            if entry is None or entry[0] is not conn:
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
                if entry is not None and entry[1] == due:
                    late.append((fd, entry[0]))
        for fd, conn in late:
            if self._take(fd, conn):
                self._close(conn)
                self._closed += 1
        if self._closed and now - self._logged_at >= _CLOSED_LOG_EVERY:
            log.warning("HTTP: closed %d connection(s) whose request was not in %g s after they "
                        "spoke or connected", self._closed, self.deadline)
            self._closed, self._logged_at = 0, now

    @staticmethod
    def _close(conn: Any) -> None:
        try:
            conn.close()
        except OSError:
            pass
