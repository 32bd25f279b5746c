"""Where a request begins and ends on a connection: the head's syntax and the body's framing.

``overseer.http.head_wait`` reads each request head with :func:`parse_head` before a worker
thread may read the request, and refuses (400, and the connection is closed) every head whose
framing two HTTP parsers could read differently. Behind a proxy such a request smuggles a second
request past it; here the worker's own parser (cheroot) and the head wait would disagree about
where the body ends. Refused:

- both ``Content-Length`` and ``Transfer-Encoding``; a ``Transfer-Encoding`` other than exactly
  ``chunked`` (or any in an HTTP/1.0 request); ``Content-Length`` headers that differ, or one that
  is not a plain decimal number;
- a control character (NUL included; tab is allowed in values) in the request line or in a header
  name or value, a bare CR or LF, a header line that starts with white space (obs-fold), a header
  name that is not an HTTP token (white space before the colon included);
- an HTTP/1.1 request without ``Host``, or any request with more than one;
- in a chunked body: a chunk-size line that is not hex digits (an extension after ``;`` aside),
  a chunk not followed by CRLF, and trailer fields.

Messages name the header and what is wrong with it, never a header's value (a value may be a
credential).
"""
from __future__ import annotations

import re
from http import HTTPStatus
from typing import Optional, Union

from . import errors

Bytes = Union[bytes, bytearray]

MAX_HEAD = 65536  # bytes of request line and headers; a longer head is 431
MAX_CHUNK_LINE = 1024  # bytes of one chunk-size line, extensions included

_REQUEST_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^\x00-\x20\x7f]+ HTTP/([0-9])\.([0-9])")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but tab
_DIGITS = re.compile(rb"[0-9]{1,18}")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\x00-\x08\x0a-\x1f\x7f]*)?")
_FIELDS = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
_FRAMING_FIELD = re.compile(rb"^(content-length|transfer-encoding|host|expect):[ \t]*(.*?)[ \t]*\r\n",
                            re.IGNORECASE | re.MULTILINE)


class Refused(errors.HttpError):
    """A request that is answered ``status`` with ``message``, and whose connection is closed
    then: it is answered by the head wait, before any worker reads it."""


def bad(message: str) -> Refused:
    return Refused(400, message + "; the connection is closed")


def too_large(limit: int) -> Refused:
    return Refused(413, errors.too_large(limit).message)


class Head:
    """A request head that passed :func:`parse_head`, by offsets into the data it was read from."""

    __slots__ = ("end", "length", "chunked", "expect")

    def __init__(self, end: int, length: int, chunked: bool, expect: list[tuple[int, int]]):
        self.end = end  # where the body begins (just past the blank line)
        self.length = length  # Content-Length (0 when there is none, or the body is chunked)
        self.chunked = chunked
        self.expect = expect  # spans of the "Expect: 100-continue" lines, their CRLF included

    def body_in(self, data: Bytes) -> bool:
        """Whether a Content-Length body is all in ``data`` (not for chunked bodies)."""
        return len(data) >= self.end + self.length


def _name(raw: Bytes) -> str:
    return bytes(raw[:64]).decode("latin-1")


