"""Clients that connect and send nothing, half a request, a head whose body never comes, or a body
that trickles in (declared, chunked, after ``Expect: 100-continue``, or over the size limit) do not
hold the HTTP server's workers (``overseer.http.head_wait``): their connections wait in one thread
until the request is in, and are answered (408, 413) and closed when it is not in by the deadline.
Real server, real sockets; each case uses more such clients than the server has workers, so that a
worker held by any of them would leave the next request unanswered."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

import pytest

from overseer.http import sockets

from ..waiting import wait_for

TIMEOUT = 10
POOL = 8  # workers; every case opens more stalled clients than this
MAX_BODY = 1 << 20  # the server's default max_body_bytes
JOBS = {"hello.yml": {"command": "echo hello {{ who }}", "vars": [{"name": "who", "default": "world"}]}}


@pytest.fixture
def served(serve):
    def start(deadline: float = 2.0, max_body: int = MAX_BODY):
        system, server = serve(JOBS, server={"thread_pool": POOL, "max_body_bytes": max_body})
        server._head_wait.deadline = deadline
        server.system = system
        return system.config.server.port, server

    return start


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


@contextmanager
def clients(port: int, n: int = POOL + 4) -> Iterator[list[socket.socket]]:
    """``n`` connections to the server, closed at the end."""
    socks = [connect(port) for _ in range(n)]
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def answers(sock: socket.socket, n: int = 1) -> list[bytes]:
    """``n`` whole responses (Content-Length framed) read from ``sock``, each as its status line,
    a newline and its body."""
    data, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            assert more, f"connection closed; got {data!r}"
            data += more
        head, _, data = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(data) < length:
            more = sock.recv(65536)
            assert more
            data += more
        out.append(head.split(b"\r\n")[0] + b"\n" + data[:length])
        data = data[length:]
    assert data == b"", f"more than {n} response(s): {data[:200]!r}"
    return out


def answer(sock: socket.socket) -> bytes:
    """One whole response (Content-Length framed) read from ``sock``."""
    return answers(sock)[0]


def health(port: int) -> float:
    """Seconds a new connection takes to get GET /health answered (fails after 5 s)."""
    t0 = time.monotonic()
    with connect(port) as sock:
        sock.settimeout(5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            assert answer(sock).startswith(b"HTTP/1.1 200")
        except socket.timeout:
            raise AssertionError("GET /health unanswered in 5 s: the workers are held") from None
    return time.monotonic() - t0


def ended_by_server(sock: socket.socket, within: float) -> Optional[bytes]:
    """What the server sent before it ended the connection, or None when it has not ended it
    within ``within`` seconds."""
    deadline = time.monotonic() + within
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            more = sock.recv(65536)
        except ConnectionResetError:
            return data
        except socket.timeout:
            return None
        if not more:
            return data
        data += more


def closed_by_server(sock: socket.socket, within: float) -> bool:
    return ended_by_server(sock, within) is not None


def status_and_error(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"\r\nconnection: close\r\n" in head.lower() + b"\r\n", head
    return int(head.split(b" ")[1]), json.loads(body)["error"]


class Trickle:
    """A thread that sends each socket a piece every ``every`` seconds until told to stop (or the
    server closes the socket)."""

    def __init__(self, socks: list[socket.socket], piece: bytes, every: float = 0.1):
        self.socks, self.piece, self.every = list(socks), piece, every
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        live = list(self.socks)
        while live and not self.stopped.wait(self.every):
            for sock in list(live):
                try:
                    sock.send(self.piece)
                except OSError:
                    live.remove(sock)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_peek_leaves_the_bytes_and_never_blocks(native, monkeypatch):
    if native and sockets._native_peek is None:
        pytest.skip("the C extension is not built here")
    if not native:
        monkeypatch.setattr(sockets, "_native_peek", None)
    a, b = socket.socketpair()
    a.settimeout(60)  # as cheroot's sockets: a peek must not wait on it
    try:
        t0 = time.monotonic()
        assert sockets.peek(a) is None
        assert time.monotonic() - t0 < 1
        b.sendall(b"hello")
        time.sleep(0.05)
        assert sockets.peek(a, 3) == b"hel" and sockets.peek(a) == b"hello"
        assert a.recv(100) == b"hello"
        b.close()
        assert sockets.peek(a) == b""
    finally:
        a.close()
        b.close()


STALLS = {
    "silent": b"",
    "half a head": b"POST /jobs/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    "a body that never comes": (b"POST /jobs/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\": "),
}


@pytest.mark.parametrize("stall", list(STALLS), ids=list(STALLS))
def test_stalled_clients_hold_no_worker_and_are_closed_at_the_deadline(served, stall, caplog):
    caplog.set_level(logging.WARNING, logger="overseer.http.head_wait")
    port, server = served(deadline=2.0)
    with clients(port) as stalled:
        for sock in stalled:
            sock.sendall(STALLS[stall])
        wait_for(lambda: server._head_wait.waiting == len(stalled), what="every stalled client to wait")
        assert health(port) < 2
        ends = [ended_by_server(sock, 5) for sock in stalled]
        assert None not in ends, "a stalled client was not closed"
        for end in ends:
            if STALLS[stall]:  # a request had begun: it is told why
                status, error = status_and_error(end)
                assert status == 408 and "not all in within 2 s" in error
            else:
                assert end == b""
        wait_for(lambda: "connection(s) whose request was not in 2 s" in caplog.text,
                 what="the log line")
        wait_for(lambda: server._head_wait.waiting == 0, timeout=5, what="the closed clients to be let go")
        assert health(port) < 2


def test_a_client_trickling_its_head_is_closed_at_the_deadline_all_the_same(served):
    port, _ = served(deadline=1.5)
    sock = connect(port)
    try:
        t0 = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        trickle = Trickle([sock], b"X-Slow: 1\r\n")  # a header line every 0.1 s, never the blank line
        try:
            end = ended_by_server(sock, 5)
        finally:
            trickle.stop()
        took = time.monotonic() - t0
        assert end is not None and status_and_error(end)[0] == 408
        assert 1.2 < took < 4, took
    finally:
        sock.close()


def test_a_request_that_comes_in_pieces_is_answered_once_it_is_in(served):
    port, _ = served()
    with clients(port) as socks:
        for sock in socks:
            sock.sendall(b"POST /jobs/hello HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.2)
        for sock in socks:
            sock.sendall(b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n")
        time.sleep(0.2)
        assert health(port) < 2
        for sock in socks:
            sock.sendall(b"{}")
        assert all(answer(sock).startswith(b"HTTP/1.1 201") for sock in socks)


def test_kept_alive_and_pipelined_connections_that_stall_give_their_worker_back(served):
    """A worker that answered a request waits a moment for the next on the same connection (see
    ``KEEP_WAIT``), and takes a pipelined one at once: when that next request is half there, it
    gives the connection back instead of reading on."""
    port, server = served()
    with clients(port) as kept:
        for i, sock in enumerate(kept):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            if i % 2:
                assert answer(sock).startswith(b"HTTP/1.1 200")
                sock.sendall(b"GET /health HTTP/1.1\r\n")  # the next, half of it
            else:
                sock.sendall(b"GET /jobs HTTP/1.1\r\n")  # pipelined behind the first, half of it
                assert answer(sock).startswith(b"HTTP/1.1 200")
        # every worker idle again (cheroot keeps KEEP_RESERVE idle anyway, so a held worker shows
        # here before the next request would go unanswered)
        wait_for(lambda: server._server.instance.requests.idle == POOL, timeout=5, what="every worker idle")
        assert health(port) < 2
        for sock in kept:
            sock.sendall(b"Host: 127.0.0.1\r\n\r\n")
        assert all(answer(sock).startswith(b"HTTP/1.1 200") for sock in kept)


# -- bodies ------------------------------------------------------------------------------------------

def post(extra: str = "", length: Optional[int] = None) -> bytes:
    """The head of a POST /jobs/hello."""
    framing = f"Content-Length: {length}\r\n" if length is not None else ""
    return (f"POST /jobs/hello HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{framing}{extra}\r\n").encode()


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNK = b"64\r\n" + b" " * 100 + b"\r\n"  # 100 bytes of JSON white space
SLOW_BODIES = {
    # name: (head, first piece, piece trickled every 0.1 s, max_body_bytes)
    "a declared 100 KB body": (post(length=100_000), b'{"who": "', b"x" * 100, MAX_BODY),
    "a chunked body": (post("Transfer-Encoding: chunked\r\n"), b"", CHUNK, 131072),
    "100-continue and no body": (post("Expect: 100-continue\r\n", 100_000), b"", b"", MAX_BODY),
}


@pytest.mark.parametrize("case", list(SLOW_BODIES), ids=list(SLOW_BODIES))
def test_slow_bodies_hold_no_worker_and_are_answered_408_at_their_deadline(served, case):
    """The deadline covers the body: 2 s here, plus 1 s per 64 KiB declared (of max_body_bytes
    for a chunked body): 3.5 s for 100 KB, 4 s for a chunked body with max_body_bytes 128 KiB."""
    head, first, piece, max_body = SLOW_BODIES[case]
    port, server = served(deadline=2.0, max_body=max_body)
    with clients(port) as slow:
        for sock in slow:
            sock.sendall(head + first)
        if b"Expect" in head:  # the 100 comes from the head wait, and no worker reads on
            for sock in slow:
                got = b""
                while len(got) < len(CONTINUE):
                    got += sock.recv(len(CONTINUE) - len(got))
                assert got == CONTINUE
        trickle = Trickle(slow, piece) if piece else None
        try:
            wait_for(lambda: server._head_wait.waiting == len(slow), what="every slow client to wait")
            for _ in range(5):
                assert health(port) < 2
                time.sleep(0.2)
            ends = [ended_by_server(sock, 10) for sock in slow]
        finally:
            if trickle:
                trickle.stop()
    assert None not in ends, "a slow client was not closed"
    for end in ends:
        status, error = status_and_error(end)
        assert status == 408 and "not all in within 2 s" in error
    assert server.system.executions("hello") == []
    wait_for(lambda: server._head_wait.waiting == 0 and server._head_wait.held == 0, timeout=5,
             what="the closed clients to be let go, and their bytes")
    assert health(port) < 2


def test_a_declared_body_over_the_limit_is_413_at_once_unread_and_closed(served):
    """60 MB declared (and trickled), or a chunk that passes the limit: 413 long before the
    deadline (30 s here), with or without ``Expect: 100-continue`` (no 100 is sent then); the
    connection ends at once on the server's side, and is dropped after LINGER seconds."""
    port, server = served(deadline=30.0)
    heads = [post(length=60_000_000), post("Expect: 100-continue\r\n", 60_000_000),
             post("Transfer-Encoding: chunked\r\n") + b"100001\r\n"]
    with clients(port) as big:
        for i, sock in enumerate(big):
            sock.sendall(heads[i % 3])
        trickle = Trickle(big, b"x" * 1000)
        try:
            for _ in range(3):
                assert health(port) < 2
            ends = [ended_by_server(sock, 10) for sock in big]
        finally:
            trickle.stop()
    assert None not in ends, "a client over the limit was not closed"
    for end in ends:
        status, error = status_and_error(end)  # the first bytes: no 100 Continue before it
        assert status == 413 and "larger than 1048576 bytes (server.max_body_bytes)" in error
    assert server.system.executions("hello") == []
    wait_for(lambda: server._head_wait.waiting == 0 and server._head_wait.held == 0, timeout=5,
             what="the refused clients to be let go")


