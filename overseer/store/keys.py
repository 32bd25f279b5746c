"""Key layout of the LMDB store, and how records are encoded.

Every integer in a key is 8 bytes big-endian, so keys sort numerically and the
whole output of one execution is one cursor range (everything starting with its
execution key)::

    executions  job \\0 id                   -> record: HEAD \\n EVENTS (see encode_record)
    counters    job                         -> next id to hand out
    chunks      job \\0 id stream start      -> the bytes of `stream` from byte `start` on
    interleave  job \\0 id combined_start    -> stream + start of the chunk (one entry per chunk)
    inactive    job                         -> b""   (absent = active)
    schedule    job \\0 entry_key            -> ISO 8601 UTC time of the entry's last fire

Stream codes are one byte: ``b"1"`` stdout, ``b"2"`` stderr.  Job names never
contain NUL, so ``job \\0`` is an unambiguous prefix.
"""
from __future__ import annotations

import functools
import json
import struct
from datetime import datetime, timezone
from typing import Any

from overseer.exceptions import NotFound, StoreError

STDOUT = b"1"
STDERR = b"2"
STREAM_CODES = {"stdout": STDOUT, "stderr": STDERR}
OUTPUT = "output"
STREAMS = ("stdout", "stderr", OUTPUT)

MAX_JOB_BYTES = 400     # LMDB keys are limited to 511 bytes; leave room for the suffixes
MAX_ID = (1 << 63) - 1

_U64 = struct.Struct(">Q")
u64 = _U64.pack
END = b"\xff" * 8       # sorts after every u64


def from_u64(buf: Any, offset: int = 0) -> int:
    """The big-endian integer at `offset` of `buf` (bytes or memoryview)."""
    return _U64.unpack_from(buf, offset)[0]


def job_key(job: str) -> bytes:
    """The encoded job name, validated to fit in a key."""
    if not isinstance(job, str) or not job or "\0" in job:
        raise StoreError(f"invalid job name {job!r}")
    raw = job.encode("utf-8")
    if len(raw) > MAX_JOB_BYTES:
        raise StoreError(f"job name {job[:40]!r}... is longer than {MAX_JOB_BYTES} bytes")
    return raw


def job_prefix(job: str) -> bytes:
    """The prefix shared by every execution key of `job`."""
    return job_key(job) + b"\0"


@functools.lru_cache(maxsize=4096, typed=True)
def exec_key(job: str, ident: int) -> bytes:
    """The key of execution `ident` of `job`; also the prefix of its output."""
    if isinstance(ident, bool) or not isinstance(ident, int) or not 0 < ident <= MAX_ID:
        raise NotFound(f"no execution {ident!r} of job {job!r}")
    return job_prefix(job) + u64(ident)


def describe(ekey: bytes) -> str:
    """'execution ID of job NAME' for an execution key."""
    return f"execution {from_u64(ekey, len(ekey) - 8)} of job {ekey[:-9].decode('utf-8', 'replace')!r}"


def chunk_key(ekey: bytes, code: bytes, start: int) -> bytes:
    return ekey + code + u64(start)


def interleave_key(ekey: bytes, combined_start: int) -> bytes:
    return ekey + u64(combined_start)


def stream_code(stream: str) -> bytes | None:
    """The one-byte code of a stream, None for the interleaved ``output``."""
    if stream == OUTPUT:
        return None
    try:
        return STREAM_CODES[stream]
    except (KeyError, TypeError):
        raise NotFound(f"no output stream {stream!r} (one of stdout, stderr, output)") from None


def schedule_key(job: str, entry_key: str) -> bytes:
    raw = job_prefix(job) + entry_key.encode("utf-8")
    if len(raw) > 500:
        raise StoreError(f"schedule entry key {entry_key[:40]!r}... of job {job!r} is too long")
    return raw


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode_record(record: dict) -> bytes:
    """The record but its events as compact JSON, a newline, then its events as compact JSON.
    Compact JSON holds no newline (one in a string is written ``\\n``), so the first newline ends
    the head: a reader that wants no events (the job list) reads only that far (``decode_head``).
    A top-level ``"state"`` is always written as ``"state":"<value>"``."""
    events = record.get("events")
    if events is None:
        return _dumps(record).encode("utf-8")
    head = record.copy()
    del head["events"]
    return b"%s\n%s" % (_dumps(head).encode("utf-8"), _dumps(events).encode("utf-8"))


def encode_appended(record: dict, previous: bytes, kept: int) -> bytes:
    """``encode_record(record)`` for a record whose first ``kept`` events are those encoded in
    ``previous`` (its bytes before an update that only appended events): those are not encoded
    again (a run with a thousand long events would re-encode megabytes for each new one)."""
    cut = previous.find(b"\n")
    events = record.get("events")
    if cut < 0 or not isinstance(events, list):
        return encode_record(record)
    head = record.copy()
    del head["events"]
    old = memoryview(previous)[cut + 1:]
    if kept == 0:
        return b"%s\n%s" % (_dumps(head).encode("utf-8"), _dumps(events).encode("utf-8"))
    if len(events) == kept:
        return b"".join((_dumps(head).encode("utf-8"), b"\n", old))
    more = _dumps(events[kept:]).encode("utf-8")
    return b"".join((_dumps(head).encode("utf-8"), b"\n", old[:-1], b",", memoryview(more)[1:]))


def decode_record(raw: Any) -> dict:
    data = bytes(raw)
    cut = data.find(b"\n")
    if cut < 0:  # written whole (before records kept their events apart), or with none
        return json.loads(data)
    record = json.loads(data[:cut])
    record["events"] = json.loads(data[cut + 1:])
    return record


def decode_head(raw: Any) -> dict:
    """The record without its events, reading no further than its head."""
    view = memoryview(raw)
    start, step = 0, 4096
    while start < len(view):
        cut = bytes(view[start:start + step]).find(b"\n")
        if cut >= 0:
            return json.loads(bytes(view[:start + cut]))
        start, step = start + step, step * 4
    record = json.loads(bytes(view))  # written whole: decoded whole
    record.pop("events", None)
    return record


def state_marker(state: str) -> bytes:
    """Bytes every encoded record in `state` contains (a cheap prefilter before decoding)."""
    return b'"state":' + json.dumps(state, ensure_ascii=False).encode("utf-8")


def encode_time(when: datetime) -> bytes:
    """ISO 8601 in UTC; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat().encode("ascii")


def decode_time(raw: Any) -> datetime:
    return datetime.fromisoformat(bytes(raw).decode("ascii"))
