"""Responses on a kept-alive connection, byte for byte (``overseer.http.server``): the server holds
a response's header block until the first piece of its body so that both leave in one send, and
sends the block alone when there is no body. Each test reads the raw bytes of a real connection to
the real server and asks the next request on the same connection: a header block left held, sent
twice, or a stray or missing byte shows up as a wrong or missing next response. Where the kernel
reports it (Linux TCP_INFO), the test also counts the data segments the client received: one per
response means the header block went out with the body's first piece."""
from __future__ import annotations

import json
import logging
import select
import socket
import struct
from dataclasses import dataclass, field
from typing import Optional

import pytest

from ..waiting import wait_finished, wait_for

JOBS = {
    "hello.yml": {"command": "echo hello {{ who }}", "vars": [{"name": "who", "default": "world"}]},
    "quiet.yml": {"command": "true"},
    "gated.yml": {"command": "echo first; while [ ! -e {{ gate }} ]; do sleep 0.02; done; echo second",
                  "vars": [{"name": "gate"}]},
    "big.yml": {"command": "head -c 3000000 /dev/zero | tr '\\0' 'x'; echo"},
}
HEALTH = b'{"status": "ok"}\n'
TIMEOUT = 10  # seconds a read waits for bytes that must come
QUIET = 0.1  # seconds without a byte that count as "nothing more was sent"
_DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in in struct tcp_info (Linux 4.6 and later)


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes = b""
    chunks: list = field(default_factory=list)  # a chunked body's chunks as sent
    raw_body: bytes = b""  # every byte after the header block
    segments: Optional[int] = None  # data segments received for it (None: not known here)


