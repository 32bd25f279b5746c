"""HTTP framing (``overseer.http.framing``, applied by ``overseer.http.head_wait``): a request whose
length could be read two ways, a header holding a control character, an HTTP/1.1 request without
Host, are answered 400 and their connection is closed, so that a request smuggled behind them never
runs. Real server, raw sockets: each bad request carries a second request, a trigger, in the bytes
that one reading of its framing would take for the next request; the test reads the 400, the end
of the connection, and finds no execution."""
from __future__ import annotations

import json
import socket

import pytest

from overseer.http.framing import MAX_HEAD, ChunkScan, Refused, parse_head

JOBS = {"hello.yml": {"command": "echo hello {{ who }}", "vars": [{"name": "who", "default": "world"}]}}
SMUGGLED = b"POST /jobs/hello HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
HOST = b"Host: 127.0.0.1\r\n"
NOPE = b"POST /jobs/nope HTTP/1.1\r\n" + HOST  # a request that would be 404 itself


@pytest.fixture
def served(serve):
    def start():
        system, _ = serve(JOBS, server={"thread_pool": 8})
        return system

    return start


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the server sends until it closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        got = b""
        while True:
            try:
                more = sock.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                raise AssertionError(f"the server kept the connection open; got {got[:300]!r}") from None
            if not more:
                break
            got += more
        return got


