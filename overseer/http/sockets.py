"""What the head wait (overseer/http/head_wait.py) does to a connection without ever blocking: look
at what its socket has received, take bytes out of it, send into its buffer; and what it reads
and hands back through cheroot's reader of the connection.
"""
from __future__ import annotations

import os
import select
import socket
from typing import Any, Optional

try:
    from overseer.process._spawn import peek as _native_peek
except ImportError:  # the C extension is optional
    _native_peek = None

PEEK = 16384  # bytes looked at without taking them; a longer request is read in here


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


def look(conn: Any) -> tuple[bytes, bool]:
    """What the connection has sent (buffered by its reader, then in its socket), and whether the
    client has closed its side."""
    got = peek(conn.socket)
    return buffered(conn.rfile) + (got or b""), got == b""


def take(sock: Any, n: int) -> Optional[bytes]:
    """Up to ``n`` bytes out of ``sock``; b"" at its end, None when nothing is there. Never
    blocks: a socket with a time-out (cheroot gives each one) is non-blocking underneath, and
    ``recv`` on it would first wait up to that time-out."""
    try:
        if sock.gettimeout() is None:
            return sock.recv(n, socket.MSG_DONTWAIT)
        return os.read(sock.fileno(), n)
    except (BlockingIOError, InterruptedError):
        return None


def send_now(sock: Any, data: bytes) -> bool:
    """Whether all of ``data`` went into ``sock``'s send buffer at once (never blocks)."""
    try:
        if sock.gettimeout() is None:
            return sock.send(data, socket.MSG_DONTWAIT) == len(data)
        return os.write(sock.fileno(), data) == len(data)
    except OSError:
        return False


def buffered(rfile: Any) -> bytes:
    """What cheroot's reader of a connection holds already (read from the socket, not yet parsed)."""
    return rfile.peek(0) if rfile.has_data() else b""  # peek of a reader with data: no read


def hand_bytes(rfile: Any, data: bytes) -> None:
    """Put ``data`` into cheroot's reader of the connection, as if it had read them itself: the
    reader (``cheroot.makefile.StreamReader``, a ``_pyio.BufferedReader``) keeps what it read in
    ``_read_buf`` from ``_read_pos`` on, as its own ``has_data`` reads them."""
    rfile._read_buf, rfile._read_pos = data, 0