def parse_head(data: Bytes, search_from: int = 0) -> Optional[Head]:
    """The head at the start of ``data`` (after one empty line, which is skipped as cheroot does),
    or None while its end is not in; ``Refused`` when it must not be served. ``search_from``: where
    to look for the head's end (the length of the data looked at before, less 3)."""
    start = 2 if data[:2] == b"\r\n" else 0
    first_lf = data.find(b"\n", start)
    if first_lf >= 0 and (first_lf == start or data[first_lf - 1] != 0x0D):
        raise bad("the lines of a request head end in CRLF, not a bare LF")
    end = data.find(b"\r\n\r\n", max(start, search_from))
    if end < 0:
        if len(data) - start > MAX_HEAD:
            raise Refused(431, f"the request head is longer than {MAX_HEAD} bytes")
        return None
    if end - start > MAX_HEAD:
        raise Refused(431, f"the request head is longer than {MAX_HEAD} bytes")
    head = bytes(data[start:end + 2])  # each line with its CRLF
    m = _REQUEST_LINE.match(head)
    if m is None or head[m.end():m.end() + 2] != b"\r\n":
        line = head.partition(b"\r\n")[0]
        what = "holds a control character" if _CTL.search(line) else "is not METHOD TARGET HTTP/1.x"
        raise bad(f"the request line {what}")
    version = (int(m.group(1)), int(m.group(2)))
    if version not in ((1, 1), (1, 0)):
        raise Refused(505, f"HTTP/{version[0]}.{version[1]} is not served (HTTP/1.1 and HTTP/1.0 are)")
    fields = m.end() + 2
    if not _FIELDS.fullmatch(head, fields):
        _refuse_field(head, fields)
    lengths: list[bytes] = []
    encodings: list[bytes] = []
    hosts = 0
    expect: list[tuple[int, int]] = []
    for f in _FRAMING_FIELD.finditer(head, fields):
        key, value = f.group(1).lower(), f.group(2)
        if key == b"content-length":
            if not _DIGITS.fullmatch(value):
                raise bad("Content-Length must be a decimal number of at most 18 digits")
            lengths.append(value)
        elif key == b"transfer-encoding":
            encodings.append(value)
        elif key == b"host":
            hosts += 1
        elif value.lower() == b"100-continue" and version == (1, 1):  # HTTP/1.0 knows no 100
            expect.append((start + f.start(), start + f.end()))
    if hosts > 1:
        raise bad("the request has more than one Host header")
    if hosts == 0 and version == (1, 1):
        raise bad("an HTTP/1.1 request must have a Host header")
    chunked = False
    if encodings:
        if version == (1, 0):
            raise bad("Transfer-Encoding is not HTTP/1.0")
        if lengths:
            raise bad("the request has both Content-Length and Transfer-Encoding: its length is ambiguous")
        codings = [c.strip(b" \t").lower() for c in b",".join(encodings).split(b",")]
        if codings != [b"chunked"]:
            raise bad("Transfer-Encoding must be exactly chunked")
        chunked = True
    if len({int(v) for v in lengths}) > 1:
        raise bad("the request has Content-Length headers that differ")
    return Head(end + 4, int(lengths[0]) if lengths else 0, chunked, expect)


def _refuse_field(head: bytes, at: int) -> None:
    """Raise ``Refused`` naming the first header line of ``head`` (from ``at``) that is wrong."""
    for number, line in enumerate(head[at:].split(b"\r\n")[:-1], 2):
        if line[:1] in (b" ", b"\t"):
            raise bad(f"line {number} of the request head starts with white space "
                      f"(obs-fold continuation lines are not accepted)")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            what = "a control character" if _CTL.search(line) else "no header NAME: VALUE"
            raise bad(f"line {number} of the request head holds {what}")
        if _CTL.search(value):
            raise bad(f"header {_name(name)!r} holds a control character (a NUL, CR, LF or the like)")
    raise bad("the request head cannot be read")


class ChunkScan:
    """Where a chunked body's framing has been read up to, so that each look at a growing buffer
    goes on from there (a body trickled in one-byte chunks is not read again and again)."""

    __slots__ = ("pos", "size", "done")

    def __init__(self, pos: int):
        self.pos = pos  # the start of the next chunk-size line
        self.size = 0  # decoded bytes so far
        self.done = False

    def advance(self, data: Bytes, max_body: int) -> bool:
        """Read on through the whole chunks in ``data``; True once the last chunk is in."""
        pos, size = self.pos, self.size
        while not self.done:
            nl = data.find(b"\r\n", pos, pos + MAX_CHUNK_LINE + 2)
            if nl < 0:
                if len(data) - pos > MAX_CHUNK_LINE:
                    raise bad(f"a chunk-size line is longer than {MAX_CHUNK_LINE} bytes")
                break
            m = _CHUNK_LINE.fullmatch(data, pos, nl)
            if m is None:
                raise bad("a chunk-size line of the chunked body is not hex digits")
            n = int(m.group(1), 16)
            if n == 0:
                if len(data) < nl + 4:
                    break
                if data[nl + 2:nl + 4] != b"\r\n":
                    raise bad("trailer fields after a chunked body are not accepted")
                pos, self.done = nl + 4, True
                break
            if size + n > max_body:
                raise too_large(max_body)
            after = nl + 2 + n
            if len(data) < after + 2:
                break
            if data[after:after + 2] != b"\r\n":
                raise bad("a chunk of the chunked body does not end in CRLF")
            pos, size = after + 2, size + n
        self.pos, self.size = pos, size
        return self.done


def answer(refused: Refused) -> bytes:
    """The whole response for a refused request, ``Connection: close`` and a JSON error body."""
    body = errors.error_body(refused.message) + b"\n"
    lines = [f"HTTP/1.1 {refused.status} {HTTPStatus(refused.status).phrase}",
             "Content-Type: application/json", f"Content-Length: {len(body)}", "Cache-Control: no-store",
             "Connection: close", "Server: overseer", *(f"{k}: {v}" for k, v in refused.headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
