"""Execution output in LMDB: appending chunks inside the writer's transaction, and
reading any byte range of a stream, or of both interleaved, without loading the rest.

A stream's bytes are split into chunks keyed by the stream offset of their first
byte; chunks of one stream are contiguous, so a stream's size is the start of its
last chunk plus that chunk's length.  Each chunk has one entry in the interleave
index, keyed by its offset in the combined output, so the combined output is the
chunks in arrival order.  Appends are gathered into the latest chunk when they
continue the stream that chunk belongs to (inside one batch up to COALESCE_MAX
bytes, across batches while the stored chunk is smaller than MERGE_SMALL), which
keeps the number of keys low when a job writes line by line.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .keys import END, STDERR, STDOUT, chunk_key, from_u64, interleave_key, u64

MERGE_SMALL = 4096          # a stored chunk smaller than this is extended by the next append to it
COALESCE_MAX = 1 << 20      # appends of one batch are gathered into one chunk up to this size
CACHE_SIZE = 4096           # executions whose output state the writer keeps in memory


class OutputState:
    """What the writer knows of one execution's output: stream sizes, its latest chunk."""

    __slots__ = ("sizes", "last_code", "last_start", "last_len", "buf")

    def __init__(self, sizes: dict, last_code: bytes | None, last_start: int, last_len: int):
        self.sizes = sizes
        self.last_code = last_code
        self.last_start = last_start
        self.last_len = last_len      # length of the latest chunk as stored
        self.buf: Any = None          # the latest chunk's full new content, while this batch builds it

    def copy(self) -> OutputState:
        return OutputState(dict(self.sizes), self.last_code, self.last_start, self.last_len)


def _last_with_prefix(cur: Any, bound: bytes, prefix: bytes) -> bool:
    """Position `cur` on the last key < `bound`; True if it starts with `prefix`."""
    found = cur.prev() if cur.set_range(bound) else cur.last()
    return found and cur.key()[: len(prefix)] == prefix


def stream_size(txn: Any, chunks: Any, ekey: bytes, code: bytes) -> int:
    """Size of one stream of an execution: start of its last chunk + that chunk's length."""
    prefix = ekey + code
    cur = txn.cursor(chunks)
    if not _last_with_prefix(cur, prefix + END, prefix):
        return 0
    return from_u64(cur.key(), len(prefix)) + len(cur.value())


def load_state(txn: Any, chunks: Any, interleave: Any, ekey: bytes) -> OutputState:
    sizes = {STDOUT: stream_size(txn, chunks, ekey, STDOUT), STDERR: stream_size(txn, chunks, ekey, STDERR)}
    cur = txn.cursor(interleave)
    if not _last_with_prefix(cur, ekey + END, ekey):
        return OutputState(sizes, None, 0, 0)
    value = cur.value()
    code, start = bytes(value[:1]), from_u64(value, 1)
    stored = txn.get(chunk_key(ekey, code, start), db=chunks)
    return OutputState(sizes, code, start, len(stored) if stored is not None else 0)