def test_long_chunked_and_continued_bodies_are_read_in_and_served(served):
    """Requests longer than one look at the socket are read in by the head wait and handed to the
    worker with their bytes; the worker serves them, and what follows on the connection, as if it
    had read them itself."""
    port, server = served()
    who = "x" * 100_000  # several times one look (16 KiB), within a command's limit (124 KiB)
    body = json.dumps({"who": who}).encode()
    health_request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    def created(response: bytes) -> dict:
        assert response.startswith(b"HTTP/1.1 201"), response[:300]
        return json.loads(response.partition(b"\n")[2])

    with connect(port) as sock:  # at once, and a request pipelined behind it
        sock.sendall(post(length=len(body)) + body + health_request)
        first, second = answers(sock, 2)
        assert created(first)["params"] == {"who": who}
        assert second.startswith(b"HTTP/1.1 200")
    with connect(port) as sock:  # in pieces
        sock.sendall(post(length=len(body)))
        for i in range(0, len(body), 20_000):
            time.sleep(0.02)
            sock.sendall(body[i:i + 20_000])
        assert created(answer(sock))["params"] == {"who": who}
    with connect(port) as sock:  # chunked, in pieces, with a chunk extension
        sock.sendall(post("Transfer-Encoding: chunked\r\n"))
        for i in range(0, len(body), 30_000):
            piece = body[i:i + 30_000]
            sock.sendall(b"%x;name=value\r\n" % len(piece) + piece + b"\r\n")
            time.sleep(0.02)
        sock.sendall(b"0\r\n\r\n" + health_request)
        first, second = answers(sock, 2)
        assert created(first)["params"] == {"who": who}
        assert second.startswith(b"HTTP/1.1 200")
    with connect(port) as sock:  # 100-continue: one 100, then the answer, then the next request
        sock.sendall(post("Expect: 100-continue\r\n", len(body)))
        got = b""
        while len(got) < len(CONTINUE):
            got += sock.recv(len(CONTINUE) - len(got))
        assert got == CONTINUE
        sock.sendall(body)
        assert created(answer(sock))["params"] == {"who": who}
        sock.sendall(health_request)
        assert answer(sock).startswith(b"HTTP/1.1 200")
    assert len(server.system.executions("hello")) == 4
    assert server._head_wait.held == 0


def test_past_the_read_in_budget_requests_are_503_and_nothing_leaks(served):
    port, server = served(deadline=3.0)
    server._head_wait.budget = 250_000  # about four of these bodies
    with clients(port) as slow:
        for sock in slow:
            sock.sendall(post(length=100_000) + b'{"who": "' + b"x" * 60_000)
        ends = [ended_by_server(sock, 10) for sock in slow]
        assert health(port) < 2
    assert None not in ends
    statuses = sorted(status_and_error(end)[0] for end in ends)
    assert 503 in statuses and 408 in statuses and set(statuses) == {408, 503}, statuses
    refused = next(end for end in ends if status_and_error(end)[0] == 503)
    assert b"\r\nRetry-After: 1\r\n" in refused
    wait_for(lambda: server._head_wait.waiting == 0 and server._head_wait.held == 0, timeout=5,
             what="every byte read in to be let go")