def responses(data: bytes) -> list[tuple[int, bytes]]:
    """The (status, body) of each Content-Length framed response in ``data``."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        out.append((int(head.split(b" ")[1]), rest[:length]))
        data = rest[length:]
    return out


SMUGGLING = {
    "Content-Length and Transfer-Encoding": (
        NOPE + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n" + SMUGGLED, "both Content-Length and Transfer-Encoding"),
    "Transfer-Encoding and Content-Length": (
        NOPE + b"Transfer-Encoding: chunked\r\nContent-Length: 69\r\n\r\n"
        b"0\r\n\r\n" + SMUGGLED, "both Content-Length and Transfer-Encoding"),
    "Transfer-Encoding chunked twice": (
        NOPE + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n0\r\n\r\n" + SMUGGLED, "exactly chunked"),
    "Transfer-Encoding gzip, chunked": (
        NOPE + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        "exactly chunked"),
    "Transfer-Encoding in HTTP/1.0": (
        b"POST /jobs/nope HTTP/1.0\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        "not HTTP/1.0"),
    "Content-Length headers that differ": (
        NOPE + b"Content-Length: %d\r\nContent-Length: 0\r\n\r\n"
        % len(SMUGGLED) + SMUGGLED, "Content-Length headers that differ"),
    "Content-Length with a sign": (
        NOPE + b"Content-Length: +0\r\n\r\n" + SMUGGLED, "decimal number"),
    "Content-Length list": (
        NOPE + b"Content-Length: 0, 0\r\n\r\n" + SMUGGLED, "decimal number"),
    "white space before the colon": (
        NOPE + b"Content-Length : %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
        "line 3 of the request head"),
    "an obs-fold line": (
        NOPE + b"X-Note: a\r\n Transfer-Encoding: chunked\r\n\r\n" + SMUGGLED,
        "obs-fold"),
    "a bad chunk size": (
        NOPE + b"Transfer-Encoding: chunked\r\n\r\n0x0\r\n\r\n" + SMUGGLED,
        "chunk-size line"),
    "trailer fields": (
        NOPE + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n"
        + SMUGGLED, "trailer fields"),
}
RUNS_ITSELF = {
    # each of these would create an execution itself if it were served
    "a NUL in a header value": (b"POST /jobs/hello HTTP/1.1\r\n" + HOST + b"X-Note: a\x00b\r\n"
                                b"Content-Length: 0\r\n\r\n", "header 'X-Note' holds a control character"),
    "a NUL in a header name": (b"POST /jobs/hello HTTP/1.1\r\n" + HOST + b"X-No\x00te: a\r\n"
                               b"Content-Length: 0\r\n\r\n", "line 3 of the request head holds a control"),
    "a bare CR in a header value": (b"POST /jobs/hello HTTP/1.1\r\n" + HOST + b"X-Note: a\rb\r\n"
                                    b"Content-Length: 0\r\n\r\n", "control character"),
    "an escape in a header value": (b"POST /jobs/hello HTTP/1.1\r\n" + HOST + b"X-Note: \x1b[2J\r\n"
                                    b"Content-Length: 0\r\n\r\n", "control character"),
    "a NUL in the request line": (b"POST /jobs/hello\x00 HTTP/1.1\r\n" + HOST + b"Content-Length: 0\r\n\r\n",
                                  "the request line holds a control character"),
    "HTTP/1.1 without Host": (b"POST /jobs/hello HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                              "must have a Host header"),
    "two Host headers": (b"POST /jobs/hello HTTP/1.1\r\n" + HOST + b"Host: localhost\r\nContent-Length: 0"
                         b"\r\n\r\n", "more than one Host header"),
}


@pytest.mark.parametrize("case", list(SMUGGLING) + list(RUNS_ITSELF), ids=list(SMUGGLING) + list(RUNS_ITSELF))
def test_ambiguous_or_malformed_framing_is_400_and_closed_and_nothing_runs(served, case):
    system = served()
    data, named = SMUGGLING.get(case) or RUNS_ITSELF[case]
    got = exchange(system.config.server.port, data)
    assert b"\r\nConnection: close\r\n" in got, got[:300]
    answers = responses(got)
    assert len(answers) == 1, answers  # the smuggled request got no answer: it was never read
    status, body = answers[0]
    assert status == 400
    error = json.loads(body)["error"]
    assert named in error and "connection is closed" in error
    assert system.executions("hello") == []
    # and the same request well framed is served (the smuggled one too, pipelined)
    with socket.create_connection(("127.0.0.1", system.config.server.port), timeout=10) as sock:
        sock.sendall(SMUGGLED + b"GET /health HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
        got = b""
        while more := sock.recv(65536):
            got += more
    assert [s for s, _ in responses(got)] == [201, 200]


def test_framing_that_is_not_ambiguous_is_served(served):
    system = served()
    port = system.config.server.port
    body = b'{"who": "a"}'
    ok = [
        b"POST /jobs/hello HTTP/1.1\r\n" + HOST + b"Content-Length: 12\r\nContent-Length: 12\r\n\r\n" + body,
        b"POST /jobs/hello HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: Chunked\r\n\r\n"
        b"c;ext=1\r\n" + body + b"\r\n0\r\n\r\n",
        b"POST /jobs/hello HTTP/1.0\r\nContent-Length: 12\r\n\r\n" + body,  # 1.0 needs no Host
        b"\r\nPOST /jobs/hello HTTP/1.1\r\n" + HOST + b"X-Tab: a\tb\r\ncontent-length:12\r\n\r\n" + body,
    ]
    for data in ok:
        extra = b"\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        got = exchange(port, data.replace(b"\r\n\r\n", extra, 1))
        assert [s for s, _ in responses(got)] == [201], got[:300]
    assert len(system.executions("hello", limit=10)) == len(ok)


def test_a_head_over_the_limit_is_431(served):
    system = served()
    got = exchange(system.config.server.port, b"GET /health HTTP/1.1\r\n" + HOST
                   + b"X-Pad: " + b"a" * MAX_HEAD + b"\r\n\r\n")
    [(status, body)] = responses(got)
    assert status == 431 and str(MAX_HEAD) in json.loads(body)["error"]


def test_parse_head():
    head = parse_head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
    assert (head.end, head.length, head.chunked, head.expect) == (47, 3, False, [])
    assert head.body_in(b"x" * 50) and not head.body_in(b"x" * 49)
    assert parse_head(b"POST / HTTP/1.1\r\nHost: a\r\n") is None
    assert parse_head(b"") is None
    data = b"POST / HTTP/1.1\r\nHost: a\r\nexpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n"
    head = parse_head(data)
    assert head.chunked and head.length == 0
    [(start, end)] = head.expect
    assert data[start:end] == b"expect: 100-Continue\r\n"
    assert parse_head(b"\r\nGET / HTTP/1.0\r\n\r\n").end == 20  # one empty line before is skipped
    assert parse_head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").expect == []
    for bad, status in [(b"GET / HTTP/1.1\nHost: a\n\n", 400), (b"GET / HTTP/2.0\r\n\r\n", 505),
                        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * MAX_HEAD, 431),
                        (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
                        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000000000000000\r\n\r\n", 400)]:
        with pytest.raises(Refused) as refused:
            parse_head(bad)
        assert refused.value.status == status, bad


def test_chunk_scan_goes_on_where_it_stopped():
    data = b"H" * 10 + b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
    scan = ChunkScan(10)
    for end in range(10, len(data)):
        assert not scan.advance(data[:end], 100), end
    assert scan.advance(data, 100) and scan.size == 5 and scan.pos == len(data)
    with pytest.raises(Refused) as refused:
        ChunkScan(0).advance(b"65\r\n", 100)
    assert refused.value.status == 413
    for bad in (b"3\r\nabcXY", b"zz\r\n", b"-1\r\n", b" 1\r\n", b"1" * 2000):
        with pytest.raises(Refused) as refused:
            ChunkScan(0).advance(bad, 100)
        assert refused.value.status == 400, bad