class OutputBatch:
    """The appends of one write transaction.  States are working copies: the cache
    only takes them after the commit (`commit_to`), so an aborted batch leaves no trace."""

    def __init__(self, txn: Any, dbs: dict, cache: OrderedDict):
        self.txn, self.cache = txn, cache
        self.exec_db, self.chunks, self.interleave = dbs["executions"], dbs["chunks"], dbs["interleave"]
        self.states: dict[bytes, OutputState] = {}
        self.forgotten: set[bytes] = set()

    def state(self, ekey: bytes) -> OutputState | None:
        """The working state of `ekey`, loaded on first use; None when it has no record."""
        st = self.states.get(ekey)
        if st is None:
            if ekey in self.forgotten:
                return None
            cached = self.cache.get(ekey)
            if cached is not None:
                st = cached.copy()
            elif self.txn.get(ekey, db=self.exec_db) is None:
                return None
            else:
                st = load_state(self.txn, self.chunks, self.interleave, ekey)
            self.states[ekey] = st
        return st

    def append(self, ekey: bytes, code: bytes, data: bytes) -> bool:
        """Append `data` to stream `code`; False when the execution has no record."""
        st = self.states.get(ekey) or self.state(ekey)
        if st is None:
            return False
        if st.last_code == code:
            if st.buf is not None and len(st.buf) < COALESCE_MAX:
                if not isinstance(st.buf, bytearray):
                    st.buf = bytearray(st.buf)
                st.buf += data
                st.sizes[code] += len(data)
                return True
            if st.buf is None and st.last_len < MERGE_SMALL:
                stored = self.txn.get(chunk_key(ekey, code, st.last_start), db=self.chunks)
                if stored is not None:
                    st.buf = bytearray(stored)
                    st.buf += data
                    st.sizes[code] += len(data)
                    return True
        self._put(ekey, st)
        start = st.sizes[code]
        self.txn.put(interleave_key(ekey, st.sizes[STDOUT] + st.sizes[STDERR]), code + u64(start),
                     db=self.interleave)
        st.last_code, st.last_start, st.buf = code, start, data
        st.sizes[code] += len(data)
        return True

    def _put(self, ekey: bytes, st: OutputState) -> None:
        if st.buf is not None:
            self.txn.put(chunk_key(ekey, st.last_code, st.last_start), st.buf, db=self.chunks)
            st.last_len, st.buf = len(st.buf), None

    def forget(self, ekey: bytes) -> None:
        """The execution was deleted in this batch."""
        self.states.pop(ekey, None)
        self.forgotten.add(ekey)

    def finish(self) -> None:
        """Write the chunks still being built; call before the commit."""
        for ekey, st in self.states.items():
            self._put(ekey, st)

    def commit_to(self, cache: OrderedDict) -> None:
        """After the commit: the working states become the writer's cache (LRU)."""
        for ekey in self.forgotten:
            cache.pop(ekey, None)
        for ekey, st in self.states.items():
            cache[ekey] = st
            cache.move_to_end(ekey)
        while len(cache) > CACHE_SIZE:
            cache.popitem(last=False)


def _seek(cur: Any, prefix: bytes, offset: int) -> bool:
    """Position `cur` on the entry of `prefix` whose range holds `offset` (or the last before it)."""
    target = prefix + u64(offset)
    if cur.set_range(target):
        if cur.key() == target:
            return True
        if not cur.prev():
            return False
    elif not cur.last():
        return False
    return cur.key()[: len(prefix)] == prefix


def read_stream(txn: Any, chunks: Any, ekey: bytes, code: bytes, offset: int, limit: int) -> bytes:
    """Up to `limit` bytes of one stream from `offset`."""
    prefix = ekey + code
    cur = txn.cursor(chunks)
    if limit <= 0 or not _seek(cur, prefix, offset):
        return b""
    pieces, pos, plen = [], offset, len(prefix)
    while limit > 0:
        key = cur.key()
        if key[:plen] != prefix:
            break
        start = from_u64(key, plen)
        if start > pos:
            break
        piece = cur.value()[pos - start: pos - start + limit]
        if piece:
            pieces.append(bytes(piece))
            pos += len(piece)
            limit -= len(piece)
        if not cur.next():
            break
    return b"".join(pieces)


def read_interleaved(txn: Any, chunks: Any, interleave: Any, ekey: bytes, offset: int, limit: int) -> bytes:
    """Up to `limit` bytes of the combined output from combined offset `offset`."""
    cur = txn.cursor(interleave)
    if limit <= 0 or not _seek(cur, ekey, offset):
        return b""
    pieces, pos, plen = [], offset, len(ekey)
    while limit > 0:
        key = cur.key()
        if key[:plen] != ekey:
            break
        combined_start, value = from_u64(key, plen), cur.value()
        if combined_start > pos:
            break
        chunk = txn.get(ekey + bytes(value[:1]) + bytes(value[1:9]), db=chunks)
        if chunk is not None:
            piece = chunk[pos - combined_start: pos - combined_start + limit]
            if piece:
                pieces.append(bytes(piece))
                pos += len(piece)
                limit -= len(piece)
        if not cur.next():
            break
    return b"".join(pieces)


def delete_prefix(txn: Any, db: Any, prefix: bytes) -> int:
    """Delete every key of `db` starting with `prefix`; returns how many."""
    cur = txn.cursor(db)
    count = 0
    if not cur.set_range(prefix):
        return 0
    while cur.key()[: len(prefix)] == prefix:
        if not cur.delete():
            break
        count += 1
    return count