class Wire:
    """One HTTP/1.1 connection to the server, read exactly as the bytes come."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""
        self._mark = self.data_segments()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def data_segments(self) -> Optional[int]:
        """Data segments this socket has received so far, or None where the kernel does not say."""
        try:
            info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        except (AttributeError, OSError):
            return None
        return struct.unpack_from("I", info, _DATA_SEGS_IN)[0] if len(info) >= _DATA_SEGS_IN + 4 else None

    def send(self, method: str, path: str, headers: Optional[dict] = None, body: Optional[bytes] = None,
             send_body: bool = True) -> None:
        headers = {"Host": "127.0.0.1", **(headers or {})}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode("latin-1")
                          + (body if body is not None and send_body else b""))

    def _more(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            raise AssertionError(f"no byte in {TIMEOUT}s; unparsed so far: {self.buf[:200]!r}") from None
        if not data:
            raise EOFError(f"the server closed the connection; unparsed: {self.buf[:200]!r}")
        self.buf += data

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._more()
        out, self.buf = self.buf.split(b"\r\n", 1)
        return out

    def head(self) -> Reply:
        """The status line and header block; the status line must be the very next bytes."""
        status_line = self.line()
        proto, _, rest = status_line.partition(b" ")
        assert proto == b"HTTP/1.1" and rest[:3].isdigit() and rest[3:4] == b" ", status_line
        headers = {}
        while True:
            line = self.line()
            if not line:
                break
            name, sep, value = line.partition(b":")
            assert sep and name.strip() == name, line
            assert name.decode().lower() not in headers, f"{name!r} twice"
            headers[name.decode().lower()] = value.strip().decode("latin-1")
        return Reply(int(rest[:3]), headers)

    def chunk(self, reply: Reply) -> Optional[bytes]:
        """The next chunk of a chunked body; None at its end (after the empty trailer)."""
        size_line = self.line()
        assert size_line and all(c in b"0123456789abcdefABCDEF" for c in size_line), size_line
        size = int(size_line, 16)
        reply.raw_body += size_line + b"\r\n"
        if size == 0:
            assert self.line() == b"", "a trailer after the last chunk"
            reply.raw_body += b"\r\n"
            return None
        data, end = self.take(size), self.take(2)
        assert end == b"\r\n", (data[-20:], end)
        reply.raw_body += data + end
        reply.chunks.append(data)
        reply.body += data
        return data

    def body(self, reply: Reply, head_request: bool = False) -> Reply:
        if head_request or reply.status in (204, 304) or reply.status < 200:
            pass
        elif "content-length" in reply.headers:
            reply.body = reply.raw_body = self.take(int(reply.headers["content-length"]))
        else:
            assert reply.headers.get("transfer-encoding") == "chunked", reply.headers
            while self.chunk(reply) is not None:
                pass
        return reply

    def reply(self, head_request: bool = False) -> Reply:
        """The next whole response, then nothing more: no byte may follow it unasked."""
        reply = self.body(self.head(), head_request)
        self.idle()
        reply.segments = self.segments_since_mark()
        self.mark()
        return reply

    def ask(self, method: str, path: str, **kw) -> Reply:
        self.send(method, path, **kw)
        return self.reply(head_request=method == "HEAD")

    def idle(self) -> None:
        """Nothing is left unread and nothing more comes."""
        assert self.buf == b"", f"stray bytes after a response: {self.buf[:200]!r}"
        readable, _, _ = select.select([self.sock], [], [], QUIET)
        if readable:
            extra = self.sock.recv(1 << 16)
            raise AssertionError(f"bytes after a response: {extra[:200]!r}" if extra else
                                 "the server closed a kept-alive connection")

    def mark(self) -> None:
        self._mark = self.data_segments()

    def segments_since_mark(self) -> Optional[int]:
        now = self.data_segments()
        return None if now is None or self._mark is None else now - self._mark


def one_segment(reply: Reply) -> None:
    """The header block and the start of the body left in one send."""
    assert reply.segments in (1, None), f"{reply.status} came in {reply.segments} data segments"


@pytest.fixture
def served(serve):
    def start(files=JOBS, **overrides):
        return serve(files, **overrides)

    return start


def run(wire: Wire, system, job: str, values: dict) -> dict:
    created = wire.ask("POST", f"/jobs/{job}", headers={"Content-Type": "application/json"},
                       body=json.dumps(values).encode())
    assert created.status == 201, created
    one_segment(created)
    return json.loads(created.body)


def test_head_sends_the_header_block_alone_and_the_connection_goes_on(served):
    system, _ = served()
    with Wire(system.config.server.port) as wire:
        run(wire, system, "hello", {"who": "ada"})
        wait_finished(system, "hello", 1)
        for path in ("/jobs", "/jobs/hello", "/jobs/hello/1", "/jobs/hello/1/stdout", "/jobs/hello/1/stderr",
                     "/jobs/hello/1/stdout?offset=3", "/jobs/hello/1/complete", "/health", "/nope"):
            got = wire.ask("GET", path)
            one_segment(got)
            head = wire.ask("HEAD", path)
            assert head.status == got.status and head.raw_body == b"", path
            assert head.headers["content-length"] == str(len(got.body)), path
            assert {k: v for k, v in head.headers.items() if k != "date"} == {
                k: v for k, v in got.headers.items() if k != "date"}, path
            assert head.segments in (1, None), path
        assert wire.ask("GET", "/jobs/hello/1/stdout").body == b"hello ada\n"
        # a follow asked with HEAD is answered as the output so far, not streamed
        head = wire.ask("HEAD", "/jobs/hello/1/stdout?follow=true")
        assert head.status == 200 and head.headers["content-length"] == "10"
        assert "transfer-encoding" not in head.headers
        assert wire.ask("GET", "/health").body == HEALTH


def test_pipelined_heads_and_gets_each_get_their_own_answer(served):
    system, _ = served()
    with Wire(system.config.server.port) as wire:
        run(wire, system, "hello", {})
        wait_finished(system, "hello", 1)
        for method, path in [("HEAD", "/health"), ("GET", "/jobs/hello/1/stderr"), ("HEAD", "/jobs/hello/1"),
                             ("GET", "/jobs/hello/1/stdout"), ("HEAD", "/jobs/hello/1/stdout"),
                             ("GET", "/health")]:
            wire.send(method, path)  # all sent before any answer is read
        replies = [wire.body(wire.head(), head_request=method == "HEAD")
                   for method in ("HEAD", "GET", "HEAD", "GET", "HEAD", "GET")]
        wire.idle()
        assert [r.status for r in replies] == [200] * 6
        assert [r.raw_body for r in replies] == [b"", b"", b"", b"hello world\n", b"", HEALTH]
        assert replies[0].headers["content-length"] == str(len(HEALTH))
        assert replies[1].headers["content-length"] == "0"
        assert replies[4].headers["content-length"] == "12"


def test_bodyless_answers_end_where_they_say(served):
    # No route answers 204 (SPEC §6); the answers without a body byte are empty output, served
    # with Content-Length: 0, and the follow of a finished execution that wrote nothing: a chunked
    # body of only its last chunk, which goes out in the same send as the header block.
    system, server = served()
    with Wire(system.config.server.port) as wire:
        run(wire, system, "quiet", {})
        run(wire, system, "hello", {})
        wait_finished(system, "quiet", 1)
        wait_finished(system, "hello", 1)
        for path in ("/jobs/quiet/1/stdout", "/jobs/quiet/1/output", "/jobs/hello/1/stdout?offset=12",
                     "/jobs/hello/1/stdout?offset=1000"):
            empty = wire.ask("GET", path)
            assert empty.status == 200 and empty.headers["content-length"] == "0", path
            assert empty.raw_body == b"", path
            assert empty.segments in (1, None), path
            assert wire.ask("GET", "/health").body == HEALTH
        for path in ("/jobs/quiet/1/stdout?follow=true", "/jobs/hello/1/stdout?follow=true&offset=12"):
            empty = wire.ask("GET", path)
            assert empty.status == 200 and "content-length" not in empty.headers, path
            assert empty.headers["transfer-encoding"] == "chunked"
            assert empty.chunks == [] and empty.raw_body == b"0\r\n\r\n", path
            one_segment(empty)
            assert wire.ask("GET", "/health").body == HEALTH
        wait_for(lambda: server.app.open_follows == 0, what="the follows to end")


def test_an_interim_100_continue_then_the_answer(served):
    system, _ = served()
    with Wire(system.config.server.port) as wire:
        body = b'{"who": "eve"}'
        headers = {"Content-Type": "application/json", "Expect": "100-continue"}
        wire.send("POST", "/jobs/hello", headers=headers, body=body, send_body=False)
        interim = wire.head()
        assert interim.status == 100 and interim.headers == {}
        assert wire.buf == b""
        wire.mark()
        wire.sock.sendall(body)
        created = wire.reply()
        assert created.status == 201 and json.loads(created.body)["params"] == {"who": "eve"}
        one_segment(created)
        assert wire.ask("GET", "/health").body == HEALTH


def test_a_large_body_then_the_next_request(served):
    system, _ = served()
    with Wire(system.config.server.port) as wire:
        run(wire, system, "big", {})
        wait_finished(system, "big", 1)
        big = wire.ask("GET", "/jobs/big/1/stdout")
        assert big.headers["content-length"] == "3000001" and len(big.body) == 3000001
        assert big.body.endswith(b"x\n") and big.body.count(b"x") == 3000000
        followed = wire.ask("GET", "/jobs/big/1/stdout?follow=true&offset=1000")
        assert followed.body == big.body[1000:] and len(followed.chunks) >= 2
        assert wire.ask("GET", "/health").body == HEALTH


def test_a_follow_streams_while_the_job_runs_and_the_connection_serves_on(served, tmp_path):
    system, server = served()
    gate = tmp_path / "gate"
    with Wire(system.config.server.port) as wire:
        run(wire, system, "gated", {"gate": str(gate)})
        wire.send("GET", "/jobs/gated/1/stdout?follow=true")
        reply = wire.head()
        assert reply.status == 200 and reply.headers["transfer-encoding"] == "chunked"
        assert reply.headers["content-type"] == "text/plain; charset=utf-8"
        assert wire.chunk(reply) == b"first\n"
        segments = wire.segments_since_mark()
        assert segments in (1, None), f"the header block and the first chunk came in {segments} segments"
        wire.idle()  # nothing more while the job waits
        assert system.execution("gated", 1)["state"] == "running"
        assert server.app.open_follows == 1
        gate.touch()
        while wire.chunk(reply) is not None:
            pass
        assert reply.body == b"first\nsecond\n"
        assert reply.raw_body == b"6\r\nfirst\n\r\n7\r\nsecond\n\r\n0\r\n\r\n"
        wire.idle()
        wire.mark()
        meta = wire.ask("GET", "/jobs/gated/1")
        assert meta.status == 200 and json.loads(meta.body)["state"] == "finished"
        one_segment(meta)
        assert wire.ask("HEAD", "/jobs/gated/1/stdout").headers["content-length"] == "13"
        assert wire.ask("GET", "/health").body == HEALTH
        wait_for(lambda: server.app.open_follows == 0, what="the follow to end")


def test_a_client_that_stops_sending_its_body(served, caplog):
    """A request whose declared body has not all come is not given to a worker (it waits in the
    HeadWait: ``test_http_slow_clients``). A client that then half-closes gets the whole answer
    (404: no such job), and the connection ends; clients that reset the connection instead free
    everything they held, and nothing is logged as an error."""
    caplog.set_level(logging.INFO, logger="overseer.http.access")
    system, _ = served(server={"thread_pool": 8})
    port = system.config.server.port
    since = len(caplog.records)

    def answered(n: int) -> bool:
        return sum(" POST /jobs/nope " in r.getMessage() for r in caplog.records) >= n

    partial = (b"POST /jobs/nope HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: 1000\r\n\r\n{\"who\": ")
    with Wire(port) as half:
        half.sock.sendall(partial)
        assert not select.select([half.sock], [], [], 0.3)[0] and not answered(1)
        half.sock.shutdown(socket.SHUT_WR)
        reply = half.body(half.head())
        assert reply.status == 404 and "nope" in json.loads(reply.body)["error"]
        assert half.buf == b"" and half.sock.recv(1) == b""  # then the connection ends

    for _ in range(12):  # more than the pool's 8 workers
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        sock.sendall(partial)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset, not a close
    with Wire(port) as wire:
        for _ in range(3):
            assert wire.ask("GET", "/health").body == HEALTH
    assert [r.getMessage() for r in caplog.records[since:] if r.levelno >= logging.WARNING] == []
