"""Clients that connect and send nothing, or half a request, or a head whose body never comes, do
not hold the HTTP server's workers (``overseer.http.head_wait``): their connections wait in one
thread until the request is in, and are closed when it is not in by the deadline. Real server,
real sockets; each case uses more such clients than the server has workers, so that a worker
held by any of them would leave the next request unanswered."""
from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from overseer.http import head_wait
from overseer.http.head_wait import PEEK, request_in
from overseer.http.server import HttpServer

from .conftest import wait_for

TIMEOUT = 10
POOL = 8  # workers; every case opens more stalled clients than this


@pytest.fixture
def served(system_factory):
    servers = []

    def start(deadline: float = 2.0):
        system = system_factory({"hello.yml": {"command": "echo hello"}}, server={"thread_pool": POOL})
        server = HttpServer(system, system.config)
        server.start()
        server._head_wait.deadline = deadline
        servers.append(server)
        return system.config.server.port, server

    yield start
    for server in servers:
        server.stop()


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


def answer(sock: socket.socket) -> bytes:
    """One whole response (Content-Length framed) read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"connection closed; got {data!r}"
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        more = sock.recv(65536)
        assert more
        body += more
    return head.split(b"\r\n")[0] + b"\n" + body


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


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_request_in():
    head = b"POST /jobs/x HTTP/1.1\r\nHost: a\r\n"
    assert not request_in(b"")
    assert not request_in(b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert request_in(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert request_in(b"GET / HTTP/1.1\nHost: a\n\n")  # bare newlines, as cheroot takes them
    assert not request_in(head + b"Content-Length: 10\r\n\r\n12345")
    assert request_in(head + b"content-length:10\r\n\r\n1234567890")
    assert request_in(head + b"CONTENT-LENGTH: 0\r\n\r\n")
    assert request_in(head + b"Content-Length: 10\r\n\r\n1234567890GET / HTTP/1.1\r\n")  # pipelined
    assert request_in(head + b"Content-Length: %d\r\n\r\n" % PEEK)  # more than a peek sees: read as it comes
    assert request_in(head + b"Content-Length: 10\r\nExpect: 100-continue\r\n\r\n")  # waits for our 100
    assert request_in(head + b"Transfer-Encoding: chunked\r\n\r\n")
    assert request_in(b"GET /" + b"x" * PEEK)  # a head this long is refused by the worker at once
    assert not request_in(b"GET /" + b"x" * (PEEK - 10))


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_peek_leaves_the_bytes_and_never_blocks(native, monkeypatch):
    if native and head_wait._native_peek is None:
        pytest.skip("the C extension is not built here")
    if not native:
        monkeypatch.setattr(head_wait, "_native_peek", None)
    a, b = socket.socketpair()
    a.settimeout(60)  # as cheroot's sockets: a peek must not wait on it
    try:
        t0 = time.monotonic()
        assert head_wait.peek(a) is None
        assert time.monotonic() - t0 < 1
        b.sendall(b"hello")
        time.sleep(0.05)
        assert head_wait.peek(a, 3) == b"hel" and head_wait.peek(a) == b"hello"
        assert a.recv(100) == b"hello"
        b.close()
        assert head_wait.peek(a) == b""
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
        assert all(closed_by_server(sock, 5) for sock in stalled)
        wait_for(lambda: "connection(s) whose request was not in 2 s" in caplog.text,
                 what="the log line")
        assert server._head_wait.waiting == 0
        assert health(port) < 2


def test_a_client_trickling_its_head_is_closed_at_the_deadline_all_the_same(served):
    port, _ = served(deadline=1.5)
    sock = connect(port)
    try:
        t0 = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        closed = False
        for _ in range(40):  # a header line every 0.1 s, never the blank line
            time.sleep(0.1)
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        took = time.monotonic() - t0
        assert closed or closed_by_server(sock, 1)
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
